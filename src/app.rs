//! `sluice run`: wiring only. Load the TLS material, bind the listeners,
//! build the shared state, start the proxy (plain and TLS), admin and reload
//! tasks, and on shutdown drain: readiness off, stop accepting, let open
//! connections finish within `limits.shutdown_grace`, cancel the rest, flush
//! the access log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::dns::Resolver;
use crate::policy::Policy;
use crate::proxy::{self, State, Tracker};
use crate::shutdown::Shutdown;
use crate::telemetry::{access_log, metrics::Metrics};

/// Why `run` could not start or stopped badly (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the access log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TLS listener's certificate, key or client CA (the message names the file).
    #[error("tls: {0}")]
    Tls(#[source] ConfigError),
    #[error("dns: {0}")]
    Dns(#[from] crate::dns::DnsError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// In-process options that are not configuration (tests use them).
#[derive(Debug, Default)]
pub struct Options {
    /// Receives a copy of every access-log line.
    pub log_tap: Option<mpsc::UnboundedSender<String>>,
    /// Write access-log lines only to `log_tap`, not to `log.path`/stdout.
    pub log_tap_only: bool,
}

/// A running sluice.
#[derive(Debug)]
pub struct Running {
    pub proxy_addr: SocketAddr,
    /// The TLS listener's address, when `proxy.tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub state: Arc<State>,
    shutdown: Arc<Shutdown>,
    ready: Arc<AtomicBool>,
    tracker: Arc<Tracker>,
    tasks: Vec<JoinHandle<()>>,
    writer: access_log::Writer,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the grace period.
    Graceful,
    /// The grace period ran out; this many connections were cut.
    Forced(usize),
}

/// Binds and starts everything for `config`.
pub async fn start(config: Config, opts: Options) -> Result<Running, AppError> {
    let config = Arc::new(config);
    let metrics = Metrics::new()?;
    // TLS material first: a bad certificate must fail before any socket is bound.
    let tls = match &config.tls {
        Some(tls) if config.proxy.tls_listen.is_some() => {
            Some(crate::proxy::tls::server_config(tls).map_err(AppError::Tls)?)
        }
        _ => None,
    };
    let listeners = Listeners::bind(&config, tls.is_some()).await?;
    let (log, writer) = open_log(&config, &opts, &metrics)?;
    let resolver = Resolver::new(&config.dns)?;
    let policy = Arc::new(Policy::new(config.clone()));
    metrics.last_reload_success.set(unix_now());
    let state = Arc::new(State::new(policy, resolver, metrics.clone(), log));
    if let Some(server_config) = tls {
        state.set_tls(server_config);
    }

    let shutdown = Arc::new(Shutdown::default());
    let ready = Arc::new(AtomicBool::new(false));
    let tracker = Arc::new(Tracker::default());
    let mut tasks = vec![
        tokio::spawn(proxy::serve(
            listeners.proxy,
            state.clone(),
            tracker.clone(),
            shutdown.clone(),
        )),
        // The admin listener outlives the drain, so /readyz can say 503 during it.
        tokio::spawn(crate::admin::serve(
            listeners.admin,
            metrics,
            ready.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(crate::reload::watch(
            state.clone(),
            config.path.clone(),
            shutdown.clone(),
        )),
    ];
    if let Some(listener) = listeners.tls {
        tasks.push(tokio::spawn(proxy::tls::serve(
            listener,
            state.clone(),
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    ready.store(true, Ordering::Release);
    let Addrs { proxy, tls, admin } = listeners.addrs;
    tracing::info!(proxy = %proxy, tls = ?tls, admin = %admin, agents = config.agents.len(), "sluice is serving");
    Ok(Running {
        proxy_addr: proxy,
        tls_addr: tls,
        admin_addr: admin,
        state,
        shutdown,
        ready,
        tracker,
        tasks,
        writer,
    })
}

/// The sockets sluice serves on, bound before anything is spawned.
struct Listeners {
    proxy: TcpListener,
    admin: TcpListener,
    /// Present when `proxy.tls_listen` is set.
    tls: Option<TcpListener>,
    addrs: Addrs,
}

/// Where the listeners ended up (port 0 in the config means any port).
struct Addrs {
    proxy: SocketAddr,
    tls: Option<SocketAddr>,
    admin: SocketAddr,
}

impl Listeners {
    /// Binds the proxy and admin listeners, and the TLS listener when
    /// `with_tls` (its server configuration was built).
    async fn bind(config: &Config, with_tls: bool) -> Result<Listeners, AppError> {
        let bind = |what: &'static str, addr: SocketAddr| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Bind { what, addr, source })?;
            let bound = local_addr(&listener, addr);
            Ok::<_, AppError>((listener, bound))
        };
        let (proxy, proxy_addr) = bind("the proxy listener", config.proxy.listen).await?;
        let (admin, admin_addr) = bind("the admin listener", config.admin.listen).await?;
        let (tls, tls_addr) = match config.proxy.tls_listen {
            Some(addr) if with_tls => {
                let (listener, bound) = bind("the TLS proxy listener", addr).await?;
                (Some(listener), Some(bound))
            }
            _ => (None, None),
        };
        Ok(Listeners {
            proxy,
            admin,
            tls,
            addrs: Addrs {
                proxy: proxy_addr,
                tls: tls_addr,
                admin: admin_addr,
            },
        })
    }
}

/// Opens the access log where the config (or a test) says, and starts its
/// writer.
fn open_log(
    config: &Config,
    opts: &Options,
    metrics: &Metrics,
) -> Result<(access_log::Sink, access_log::Writer), AppError> {
    let output = match (&config.log.path, opts.log_tap_only) {
        (_, true) => access_log::Output::TapOnly,
        (Some(p), false) => access_log::Output::File(p),
        (None, false) => access_log::Output::Stdout,
    };
    access_log::open(output, metrics.clone(), opts.log_tap.clone()).map_err(|source| {
        AppError::Log {
            path: config.log.path.clone().unwrap_or_else(|| "stdout".into()),
            source,
        }
    })
}

fn local_addr(l: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    l.local_addr().unwrap_or(fallback)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Running {
    /// Re-reads the configuration file now (what SIGHUP does).
    pub fn reload(&self) -> Result<(), ConfigError> {
        crate::reload::reload(&self.state, &self.state.policy().config.path)
    }

    /// Drains and stops: readiness off, listeners closed, open connections
    /// given `limits.shutdown_grace` (or `grace` if given), the access log
    /// flushed. Every request that happened has its line when this returns.
    ///
    /// `force` cuts the grace period short (a second signal): open
    /// connections are cut at once, and their lines are still written.
    pub async fn shutdown(self, grace: Option<Duration>, force: impl Future<Output = ()>) -> Drain {
        let grace = grace.unwrap_or(self.state.policy().config.limits.shutdown_grace);
        self.ready.store(false, Ordering::Release);
        self.shutdown.drain();
        let drain = tokio::select! {
            res = tokio::time::timeout(grace, self.tracker.drained()) => match res {
                Ok(()) => Drain::Graceful,
                Err(_) => Drain::Forced(self.tracker.open()),
            },
            () = force => Drain::Forced(self.tracker.open()),
        };
        // Whatever is still open now is cut: its task is cancelled, and its
        // access-log entry is written from Drop on the way out.
        self.shutdown.kill();
        self.tracker.drained().await;
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        // The writer exits once the last Sink is gone, after flushing.
        drop(self.state);
        self.writer.finish().await;
        drain
    }
}
