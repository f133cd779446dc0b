//! The workloads, each bounded in time (and count) and measured the same
//! way: sluice's CPU time (all its threads) and the load side's, read from
//! /proc before and after, divided by the work done; latencies as the
//! client sees them.
//!
//! 1. [`tunnels`]: new CONNECT tunnel + one small exchange + close.
//! 2. [`keepalive`]: small requests on a few long-lived tunnels, back to
//!    back; and [`keepalive_paced`]: the same at a fixed rate (open loop).
//! 3. [`absolute`]: absolute-form `GET http://…` on persistent connections,
//!    [`absolute_fresh`]: the same on a new connection each, and
//!    [`absolute_agent`]: with the head an agent's HTTP client sends.
//! 4. [`bulk`]: large downloads through a few tunnels.
//! 5. [`idle`]: many open, idle tunnels; sluice's RSS growth per tunnel;
//!    and [`idle_tls`]: the same through the TLS listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Error;
use crate::client::Conn;
use crate::procfs::{self, Cpu};

/// Concurrent clients per workload.
const TUNNEL_CLIENTS: usize = 16;
const KEEPALIVE_TUNNELS: usize = 8;
const ABSOLUTE_CLIENTS: usize = 8;
const BULK_TUNNELS: usize = 4;
/// Tunnels sharing the paced (open-loop) keep-alive load.
pub const PACED_TUNNELS: usize = 64;
/// Size of one bulk response; tunnels fetch these back to back.
const BULK_MIB: u64 = 64;
/// Upper bounds on the work of one workload, whatever its duration.
const MAX_UNITS: u64 = 10_000_000;
const MAX_BULK_MIB: u64 = 64 * 1024;
/// A client gives up after this many failures (a broken proxy should not
/// spin the benchmark for the whole duration).
const MAX_ERRORS: u64 = 100;
/// Tunnels opened concurrently by the idle workload.
const IDLE_OPENERS: usize = 64;

/// Where the load goes and for how long.
#[derive(Debug, Clone)]
pub struct Bench {
    /// sluice's proxy listener.
    pub proxy: SocketAddr,
    /// sluice's TLS listener and the client credentials for it (None when
    /// the measured proxy has none).
    pub tls: Option<(SocketAddr, Arc<crate::tls::Pki>)>,
    /// The origin as clients name it: "origin.bench:PORT" (for tinyproxy,
    /// "127.0.0.1:PORT").
    pub authority: Arc<str>,
    /// Whether the proxy keeps a client's connection open between
    /// absolute-form requests (tinyproxy does not).
    pub keeps_clients: bool,
    /// The process whose CPU time and memory are measured.
    pub sluice_pid: u32,
    /// Clock ticks per second, for /proc/PID/stat.
    pub ticks_per_s: u64,
    /// How long each timed workload runs.
    pub duration: Duration,
    /// Requests per second of the paced keep-alive workload.
    pub paced_rate: f64,
}

/// One workload's result, in the units its row of the table uses.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Units of work per second (tunnels, requests, MiB); for the idle
    /// workload, the number of tunnels held open.
    pub rate: f64,
    /// Median and 99th-percentile latency of a unit, in µs (None: not measured).
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// sluice CPU µs per unit; for the idle workload, KiB of RSS per tunnel.
    pub cost: f64,
    /// CPU time / wall time, of sluice and of the load side (1.0 = one core).
    pub sluice_busy: Option<f64>,
    pub load_busy: Option<f64>,
    /// The share of sluice's CPU time spent in user space (the rest is
    /// the kernel's: TCP, epoll, scheduling).
    pub sluice_user: Option<f64>,
    /// CPU used meanwhile by every other process on the machine (1.0 = one
    /// core): anything well above zero means the figures were disturbed.
    pub other_busy: Option<f64>,
    /// CPU time the hypervisor withheld meanwhile, all CPUs (1.0 = one
    /// core): a noisy neighbour on the host, inflating every CPU figure.
    pub steal: Option<f64>,
    /// Units completed, and units that failed (with the first failure).
    pub units: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Requests or tunnels sluice should have written an access-log line for.
    pub logged: u64,
    /// Idle workload: how long opening the tunnels took.
    pub open_secs: Option<f64>,
}

