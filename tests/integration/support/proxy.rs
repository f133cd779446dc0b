//! sluice in-process, on 127.0.0.1:0, with a config the test writes in TOML
//! (the same file a user would write), the DNS stub as its only name server
//! and a tap on the access log so tests can wait for lines without sleeping.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sluice::app::{self, Running};
use sluice::config::Config;
use tokio::sync::mpsc;

use super::dns::DnsServer;

/// How long a test waits for a log line before failing (only a broken proxy gets near it).
const LOG_WAIT: Duration = Duration::from_secs(10);

/// Builds a proxy config: `[proxy]`, `[admin]` and `[dns]` are filled in; the
/// test supplies the rest (agents, `[egress]`, `[limits]`...).
pub fn proxy(toml: &str) -> ProxyBuilder {
    ProxyBuilder {
        toml: toml.to_owned(),
        dns: None,
        dns_timeout: "2s".to_owned(),
        tls_listen: false,
    }
}

pub struct ProxyBuilder {
    toml: String,
    dns: Option<SocketAddr>,
    dns_timeout: String,
    tls_listen: bool,
}

impl ProxyBuilder {
    pub fn dns(mut self, dns: &DnsServer) -> Self {
        self.dns = Some(dns.addr());
        self
    }

    pub fn dns_timeout(mut self, t: &str) -> Self {
        self.dns_timeout = t.to_owned();
        self
    }

    /// Adds `proxy.tls_listen` on 127.0.0.1:0 (the test supplies `[tls]`).
    pub fn tls_listen(mut self) -> Self {
        self.tls_listen = true;
        self
    }

    /// The complete TOML this builder produces.
    pub fn config_text(&self) -> String {
        // Without a DNS stub, point at a closed loopback port: nothing may
        // ever reach the machine's resolver.
        let ns = self.dns.map_or("127.0.0.1:9".to_owned(), |a| a.to_string());
        let tls = if self.tls_listen {
            "tls_listen = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n{tls}[admin]\nlisten = \"127.0.0.1:0\"\n\
             [dns]\nnameservers = [\"{ns}\"]\ntimeout = \"{}\"\nhosts_file = false\n{}",
            self.dns_timeout, self.toml
        )
    }

    pub async fn run(self) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let text = self.config_text();
        std::fs::write(&path, &text).unwrap();
        let config =
            Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let running = app::start(
            config,
            app::Options {
                log_tap: Some(tx),
                log_tap_only: true,
            },
        )
        .await
        .unwrap();
        Proxy {
            addr: running.proxy_addr,
            tls: running.tls_addr,
            admin: running.admin_addr,
            running: Some(running),
            logs: rx,
            path,
            _dir: dir,
        }
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    /// The TLS listener, when the config sets `proxy.tls_listen`.
    pub tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    running: Option<Running>,
    logs: mpsc::UnboundedReceiver<String>,
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// The next access-log line, parsed.
    pub async fn next_log(&mut self) -> Value {
        let line = tokio::time::timeout(LOG_WAIT, self.logs.recv())
            .await
            .expect("no access-log line in time")
            .expect("access log closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"))
    }

    /// The next access-log line, raw.
    pub async fn next_log_raw(&mut self) -> String {
        tokio::time::timeout(LOG_WAIT, self.logs.recv())
            .await
            .expect("no access-log line in time")
            .expect("access log closed")
    }

    /// Whether a log line is waiting right now.
    pub fn has_log(&mut self) -> bool {
        !self.logs.is_empty()
    }

    /// `GET /metrics` from the admin listener.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.body
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> super::net::Response {
        let mut s = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        super::net::exchange(
            &mut s,
            &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
        )
        .await
    }

    /// The value of one series (exact label set as Prometheus prints it), 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Writes a new config file (same fixture header) and reloads it.
    pub fn rewrite(&self, builder: &ProxyBuilder) {
        std::fs::write(&self.path, builder.config_text()).unwrap();
    }

    pub async fn shutdown(mut self) -> app::Drain {
        self.running
            .take()
            .unwrap()
            .shutdown(Some(Duration::from_secs(5)), std::future::pending())
            .await
    }
}
