//! The access log: one JSON line per request or tunnel (SPEC "Access log").
//!
//! A request fills in a [`Record`] as it goes; [`Entry::finish`] serialises
//! it on the request's own task and hands the line to a single writer thread
//! over a bounded channel. The writer lets lines gather for a moment, then
//! writes the batch with one call, so the request path never waits for disk. When the
//! writer falls behind, the sending request waits for room (the line is
//! never dropped) and `sluice_log_backpressure_total` counts it. If an
//! [`Entry`] is dropped without being finished (its task was cancelled), it
//! is written from `Drop` as a safety net.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use std::io::Write;

use serde::{Serialize, Serializer};
use tokio::sync::mpsc;

use super::metrics::{AgentSeries, Metrics, NO_AGENT};

/// Lines buffered between request tasks and the writer. At ~400 bytes a
/// line this is ~25 MiB at most, and seconds of headroom at any rate a
/// single replica can serve.
const CHANNEL_LINES: usize = 65_536;

/// Bytes reserved for a line before serialising it (most are 300–500).
const LINE_CAPACITY: usize = 512;

/// How long the writer lets lines gather after the first of a batch: the
/// most a line waits before its write(2). Short against any reader of the
/// log, long enough that a busy replica writes tens of lines per call.
const GATHER: Duration = Duration::from_millis(2);

/// One access-log line. Fields are absent when not applicable, never
/// invented; `agent` and `reason` are always present (null when none).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Record {
    pub ts: Stamp,
    pub id: RequestId,
    pub agent: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<&'static str>,
    /// The client's address, formatted once per connection.
    pub src: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    pub reason: Option<&'static str>,
    /// With reason `tls_handshake`: why the handshake failed (the `kind`
    /// of `sluice_tls_handshake_failures_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ips: Option<Arc<[IpAddr]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `true` when the tunnel's ClientHello offered Encrypted Client Hello
    /// (refused as `ech_refused`, or let through by `allow_ech`); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ech: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_up: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_down: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    pub duration_ms: f64,
}

impl Record {
    /// The record as one JSON line, newline included: the bytes
    /// `serde_json` would make of it (a test holds the two together), but
    /// with the keys written as literals rather than escaped one by one.
    pub fn to_line(&self) -> Vec<u8> {
        // Sized for a typical line, so serialising does not regrow it.
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        if let Err(e) = self.write_json(&mut line) {
            line = format!("{{\"error\":\"access log serialisation failed: {e}\"}}").into_bytes();
        }
        line.push(b'\n');
        line
    }

    /// Field by field, in declaration order, skipping what the derive skips.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let mut o = Object(out);
        o.field(b"{\"ts\":", &self.ts)?;
        o.field(b",\"id\":", &self.id)?;
        o.field(b",\"agent\":", &self.agent)?;
        o.some(b",\"identity\":", &self.identity)?;
        o.field(b",\"src\":", &self.src)?;
        o.some(b",\"method\":", &self.method)?;
        o.some(b",\"host\":", &self.host)?;
        o.some(b",\"port\":", &self.port)?;
        o.some(b",\"path\":", &self.path)?;
        o.some(b",\"query\":", &self.query)?;
        o.field(b",\"decision\":", &self.decision)?;
        o.some(b",\"rule\":", &self.rule)?;
        o.some(b",\"mode\":", &self.mode)?;
        o.field(b",\"reason\":", &self.reason)?;
        o.some(b",\"tls_error\":", &self.tls_error)?;
        o.some(b",\"status\":", &self.status)?;
        o.some(b",\"ips\":", &self.ips)?;
        o.some(b",\"ip\":", &self.ip)?;
        o.some(b",\"sni\":", &self.sni)?;
        o.some(b",\"ech\":", &self.ech)?;
        o.some(b",\"bytes_up\":", &self.bytes_up)?;
        o.some(b",\"bytes_down\":", &self.bytes_down)?;
        o.some(b",\"dns_ms\":", &self.dns_ms)?;
        o.some(b",\"connect_ms\":", &self.connect_ms)?;
        o.field(b",\"duration_ms\":", &self.duration_ms)?;
        o.0.push(b'}');
        Ok(())
    }
}

