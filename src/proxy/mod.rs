//! The proxy listener: accept client connections and give each its own
//! task ([`handler::Conn`]). Owns the shared [`State`] that every request
//! reads, and the [`Tracker`] that shutdown waits on. The TLS listener
//! (tls.rs) shares both and hands its decrypted streams to the same handler.
//!
//! Module map, in request order: tls.rs (TLS listener only: handshake and
//! client certificate) → head.rs (read the head) → target.rs (what
//! it asks for) → handler.rs (identify, decide, resolve) → connect.rs →
//! relay.rs (CONNECT, with sni.rs) or forward.rs (absolute-form, with
//! body.rs and chunked.rs; pool.rs keeps its upstreams) → error.rs (refusals).

pub mod body;
pub mod chunked;
pub mod connect;
pub mod error;
pub mod forward;
pub mod handler;
pub mod head;
pub mod pool;
pub mod relay;
pub mod sni;
pub mod target;
pub mod tls;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use prometheus::IntGauge;
use rustls::ServerConfig;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::dns::Resolver;
use crate::policy::Policy;
use crate::shutdown::Shutdown;
use crate::telemetry::access_log::{Entry, Sink, src_text};
use crate::telemetry::metrics::Metrics;

/// A client connection's byte stream: plain TCP, or TLS on the TLS
/// listener. Plain TCP exposes itself so tunnels can take the lean path.
pub trait ClientIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {
    /// The socket itself, when the stream is plain TCP.
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        None
    }
}

impl ClientIo for TcpStream {
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        Some(self)
    }
}

/// What every request reads: the current policy (swapped whole on reload),
/// the resolver, metrics and the access log; and, when the TLS listener
/// runs, its server configuration (also swapped on reload).
#[derive(Debug)]
pub struct State {
    policy: ArcSwap<Policy>,
    tls: ArcSwapOption<ServerConfig>,
    pub resolver: Resolver,
    pub metrics: Metrics,
    pub log: Sink,
    /// Idle upstream connections for absolute-form requests.
    pub upstreams: Arc<pool::Pool>,
}

impl State {
    pub fn new(policy: Arc<Policy>, resolver: Resolver, metrics: Metrics, log: Sink) -> State {
        State {
            policy: ArcSwap::new(policy),
            tls: ArcSwapOption::empty(),
            resolver,
            metrics,
            log,
            upstreams: pool::Pool::start(),
        }
    }

    /// A snapshot of the policy. Requests hold it for their whole life, so a
    /// reload applies to new requests and never changes one half-way.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Installs a new policy for new requests.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        self.policy.store(policy);
    }

    /// The TLS listener's server configuration (certificate, key, client
    /// CA) for the next handshake; `None` when no TLS listener runs.
    pub fn tls(&self) -> Option<Arc<ServerConfig>> {
        self.tls.load_full()
    }

    /// Installs TLS material for new handshakes; sessions already
    /// established keep the one they were made with.
    pub fn set_tls(&self, tls: Arc<ServerConfig>) {
        self.tls.store(Some(tls));
    }
}

/// Counts open client connections; shutdown waits for it to reach zero.
#[derive(Debug, Default)]
pub struct Tracker {
    open: AtomicUsize,
    idle: Notify,
}

/// Held by a connection's task; dropping it releases the slot.
#[derive(Debug)]
pub struct Slot {
    tracker: Arc<Tracker>,
    /// `sluice_connections_active`, the one series a slot touches (the
    /// whole `Metrics` would be a dozen reference counts per connection,
    /// and a dozen words in every connection's task).
    active: IntGauge,
}

