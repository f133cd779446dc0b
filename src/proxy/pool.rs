//! Kept-alive upstream connections for absolute-form requests, shared by
//! every client connection of an agent: a client that opens a connection
//! per request (curl, most scripts) still reaches the origin over a warm
//! one, without a TCP handshake and teardown each time.
//!
//! A connection is keyed by agent, host and port, and handed out only for a
//! request whose vetted addresses include the one it is connected to, so
//! pooling never widens what policy allows. Connections are never shared
//! between agents: if one exchange ever left an origin connection out of
//! step, the next response could only reach the same agent.
//!
//! The map is split into shards, each behind a mutex held for a few vector
//! operations and never across an await. Idle connections expire after
//! [`IDLE_FOR`]; a sweeper closes expired ones that no request asks for.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::host::Host;

/// How long an upstream connection may sit idle in the pool. Origins
/// commonly close idle connections after 5–75 s; one they closed is noticed
/// when it is taken (and a safe request sent on it anyway is retried).
pub const IDLE_FOR: Duration = Duration::from_secs(30);
/// Idle connections kept per (agent, host, port): enough for a burst of
/// concurrent clients, few enough not to hoard an origin's sockets.
const PER_KEY: usize = 8;
/// Idle connections kept in all: a bound on descriptors and memory.
const TOTAL: usize = 4096;
const SHARDS: usize = 16;

/// An upstream connection between requests.
#[derive(Debug)]
pub struct Upstream {
    pub stream: TcpStream,
    /// The address it is connected to, as dialled.
    pub addr: SocketAddr,
    /// Its read buffer: empty whenever it is pooled.
    pub buf: BytesMut,
}

#[derive(Debug)]
struct Key {
    agent: Arc<str>,
    host: Host,
    port: u16,
}

/// A key as a lookup sees it: borrowed parts, so that taking or keeping a
/// connection looks its list up without building (allocating) a [`Key`].
trait View {
    fn parts(&self) -> (&str, &Host, u16);
}

impl View for Key {
    fn parts(&self) -> (&str, &Host, u16) {
        (&self.agent, &self.host, self.port)
    }
}

impl View for (&str, &Host, u16) {
    fn parts(&self) -> (&str, &Host, u16) {
        *self
    }
}

impl Hash for dyn View + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn View + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn View + '_ {}

impl<'a> Borrow<dyn View + 'a> for Key {
    fn borrow(&self) -> &(dyn View + 'a) {
        self
    }
}

// The map hashes a stored key and a lookup the same way: both as their parts.
impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for Key {}

#[derive(Debug)]
struct Idle {
    conn: Upstream,
    since: Instant,
}

type Shard = Mutex<HashMap<Key, Vec<Idle>>>;

#[derive(Debug)]
pub struct Pool {
    shards: Box<[Shard]>,
    /// Picks a key's shard (keyed, like the maps inside).
    hasher: RandomState,
    idle: AtomicUsize,
    /// How long a connection may stay idle ([`IDLE_FOR`] but in tests).
    idle_for: Duration,
}

impl Pool {
    fn new(idle_for: Duration) -> Pool {
        Pool {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            idle: AtomicUsize::new(0),
            idle_for,
        }
    }
}

impl Pool {
    /// A pool, and its sweeper on the current runtime: every half [`IDLE_FOR`]
    /// it closes connections idle for longer. The sweeper holds the pool
    /// weakly and stops once the pool is gone.
    pub fn start() -> Arc<Pool> {
        let pool = Arc::new(Pool::new(IDLE_FOR));
        let weak = Arc::downgrade(&pool);
        tokio::spawn(sweep(weak));
        pool
    }

    /// The most recently used idle connection to `host:port` for `agent`
    /// whose address is among `vetted`, if one is still open.
    pub fn take(
        &self,
        agent: &Arc<str>,
        host: &Host,
        port: u16,
        vetted: &[IpAddr],
    ) -> Option<Upstream> {
        let key: &dyn View = &(&**agent, host, port);
        loop {
            let idle = {
                let mut shard = self.shard(key);
                let list = shard.get_mut(key)?;
                let i = list
                    .iter()
                    .rposition(|c| vetted.contains(&c.conn.addr.ip()))?;
                // An emptied list stays for the next `put` (no allocation
                // per request); the sweeper removes it once it is stale.
                list.remove(i)
            };
            self.idle.fetch_sub(1, Ordering::Relaxed);
            if idle.since.elapsed() < self.idle_for && still_open(&idle.conn.stream) {
                return Some(idle.conn);
            }
            // Expired or closed by the origin: drop it and look again.
        }
    }

