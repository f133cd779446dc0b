//! CONNECT tunnels end to end: allowed, relayed both ways, logged exactly;
//! the DNS-rebinding defence; half-close and idle timeout.

use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::dns::dns;
use crate::support::net::{self, Origin, Sentinel};
use crate::support::proxy::{Proxy, proxy};

/// Source address of the test agent "ci".
const CI: [u8; 4] = [127, 0, 0, 11];

fn agent(allow: &str) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [{allow}]\n"
    )
}

#[tokio::test]
async fn allowed_tunnel_relays_and_logs_one_exact_line() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let rule = format!("\"api.example.com:{}\"", origin.port());
    let mut p = proxy(&agent(&rule)).dns(&dns).run().await;

    let target = format!("api.example.com:{}", origin.port());
    let (mut s, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let request = "GET /x HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";
    let reply = net::exchange(&mut s, request).await;
    assert_eq!(reply.status, 200);
    net::assert_request_line(&reply.body, "GET /x HTTP/1.1");
    drop(s);

    let log = p.next_log().await;
    let o = log.as_object().unwrap();
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = [
        "ts",
        "id",
        "agent",
        "identity",
        "src",
        "method",
        "host",
        "port",
        "decision",
        "rule",
        "mode",
        "reason",
        "status",
        "ips",
        "ip",
        "bytes_up",
        "bytes_down",
        "dns_ms",
        "connect_ms",
        "duration_ms",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(log["agent"], "ci");
    assert_eq!(log["identity"], "source");
    assert!(log["src"].as_str().unwrap().starts_with("127.0.0.11:"));
    assert_eq!(log["method"], "CONNECT");
    assert_eq!(log["host"], "api.example.com");
    assert_eq!(log["port"], origin.port());
    assert_eq!(log["decision"], "allow");
    assert_eq!(log["rule"], format!("api.example.com:{}", origin.port()));
    assert_eq!(log["mode"], "enforce");
    assert!(log["reason"].is_null());
    assert_eq!(log["status"], 200);
    assert_eq!(log["ips"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(log["ip"], "127.0.0.1");
    assert_eq!(log["bytes_up"], request.len());
    assert_eq!(
        log["bytes_down"].as_u64().unwrap() as usize,
        reply_len(&reply)
    );
    assert!(log["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        p.metric("sluice_requests_total{agent=\"ci\",decision=\"allow\",reason=\"none\"}")
            .await,
        1.0
    );
    assert_eq!(
        p.metric("sluice_bytes_total{agent=\"ci\",direction=\"up\"}")
            .await,
        request.len() as f64
    );
    p.shutdown().await;
}

fn reply_len(r: &net::Response) -> usize {
    let head: usize = r
        .headers
        .iter()
        .map(|(n, v)| n.len() + 2 + v.len() + 2)
        .sum();
    "HTTP/1.1 200 OK\r\n".len() + head + 2 + r.body.len()
}

/// A rebinding attacker answers with a public-looking (allowed) address
/// first and a forbidden one next, TTL 0. sluice dials only what it vetted
/// for that request; the forbidden address is never dialled.
#[tokio::test]
async fn dns_rebinding_never_reaches_the_forbidden_address() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    // The "internal" service on a forbidden stand-in, same port.
    let internal = Sentinel::start_on(SocketAddr::from(([127, 0, 0, 2], origin.port()))).await;
    let dns = dns()
        .rotating(
            "rebind.example.com",
            vec![IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2])],
        )
        .run()
        .await;
    let mut p = proxy(&agent(&format!("\"rebind.example.com:{}\"", origin.port())))
        .dns(&dns)
        .run()
        .await;
    let target = format!("rebind.example.com:{}", origin.port());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (s, rsp) = net::connect(CI, p.addr, &target, "").await;
        drop(s); // the tunnel's line is written when it ends
        statuses.push(rsp.status);
        let log = p.next_log().await;
        match rsp.status {
            200 => assert_eq!(log["ip"], "127.0.0.1"),
            403 => {
                assert_eq!(
                    rsp.header("proxy-status"),
                    Some("sluice; error=destination_ip_prohibited")
                );
                assert_eq!(log["reason"], "destination_ip_prohibited");
                assert!(log.get("ip").is_none(), "{log}");
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert!(
        statuses.contains(&200) && statuses.contains(&403),
        "{statuses:?}"
    );
    assert!(dns.queries("rebind.example.com") >= 6);
    assert_eq!(
        internal.connections(),
        0,
        "the forbidden address was dialled"
    );
    p.shutdown().await;
}

/// sluice where "ci" may reach 127.0.0.1/32 by a CIDR rule without a
/// port, so on `egress.ports` = [`port`]; and an open tunnel (200) from ci
/// to 127.0.0.1:`port`.
async fn cidr_tunnel(port: u16) -> (Proxy, tokio::net::TcpStream) {
    let text = format!(
        "[egress]\nports = [{port}]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [\"127.0.0.1/32\"]\n"
    );
    let p = proxy(&text).run().await;
    let (s, rsp) = net::connect(CI, p.addr, &format!("127.0.0.1:{port}"), "").await;
    assert_eq!(rsp.status, 200);
    (p, s)
}

/// The client finishes sending (half-close); the origin still answers after
/// seeing EOF, and the answer reaches the client.
#[tokio::test]
async fn half_close_is_relayed() {
    let port = net::answer_after_eof(|got| format!("got {} bytes", got.len()).into_bytes()).await;
    let (mut p, mut s) = cidr_tunnel(port).await;
    s.write_all(b"hello").await.unwrap();
    assert_eq!(net::half_close_and_read(&mut s).await, "got 5 bytes");
    let log = p.next_log().await;
    assert_eq!(
        (log["bytes_up"].as_u64(), log["bytes_down"].as_u64()),
        (Some(5), Some(11))
    );
    assert!(
        log.get("ips").is_none(),
        "no lookup for an IP literal: {log}"
    );
    p.shutdown().await;
}

/// The other order: the origin finishes first; the client, having read its
/// EOF, still sends, then closes. The origin gets every byte and then EOF
/// (the close of the upstream side carries the FIN).
#[tokio::test]
async fn half_close_from_the_origin_then_the_client_is_relayed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"hello, then done").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got_tx.send(got).unwrap();
    });
    let (mut p, mut s) = cidr_tunnel(port).await;
    let mut down = String::new();
    s.read_to_string(&mut down).await.unwrap();
    assert_eq!(down, "hello, then done");
    s.write_all(b"late words").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(got_rx.await.unwrap(), b"late words");
    let log = p.next_log().await;
    assert_eq!(
        (log["bytes_up"].as_u64(), log["bytes_down"].as_u64()),
        (Some(10), Some(16))
    );
    p.shutdown().await;
}

