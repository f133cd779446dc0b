//! Tests for identity: the most specific source range wins, tokens are
//! checked with no fall-back to the source when wrong, SPIFFE IDs come
//! first, and the SPEC's precedence holds when several kinds are offered.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::policy::Policy;

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config() -> String {
    format!(
        r#"
[[agent]]
name = "wide"
sources = ["10.0.0.0/8", "2001:db8::/32"]

[[agent]]
name = "mid"
sources = ["10.1.0.0/16", "2001:db8:1::/48"]

[[agent]]
name = "narrow"
sources = ["10.1.2.0/24", "2001:db8:1:2::/64"]

[[agent]]
name = "host"
sources = ["10.1.2.3", "2001:db8:1:2::3"]

[[agent]]
name = "ci"
sources = ["10.9.0.0/24"]
token_sha256 = ["{ci}", "{ci_rotated}"]

[[agent]]
name = "notebook"
token_sha256 = ["{notebook}"]

[[agent]]
name = "orchestrator"
sources = ["10.7.0.0/24"]
token_sha256 = ["{orch}"]
spiffe_ids = ["spiffe://cluster.local/ns/agents/sa/orchestrator"]
"#,
        ci = sha256_hex("ci-token"),
        ci_rotated = sha256_hex("ci-token-2"),
        notebook = sha256_hex("nb:token:with:colons"),
        orch = sha256_hex("orch-token"),
    )
}

fn policy(text: &str) -> Policy {
    Policy::new(Arc::new(
        Config::from_toml(text, Path::new("sluice.toml")).unwrap(),
    ))
}

