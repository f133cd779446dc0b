//! The SNI gate on CONNECT tunnels: a real TLS client through the tunnel to
//! a real TLS origin. A ClientHello must name the CONNECT host; a mismatch
//! closes the tunnel before any byte reaches the origin.

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::dns::{DnsServer, dns};
use crate::support::net;
use crate::support::proxy::{Proxy, proxy};
use crate::support::tls_origin::{TlsOrigin, Trickle};

const CI: [u8; 4] = [127, 0, 0, 11];

fn config(port: u16, extra: &str) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n{extra}\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\n\
         allow = [\"api.example.com:{port}\", \"evil.example.com:{port}\"]\n"
    )
}

/// sluice for "ci" with api.example.com resolving to 127.0.0.1, and an
/// open tunnel (200) from ci to api.example.com on `port`.
async fn tunnel(port: u16) -> (DnsServer, Proxy, tokio::net::TcpStream) {
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let p = proxy(&config(port, "")).dns(&dns).run().await;
    let (tcp, rsp) = net::connect(CI, p.addr, &format!("api.example.com:{port}"), "").await;
    assert_eq!(rsp.status, 200);
    (dns, p, tcp)
}

/// Sends "ping" over `tls` and reads the origin's answer until it closes.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(tls: &mut S) -> String {
    tls.write_all(b"ping")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    answer
}

#[tokio::test]
async fn matching_sni_completes_a_real_tls_exchange() {
    let origin = TlsOrigin::start(&["api.example.com"]).await;
    let (_dns, mut p, tcp) = tunnel(origin.port()).await;
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut tls = origin.connector().connect(name, tcp).await.unwrap();
    assert_eq!(ping(&mut tls).await, "hello over tls");
    drop(tls);
    let log = p.next_log().await;
    assert_eq!(log["sni"], "api.example.com");
    assert_eq!(log["decision"], "allow");
    assert!(log["reason"].is_null());
    p.shutdown().await;
}

/// Domain fronting: CONNECT to an allowed host, then ask the TLS server for
/// another name.
#[tokio::test]
async fn mismatched_sni_never_reaches_the_origin() {
    let origin = TlsOrigin::start(&["api.example.com", "other.example.com"]).await;
    let (_dns, mut p, tcp) = tunnel(origin.port()).await;
    let name = ServerName::try_from("other.example.com").unwrap();
    assert!(
        origin.connector().connect(name, tcp).await.is_err(),
        "handshake must fail"
    );
    let log = p.next_log().await;
    assert_eq!(log["decision"], "deny");
    assert_eq!(log["reason"], "sni_mismatch");
    assert_eq!(log["sni"], "other.example.com", "the name tried is logged");
    assert_eq!(log["bytes_up"], 0);
    assert_eq!(origin.received(), 0, "bytes reached the origin");
    assert_eq!(origin.handshakes(), 0);
    assert_eq!(
        p.metric("sluice_requests_total{agent=\"ci\",decision=\"deny\",reason=\"sni_mismatch\"}")
            .await,
        1.0
    );
    p.shutdown().await;
}

