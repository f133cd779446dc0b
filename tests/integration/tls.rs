//! The TLS listener with client certificates: curl and a rustls client
//! through it (absolute-form and CONNECT), identity by SPIFFE ID, handshake
//! failures counted by kind and logged, and certificate rotation on reload.

use rustls::pki_types::CertificateDer;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::net::{self, Origin, Response};
use crate::support::pki::{self, Ca, Pki};
use crate::support::proxy::{Proxy, proxy};

const CI_ID: &str = "spiffe://cluster.local/ns/agents/sa/ci";

/// One agent "ci" identified by its SPIFFE ID, allowed to reach `origin`;
/// and "loopback", whose sources cover every test client: a certificate
/// must never fall back to it.
fn config(pki: &Pki, origin: &Origin, limits: &str) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n{limits}{}\
         [[agent]]\nname = \"ci\"\nspiffe_ids = [\"{CI_ID}\"]\nallow = [\"127.0.0.1/32:{port}\"]\n\
         [[agent]]\nname = \"loopback\"\nsources = [\"127.0.0.0/8\"]\nallow = [\"127.0.0.1/32:{port}\"]\n",
        pki.toml(),
        port = origin.port()
    )
}

async fn start(pki: &Pki, origin: &Origin, limits: &str) -> Proxy {
    proxy(&config(pki, origin, limits)).tls_listen().run().await
}

async fn curl(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("curl")
        .args(args)
        .output()
        .await
        .expect("curl is needed for this test")
}

/// Runs curl with `args`, asserts it succeeded and returns what it printed.
async fn curl_ok(args: &[&str]) -> String {
    let out = curl(args).await;
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `log` is an allowed `method` request by agent "ci", identified
/// by its SPIFFE ID.
fn assert_allowed_as_ci(log: &Value, method: &str) {
    assert_eq!(log["agent"], "ci", "{log}");
    assert_eq!(log["identity"], "spiffe");
    assert_eq!(log["method"], method);
    assert_eq!(log["decision"], "allow");
}

/// Sends a CONNECT to `origin` over `s` and reads the response.
async fn connect_over<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, origin: &Origin) -> Response {
    let target = origin.addr;
    net::exchange(
        s,
        &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
    )
    .await
}

/// Asserts the proxy presented `want` as its certificate on `s`.
fn assert_server_cert<S>(s: &tokio_rustls::client::TlsStream<S>, want: &CertificateDer<'_>) {
    let certs = s
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_else(|| panic!("the proxy presented no certificate"));
    assert_eq!(certs[0], *want);
}

/// The count of failed TLS handshakes of `kind` in the proxy's metrics.
async fn handshake_failures(p: &Proxy, kind: &str) -> f64 {
    p.metric(&format!(
        "sluice_tls_handshake_failures_total{{kind=\"{kind}\"}}"
    ))
    .await
}

#[tokio::test]
async fn curl_with_a_client_certificate_forwards_and_tunnels() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let (cert, key) = pki.write(&pki.ca.agent(&[CI_ID]), "ci");
    let mut p = start(&pki, &origin, "").await;
    let proxy_url = format!("https://{}", p.tls.unwrap());
    let url = format!("http://127.0.0.1:{}/hello?x=1", origin.port());
    let ca = pki.ca_path.to_str().unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let base = [
        "-sS",
        "--proxy",
        &proxy_url,
        "--proxy-cacert",
        ca,
        "--proxy-cert",
        cert,
        "--proxy-key",
        key,
    ];

    // Absolute-form GET.
    let body = curl_ok(&[&base[..], &[url.as_str()]].concat()).await;
    net::assert_request_line(&body, "GET /hello?x=1 HTTP/1.1");
    let log = p.next_log().await;
    assert_allowed_as_ci(&log, "GET");
    assert_eq!(log["path"], "/hello");

    // CONNECT (-p), then the same GET inside the tunnel.
    let body = curl_ok(&[&base[..], &["-p", url.as_str()]].concat()).await;
    net::assert_request_line(&body, "GET /hello?x=1 HTTP/1.1");
    let log = p.next_log().await;
    assert_allowed_as_ci(&log, "CONNECT");
    assert_eq!(log["status"], 200);
    assert_eq!(origin.connections(), 2);
    p.shutdown().await;
}

