//! The `sluice` binary as a user runs it: `check` (summary, precise errors,
//! exit codes 0/1/2), `explain` (decisions and exit codes 0/3, text and
//! JSON, by agent or source, with DNS against the loopback stub), and `run`
//! (a taken port exits 2 naming the address; SIGTERM exits 0 promptly with
//! the access log on stdout).
//!
//! Not here: the proxy's behaviour per request (the in-process tests do
//! that faster and more precisely).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::oneshot;

use crate::support::dns::dns;
use crate::support::net::{self, Origin};

/// How long any one command may take before the test fails.
const COMMAND_WAIT: Duration = Duration::from_secs(5);

fn sluice() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env_remove("SLUICE_LOG")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `sluice args...` to completion.
async fn run(args: &[&str]) -> Output {
    let child = sluice()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::timeout(COMMAND_WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("sluice {args:?} did not finish in time"))
        .unwrap()
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// What the command printed on stdout, parsed as JSON.
fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(out)))
}

/// A config file in a fresh temporary directory.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn check_accepts_the_shipped_configs_and_prints_a_summary() {
    let out = run(&["check", "--config", "config/example.toml"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("config/example.toml: ok\n"), "{text}");
    assert!(text.contains("  proxy:   127.0.0.1:3128\n"), "{text}");
    assert!(text.contains("  agents:  2\n"), "{text}");
    for agent in ["local", "researcher"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(agent)),
            "{agent}: {text}"
        );
    }

    let out = run(&["check", "--config", "config/sluice.toml"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("config/sluice.toml: ok\n"), "{text}");
    for agent in ["orchestrator", "security-scanner"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(agent)),
            "{agent}: {text}"
        );
    }
}

#[tokio::test]
async fn check_names_file_line_column_and_key_of_an_error() {
    let (_dir, path) = config_file("[proxy]\nlisten = \"127.0.0.1:0\"\nlisten_typo = 1\n");
    let out = run(&["check", "--config", s(&path)]).await;
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        format!(
            "sluice: error: {}:3:1: proxy.listen_typo: unknown field `listen_typo`, expected `listen` or `tls_listen`\n",
            path.display()
        )
    );
    assert_eq!(stdout(&out), "");

    let (_dir, path) = config_file(
        "[[agent]]\nname = \"x\"\nsources = [\"127.0.0.11\"]\nallow = [\"*example.com\"]\n",
    );
    let out = run(&["check", "--config", s(&path)]).await;
    assert_eq!(code(&out), 1);
    assert_eq!(
        stderr(&out),
        format!(
            "sluice: error: {}:4:10: agent[0].allow[0]: \"*example.com\": '*' must be a whole label: \
             use \"*.example.com\" (subdomains) or \".example.com\" (the domain and its subdomains)\n",
            path.display()
        )
    );

    // `run` refuses the same file the same way, before binding anything.
    let out = run(&["run", "--config", s(&path)]).await;
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("agent[0].allow[0]"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn check_on_a_missing_file_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let out = run(&["check", "--config", s(&path)]).await;
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).starts_with(&format!("sluice: error: {}: cannot read", path.display())),
        "{}",
        stderr(&out)
    );
}

/// Two agents by source: "a" may reach a.example.com, "b" may not.
const TWO_AGENTS: &str = "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\
    [[agent]]\nname = \"a\"\nsources = [\"127.0.0.11\"]\nallow = [\"a.example.com\"]\n\
    [[agent]]\nname = \"b\"\nsources = [\"127.0.0.12\"]\nallow = [\"b.example.com\"]\ndeny = [\"a.example.com\"]\n";

/// `sluice explain --config <config>`, then `args`.
async fn explain(config: &str, args: &[&str]) -> Output {
    run(&[&["explain", "--config", config][..], args].concat()).await
}

