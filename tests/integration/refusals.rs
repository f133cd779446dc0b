//! SPEC "Responses to refusals", row by row, as a client sees them: the
//! status, the exact `Proxy-Status`, the one-line plain-text body, the
//! access-log line and the `sluice_requests_total` series. Also: a name no
//! rule allows is never looked up.
//!
//! Not here: which agent a request belongs to (identity.rs) or the shapes of
//! forwarded HTTP that are refused as smuggling attempts (forward.rs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::support::auth::{b64, sha256_hex};
use crate::support::dns::dns;
use crate::support::net::{self, Response, Sentinel};
use crate::support::proxy::{Proxy, proxy};

/// Source address of the test agent "ci".
const CI: [u8; 4] = [127, 0, 0, 11];
/// A source address no agent claims.
const STRANGER: [u8; 4] = [127, 0, 0, 50];

/// Agent "ci" on 127.0.0.11 with `allow` (TOML array items) and `deny`;
/// loopback origins reachable, everything else as the test adds it.
fn ci(allow: &str, deny: &str, extra: &str) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\nconnect_timeout = \"300ms\"\n\
         [limits]\nhead_timeout = \"1s\"\n{extra}\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [{allow}]\ndeny = [{deny}]\n"
    )
}

/// Sends `raw` from `from` and reads the answer.
async fn send(from: [u8; 4], p: &Proxy, raw: &str) -> Response {
    let mut s = net::connect_from(from, p.addr).await;
    net::exchange(&mut s, raw).await
}

