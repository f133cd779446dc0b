//! sluice under test, as a subprocess: the release binary run with
//! `sluice run --config <generated file>`, listening on 127.0.0.1:0, its
//! access log ON (written to a file in a temporary directory), optionally
//! pinned to one CPU with `taskset`. The bound addresses are read from its
//! startup line on stderr (`sluice is serving proxy=… admin=…`).
//!
//! With `SLUICE_BENCH_PROXY=squid`, Squid (from the distribution, `squid`
//! on PATH) is measured instead, on the same workloads, configured to match:
//! one process pinned the same way, no cache, its access log written to a
//! file, the origin's name from a hosts file. `SLUICE_BENCH_PROXY=tinyproxy`
//! does the same for tinyproxy (`tinyproxy` on PATH): pinned the same way,
//! every request logged (`LogLevel Connect`), the origin named by its
//! address (see [`Kind::origin_host`]).
//!
//! Not here: generating load or measuring it (load.rs and workloads.rs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::Error;

/// How long sluice may take to print its startup line, and to exit on SIGTERM.
const START_WAIT: Duration = Duration::from_secs(15);
const STOP_WAIT: Duration = Duration::from_secs(15);

/// What sluice is started with.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The sluice binary.
    pub bin: &'a Path,
    /// The benchmark's name server, sluice's only one.
    pub dns: SocketAddr,
    /// The port of the one destination the agent may reach.
    pub origin_port: u16,
    /// Client connections sluice must accept at once (the idle workload).
    pub max_connections: usize,
    /// Run sluice on this CPU only.
    pub cpu: Option<u32>,
    /// Where the config file and the access log are written.
    pub dir: &'a Path,
    /// The TLS listener's files, to run one (sluice only).
    pub tls: Option<&'a crate::tls::Pki>,
}

/// Which proxy is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sluice,
    Squid,
    Tinyproxy,
}

impl Kind {
    /// The kind `SLUICE_BENCH_PROXY` names.
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "sluice" => Some(Kind::Sluice),
            "squid" => Some(Kind::Squid),
            "tinyproxy" => Some(Kind::Tinyproxy),
            _ => None,
        }
    }

    /// The proxy's name in the results table.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sluice => "sluice",
            Kind::Squid => "Squid",
            Kind::Tinyproxy => "tinyproxy",
        }
    }

    /// Whether a client's connection stays open between absolute-form
    /// requests. tinyproxy ends every response with `Connection: close`,
    /// so the keep-alive absolute-form workloads cannot be run against it.
    pub fn keeps_clients(self) -> bool {
        self != Kind::Tinyproxy
    }

    /// The origin's host as clients name it. tinyproxy has no resolver
    /// setting of its own: it asks the system's, which the benchmark must
    /// not use, so it is handed the address (one name lookup fewer than
    /// sluice and Squid do per tunnel and request).
    pub fn origin_host(self) -> &'static str {
        match self {
            Kind::Tinyproxy => "127.0.0.1",
            Kind::Sluice | Kind::Squid => crate::dns::HOST,
        }
    }
}

/// A running sluice (or the other proxy [`Kind`] names).
#[derive(Debug)]
pub struct Sluice {
    child: Child,
    /// sluice's process id (taskset execs it, so the child's own).
    pub pid: u32,
    /// Its proxy listener, as it reported it.
    pub proxy: SocketAddr,
    /// Its TLS listener, if it runs one.
    pub tls: Option<SocketAddr>,
    /// Its access log.
    pub log_path: PathBuf,
}

/// The bench agent's proxy token: requests that present it (as
/// `Proxy-Authorization: Basic`, user `bench`) are identified by it, the
/// others by their source address.
pub const TOKEN: &str = "bench-token-7d1f0c9a4e2b";

/// The configuration under test: one agent by source address or token,
/// allowed exactly the origin; loopback made dialable; the bench's name
/// server.
fn config(s: &Setup<'_>, log_path: &Path) -> String {
    let (tls_listen, tls, spiffe) = match s.tls {
        Some(pki) => (
            "tls_listen = \"127.0.0.1:0\"\n".to_owned(),
            format!(
                "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
                pki.cert.display(),
                pki.key.display(),
                pki.client_ca.display()
            ),
            format!("spiffe_ids = [\"{}\"]\n", crate::tls::SPIFFE_ID),
        ),
        None => Default::default(),
    };
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
{tls_listen}
{tls}
[admin]
listen = "127.0.0.1:0"

[dns]
nameservers = ["{dns}"]
timeout = "2s"
hosts_file = false

[egress]
allow_cidrs = ["127.0.0.1/32"]

[limits]
max_connections = {max}
max_connections_per_agent = {max}

[log]
path = "{log}"

[[agent]]
name = "bench"
sources = ["127.0.0.1/32"]
token_sha256 = ["{token_sha256}"]
{spiffe}allow = ["{host}:{port}"]
"#,
        dns = s.dns,
        max = s.max_connections,
        log = log_path.display(),
        host = crate::dns::HOST,
        port = s.origin_port,
        token_sha256 = sha256_hex(TOKEN),
    )
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Squid set up like sluice: one worker, no cache, a plain access log,
/// `origin.bench` from a hosts file, every client and port allowed (sluice's
/// policy check has no counterpart worth configuring).
fn squid_config(s: &Setup<'_>, port: u16, log_path: &Path) -> String {
    let dir = s.dir.display();
    format!(
        "http_port 127.0.0.1:{port}\n\
         workers 1\n\
         pid_filename {dir}/squid.pid\n\
         cache_log {dir}/cache.log\n\
         coredump_dir {dir}\n\
         access_log stdio:{log}\n\
         cache deny all\n\
         cache_mem 0 MB\n\
         hosts_file {dir}/hosts\n\
         pinger_enable off\n\
         http_access allow all\n\
         max_filedescriptors {fds}\n\
         shutdown_lifetime 0 seconds\n",
        log = log_path.display(),
        fds = s.max_connections * 2 + 1024,
    )
}