impl Tracker {
    /// Takes a slot unless `max` connections are already open.
    pub fn acquire(self: &Arc<Self>, max: usize, metrics: &Metrics) -> Option<Slot> {
        let mut n = self.open.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match self
                .open
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        metrics.connections_active.inc();
        Some(Slot {
            tracker: self.clone(),
            active: metrics.connections_active.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.dec();
        if self.tracker.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

/// Accepts connections on `listener` until sluice drains.
///
/// Connection tasks see the drain too (kept-alive connections close between
/// requests) and are cancelled outright when sluice is killed.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tracker: Arc<Tracker>,
    shutdown: Arc<Shutdown>,
) {
    let listener = Listener::new(listener);
    let mut draining = std::pin::pin!(shutdown.draining());
    while let Some((stream, peer)) = listener.accept(draining.as_mut()).await {
        let max = state.policy().config.limits.max_connections;
        match tracker.acquire(max, &state.metrics) {
            Some(slot) => {
                let (state, shutdown) = (state.clone(), shutdown.clone());
                // The connection is made inside the task: made outside,
                // it would be kept in the task's future both as a capture
                // and inside `serve`'s (176 bytes per connection).
                tokio::spawn(async move {
                    {
                        let conn = handler::Conn::new(state, stream, peer, None, shutdown.clone());
                        let serve = std::pin::pin!(conn.serve());
                        shutdown.guard(serve).await;
                        // `serve` ends here: its client socket closes and its
                        // log line is handed over before the slot frees,
                        // so a drain that sees no slots has seen them all.
                    }
                    drop(slot);
                });
            }
            None => {
                tokio::spawn(over_limit(state.clone(), stream, peer, None));
            }
        }
    }
}

/// Answers 503 to a connection beyond `limits.max_connections`. The log
/// names the agent its certificate (`spiffe`, TLS listener) or source
/// address points to, if any: there is no head to read a token from.
async fn over_limit<S: AsyncWrite + Unpin>(
    state: Arc<State>,
    mut stream: S,
    peer: SocketAddr,
    spiffe: Option<&str>,
) {
    let policy = state.policy();
    let err = error::ProxyError::ConnectionLimit;
    let mut log = Entry::new(&state.log, src_text(peer));
    log.record.decision = err.decision();
    log.record.reason = Some(err.reason());
    log.record.status = Some(503);
    let evidence = crate::identity::Evidence {
        peer: peer.ip(),
        spiffe_id: spiffe,
        proxy_authorization: None,
    };
    if let Ok(who) = policy.identities.identify(&evidence) {
        log.record.agent = Some(policy.agent(who.agent).name.clone());
    }
    let cx = error::Context {
        agent: None,
        authority: None,
        rule: None,
        peer: peer.ip(),
        head_limit: policy.config.limits.head_size,
    };
    let _ = stream.write_all(&err.response(&cx, false)).await;
    let _ = stream.shutdown().await;
    log.finish().await;
}

/// A proxy listener. Its connections come with TCP_NODELAY set: requests
/// and TLS records are small and latency-bound, and Nagle would only delay
/// them.
pub struct Listener {
    inner: TcpListener,
    /// The accepted sockets inherit TCP_NODELAY from the listener (Linux
    /// copies it into each connection), which saves a `setsockopt` per
    /// connection. Elsewhere, or if setting it failed, each gets its own.
    inherits_nodelay: bool,
}

impl Listener {
    pub fn new(inner: TcpListener) -> Listener {
        let inherits_nodelay = cfg!(any(target_os = "linux", target_os = "android"))
            && rustix::net::sockopt::set_tcp_nodelay(&inner, true).is_ok();
        Listener {
            inner,
            inherits_nodelay,
        }
    }

    /// The next client connection, or `None` once `draining` resolves.
    pub async fn accept(
        &self,
        mut draining: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            tokio::select! {
                accepted = self.inner.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if !self.inherits_nodelay {
                            let _ = stream.set_nodelay(true);
                        }
                        return Some((stream, peer));
                    }
                    Err(e) => {
                        // EMFILE and friends: keep serving the connections
                        // we have; the next accept may succeed.
                        tracing::warn!("accept failed on {:?}: {e}", self.inner.local_addr().ok());
                        tokio::task::yield_now().await;
                    }
                },
                () = &mut draining => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whichever way it gets there (inherited from the listener, or set on
    /// each connection), every accepted connection has TCP_NODELAY.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let bound = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = bound.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let listener = Listener::new(bound);
        let never = std::pin::pin!(std::future::pending::<()>());
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept(never));
        let _client = client.unwrap_or_else(|e| panic!("{e}"));
        let (stream, _) = accepted.unwrap_or_else(|| panic!("no connection"));
        assert!(stream.nodelay().unwrap_or_else(|e| panic!("{e}")));
    }

    #[tokio::test]
    async fn accept_returns_none_once_draining() {
        let bound = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = Listener::new(bound);
        let drained = std::pin::pin!(std::future::ready(()));
        assert!(listener.accept(drained).await.is_none());
    }
}
