//! Tests for rule parsing (every accepted form, every rejection and its
//! hint) and for `RuleIndex::lookup` semantics: which hosts and ports each
//! form matches, first match wins, expiry, and names vs IP literals.

use super::*;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn spec(pattern: Pattern, port: Option<u16>) -> RuleSpec {
    RuleSpec { pattern, port }
}

/// An index over `rules` (as written), none of them expiring.
fn index(rules: &[&str], is_allow: bool) -> RuleIndex {
    let specs: Vec<RuleSpec> = rules.iter().map(|r| parse(r).unwrap()).collect();
    RuleIndex::new(specs.iter().map(|s| (s, None)), is_allow)
}

const DEFAULT_PORTS: &[u16] = &[80, 443];
const NOW: u64 = 1_800_000_000;

fn query(port: u16) -> Query<'static> {
    Query {
        port,
        default_ports: DEFAULT_PORTS,
        now: NOW,
    }
}

fn host(s: &str) -> Host {
    Host::parse(s).unwrap()
}

#[test]
fn parse_accepts_every_form() {
    let rows = [
        (
            "api.openai.com",
            spec(Pattern::Exact(name("api.openai.com")), None),
        ),
        // Normalised like a destination: case, trailing dot, IDNA.
        (
            "API.OpenAI.com.",
            spec(Pattern::Exact(name("api.openai.com")), None),
        ),
        (
            "BÜCHER.example",
            spec(Pattern::Exact(name("xn--bcher-kva.example")), None),
        ),
        (
            "  api.openai.com  ",
            spec(Pattern::Exact(name("api.openai.com")), None),
        ),
        (
            "*.githubusercontent.com",
            spec(Pattern::Subdomains(name("githubusercontent.com")), None),
        ),
        (
            "*.bücher.example:8443",
            spec(
                Pattern::Subdomains(name("xn--bcher-kva.example")),
                Some(8443),
            ),
        ),
        (".pypi.org", spec(Pattern::Domain(name("pypi.org")), None)),
        (
            ".pypi.org:443",
            spec(Pattern::Domain(name("pypi.org")), Some(443)),
        ),
        (
            "bedrock-runtime.*.amazonaws.com",
            spec(
                Pattern::OneLabel {
                    prefix: name("bedrock-runtime"),
                    suffix: name("amazonaws.com"),
                },
                None,
            ),
        ),
        (
            "a.b.*.example.co.uk:9000",
            spec(
                Pattern::OneLabel {
                    prefix: name("a.b"),
                    suffix: name("example.co.uk"),
                },
                Some(9000),
            ),
        ),
        (
            "files.internal.example:8443",
            spec(Pattern::Exact(name("files.internal.example")), Some(8443)),
        ),
        ("x.com:1", spec(Pattern::Exact(name("x.com")), Some(1))),
        (
            "x.com:65535",
            spec(Pattern::Exact(name("x.com")), Some(65535)),
        ),
        (
            "10.20.0.0/16:5432",
            spec(Pattern::Net(net("10.20.0.0/16")), Some(5432)),
        ),
        (
            "10.20.0.0/16",
            spec(Pattern::Net(net("10.20.0.0/16")), None),
        ),
        (
            "140.82.112.0/20:443",
            spec(Pattern::Net(net("140.82.112.0/20")), Some(443)),
        ),
        // A single address is its /32 (/128).
        (
            "203.0.113.7",
            spec(Pattern::Net(net("203.0.113.7/32")), None),
        ),
        ("0.0.0.0/0", spec(Pattern::Net(net("0.0.0.0/0")), None)),
        // IPv6: bare (no port possible) or bracketed (port optional).
        (
            "2001:db8::/32",
            spec(Pattern::Net(net("2001:db8::/32")), None),
        ),
        (
            "[2001:db8::/32]",
            spec(Pattern::Net(net("2001:db8::/32")), None),
        ),
        (
            "[2001:db8::/32]:443",
            spec(Pattern::Net(net("2001:db8::/32")), Some(443)),
        ),
        (
            "2001:db8::1",
            spec(Pattern::Net(net("2001:db8::1/128")), None),
        ),
        (
            "[2001:db8::1]:443",
            spec(Pattern::Net(net("2001:db8::1/128")), Some(443)),
        ),
    ];
    for (text, want) in rows {
        assert_eq!(parse(text), Ok(want), "{text:?}");
    }
}

