//! Reloading the configuration: on SIGHUP, and when the file changes on
//! disk — including a Kubernetes ConfigMap update, which swaps a `..data`
//! symlink instead of writing the file, so we watch what the path resolves
//! to (inode, size, mtime) and compare contents.
//!
//! A new file is parsed and compiled whole, off the request path, and then
//! swapped in atomically; an invalid one changes nothing (the old policy
//! stays, the error is logged with file:line:col and counted). Requests
//! already running keep the policy they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::policy::Policy;
use crate::proxy::{self, State};

/// How often the file is checked. A stat every second is negligible, and
/// keeps a ConfigMap change effective within the kubelet's own sync delay.
const POLL: Duration = Duration::from_secs(1);

/// Loads `path` and installs it; on error nothing changes.
pub fn reload(state: &State, path: &Path) -> Result<(), ConfigError> {
    let m = &state.metrics;
    let old = state.policy();
    match Config::load(path) {
        Ok(config) => {
            warn_restart_needed(&old.config, &config);
            let agents = config.agents.len();
            state.set_policy(Arc::new(Policy::new(Arc::new(config)).inherit(&old)));
            m.reloads.with_label_values(&["success"]).inc();
            m.last_reload_success.set(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            tracing::info!(agents, "configuration reloaded from {}", path.display());
            Ok(())
        }
        Err(e) => {
            m.reloads.with_label_values(&["error"]).inc();
            tracing::error!("configuration reload rejected, the previous one stays in force: {e}");
            Err(e)
        }
    }
}

/// Settings that live in sockets or tasks built at start.
fn warn_restart_needed(old: &Config, new: &Config) {
    let mut changed = Vec::new();
    if old.proxy.listen != new.proxy.listen || old.proxy.tls_listen != new.proxy.tls_listen {
        changed.push("proxy listeners");
    }
    if old.admin.listen != new.admin.listen {
        changed.push("admin.listen");
    }
    if old.log.path != new.log.path {
        changed.push("log.path");
    }
    if old.dns.nameservers != new.dns.nameservers
        || old.dns.timeout != new.dns.timeout
        || old.dns.hosts_file != new.dns.hosts_file
    {
        changed.push("[dns]");
    }
    if !changed.is_empty() {
        tracing::warn!(
            "reload applied the policy, but {} changed and take effect only after a restart",
            changed.join(", ")
        );
    }
}

/// Reloads on SIGHUP and on file changes until `stop` turns true.
pub async fn watch(state: Arc<State>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); reloads follow file changes only");
            None
        }
    };
    // None: compare contents on the first tick (the file may have changed
    // between the initial load and now).
    let mut seen: Option<Meta> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = proxy::stopped(&mut stop) => return,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading {}", path.display());
                seen = meta(&path).await;
                let _ = reload(&state, &path);
            }
            _ = tick.tick() => {
                let now = meta(&path).await;
                if now.is_some() && now == seen {
                    continue;
                }
                seen = now;
                // Metadata moved (a write, a symlink swap): reload only if
                // the contents differ from what is in force.
                let Ok(text) = tokio::fs::read(&path).await else { continue };
                let digest: [u8; 32] = Sha256::digest(&text).into();
                if digest != state.policy().config.digest {
                    tracing::info!("{} changed on disk: reloading", path.display());
                    let _ = reload(&state, &path);
                }
            }
        }
    }
}

/// What identifies the file's current version cheaply: device, inode, size
/// and mtime of what the path resolves to (through any symlinks).
type Meta = (u64, u64, u64, Option<SystemTime>);

async fn meta(path: &Path) -> Option<Meta> {
    use std::os::unix::fs::MetadataExt;
    tokio::fs::metadata(path)
        .await
        .ok()
        .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok()))
}
