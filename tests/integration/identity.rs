//! Who a request belongs to (SPEC "Identity"), end to end: a valid token
//! beats the source address, forwarding headers never count, the most
//! specific source range wins, credentials never leave sluice (upstream or
//! in the log), and report mode lets would-be denials through, logged.
//!
//! Not here: the refusal responses themselves (refusals.rs).

use crate::support::auth::{basic_credentials, proxy_authorization, sha256_hex};
use crate::support::dns::dns;
use crate::support::net::{self, Origin, Response};
use crate::support::proxy::{Proxy, proxy};
use serde_json::Value;

const A: [u8; 4] = [127, 0, 0, 11];
const B: [u8; 4] = [127, 0, 0, 12];
const STRANGER: [u8; 4] = [127, 0, 0, 50];

async fn send(from: [u8; 4], p: &Proxy, raw: &str) -> Response {
    let mut s = net::connect_from(from, p.addr).await;
    net::exchange(&mut s, raw).await
}

/// A CONNECT that the test expects to be refused: its response and log line.
async fn refused(from: [u8; 4], p: &mut Proxy, target: &str, headers: &str) -> (Response, Value) {
    let raw = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n");
    let rsp = send(from, p, &raw).await;
    (rsp, p.next_log().await)
}

/// A CONNECT that the test expects to open: closes it and returns the log line.
async fn tunnelled(from: [u8; 4], p: &mut Proxy, target: &str, headers: &str) -> Value {
    let (s, rsp) = net::connect(from, p.addr, target, headers).await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    drop(s);
    p.next_log().await
}

/// Agents "a" (source .11) and "b" (source .12 and token "b-token"), each
/// allowed only its own name on the origin's port.
fn two_agents(port: u16) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"a\"\nsources = [\"127.0.0.11\"]\nallow = [\"a-only.example.com:{port}\"]\n\
         [[agent]]\nname = \"b\"\nsources = [\"127.0.0.12\"]\ntoken_sha256 = [\"{}\"]\n\
         allow = [\"b-only.example.com:{port}\"]\n",
        sha256_hex("b-token")
    )
}

async fn two_agents_proxy() -> (Origin, crate::support::dns::DnsServer, Proxy) {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let dns = dns()
        .a("a-only.example.com", [127, 0, 0, 1])
        .a("b-only.example.com", [127, 0, 0, 1])
        .run()
        .await;
    let p = proxy(&two_agents(origin.port())).dns(&dns).run().await;
    (origin, dns, p)
}

#[tokio::test]
async fn a_valid_token_beats_the_source_address() {
    let (origin, _dns, mut p) = two_agents_proxy().await;
    let port = origin.port();
    let creds = proxy_authorization("b", "b-token");

    // From a's address with b's token: this is b.
    let log = tunnelled(A, &mut p, &format!("b-only.example.com:{port}"), &creds).await;
    assert_eq!(
        (log["agent"].as_str(), log["identity"].as_str()),
        (Some("b"), Some("token"))
    );
    assert_eq!(log["decision"], "allow");

    // ...and so not a: a's destination is refused, naming b.
    let (rsp, log) = refused(A, &mut p, &format!("a-only.example.com:{port}"), &creds).await;
    assert_eq!(rsp.status, 403);
    assert!(rsp.body.contains("agent \"b\""), "{rsp:?}");
    assert_eq!(log["agent"], "b");
    assert_eq!(log["reason"], "not_allowed");

    // The Basic scheme name is case-insensitive (RFC 9110 §11.1).
    let lower = format!(
        "Proxy-Authorization: basic {}\r\n",
        basic_credentials("b", "b-token")
    );
    let log = tunnelled(
        STRANGER,
        &mut p,
        &format!("b-only.example.com:{port}"),
        &lower,
    )
    .await;
    assert_eq!(log["agent"], "b");

    // Without a token, a's address is a.
    let log = tunnelled(A, &mut p, &format!("a-only.example.com:{port}"), "").await;
    assert_eq!(
        (log["agent"].as_str(), log["identity"].as_str()),
        (Some("a"), Some("source"))
    );
    p.shutdown().await;
}

