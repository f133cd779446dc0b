//! Tests for the configuration file: the shipped files parse, every table
//! rejects unknown keys, every validation names file:line:col and the key,
//! expiry dates mean what the docs say, and absent sections take the
//! documented defaults.

use super::*;

/// A minimal valid agent, for tests that need one to hang rules on.
const AGENT: &str = "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\n";

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("sluice.toml"))
}

fn invalid(text: &str) -> Invalid {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid(e)) => *e,
        Err(e) => panic!("not a validation error: {e}"),
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn rfc3339(s: &str) -> u64 {
    secs(humantime::parse_rfc3339(s).unwrap())
}

/// Every TOML file a user might start from: `config/` and the Kubernetes base.
fn shipped_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files.push(root.join("deploy/kubernetes/base/sluice.toml"));
    assert!(files.len() >= 3, "{files:?}");
    files
}

#[test]
fn shipped_configs_parse() {
    for path in shipped_configs() {
        let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.agents.is_empty(), "{}", path.display());
        assert_eq!(config.path, path);
    }
}

/// hickory's trick: inject an unknown key under every header of every
/// shipped file; each must be refused, naming the line and the table.
#[test]
fn shipped_configs_reject_an_unknown_key_in_every_table() {
    for path in shipped_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut agents = 0;
        for (i, line) in lines.iter().enumerate() {
            let header = line.trim();
            if !header.starts_with('[') {
                continue;
            }
            let table = if header == "[[agent]]" {
                agents += 1;
                format!("agent[{}]", agents - 1)
            } else {
                header.trim_matches(['[', ']']).to_owned()
            };
            let mut injected = lines.clone();
            injected.insert(i + 1, "sluice_unknown = 1");
            let e = match Config::from_toml(&injected.join("\n"), &path) {
                Err(ConfigError::Invalid(e)) => e,
                other => panic!("{}: {header}: {other:?}", path.display()),
            };
            assert_eq!(
                (e.line, e.col, e.key.as_str()),
                (i + 2, 1, format!("{table}.sluice_unknown").as_str()),
                "{}",
                path.display()
            );
            assert!(
                e.message.starts_with("unknown field `sluice_unknown`"),
                "{e}"
            );
        }
        assert!(agents > 0, "{}", path.display());
    }
}

