//! CONNECT tunnels: relay bytes both ways until both sides have closed, or
//! until nothing has moved for `idle_timeout`, keeping half-close (one side
//! may finish sending and still receive).
//!
//! Before the first client byte reaches the upstream, the SNI gate reads the
//! client's opening bytes and, if they are a TLS ClientHello, requires its
//! SNI to be the CONNECT host: otherwise an agent allowed to reach
//! `api.example.com` could CONNECT there and ask for `evil.example` on a
//! shared front (domain fronting); if the server asks for a second hello,
//! that one is held to the same name (see `gate`). The upstream-to-client
//! direction runs from the start, so server-first protocols are not held up
//! by the gate.
//!
//! Tunnels hold no relay buffer while idle: on plain TCP a burst passes
//! through the worker thread's scratch buffer, on the TLS listener each
//! read gets a buffer of its own. On plain TCP, a direction that
//! turns out to be bulk continues with splice(2), zero-copy.

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use rustix::pipe::{PipeFlags, SpliceFlags};
use std::os::fd::OwnedFd;
use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, tcp};
use tokio::time::Instant;

use crate::host::Host;

use super::ClientIo;

mod gate;
use gate::{Gate, Hello};

/// Read size on the generic (TLS client) path. 16 KiB holds a full TLS
/// record's plaintext, so a record is usually moved with one read and one
/// write.
const BUF_SIZE: usize = 16 * 1024;

/// Each worker thread's buffer for plain-TCP bursts. A burst is read into
/// it and written out before the thread moves on (only what the
/// destination cannot take at once is copied aside), so one buffer serves
/// every tunnel the thread runs: no allocation per burst, no fresh pages,
/// and no relay memory held by an idle tunnel. A read that fills it marks
/// a bulk transfer, which then moves with splice(2).
const BURST: usize = 128 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(BURST));
}

/// What the tunnel checks and how long it may idle.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    pub idle_timeout: Duration,
    /// The CONNECT host the ClientHello's SNI must name. For an IP
    /// literal that means no SNI at all (RFC 6066 names no addresses), or
    /// the same address: a name there would be fronting through an
    /// address the agent may reach to a site it may not.
    pub sni_host: &'a Host,
    /// Refuse first bytes that are not a ClientHello carrying SNI.
    pub require_sni: bool,
    /// Let through a ClientHello that offers Encrypted Client Hello.
    pub allow_ech: bool,
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both directions closed normally.
    Closed,
    /// Nothing moved for `idle_timeout`.
    Idle,
    /// The SNI gate refused the tunnel (log reason `sni_mismatch`,
    /// `sni_missing` or `ech_refused`).
    Refused(&'static str),
    /// A read or write failed (a reset, usually).
    Error(io::Error),
}

/// A finished tunnel: byte counts and what the SNI gate saw.
#[derive(Debug)]
pub struct Outcome {
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The server_name of the client's ClientHello, as sent: also when the
    /// gate refused it, so the log shows which name was tried.
    pub sni: Option<String>,
    /// The ClientHello offered Encrypted Client Hello.
    pub ech: bool,
    pub end: End,
}