#[tokio::test]
async fn rust_client_tunnels_over_tls_and_sees_http11_alpn() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    // Several URI SANs: the first spiffe:// one identifies.
    let agent = pki.ca.agent(&[
        "https://example.com/not-an-id",
        CI_ID,
        "spiffe://cluster.local/other",
    ]);
    let mut p = start(&pki, &origin, "").await;

    let mut s = pki::connect(p.tls.unwrap(), &pki.ca, Some(&agent))
        .await
        .unwrap();
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "h2 is never chosen"
    );
    assert_eq!(connect_over(&mut s, &origin).await.status, 200);
    let get = "GET /in HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let reply = net::exchange(&mut s, get).await;
    net::assert_request_line(&reply.body, "GET /in HTTP/1.1");
    s.shutdown().await.unwrap();
    drop(s);

    let log = p.next_log().await;
    assert_allowed_as_ci(&log, "CONNECT");
    assert_eq!(log["host"], "127.0.0.1");
    // Counted as plaintext through the tunnel, exactly.
    assert_eq!(log["bytes_up"], get.len(), "{log}");
    let down = log["bytes_down"].as_u64().unwrap();
    assert!(down > reply.body.len() as u64, "{log}");
    p.shutdown().await;
}

/// Sends a request over `s` and expects the server to have refused the
/// handshake: an error or EOF, never a response.
async fn refused<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: std::io::Result<S>) {
    let Ok(mut s) = s else { return };
    let _ = s
        .write_all(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    // An alert surfaces as an error; a plain close as EOF with nothing read.
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    assert!(
        buf.is_empty(),
        "got a response: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test]
async fn failed_handshakes_are_counted_by_kind_and_logged() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let mut p = start(&pki, &origin, "").await;
    let addr = p.tls.unwrap();
    let other = Ca::new("someone else's CA");
    let cases: [(&str, Option<pki::Leaf>); 3] = [
        ("expired", Some(pki.ca.expired_agent(CI_ID))),
        ("unknown_ca", Some(other.agent(&[CI_ID]))),
        ("no_certificate", None),
    ];
    for (kind, leaf) in &cases {
        refused(pki::connect(addr, &pki.ca, leaf.as_ref()).await).await;
        let log = p.next_log().await;
        assert_eq!(log["decision"], "deny", "{log}");
        assert_eq!(log["reason"], "tls_handshake");
        assert_eq!(log["tls_error"], *kind);
        assert!(log["agent"].is_null(), "{log}");
        assert!(log.get("identity").is_none(), "{log}");
        assert_eq!(handshake_failures(&p, kind).await, 1.0);
    }

    // Plain HTTP on the TLS port.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let log = p.next_log().await;
    assert_eq!(log["tls_error"], "protocol", "{log}");
    assert_eq!(handshake_failures(&p, "protocol").await, 1.0);

    // A connection closed before its first byte (a port probe) is no failure.
    drop(tokio::net::TcpStream::connect(addr).await.unwrap());
    let out = curl(&[
        "-sS",
        "--proxy",
        &format!("https://{addr}"),
        "--proxy-cacert",
        pki.ca_path.to_str().unwrap(),
        "http://127.0.0.1:1/",
    ])
    .await;
    assert!(!out.status.success());
    let log = p.next_log().await;
    assert_eq!(
        log["tls_error"], "no_certificate",
        "the probe left no line before curl's: {log}"
    );
    assert_eq!(handshake_failures(&p, "timeout").await, 0.0);
    assert_eq!(
        p.metric("sluice_requests_total{agent=\"-\",decision=\"deny\",reason=\"tls_handshake\"}")
            .await,
        5.0
    );
    assert_eq!(origin.connections(), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_times_out_at_head_timeout() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let mut p = start(&pki, &origin, "[limits]\nhead_timeout = \"300ms\"\n").await;
    let mut s = tokio::net::TcpStream::connect(p.tls.unwrap())
        .await
        .unwrap();
    s.write_all(&[0x16]).await.unwrap(); // the first byte of a handshake record, and no more
    let log = p.next_log().await;
    assert_eq!(log["tls_error"], "timeout", "{log}");
    assert!(log["duration_ms"].as_f64().unwrap() >= 300.0, "{log}");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert_eq!(handshake_failures(&p, "timeout").await, 1.0);
    p.shutdown().await;
}

#[tokio::test]
async fn certificate_without_a_known_spiffe_id_is_unidentified() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let mut p = start(&pki, &origin, "").await;
    // Unknown ID, and no URI SAN at all: neither falls back to "loopback",
    // whose sources match the client's address.
    for uris in [&["spiffe://cluster.local/ns/agents/sa/stranger"][..], &[]] {
        let leaf = pki.ca.agent(uris);
        let mut s = pki::connect(p.tls.unwrap(), &pki.ca, Some(&leaf))
            .await
            .unwrap();
        let rsp = connect_over(&mut s, &origin).await;
        assert_eq!(rsp.status, 403, "{uris:?}");
        assert_eq!(
            rsp.header("proxy-status"),
            Some("sluice; error=http_request_denied")
        );
        let log = p.next_log().await;
        assert_eq!(log["reason"], "unidentified", "{log}");
        assert!(log["agent"].is_null(), "{log}");
    }
    assert_eq!(origin.connections(), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn over_the_connection_limit_gets_503_over_tls() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let agent = pki.ca.agent(&[CI_ID]);
    let mut p = start(&pki, &origin, "[limits]\nmax_connections = 1\n").await;
    let addr = p.tls.unwrap();
    let mut first = pki::connect(addr, &pki.ca, Some(&agent)).await.unwrap();
    assert_eq!(connect_over(&mut first, &origin).await.status, 200);

    let mut second = pki::connect(addr, &pki.ca, Some(&agent)).await.unwrap();
    let rsp = net::read_response(&mut second).await;
    assert_eq!(rsp.status, 503);
    let log = p.next_log().await;
    assert_eq!(log["reason"], "connection_limit", "{log}");
    assert_eq!(log["agent"], "ci");
    drop(first);
    assert_eq!(p.next_log().await["method"], "CONNECT");
    p.shutdown().await;
}

/// New certificate, key and CA files take effect on reload for new
/// handshakes; a reload with a broken file is rejected whole and the
/// material in force stays.
#[tokio::test]
async fn reload_rotates_the_certificates() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let old_agent = pki.ca.agent(&[CI_ID]);
    let mut p = start(&pki, &origin, "").await;
    let addr = p.tls.unwrap();
    let s = pki::connect(addr, &pki.ca, Some(&old_agent)).await.unwrap();
    assert_server_cert(&s, &pki.server.der);
    drop(s);

    // A broken key file: rejected, the old material stays.
    std::fs::write(&pki.key_path, "not a key").unwrap();
    let err = p.running().reload().unwrap_err().to_string();
    assert!(err.contains("server-key.pem"), "{err}");
    let s = pki::connect(addr, &pki.ca, Some(&old_agent)).await.unwrap();
    assert_server_cert(&s, &pki.server.der);
    drop(s);

    // Rotate to a new CA: new server certificate and new client CA.
    let new_ca = Ca::new("agents CA 2027");
    let new_server = new_ca.server();
    new_server.write(pki.dir.path(), "server");
    std::fs::write(&pki.ca_path, &new_ca.cert.cert_pem).unwrap();
    p.running().reload().unwrap();

    let new_agent = new_ca.agent(&[CI_ID]);
    let mut s = pki::connect(addr, &new_ca, Some(&new_agent)).await.unwrap();
    assert_server_cert(&s, &new_server.der);
    assert_eq!(connect_over(&mut s, &origin).await.status, 200);
    drop(s);
    assert_eq!(p.next_log().await["agent"], "ci");

    // The old CA's agents are now strangers.
    refused(pki::connect(addr, &new_ca, Some(&old_agent)).await).await;
    assert_eq!(p.next_log().await["tls_error"], "unknown_ca");
    // The watcher may have tried the broken key too.
    assert!(
        p.metric("sluice_config_reloads_total{result=\"error\"}")
            .await
            >= 1.0
    );
    p.shutdown().await;
}

/// The watcher follows the TLS files too: a rotated certificate needs no
/// SIGHUP and no config change.
#[tokio::test]
async fn a_rotated_certificate_file_is_picked_up_without_sighup() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let pki = Pki::new();
    let agent = pki.ca.agent(&[CI_ID]);
    let p = start(&pki, &origin, "").await;
    let new_server = pki.ca.server();
    new_server.write(pki.dir.path(), "server");
    // The watcher polls once a second; wait for the reload it triggers.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while p
        .metric("sluice_config_reloads_total{result=\"success\"}")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload after the certificate changed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let s = pki::connect(p.tls.unwrap(), &pki.ca, Some(&agent))
        .await
        .unwrap();
    assert_server_cert(&s, &new_server.der);
    drop(s);
    p.shutdown().await;
}

#[tokio::test]
async fn start_fails_naming_an_unusable_certificate_file() {
    let pki = Pki::new();
    std::fs::write(
        &pki.cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64 !\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\nhosts_file = false\n{}",
        pki.toml()
    );
    std::fs::write(&path, text).unwrap();
    let config = sluice::config::Config::load(&path).unwrap();
    let err = sluice::app::start(config, sluice::app::Options::default())
        .await
        .unwrap_err();
    let msg = format!("{err}");
    assert!(msg.contains("server.pem"), "{msg}");

    std::fs::remove_file(&pki.cert_path).unwrap();
    let config = sluice::config::Config::load(&path).unwrap();
    let err = sluice::app::start(config, sluice::app::Options::default())
        .await
        .unwrap_err();
    let msg = format!("{err}");
    assert!(
        msg.contains("server.pem") && msg.contains("cannot read"),
        "{msg}"
    );
}