/// A tunnel to an IP literal (allowed by an address rule) is held to the
/// same rule: TLS clients send no SNI for an address (RFC 6066), so a
/// ClientHello naming a host is fronting through an address the agent may
/// reach to a site its rules never named.
#[tokio::test]
async fn a_tunnel_to_an_address_admits_no_sni_and_refuses_a_name() {
    let origin = TlsOrigin::start(&["127.0.0.1", "other.example.com"]).await;
    let target = format!("127.0.0.1:{}", origin.port());
    let rules = |extra: &str| {
        format!(
            "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n{extra}\n\
             [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\n\
             allow = [\"127.0.0.1/32:{}\"]\n",
            origin.port()
        )
    };
    let mut p = proxy(&rules("")).run().await;

    // What a client does for https://127.0.0.1/: no SNI, and it passes.
    let (tcp, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let address = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut tls = origin.connector().connect(address, tcp).await.unwrap();
    assert_eq!(ping(&mut tls).await, "hello over tls");
    drop(tls);
    let log = p.next_log().await;
    assert_eq!(log["decision"], "allow", "{log}");
    assert!(log.get("sni").is_none(), "{log}");

    // A name in the hello: refused before the origin sees a byte.
    let received = origin.received();
    let (tcp, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let name = ServerName::try_from("other.example.com").unwrap();
    assert!(origin.connector().connect(name, tcp).await.is_err());
    let log = p.next_log().await;
    assert_eq!(log["reason"], "sni_mismatch", "{log}");
    assert_eq!(log["sni"], "other.example.com", "{log}");
    assert_eq!(log["bytes_up"], 0, "{log}");
    assert_eq!(origin.received(), received, "bytes reached the origin");
    p.shutdown().await;

    // And with require_sni, an address tunnel cannot carry TLS at all.
    let mut p = proxy(&rules("require_sni = true")).run().await;
    let (tcp, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let address = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    assert!(origin.connector().connect(address, tcp).await.is_err());
    let log = p.next_log().await;
    assert_eq!(log["reason"], "sni_missing", "{log}");
    assert_eq!(log["bytes_up"], 0, "{log}");
    assert_eq!(origin.received(), received, "bytes reached the origin");
    p.shutdown().await;
}

#[tokio::test]
async fn client_hello_one_byte_at_a_time_is_reassembled() {
    let origin = TlsOrigin::start(&["api.example.com"]).await;
    let (_dns, mut p, tcp) = tunnel(origin.port()).await;
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut tls = origin
        .connector()
        .connect(name, Trickle(tcp))
        .await
        .unwrap();
    assert_eq!(ping(&mut tls).await, "hello over tls");
    drop(tls);
    assert_eq!(p.next_log().await["sni"], "api.example.com");
    p.shutdown().await;
}

#[tokio::test]
async fn non_tls_first_bytes_pass_unless_sni_is_required() {
    let origin = crate::support::net::Origin::start([127, 0, 0, 1]).await;
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let target = format!("api.example.com:{}", origin.port());
    let request = "GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n";

    let mut p = proxy(&config(origin.port(), "")).dns(&dns).run().await;
    let (mut s, _) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(net::exchange(&mut s, request).await.status, 200);
    drop(s);
    assert!(p.next_log().await.get("sni").is_none());
    p.shutdown().await;

    let mut p = proxy(&config(origin.port(), "require_sni = true"))
        .dns(&dns)
        .run()
        .await;
    let before = origin.connections();
    let (mut s, _) = net::connect(CI, p.addr, &target, "").await;
    s.write_all(request.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "nothing may come back: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let log = p.next_log().await;
    assert_eq!(log["reason"], "sni_missing");
    assert_eq!(log["bytes_up"], 0);
    // The origin was dialled (so connect errors can still be reported) but received nothing.
    assert!(origin.connections() <= before + 1);
    p.shutdown().await;
}

/// A client that half-closes without sending a byte (server-first
/// protocols) still gets everything the upstream sends afterwards.
#[tokio::test]
async fn half_close_before_any_byte_still_relays_the_answer() {
    let port = net::answer_after_eof(|_| b"220 bye".to_vec()).await;
    let (_dns, mut p, mut s) = tunnel(port).await;
    assert_eq!(net::half_close_and_read(&mut s).await, "220 bye");
    let log = p.next_log().await;
    assert_eq!(
        (log["bytes_up"].as_u64(), log["bytes_down"].as_u64()),
        (Some(0), Some(7))
    );
    p.shutdown().await;
}

/// A ClientHello naming `name` in server_name and carrying an Encrypted
/// Client Hello extension (0xfe0d): what a client sends to reach, through
/// a shared front that holds the ECH key, whatever host the encrypted
/// inner hello names. Built by hand: the test's rustls has no HPKE.
fn hello_with_ech(name: &str) -> Vec<u8> {
    fn vec16(data: &[u8]) -> Vec<u8> {
        [&u16::try_from(data.len()).unwrap().to_be_bytes()[..], data].concat()
    }
    let entry = [&[0u8][..], &vec16(name.as_bytes())].concat();
    let server_name = [&0u16.to_be_bytes()[..], &vec16(&vec16(&entry))].concat();
    // outer type, cipher suite, config id, encapsulated key, payload
    let ech_data = [
        &[0u8, 0, 1, 0, 1, 7][..],
        &vec16(&[0x11; 32]),
        &vec16(&[0x22; 64]),
    ]
    .concat();
    let ech = [&0xfe0du16.to_be_bytes()[..], &vec16(&ech_data)].concat();
    let mut body = vec![3, 3];
    body.extend_from_slice(&[0xab; 32]); // random
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]); // session id, suites, compression
    body.extend_from_slice(&vec16(&[server_name, ech].concat()));
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    let handshake = [&[1u8][..], &len[1..], &body].concat();
    [&[0x16u8, 3, 1][..], &vec16(&handshake)].concat()
}

/// With ECH, the checked name is only the outer one: refused unless the
/// agent (or `egress`) has `allow_ech`, before a byte reaches the origin.
#[tokio::test]
async fn a_hello_offering_ech_is_refused_unless_allowed() {
    let origin = TlsOrigin::start(&["api.example.com"]).await;
    let (_dns, mut p, mut tcp) = tunnel(origin.port()).await;
    tcp.write_all(&hello_with_ech("api.example.com"))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    let log = p.next_log().await;
    assert_eq!(log["decision"], "deny", "{log}");
    assert_eq!(log["reason"], "ech_refused", "{log}");
    assert_eq!(
        (&log["sni"], &log["ech"]),
        (&"api.example.com".into(), &true.into()),
        "{log}"
    );
    assert_eq!(log["bytes_up"], 0, "{log}");
    assert_eq!(origin.received(), 0, "bytes reached the origin");
    p.shutdown().await;

    // Allowed for this agent: the hello goes through, and the log says ECH.
    let dns = dns().a("api.example.com", [127, 0, 0, 1]).run().await;
    let text = config(origin.port(), "").replace(
        "sources = [\"127.0.0.11\"]\n",
        "sources = [\"127.0.0.11\"]\nallow_ech = true\n",
    );
    let mut p = proxy(&text).dns(&dns).run().await;
    let target = format!("api.example.com:{}", origin.port());
    let (mut tcp, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let hello = hello_with_ech("api.example.com");
    tcp.write_all(&hello).await.unwrap();
    // The origin cannot complete this handshake and closes.
    let _ = tcp.read_to_end(&mut rest).await;
    drop(tcp);
    let log = p.next_log().await;
    assert_eq!(log["decision"], "allow", "{log}");
    assert_eq!(log["sni"], "api.example.com", "{log}");
    assert_eq!(log["ech"], true, "{log}");
    assert_eq!(log["bytes_up"], hello.len(), "{log}");
    p.shutdown().await;
}

/// What a sans-IO rustls client has to send next.
fn flight(client: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).unwrap();
    }
    out
}

/// Reads one whole TLS record.
async fn read_record<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut record = vec![0; 5];
    s.read_exact(&mut record).await.unwrap();
    let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
    record.resize(5 + len, 0);
    s.read_exact(&mut record[5..]).await.unwrap();
    record
}