/// Relays between `client` and `upstream`. `pending` holds client bytes
/// already read past the CONNECT head; they go through the gate too.
///
/// Plain TCP clients take the lean path: buffers exist only while bytes are
/// moving, so an idle tunnel holds none (see `pump_tcp`).
pub async fn tunnel<C: ClientIo>(
    client: &mut C,
    pending: BytesMut,
    mut upstream: TcpStream,
    opts: &Options<'_>,
) -> Outcome {
    let activity = Activity::new();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let mut hello = Hello::default();
    let gate = Gate::new(opts);
    // Set once the upstream has sent all it will: the client side's EOF is
    // then the tunnel's end, and the upstream socket is closed right after.
    let upstream_done = AtomicBool::new(false);
    let (mut ur, mut uw) = upstream.split();
    // Both directions run until both finish or one fails; the watchdog ends
    // the tunnel once nothing has moved for `idle_timeout`. Every future is
    // built in place, inside `select!` and `try_join!`: passed around by
    // value, each would be stored again in every future it passed through
    // (measured: 2.9 KiB per tunnel for what needs 1.1).
    let end = match client.tcp() {
        Some(tcp) => {
            let (mut cr, mut cw) = tcp.split();
            tokio::select! {
                biased;
                res = async {
                    tokio::try_join!(
                        async {
                            gate.open(&mut cr, &mut uw, pending, &up, &activity, &mut hello).await?;
                            pump_tcp(&mut cr, &mut uw, &up, &activity).await?;
                            // If the upstream is done too, the tunnel ends
                            // here and closing the upstream socket sends
                            // its FIN (nothing is unread on it, so close
                            // sends no RST): one system call fewer.
                            if !upstream_done.load(Ordering::Relaxed) {
                                half_close(&mut uw).await;
                            }
                            Ok(())
                        },
                        async {
                            if !gate.watch(&mut ur, &mut cw, &down, &activity).await? {
                                pump_tcp(&mut ur, &mut cw, &down, &activity).await?;
                                // The client's FIN does not wait for the
                                // log line before its close.
                                half_close(&mut cw).await;
                            }
                            upstream_done.store(true, Ordering::Relaxed);
                            Ok(())
                        },
                    )
                } => res.err().unwrap_or(End::Closed),
                end = watchdog(&activity, opts.idle_timeout) => end,
            }
        }
        None => {
            let (mut cr, mut cw) = tokio::io::split(client);
            tokio::select! {
                biased;
                res = async {
                    tokio::try_join!(
                        async {
                            gate.open(&mut cr, &mut uw, pending, &up, &activity, &mut hello).await?;
                            pump(&mut cr, &mut uw, &up, &activity).await
                        },
                        async {
                            if gate.watch(&mut ur, &mut cw, &down, &activity).await? {
                                return Ok(());
                            }
                            pump(&mut ur, &mut cw, &down, &activity).await
                        },
                    )
                } => res.err().unwrap_or(End::Closed),
                end = watchdog(&activity, opts.idle_timeout) => end,
            }
        }
    };
    Outcome {
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        sni: hello.sni,
        ech: hello.ech,
        end,
    }
}

/// Resolves with `End::Idle` once nothing has moved for `idle`.
async fn watchdog(activity: &Activity, idle: Duration) -> End {
    loop {
        tokio::time::sleep_until(activity.deadline(idle)).await;
        if activity.idle_for() >= idle {
            return End::Idle;
        }
    }
}

/// Half-closes `w`: the peer reads EOF. The peer may already be gone; its
/// absence is not an error here.
async fn half_close(w: &mut tcp::WriteHalf<'_>) {
    let _ = w.shutdown().await;
}

/// Copies `r` to `w` until EOF (the caller half-closes `w`). Bursts go
/// through the thread's scratch buffer (see `SCRATCH`), so an idle tunnel
/// costs no relay memory, and reading into spare capacity avoids zeroing it.
async fn pump_tcp(
    r: &mut tcp::ReadHalf<'_>,
    w: &mut tcp::WriteHalf<'_>,
    count: &AtomicU64,
    activity: &Activity,
) -> Result<(), End> {
    loop {
        r.readable().await.map_err(End::Error)?;
        loop {
            match burst(r, w, count, activity).map_err(End::Error)? {
                // A short read drained the socket (see `read_now`): wait
                // for more.
                Burst::Drained => break,
                Burst::Eof => return Ok(()),
                Burst::Blocked(rest) => {
                    w.write_all(&rest).await.map_err(End::Error)?;
                    count.fetch_add(rest.len() as u64, Ordering::Relaxed);
                }
                Burst::Bulk => {
                    // Move the rest through the kernel (or keep copying if
                    // no pipe can be had).
                    if let Some(pipe) = Pipe::new() {
                        return splice_rest(r.as_ref(), w, &pipe, count, activity).await;
                    }
                }
            }
        }
    }
}

