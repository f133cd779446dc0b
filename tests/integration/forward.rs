//! Absolute-form HTTP through sluice with real clients (curl, reqwest) and
//! raw sockets, judged by what the origin received: the origin-form request
//! line, hop-by-hop and `Proxy-*` headers gone, Host supplied, bodies
//! streamed (Content-Length and chunked), keep-alive on both sides, one log
//! line per request; and the request-smuggling shapes refused with 400.
//!
//! Not here: CONNECT tunnels (tunnel.rs) and refusals by policy (refusals.rs).

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::auth::{proxy_authorization, sha256_hex};
use crate::support::dns::{DnsServer, dns};
use crate::support::net::{self, Origin, Response};
use crate::support::proxy::{Proxy, proxy};

/// Source address of the test agent "ci".
const CI: [u8; 4] = [127, 0, 0, 11];
const CI_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 11));
/// How long a client command may take before the test fails.
const CLIENT_WAIT: Duration = Duration::from_secs(5);

/// Agent "ci" (source .11, or token "ci-token") may reach api.example.com on `port`.
fn ci(port: u16, extra: &str) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n[limits]\nhead_timeout = \"1s\"\n{extra}\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\ntoken_sha256 = [\"{}\"]\n\
         allow = [\"api.example.com:{port}\"]\n",
        sha256_hex("ci-token")
    )
}

/// sluice for [`ci`] on `port`, with the DNS stub resolving
/// api.example.com to 127.0.0.1.
async fn ci_proxy(port: u16, extra: &str) -> (DnsServer, Proxy) {
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let p = proxy(&ci(port, extra)).dns(&dns).run().await;
    (dns, p)
}

async fn setup(extra: &str) -> (Origin, DnsServer, Proxy) {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let (dns, p) = ci_proxy(origin.port(), extra).await;
    (origin, dns, p)
}

/// `http://api.example.com:<origin's port><path>`: a URL for `origin`
/// by the name agent "ci" may reach.
fn api_url(origin: &Origin, path: &str) -> String {
    format!("http://api.example.com:{}{path}", origin.port())
}

/// The header names (lower-case) of the request the origin echoed back.
fn header_names(echo: &str) -> Vec<String> {
    echo.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .collect()
}

/// The headers a proxy must never pass on, given `Connection: x-hop`.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "x-hop",
    "proxy-authorization",
];

fn assert_no_hop_by_hop(echo: &str) {
    let names = header_names(echo);
    for h in HOP_BY_HOP {
        assert!(
            !names.iter().any(|n| n == h),
            "{h} reached the origin:\n{echo}"
        );
    }
}

/// Runs curl with `args` after the common proxy options; fails clearly when
/// curl is not installed (CI installs it).
async fn curl(p: &Proxy, args: &[&str], stdin: Option<&[u8]>) -> String {
    let proxy_url = format!("http://{}", p.addr);
    let mut cmd = tokio::process::Command::new("curl");
    // -q: ignore ~/.curlrc; --noproxy "": ignore NO_PROXY from the environment.
    cmd.args([
        "-q",
        "-sS",
        "--noproxy",
        "",
        "-x",
        &proxy_url,
        "--interface",
        "127.0.0.11",
    ])
    .args(args)
    .stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl is not installed (these tests drive it as a real client): {e}")
        }
        Err(e) => panic!("cannot run curl: {e}"),
    };
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(CLIENT_WAIT, child.wait_with_output())
        .await
        .expect("curl did not finish in time")
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts `rsp` is sluice's 400 for a malformed request.
fn assert_malformed(rsp: &Response) {
    assert_eq!(rsp.status, 400, "{rsp:?}");
    assert!(
        rsp.body.starts_with("sluice: malformed request: "),
        "{}",
        rsp.body
    );
}

fn assert_forward_log(log: &Value, method: &str, path: &str) {
    assert_eq!(log["agent"], "ci", "{log}");
    assert_eq!(log["method"], method, "{log}");
    assert_eq!(log["host"], "api.example.com", "{log}");
    assert_eq!(log["path"], path, "{log}");
    assert_eq!(log["decision"], "allow", "{log}");
    assert!(log["reason"].is_null(), "{log}");
    assert_eq!(log["status"], 200, "{log}");
    assert_eq!(log["ip"], "127.0.0.1", "{log}");
    assert_eq!(log["ips"], serde_json::json!(["127.0.0.1"]), "{log}");
}

