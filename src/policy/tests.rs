//! Tests for `Policy`: decision rows of (agent, destination, verdict, rule)
//! in the style of smokescreen's ACL tests, and `vet` over resolved
//! addresses (order kept, forbidden dropped, `allow_cidrs` exceptions).

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::host::parse_authority;

/// Agents exercising every rule form, both modes and expiry.
const CONFIG: &str = r#"
[egress]
ports = [80, 443]
allow_cidrs = ["10.96.0.0/12", "fd00:1::/64"]

[[agent]]
name = "orchestrator"
sources = ["10.0.1.0/24"]
allow = [
  "api.openai.com",
  "*.githubusercontent.com",
  "bedrock-runtime.*.amazonaws.com",
  ".pypi.org",
  "files.internal.example:8443",
  "10.20.0.0/16:5432",
  "[2001:db8::/32]:443",
]
deny = ["gist.githubusercontent.com", "*.pypi.org:8080"]

[[agent]]
name = "scanner"
sources = ["10.0.2.0/24"]
allow = [
  { rule = "api.osv.dev", owner = "appsec", expires = "2027-03-31" },
  ".osv.dev",
  { rule = "old.example.com", expires = "2020-01-01" },
]
deny = [{ rule = "bad.osv.dev", expires = "2020-01-01" }]

[[agent]]
name = "learner"
sources = ["10.0.3.0/24"]
allow = [".wikipedia.org"]
deny = ["upload.wikimedia.org"]
mode = "report"

[[agent]]
name = "nothing"
sources = ["10.0.4.0/24"]
"#;

fn policy(text: &str) -> Policy {
    Policy::new(Arc::new(
        Config::from_toml(text, Path::new("sluice.toml")).unwrap(),
    ))
}

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

use DenyReason::{DeniedByRule, NotAllowed};
use Verdict::{Allow, Deny, Report};

#[test]
fn decide_rows() {
    let p = policy(CONFIG);
    let now = at("2026-06-01T12:00:00Z");
    // (agent, destination, verdict, rule that decided it)
    let rows: &[(&str, &str, Verdict, Option<&str>)] = &[
        (
            "orchestrator",
            "api.openai.com:443",
            Allow,
            Some("api.openai.com"),
        ),
        (
            "orchestrator",
            "API.OpenAI.com.:80",
            Allow,
            Some("api.openai.com"),
        ),
        ("orchestrator", "api.openai.com:22", Deny(NotAllowed), None),
        ("orchestrator", "openai.com:443", Deny(NotAllowed), None),
        (
            "orchestrator",
            "raw.githubusercontent.com:443",
            Allow,
            Some("*.githubusercontent.com"),
        ),
        (
            "orchestrator",
            "githubusercontent.com:443",
            Deny(NotAllowed),
            None,
        ),
        // Deny wins over allow, whatever the order of the lists.
        (
            "orchestrator",
            "gist.githubusercontent.com:443",
            Deny(DeniedByRule),
            Some("gist.githubusercontent.com"),
        ),
        // A deny rule without a port covers every port, even one no allow rule admits.
        (
            "orchestrator",
            "gist.githubusercontent.com:22",
            Deny(DeniedByRule),
            Some("gist.githubusercontent.com"),
        ),
        // A deny rule with a port covers that port only.
        (
            "orchestrator",
            "files.pypi.org:8080",
            Deny(DeniedByRule),
            Some("*.pypi.org:8080"),
        ),
        (
            "orchestrator",
            "files.pypi.org:443",
            Allow,
            Some(".pypi.org"),
        ),
        ("orchestrator", "pypi.org:443", Allow, Some(".pypi.org")),
        ("orchestrator", "pypi.org:8080", Deny(NotAllowed), None),
        (
            "orchestrator",
            "bedrock-runtime.eu-west-1.amazonaws.com:443",
            Allow,
            Some("bedrock-runtime.*.amazonaws.com"),
        ),
        (
            "orchestrator",
            "bedrock-runtime.amazonaws.com:443",
            Deny(NotAllowed),
            None,
        ),
        (
            "orchestrator",
            "files.internal.example:8443",
            Allow,
            Some("files.internal.example:8443"),
        ),
        (
            "orchestrator",
            "files.internal.example:443",
            Deny(NotAllowed),
            None,
        ),
        // IP literals meet CIDR rules only; names never do.
        (
            "orchestrator",
            "10.20.1.2:5432",
            Allow,
            Some("10.20.0.0/16:5432"),
        ),
        (
            "orchestrator",
            "[::ffff:10.20.1.2]:5432",
            Allow,
            Some("10.20.0.0/16:5432"),
        ),
        ("orchestrator", "10.20.1.2:443", Deny(NotAllowed), None),
        (
            "orchestrator",
            "[2001:db8:5::1]:443",
            Allow,
            Some("[2001:db8::/32]:443"),
        ),
        (
            "orchestrator",
            "162.159.140.229:443",
            Deny(NotAllowed),
            None,
        ),
        // Expiry: an unexpired entry matches; an expired one does not.
        ("scanner", "api.osv.dev:443", Allow, Some("api.osv.dev")),
        ("scanner", "old.example.com:443", Deny(NotAllowed), None),
        // An expired deny entry no longer denies; the allow rule decides.
        ("scanner", "bad.osv.dev:443", Allow, Some(".osv.dev")),
        // Report mode lets a would-be denial through, with its reason and rule.
        (
            "learner",
            "en.wikipedia.org:443",
            Allow,
            Some(".wikipedia.org"),
        ),
        (
            "learner",
            "upload.wikimedia.org:443",
            Report(DeniedByRule),
            Some("upload.wikimedia.org"),
        ),
        ("learner", "example.com:443", Report(NotAllowed), None),
        ("learner", "10.0.0.1:443", Report(NotAllowed), None),
        // No rules: everything is denied.
        ("nothing", "example.com:443", Deny(NotAllowed), None),
    ];
    for (agent, dest, verdict, rule) in rows {
        let id = p.agent_by_name(agent).unwrap();
        let (host, port) = parse_authority(dest, None).unwrap();
        let d = p.decide(id, &host, port, now);
        assert_eq!(
            (&d.verdict, d.rule.as_deref()),
            (verdict, *rule),
            "{agent} → {dest}"
        );
    }
}