impl Measured {
    /// A row the measured proxy cannot run: "–" in every cell.
    fn not_measured() -> Measured {
        Measured {
            rate: f64::NAN,
            cost: f64::NAN,
            ..Measured::default()
        }
    }
}

/// What one client did.
#[derive(Debug, Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    units: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    logged: u64,
}

impl Tally {
    fn fail(&mut self, e: &Error) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_ns.extend(other.latencies_ns);
        self.units += other.units;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.logged += other.logged;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn running(&self, deadline: Instant) -> bool {
        Instant::now() < deadline && self.units < MAX_UNITS && self.errors < MAX_ERRORS
    }
}

/// A measurement interval: wall clock and both processes' CPU time.
struct Window {
    start: Instant,
    sluice: Cpu,
    load: Cpu,
    machine: procfs::MachineTicks,
}

/// What a window saw.
struct Spent {
    elapsed: Duration,
    sluice_ns: u64,
    load_ns: u64,
    other_ns: u64,
    steal_ns: u64,
    sluice_user: Option<f64>,
}

impl Window {
    fn open(b: &Bench) -> Result<Window, Error> {
        Ok(Window {
            sluice: Cpu::read(&b.sluice_pid.to_string())?,
            load: Cpu::read("self")?,
            machine: procfs::machine_ticks()?,
            start: Instant::now(),
        })
    }

    fn close(self, b: &Bench) -> Result<Spent, Error> {
        let elapsed = self.start.elapsed();
        let sluice = Cpu::read(&b.sluice_pid.to_string())?;
        let load = Cpu::read("self")?;
        let machine = procfs::machine_ticks()?;
        let (mut sluice_ns, stat_ns) = sluice.since(&self.sluice, b.ticks_per_s);
        // schedstat loses the time of threads that exited in between (tokio's
        // blocking pool retires idle threads); stat keeps it, at tick
        // resolution. Prefer stat only when it clearly saw more.
        let tick_ns = 1_000_000_000 / b.ticks_per_s.max(1);
        if stat_ns > sluice_ns + 3 * tick_ns && stat_ns > sluice_ns + sluice_ns / 20 {
            eprintln!(
                "  note: sluice CPU from schedstat {:.3} s < stat {:.3} s (a thread exited?); using stat",
                sluice_ns as f64 / 1e9,
                stat_ns as f64 / 1e9
            );
            sluice_ns = stat_ns;
        }
        let load_ns = load.since(&self.load, b.ticks_per_s).0;
        let machine_ns = machine.busy.saturating_sub(self.machine.busy) * tick_ns;
        Ok(Spent {
            elapsed,
            sluice_ns,
            load_ns,
            other_ns: machine_ns.saturating_sub(sluice_ns + load_ns),
            steal_ns: machine.steal.saturating_sub(self.machine.steal) * tick_ns,
            sluice_user: sluice.user_share(&self.sluice),
        })
    }
}

/// Turns a tally and a window into a row; `units` is the work done.
fn measured(t: Tally, spent: &Spent, units: f64) -> Measured {
    let secs = spent.elapsed.as_secs_f64();
    let mut lat = t.latencies_ns;
    lat.sort_unstable();
    let pct = |q: f64| {
        let i = ((lat.len() - 1) as f64 * q).round() as usize;
        lat[i] as f64 / 1e3
    };
    let (p50, p99) = if lat.is_empty() {
        (None, None)
    } else {
        (Some(pct(0.50)), Some(pct(0.99)))
    };
    Measured {
        rate: units / secs,
        p50_us: p50,
        p99_us: p99,
        cost: if units > 0.0 {
            spent.sluice_ns as f64 / 1e3 / units
        } else {
            f64::NAN
        },
        sluice_busy: Some(spent.sluice_ns as f64 / 1e9 / secs),
        load_busy: Some(spent.load_ns as f64 / 1e9 / secs),
        other_busy: Some(spent.other_ns as f64 / 1e9 / secs),
        steal: Some(spent.steal_ns as f64 / 1e9 / secs),
        sluice_user: spent.sluice_user,
        units: t.units,
        errors: t.errors,
        first_error: t.first_error,
        logged: t.logged,
        open_secs: None,
    }
}

