//! DNS: sluice's own resolver. The only module that knows hickory.
//!
//! Every name is looked up as a fully-qualified name (no search domains: an
//! allow rule for `api` must not quietly become `api.corp.internal`), for A
//! and AAAA at once, through a cache that honours the records' TTLs. The
//! caller gets every address the server returned; deciding which may be
//! dialled is policy's job, and the proxy then dials only those — it never
//! asks again between the check and the connect.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

use crate::config::DnsConfig;
use crate::host::Name;

/// Upper bound on how long an answer is cached, whatever its TTL says: a
/// day-long TTL should not pin a stale address for a day.
const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

/// How many names the cache holds. One entry per (name, type).
const CACHE_SIZE: u64 = 8192;

/// Why a lookup failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// The server answered without addresses: NXDOMAIN, NOERROR with no
    /// data, SERVFAIL, REFUSED... `rcode` is the mnemonic.
    #[error("{rcode}")]
    Rcode { rcode: &'static str },
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Anything else (no usable name server, IO errors).
    #[error("{0}")]
    Other(String),
}

impl DnsError {
    /// The `sluice_dns_errors_total{kind}` label.
    pub fn kind(&self) -> &'static str {
        match self {
            DnsError::Rcode { rcode } => match *rcode {
                "NXDOMAIN" => "nxdomain",
                "NOERROR" => "nodata",
                "SERVFAIL" => "servfail",
                "REFUSED" => "refused",
                _ => "rcode",
            },
            DnsError::Timeout => "timeout",
            DnsError::Other(_) => "other",
        }
    }
}

/// The resolver. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    hot: Arc<HotCache>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// Builds a resolver from `[dns]`: the configured name servers, else the
    /// system's resolv.conf (its search domains and ndots are ignored).
    pub fn new(cfg: &DnsConfig) -> Result<Resolver, DnsError> {
        let config = match &cfg.nameservers {
            Some(list) => {
                ResolverConfig::from_parts(None, vec![], list.iter().map(name_server).collect())
            }
            None => {
                let (system, _) =
                    hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                        DnsError::Other(format!("cannot read the system's DNS configuration: {e}"))
                    })?;
                ResolverConfig::from_parts(None, vec![], system.name_servers)
            }
        };
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let opts = builder.options_mut();
        opts.timeout = cfg.timeout;
        // `attempts` counts retries: none, so `dns.timeout` bounds the whole lookup.
        opts.attempts = 0;
        opts.ndots = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.cache_size = CACHE_SIZE;
        opts.positive_max_ttl = Some(MAX_CACHE_TTL);
        opts.negative_max_ttl = Some(Duration::from_secs(30));
        opts.use_hosts_file = if cfg.hosts_file {
            ResolveHosts::Always
        } else {
            ResolveHosts::Never
        };
        let inner = builder
            .build()
            .map_err(|e| DnsError::Other(format!("cannot build the resolver: {e}")))?;
        Ok(Resolver {
            inner,
            hot: Arc::new(HotCache::new()),
        })
    }

    /// Looks `name` up (A and AAAA). An empty answer is an error, never an
    /// empty list. A cache hit shares the cached list rather than copying it.
    pub async fn resolve(&self, name: &Name) -> Result<Arc<[IpAddr]>, DnsError> {
        if let Some(ips) = self.hot.get(name, Instant::now()) {
            return Ok(ips);
        }
        let fqdn = format!("{}.", name.as_str());
        let lookup = self
            .inner
            .lookup_ip(fqdn.as_str())
            .await
            .map_err(classify)?;
        let ips: Arc<[IpAddr]> = lookup.iter().collect();
        if ips.is_empty() {
            return Err(DnsError::Rcode { rcode: "NOERROR" });
        }
        // valid_until already honours the records' TTLs (capped at
        // MAX_CACHE_TTL); a TTL of 0 is never reused.
        self.hot.put(name, &ips, lookup.valid_until());
        Ok(ips)
    }
}

/// A front for hickory's cache: positive answers by name, in shards so that
/// concurrent requests for different names never wait on one lock, and a
/// hit costs one hash and a short critical section instead of a trip
/// through the resolver's lookup machinery.
struct HotCache {
    shards: Box<[Mutex<HashMap<Name, Cached>>]>,
    hasher: RandomState,
}

struct Cached {
    ips: Arc<[IpAddr]>,
    until: Instant,
}

/// Shards: enough that two cores rarely meet on one lock.
const SHARDS: usize = 16;
/// Names per shard; a full shard drops its expired entries, then everything.
const PER_SHARD: usize = 1024;

impl HotCache {
    fn new() -> HotCache {
        HotCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, name: &Name) -> &Mutex<HashMap<Name, Cached>> {
        let i = (self.hasher.hash_one(name) as usize) % self.shards.len();
        &self.shards[i]
    }

    fn get(&self, name: &Name, now: Instant) -> Option<Arc<[IpAddr]>> {
        // A poisoned shard only means a panic elsewhere mid-insert; the map
        // itself is still sound.
        let shard = self.shard(name).lock().unwrap_or_else(|p| p.into_inner());
        shard
            .get(name)
            .filter(|c| c.until > now)
            .map(|c| c.ips.clone())
    }

    fn put(&self, name: &Name, ips: &Arc<[IpAddr]>, until: Instant) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut shard = self.shard(name).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= PER_SHARD {
            shard.retain(|_, c| c.until > now);
            if shard.len() >= PER_SHARD {
                shard.clear();
            }
        }
        shard.insert(
            name.clone(),
            Cached {
                ips: ips.clone(),
                until,
            },
        );
    }
}

fn name_server(addr: &SocketAddr) -> NameServerConfig {
    let conn = |mut c: ConnectionConfig| {
        c.port = addr.port();
        c
    };
    NameServerConfig::new(
        addr.ip(),
        true,
        vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
    )
}

fn classify(e: NetError) -> DnsError {
    match e {
        NetError::Timeout => DnsError::Timeout,
        NetError::Dns(HDnsError::NoRecordsFound(nr)) => DnsError::Rcode {
            rcode: rcode_name(nr.response_code),
        },
        NetError::Dns(HDnsError::ResponseCode(code)) => DnsError::Rcode {
            rcode: rcode_name(code),
        },
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => DnsError::Timeout,
        other => DnsError::Other(other.to_string()),
    }
}

fn rcode_name(code: ResponseCode) -> &'static str {
    match u16::from(code) {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "OTHER",
    }
}