#[test]
fn expiry_is_judged_at_the_time_given() {
    let p = policy(CONFIG);
    let scanner = p.agent_by_name("scanner").unwrap();
    let (host, port) = parse_authority("api.osv.dev:443", None).unwrap();
    let rule = |now| p.decide(scanner, &host, port, at(now)).rule;
    // Through the last second of 2027-03-31 (UTC) the owner's entry decides;
    // afterwards the broader `.osv.dev` does.
    assert_eq!(rule("2027-03-31T23:59:59Z").as_deref(), Some("api.osv.dev"));
    assert_eq!(rule("2027-04-01T00:00:00Z").as_deref(), Some(".osv.dev"));
}

#[test]
fn compiled_agents_keep_name_and_mode() {
    let p = policy(CONFIG);
    let learner = p.agent(p.agent_by_name("learner").unwrap());
    assert_eq!(learner.mode, Mode::Report);
    assert_eq!(&*learner.name, "learner");
}

#[test]
fn agents_are_looked_up_by_name() {
    let p = policy(CONFIG);
    assert_eq!(p.agents().len(), 4);
    assert_eq!(p.agent_by_name("orchestrator"), Some(0));
    assert_eq!(p.agent_by_name("nothing"), Some(3));
    assert_eq!(p.agent_by_name("Orchestrator"), None);
    assert!(!p.tokens_in_use());
}

#[test]
fn require_sni_falls_back_to_egress() {
    let p = policy(
        "[egress]\nrequire_sni = true\n[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\n[[agent]]\nname = \"b\"\nsources = [\"10.0.0.2\"]\nrequire_sni = false\n",
    );
    assert!(p.agent(0).require_sni);
    assert!(!p.agent(1).require_sni);
}

#[test]
fn vet_keeps_order_and_drops_forbidden_addresses() {
    let p = policy(CONFIG);
    // (resolved addresses, what may be dialled, in the resolver's order)
    type Vetted = Result<&'static [&'static str], DenyReason>;
    let rows: &[(&[&str], Vetted)] = &[
        (&["93.184.215.14"], Ok(&["93.184.215.14"])),
        (
            &["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"],
            Ok(&["2606:2800:21f:cb07:6820:80da:af6b:8b2c", "93.184.215.14"]),
        ),
        // Forbidden ones are dropped from anywhere in the list.
        (
            &[
                "127.0.0.1",
                "93.184.215.14",
                "169.254.169.254",
                "1.1.1.1",
                "10.0.0.1",
            ],
            Ok(&["93.184.215.14", "1.1.1.1"]),
        ),
        // allow_cidrs exceptions pass, with their mapped form.
        (&["10.96.0.10", "10.112.0.1"], Ok(&["10.96.0.10"])),
        (&["::ffff:10.96.0.10"], Ok(&["::ffff:10.96.0.10"])),
        (&["fd00:1::5", "fd00:2::5"], Ok(&["fd00:1::5"])),
        // All forbidden: nothing left to dial.
        (&["127.0.0.1"], Err(DenyReason::DestinationIpProhibited)),
        (
            &[
                "10.0.0.1",
                "100.64.0.1",
                "::1",
                "::ffff:169.254.169.254",
                "64:ff9b::a00:1",
                "fe80::1",
                "0.0.0.0",
            ],
            Err(DenyReason::DestinationIpProhibited),
        ),
        (&[], Err(DenyReason::DestinationIpProhibited)),
    ];
    for (resolved, want) in rows {
        let want = want.map(ips);
        let got = p.vet(&ips(resolved).into()).map(|v| v.to_vec());
        assert_eq!(got, want, "{resolved:?}");
    }
}

#[test]
fn dialable_follows_allow_cidrs() {
    let strict = policy("");
    let open = policy("[egress]\nallow_cidrs = [\"10.96.0.0/12\"]\n");
    // (address, dialable with no exceptions, dialable with 10.96.0.0/12)
    let rows = [
        ("93.184.215.14", true, true),
        ("10.96.0.10", false, true),
        ("::ffff:10.96.0.10", false, true),
        ("64:ff9b::a60:a", false, true),
        ("10.95.255.255", false, false),
        ("127.0.0.1", false, false),
    ];
    for (addr, in_strict, in_open) in rows {
        assert_eq!(
            (strict.dialable(ip(addr)), open.dialable(ip(addr))),
            (in_strict, in_open),
            "{addr}"
        );
    }
}

#[test]
fn reasons_are_the_spec_tokens() {
    assert_eq!(DenyReason::NotAllowed.as_str(), "not_allowed");
    assert_eq!(DenyReason::DeniedByRule.as_str(), "denied_by_rule");
    assert_eq!(
        DenyReason::DestinationIpProhibited.as_str(),
        "destination_ip_prohibited"
    );
    assert_eq!(Mode::Enforce.as_str(), "enforce");
    assert_eq!(Mode::Report.as_str(), "report");
}
