//! Reloading the configuration: on SIGHUP, and when the file changes on
//! disk — including a Kubernetes ConfigMap update, which swaps a `..data`
//! symlink instead of writing the file, so we watch what the path resolves
//! to (inode, size, mtime) and compare contents.
//!
//! A new file is parsed and compiled whole, off the request path, and then
//! swapped in atomically; an invalid one changes nothing (the old policy
//! stays, the error is logged with file:line:col and counted). Requests
//! already running keep the policy they started with.
//!
//! The TLS listener's certificate, key and client CA are re-read on every
//! reload, in the same step: a file that is missing or unusable rejects
//! the reload whole, like an invalid config. New handshakes use the new
//! material; established TLS sessions keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;

use crate::config::{Config, ConfigError};
use crate::policy::Policy;
use crate::proxy::{self, State};
use crate::shutdown::Shutdown;

/// How often the file is checked. A stat every second is negligible, and
/// keeps a ConfigMap change effective within the kubelet's own sync delay.
const POLL: Duration = Duration::from_secs(1);

/// Loads `path` and installs it; on error nothing changes.
pub fn reload(state: &State, path: &Path) -> Result<(), ConfigError> {
    let m = &state.metrics;
    let old = state.policy();
    match load(state, path) {
        Ok((config, tls)) => {
            warn_restart_needed(&old.config, &config);
            let agents = config.agents.len();
            state.set_policy(Arc::new(Policy::new(Arc::new(config)).inherit(&old)));
            if let Some(tls) = tls {
                state.set_tls(tls);
            }
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

/// The config and, when a TLS listener runs and the new config still names
/// one, its freshly read TLS material.
fn load(state: &State, path: &Path) -> Result<(Config, Option<Arc<ServerConfig>>), ConfigError> {
    let config = Config::load(path)?;
    let tls = match (&config.tls, config.proxy.tls_listen, state.tls()) {
        (Some(tls), Some(_), Some(_)) => Some(proxy::tls::server_config(tls)?),
        _ => None,
    };
    Ok((config, tls))
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

/// Reloads on SIGHUP and on file changes until sluice drains. The
/// files watched are the config and, while a TLS listener runs, the TLS
/// files it names: a rotated certificate (e.g. a Secret updated by
/// cert-manager) reloads without touching the config.
///
/// The first snapshot is taken here, before the returned future first runs,
/// so that a file changed right after `app::start` returns is seen as a change.
pub fn watch(
    state: Arc<State>,
    path: PathBuf,
    shutdown: Arc<Shutdown>,
) -> impl Future<Output = ()> + Send {
    let seen = Snapshot::now(watched(&state, &path));
    watch_from(seen, state, path, shutdown)
}

async fn watch_from(mut seen: Snapshot, state: Arc<State>, path: PathBuf, shutdown: Arc<Shutdown>) {
    let mut draining = std::pin::pin!(shutdown.draining());
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot listen for SIGHUP ({e}); reloads follow file changes only");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut draining => return,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading {}", path.display());
                seen = Snapshot::of(watched(&state, &path)).await;
                let _ = reload(&state, &path);
            }
            _ = tick.tick() => {
                let files = watched(&state, &path);
                if !seen.moved(&files).await {
                    continue;
                }
                let now = Snapshot::of(files).await;
                let changed = now.changed_since(&seen);
                seen = now;
                if let Some(file) = changed {
                    tracing::info!("{} changed on disk: reloading {}", file.display(), path.display());
                    let _ = reload(&state, &path);
                }
            }
        }
    }
}

/// The files a reload reads: the config, and the TLS files of the policy
/// in force when a TLS listener runs. After a reload that names other TLS
/// files the list changes, which counts as a change once (a harmless
/// extra reload).
fn watched(state: &State, path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_owned()];
    if state.tls().is_some() {
        if let Some(tls) = &state.policy().config.tls {
            files.extend([tls.cert.clone(), tls.key.clone(), tls.client_ca.clone()]);
        }
    }
    files
}

/// What identifies a file's current version: metadata first (cheap), and
/// the contents, re-read only when the metadata moved.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    meta: Option<(u64, u64, u64, Option<SystemTime>)>,
    content: Option<Vec<u8>>,
}

async fn meta(path: &Path) -> Option<(u64, u64, u64, Option<SystemTime>)> {
    use std::os::unix::fs::MetadataExt;
    tokio::fs::metadata(path)
        .await
        .ok()
        .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok()))
}

impl Fingerprint {
    async fn of(path: &Path) -> Fingerprint {
        Fingerprint {
            meta: meta(path).await,
            content: tokio::fs::read(path).await.ok(),
        }
    }
}

/// Fingerprints of every watched file, in [`watched`] order.
#[derive(Debug)]
struct Snapshot(Vec<(PathBuf, Fingerprint)>);

impl Snapshot {
    /// Blocking, for the first snapshot at start (where the config and TLS
    /// files were just read synchronously anyway).
    fn now(files: Vec<PathBuf>) -> Snapshot {
        use std::os::unix::fs::MetadataExt;
        let prints = files
            .into_iter()
            .map(|f| {
                let print = Fingerprint {
                    meta: std::fs::metadata(&f)
                        .ok()
                        .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok())),
                    content: std::fs::read(&f).ok(),
                };
                (f, print)
            })
            .collect();
        Snapshot(prints)
    }

    async fn of(files: Vec<PathBuf>) -> Snapshot {
        let mut prints = Vec::with_capacity(files.len());
        for f in files {
            let print = Fingerprint::of(&f).await;
            prints.push((f, print));
        }
        Snapshot(prints)
    }

    /// Whether `files` differ from the snapshot's, or any one's metadata moved.
    async fn moved(&self, files: &[PathBuf]) -> bool {
        if self.0.len() != files.len() || self.0.iter().zip(files).any(|((p, _), f)| p != f) {
            return true;
        }
        for (p, print) in &self.0 {
            if meta(p).await != print.meta {
                return true;
            }
        }
        false
    }

    /// The first file whose contents differ from `before` (or that is new).
    fn changed_since(&self, before: &Snapshot) -> Option<PathBuf> {
        self.0
            .iter()
            .enumerate()
            .find_map(|(i, (p, print))| match before.0.get(i) {
                Some((q, old)) if q == p && old.content == print.content => None,
                _ => Some(p.clone()),
            })
    }
}