/// `sluice explain --config config/example.toml --agent <agent> --no-dns`,
/// then `args`.
async fn explain_example(agent: &str, args: &[&str]) -> Output {
    let head = ["--agent", agent, "--no-dns"];
    explain("config/example.toml", &[&head[..], args].concat()).await
}

#[tokio::test]
async fn explain_without_dns_exits_0_when_allowed_and_3_when_denied() {
    let out = explain_example("local", &["example.com:443"]).await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("decision:  allow\n"), "{text}");
    assert!(
        text.contains("rule:      \"example.com\" (config/example.toml:"),
        "{text}"
    );

    let out = explain_example("local", &["https://gist.githubusercontent.com/some/path"]).await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("dest:      gist.githubusercontent.com:443\n"),
        "{text}"
    );
    assert!(text.contains("decision:  deny\n"), "{text}");
    assert!(text.contains("reason:    denied_by_rule\n"), "{text}");

    let out = explain_example("local", &["--format", "json", "evil.example:8443"]).await;
    assert_eq!(code(&out), 3);
    let json = stdout_json(&out);
    assert_eq!(json["agent"], "local");
    assert_eq!(json["host"], "evil.example");
    assert_eq!(json["port"], 8443);
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["reason"], "not_allowed");
    assert!(json["rule"].is_null());
    assert_eq!(json["resolved"], false);

    // A report-mode agent: would be denied, so reported, exit 0.
    let out = explain_example("researcher", &["--format", "json", "evil.example"]).await;
    assert_eq!(code(&out), 0);
    let json = stdout_json(&out);
    assert_eq!(
        (json["decision"].as_str(), json["reason"].as_str()),
        (Some("report"), Some("not_allowed"))
    );
}

#[tokio::test]
async fn explain_by_source_picks_the_agent_that_owns_the_address() {
    let (_dir, path) = config_file(TWO_AGENTS);
    let ask = |source: &'static str| {
        let path = path.clone();
        async move {
            let args = [
                "--source",
                source,
                "--no-dns",
                "--format",
                "json",
                "a.example.com:443",
            ];
            explain(s(&path), &args).await
        }
    };
    let out = ask("127.0.0.11").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let json = stdout_json(&out);
    assert_eq!(
        (json["agent"].as_str(), json["decision"].as_str()),
        (Some("a"), Some("allow"))
    );
    assert_eq!(json["rule"], "a.example.com");
    assert!(
        json["rule_at"].as_str().unwrap().ends_with(":6:10"),
        "{json}"
    );

    let out = ask("127.0.0.12").await;
    assert_eq!(code(&out), 3);
    let json = stdout_json(&out);
    assert_eq!(
        (json["agent"].as_str(), json["reason"].as_str()),
        (Some("b"), Some("denied_by_rule"))
    );

    let out = ask("127.0.0.13").await;
    assert_eq!(code(&out), 1, "an address no agent owns is invalid input");
    assert!(stderr(&out).contains("127.0.0.13"), "{}", stderr(&out));
}