async fn join(mut set: JoinSet<Tally>) -> Result<Tally, Error> {
    let mut all = Tally::default();
    while let Some(t) = set.join_next().await {
        all.merge(t?);
    }
    Ok(all)
}

fn small_request(authority: &str, close: bool) -> Arc<[u8]> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET /small HTTP/1.1\r\nHost: {authority}\r\n{connection}\r\n")
        .into_bytes()
        .into()
}

/// Workload 1: each unit is a new tunnel carrying one small exchange
/// (`Connection: close`), then closed. Latency: connect to last byte.
pub async fn tunnels(b: &Bench) -> Result<Measured, Error> {
    let request = small_request(&b.authority, true);
    let window = Window::open(b)?;
    let deadline = window.start + b.duration;
    let mut set = JoinSet::new();
    for _ in 0..TUNNEL_CLIENTS {
        let (b, request) = (b.clone(), request.clone());
        set.spawn(async move {
            let mut t = Tally::default();
            while t.running(deadline) {
                let started = Instant::now();
                let one = async {
                    let mut conn = Conn::tunnel(b.proxy, &b.authority).await?;
                    t.logged += 1;
                    conn.exchange(&request).await
                };
                let result = one.await;
                match result {
                    Ok(_) => {
                        t.latencies_ns.push(started.elapsed().as_nanos() as u64);
                        t.units += 1;
                    }
                    Err(e) => t.fail(&e),
                }
            }
            t
        });
    }
    let tally = join(set).await?;
    let spent = window.close(b)?;
    let units = tally.units as f64;
    Ok(measured(tally, &spent, units))
}

/// Opens `n` connections with `open`, each having done one exchange of
/// `request` so that everything lazy on both sides has happened.
async fn prepared<F, Fut>(n: usize, request: &Arc<[u8]>, open: F) -> Result<Vec<Conn>, Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Conn, Error>>,
{
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut conn = open().await?;
        conn.exchange(request).await?;
        conns.push(conn);
    }
    Ok(conns)
}

/// When each connection sends: back to back, or at a fixed total rate.
#[derive(Clone, Copy)]
enum Load {
    Closed,
    /// Requests per second over all the connections (open loop).
    Paced(f64),
}

/// One connection's schedule under [`Load::Paced`]: request `i` of the
/// whole load is due `i / rate` into the window, round-robin over the
/// connections.
struct Pace {
    due: Instant,
    every: Duration,
}

impl Pace {
    /// Waits for the next request's turn; `None` once it would fall past
    /// `deadline`. Returns when its latency starts: the due time if this
    /// connection is behind (so a stall in the proxy shows in the
    /// percentiles instead of slowing the load: no coordinated omission),
    /// else the send, so the load side's 1 ms timer is not charged to the
    /// proxy.
    async fn next(&mut self, deadline: Instant) -> Option<Instant> {
        let due = self.due;
        if due >= deadline {
            return None;
        }
        self.due += self.every;
        if Instant::now() > due {
            return Some(due);
        }
        tokio::time::sleep_until(due).await;
        Some(Instant::now())
    }
}