fn connect_req(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

/// What every refusal has: the status, the exact Proxy-Status, a one-line
/// plain-text body starting "sluice: ", and Proxy-Authenticate exactly on 407.
fn assert_refusal(rsp: &Response, status: u16, proxy_status: &str) {
    assert_eq!(rsp.status, status, "{rsp:?}");
    assert_eq!(rsp.header("proxy-status"), Some(proxy_status), "{rsp:?}");
    assert_eq!(
        rsp.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{rsp:?}"
    );
    assert!(rsp.body.starts_with("sluice: "), "{rsp:?}");
    assert!(
        rsp.body.ends_with('\n') && rsp.body.matches('\n').count() == 1,
        "body is not one line: {:?}",
        rsp.body
    );
    let auth = rsp.header("proxy-authenticate");
    if status == 407 {
        assert_eq!(auth, Some("Basic realm=\"sluice\""), "{rsp:?}");
    } else {
        assert_eq!(auth, None, "{rsp:?}");
    }
}

/// The log fields every refusal line must carry.
fn assert_logged(log: &Value, agent: Option<&str>, decision: &str, reason: &str, status: u16) {
    match agent {
        Some(a) => assert_eq!(log["agent"], a, "{log}"),
        None => assert!(log["agent"].is_null(), "{log}"),
    }
    assert_eq!(log["decision"], decision, "{log}");
    assert_eq!(log["reason"], reason, "{log}");
    assert_eq!(log["status"], status, "{log}");
}

fn requests(agent: &str, decision: &str, reason: &str) -> String {
    format!(
        "sluice_requests_total{{agent=\"{agent}\",decision=\"{decision}\",reason=\"{reason}\"}}"
    )
}

#[tokio::test]
async fn not_allowed_is_403_and_the_name_is_never_resolved() {
    let dns = dns()
        .a("evil.example", [127, 0, 0, 1])
        .a("api.example.com", [127, 0, 0, 1])
        .run()
        .await;
    let mut p = proxy(&ci("\"api.example.com\"", "", ""))
        .dns(&dns)
        .run()
        .await;

    let rsp = send(CI, &p, &connect_req("evil.example:443")).await;
    assert_refusal(&rsp, 403, "sluice; error=http_request_denied");
    assert_eq!(
        rsp.body,
        "sluice: agent \"ci\" may not reach evil.example:443 (no allow rule matches)\n"
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "not_allowed", 403);
    assert_eq!(log["host"], "evil.example");
    assert_eq!(log["port"], 443);
    assert_eq!(log["method"], "CONNECT");
    assert!(log.get("rule").is_none(), "no rule decided it: {log}");
    assert!(log.get("ips").is_none() && log.get("ip").is_none(), "{log}");

    // The right name on a port no rule grants is refused the same way.
    let rsp = send(CI, &p, &connect_req("api.example.com:8080")).await;
    assert_refusal(&rsp, 403, "sluice; error=http_request_denied");
    assert_logged(&p.next_log().await, Some("ci"), "deny", "not_allowed", 403);

    assert_eq!(
        dns.queries("evil.example"),
        0,
        "a refused name leaked to DNS"
    );
    assert_eq!(
        dns.queries("api.example.com"),
        0,
        "a refused port still resolved"
    );
    assert_eq!(p.metric(&requests("ci", "deny", "not_allowed")).await, 2.0);
    p.shutdown().await;
}

#[tokio::test]
async fn deny_rule_wins_over_allow_and_names_the_rule() {
    let dns = dns().a("bad.example.com", [127, 0, 0, 1]).run().await;
    let mut p = proxy(&ci("\".example.com\"", "\"bad.example.com\"", ""))
        .dns(&dns)
        .run()
        .await;

    let rsp = send(CI, &p, &connect_req("bad.example.com:443")).await;
    assert_refusal(&rsp, 403, "sluice; error=http_request_denied");
    assert_eq!(
        rsp.body,
        "sluice: agent \"ci\" may not reach bad.example.com:443 (deny rule \"bad.example.com\" matches)\n"
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "denied_by_rule", 403);
    assert_eq!(log["rule"], "bad.example.com");
    assert!(log.get("ips").is_none(), "{log}");
    assert_eq!(dns.queries("bad.example.com"), 0);
    assert_eq!(
        p.metric(&requests("ci", "deny", "denied_by_rule")).await,
        1.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn every_address_forbidden_is_403_destination_ip_prohibited() {
    // The "internal service" sits on a forbidden stand-in address.
    let internal = Sentinel::start_on(SocketAddr::from(([127, 0, 0, 2], 0))).await;
    let port = internal.addr.port();
    let dns = dns().a("internal.example.com", [127, 0, 0, 2]).run().await;
    let mut p = proxy(&ci(&format!("\"internal.example.com:{port}\""), "", ""))
        .dns(&dns)
        .run()
        .await;

    let rsp = send(
        CI,
        &p,
        &connect_req(&format!("internal.example.com:{port}")),
    )
    .await;
    assert_refusal(&rsp, 403, "sluice; error=destination_ip_prohibited");
    assert_eq!(
        rsp.body,
        format!(
            "sluice: agent \"ci\" may not reach internal.example.com:{port} (it resolves only to forbidden addresses)\n"
        )
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "destination_ip_prohibited", 403);
    assert_eq!(log["ips"], serde_json::json!(["127.0.0.2"]));
    assert!(log.get("ip").is_none(), "nothing was dialled: {log}");

    // An IP literal in a forbidden range is refused the same way, never dialled.
    let text = ci(&format!("\"127.0.0.0/8:{port}\""), "", "");
    p.shutdown().await;
    let mut p = proxy(&text).dns(&dns).run().await;
    let rsp = send(CI, &p, &connect_req(&format!("127.0.0.2:{port}"))).await;
    assert_refusal(&rsp, 403, "sluice; error=destination_ip_prohibited");
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "destination_ip_prohibited", 403);
    assert!(log.get("ip").is_none(), "{log}");

    assert_eq!(internal.connections(), 0, "a forbidden address was dialled");
    assert_eq!(
        p.metric(&requests("ci", "deny", "destination_ip_prohibited"))
            .await,
        1.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn unidentified_is_403_when_no_agent_uses_tokens() {
    let dns = dns().run().await;
    let mut p = proxy(&ci("\"api.example.com\"", "", ""))
        .dns(&dns)
        .run()
        .await;

    let rsp = send(STRANGER, &p, &connect_req("api.example.com:443")).await;
    assert_refusal(&rsp, 403, "sluice; error=http_request_denied");
    assert_eq!(
        rsp.body,
        "sluice: request from 127.0.0.50 matches no agent (send proxy credentials or connect from a registered source)\n"
    );
    let log = p.next_log().await;
    assert_logged(&log, None, "deny", "unidentified", 403);
    assert!(
        log["src"].as_str().unwrap().starts_with("127.0.0.50:"),
        "{log}"
    );
    assert!(log.get("identity").is_none(), "{log}");
    assert!(log.get("ips").is_none(), "{log}");
    assert_eq!(dns.total_queries(), 0);
    assert_eq!(p.metric(&requests("-", "deny", "unidentified")).await, 1.0);
    p.shutdown().await;
}

fn token_agent(name: &str, sha: &str) -> String {
    format!(
        "[[agent]]\nname = \"{name}\"\ntoken_sha256 = [\"{sha}\"]\nallow = [\"api.example.com\"]\n"
    )
}

#[tokio::test]
async fn unidentified_is_407_with_a_challenge_when_some_agent_uses_tokens() {
    let dns = dns().run().await;
    let text = ci("\"api.example.com\"", "", "") + &token_agent("bot", &sha256_hex("s3cret"));
    let mut p = proxy(&text).dns(&dns).run().await;

    let rsp = send(STRANGER, &p, &connect_req("api.example.com:443")).await;
    assert_refusal(&rsp, 407, "sluice; error=http_request_denied");
    let log = p.next_log().await;
    assert_logged(&log, None, "deny", "unidentified", 407);
    assert_eq!(p.metric(&requests("-", "deny", "unidentified")).await, 1.0);
    p.shutdown().await;
}

#[tokio::test]
async fn bad_credentials_are_407_and_never_fall_back_to_the_source() {
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    // "ci" is both a source and a token holder: a wrong token from its own
    // source must not be accepted as "ci".
    let text = format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\ntoken_sha256 = [\"{}\"]\nallow = [\"api.example.com\"]\n",
        sha256_hex("s3cret")
    );
    let mut p = proxy(&text).dns(&dns).run().await;
    let basic = |creds: &str| format!("Proxy-Authorization: Basic {}\r\n", b64(creds));
    for header in [
        basic("ci:wrong"),
        basic("nobody:s3cret"),
        basic("ci"),
        "Proxy-Authorization: Bearer s3cret\r\n".to_owned(),
        "Proxy-Authorization: Basic !!!not-base64\r\n".to_owned(),
    ] {
        let req = format!(
            "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n{header}\r\n"
        );
        let rsp = send(CI, &p, &req).await;
        assert_refusal(&rsp, 407, "sluice; error=http_request_denied");
        assert_eq!(
            rsp.body, "sluice: the proxy credentials are not valid\n",
            "{header}"
        );
        let log = p.next_log().await;
        assert_logged(&log, None, "deny", "bad_credentials", 407);
        assert!(log.get("identity").is_none(), "{log}");
    }
    assert_eq!(
        dns.total_queries(),
        0,
        "a request with bad credentials was resolved"
    );
    assert_eq!(
        p.metric(&requests("-", "deny", "bad_credentials")).await,
        5.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn nxdomain_and_servfail_are_502_dns_error_with_the_rcode() {
    let dns = dns()
        .nxdomain("gone.example.com")
        .servfail("broken.example.com")
        .run()
        .await;
    let mut p = proxy(&ci("\"gone.example.com\", \"broken.example.com\"", "", ""))
        .dns(&dns)
        .run()
        .await;

    let rsp = send(CI, &p, &connect_req("gone.example.com:443")).await;
    assert_refusal(&rsp, 502, "sluice; error=dns_error; rcode=\"NXDOMAIN\"");
    assert_eq!(
        rsp.body,
        "sluice: cannot resolve gone.example.com:443: NXDOMAIN\n"
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "error", "dns_error", 502);
    assert_eq!(log["rule"], "gone.example.com");
    assert!(log.get("ip").is_none(), "{log}");

    let rsp = send(CI, &p, &connect_req("broken.example.com:443")).await;
    assert_refusal(&rsp, 502, "sluice; error=dns_error; rcode=\"SERVFAIL\"");
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "error", "dns_error", 502);
    assert!(log.get("ip").is_none(), "{log}");

    assert!(dns.queries("gone.example.com") >= 1);
    assert_eq!(p.metric(&requests("ci", "error", "dns_error")).await, 2.0);
    assert_eq!(
        p.metric("sluice_dns_errors_total{kind=\"nxdomain\"}").await,
        1.0
    );
    assert_eq!(
        p.metric("sluice_dns_errors_total{kind=\"servfail\"}").await,
        1.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn dns_timeout_is_504() {
    let dns = dns().silent("slow.example.com").run().await;
    let mut p = proxy(&ci("\"slow.example.com\"", "", ""))
        .dns(&dns)
        .dns_timeout("200ms")
        .run()
        .await;

    let started = Instant::now();
    let rsp = send(CI, &p, &connect_req("slow.example.com:443")).await;
    let took = started.elapsed();
    assert_refusal(&rsp, 504, "sluice; error=dns_timeout");
    assert_eq!(
        rsp.body,
        "sluice: DNS lookup for slow.example.com:443 timed out\n"
    );
    assert!(
        took < Duration::from_millis(1500),
        "dns.timeout not honoured: {took:?}"
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "error", "dns_timeout", 504);
    assert!(log.get("ip").is_none(), "{log}");
    assert_eq!(p.metric(&requests("ci", "error", "dns_timeout")).await, 1.0);
    assert_eq!(
        p.metric("sluice_dns_errors_total{kind=\"timeout\"}").await,
        1.0
    );
    p.shutdown().await;
}

/// A loopback port with nothing listening on it.
/// A port where nothing listens, held (bound, not listening) for the life
/// of the returned socket so that no parallel test's listener can take it:
/// connections to it are refused.
async fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn refused_upstream_is_502_connection_refused() {
    let (_held, port) = closed_port().await;
    let dns = dns().a("down.example.com", [127, 0, 0, 1]).run().await;
    let mut p = proxy(&ci(
        &format!("\"down.example.com:{port}\", \"127.0.0.1/32:{port}\""),
        "",
        "",
    ))
    .dns(&dns)
    .run()
    .await;

    let rsp = send(CI, &p, &connect_req(&format!("down.example.com:{port}"))).await;
    assert_refusal(&rsp, 502, "sluice; error=connection_refused");
    assert_eq!(
        rsp.body,
        format!("sluice: down.example.com:{port} refused the connection\n")
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "error", "connection_refused", 502);
    assert_eq!(log["ips"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(log["ip"], "127.0.0.1", "the address dialled: {log}");

    // Absolute-form HTTP gets the same answer.
    let req = format!("GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let rsp = send(CI, &p, &req).await;
    assert_refusal(&rsp, 502, "sluice; error=connection_refused");
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "error", "connection_refused", 502);
    assert_eq!(log["path"], "/x");
    assert!(
        log.get("ips").is_none(),
        "no lookup for an IP literal: {log}"
    );

    assert_eq!(
        p.metric(&requests("ci", "error", "connection_refused"))
            .await,
        2.0
    );
    p.shutdown().await;
}

/// A listener whose accept queue is full, so that Linux drops further SYNs
/// and a connect to it hangs until the client gives up. Returns the
/// listener and the connections that fill it (both must be kept alive).
async fn black_hole() -> (TcpListener, Vec<TcpStream>) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // The queue holds backlog + 1 connections; the next SYN is dropped.
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => return (listener, held),
        }
    }
    panic!("the accept queue of a listen(1) socket never filled");
}

#[tokio::test]
async fn upstream_connect_timeout_is_504() {
    let (hole, _held) = black_hole().await;
    let port = hole.local_addr().unwrap().port();
    let mut p = proxy(&ci(&format!("\"127.0.0.1/32:{port}\""), "", ""))
        .run()
        .await;

    let started = Instant::now();
    let rsp = send(CI, &p, &connect_req(&format!("127.0.0.1:{port}"))).await;
    let took = started.elapsed();
    assert_refusal(&rsp, 504, "sluice; error=connection_timeout");
    assert_eq!(
        rsp.body,
        format!("sluice: connecting to 127.0.0.1:{port} timed out\n")
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "connect_timeout (300ms) not honoured: {took:?}"
    );
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "error", "connection_timeout", 504);
    assert_eq!(log["ip"], "127.0.0.1");
    assert_eq!(
        p.metric(&requests("ci", "error", "connection_timeout"))
            .await,
        1.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_400_and_never_resolved_or_dialled() {
    let dns = dns().a("host.example.com", [127, 0, 0, 1]).run().await;
    let mut p = proxy(&ci("\"host.example.com\", \"127.0.0.0/8\"", "", ""))
        .dns(&dns)
        .run()
        .await;
    let cases = [
        "GET / HTTP/1.1\r\nHost: host.example.com\r\n\r\n",
        "GET /\r\n",
        "CONNECT 0x7f.1:443 HTTP/1.1\r\nHost: 0x7f.1:443\r\n\r\n",
        "CONNECT 127.1:443 HTTP/1.1\r\nHost: 127.1:443\r\n\r\n",
        "CONNECT 2130706433:443 HTTP/1.1\r\nHost: 2130706433:443\r\n\r\n",
        "CONNECT 0177.0.0.1:443 HTTP/1.1\r\nHost: 0177.0.0.1:443\r\n\r\n",
        "CONNECT host.example.com HTTP/1.1\r\nHost: host.example.com\r\n\r\n",
        "CONNECT host..example.com:443 HTTP/1.1\r\n\r\n",
        "CONNECT host_1.example.com:443 HTTP/1.1\r\n\r\n",
        "GET http://u:p@host.example.com/ HTTP/1.1\r\nHost: host.example.com\r\n\r\n",
        "GET http://0x7f.1/ HTTP/1.1\r\n\r\n",
        "\u{1}\u{2}garbage\r\n\r\n",
        "GET http://host.example.com/ HTTP/2.0\r\n\r\n",
    ];
    for raw in cases {
        let rsp = send(CI, &p, raw).await;
        assert_refusal(&rsp, 400, "sluice; error=http_request_error");
        assert!(
            rsp.body.starts_with("sluice: malformed request: "),
            "{raw:?}: {rsp:?}"
        );
        let log = p.next_log().await;
        assert_logged(&log, Some("ci"), "deny", "malformed", 400);
        assert!(
            log.get("ips").is_none() && log.get("ip").is_none(),
            "{raw:?}: {log}"
        );
    }
    assert_eq!(
        rsp_body_exact(&p, "GET / HTTP/1.1\r\nHost: host.example.com\r\n\r\n").await,
        "sluice: malformed request: origin-form request: send requests to a proxy in absolute form (http://host/path) or use CONNECT\n"
    );
    p.next_log().await;
    assert_eq!(dns.total_queries(), 0, "a malformed request was resolved");
    assert_eq!(
        p.metric(&requests("ci", "deny", "malformed")).await,
        (cases.len() + 1) as f64
    );

    // From a source no agent claims, the line says so (agent null).
    let rsp = send(STRANGER, &p, "GET /\r\n").await;
    assert_refusal(&rsp, 400, "sluice; error=http_request_error");
    assert_logged(&p.next_log().await, None, "deny", "malformed", 400);
    p.shutdown().await;
}

async fn rsp_body_exact(p: &Proxy, raw: &str) -> String {
    send(CI, p, raw).await.body
}

#[tokio::test]
async fn head_over_the_limit_is_431() {
    let mut p = proxy(&ci("\"127.0.0.0/8\"", "", "head_size = 1024"))
        .run()
        .await;
    let req = format!(
        "GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(2048)
    );
    let rsp = send(CI, &p, &req).await;
    assert_refusal(&rsp, 431, "sluice; error=http_request_error");
    assert_eq!(rsp.body, "sluice: request head larger than 1024 bytes\n");
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "head_too_large", 431);
    assert_eq!(
        p.metric(&requests("ci", "deny", "head_too_large")).await,
        1.0
    );

    // A head just under the limit is not refused as too large.
    let req = format!(
        "CONNECT 127.0.0.2:443 HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(900)
    );
    let rsp = send(CI, &p, &req).await;
    assert_refusal(&rsp, 403, "sluice; error=destination_ip_prohibited");
    p.next_log().await;
    p.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_get_503() {
    let mut p = proxy(&ci("\"127.0.0.0/8\"", "", "max_connections = 1"))
        .run()
        .await;
    // The first connection holds the only slot: it has started a request
    // and not finished its head.
    let mut first = net::connect_from(CI, p.addr).await;
    first
        .write_all(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n")
        .await
        .unwrap();

    let rsp = send(CI, &p, &connect_req("127.0.0.1:443")).await;
    assert_refusal(&rsp, 503, "sluice; error=connection_limit_reached");
    assert_eq!(rsp.body, "sluice: too many connections; try again later\n");
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "connection_limit", 503);
    assert!(log.get("ip").is_none(), "{log}");
    assert_eq!(
        p.metric(&requests("ci", "deny", "connection_limit")).await,
        1.0
    );

    // Once the slot is free, connections are served again.
    drop(first);
    let log = p.next_log().await; // the abandoned head
    assert_eq!(log["reason"], "malformed", "{log}");
    // The slot is released just after that line is written: retry briefly.
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let rsp = send(STRANGER, &p, &connect_req("127.0.0.1:443")).await;
        let log = p.next_log().await;
        if rsp.status != 503 {
            assert_eq!(rsp.status, 403, "{rsp:?}");
            assert_eq!(log["reason"], "unidentified", "{log}");
            break;
        }
        assert!(Instant::now() < until, "the slot was never released");
        tokio::task::yield_now().await;
    }
    p.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_per_agent_limit_get_503() {
    let origin = net::Origin::start([127, 0, 0, 1]).await;
    let text = format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n[limits]\nmax_connections_per_agent = 1\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [\"127.0.0.1/32:{port}\"]\n\
         [[agent]]\nname = \"other\"\nsources = [\"127.0.0.12\"]\nallow = [\"127.0.0.1/32:{port}\"]\n",
        port = origin.port()
    );
    let mut p = proxy(&text).run().await;
    let target = origin.addr.to_string();
    let (held, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);

    let rsp = send(CI, &p, &connect_req(&target)).await;
    assert_refusal(&rsp, 503, "sluice; error=connection_limit_reached");
    let log = p.next_log().await;
    assert_logged(&log, Some("ci"), "deny", "connection_limit", 503);

    // Another agent is not affected.
    let (other, rsp) = net::connect([127, 0, 0, 12], p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    drop((held, other));
    p.next_log().await;
    p.next_log().await;
    p.shutdown().await;
}