fn basic(user_pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

/// `Ok(agent name, method)` or the error, for a readable table.
type Outcome = Result<(String, Method), IdentityError>;

fn identify(p: &Policy, peer: &str, spiffe_id: Option<&str>, auth: Option<&str>) -> Outcome {
    let ev = Evidence {
        peer: peer.parse().unwrap(),
        spiffe_id,
        proxy_authorization: auth.map(str::as_bytes),
    };
    p.identities
        .identify(&ev)
        .map(|id| (p.agent(id.agent).name.to_string(), id.method))
}

fn ok(name: &str, method: Method) -> Outcome {
    Ok((name.to_owned(), method))
}

#[test]
fn most_specific_source_wins() {
    let p = policy(&config());
    // (peer address, agent)
    let rows = [
        ("10.200.0.1", Some("wide")),
        ("10.1.200.1", Some("mid")),
        ("10.1.2.200", Some("narrow")),
        ("10.1.2.3", Some("host")),
        ("10.1.2.4", Some("narrow")),
        ("10.1.3.3", Some("mid")),
        ("11.1.2.3", None),
        ("2001:db8:ffff::1", Some("wide")),
        ("2001:db8:1:ffff::1", Some("mid")),
        ("2001:db8:1:2::ffff", Some("narrow")),
        ("2001:db8:1:2::3", Some("host")),
        ("2001:db9::1", None),
        // A dual-stack listener sees IPv4 clients as IPv4-mapped addresses.
        ("::ffff:10.1.2.3", Some("host")),
        ("::ffff:10.1.2.9", Some("narrow")),
        ("::ffff:10.200.0.1", Some("wide")),
        ("::ffff:11.1.2.3", None),
        ("127.0.0.1", None),
    ];
    for (peer, want) in rows {
        let got = p
            .identities
            .by_source(peer.parse().unwrap())
            .map(|id| &*p.agent(id).name);
        assert_eq!(got, want, "{peer}");
        let via_identify = identify(&p, peer, None, None);
        match want {
            Some(name) => assert_eq!(via_identify, ok(name, Method::Source), "{peer}"),
            None => assert_eq!(via_identify, Err(IdentityError::Unidentified), "{peer}"),
        }
    }
}

#[test]
fn a_catch_all_range_loses_to_every_narrower_one() {
    let p = policy(
        "[[agent]]\nname = \"rest\"\nsources = [\"0.0.0.0/0\", \"::/0\"]\n[[agent]]\nname = \"a\"\nsources = [\"10.0.0.0/31\", \"fd00::/127\"]\n",
    );
    let rows = [
        ("10.0.0.0", "a"),
        ("10.0.0.1", "a"),
        ("10.0.0.2", "rest"),
        ("255.255.255.255", "rest"),
        ("fd00::1", "a"),
        ("fd00::2", "rest"),
        ("::", "rest"),
    ];
    for (peer, want) in rows {
        assert_eq!(
            identify(&p, peer, None, None),
            ok(want, Method::Source),
            "{peer}"
        );
    }
}

#[test]
fn token_identity() {
    let p = policy(&config());
    let wrong = || Err(IdentityError::BadCredentials);
    // (peer, Proxy-Authorization, outcome)
    let rows: Vec<(&str, String, Outcome)> = vec![
        ("203.0.113.9", basic("ci:ci-token"), ok("ci", Method::Token)),
        // Either of an agent's tokens (rotation).
        (
            "203.0.113.9",
            basic("ci:ci-token-2"),
            ok("ci", Method::Token),
        ),
        // The scheme is case-insensitive; extra spaces are tolerated.
        (
            "203.0.113.9",
            basic("ci:ci-token").replace("Basic", "bAsIc"),
            ok("ci", Method::Token),
        ),
        (
            "203.0.113.9",
            basic("ci:ci-token").replace("Basic ", "Basic   "),
            ok("ci", Method::Token),
        ),
        // The token is everything after the first ':'.
        (
            "203.0.113.9",
            basic("notebook:nb:token:with:colons"),
            ok("notebook", Method::Token),
        ),
        // Token identity does not care where the request comes from.
        (
            "10.1.2.3",
            basic("notebook:nb:token:with:colons"),
            ok("notebook", Method::Token),
        ),
        // Wrong token, even from the agent's own source range: no fall-back.
        ("10.9.0.5", basic("ci:wrong"), wrong()),
        ("10.9.0.5", basic("ci:"), wrong()),
        ("10.9.0.5", basic("ci:CI-TOKEN"), wrong()),
        // Another agent's token under this agent's name.
        ("10.9.0.5", basic("ci:orch-token"), wrong()),
        // Unknown agent, or one that has no tokens.
        ("10.9.0.5", basic("nobody:ci-token"), wrong()),
        ("10.1.2.3", basic("host:anything"), wrong()),
        // The name is case-sensitive, like the config's names.
        ("10.9.0.5", basic("CI:ci-token"), wrong()),
        // Malformed: no colon, bad base64, other schemes, no credentials.
        ("10.9.0.5", basic("ci"), wrong()),
        ("10.9.0.5", "Basic !!!not-base64!!!".to_owned(), wrong()),
        ("10.9.0.5", "Basic".to_owned(), wrong()),
        ("10.9.0.5", "Basic ".to_owned(), wrong()),
        ("10.9.0.5", "Bearer ci-token".to_owned(), wrong()),
        ("10.9.0.5", String::new(), wrong()),
    ];
    for (peer, auth, want) in rows {
        assert_eq!(
            identify(&p, peer, None, Some(&auth)),
            want,
            "{peer} {auth:?}"
        );
    }
}

#[test]
fn non_utf8_credentials_are_bad_credentials() {
    let p = policy(&config());
    let header = b"Basic \xff\xfe";
    let ev = Evidence {
        peer: "10.9.0.5".parse().unwrap(),
        spiffe_id: None,
        proxy_authorization: Some(header),
    };
    assert_eq!(
        p.identities.identify(&ev),
        Err(IdentityError::BadCredentials)
    );
    let encoded = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(b"ci:\xff")
    );
    assert_eq!(
        identify(&p, "10.9.0.5", None, Some(&encoded)),
        Err(IdentityError::BadCredentials)
    );
}

#[test]
fn spiffe_identity() {
    let p = policy(&config());
    let id = "spiffe://cluster.local/ns/agents/sa/orchestrator";
    assert_eq!(
        identify(&p, "203.0.113.9", Some(id), None),
        ok("orchestrator", Method::Spiffe)
    );
    // An unknown SPIFFE ID identifies nobody, and does not fall back to the
    // source address either.
    for unknown in [
        "spiffe://cluster.local/ns/agents/sa/other",
        "spiffe://cluster.local/ns/agents/sa/orchestrator/",
        "SPIFFE://cluster.local/ns/agents/sa/orchestrator",
    ] {
        assert_eq!(
            identify(&p, "10.7.0.1", Some(unknown), None),
            Err(IdentityError::Unidentified),
            "{unknown}"
        );
    }
}