#[tokio::test]
async fn curl_get_arrives_in_origin_form_without_hop_by_hop_headers() {
    let (origin, _dns, mut p) = setup("").await;
    let url = api_url(&origin, "/path/to?q=1&r=2");
    let echo = curl(
        &p,
        &[
            "-H",
            "X-Custom: kept",
            "-H",
            "Connection: x-hop",
            "-H",
            "X-Hop: dropped",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "Proxy-Connection: keep-alive",
            "-H",
            "TE: trailers",
            "-H",
            "Trailer: X-Sum",
            &url,
        ],
        None,
    )
    .await;
    net::assert_request_line(&echo, "GET /path/to?q=1&r=2 HTTP/1.1");
    assert!(
        echo.contains(&format!("\r\nHost: api.example.com:{}\r\n", origin.port())),
        "{echo}"
    );
    assert!(echo.contains("\r\nX-Custom: kept\r\n"), "{echo}");
    assert!(echo.contains("\r\nUser-Agent: curl/"), "{echo}");
    assert_no_hop_by_hop(&echo);
    let log = p.next_log().await;
    assert_forward_log(&log, "GET", "/path/to");
    assert!(
        log.get("query").is_none(),
        "query logged without include_query: {log}"
    );
    assert_eq!(log["identity"], "source");
    p.shutdown().await;
}

#[tokio::test]
async fn curl_with_proxy_credentials_never_passes_them_on() {
    let (origin, _dns, mut p) = setup("").await;
    let url = api_url(&origin, "/auth");
    let echo = curl(&p, &["--proxy-user", "ci:ci-token", &url], None).await;
    net::assert_request_line(&echo, "GET /auth HTTP/1.1");
    assert_no_hop_by_hop(&echo);
    let log = p.next_log().await;
    assert_forward_log(&log, "GET", "/auth");
    assert_eq!(log["identity"], "token");
    p.shutdown().await;
}

#[tokio::test]
async fn curl_posts_a_content_length_body_and_a_chunked_body() {
    let (origin, _dns, mut p) = setup("").await;
    let url = api_url(&origin, "/submit");
    let echo = curl(&p, &["--data-binary", "hello=world", &url], None).await;
    net::assert_request_line(&echo, "POST /submit HTTP/1.1");
    assert!(echo.contains("\r\nContent-Length: 11\r\n"), "{echo}");
    assert!(echo.ends_with("\r\n\r\nbody=hello=world"), "{echo}");
    assert_forward_log(&p.next_log().await, "POST", "/submit");

    let body = "a chunked body, streamed from stdin";
    let echo = curl(
        &p,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            &url,
        ],
        Some(body.as_bytes()),
    )
    .await;
    net::assert_request_line(&echo, "POST /submit HTTP/1.1");
    assert!(
        echo.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{echo}"
    );
    assert!(echo.ends_with(&format!("\r\n\r\nbody={body}")), "{echo}");
    let log = p.next_log().await;
    assert_forward_log(&log, "POST", "/submit");
    assert!(
        log["bytes_up"].as_u64().unwrap() > body.len() as u64,
        "{log}"
    );
    p.shutdown().await;
}

/// Asserts reqwest got 200 and returns the body: what the origin echoed.
async fn echo_of(rsp: reqwest::Response) -> String {
    assert_eq!(rsp.status(), 200);
    rsp.text().await.unwrap_or_else(|e| panic!("{e}"))
}

fn reqwest_client(p: &Proxy) -> reqwest::Client {
    static PROVIDER: Once = Once::new();
    // reqwest's rustls backend wants a process-wide provider even for plain http.
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .no_proxy()
        .proxy(reqwest::Proxy::http(format!("http://{}", p.addr)).unwrap())
        .local_address(CI_IP)
        .timeout(CLIENT_WAIT)
        .build()
        .unwrap()
}

