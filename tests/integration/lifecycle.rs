//! Reload and shutdown: a ConfigMap-style symlink swap is picked up, an
//! invalid file changes nothing, 50 reloads under traffic fail no request,
//! open tunnels outlive the policy that admitted them, and SIGTERM drains.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::net::{self, Origin};
use crate::support::proxy::{Proxy, proxy};

const CI: [u8; 4] = [127, 0, 0, 11];

fn rules(allow: &str) -> String {
    format!(
        "[egress]\nallow_cidrs = [\"127.0.0.1/32\"]\n\
         [[agent]]\nname = \"ci\"\nsources = [\"127.0.0.11\"]\nallow = [{allow}]\n"
    )
}

/// Waits (bounded) until a metric reaches `want`: reloads from file changes
/// happen on sluice's own schedule, and this is the event they publish.
async fn until_metric(p: &Proxy, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if p.metric(series).await >= want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {want}:\n{}",
            p.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(p: &Proxy, target: &str) -> u16 {
    let mut s = net::connect_from(CI, p.addr).await;
    let r = net::exchange(
        &mut s,
        &format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    r.status
}

/// Kubernetes updates a mounted ConfigMap by writing a new timestamped
/// directory and atomically renaming a `..data` symlink onto it; the file
/// sluice was given is a symlink through `..data`.
#[tokio::test]
async fn configmap_symlink_swap_is_reloaded() {
    let a = Origin::start([127, 0, 0, 1]).await;
    let builder_a = proxy(&rules(&format!("\"127.0.0.1/32:{}\"", a.port())));
    let builder_b = proxy(&rules("\"127.0.0.1/32:1\""));
    let mut p = builder_a.run().await;
    let dir = p.path.parent().unwrap().join("configmap");
    std::fs::create_dir_all(dir.join("..v1")).unwrap();
    std::fs::create_dir_all(dir.join("..v2")).unwrap();
    // Same fixture header (listeners, DNS) as the running proxy; only rules differ.
    std::fs::write(
        dir.join("..v1/sluice.toml"),
        std::fs::read(&p.path).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("..v2/sluice.toml"), builder_b.config_text()).unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/sluice.toml", dir.join("sluice.toml")).unwrap();
    // Point the running proxy at the symlinked file by reloading from it once.
    std::fs::remove_file(&p.path).unwrap();
    symlink(dir.join("sluice.toml"), &p.path).unwrap();

    let target = format!("127.0.0.1:{}", a.port());
    assert_eq!(status_of(&p, &target).await, 200);
    p.next_log().await;

    swap(&dir, "..v2");
    until_metric(&p, "sluice_config_reloads_total{result=\"success\"}", 1.0).await;
    assert_eq!(status_of(&p, &target).await, 403);
    assert_eq!(p.next_log().await["reason"], "not_allowed");
    p.shutdown().await;
}

fn swap(dir: &Path, to: &str) {
    let tmp = dir.join("..data_tmp");
    symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn invalid_reload_keeps_the_old_policy() {
    let a = Origin::start([127, 0, 0, 1]).await;
    let mut p = proxy(&rules(&format!("\"127.0.0.1/32:{}\"", a.port())))
        .run()
        .await;
    std::fs::write(&p.path, "[proxy]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let err = p.running().reload().unwrap_err().to_string();
    assert!(
        err.ends_with(
            "sluice.toml:3:1: proxy.bogus: unknown field `bogus`, expected `listen` or `tls_listen`"
        ),
        "{err}"
    );
    // (The file watcher may reject the same file a second time.)
    assert!(
        p.metric("sluice_config_reloads_total{result=\"error\"}")
            .await
            >= 1.0
    );
    assert_eq!(status_of(&p, &format!("127.0.0.1:{}", a.port())).await, 200);
    p.next_log().await;
    p.shutdown().await;
}

/// 50 reloads back to back while a client keeps making requests: every
/// request succeeds (a reload never drops or mis-decides one).
#[tokio::test]
async fn fifty_reloads_under_traffic_fail_no_request() {
    let a = Origin::start([127, 0, 0, 1]).await;
    let allow = format!("\"127.0.0.1/32:{}\"", a.port());
    let builder = proxy(&rules(&allow));
    let p = builder.run().await;
    let addr = p.addr;
    let target = format!("127.0.0.1:{}", a.port());
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn(async move {
        let mut ok = 0usize;
        let mut s = net::connect_from(CI, addr).await;
        loop {
            let r = net::exchange(
                &mut s,
                &format!("GET http://{target}/ HTTP/1.1\r\nHost: {target}\r\n\r\n"),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            ok += 1;
            // A fresh connection now and then, so new connections see new policies too.
            if ok % 5 == 0 {
                s = net::connect_from(CI, addr).await;
            }
            if *done_rx.borrow_and_update() {
                return ok;
            }
        }
    });
    for i in 0..50 {
        // Alternate between two equivalent files: the rules move, the decision does not.
        let extra = if i % 2 == 0 {
            format!("{allow}, \"example.com\"")
        } else {
            allow.clone()
        };
        p.rewrite(&proxy(&rules(&extra)));
        p.running().reload().unwrap();
    }
    done_tx.send(true).unwrap();
    let ok = traffic.await.unwrap();
    assert!(ok > 0);
    assert!(
        p.metric("sluice_config_reloads_total{result=\"success\"}")
            .await
            >= 50.0
    );
    p.shutdown().await;
}

#[tokio::test]
async fn open_tunnel_outlives_the_policy_that_admitted_it() {
    let a = Origin::start([127, 0, 0, 1]).await;
    let target = format!("127.0.0.1:{}", a.port());
    let mut p = proxy(&rules(&format!("\"127.0.0.1/32:{}\"", a.port())))
        .run()
        .await;
    let (mut tunnel, rsp) = net::connect(CI, p.addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    p.rewrite(&proxy(&rules("\"127.0.0.1/32:1\"")));
    p.running().reload().unwrap();
    // New requests see the new policy...
    assert_eq!(status_of(&p, &target).await, 403);
    p.next_log().await;
    // ...the open tunnel keeps working.
    let r = net::exchange(&mut tunnel, "GET /still HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
    drop(tunnel);
    assert_eq!(p.next_log().await["decision"], "allow");
    p.shutdown().await;
}

/// The binary, as Kubernetes runs it: SIGTERM with a tunnel open. Readiness
/// turns 503, the tunnel keeps working until the client closes it, then
/// sluice exits 0 with the tunnel's log line written.
#[tokio::test]
async fn sigterm_drains_open_tunnels_then_exits_zero() {
    let a = Origin::start([127, 0, 0, 1]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [dns]\nnameservers = [\"127.0.0.1:9\"]\nhosts_file = false\n[limits]\nshutdown_grace = \"20s\"\n{}",
        rules(&format!("\"127.0.0.1/32:{}\"", a.port()))
    );
    std::fs::write(&path, text).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The bound addresses are in the startup line on stderr.
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let (proxy_addr, admin_addr) = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("sluice exited before serving");
        if line.contains("sluice is serving") {
            let field = |k: &str| -> std::net::SocketAddr {
                line.split(&format!("{k}="))
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            break (field("proxy"), field("admin"));
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });

    let target = format!("127.0.0.1:{}", a.port());
    let (mut tunnel, rsp) = net::connect(CI, proxy_addr, &target, "").await;
    assert_eq!(rsp.status, 200);
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    // Draining: readiness says so (the admin listener serves until the end).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
        let r = net::exchange(
            &mut s,
            "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        if r.status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never turned 503"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The open tunnel still works.
    let r = net::exchange(&mut tunnel, "GET /during-drain HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(r.status, 200);
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).await.unwrap();

    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["method"], "CONNECT");
    assert_eq!(lines[0]["decision"], "allow");
    assert!(lines[0]["bytes_up"].as_u64().unwrap() > 0);
}