/// A sans-IO client for `name` that leads with a P-256 key share, so a
/// `TlsOrigin::start_retrying` server asks it for a second hello.
fn retrying_client(origin: &TlsOrigin, name: &'static str) -> rustls::ClientConnection {
    rustls::ClientConnection::new(origin.retry_config(), ServerName::try_from(name).unwrap())
        .unwrap()
}

/// A server may answer the first ClientHello with a HelloRetryRequest;
/// the client's second hello is gated too, and the wait for the server's
/// answer must not stall a real handshake, even one trickled byte by byte.
#[tokio::test]
async fn a_handshake_with_a_hello_retry_request_completes() {
    let origin = TlsOrigin::start_retrying(&["api.example.com"]).await;
    let connector = tokio_rustls::TlsConnector::from(origin.retry_config());
    let name = ServerName::try_from("api.example.com").unwrap();
    let (_dns, mut p, tcp) = tunnel(origin.port()).await;
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::FullWithHelloRetryRequest)
    );
    assert_eq!(ping(&mut tls).await, "hello over tls");
    drop(tls);
    let log = p.next_log().await;
    assert_eq!(
        (&log["decision"], &log["sni"]),
        (&"allow".into(), &"api.example.com".into()),
        "{log}"
    );

    let target = format!("api.example.com:{}", origin.port());
    let (tcp, _) = net::connect(CI, p.addr, &target, "").await;
    tcp.set_nodelay(true).unwrap();
    let mut tls = connector.connect(name, Trickle(tcp)).await.unwrap();
    assert_eq!(ping(&mut tls).await, "hello over tls");
    drop(tls);
    assert_eq!(p.next_log().await["decision"], "allow");
    assert_eq!(origin.handshakes(), 2);
    p.shutdown().await;
}