/// tinyproxy set up like sluice: every request logged (`LogLevel Connect`
/// is the least that logs each one), clients from loopback, every port
/// allowed for CONNECT (no `ConnectPort` line), as many clients as sluice
/// may hold. As root it drops to `nobody`, like Squid to `proxy`.
fn tinyproxy_config(s: &Setup<'_>, port: u16, log_path: &Path) -> String {
    format!(
        "Port {port}\n\
         Listen 127.0.0.1\n\
         User nobody\n\
         Group nogroup\n\
         Timeout 600\n\
         MaxClients {max}\n\
         LogFile \"{log}\"\n\
         LogLevel Connect\n\
         PidFile \"{dir}/tinyproxy.pid\"\n\
         Allow 127.0.0.1\n",
        max = s.max_connections,
        log = log_path.display(),
        dir = s.dir.display(),
    )
}

impl Sluice {
    /// Starts the proxy `kind` names.
    pub async fn start_kind(kind: Kind, setup: &Setup<'_>) -> Result<Sluice, Error> {
        match kind {
            Kind::Sluice => Sluice::start(setup).await,
            // Squid in the foreground (`-N`), its config after `-f`; the
            // origin's name from the hosts file its config names.
            Kind::Squid => {
                std::fs::write(
                    setup.dir.join("hosts"),
                    format!("127.0.0.1 {}\n", crate::dns::HOST),
                )?;
                Sluice::start_other(setup, "squid", &["-N", "-f"], squid_config).await
            }
            // tinyproxy in the foreground (`-d`), its config after `-c`.
            Kind::Tinyproxy => {
                Sluice::start_other(setup, "tinyproxy", &["-d", "-c"], tinyproxy_config).await
            }
        }
    }

    /// Another proxy: `program` with `flags`, then the path of the config
    /// file `config` writes for a port picked free just before and an
    /// access log in `setup.dir`; pinned like sluice. It drops root for its
    /// own user, so the directory is opened up. It prints nothing when
    /// ready: its port accepting is the sign.
    async fn start_other(
        setup: &Setup<'_>,
        program: &str,
        flags: &[&str],
        config: fn(&Setup<'_>, u16, &Path) -> String,
    ) -> Result<Sluice, Error> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(setup.dir, std::fs::Permissions::from_mode(0o777))?;
        let log_path = setup.dir.join("access.log");
        let port = free_port()?;
        let config_path = setup.dir.join(format!("{program}.conf"));
        std::fs::write(&config_path, config(setup, port, &log_path))?;
        let mut cmd = match setup.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(flags)
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program} (is it installed?): {e}"))?;
        let pid = child
            .id()
            .ok_or_else(|| format!("{program} exited at once"))?;
        let proxy = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + START_WAIT;
        while tokio::net::TcpStream::connect(proxy).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{program} did not listen on {proxy} in time (its logs are in {})",
                    setup.dir.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Sluice {
            child,
            pid,
            proxy,
            tls: None,
            log_path,
        })
    }

    /// Writes the config into `setup.dir`, starts sluice and waits until it serves.
    pub async fn start(setup: &Setup<'_>) -> Result<Sluice, Error> {
        let log_path = setup.dir.join("access.jsonl");
        let config_path = setup.dir.join("sluice.toml");
        std::fs::write(&config_path, config(setup, &log_path))?;

        let mut cmd = match setup.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(setup.bin);
                c
            }
            None => Command::new(setup.bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().ok_or("sluice exited at once")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;

        // Reads stderr for the life of the process, so sluice never blocks
        // on a full pipe; everything but the startup line is passed on.
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = serving(&line) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                } else {
                    eprintln!("  sluice: {line}");
                }
            }
        });
        let (proxy, tls) = match tokio::time::timeout(START_WAIT, rx).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(_)) => return Err("sluice exited before serving (its stderr is above)".into()),
            Err(_) => return Err("sluice did not print its startup line in time".into()),
        };
        Ok(Sluice {
            child,
            pid,
            proxy,
            tls,
            log_path,
        })
    }

    /// SIGTERM, then waits for the exit (the access log is flushed by then).
    pub async fn stop(mut self) -> Result<(), Error> {
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()?;
        if !status.success() {
            return Err("kill -TERM failed".into());
        }
        let status = tokio::time::timeout(STOP_WAIT, self.child.wait())
            .await
            .map_err(|_| "sluice did not exit within 15 s of SIGTERM")??;
        if !status.success() {
            return Err(format!("sluice exited badly: {status}").into());
        }
        Ok(())
    }
}

/// The proxy and TLS listener addresses from the startup line, e.g.
/// `… INFO sluice is serving proxy=127.0.0.1:41234 tls=Some(127.0.0.1:41235) admin=… agents=1`.
/// Colour codes, if a build colours its output anyway, are skipped.
fn serving(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    if !line.contains("sluice is serving") {
        return None;
    }
    let plain = strip_ansi(line);
    let field = |name: &str| {
        plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name).map(str::to_owned))
    };
    let proxy = field("proxy=")?.parse().ok()?;
    let tls = field("tls=Some(").and_then(|a| a.trim_end_matches(')').parse().ok());
    Some((proxy, tls))
}

/// `line` without ANSI SGR sequences (ESC '[' … 'm').
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A loopback port that was free a moment ago, for a proxy that cannot
/// report the one it bound.
fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