/// A JSON object being written: each key a literal with its punctuation,
/// each value serialised by `serde_json`.
struct Object<'a>(&'a mut Vec<u8>);

impl Object<'_> {
    fn field<T: Serialize + ?Sized>(&mut self, key: &[u8], value: &T) -> serde_json::Result<()> {
        self.0.extend_from_slice(key);
        serde_json::to_writer(&mut *self.0, value)
    }

    /// A field that is left out when `None`.
    fn some<T: Serialize>(&mut self, key: &[u8], value: &Option<T>) -> serde_json::Result<()> {
        match value {
            Some(v) => self.field(key, v),
            None => Ok(()),
        }
    }
}

/// When a line was written: RFC 3339 in UTC with milliseconds. Formatted
/// straight into the line, never into a `String` of its own.
#[derive(Debug, Clone, Copy)]
pub struct Stamp(pub SystemTime);

impl Default for Stamp {
    fn default() -> Self {
        Stamp(SystemTime::UNIX_EPOCH)
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// A request's id: the process's random prefix as 16 hex digits, then the
/// request's number as at least 8, like `format!("{prefix:016x}{n:08x}")`
/// but written into the line directly. Hand-rolled: `write!` with padding
/// goes through serde_json's escaping adapter a few bytes at a time,
/// which cost 140 ns per line (criterion `access_log_line`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestId {
    pub prefix: u64,
    pub n: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n_digits = (64 - self.n.leading_zeros()).div_ceil(4).max(8) as usize;
        let mut id = [0u8; 32];
        for (value, digits, at) in [(self.prefix, 16, 0), (self.n, n_digits, 16)] {
            for i in 0..digits {
                let shift = (digits - 1 - i) * 4;
                id[at + i] = HEX[((value >> shift) & 0xf) as usize];
            }
        }
        // Only ASCII hex digits were written.
        f.write_str(std::str::from_utf8(&id[..16 + n_digits]).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The log's `method` field: the standard methods without an allocation.
pub fn method_name(m: &str) -> Cow<'static, str> {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    match KNOWN.iter().find(|k| **k == m) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(m.to_owned()),
    }
}

/// Where lines go: the sending half of the writer's channel. Every request
/// holds a clone, so a clone is one reference count: cloning the channel
/// and the metric handles themselves was some thirty atomic operations
/// per request, made and undone.
#[derive(Debug, Clone)]
pub struct Sink(Arc<SinkInner>);

#[derive(Debug)]
struct SinkInner {
    tx: mpsc::Sender<Vec<u8>>,
    metrics: Metrics,
}

/// The writer thread's completion: await [`Writer::finish`] after every
/// [`Sink`] is dropped to know that every line has been written.
#[derive(Debug)]
pub struct Writer {
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Writer {
    /// Resolves once the writer has flushed its last line and exited.
    pub async fn finish(self) {
        let _ = self.done.await;
    }
}

/// Where the writer puts lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output<'a> {
    Stdout,
    File(&'a Path),
    /// Nowhere but the tap (in-process tests).
    TapOnly,
}

/// Opens the log and starts the writer thread. `tap` receives a copy of
/// every line (tests use it to wait for lines).
///
/// The writer is a plain thread doing blocking writes, not a task: a tokio
/// file write is a hand-off to the blocking pool per batch, which measured
/// as a tenth of sluice's CPU per tunnel (docs/performance.md).
pub fn open(
    output: Output<'_>,
    metrics: Metrics,
    tap: Option<mpsc::UnboundedSender<String>>,
) -> std::io::Result<(Sink, Writer)> {
    let out: Box<dyn Write + Send> = match output {
        Output::TapOnly => Box::new(std::io::sink()),
        Output::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        ),
        Output::Stdout => Box::new(std::io::stdout()),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_LINES);
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-access-log".to_owned())
        .spawn(move || {
            write_lines(rx, out, tap);
            let _ = done_tx.send(());
        })?;
    Ok((Sink(Arc::new(SinkInner { tx, metrics })), Writer { done }))
}

fn write_lines(
    mut rx: mpsc::Receiver<Vec<u8>>,
    out: Box<dyn Write + Send>,
    tap: Option<mpsc::UnboundedSender<String>>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failed = false;
    let mut report = |what: &str, e: std::io::Error| {
        if !failed {
            eprintln!("sluice: access log {what} failed: {e}");
            failed = true;
        }
    };
    while let Some(line) = rx.blocking_recv() {
        // Let the batch gather before draining it. Waking this thread costs
        // the sending request a futex call and the core two context
        // switches, and each batch a write(2): per line, that was about a
        // tenth of a tunnel's CPU (docs/performance.md). While the writer
        // sleeps it has no waker registered, so senders do not wake it.
        std::thread::sleep(GATHER);
        let mut next = Some(line);
        // Drain whatever is queued before flushing: one write(2) per batch.
        while let Some(line) = next {
            if let Err(e) = out.write_all(&line) {
                report("write", e);
            }
            if let Some(tap) = &tap {
                let _ = tap.send(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = out.flush() {
            report("flush", e);
        }
    }
    if let Err(e) = out.flush() {
        report("flush", e);
    }
}

impl Sink {
    /// Queues one serialised line, waiting for room if the writer is behind.
    async fn send(&self, line: Vec<u8>) {
        match self.0.tx.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(line)) => {
                self.0.metrics.log_backpressure.inc();
                warn_behind();
                if self.0.tx.send(line).await.is_err() {
                    eprintln!("sluice: access log writer has stopped; a line was lost");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                eprintln!("sluice: access log writer has stopped; a line was lost");
            }
        }
    }
}

/// Says on stderr that the writer is behind, at most every ten seconds:
/// once is news, a line per request would be a second flood.
fn warn_behind() {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        eprintln!(
            "sluice: the access log writer is falling behind; requests are waiting for it (see sluice_log_backpressure_total)"
        );
    }
}

/// A request's record in progress. Created when a request starts; written
/// once by [`Entry::finish`] (or by `Drop` if the task is cancelled).
#[derive(Debug)]
pub struct Entry {
    /// Boxed: an entry is carried through every await of a request, and
    /// each async function it passes through stores it (often twice), so
    /// its size multiplies into every connection's future.
    pub record: Box<Record>,
    /// The agent's pre-resolved series, once the agent is known.
    pub series: Option<Arc<AgentSeries>>,
    started: Instant,
    sink: Option<Sink>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A per-process random prefix, so ids from different replicas and restarts
/// do not collide.
fn id_prefix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    })
}