#[tokio::test]
async fn reqwest_get_and_post_arrive_as_sent_minus_hop_by_hop() {
    let (origin, _dns, mut p) = setup("").await;
    let client = reqwest_client(&p);

    let rsp = client
        .get(api_url(&origin, "/r?x=1"))
        .header("X-Custom", "kept")
        .header("Connection", "x-hop")
        .header("X-Hop", "dropped")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("TE", "trailers")
        .send()
        .await
        .unwrap();
    let echo = echo_of(rsp).await;
    net::assert_request_line(&echo, "GET /r?x=1 HTTP/1.1");
    assert!(
        echo.contains(&format!("\r\nhost: api.example.com:{}\r\n", origin.port())),
        "{echo}"
    );
    assert!(echo.contains("\r\nx-custom: kept\r\n"), "{echo}");
    assert_no_hop_by_hop(&echo);
    assert_forward_log(&p.next_log().await, "GET", "/r");

    let rsp = client
        .post(api_url(&origin, "/post"))
        .body("payload bytes")
        .send()
        .await
        .unwrap();
    let echo = echo_of(rsp).await;
    net::assert_request_line(&echo, "POST /post HTTP/1.1");
    assert!(echo.contains("\r\ncontent-length: 13\r\n"), "{echo}");
    assert!(echo.ends_with("body=payload bytes"), "{echo}");
    assert_forward_log(&p.next_log().await, "POST", "/post");
    p.shutdown().await;
}