#[tokio::test]
async fn explain_resolves_with_the_configured_nameserver_and_flags_forbidden_addresses() {
    let stub = dns()
        .a("mixed.example.com", [127, 0, 0, 1])
        .a("mixed.example.com", [127, 0, 0, 2])
        .a("internal.example.com", [127, 0, 0, 2])
        .a("internal.example.com", [169, 254, 169, 254])
        .a("denied.example.com", [127, 0, 0, 1])
        .run()
        .await;
    let (_dir, path) = config_file(&format!(
        "[dns]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nhosts_file = false\n\
         [egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\n\
         allow = [\"mixed.example.com\", \"internal.example.com\"]\n",
        stub.addr()
    ));
    let explain_ci = |dest: &'static str, format: &'static str| {
        let path = path.clone();
        async move { explain(s(&path), &["--agent", "ci", "--format", format, dest]).await }
    };

    let out = explain_ci("mixed.example.com:443", "text").await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("decision:  allow\n"), "{text}");
    assert!(
        text.contains("address:   127.0.0.1 (may be dialled)\n"),
        "{text}"
    );
    assert!(text.contains("address:   127.0.0.2 (forbidden: "), "{text}");

    let out = explain_ci("internal.example.com:443", "json").await;
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let json = stdout_json(&out);
    assert_eq!(json["decision"], "deny");
    assert_eq!(json["reason"], "destination_ip_prohibited");
    assert_eq!(json["resolved"], true);
    let addrs = json["addresses"].as_array().unwrap();
    let ips: Vec<&str> = addrs.iter().map(|a| a["ip"].as_str().unwrap()).collect();
    assert_eq!(ips, ["127.0.0.2", "169.254.169.254"], "{json}");
    assert!(addrs.iter().all(|a| a["forbidden"].is_string()), "{json}");

    // A denied name is never looked up, like in the proxy; --no-dns never asks.
    let before = stub.total_queries();
    let out = explain_ci("denied.example.com:443", "text").await;
    assert_eq!(code(&out), 3);
    let out = explain(
        s(&path),
        &["--agent", "ci", "--no-dns", "mixed.example.com"],
    )
    .await;
    assert_eq!(code(&out), 0);
    assert!(!stdout(&out).contains("address:"), "{}", stdout(&out));
    assert_eq!(
        stub.total_queries(),
        before,
        "explain sent DNS queries it should not have"
    );
    assert_eq!(stub.queries("denied.example.com"), 0);
}

/// A config for `run` on loopback: ports 0, no resolver beyond a closed
/// port, agent "ci" allowed to reach `origin_port` on 127.0.0.1.
fn run_config(proxy_listen: &str, origin_port: u16) -> String {
    format!(
        "[proxy]\nlisten = \"{proxy_listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\nhosts_file = false\n\
         [egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n[limits]\nshutdown_grace = \"10s\"\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [\"127.0.0.1/32:{origin_port}\"]\n"
    )
}

#[tokio::test]
async fn run_exits_2_naming_the_address_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_dir, path) = config_file(&run_config(&addr.to_string(), 80));
    let out = run(&["run", "--config", s(&path)]).await;
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot bind the proxy listener on {addr}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

/// Removes ANSI colour sequences, in case the diagnostic log has them.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `sluice run` child process and what its diagnostics said.
struct Served {
    child: tokio::process::Child,
    proxy: SocketAddr,
    admin: SocketAddr,
    /// Everything written to stderr, once the process has exited.
    diagnostics: tokio::task::JoinHandle<String>,
}