#[tokio::test]
async fn forwarding_headers_never_change_identity() {
    let (origin, dns, mut p) = two_agents_proxy().await;
    let port = origin.port();
    let spoof = "X-Forwarded-For: 127.0.0.11\r\nForwarded: for=127.0.0.11;by=127.0.0.1\r\n\
                 X-Real-IP: 127.0.0.11\r\nTrue-Client-IP: 127.0.0.11\r\nClient-IP: 127.0.0.11\r\n";

    // An unknown source claiming to be a is nobody. (b uses tokens: 407.)
    let (rsp, log) = refused(
        STRANGER,
        &mut p,
        &format!("a-only.example.com:{port}"),
        spoof,
    )
    .await;
    assert_eq!(rsp.status, 407, "{rsp:?}");
    assert!(log["agent"].is_null(), "{log}");
    assert_eq!(log["reason"], "unidentified");

    // b's address claiming to be a is b, and may not reach a's destination.
    let (rsp, log) = refused(B, &mut p, &format!("a-only.example.com:{port}"), spoof).await;
    assert_eq!(rsp.status, 403, "{rsp:?}");
    assert_eq!(
        (log["agent"].as_str(), log["identity"].as_str()),
        (Some("b"), Some("source"))
    );

    // The same for absolute-form requests.
    let raw = format!(
        "GET http://a-only.example.com:{port}/ HTTP/1.1\r\nHost: a-only.example.com:{port}\r\n{spoof}\r\n"
    );
    let rsp = send(B, &p, &raw).await;
    assert_eq!(rsp.status, 403, "{rsp:?}");
    assert_eq!(p.next_log().await["agent"], "b");
    assert_eq!(dns.queries("a-only.example.com"), 0);
    assert_eq!(origin.connections(), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn the_most_specific_source_range_wins_whatever_the_order() {
    let wide = "[[agent]]\nname = \"wide\"\nsources = [\"127.0.0.0/24\"]\nallow = [\"wide.example.com\"]\n";
    let narrow = "[[agent]]\nname = \"narrow\"\nsources = [\"127.0.0.12/32\"]\nallow = [\"narrow.example.com\"]\n";
    let mid =
        "[[agent]]\nname = \"mid\"\nsources = [\"127.0.0.8/29\"]\nallow = [\"mid.example.com\"]\n";
    for agents in [
        format!("{wide}{mid}{narrow}"),
        format!("{narrow}{mid}{wide}"),
    ] {
        let mut p = proxy(&agents).run().await;
        for (from, want) in [
            ([127, 0, 0, 12], "narrow"),
            ([127, 0, 0, 11], "mid"),
            ([127, 0, 0, 13], "mid"),
            ([127, 0, 0, 20], "wide"),
        ] {
            let (rsp, log) = refused(from, &mut p, "elsewhere.example.com:443", "").await;
            assert_eq!(rsp.status, 403, "{rsp:?}");
            assert_eq!(log["agent"], want, "from {from:?}: {log}");
            assert_eq!(log["identity"], "source");
        }
        p.shutdown().await;
    }
}

#[tokio::test]
async fn credentials_never_reach_the_origin_or_the_log() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let port = origin.port();
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let token = "tok-5ecret-value";
    let text = format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\ntoken_sha256 = [\"{}\"]\nallow = [\"api.example.com:{port}\"]\n",
        sha256_hex(token)
    );
    let mut p = proxy(&text).dns(&dns).run().await;
    let b64 = basic_credentials("ci", token);
    let secrets = [token, b64.as_str(), "cookie-5ecret"];
    let assert_clean = |line: &str| {
        for s in secrets {
            assert!(!line.contains(s), "secret {s:?} in the access log: {line}");
        }
        assert!(
            !line.to_ascii_lowercase().contains("authorization"),
            "{line}"
        );
    };
    // What the origin echoed holds neither the token nor its Basic encoding.
    let assert_no_token = |echo: &str| {
        assert!(!echo.contains(token) && !echo.contains(&b64), "{echo}");
    };

    // Forwarded HTTP: the origin sees neither the header nor the token.
    let raw = format!(
        "GET http://api.example.com:{port}/p HTTP/1.1\r\nHost: api.example.com:{port}\r\n\
         Proxy-Authorization: Basic {b64}\r\nProxy-Foo: bar\r\nCookie: s=cookie-5ecret\r\nConnection: close\r\n\r\n"
    );
    let mut s = net::connect_from(STRANGER, p.addr).await;
    let rsp = net::exchange(&mut s, &raw).await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    let seen = rsp.body.to_ascii_lowercase();
    assert!(seen.starts_with("get /p http/1.1\r\n"), "{}", rsp.body);
    assert!(
        !seen.contains("proxy-"),
        "a Proxy-* header reached the origin: {}",
        rsp.body
    );
    assert_no_token(&rsp.body);
    assert!(
        rsp.body.contains("Cookie: s=cookie-5ecret"),
        "end-to-end headers pass: {}",
        rsp.body
    );
    let line = p.next_log_raw().await;
    assert_clean(&line);
    let log: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (log["agent"].as_str(), log["identity"].as_str()),
        (Some("ci"), Some("token"))
    );

    // A tunnel: the CONNECT head, credentials included, never goes upstream.
    let (mut s, rsp) = net::connect(
        STRANGER,
        p.addr,
        &format!("api.example.com:{port}"),
        &proxy_authorization("ci", token),
    )
    .await;
    assert_eq!(rsp.status, 200);
    let reply = net::exchange(
        &mut s,
        "GET /t HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    net::assert_request_line(&reply.body, "GET /t HTTP/1.1");
    assert_no_token(&reply.body);
    drop(s);
    assert_clean(&p.next_log_raw().await);

    // Wrong credentials are not logged either.
    let wrong = proxy_authorization("ci", "tok-5ecret-valuX");
    let raw = format!("CONNECT api.example.com:{port} HTTP/1.1\r\n{wrong}\r\n");
    assert_eq!(send(STRANGER, &p, &raw).await.status, 407);
    let line = p.next_log_raw().await;
    assert!(
        !line.contains("tok-5ecret-valuX")
            && !line.contains(&basic_credentials("ci", "tok-5ecret-valuX"))
    );
    assert_clean(&line);
    p.shutdown().await;
}

#[tokio::test]
async fn report_mode_lets_would_be_denials_through_and_logs_them() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let port = origin.port();
    let dns = dns()
        .a("unlisted.example.com", [127, 0, 0, 1])
        .a("denied.example.com", [127, 0, 0, 1])
        .a("internal.example.com", [127, 0, 0, 2])
        .run()
        .await;
    let text = format!(
        "[egress]\nports = [{port}]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"trial\"\nsources = [\"127.0.0.11\"]\nmode = \"report\"\n\
         allow = [\"listed.example.com\"]\ndeny = [\"denied.example.com\"]\n"
    );
    let mut p = proxy(&text).dns(&dns).run().await;

    let log = tunnelled(A, &mut p, &format!("unlisted.example.com:{port}"), "").await;
    assert_eq!(log["decision"], "report", "{log}");
    assert_eq!(log["reason"], "not_allowed");
    assert_eq!(log["mode"], "report");
    assert_eq!(log["status"], 200);
    assert_eq!(log["ip"], "127.0.0.1");

    // Absolute-form HTTP too, and a deny rule is reported as such.
    let raw = format!(
        "GET http://denied.example.com:{port}/r HTTP/1.1\r\nHost: denied.example.com:{port}\r\nConnection: close\r\n\r\n"
    );
    let rsp = send(A, &p, &raw).await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    net::assert_request_line(&rsp.body, "GET /r HTTP/1.1");
    let log = p.next_log().await;
    assert_eq!(
        (log["decision"].as_str(), log["reason"].as_str()),
        (Some("report"), Some("denied_by_rule"))
    );
    assert_eq!(log["rule"], "denied.example.com");
    assert_eq!(log["path"], "/r");

    // Forbidden addresses are denied in every mode.
    let (rsp, log) = refused(A, &mut p, &format!("internal.example.com:{port}"), "").await;
    assert_eq!(rsp.status, 403, "{rsp:?}");
    assert_eq!(
        rsp.header("proxy-status"),
        Some("sluice; error=destination_ip_prohibited")
    );
    assert_eq!(
        (log["decision"].as_str(), log["reason"].as_str()),
        (Some("deny"), Some("destination_ip_prohibited"))
    );

    let count = |d: &str, r: &str| {
        format!("sluice_requests_total{{agent=\"trial\",decision=\"{d}\",reason=\"{r}\"}}")
    };
    assert_eq!(p.metric(&count("report", "not_allowed")).await, 1.0);
    assert_eq!(p.metric(&count("report", "denied_by_rule")).await, 1.0);
    assert_eq!(origin.connections(), 2);
    p.shutdown().await;
}