/// A client address as the log's `src` field shows it. A connection
/// formats it once and shares it with every request it carries.
pub fn src_text(addr: SocketAddr) -> Arc<str> {
    match addr {
        SocketAddr::V4(v4) => ipv4_text(v4),
        // Formatted on the stack, so the Arc is the one allocation (a
        // `to_string` first would add a String, grown once, then freed).
        // The longest form, `[v6%scope]:port`, fits in 64 bytes.
        SocketAddr::V6(_) => {
            let mut space = [0u8; 64];
            let mut cursor = std::io::Cursor::new(&mut space[..]);
            if write!(cursor, "{addr}").is_err() {
                return addr.to_string().into();
            }
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            std::str::from_utf8(&space[..len]).map_or_else(|_| addr.to_string().into(), Arc::from)
        }
    }
}

/// `a.b.c.d:port`, digit by digit: every plain connection's `src`. Going
/// through `Display` took ~1,600 instructions per connection (callgrind),
/// most of them `core::fmt`'s machinery around five small numbers.
fn ipv4_text(addr: std::net::SocketAddrV4) -> Arc<str> {
    // "255.255.255.255:65535"
    let mut text = [0u8; 21];
    let mut len = 0;
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        len += decimal(&mut text[len..], octet.into());
    }
    text[len] = b':';
    len += 1;
    len += decimal(&mut text[len..], addr.port());
    // Digits, dots and a colon: always UTF-8.
    std::str::from_utf8(&text[..len]).map_or_else(|_| addr.to_string().into(), Arc::from)
}