/// The value of `key=` in a diagnostic line, if it parses.
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split(&format!("{key}="))
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Starts `sluice run --config path` and waits until it says where it listens.
async fn serve(path: &Path) -> Served {
    let mut child = sluice()
        .args(["run", "--config", s(path)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = oneshot::channel();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Keep draining stderr for the whole run so the child never blocks on it.
    let diagnostics = tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut all = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = plain(&line);
            if let (Some(proxy), Some(admin)) = (field(&line, "proxy"), field(&line, "admin")) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send((proxy, admin));
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let (proxy, admin) = tokio::time::timeout(COMMAND_WAIT, rx)
        .await
        .expect("sluice run never said where it listens")
        .expect("sluice run exited before serving");
    Served {
        child,
        proxy,
        admin,
        diagnostics,
    }
}

impl Served {
    /// Sends `sig` (as `kill` spells it: "-TERM", "-HUP") to the process.
    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap().to_string();
        let kill = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        self.signal("-TERM");
    }

    /// A CONNECT tunnel from agent "ci" to `origin`, checked open (200).
    async fn tunnel(&self, origin: &Origin) -> tokio::net::TcpStream {
        let (tunnel, rsp) =
            net::connect([127, 0, 0, 11], self.proxy, &origin.addr.to_string(), "").await;
        assert_eq!(rsp.status, 200);
        tunnel
    }

    /// Waits for the exit; returns the exit code and the access log (stdout).
    async fn exit(mut self) -> (Option<i32>, String, String) {
        let mut out = self.child.stdout.take().unwrap();
        let mut log = String::new();
        let status = tokio::time::timeout(COMMAND_WAIT, async {
            out.read_to_string(&mut log).await.unwrap();
            self.child.wait().await.unwrap()
        })
        .await
        .expect("sluice run did not exit after SIGTERM");
        let diagnostics = self.diagnostics.await.unwrap();
        (status.code(), log, diagnostics)
    }

    /// Resolves once the proxy listener refuses connections (SIGTERM seen).
    async fn wait_until_not_accepting(&self) {
        let until = Instant::now() + COMMAND_WAIT;
        while tokio::net::TcpStream::connect(self.proxy).await.is_ok() {
            assert!(
                Instant::now() < until,
                "the proxy listener stayed open after SIGTERM"
            );
            tokio::task::yield_now().await;
        }
    }
}

fn access_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn run_serves_and_exits_0_promptly_on_sigterm_with_the_log_flushed() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let (_dir, path) = config_file(&run_config("127.0.0.1:0", origin.port()));
    let served = serve(&path).await;

    let mut s = net::connect_from([127, 0, 0, 11], served.proxy).await;
    let rsp = net::exchange(
        &mut s,
        &format!(
            "GET http://127.0.0.1:{0}/before-term HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nConnection: close\r\n\r\n",
            origin.port()
        ),
    )
    .await;
    assert_eq!(rsp.status, 200, "{rsp:?}");
    net::assert_request_line(&rsp.body, "GET /before-term HTTP/1.1");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    drop(s);
    let ready = admin_get(served.admin, "/readyz").await;
    assert_eq!(ready.map(|r| r.status), Some(200));

    let started = Instant::now();
    served.terminate();
    let (code, log, diagnostics) = served.exit().await;
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{diagnostics}");
    assert!(
        took < Duration::from_secs(1),
        "idle shutdown took {took:?}, not at once"
    );

    let lines = access_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["path"], "/before-term");
    assert_eq!(lines[0]["agent"], "ci");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["decision"], "allow");
}

/// `GET path` on the admin listener; `None` if it refuses the connection.
async fn admin_get(admin: SocketAddr, path: &str) -> Option<net::Response> {
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    Some(net::exchange(&mut s, &req).await)
}

#[tokio::test]
async fn run_lets_an_open_tunnel_finish_after_sigterm_then_exits_0() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let (_dir, path) = config_file(&run_config("127.0.0.1:0", origin.port()));
    let served = serve(&path).await;
    let mut tunnel = served.tunnel(&origin).await;
    let reply = net::exchange(&mut tunnel, "GET /before HTTP/1.1\r\nHost: o\r\n\r\n").await;
    assert_eq!(reply.status, 200);

    served.terminate();
    served.wait_until_not_accepting().await;
    // Draining: the open tunnel still carries traffic.
    let reply = net::exchange(&mut tunnel, "GET /during-drain HTTP/1.1\r\nHost: o\r\n\r\n").await;
    net::assert_request_line(&reply.body, "GET /during-drain HTTP/1.1");

    drop(tunnel);
    let started = Instant::now();
    let (code, log, diagnostics) = served.exit().await;
    assert_eq!(code, Some(0), "{diagnostics}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "exit waited for more than the tunnel"
    );
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["method"], "CONNECT");
    assert_eq!(lines[0]["decision"], "allow");
    assert!(lines[0]["bytes_up"].as_u64().unwrap() > 0, "{log}");
}