#[test]
fn unknown_key_in_each_table_is_located() {
    // (config, line, col, key)
    let rows: &[(&str, usize, usize, &str)] = &[
        ("bogus = 1\n", 1, 1, "bogus"),
        ("[bogus]\nx = 1\n", 1, 2, "bogus"),
        ("[proxy]\nbogus = 1\n", 2, 1, "proxy.bogus"),
        (
            "[admin]\nlisten = \"127.0.0.1:9090\"\nbogus = 1\n",
            3,
            1,
            "admin.bogus",
        ),
        ("[dns]\n  bogus = 1\n", 2, 3, "dns.bogus"),
        ("[egress]\nbogus = 1\n", 2, 1, "egress.bogus"),
        ("[limits]\nbogus = 1\n", 2, 1, "limits.bogus"),
        ("[log]\nbogus = 1\n", 2, 1, "log.bogus"),
        (
            "[tls]\ncert = \"a\"\nkey = \"b\"\nclient_ca = \"c\"\nbogus = 1\n",
            5,
            1,
            "tls.bogus",
        ),
        ("[unidentified]\nbogus = 1\n", 2, 1, "unidentified.bogus"),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\nbogus = 1\n",
            4,
            1,
            "agent[0].bogus",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\n[[agent]]\nname = \"b\"\nsources = [\"10.0.0.2\"]\nbogus = 1\n",
            7,
            1,
            "agent[1].bogus",
        ),
        // An allow-table entry, inline and on its own line of a multi-line array.
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\nallow = [{ rule = \"x.com\", bogus = 1 }]\n",
            4,
            28,
            "agent[0].allow",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\ndeny = [\n  \"y.com\",\n  { rule = \"x.com\", bogus = 1 },\n]\n",
            6,
            21,
            "agent[0].deny",
        ),
    ];
    for &(text, line, col, key) in rows {
        let e = invalid(text);
        assert_eq!((e.line, e.col, e.key.as_str()), (line, col, key), "{text}");
        assert!(e.message.starts_with("unknown field `"), "{e}");
    }
}

#[test]
fn unknown_key_messages_are_exact() {
    let rows = [
        (
            "[proxy]\nbogus = 1\n",
            "sluice.toml:2:1: proxy.bogus: unknown field `bogus`, expected `listen` or `tls_listen`",
        ),
        (
            "[egress]\nbogus = 1\n",
            "sluice.toml:2:1: egress.bogus: unknown field `bogus`, expected one of `ports`, `allow_cidrs`, `connect_timeout`, `idle_timeout`, `require_sni`, `allow_ech`",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\nbogus = 1\n",
            "sluice.toml:4:1: agent[0].bogus: unknown field `bogus`, expected one of `name`, `sources`, `token_sha256`, `spiffe_ids`, `allow`, `deny`, `mode`, `require_sni`, `allow_ech`",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\nallow = [{ rule = \"x.com\", bogus = 1 }]\n",
            "sluice.toml:4:28: agent[0].allow: unknown field `bogus`, expected one of `rule`, `owner`, `reason`, `expires`",
        ),
    ];
    for (text, want) in rows {
        assert_eq!(load(text).unwrap_err().to_string(), want);
    }
}

#[test]
fn invalid_values_are_refused_with_place_key_and_hint() {
    let rows: &[(String, &str)] = &[
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.0/24\"]\n[[agent]]\nname = \"a\"\nsources = [\"10.0.1.0/24\"]\n".into(),
            "sluice.toml:5:8: agent[1].name: \"a\" is already the name of agent[0]",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.0/24\"]\n[[agent]]\nname = \"b\"\nsources = [\"10.0.0.0/24\"]\n".into(),
            "sluice.toml:6:12: agent[1].sources[0]: 10.0.0.0/24 is also claimed by agent \"a\": a source range identifies one agent",
        ),
        // A single address is the /32 of the same range.
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.7\"]\n[[agent]]\nname = \"b\"\nsources = [\"10.0.0.9\", \"10.0.0.7/32\"]\n".into(),
            "sluice.toml:6:24: agent[1].sources[1]: 10.0.0.7/32 is also claimed by agent \"a\": a source range identifies one agent",
        ),
        (
            "[[agent]]\nname = \"a\"\nspiffe_ids = [\"spiffe://c/x\"]\n[[agent]]\nname = \"b\"\nspiffe_ids = [\"spiffe://c/x\"]\n".into(),
            "sluice.toml:6:15: agent[1].spiffe_ids[0]: \"spiffe://c/x\" is also claimed by agent \"a\"",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1/8\"]\n".into(),
            "sluice.toml:3:12: agent[0].sources[0]: \"10.0.0.1/8\" has host bits set: did you mean 10.0.0.0/8?",
        ),
        (
            "[[agent]]\nname = \"a\"\nsources = [\"10.0.0.0/33\"]\n".into(),
            "sluice.toml:3:12: agent[0].sources[0]: \"10.0.0.0/33\" is not an IP address or CIDR",
        ),
        (
            "[egress]\nallow_cidrs = [\"10.1.2.3/16\"]\n".into(),
            "sluice.toml:2:16: egress.allow_cidrs[0]: \"10.1.2.3/16\" has host bits set: did you mean 10.1.0.0/16?",
        ),
        (
            "[[agent]]\nname = \"a\"\ntoken_sha256 = [\"abc\"]\n".into(),
            "sluice.toml:3:17: agent[0].token_sha256[0]: must be 64 hex digits: the SHA-256 of the token, e.g. from `printf %s TOKEN | sha256sum`",
        ),
        (
            format!("[[agent]]\nname = \"a\"\ntoken_sha256 = [\"{}\"]\n", "g".repeat(64)),
            "sluice.toml:3:17: agent[0].token_sha256[0]: must be 64 hex digits: the SHA-256 of the token, e.g. from `printf %s TOKEN | sha256sum`",
        ),
        (
            "[[agent]]\nname = \"a\"\nspiffe_ids = [\"spiffe:/x\"]\n".into(),
            "sluice.toml:3:15: agent[0].spiffe_ids[0]: \"spiffe:/x\" is not a SPIFFE ID (spiffe://trust-domain/path)",
        ),
        (
            "[[agent]]\nname = \"a\"\nspiffe_ids = [\"spiffe://\"]\n".into(),
            "sluice.toml:3:15: agent[0].spiffe_ids[0]: \"spiffe://\" is not a SPIFFE ID (spiffe://trust-domain/path)",
        ),
        (
            "[egress]\nconnect_timeout = \"10 parsecs\"\n".into(),
            "sluice.toml:2:19: egress.connect_timeout: invalid value: string \"10 parsecs\", expected a duration",
        ),
        (
            "[limits]\nshutdown_grace = 30\n".into(),
            "sluice.toml:2:18: limits.shutdown_grace: invalid type: integer `30`, expected a duration",
        ),
        (
            "[egress]\nports = [80]\nconnect_timeout = \"0s\"\n".into(),
            "sluice.toml:3:1: egress.connect_timeout: must be greater than zero",
        ),
        (
            "[egress]\nidle_timeout = \"0s\"\n".into(),
            "sluice.toml:2:1: egress.idle_timeout: must be greater than zero",
        ),
        (
            "# [limits] in a comment is not the header\n[limits]\nhead_timeout = \"0ms\"\n".into(),
            "sluice.toml:3:1: limits.head_timeout: must be greater than zero",
        ),
        (
            "[dns]\ntimeout = \"0s\"\n".into(),
            "sluice.toml:2:1: dns.timeout: must be greater than zero",
        ),
        (
            "[dns]\nnameservers = []\n".into(),
            "sluice.toml:2:1: dns.nameservers: is empty: remove it to use the system's resolv.conf",
        ),
        (
            "[dns]\nnameservers = [\"kube-dns\"]\n".into(),
            "sluice.toml:2:16: dns.nameservers[0]: \"kube-dns\" is not an IP address or IP:port",
        ),
        (
            "[limits]\nhead_size = 1023\n".into(),
            "sluice.toml:2:13: limits.head_size: must be between 1024 and 1048576 bytes",
        ),
        (
            "[limits]\nhead_size = 1048577\n".into(),
            "sluice.toml:2:13: limits.head_size: must be between 1024 and 1048576 bytes",
        ),
        (
            "[limits]\nmax_connections = 0\n".into(),
            "sluice.toml:2:19: limits.max_connections: must be at least 1",
        ),
        (
            "[proxy]\ntls_listen = \"0.0.0.0:3129\"\n".into(),
            "sluice.toml:2:14: proxy.tls_listen: needs a [tls] section with cert, key and client_ca",
        ),
        (
            "[egress]\nports = [0]\n".into(),
            "sluice.toml:2:10: egress.ports[0]: port 0 is not a port",
        ),
        (
            "[egress]\nports = [70000]\n".into(),
            "sluice.toml:2:10: egress.ports: invalid value: integer `70000`, expected u16",
        ),
        (
            format!("{AGENT}mode = \"audit\"\n"),
            "sluice.toml:4:8: agent[0].mode: \"audit\" is not a mode: use \"enforce\" or \"report\"",
        ),
        (
            "[unidentified]\naction = \"allow\"\n".into(),
            "sluice.toml:2:10: unidentified.action: \"allow\" is not supported: the only action is \"deny\"",
        ),
        (
            "[[agent]]\nname = \"Orchestrator\"\nsources = [\"10.0.0.1\"]\n".into(),
            "sluice.toml:2:8: agent[0].name: \"Orchestrator\" is not a valid agent name: use [a-z0-9][a-z0-9-_.]*",
        ),
        (
            "# agents\n[[agent]]\nname = \"a\"\nallow = [\"x.com\"]\n".into(),
            "sluice.toml:2:1: agent[0].sources: agent \"a\" has no sources, token_sha256 or spiffe_ids: nothing could ever identify it",
        ),
        (
            format!("{AGENT}allow = [\"api.example.com\", \"*example.com\"]\n"),
            "sluice.toml:4:29: agent[0].allow[1]: \"*example.com\": '*' must be a whole label: use \"*.example.com\" (subdomains) or \".example.com\" (the domain and its subdomains)",
        ),
        (
            format!("{AGENT}deny = [\"*.com\"]\n"),
            "sluice.toml:4:9: agent[0].deny[0]: \"*.com\": matches every name under the top-level domain \"com\": name a registrable domain",
        ),
        (
            format!("{AGENT}allow = [{{ rule = \"x.com\", expires = \"2027-02-30\" }}]\n"),
            "sluice.toml:4:10: agent[0].allow[0].expires: \"2027-02-30\" is not a date (YYYY-MM-DD) or RFC 3339 time",
        ),
        (
            format!("{AGENT}allow = [{{ owner = \"me\" }}]\n"),
            "sluice.toml:4:10: agent[0].allow: missing field `rule`",
        ),
    ];
    for (text, want) in rows {
        assert_eq!(load(text).unwrap_err().to_string(), *want, "{text}");
    }
}

#[test]
fn io_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let e = Config::load(&path).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{}: cannot read the file", path.display())
    );
    // The OS error is the cause, printed once by `main` as "caused by: ...".
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn expiry_forms() {
    // (written, the first second at which the entry no longer matches)
    let rows: &[(&str, Option<u64>)] = &[
        // A bare date runs through the end of that day, UTC.
        ("2027-03-31", Some(rfc3339("2027-04-01T00:00:00Z"))),
        ("2027-12-31", Some(rfc3339("2028-01-01T00:00:00Z"))),
        ("2028-02-29", Some(rfc3339("2028-03-01T00:00:00Z"))),
        ("2000-02-29", Some(rfc3339("2000-03-01T00:00:00Z"))),
        (
            "2027-03-31T12:00:00Z",
            Some(rfc3339("2027-03-31T12:00:00Z")),
        ),
        (
            "2027-03-31T12:00:00+00:00",
            Some(rfc3339("2027-03-31T12:00:00Z")),
        ),
        (
            "2027-03-31T12:00:00+02:00",
            Some(rfc3339("2027-03-31T10:00:00Z")),
        ),
        (
            "2027-03-31T22:30:00-05:30",
            Some(rfc3339("2027-04-01T04:00:00Z")),
        ),
        // Sub-second precision is accepted; the rule works in whole seconds.
        (
            "2027-03-31T12:00:00.250Z",
            Some(rfc3339("2027-03-31T12:00:00Z")),
        ),
        ("2027-02-30", None),
        ("2027-02-29", None),
        ("1900-02-29", None),
        ("2027-04-31", None),
        ("2027-13-01", None),
        ("2027-00-10", None),
        ("2027-01-00", None),
        ("2027-3-31", None),
        ("31.03.2027", None),
        ("2027-02-30T00:00:00Z", None),
        ("2027-03-31T25:00:00Z", None),
        ("2027-03-31T12:00:00+24:00", None),
        ("next tuesday", None),
        ("", None),
    ];
    for &(text, want) in rows {
        assert_eq!(parse_expiry(text).map(secs), want, "{text:?}");
    }
}