/// What one pass of `burst` did.
enum Burst {
    /// Nothing more to read for now.
    Drained,
    /// The peer finished sending.
    Eof,
    /// The destination took only part of the burst: the rest, to write
    /// before reading on.
    Blocked(Vec<u8>),
    /// The read filled the buffer, all written: a bulk transfer.
    Bulk,
}

/// Reads what `r` has, without waiting, into the thread's scratch buffer
/// and writes it to `w` as far as `w` takes it without waiting.
fn burst(
    r: &mut tcp::ReadHalf<'_>,
    w: &tcp::WriteHalf<'_>,
    count: &AtomicU64,
    activity: &Activity,
) -> io::Result<Burst> {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        let Some(read) = read_now(r, buf) else {
            return Ok(Burst::Drained);
        };
        let n = read?;
        if n == 0 {
            return Ok(Burst::Eof);
        }
        activity.touch();
        let sent = match w.try_write(buf) {
            Ok(sent) => sent,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        count.fetch_add(sent as u64, Ordering::Relaxed);
        Ok(if sent < n {
            Burst::Blocked(buf[sent..].to_vec())
        } else if n == buf.capacity() {
            Burst::Bulk
        } else {
            Burst::Drained
        })
    })
}

/// One read into `buf`'s spare capacity if the socket has data, without
/// waiting: None when it would block. Going through tokio's `poll_read`
/// (rather than `try_read_buf`) matters: a read that leaves spare capacity
/// proves the socket drained, and tokio then clears its readiness, so the
/// next wait goes straight to epoll instead of costing a read that fails
/// with EAGAIN (measured: ~1.8 such reads per keep-alive request).
fn read_now(r: &mut tcp::ReadHalf<'_>, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
    let mut cx = Context::from_waker(Waker::noop());
    // Pending registers the no-op waker; the caller's `readable()` replaces
    // it and checks readiness first, so no wake-up is lost.
    match std::pin::pin!(r.read_buf(buf)).poll(&mut cx) {
        Poll::Ready(res) => Some(res),
        Poll::Pending => None,
    }
}

/// A pipe for splice(2): socket → pipe → socket moves pages, not bytes.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// Pipe capacity asked for: fewer splice calls per MiB than the default
/// 64 KiB; the kernel may refuse (pipe-max-size), which only costs calls.
const PIPE_SIZE: usize = 512 * 1024;

impl Pipe {
    /// None if no pipe can be had (descriptor limits): the caller keeps
    /// copying through its buffer.
    fn new() -> Option<Pipe> {
        let (read, write) =
            rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC).ok()?;
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_SIZE);
        Some(Pipe { read, write })
    }
}

/// Relays the rest of a bulk direction with splice(2), zero-copy, until
/// EOF. Counts and activity are kept exactly as the buffered path keeps
/// them.
async fn splice_rest(
    src: &TcpStream,
    w: &mut tcp::WriteHalf<'_>,
    pipe: &Pipe,
    count: &AtomicU64,
    activity: &Activity,
) -> Result<(), End> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    loop {
        // Socket → pipe. The pipe is empty here, so EAGAIN means the socket
        // is, and try_io clears its readiness for the next readable().
        let n = loop {
            src.readable().await.map_err(End::Error)?;
            let moved = src.try_io(Interest::READABLE, || {
                Ok(rustix::pipe::splice(
                    src,
                    None,
                    &pipe.write,
                    None,
                    PIPE_SIZE,
                    flags,
                )?)
            });
            match moved {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(End::Error(e)),
            }
        };
        if n == 0 {
            return Ok(());
        }
        activity.touch();
        // Pipe → socket, until the pipe is empty again.
        let dst: &TcpStream = w.as_ref();
        let mut left = n;
        while left > 0 {
            dst.writable().await.map_err(End::Error)?;
            let moved = dst.try_io(Interest::WRITABLE, || {
                Ok(rustix::pipe::splice(
                    &pipe.read, None, dst, None, left, flags,
                )?)
            });
            match moved {
                Ok(m) => {
                    left -= m;
                    count.fetch_add(m as u64, Ordering::Relaxed);
                    activity.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(End::Error(e)),
            }
        }
    }
}