/// Two requests on one kept-alive client connection: one upstream
/// connection, two lines, the query only when `include_query` is set.
async fn keep_alive(include_query: bool) {
    let extra = format!("[log]\ninclude_query = {include_query}\n");
    let (origin, _dns, mut p) = setup(&extra).await;
    let client = reqwest_client(&p);
    for path in ["/one?a=1", "/two"] {
        let rsp = client.get(api_url(&origin, path)).send().await.unwrap();
        let echo = echo_of(rsp).await;
        net::assert_request_line(&echo, &format!("GET {path} HTTP/1.1"));
    }
    let first = p.next_log().await;
    let second = p.next_log().await;
    assert_forward_log(&first, "GET", "/one");
    assert_forward_log(&second, "GET", "/two");
    assert_eq!(
        first["src"], second["src"],
        "the client connection was not kept alive"
    );
    if include_query {
        assert_eq!(first["query"], "a=1", "{first}");
    } else {
        assert!(first.get("query").is_none(), "{first}");
    }
    assert!(second.get("query").is_none(), "{second}");
    assert_eq!(
        origin.connections(),
        1,
        "the upstream connection was not reused"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn separate_client_connections_of_one_agent_share_the_upstream_connection() {
    let (origin, _dns, mut p) = setup("").await;
    let url = api_url(&origin, "/n");
    let mut logs = Vec::new();
    // Each curl is a new process, so a new client connection.
    for _ in 0..3 {
        let echo = curl(&p, &[&url], None).await;
        net::assert_request_line(&echo, "GET /n HTTP/1.1");
        logs.push(p.next_log().await);
    }
    assert_ne!(logs[0]["src"], logs[1]["src"], "curl kept its connection");
    assert_ne!(logs[1]["src"], logs[2]["src"], "curl kept its connection");
    assert!(logs[0].get("connect_ms").is_some(), "{}", logs[0]);
    for log in &logs[1..] {
        assert_forward_log(log, "GET", "/n");
        assert!(log.get("connect_ms").is_none(), "dialled again: {log}");
    }
    assert_eq!(
        origin.connections(),
        1,
        "the upstream connection was not shared"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn agents_never_share_an_upstream_connection() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let port = origin.port();
    let config = format!(
        "{}[[agent]]\nname = \"other\"\nsources = [\"127.0.0.12\"]\n\
         allow = [\"api.example.com:{port}\"]\n",
        ci(port, "")
    );
    let mut p = proxy(&config).dns(&dns).run().await;
    let request = format!(
        "GET http://api.example.com:{port}/x HTTP/1.1\r\nHost: api.example.com:{port}\r\n\r\n"
    );
    for (from, agent) in [(CI, "ci"), ([127, 0, 0, 12], "other"), (CI, "ci")] {
        let mut s = net::connect_from(from, p.addr).await;
        assert_eq!(net::exchange(&mut s, &request).await.status, 200);
        assert_eq!(p.next_log().await["agent"], agent);
    }
    // ci's second request reused ci's connection; "other" got its own.
    assert_eq!(origin.connections(), 2);
    p.shutdown().await;
}

#[tokio::test]
async fn keep_alive_reuses_both_connections_and_logs_each_request() {
    keep_alive(false).await;
}

#[tokio::test]
async fn keep_alive_logs_the_query_when_include_query_is_set() {
    keep_alive(true).await;
}

/// A drain closes a kept-alive client connection that sits between
/// requests at once: the drain ends gracefully, not when its grace period
/// runs out, and the client reads the close.
#[tokio::test]
async fn a_drain_closes_a_kept_alive_connection_between_requests() {
    let (origin, _dns, mut p) = setup("").await;
    let mut s = net::connect_from(CI, p.addr).await;
    let authority = format!("api.example.com:{}", origin.port());
    let request = format!("GET http://{authority}/one HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    assert_eq!(net::exchange(&mut s, &request).await.status, 200);
    assert_eq!(p.next_log().await["path"], "/one");
    assert_eq!(p.shutdown().await, sluice::app::Drain::Graceful);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn raw_requests_get_host_added_and_every_hop_by_hop_header_removed() {
    let (origin, _dns, mut p) = setup("").await;
    let port = origin.port();
    let mut s = net::connect_from(CI, p.addr).await;
    // HTTP/1.0 without Host: sluice supplies it.
    let rsp = net::exchange(
        &mut s,
        &format!("GET http://api.example.com:{port}/old HTTP/1.0\r\nX-A: 1\r\n\r\n"),
    )
    .await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    net::assert_request_line(&rsp.body, "GET /old HTTP/1.0");
    assert!(
        rsp.body
            .contains(&format!("\r\nHost: api.example.com:{port}\r\n")),
        "{}",
        rsp.body
    );
    assert_forward_log(&p.next_log().await, "GET", "/old");

    // HTTP/1.1 without Host, port 80 implied in the Host check; every
    // hop-by-hop header listed or implied, and valid proxy credentials.
    let mut s = net::connect_from([127, 0, 0, 99], p.addr).await;
    let raw = format!(
        "GET http://api.example.com:{port}/new HTTP/1.1\r\n\
         Connection: keep-alive, X-Hop\r\nConnection: X-Other\r\nX-Hop: 1\r\nX-Other: 2\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
         Trailer: X-Sum\r\nUpgrade: h2c\r\n{}Proxy-Anything: x\r\nX-End: kept\r\n\r\n",
        proxy_authorization("ci", "ci-token")
    );
    let rsp = net::exchange(&mut s, &raw).await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    let echo = &rsp.body;
    net::assert_request_line(echo, "GET /new HTTP/1.1");
    assert!(
        echo.contains(&format!("\r\nHost: api.example.com:{port}\r\n")),
        "{echo}"
    );
    assert_no_hop_by_hop(echo);
    let names = header_names(echo);
    for gone in ["x-other", "upgrade", "proxy-anything"] {
        assert!(
            !names.iter().any(|n| n == gone),
            "{gone} reached the origin:\n{echo}"
        );
    }
    assert!(echo.contains("\r\nX-End: kept\r\n"), "{echo}");
    let log = p.next_log().await;
    assert_forward_log(&log, "GET", "/new");
    assert_eq!(log["identity"], "token");
    p.shutdown().await;
}

/// An origin that reports when the first chunk of a request body has
/// arrived, then reads to the end of the chunked body and answers with the
/// raw bytes it received.
async fn chunk_watcher() -> (SocketAddr, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut tx = Some(tx);
        while !got.ends_with(b"0\r\n\r\n") {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains("\r\n\r\n5\r\nfirst\r\n") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
        let head = String::from_utf8_lossy(&got).into_owned();
        let rsp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        s.write_all(rsp.as_bytes()).await.unwrap();
    });
    (addr, rx)
}

/// sluice in front of [`chunk_watcher`], and a client connection whose
/// request head and first chunk (`5\r\nfirst\r\n`) have reached the
/// origin before the client sends anything more.
async fn first_chunk_at_origin() -> (DnsServer, Proxy, tokio::net::TcpStream) {
    let (addr, first_chunk) = chunk_watcher().await;
    let (dns, p) = ci_proxy(addr.port(), "").await;
    let mut s = net::connect_from(CI, p.addr).await;
    let port = addr.port();
    let head = format!(
        "POST http://api.example.com:{port}/up HTTP/1.1\r\nHost: api.example.com:{port}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), first_chunk)
        .await
        .expect("the first chunk never reached the origin: the body was buffered")
        .unwrap();
    (dns, p, s)
}

#[tokio::test]
async fn a_chunked_body_is_streamed_not_buffered() {
    let (_dns, mut p, mut s) = first_chunk_at_origin().await;
    let rsp = net::exchange(&mut s, "6\r\nsecond\r\n0\r\n\r\n").await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    net::assert_request_line(&rsp.body, "POST /up HTTP/1.1");
    assert!(
        rsp.body
            .ends_with("\r\n\r\n5\r\nfirst\r\n6\r\nsecond\r\n0\r\n\r\n"),
        "{}",
        rsp.body
    );
    let log = p.next_log().await;
    assert_eq!(log["method"], "POST");
    assert_eq!(log["status"], 200);
    p.shutdown().await;
}

#[tokio::test]
async fn a_body_that_turns_malformed_after_the_head_went_upstream_still_gets_400() {
    let (_dns, mut p, mut s) = first_chunk_at_origin().await;
    // The origin has the head and is waiting for the rest; the next chunk
    // size is not hex. Nothing has come back yet, so the client hears why.
    let rsp = net::exchange(&mut s, "zz\r\nsecond\r\n0\r\n\r\n").await;
    assert_malformed(&rsp);
    assert_eq!(
        rsp.header("proxy-status"),
        Some("sluice; error=http_request_error")
    );
    let log = p.next_log().await;
    assert_eq!(log["decision"], "deny", "{log}");
    assert_eq!(log["reason"], "malformed", "{log}");
    assert_eq!(log["status"], 400, "{log}");
    p.shutdown().await;
}

/// An origin that accepts one connection and reports every byte it
/// received once the connection closes.
async fn recording_origin() -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        let _ = tx.send(got);
    });
    (addr, rx)
}

#[tokio::test]
async fn a_body_malformed_from_its_first_byte_gets_400_and_nothing_reaches_the_origin() {
    let (addr, received) = recording_origin().await;
    let (_dns, mut p) = ci_proxy(addr.port(), "").await;
    let mut s = net::connect_from(CI, p.addr).await;
    let port = addr.port();
    let raw = format!(
        "POST http://api.example.com:{port}/up HTTP/1.1\r\nHost: api.example.com:{port}\r\n\
         Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    );
    let rsp = net::exchange(&mut s, &raw).await;
    assert_malformed(&rsp);
    let log = p.next_log().await;
    assert_eq!(log["reason"], "malformed", "{log}");
    assert_eq!(log["status"], 400, "{log}");
    drop(s);
    let got = tokio::time::timeout(Duration::from_secs(5), received)
        .await
        .expect("sluice kept the upstream connection open")
        .unwrap();
    assert!(
        got.is_empty(),
        "the origin received {:?}",
        String::from_utf8_lossy(&got)
    );
    p.shutdown().await;
}

/// Reads from `s` until `want` has arrived (or the test times out).
async fn read_until(s: &mut tokio::net::TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(CLIENT_WAIT, async {
        while !String::from_utf8_lossy(&got).contains(want) {
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {want:?}: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{want:?} never arrived: {:?}",
            String::from_utf8_lossy(&got)
        )
    });
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_streamed_response_shows_its_head_before_any_body_byte() {
    // The origin answers with a chunked head at once and holds the body
    // until the client, through sluice, has seen the head.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (head_seen, release) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_until(&mut s, "\r\n\r\n").await;
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let _ = release.await;
        s.write_all(b"5\r\nevent\r\n0\r\n\r\n").await.unwrap();
    });
    let (_dns, mut p) = ci_proxy(port, "").await;
    let mut s = net::connect_from(CI, p.addr).await;
    let req = format!(
        "GET http://api.example.com:{port}/stream HTTP/1.1\r\nHost: api.example.com:{port}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    head_seen.send(()).unwrap();
    let rest = read_until(&mut s, "0\r\n\r\n").await;
    assert!(rest.contains("5\r\nevent\r\n"), "{rest}");
    assert_eq!(p.next_log().await["status"], 200);
    p.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_reaches_the_origin_before_the_body_is_sent() {
    // The client holds its body until it sees 100 Continue, which only the
    // origin sends, once it has the request head.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let head = read_until(&mut s, "\r\n\r\n").await;
        assert!(head.contains("Expect: 100-continue"), "{head}");
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
        read_until(&mut s, "hello").await;
        s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
            .await
            .unwrap();
    });
    let (_dns, mut p) = ci_proxy(port, "").await;
    let mut s = net::connect_from(CI, p.addr).await;
    let req = format!(
        "POST http://api.example.com:{port}/up HTTP/1.1\r\nHost: api.example.com:{port}\r\n\
         Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    let rsp = net::exchange(&mut s, "hello").await;
    assert_eq!(rsp.status, 201, "{rsp:?}");
    assert_eq!(rsp.body, "ok");
    assert_eq!(p.next_log().await["status"], 201);
    p.shutdown().await;
}

#[tokio::test]
async fn request_smuggling_shapes_are_refused_before_anything_goes_upstream() {
    let (origin, dns, mut p) = setup("").await;
    let port = origin.port();
    let url = format!("http://api.example.com:{port}/s");
    let host = format!("Host: api.example.com:{port}\r\n");
    let cases = [
        format!(
            "POST {url} HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST {url} HTTP/1.1\r\n{host}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
        ),
        format!("POST {url} HTTP/1.1\r\n{host}Content-Length: 5, 6\r\n\r\nhello!"),
        format!("POST {url} HTTP/1.1\r\n{host}Content-Length: -5\r\n\r\n"),
        format!("POST {url} HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        format!(
            "POST {url} HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
        ),
        format!("POST {url} HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("GET {url} HTTP/1.1\r\n{host}X-Folded: a\r\n b\r\n\r\n"),
        format!("GET {url} HTTP/1.1\r\nHost: other.example.com\r\n\r\n"),
        format!(
            "GET {url} HTTP/1.1\r\nHost: api.example.com:{}\r\n\r\n",
            port + 1
        ),
        "GET http://api.example.com/s HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n".to_owned(),
        format!("GET {url} HTTP/1.1\r\n{host}{host}\r\n"),
        format!("GET {url}#frag HTTP/1.1\r\n{host}\r\n"),
        // A proxy drops what Connection names: the origin would then read
        // the body as a second request.
        format!(
            "POST {url} HTTP/1.1\r\n{host}Connection: content-length\r\nContent-Length: 5\r\n\r\nhello"
        ),
        format!(
            "POST {url} HTTP/1.1\r\n{host}Connection: keep-alive, Transfer-Encoding\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
    ];
    for raw in &cases {
        let mut s = net::connect_from(CI, p.addr).await;
        let rsp = net::exchange(&mut s, raw).await;
        assert_eq!(rsp.status, 400, "{raw:?}: {rsp:?}");
        assert_eq!(
            rsp.header("proxy-status"),
            Some("sluice; error=http_request_error"),
            "{raw:?}"
        );
        let log = p.next_log().await;
        assert_eq!(log["agent"], "ci", "{raw:?}: {log}");
        assert_eq!(log["decision"], "deny", "{raw:?}: {log}");
        assert_eq!(log["reason"], "malformed", "{raw:?}: {log}");
        assert_eq!(log["status"], 400, "{raw:?}: {log}");
    }
    assert_eq!(
        origin.connections(),
        0,
        "a smuggling-shaped request reached the origin"
    );
    assert_eq!(dns.total_queries(), 0);
    assert_eq!(
        p.metric("sluice_requests_total{agent=\"ci\",decision=\"deny\",reason=\"malformed\"}")
            .await,
        cases.len() as f64
    );
    p.shutdown().await;
}

/// An origin whose response could be split two ways (its framing named by
/// `Connection`, which a proxy must strip, or two lengths) gets the client a
/// 502, never a response the client would read differently than sluice.
#[tokio::test]
async fn a_response_with_ambiguous_framing_is_502() {
    for bad in [
        "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_until(&mut s, "\r\n\r\n").await;
            s.write_all(bad.as_bytes()).await.unwrap();
        });
        let (_dns, mut p) = ci_proxy(port, "").await;
        let mut s = net::connect_from(CI, p.addr).await;
        let rsp = net::exchange(
            &mut s,
            &format!(
                "GET http://api.example.com:{port}/ HTTP/1.1\r\nHost: api.example.com:{port}\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(rsp.status, 502, "{bad:?}: {rsp:?}");
        assert_eq!(
            rsp.header("proxy-status"),
            Some("sluice; error=http_protocol_error"),
            "{bad:?}"
        );
        assert!(
            rsp.body.starts_with(&format!(
                "sluice: api.example.com:{port} sent a response sluice will not relay: "
            )),
            "{bad:?}: {rsp:?}"
        );
        let log = p.next_log().await;
        assert_eq!(log["status"], 502, "{bad:?}: {log}");
        assert_eq!(log["decision"], "error", "{bad:?}: {log}");
        assert_eq!(log["reason"], "http_protocol_error", "{bad:?}: {log}");
        drop(s);
        p.shutdown().await;
    }
}

/// An origin that takes the request and never answers: once
/// `egress.idle_timeout` passes, the client gets a 504 that says so, and
/// the request is not sent again.
#[tokio::test]
async fn an_origin_that_never_answers_is_504_http_response_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got_request, request_seen) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_until(&mut s, "\r\n\r\n").await;
        let _ = got_request.send(());
        // Hold the connection open, silent, until sluice gives up on it.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let text = ci(port, "").replace("[egress]\n", "[egress]\nidle_timeout = \"300ms\"\n");
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let mut p = proxy(&text).dns(&dns).run().await;
    let mut s = net::connect_from(CI, p.addr).await;
    let rsp = net::exchange(
        &mut s,
        &format!("GET http://api.example.com:{port}/slow HTTP/1.1\r\nHost: api.example.com:{port}\r\n\r\n"),
    )
    .await;
    request_seen.await.unwrap();
    assert_eq!(rsp.status, 504, "{rsp:?}");
    assert_eq!(
        rsp.header("proxy-status"),
        Some("sluice; error=http_response_timeout")
    );
    assert!(
        rsp.body
            .contains("sent no response within the idle timeout"),
        "{rsp:?}"
    );
    let log = p.next_log().await;
    assert_eq!(log["decision"], "error", "{log}");
    assert_eq!(log["reason"], "http_response_timeout", "{log}");
    assert_eq!(log["status"], 504, "{log}");
    drop(s);
    p.shutdown().await;
}

#[tokio::test]
async fn https_in_absolute_form_is_400() {
    let (origin, _dns, mut p) = setup("").await;
    let mut s = net::connect_from(CI, p.addr).await;
    let rsp: Response = net::exchange(
        &mut s,
        &format!(
            "GET https://api.example.com:{}/ HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
            origin.port()
        ),
    )
    .await;
    assert_eq!(rsp.status, 400, "{rsp:?}");
    assert_eq!(
        rsp.header("proxy-status"),
        Some("sluice; error=http_request_error")
    );
    assert_eq!(
        rsp.body,
        "sluice: malformed request: https:// in absolute form is not proxied: use CONNECT for TLS\n"
    );
    drop(s);
    let log = p.next_log().await;
    assert_eq!(log["reason"], "malformed");
    assert_eq!(origin.connections(), 0);
    p.shutdown().await;
}

/// The origin closes a kept-alive connection just as sluice reuses it (it
/// reads the second request and hangs up without answering). A GET without
/// a body is sent once more on a fresh connection: the client sees 200.
#[tokio::test]
async fn reused_upstream_that_closes_is_retried_for_a_safe_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut served = 0;
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || served == 1 {
                        return; // the second request on a connection: hang up
                    }
                    served += 1;
                    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                }
            });
        }
    });
    let (_dns, mut p) = ci_proxy(port, "").await;
    let mut s = net::connect_from(CI, p.addr).await;
    for path in ["/one", "/two"] {
        let r = net::exchange(
            &mut s,
            &format!("GET http://api.example.com:{port}{path} HTTP/1.1\r\nHost: api.example.com:{port}\r\n\r\n"),
        )
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{path}");
        let log = p.next_log().await;
        assert_eq!(log["status"], 200);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one reuse that failed, one fresh connection"
    );
    drop(s);
    p.shutdown().await;
}