#[test]
fn rule_entries_keep_text_provenance_and_place() {
    let text = format!(
        "{AGENT}allow = [\n  \"API.Example.com\",\n  {{ rule = \"api.osv.dev\", owner = \"appsec\", reason = \"vulnerability lookups\", expires = \"2027-03-31\" }},\n]\n"
    );
    let config = load(&text).unwrap();
    let allow = &config.agents[0].allow;
    assert_eq!(allow.len(), 2);
    // The text as written is what the log's `rule` shows.
    assert_eq!(allow[0].text, "API.Example.com");
    assert_eq!((allow[0].line, allow[0].col), (5, 3));
    assert_eq!((allow[0].owner.as_deref(), allow[0].expires), (None, None));
    assert_eq!(allow[1].text, "api.osv.dev");
    assert_eq!(allow[1].owner.as_deref(), Some("appsec"));
    assert_eq!(allow[1].reason.as_deref(), Some("vulnerability lookups"));
    assert_eq!(
        allow[1].expires.map(secs),
        Some(rfc3339("2027-04-01T00:00:00Z"))
    );
    assert_eq!((allow[1].line, allow[1].col), (6, 3));
}

#[test]
fn defaults_when_sections_are_absent() {
    let c = load("").unwrap();
    assert_eq!(c.proxy.listen, "0.0.0.0:3128".parse().unwrap());
    assert_eq!(c.proxy.tls_listen, None);
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.dns.nameservers, None);
    assert_eq!(c.dns.timeout, Duration::from_secs(2));
    assert!(c.dns.hosts_file);
    assert_eq!(c.egress.ports, [80, 443]);
    assert!(c.egress.allow_cidrs.is_empty());
    assert_eq!(c.egress.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.egress.idle_timeout, Duration::from_secs(15 * 60));
    assert!(!c.egress.require_sni);
    assert!(!c.egress.allow_ech, "ECH is refused unless allowed");
    assert_eq!(c.limits.head_size, 16384);
    assert_eq!(c.limits.head_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.max_connections, 10_000);
    assert_eq!(c.limits.max_connections_per_agent, 1000);
    assert_eq!(c.limits.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.log.path, None);
    assert!(!c.log.include_query);
    assert!(c.tls.is_none());
    assert_eq!(c.unidentified, UnidentifiedAction::Deny);
    assert!(c.agents.is_empty());

    // An agent's own defaults.
    let c = load(AGENT).unwrap();
    let a = &c.agents[0];
    assert_eq!(a.mode, Mode::Enforce);
    assert_eq!(a.require_sni, None);
    assert_eq!(a.allow_ech, None);
    assert!(a.allow.is_empty() && a.deny.is_empty());
    assert!(a.token_sha256.is_empty() && a.spiffe_ids.is_empty());

    // An empty section is the same as an absent one.
    let c = load("[proxy]\n[admin]\n[dns]\n[egress]\n[limits]\n[log]\n[unidentified]\n").unwrap();
    assert_eq!(c.egress.ports, [80, 443]);
    assert_eq!(c.limits.head_size, 16384);
}