    /// Keeps `conn` for the next request of `agent` to `host:port`. When
    /// that key already holds [`PER_KEY`] connections the oldest is closed;
    /// when the pool is full, `conn` is.
    pub fn put(&self, agent: &Arc<str>, host: &Host, port: u16, conn: Upstream) {
        if !conn.buf.is_empty() || self.idle.load(Ordering::Relaxed) >= TOTAL {
            return;
        }
        let key: &dyn View = &(&**agent, host, port);
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        let evicted = {
            let mut shard = self.shard(key);
            match shard.get_mut(key) {
                Some(list) => {
                    list.push(idle);
                    (list.len() > PER_KEY).then(|| list.remove(0))
                }
                None => {
                    let key = Key {
                        agent: agent.clone(),
                        host: host.clone(),
                        port,
                    };
                    shard.insert(key, vec![idle]);
                    None
                }
            }
        };
        if evicted.is_none() {
            self.idle.fetch_add(1, Ordering::Relaxed);
        }
        // `evicted` is closed here, outside the lock.
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection idle for `idle_for` or longer.
    fn expire(&self) {
        for shard in &self.shards {
            let expired: Vec<Idle> = {
                let mut map = lock(shard);
                let mut out = Vec::new();
                map.retain(|_, list| {
                    let (old, fresh): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                        .into_iter()
                        .partition(|c| c.since.elapsed() >= self.idle_for);
                    out.extend(old);
                    *list = fresh;
                    !list.is_empty()
                });
                out
            };
            self.idle.fetch_sub(expired.len(), Ordering::Relaxed);
        }
    }

    fn shard(&self, key: &dyn View) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
        lock(&self.shards[self.hasher.hash_one(key) as usize % SHARDS])
    }
}

/// A poisoned shard only means a panic elsewhere mid-update of plain data:
/// the map is still sound, so keep using it.
fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Idle>>> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An idle upstream must have nothing to say: a byte or EOF means the
/// origin closed it (or broke framing); only "would block" is healthy.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn sweep(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(IDLE_FOR / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An origin listening on loopback, and its port.
    async fn origin() -> (TcpListener, u16) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        (listener, port)
    }

    /// A loopback connection and the origin's end of it.
    async fn pair(listener: &TcpListener) -> (Upstream, TcpStream) {
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (origin, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let conn = Upstream {
            stream,
            addr,
            buf: BytesMut::new(),
        };
        (conn, origin)
    }

    impl Pool {
        /// Keys with a list, empty or not.
        fn keys(&self) -> usize {
            self.shards.iter().map(|s| lock(s).len()).sum()
        }
    }

    fn host(name: &str) -> Host {
        Host::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_connection_goes_back_only_to_its_agent_host_port_and_vetted_address() {
        let (listener, port) = origin().await;
        let pool = Pool::new(IDLE_FOR);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let api = host("api.example.com");
        let loopback = [IpAddr::from([127, 0, 0, 1])];
        let (conn, _origin) = pair(&listener).await;
        pool.put(&a, &api, port, conn);
        assert_eq!(pool.len(), 1);
        assert!(
            pool.take(&b, &api, port, &loopback).is_none(),
            "another agent"
        );
        assert!(
            pool.take(&a, &host("other.example.com"), port, &loopback)
                .is_none()
        );
        assert!(
            pool.take(&a, &api, port.wrapping_add(1), &loopback)
                .is_none()
        );
        let elsewhere = [IpAddr::from([127, 0, 0, 2])];
        assert!(
            pool.take(&a, &api, port, &elsewhere).is_none(),
            "not vetted now"
        );
        let conn = pool.take(&a, &api, port, &loopback);
        assert!(conn.is_some());
        assert!(pool.is_empty());
        // Its emptied list waits for the next put, which reuses it ...
        pool.put(&a, &api, port, conn.unwrap_or_else(|| unreachable!()));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.keys(), 1);
        // ... and is swept once nothing is left in it.
        assert!(pool.take(&a, &api, port, &loopback).is_some());
        pool.expire();
        assert_eq!(pool.keys(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_origin_closed_or_that_idled_too_long_is_not_handed_out() {
        let (listener, port) = origin().await;
        let pool = Pool::new(IDLE_FOR);
        let a: Arc<str> = "a".into();
        let api = host("api.example.com");
        let loopback = [IpAddr::from([127, 0, 0, 1])];

        let (conn, origin) = pair(&listener).await;
        drop(origin);
        // Once the runtime has seen the origin's FIN, the pool must too.
        conn.stream
            .readable()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        pool.put(&a, &api, port, conn);
        assert!(
            pool.take(&a, &api, port, &loopback).is_none(),
            "closed by the origin"
        );
        assert!(pool.is_empty(), "and dropped");

        let at_once = Pool::new(Duration::ZERO);
        let (conn, _origin) = pair(&listener).await;
        at_once.put(&a, &api, port, conn);
        assert!(at_once.take(&a, &api, port, &loopback).is_none(), "expired");
        let (conn, _origin) = pair(&listener).await;
        at_once.put(&a, &api, port, conn);
        at_once.expire();
        assert!(at_once.is_empty(), "swept");
    }

    #[tokio::test]
    async fn each_key_keeps_at_most_per_key_connections() {
        let (listener, port) = origin().await;
        let pool = Pool::new(IDLE_FOR);
        let a: Arc<str> = "a".into();
        let api = host("api.example.com");
        let mut origins = Vec::new();
        for _ in 0..PER_KEY + 3 {
            let (conn, origin) = pair(&listener).await;
            origins.push(origin);
            pool.put(&a, &api, port, conn);
        }
        assert_eq!(pool.len(), PER_KEY);
    }
}