#[tokio::test]
async fn idle_tunnel_is_closed() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let text = format!(
        "[egress]\nidle_timeout = \"200ms\"\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [\"127.0.0.1/32:{}\"]\n",
        origin.port()
    );
    let mut p = proxy(&text).run().await;
    let (mut s, rsp) = net::connect(CI, p.addr, &origin.addr.to_string(), "").await;
    assert_eq!(rsp.status, 200);
    let mut rest = Vec::new();
    // Nothing is sent: sluice closes the tunnel by itself.
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("idle tunnel was not closed")
        .unwrap();
    assert_eq!(n, 0);
    let log = p.next_log().await;
    assert_eq!(log["decision"], "allow");
    assert!(log["duration_ms"].as_f64().unwrap() >= 200.0);
    p.shutdown().await;
}

/// `limits.max_connections_per_agent`: one agent at its limit gets 503,
/// another agent is unaffected, and the slot frees when the tunnel ends.
#[tokio::test]
async fn per_agent_connection_limit() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let text = format!(
        "[limits]\nmax_connections_per_agent = 1\n\
         [egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [\"127.0.0.1/32:{p}\"]\n\
         [[agent]]\nname = \"other\"\nsources = [\"127.0.0.12\"]\nallow = [\"127.0.0.1/32:{p}\"]\n",
        p = origin.port()
    );
    let mut p = proxy(&text).run().await;
    let target = origin.addr.to_string();
    let (first, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let (second, rsp) = net::connect(CI, p.addr, &target, "").await;
    drop(second);
    assert_eq!(rsp.status, 503);
    assert_eq!(
        rsp.header("proxy-status"),
        Some("sluice; error=connection_limit_reached")
    );
    let log = p.next_log().await;
    assert_eq!(
        (log["agent"].as_str(), log["reason"].as_str()),
        (Some("ci"), Some("connection_limit"))
    );
    let (other, rsp) = net::connect([127, 0, 0, 12], p.addr, &target, "").await;
    assert_eq!(
        rsp.status, 200,
        "another agent is not limited by ci's connections"
    );
    drop(other);
    drop(first);
    // Both tunnels end (two lines), then ci has its slot back.
    p.next_log().await;
    p.next_log().await;
    let (third, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    drop(third);
    p.shutdown().await;
}

/// Bulk both ways through a tunnel: large enough for the relay's zero-copy
/// path. Every byte arrives intact, in order, and is counted exactly.
#[tokio::test]
async fn bulk_transfer_is_exact_both_ways() {
    const SIZE: usize = 8 * 1024 * 1024;
    let pattern = |i: usize| (i.wrapping_mul(31) ^ (i >> 11)) as u8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Receive SIZE bytes, check them, then send SIZE bytes back.
        let mut got = vec![0u8; SIZE];
        s.read_exact(&mut got).await.unwrap();
        let ok = got.iter().enumerate().all(|(i, b)| *b == pattern(i));
        let data: Vec<u8> = (0..SIZE).map(pattern).collect();
        s.write_all(if ok { &data } else { b"corrupt" })
            .await
            .unwrap();
        s.shutdown().await.unwrap();
    });
    let (mut p, s) = cidr_tunnel(port).await;
    let (mut r, mut w) = s.into_split();
    let upload = tokio::spawn(async move {
        let data: Vec<u8> = (0..SIZE).map(pattern).collect();
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(SIZE);
    r.read_to_end(&mut back).await.unwrap();
    upload.await.unwrap();
    assert_eq!(
        back.len(),
        SIZE,
        "{:?}",
        String::from_utf8_lossy(&back[..back.len().min(16)])
    );
    assert!(
        back.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "download corrupted"
    );
    let log = p.next_log().await;
    assert_eq!(log["bytes_up"].as_u64(), Some(SIZE as u64));
    assert_eq!(log["bytes_down"].as_u64(), Some(SIZE as u64));
    p.shutdown().await;
}

/// An agent that stops reading while its origin keeps sending in small
/// pieces: the relay's writes to it stall with part of a burst still to
/// pass on (kept aside, not dropped or reordered), then the origin stalls
/// too. Once the agent reads again, every byte arrives, counted once.
#[tokio::test]
async fn a_stalled_reader_gets_every_byte_in_order() {
    const PIECE: usize = 1000;
    const AFTER: usize = 1024 * 1024;
    let pattern = |i: usize| (i.wrapping_mul(7) ^ (i >> 9)) as u8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stuck_tx, stuck_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut sent = 0;
        // Small pieces, one per turn, so the relay reads small bursts,
        // until every buffer on the way is full and a write would block.
        loop {
            let piece: Vec<u8> = (sent..sent + PIECE).map(pattern).collect();
            match s.try_write(&piece) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            tokio::task::yield_now().await;
        }
        stuck_tx.send(sent + AFTER).unwrap();
        let rest: Vec<u8> = (sent..sent + AFTER).map(pattern).collect();
        s.write_all(&rest).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let (mut p, mut s) = cidr_tunnel(port).await;
    let total = stuck_rx.await.unwrap();
    let mut back = Vec::with_capacity(total);
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back.len(), total);
    assert!(
        back.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "download corrupted"
    );
    drop(s);
    let log = p.next_log().await;
    assert_eq!(log["bytes_down"].as_u64(), Some(total as u64));
    p.shutdown().await;
}