/// Runs `request` on every connection until the deadline (or the byte
/// cap), back to back or paced; counts responses and body bytes.
/// `per_request_logged`: sluice writes a log line per request
/// (absolute-form), not per tunnel.
async fn hammer(
    b: &Bench,
    conns: Vec<Conn>,
    request: Arc<[u8]>,
    load: Load,
    per_request_logged: bool,
) -> Result<(Tally, Spent), Error> {
    let window = Window::open(b)?;
    let deadline = window.start + b.duration;
    let n = conns.len() as f64;
    let mut set = JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let (request, tx) = (request.clone(), tx.clone());
        let mut pace = match load {
            Load::Closed => None,
            Load::Paced(rate) => Some(Pace {
                due: window.start + Duration::from_secs_f64(i as f64 / rate),
                every: Duration::from_secs_f64(n / rate),
            }),
        };
        set.spawn(async move {
            let mut t = Tally::default();
            while t.running(deadline) && t.bytes < MAX_BULK_MIB << 20 {
                let started = match &mut pace {
                    None => Instant::now(),
                    Some(p) => match p.next(deadline).await {
                        Some(from) => from,
                        None => break,
                    },
                };
                match conn.exchange(&request).await {
                    Ok(body) => {
                        t.latencies_ns.push(started.elapsed().as_nanos() as u64);
                        t.units += 1;
                        t.bytes += body;
                        t.logged += u64::from(per_request_logged);
                    }
                    Err(e) => {
                        t.fail(&e);
                        break;
                    }
                }
            }
            // Closed only after the window: closing is not this workload's work.
            let _ = tx.send(conn);
            t
        });
    }
    drop(tx);
    let tally = join(set).await?;
    let spent = window.close(b)?;
    while let Some(conn) = rx.recv().await {
        drop(conn);
    }
    Ok((tally, spent))
}

/// Workload 2: small keep-alive requests inside a few long-lived tunnels.
pub async fn keepalive(b: &Bench) -> Result<Measured, Error> {
    let request = small_request(&b.authority, false);
    let conns = prepared(KEEPALIVE_TUNNELS, &request, || {
        Conn::tunnel(b.proxy, &b.authority)
    })
    .await?;
    let (mut tally, spent) = hammer(b, conns, request, Load::Closed, false).await?;
    tally.logged += KEEPALIVE_TUNNELS as u64;
    let units = tally.units as f64;
    Ok(measured(tally, &spent, units))
}

/// Workload 2b: keep-alive requests on [`PACED_TUNNELS`] tunnels at a fixed
/// total rate, as agents send them, rather than as fast as sluice answers
/// (see [`Pace`] for how latency is counted).
pub async fn keepalive_paced(b: &Bench) -> Result<Measured, Error> {
    let request = small_request(&b.authority, false);
    let conns = prepared(PACED_TUNNELS, &request, || {
        Conn::tunnel(b.proxy, &b.authority)
    })
    .await?;
    let load = Load::Paced(b.paced_rate);
    let (mut tally, spent) = hammer(b, conns, request, load, false).await?;
    tally.logged += PACED_TUNNELS as u64;
    let units = tally.units as f64;
    Ok(measured(tally, &spent, units))
}

/// Workload 3: absolute-form requests on persistent client connections
/// (sluice keeps each one's upstream connection too).
pub async fn absolute(b: &Bench) -> Result<Measured, Error> {
    let request: Arc<[u8]> = format!(
        "GET http://{a}/small HTTP/1.1\r\nHost: {a}\r\n\r\n",
        a = b.authority
    )
    .into_bytes()
    .into();
    on_kept_connections(b, request).await
}

/// Absolute-form `request` back to back on [`ABSOLUTE_CLIENTS`] persistent
/// client connections.
async fn on_kept_connections(b: &Bench, request: Arc<[u8]>) -> Result<Measured, Error> {
    if !b.keeps_clients {
        return Ok(Measured::not_measured());
    }
    let conns = prepared(ABSOLUTE_CLIENTS, &request, || Conn::open(b.proxy)).await?;
    let (mut tally, spent) = hammer(b, conns, request, Load::Closed, true).await?;
    tally.logged += ABSOLUTE_CLIENTS as u64;
    let units = tally.units as f64;
    Ok(measured(tally, &spent, units))
}