#[test]
fn values_are_compiled() {
    let text = "
[proxy]
listen = \"127.0.0.1:0\"
tls_listen = \"[::1]:3129\"
[dns]
nameservers = [\"10.96.0.10\", \"[fd00::53]:5353\"]
timeout = \"250ms\"
hosts_file = false
[egress]
ports = [443, 8443]
allow_cidrs = [\"10.96.0.0/12\", \"fd00::1\"]
idle_timeout = \"1h 30m\"
require_sni = true
allow_ech = true
[limits]
head_size = 1024
[log]
path = \"logs/access.jsonl\"
include_query = true
[tls]
cert = \"server.pem\"
key = \"/abs/server-key.pem\"
client_ca = \"ca.pem\"
[[agent]]
name = \"ci-1.runner_x\"
sources = [\"10.0.1.0/24\", \"10.0.2.5\", \"2001:db8::/64\"]
token_sha256 = [\"F0049E4F31B8E4652BF300D3143632504DC5B4391636BC9EE5106084521EE7E1\"]
spiffe_ids = [\"spiffe://cluster.local/ns/agents/sa/ci\"]
mode = \"report\"
require_sni = false
allow_ech = false
";
    let c = Config::from_toml(text, Path::new("/etc/sluice/sluice.toml")).unwrap();
    assert_eq!(c.proxy.tls_listen, Some("[::1]:3129".parse().unwrap()));
    assert_eq!(
        c.dns.nameservers,
        Some(vec![
            "10.96.0.10:53".parse().unwrap(),
            "[fd00::53]:5353".parse().unwrap()
        ])
    );
    assert_eq!(c.dns.timeout, Duration::from_millis(250));
    assert!(!c.dns.hosts_file);
    assert_eq!(c.egress.ports, [443, 8443]);
    assert_eq!(
        c.egress.allow_cidrs,
        [
            "10.96.0.0/12".parse::<IpNet>().unwrap(),
            "fd00::1/128".parse().unwrap()
        ]
    );
    assert_eq!(c.egress.idle_timeout, Duration::from_secs(90 * 60));
    assert!(c.egress.require_sni);
    assert!(c.egress.allow_ech);
    assert_eq!(c.limits.head_size, 1024);
    // Relative paths are relative to the config file, not the working directory.
    assert_eq!(
        c.log.path,
        Some(PathBuf::from("/etc/sluice/logs/access.jsonl"))
    );
    assert!(c.log.include_query);
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, Path::new("/etc/sluice/server.pem"));
    assert_eq!(tls.key, Path::new("/abs/server-key.pem"));
    assert_eq!(tls.client_ca, Path::new("/etc/sluice/ca.pem"));
    let a = &c.agents[0];
    assert_eq!(a.name, "ci-1.runner_x");
    assert_eq!(
        a.sources,
        [
            "10.0.1.0/24".parse::<IpNet>().unwrap(),
            "10.0.2.5/32".parse().unwrap(),
            "2001:db8::/64".parse().unwrap()
        ]
    );
    // Upper-case hex is the same digest.
    assert_eq!(a.token_sha256[0][..4], [0xf0, 0x04, 0x9e, 0x4f]);
    assert_eq!(a.spiffe_ids, ["spiffe://cluster.local/ns/agents/sa/ci"]);
    assert_eq!(a.mode, Mode::Report);
    assert_eq!(a.require_sni, Some(false));
    assert_eq!(a.allow_ech, Some(false));
}

#[test]
fn one_agent_may_repeat_its_own_range() {
    let c =
        load("[[agent]]\nname = \"a\"\nsources = [\"10.0.0.0/24\", \"10.0.0.0/24\"]\n").unwrap();
    assert_eq!(c.agents[0].sources.len(), 2);
    // Nested ranges of different agents are fine: the most specific wins.
    load("[[agent]]\nname = \"a\"\nsources = [\"10.0.0.0/16\"]\n[[agent]]\nname = \"b\"\nsources = [\"10.0.0.0/24\"]\n").unwrap();
}

#[test]
fn ipv4_mapped_ranges_are_rejected_with_their_ipv4_form() {
    let text = "[[agent]]\nname = \"a\"\nsources = [\"::ffff:10.0.0.0/104\"]\n";
    let e = Config::from_toml(text, Path::new("sluice.toml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sluice.toml:3:12: agent[0].sources[0]: \"::ffff:10.0.0.0/104\" is an IPv4-mapped range: write it as IPv4, 10.0.0.0/8"
    );
}

/// Whatever an operator's editor (or a bad merge) does to a config file,
/// loading it never panics, and a rejection points at a real place: a line
/// of the file and a column on it, and names the key (or `(file)`).
#[test]
fn mangled_configs_are_rejected_at_a_real_place() {
    let example = include_str!("../../config/example.toml");
    let mut rejected = 0;
    for input in crate::mangle::variants(&[example.as_bytes()], 3_000, 0xc0f1_6000_0000_0001) {
        let text = String::from_utf8_lossy(&input);
        let Err(ConfigError::Invalid(e)) = load(&text) else {
            continue;
        };
        rejected += 1;
        let lines: Vec<&str> = text.split('\n').collect();
        let line = lines.get(e.line.wrapping_sub(1));
        assert!(line.is_some(), "line {} of {}: {e}", e.line, lines.len());
        let width = line.map_or(0, |l| l.chars().count());
        assert!(
            (1..=width + 1).contains(&e.col),
            "col {} of {width}: {e}",
            e.col
        );
        assert!(!e.key.is_empty() && !e.message.is_empty(), "{e}");
    }
    assert!(rejected > 1_000, "only {rejected} rejected");
}

#[test]
fn an_empty_table_header_is_named() {
    let e = invalid("[egress]\nports = [443]\n[]\n");
    assert_eq!(
        (e.line, e.col, e.key.as_str()),
        (3, 2, "(table header)"),
        "{e}"
    );
}