/// Fronting through the retry: the first hello names the CONNECT host, the
/// second (after the server's HelloRetryRequest) names another. Only the
/// first hello, and the compatibility change_cipher_spec before the second,
/// reach the origin.
#[tokio::test]
async fn a_second_hello_naming_another_host_is_refused() {
    let origin = TlsOrigin::start_retrying(&["api.example.com", "cdn.example.com"]).await;
    let (_dns, mut p, mut tcp) = tunnel(origin.port()).await;
    let mut client = retrying_client(&origin, "api.example.com");
    let first = flight(&mut client);
    tcp.write_all(&first).await.unwrap();
    let retry = read_record(&mut tcp).await;
    client.read_tls(&mut &retry[..]).unwrap();
    client.process_new_packets().unwrap();
    let second = flight(&mut client);
    let skipped = if second[0] == 0x14 { 6 } else { 0 };
    // The genuine second hello, with the name swapped for one of the same length.
    let at = second
        .windows(15)
        .position(|w| w == b"api.example.com")
        .expect("the second hello names the host");
    let mut forged = second.clone();
    forged[at..at + 15].copy_from_slice(b"cdn.example.com");
    tcp.write_all(&forged).await.unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    let log = p.next_log().await;
    assert_eq!(log["decision"], "deny", "{log}");
    assert_eq!(log["reason"], "sni_mismatch", "{log}");
    assert_eq!(log["sni"], "cdn.example.com", "the name tried is logged");
    assert_eq!(log["bytes_up"], first.len() + skipped, "{log}");
    assert_eq!(origin.handshakes(), 0);
    p.shutdown().await;
}

/// The same without waiting for the retry request: a second hello sent
/// right behind the first is held until the server has answered, then
/// checked.
#[tokio::test]
async fn a_second_hello_sent_ahead_of_the_retry_request_is_held_and_checked() {
    let origin = TlsOrigin::start_retrying(&["api.example.com", "cdn.example.com"]).await;
    let (_dns, mut p, mut tcp) = tunnel(origin.port()).await;
    let first = flight(&mut retrying_client(&origin, "api.example.com"));
    let other = flight(&mut retrying_client(&origin, "cdn.example.com"));
    tcp.write_all(&[&first[..], &other].concat()).await.unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    let log = p.next_log().await;
    assert_eq!(log["reason"], "sni_mismatch", "{log}");
    assert_eq!(log["sni"], "cdn.example.com", "{log}");
    assert_eq!(log["bytes_up"], first.len(), "{log}");
    assert_eq!(origin.handshakes(), 0);
    p.shutdown().await;
}

/// What a client sends right behind its hello (here a change_cipher_spec,
/// as 0-RTT clients send early data) waits for the server's answer and then
/// goes through when that answer is an ordinary ServerHello.
#[tokio::test]
async fn bytes_behind_a_hello_follow_an_ordinary_server_hello() {
    let origin = TlsOrigin::start(&["api.example.com"]).await;
    let (_dns, mut p, mut tcp) = tunnel(origin.port()).await;
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut client = rustls::ClientConnection::new(origin.config(), name).unwrap();
    let first = flight(&mut client);
    let ccs = [0x14, 3, 3, 0, 1, 1];
    tcp.write_all(&[&first[..], &ccs].concat()).await.unwrap();
    let server_hello = read_record(&mut tcp).await;
    assert_eq!(server_hello[5], 2, "a ServerHello");
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    let log = p.next_log().await;
    assert_eq!(log["decision"], "allow", "{log}");
    assert_eq!(log["bytes_up"], first.len() + ccs.len(), "{log}");
    p.shutdown().await;
}