/// Workload 3c: [`absolute`] with the head an agent's API client sends
/// (13 fields, a query string, a bearer token for the origin) and
/// the agent identified by its proxy token rather than its source address.
/// The one-field head of [`absolute`] leaves out what real requests cost
/// per field: parsing, the credentials check, stripping and forwarding.
pub async fn absolute_agent(b: &Bench) -> Result<Measured, Error> {
    use base64::Engine;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("bench:{}", crate::child::TOKEN));
    let request: Arc<[u8]> = format!(
        "GET http://{a}/small?page=2&per_page=50 HTTP/1.1\r\n\
         Host: {a}\r\n\
         User-Agent: OpenAI/Python 1.54.0\r\n\
         Accept: application/json\r\n\
         Accept-Encoding: gzip, deflate\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Authorization: Bearer sk-bench-4f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f\r\n\
         Content-Type: application/json\r\n\
         Proxy-Authorization: Basic {credentials}\r\n\
         X-Request-Id: 5f0c6f1e-8a47-4d2b-9c1e-2b7f0a9d4e11\r\n\
         X-Stainless-Lang: python\r\n\
         X-Stainless-Runtime-Version: 3.12.7\r\n\
         Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
         Connection: keep-alive\r\n\
         \r\n",
        a = b.authority
    )
    .into_bytes()
    .into();
    on_kept_connections(b, request).await
}

/// Workload 3b: absolute-form requests, each on a new client connection
/// (`Connection: close`), as curl or a script without a session sends
/// them. sluice reuses its upstream connections across clients, so the
/// origin side stays warm. Latency: connect to last byte.
pub async fn absolute_fresh(b: &Bench) -> Result<Measured, Error> {
    let request: Arc<[u8]> = format!(
        "GET http://{a}/small HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n",
        a = b.authority
    )
    .into_bytes()
    .into();
    let window = Window::open(b)?;
    let deadline = window.start + b.duration;
    let mut set = JoinSet::new();
    for _ in 0..TUNNEL_CLIENTS {
        let (b, request) = (b.clone(), request.clone());
        set.spawn(async move {
            let mut t = Tally::default();
            while t.running(deadline) {
                let started = Instant::now();
                let one = async {
                    let mut conn = Conn::open(b.proxy).await?;
                    conn.exchange(&request).await
                };
                match one.await {
                    Ok(_) => {
                        t.latencies_ns.push(started.elapsed().as_nanos() as u64);
                        t.units += 1;
                        t.logged += 1;
                    }
                    Err(e) => t.fail(&e),
                }
            }
            t
        });
    }
    let tally = join(set).await?;
    let spent = window.close(b)?;
    let units = tally.units as f64;
    Ok(measured(tally, &spent, units))
}

/// Workload 4: back-to-back bulk responses through a few tunnels; the unit
/// is one MiB delivered to the client.
pub async fn bulk(b: &Bench) -> Result<Measured, Error> {
    let small = small_request(&b.authority, false);
    let conns = prepared(BULK_TUNNELS, &small, || Conn::tunnel(b.proxy, &b.authority)).await?;
    let request: Arc<[u8]> = format!(
        "GET /bulk/{BULK_MIB} HTTP/1.1\r\nHost: {}\r\n\r\n",
        b.authority
    )
    .into_bytes()
    .into();
    let (mut tally, spent) = hammer(b, conns, request, Load::Closed, false).await?;
    tally.logged += BULK_TUNNELS as u64;
    tally.latencies_ns.clear();
    let mib = tally.bytes as f64 / f64::from(1u32 << 20);
    Ok(measured(tally, &spent, mib))
}