/// Writes `n` in decimal at the start of `out` (room for five digits);
/// returns how many bytes it took.
fn decimal(out: &mut [u8], mut n: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        // n % 10 < 10: the cast keeps it.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    out[..len].copy_from_slice(&digits[start..]);
    len
}

impl Entry {
    /// Starts a record for a request from `src` (see [`src_text`]).
    pub fn new(sink: &Sink, src: Arc<str>) -> Entry {
        Entry::started_at(sink, src, Instant::now())
    }

    /// A record for something that began at `started`, before it was known
    /// to need a line (a TLS handshake that then failed).
    pub fn started_at(sink: &Sink, src: Arc<str>, started: Instant) -> Entry {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        Entry {
            record: Box::new(Record {
                id: RequestId {
                    prefix: id_prefix(),
                    n,
                },
                src,
                decision: "deny",
                ..Record::default()
            }),
            started,
            series: None,
            sink: Some(sink.clone()),
        }
    }

    /// Writes the line and counts it in `sluice_requests_total` and
    /// `sluice_bytes_total`.
    pub async fn finish(mut self) {
        if let Some((sink, line)) = self.seal() {
            sink.send(line).await;
        }
    }

    /// Fills in the timestamp and duration, updates the metrics and
    /// serialises the record. `None` if already written.
    fn seal(&mut self) -> Option<(Sink, Vec<u8>)> {
        let sink = self.sink.take()?;
        let r = &mut self.record;
        r.ts = Stamp(SystemTime::now());
        r.duration_ms = ms(self.started.elapsed());
        let agent = r.agent.as_deref().unwrap_or(NO_AGENT);
        let m = &sink.0.metrics;
        match (&self.series, r.decision, r.reason) {
            (Some(s), "allow", None) => s.allowed.inc(),
            _ => m
                .requests
                .with_label_values(&[agent, r.decision, r.reason.unwrap_or("none")])
                .inc(),
        }
        let up = r.bytes_up.unwrap_or(0);
        let down = r.bytes_down.unwrap_or(0);
        match &self.series {
            Some(s) => {
                s.up.inc_by(up);
                s.down.inc_by(down);
            }
            None => {
                if up > 0 {
                    m.bytes.with_label_values(&[agent, "up"]).inc_by(up);
                }
                if down > 0 {
                    m.bytes.with_label_values(&[agent, "down"]).inc_by(down);
                }
            }
        }
        Some((sink, r.to_line()))
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some((sink, line)) = self.seal() {
            // Cannot await here: hand the line over without waiting, or to a
            // task that waits for room.
            if let Err(mpsc::error::TrySendError::Full(line)) = sink.0.tx.try_send(line) {
                sink.0.metrics.log_backpressure.inc();
                warn_behind();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move { sink.send(line).await });
                }
            }
        }
    }
}