#[test]
fn precedence_is_spiffe_then_token_then_source() {
    let p = policy(&config());
    let id = "spiffe://cluster.local/ns/agents/sa/orchestrator";
    // (peer, SPIFFE ID, Proxy-Authorization, outcome)
    let rows = [
        // All three point at different agents: the certificate decides.
        (
            "10.1.2.3",
            Some(id),
            Some(basic("ci:ci-token")),
            ok("orchestrator", Method::Spiffe),
        ),
        // A certificate makes even bad credentials irrelevant.
        (
            "10.1.2.3",
            Some(id),
            Some(basic("ci:wrong")),
            ok("orchestrator", Method::Spiffe),
        ),
        // No certificate: the token beats the source address.
        (
            "10.1.2.3",
            None,
            Some(basic("ci:ci-token")),
            ok("ci", Method::Token),
        ),
        (
            "10.7.0.1",
            None,
            Some(basic("ci:ci-token")),
            ok("ci", Method::Token),
        ),
        // Neither: the source address.
        ("10.7.0.1", None, None, ok("orchestrator", Method::Source)),
        // Bad credentials from a known source: refused, never the source's agent.
        (
            "10.7.0.1",
            None,
            Some(basic("orchestrator:wrong")),
            Err(IdentityError::BadCredentials),
        ),
    ];
    for (peer, spiffe, auth, want) in rows {
        assert_eq!(
            identify(&p, peer, spiffe, auth.as_deref()),
            want,
            "{peer} {spiffe:?} {auth:?}"
        );
    }
}

#[test]
fn tokens_in_use() {
    assert!(policy(&config()).tokens_in_use());
    assert!(!policy("[[agent]]\nname = \"a\"\nsources = [\"10.0.0.1\"]\n").tokens_in_use());
    assert!(!policy("").tokens_in_use());
}

#[test]
fn log_tokens() {
    assert_eq!(Method::Spiffe.as_str(), "spiffe");
    assert_eq!(Method::Token.as_str(), "token");
    assert_eq!(Method::Source.as_str(), "source");
    assert_eq!(IdentityError::Unidentified.as_str(), "unidentified");
    assert_eq!(IdentityError::BadCredentials.as_str(), "bad_credentials");
}

/// Near-misses of real credentials (a name or token one edit away, case
/// changed, padding, separators) never identify anyone, and a bad
/// credential never falls back to the caller's source address: only an
/// exact (name, token) pair names its agent.
#[test]
fn mangled_credentials_identify_no_one() {
    let p = policy(&config());
    let valid = [
        ("ci", "ci-token"),
        ("ci", "ci-token-2"),
        ("notebook", "nb:token:with:colons"),
        ("orchestrator", "orch-token"),
    ];
    let seeds: Vec<String> = valid.iter().map(|(n, t)| format!("{n}:{t}")).collect();
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_bytes()).collect();
    let mut rng = crate::mangle::Rng(0x1d_0000_0001);
    for creds in crate::mangle::variants(&seeds, 20_000, 0x1d_0000_0002) {
        let plain = String::from_utf8_lossy(&creds).into_owned();
        let want = match plain.split_once(':') {
            Some((n, t)) if valid.contains(&(n, t)) => ok(n, Method::Token),
            _ => Err(IdentityError::BadCredentials),
        };
        // From inside ci's source range: a failed token must not fall back.
        assert_eq!(
            identify(&p, "10.9.0.5", None, Some(&basic(&plain))),
            want,
            "{plain:?}"
        );
        // The header itself mangled: whatever it decodes to must be exact.
        let mut header = basic(&plain).into_bytes();
        crate::mangle::mutate_text(&mut header, &mut rng);
        let header = String::from_utf8_lossy(&header);
        if let Ok((name, method)) = identify(&p, "10.9.0.5", None, Some(&header)) {
            assert_eq!(method, Method::Token, "{header:?}");
            let decoded = parse_basic(header.as_bytes())
                .map(|b| (b.name().to_owned(), b.token().to_owned()))
                .unwrap_or_default();
            assert!(
                valid.contains(&(decoded.0.as_str(), decoded.1.as_str())) && decoded.0 == name,
                "{header:?} identified {name}"
            );
        }
    }
}