/// Copies `r` to `w` until EOF, then half-closes `w` (any stream type).
/// Like `pump_tcp`, it holds a buffer only while bytes are moving (see
/// `read_fresh`), so an idle TLS tunnel holds no relay buffer either.
async fn pump<R, W>(r: &mut R, w: &mut W, count: &AtomicU64, activity: &Activity) -> Result<(), End>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        let buf = read_fresh(r).await.map_err(End::Error)?;
        if buf.is_empty() {
            // The peer may already be gone; its absence is not an error here.
            let _ = w.shutdown().await;
            return Ok(());
        }
        activity.touch();
        w.write_all(&buf).await.map_err(End::Error)?;
        count.fetch_add(buf.len() as u64, Ordering::Relaxed);
        spare(buf);
    }
}

/// One read into a buffer of its own (empty at EOF); hand it back with
/// `spare` once written. A pending read holds no buffer (it waits in the
/// thread's spare slot), and dropping one loses nothing, as the stream
/// keeps whatever it has buffered (a partial TLS record, say).
async fn read_fresh<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    std::future::poll_fn(|cx| {
        let mut buf = SPARE.take().unwrap_or_else(|| Vec::with_capacity(BUF_SIZE));
        match std::pin::pin!(r.read_buf(&mut buf)).poll(cx) {
            Poll::Ready(res) => Poll::Ready(res.map(|_| buf)),
            Poll::Pending => {
                spare(buf);
                Poll::Pending
            }
        }
    })
    .await
}

thread_local! {
    /// A `read_fresh` buffer between uses. A tunnel's task polls both its
    /// directions on every wake-up, so most polls of a read find nothing
    /// to read; without this, each such poll took 16 KiB from malloc and
    /// gave it back (three times per plain tunnel, in the gate's watch).
    static SPARE: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
}

/// Keeps `buf` for the thread's next `read_fresh`.
fn spare(mut buf: Vec<u8>) {
    buf.clear();
    SPARE.set(Some(buf));
}

/// When bytes last moved, in milliseconds of the coarse monotonic clock
/// (the kernel's last tick: a few milliseconds' resolution, against idle
/// timeouts of seconds). `touch` runs for every burst in both directions,
/// and the coarse clock is a memory read where the precise one reads the
/// TSC (~1% of sluice's samples per keep-alive request, measured).
struct Activity {
    last_ms: AtomicU64,
}

/// The coarse clock's longest tick (HZ=100 kernels; 4 ms at HZ=250).
const COARSE_TICK_MS: u64 = 10;

fn coarse_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // Monotonic time is never negative.
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let nanos = u64::try_from(now.tv_nsec).unwrap_or_default();
    secs * 1000 + nanos / 1_000_000
}

impl Activity {
    fn new() -> Activity {
        Activity {
            last_ms: AtomicU64::new(coarse_ms()),
        }
    }

    fn touch(&self) {
        self.last_ms.store(coarse_ms(), Ordering::Relaxed);
    }

    /// How long nothing has moved, at least: two coarse readings can be up
    /// to a tick further apart than the moments they stand for, so one
    /// tick is taken off, and a tunnel is never closed early.
    fn idle_for(&self) -> Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(coarse_ms().saturating_sub(last + COARSE_TICK_MS))
    }

    /// When the tunnel will have been idle for `idle`, if nothing moves.
    fn deadline(&self, idle: Duration) -> Instant {
        Instant::now() + idle.saturating_sub(self.idle_for())
    }
}