#[test]
fn parse_rejects_with_a_reason() {
    let rows = [
        (
            "*example.com",
            "'*' must be a whole label: use \"*.example.com\" (subdomains) or \".example.com\" (the domain and its subdomains)",
        ),
        ("*.example.com*", "only one '*' per rule"),
        ("*", "matches every host: list the domains the agent needs"),
        ("*.", "matches every host: list the domains the agent needs"),
        (".", "matches every host: list the domains the agent needs"),
        (
            "*.com",
            "matches every name under the top-level domain \"com\": name a registrable domain",
        ),
        (
            ".io",
            "matches every name under the top-level domain \"io\": name a registrable domain",
        ),
        (
            "bedrock.*.com",
            "matches every name under the top-level domain \"com\": name a registrable domain",
        ),
        (
            "foo*.example.com",
            "'*' must be a whole label, not part of \"foo*\"",
        ),
        (
            "api.f*o.example.com",
            "'*' must be a whole label, not part of \"f*o\"",
        ),
        ("a.*.*.example.com", "only one '*' per rule"),
        ("*.*.example.com", "only one '*' per rule"),
        (".*.example.com", "'.domain' rules cannot contain '*'"),
        ("example.*", "'*' cannot stand for the top-level domain"),
        ("api.*.", "'*' cannot stand for the top-level domain"),
        ("x.com:0", "\"0\" is not a port (1-65535)"),
        ("x.com:65536", "\"65536\" is not a port (1-65535)"),
        ("x.com:", "\"\" is not a port (1-65535)"),
        ("x.com:https", "\"https\" is not a port (1-65535)"),
        ("x.com:+1", "\"+1\" is not a port; write 1"),
        ("x.com:0443", "\"0443\" is not a port; write 443"),
        (
            "x.com:443:1",
            "\"x.com:443:1\" is not an IP address or CIDR",
        ),
        (
            "10.0.0.1/8",
            "\"10.0.0.1/8\" has host bits set: did you mean 10.0.0.0/8?",
        ),
        (
            "2001:db8::1/32",
            "\"2001:db8::1/32\" has host bits set: did you mean 2001:db8::/32?",
        ),
        (
            "10.0.0.0/33",
            "\"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        // Without brackets an IPv6 CIDR cannot carry a port.
        (
            "2001:db8::/32:443",
            "\"2001:db8::/32:443\" is not an IP address or CIDR",
        ),
        (
            "[2001:db8::/32",
            "unclosed '[': write IPv6 as [2001:db8::/32]:443",
        ),
        ("[2001:db8::/32]443", "junk after ']'"),
        (
            "[example.com]:443",
            "brackets are for IPv6 addresses only: write \"example.com\" without them",
        ),
        // Numeric forms that are not a dotted quad never become names.
        ("127.1", "\"127.1\" is not an IP address or CIDR"),
        (
            "0x7f.0.0.1",
            "numeric host form is not a valid IPv4 address",
        ),
        ("", "empty rule"),
        ("   ", "empty rule"),
        ("a..example.com", "empty label"),
        ("exa mple.com", "invalid character ' ' in host"),
        ("under_score.example.com", "invalid character '_' in host"),
        ("user@example.com", "invalid character '@' in host"),
        (
            "https://example.com",
            "\"//example.com\" is not a port (1-65535)",
        ),
    ];
    for (text, want) in rows {
        assert_eq!(parse(text), Err(want.to_owned()), "{text:?}");
    }
}

/// The lookup semantics of each form, for one rule at a time, on the
/// default ports.
#[test]
fn lookup_per_form() {
    // (rule, destination host, port, matches)
    let rows: &[(&str, &str, u16, bool)] = &[
        // Exact: that name only, on egress.ports.
        ("api.openai.com", "api.openai.com", 443, true),
        ("api.openai.com", "API.OPENAI.COM.", 80, true),
        ("api.openai.com", "api.openai.com", 8443, false),
        ("api.openai.com", "x.api.openai.com", 443, false),
        ("api.openai.com", "openai.com", 443, false),
        ("api.openai.com", "api.openai.com.evil.net", 443, false),
        // `*.x`: subdomains at any depth, not the apex.
        (
            "*.githubusercontent.com",
            "raw.githubusercontent.com",
            443,
            true,
        ),
        (
            "*.githubusercontent.com",
            "a.b.c.githubusercontent.com",
            443,
            true,
        ),
        (
            "*.githubusercontent.com",
            "githubusercontent.com",
            443,
            false,
        ),
        (
            "*.githubusercontent.com",
            "evilgithubusercontent.com",
            443,
            false,
        ),
        (
            "*.githubusercontent.com",
            "githubusercontent.com.evil.net",
            443,
            false,
        ),
        (
            "*.githubusercontent.com",
            "raw.githubusercontent.com",
            22,
            false,
        ),
        // `.x`: the apex and subdomains at any depth.
        (".pypi.org", "pypi.org", 443, true),
        (".pypi.org", "files.pypi.org", 443, true),
        (".pypi.org", "a.b.pypi.org", 80, true),
        (".pypi.org", "notpypi.org", 443, false),
        (".pypi.org", "pypi.org.evil.net", 443, false),
        // `a.*.x.y`: exactly one label in place of '*'.
        (
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime.us-east-1.amazonaws.com",
            443,
            true,
        ),
        (
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime.amazonaws.com",
            443,
            false,
        ),
        (
            "bedrock-runtime.*.amazonaws.com",
            "bedrock-runtime.a.b.amazonaws.com",
            443,
            false,
        ),
        (
            "bedrock-runtime.*.amazonaws.com",
            "x.bedrock-runtime.us-east-1.amazonaws.com",
            443,
            false,
        ),
        (
            "bedrock-runtime.*.amazonaws.com",
            "s3.us-east-1.amazonaws.com",
            443,
            false,
        ),
        ("a.b.*.example.com", "a.b.c.example.com", 443, true),
        ("a.b.*.example.com", "b.c.example.com", 443, false),
        ("a.b.*.example.com", "x.b.c.example.com", 443, false),
        // IDNA: the rule and the destination meet in punycode.
        ("*.bücher.example", "shop.xn--bcher-kva.example", 443, true),
        ("*.xn--bcher-kva.example", "shop.BÜCHER.example", 443, true),
        // Explicit port: that port only, not egress.ports.
        (
            "files.internal.example:8443",
            "files.internal.example",
            8443,
            true,
        ),
        (
            "files.internal.example:8443",
            "files.internal.example",
            443,
            false,
        ),
        // CIDR rules match IP literals only.
        ("10.20.0.0/16:5432", "10.20.3.4", 5432, true),
        ("10.20.0.0/16:5432", "10.21.0.1", 5432, false),
        ("10.20.0.0/16:5432", "10.20.3.4", 443, false),
        ("140.82.112.0/20", "140.82.127.255", 443, true),
        ("140.82.112.0/20", "140.82.128.0", 443, false),
        ("203.0.113.7", "203.0.113.7", 80, true),
        ("203.0.113.7", "203.0.113.8", 80, false),
        ("0.0.0.0/0", "1.2.3.4", 443, true),
        ("0.0.0.0/0", "[2001:db8::1]", 443, false),
        ("2001:db8::/32", "[2001:db8:1::1]", 443, true),
        ("2001:db8::/32", "[2001:db9::1]", 443, false),
        ("[2001:db8::/32]:8443", "[2001:db8::1]", 8443, true),
        ("[2001:db8::/32]:8443", "[2001:db8::1]", 443, false),
        ("::/0", "1.2.3.4", 443, false),
        // An IPv4-mapped IPv6 literal is the IPv4 address it carries.
        ("10.20.0.0/16:5432", "[::ffff:10.20.0.1]", 5432, true),
        ("203.0.113.7", "[::ffff:203.0.113.7]", 443, true),
        // ... and a name never matches a CIDR rule, even one that looks numeric.
        ("10.20.0.0/16:5432", "db.internal", 5432, false),
        ("0.0.0.0/0", "example.com", 443, false),
        // ... nor an IP literal a name rule.
        ("example.com", "93.184.215.14", 443, false),
        (".example.com", "[2001:db8::1]", 443, false),
    ];
    for &(rule, dest, port, want) in rows {
        let ix = index(&[rule], true);
        assert_eq!(
            ix.lookup(&host(dest), &query(port)).is_some(),
            want,
            "{rule:?} vs {dest}:{port}"
        );
    }
}

#[test]
fn deny_rule_without_port_covers_every_port() {
    let deny = index(&["gist.githubusercontent.com", "10.0.0.0/8"], false);
    let allow = index(&["gist.githubusercontent.com", "10.0.0.0/8"], true);
    for port in [1, 22, 80, 443, 8443, 65535] {
        let gist = host("gist.githubusercontent.com");
        assert_eq!(deny.lookup(&gist, &query(port)), Some(0), "deny :{port}");
        assert_eq!(
            deny.lookup(&host("10.1.2.3"), &query(port)),
            Some(1),
            "deny :{port}"
        );
        let on_default = DEFAULT_PORTS.contains(&port);
        assert_eq!(
            allow.lookup(&gist, &query(port)).is_some(),
            on_default,
            "allow :{port}"
        );
    }
    // A deny rule with a port denies that port only.
    let deny = index(&["gist.githubusercontent.com:22"], false);
    assert_eq!(
        deny.lookup(&host("gist.githubusercontent.com"), &query(22)),
        Some(0)
    );
    assert_eq!(
        deny.lookup(&host("gist.githubusercontent.com"), &query(443)),
        None
    );
}

#[test]
fn default_ports_come_from_the_query() {
    let ix = index(&["example.com"], true);
    let q = Query {
        port: 8080,
        default_ports: &[8080, 9090],
        now: NOW,
    };
    assert_eq!(ix.lookup(&host("example.com"), &q), Some(0));
    assert_eq!(
        ix.lookup(&host("example.com"), &Query { port: 443, ..q }),
        None
    );
    // No default ports: a rule without a port allows nothing.
    assert_eq!(
        ix.lookup(
            &host("example.com"),
            &Query {
                default_ports: &[],
                ..q
            }
        ),
        None
    );
}

#[test]
fn first_match_wins() {
    // Every rule matches api.eu.example.com:443; the answer is the lowest
    // index, whichever kind of rule it is, forwards and backwards.
    let all = [
        "*.example.com",
        ".example.com",
        "api.*.example.com",
        "api.eu.example.com:443",
        ".eu.example.com",
        "api.eu.example.com",
    ];
    let dest = host("api.eu.example.com");
    for first in 0..all.len() {
        let rules: Vec<&str> = all[first..].to_vec();
        assert_eq!(
            index(&rules, true).lookup(&dest, &query(443)),
            Some(0),
            "{rules:?}"
        );
        let reversed: Vec<&str> = rules.iter().rev().copied().collect();
        assert_eq!(
            index(&reversed, true).lookup(&dest, &query(443)),
            Some(0),
            "{reversed:?}"
        );
    }
    // A rule that matches the host but not the port does not count.
    let ix = index(&["api.example.com:8443", "*.example.com"], true);
    assert_eq!(ix.lookup(&host("api.example.com"), &query(443)), Some(1));
    assert_eq!(ix.lookup(&host("api.example.com"), &query(8443)), Some(0));
    // The same pattern twice: the first one.
    let ix = index(&["x.example.com", "y.example.com", "x.example.com"], true);
    assert_eq!(ix.lookup(&host("x.example.com"), &query(80)), Some(0));
    // Overlapping CIDRs: the first listed, not the most specific.
    let ix = index(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3"], true);
    assert_eq!(ix.lookup(&host("10.1.2.3"), &query(443)), Some(0));
    let ix = index(&["10.1.2.3", "10.1.0.0/16", "10.0.0.0/8"], true);
    assert_eq!(ix.lookup(&host("10.1.2.3"), &query(443)), Some(0));
    assert_eq!(ix.lookup(&host("10.1.9.9"), &query(443)), Some(1));
    assert_eq!(ix.lookup(&host("10.9.9.9"), &query(443)), Some(2));
}

#[test]
fn expired_entries_never_match() {
    let expires = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(NOW);
    let specs = [
        parse("api.example.com").unwrap(),
        parse(".example.com").unwrap(),
    ];
    let ix = RuleIndex::new([(&specs[0], Some(expires)), (&specs[1], None)], true);
    let at = |now| Query { now, ..query(443) };
    let api = host("api.example.com");
    // One second before expiry the entry still matches; at expiry it stops,
    // and the next rule takes over.
    assert_eq!(ix.lookup(&api, &at(NOW - 1)), Some(0));
    assert_eq!(ix.lookup(&api, &at(NOW)), Some(1));
    assert_eq!(ix.lookup(&api, &at(NOW + 86_400)), Some(1));

    let ix = RuleIndex::new([(&specs[0], Some(expires))], true);
    assert_eq!(ix.lookup(&api, &at(NOW)), None);
    // A deny entry expires the same way.
    let ix = RuleIndex::new([(&specs[0], Some(expires))], false);
    assert_eq!(ix.lookup(&api, &at(NOW - 1)), Some(0));
    assert_eq!(ix.lookup(&api, &at(NOW)), None);
}

#[test]
fn bare_date_expiry_matches_through_the_end_of_that_day() {
    let expires = crate::config::parse_expiry("2027-03-31");
    let spec = parse("api.osv.dev").unwrap();
    let ix = RuleIndex::new([(&spec, expires)], true);
    let at = |t: &str| Query {
        now: epoch_secs(humantime::parse_rfc3339(t).unwrap()),
        ..query(443)
    };
    let osv = host("api.osv.dev");
    assert_eq!(ix.lookup(&osv, &at("2027-03-31T00:00:00Z")), Some(0));
    assert_eq!(ix.lookup(&osv, &at("2027-03-31T23:59:59Z")), Some(0));
    assert_eq!(ix.lookup(&osv, &at("2027-04-01T00:00:00Z")), None);
}

#[test]
fn empty_index() {
    let ix = index(&[], true);
    assert!(ix.is_empty());
    assert_eq!(ix.lookup(&host("example.com"), &query(443)), None);
    assert!(!index(&["10.0.0.0/8"], true).is_empty());
}

#[test]
fn lookup_finds_rules_at_every_depth_of_one_index() {
    // Rules of three forms at three depths share one table; names between
    // them (a.example.com, b.example.com) match none.
    let ix = index(
        &["example.com", "*.deep.a.example.com", "api.*.b.example.com"],
        true,
    );
    for (dest, want) in [
        ("x.y.deep.a.example.com", Some(1)),
        ("api.eu.b.example.com", Some(2)),
        ("example.com", Some(0)),
        ("a.example.com", None),
        ("deep.a.example.com", None),
        ("x.deep.b.example.com", None),
        ("api.b.example.com", None),
    ] {
        assert_eq!(ix.lookup(&host(dest), &query(443)), want, "{dest}");
    }
}