#[tokio::test]
async fn run_answers_readyz_503_while_draining() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let (_dir, path) = config_file(&run_config("127.0.0.1:0", origin.port()));
    let served = serve(&path).await;
    let tunnel = served.tunnel(&origin).await;
    assert_eq!(
        admin_get(served.admin, "/readyz").await.map(|r| r.status),
        Some(200)
    );

    served.terminate();
    served.wait_until_not_accepting().await;
    // The tunnel keeps sluice draining; meanwhile readiness must say 503.
    let ready = admin_get(served.admin, "/readyz").await;
    assert_eq!(ready.map(|r| r.status), Some(503), "/readyz while draining");
    let health = admin_get(served.admin, "/healthz").await;
    assert_eq!(
        health.map(|r| r.status),
        Some(200),
        "/healthz while the process runs"
    );

    drop(tunnel);
    let (code, _log, diagnostics) = served.exit().await;
    assert_eq!(code, Some(0), "{diagnostics}");
}

#[tokio::test]
async fn run_survives_sigterm_right_after_it_says_it_is_serving() {
    let (_dir, path) = config_file(&run_config("127.0.0.1:0", 80));
    let served = serve(&path).await;
    served.terminate();
    let (code, _log, diagnostics) = served.exit().await;
    assert_eq!(
        code,
        Some(0),
        "killed by the signal instead of draining: {diagnostics}"
    );
}

/// One absolute-form GET from agent "ci"; returns the status.
async fn get_status(proxy: SocketAddr, target: &str) -> u16 {
    let mut s = net::connect_from([127, 0, 0, 11], proxy).await;
    net::exchange(
        &mut s,
        &format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"),
    )
    .await
    .status
}

#[tokio::test]
async fn sighup_reloads_the_configuration() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let (_dir, path) = config_file(&run_config("127.0.0.1:0", origin.port()));
    let served = serve(&path).await;
    let target = format!("127.0.0.1:{}", origin.port());
    assert_eq!(get_status(served.proxy, &target).await, 200);
    // The same file, now without the rule: SIGHUP applies it.
    std::fs::write(&path, run_config("127.0.0.1:0", 1)).unwrap();
    served.signal("-HUP");
    let until = Instant::now() + COMMAND_WAIT;
    let mut requests = 1;
    loop {
        requests += 1;
        if get_status(served.proxy, &target).await == 403 {
            break;
        }
        assert!(Instant::now() < until, "the reload never took effect");
        tokio::task::yield_now().await;
    }
    served.terminate();
    let (code, log, diagnostics) = served.exit().await;
    assert_eq!(code, Some(0));
    assert!(
        diagnostics.contains("configuration reloaded"),
        "{diagnostics}"
    );
    // Lines are written as requests finish, so an allowed request still
    // being torn down may be logged after the first refusal: count, don't
    // rely on order.
    let lines = access_lines(&log);
    assert_eq!(lines.len(), requests, "{log}");
    let refused = lines
        .iter()
        .filter(|l| l["decision"] == "deny" && l["reason"] == "not_allowed")
        .count();
    let allowed = lines.iter().filter(|l| l["decision"] == "allow").count();
    assert_eq!((allowed + refused, refused), (requests, 1), "{log}");
}

/// A second SIGTERM during the drain cuts open tunnels at once, exits 0,
/// and the cut tunnel's line is still in the log.
#[tokio::test]
async fn second_sigterm_cuts_the_drain_short_and_keeps_the_log() {
    let origin = Origin::start([127, 0, 0, 1]).await;
    let (_dir, path) = config_file(&run_config("127.0.0.1:0", origin.port()));
    let served = serve(&path).await;
    let tunnel = served.tunnel(&origin).await;
    served.terminate();
    served.wait_until_not_accepting().await;
    let started = Instant::now();
    served.terminate();
    let (code, log, diagnostics) = served.exit().await;
    // shutdown_grace is 10s: exiting well before it means the second signal cut it short.
    assert!(started.elapsed() < Duration::from_secs(5), "{diagnostics}");
    assert_eq!(code, Some(0), "{diagnostics}");
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["method"], "CONNECT");
    drop(tunnel);
}