/// Milliseconds with microsecond precision, as the log writes them.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written line is byte for byte what `serde_json` makes of
    /// the derived `Serialize`: same order, same skipped fields, same
    /// escaping and number formatting, over 5,000 generated records.
    #[test]
    fn the_line_is_what_serde_json_would_write() {
        const TEXT: [&str; 8] = [
            "",
            "api.example.com",
            "a\"b\\c",
            "\u{0}\u{1f}\n\t\r",
            "é漢字",
            "\u{2028}\u{7f}",
            "/v1/x?y=1&z=%20",
            "</script>",
        ];
        const FLOAT: [f64; 8] = [0.0, 0.001, 1.5, 12_345.678, 1e-7, 1e21, f64::MAX, f64::NAN];
        const STATIC: [&str; 3] = ["allow", "deny", "not_allowed"];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let mut r = Record::default();
            let mut pick = |n: usize| (next() % n as u64) as usize;
            let text = |i: usize| TEXT[i % TEXT.len()].to_owned();
            let some = |x: usize| x % 3 != 0;
            r.ts = Stamp(
                SystemTime::UNIX_EPOCH + Duration::from_millis(pick(1 << 20) as u64 * 1_000_003),
            );
            r.id = RequestId {
                prefix: pick(usize::MAX) as u64,
                n: pick(1 << 40) as u64,
            };
            r.src = text(pick(8)).into();
            r.decision = STATIC[pick(3)];
            r.duration_ms = FLOAT[pick(8)];
            r.agent = some(pick(3)).then(|| text(pick(8)).into());
            r.identity = some(pick(3)).then_some("token");
            r.method = some(pick(3)).then(|| method_name(&text(pick(8))));
            r.host = some(pick(3)).then(|| text(pick(8)));
            r.port = some(pick(3)).then(|| pick(65_536) as u16);
            r.path = some(pick(3)).then(|| text(pick(8)));
            r.query = some(pick(3)).then(|| text(pick(8)));
            r.rule = some(pick(3)).then(|| text(pick(8)).into());
            r.mode = some(pick(3)).then_some("report");
            r.reason = some(pick(3)).then(|| STATIC[pick(3)]);
            r.tls_error = some(pick(3)).then_some("bad_certificate");
            r.status = some(pick(3)).then(|| pick(600) as u16);
            let v6: IpAddr = [0x2001, 0xdb8, 0, 0, 0, 0, 0, pick(9) as u16].into();
            let v4: IpAddr = [203, 0, 113, pick(256) as u8].into();
            r.ips = some(pick(3)).then(|| Arc::from(&[v4, v6][..pick(3)]));
            r.ip = some(pick(3)).then_some(if pick(2) == 0 { v4 } else { v6 });
            r.sni = some(pick(3)).then(|| text(pick(8)));
            r.ech = some(pick(3)).then(|| pick(2) == 0);
            r.bytes_up = some(pick(3)).then(|| pick(usize::MAX) as u64);
            r.bytes_down = some(pick(3)).then(|| pick(1 << 30) as u64);
            r.dns_ms = some(pick(3)).then(|| FLOAT[pick(8)]);
            r.connect_ms = some(pick(3)).then(|| FLOAT[pick(8)]);
            let mut want = serde_json::to_vec(&r).unwrap_or_else(|e| panic!("{e}"));
            want.push(b'\n');
            let got = r.to_line();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_timestamp_is_rfc3339_utc_with_milliseconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_336_200_123);
        let json = serde_json::to_string(&Stamp(at)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json, "\"2026-11-22T08:30:00.123Z\"");
    }

    #[test]
    fn the_src_field_reads_as_the_address_displays() {
        for text in [
            "127.0.0.1:40000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.0.100.9:80",
            "192.168.1.10:1009",
            "[::1]:8080",
            "[fe80::1%7]:443",
            "[::ffff:10.0.0.1]:1",
        ] {
            let addr: SocketAddr = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&*src_text(addr), text);
        }
        // The widest form there is: every group four digits, the widest
        // scope, the widest port.
        let widest = SocketAddr::V6(std::net::SocketAddrV6::new(
            std::net::Ipv6Addr::from([0xfffe; 8]),
            65535,
            0,
            u32::MAX,
        ));
        assert_eq!(&*src_text(widest), widest.to_string());
    }

    #[test]
    fn standard_methods_are_named_without_allocating_and_others_as_sent() {
        assert!(matches!(method_name("GET"), Cow::Borrowed("GET")));
        assert!(matches!(method_name("CONNECT"), Cow::Borrowed("CONNECT")));
        assert_eq!(method_name("PROPFIND"), "PROPFIND");
        assert!(matches!(method_name("get"), Cow::Owned(_)));
    }

    #[test]
    fn request_ids_read_as_format_would_print_them() {
        for (prefix, n) in [
            (0, 0),
            (0x0123_4567_89ab_cdef, 1),
            (u64::MAX, 0xffff_ffff),
            (7, 0x1_0000_0000),
            (0xdead_beef, u64::MAX),
        ] {
            let id = RequestId { prefix, n };
            assert_eq!(id.to_string(), format!("{prefix:016x}{n:08x}"));
            let json = serde_json::to_string(&id).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(json, format!("\"{prefix:016x}{n:08x}\""));
        }
    }
}