/// Workload 5: opens `n` tunnels (each does one small exchange, then
/// idles) and reports sluice's RSS growth per tunnel, in KiB.
pub async fn idle(b: &Bench, n: usize) -> Result<(Measured, Vec<Conn>), Error> {
    let request = small_request(&b.authority, false);
    let before = procfs::rss_kib(b.sluice_pid)?;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..IDLE_OPENERS {
        let share = n / IDLE_OPENERS + usize::from(i < n % IDLE_OPENERS);
        let (b, request) = (b.clone(), request.clone());
        set.spawn(async move {
            prepared(share, &request, || Conn::tunnel(b.proxy, &b.authority)).await
        });
    }
    let mut open = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(conns) = set.join_next().await {
        match conns? {
            Ok(conns) => open.extend(conns),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = procfs::rss_kib(b.sluice_pid)?;
    let held = open.len();
    if held == 0 {
        return Err(format!("no idle tunnel could be opened: {first_error:?}").into());
    }
    let m = Measured {
        rate: held as f64,
        cost: after.saturating_sub(before) as f64 / held as f64,
        units: held as u64,
        errors: (n - held) as u64,
        first_error,
        logged: held as u64,
        load_busy: None,
        sluice_busy: None,
        other_busy: None,
        steal: None,
        sluice_user: None,
        p50_us: None,
        p99_us: None,
        open_secs: Some(secs),
    };
    // Returned to be held while the TLS variant measures: memory they free
    // would otherwise be reused by its tunnels and hide their cost.
    Ok((m, open))
}

/// Workload 5b: like [`idle`], through the TLS listener with a client
/// certificate: `n` tunnels opened, one small exchange each, then held
/// while sluice's RSS growth is read. Not measured (NaN) without one.
pub async fn idle_tls(b: &Bench, n: usize) -> Result<Measured, Error> {
    let Some((tls_addr, pki)) = b.tls.clone() else {
        return Ok(Measured::not_measured());
    };
    let request = small_request(&b.authority, false);
    let before = procfs::rss_kib(b.sluice_pid)?;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..IDLE_OPENERS {
        let share = n / IDLE_OPENERS + usize::from(i < n % IDLE_OPENERS);
        let (b, request, pki) = (b.clone(), request.clone(), pki.clone());
        set.spawn(async move {
            let mut open = Vec::with_capacity(share);
            for _ in 0..share {
                open.push(pki.tunnel(tls_addr, &b.authority, &request).await?);
            }
            Ok::<_, Error>(open)
        });
    }
    let mut open = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(conns) = set.join_next().await {
        match conns? {
            Ok(conns) => open.extend(conns),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = procfs::rss_kib(b.sluice_pid)?;
    let held = open.len();
    drop(open);
    if held == 0 {
        return Err(format!("no idle TLS tunnel could be opened: {first_error:?}").into());
    }
    Ok(Measured {
        rate: held as f64,
        cost: after.saturating_sub(before) as f64 / held as f64,
        units: held as u64,
        errors: (n - held) as u64,
        first_error,
        logged: held as u64,
        open_secs: Some(secs),
        ..Measured::default()
    })
}

/// Warms sluice up (DNS cache, allocator, runtime) with a little of each
/// kind of traffic; returns the access-log lines it should have caused.
pub async fn warm_up(b: &Bench, n: usize) -> Result<u64, Error> {
    let small = small_request(&b.authority, true);
    for _ in 0..n {
        let mut conn = Conn::tunnel(b.proxy, &b.authority).await?;
        conn.exchange(&small).await?;
    }
    let absolute: Arc<[u8]> = format!(
        "GET http://{a}/small HTTP/1.1\r\nHost: {a}\r\n\r\n",
        a = b.authority
    )
    .into_bytes()
    .into();
    let mut conn = Conn::open(b.proxy).await?;
    for i in 0..n {
        if i > 0 && !b.keeps_clients {
            conn = Conn::open(b.proxy).await?;
        }
        conn.exchange(&absolute).await?;
    }
    Ok(2 * n as u64)
}

/// Waits until sluice has finished the previous workload's trailing work
/// (closing connections, writing log lines): its CPU time stops moving.
pub async fn settle(b: &Bench) -> Result<(), Error> {
    let pid = b.sluice_pid.to_string();
    let step = Duration::from_millis(100);
    let mut last = Cpu::read(&pid)?;
    for _ in 0..50 {
        tokio::time::sleep(step).await;
        let now = Cpu::read(&pid)?;
        let (ns, _) = now.since(&last, b.ticks_per_s);
        if ns < 2_000_000 {
            return Ok(());
        }
        last = now;
    }
    Ok(())
}
