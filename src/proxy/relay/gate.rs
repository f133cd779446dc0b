//! The SNI gate: what a tunnel's client may send before its TLS handshake
//! is settled.
//!
//! The first ClientHello must name the CONNECT host. That alone is not
//! enough: a TLS 1.3 server may answer it with a HelloRetryRequest, and the
//! server then acts on the client's *second* ClientHello. RFC 8446 forbids
//! a changed server_name there, but not every front enforces it, and a
//! client can provoke the retry at will (a key share for a group the server
//! does not prefer). So once a hello has passed, the client's further bytes
//! wait until the server's first answer is in: a retry request sends the
//! second hello through the same checks, anything else settles the gate.
//! Legitimate clients lose nothing by the wait, since they have nothing to
//! send before that answer but 0-RTT early data.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::host::Host;

use super::super::sni::{self, Lead, Peek, Reply};
use super::{Activity, End, Options, read_fresh, spare};

/// What the SNI gate saw in the client's ClientHello: the second one, if
/// the server asked for it.
#[derive(Debug, Default)]
pub(super) struct Hello {
    /// The server_name as sent.
    pub sni: Option<String>,
    /// An Encrypted Client Hello extension was present.
    pub ech: bool,
}

/// The gate of one tunnel, shared by its two directions.
pub(super) struct Gate<'a> {
    opts: &'a Options<'a>,
    /// Where the handshake stands: one of the stages below.
    stage: AtomicU8,
    /// The client side, while it waits for the server's answer. (A
    /// `Notify` would do, at four times the size in every tunnel.)
    waiting: Mutex<Option<Waker>>,
}

/// No ClientHello has passed yet.
const OPEN: u8 = 0;
/// A ClientHello went up; the server's first answer decides what follows.
const ASKED: u8 = 1;
/// The server sent a HelloRetryRequest: the next ClientHello is checked too.
const RETRY: u8 = 2;
/// Nothing more to check: not TLS, no retry request, or all hellos passed.
const SETTLED: u8 = 3;

// === impl Gate ===

impl<'a> Gate<'a> {
    pub(super) fn new(opts: &'a Options<'a>) -> Gate<'a> {
        Gate {
            opts,
            stage: AtomicU8::new(OPEN),
            waiting: Mutex::new(None),
        }
    }

    fn stage(&self) -> u8 {
        self.stage.load(Ordering::Acquire)
    }

    /// Moves to `to` and wakes the client side if it waits for the answer.
    fn answer(&self, to: u8) {
        self.stage.store(to, Ordering::Release);
        let waiting = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    /// The client side: passes the opening bytes through the gate and on to
    /// the upstream, noting in `seen` what the gate saw (also when it
    /// refuses). `pending` holds client bytes read past the CONNECT head.
    /// Returns once the gate is settled; the caller relays the rest.
    pub(super) async fn open<R, W>(
        &self,
        cr: &mut R,
        uw: &mut W,
        pending: BytesMut,
        up: &AtomicU64,
        activity: &Activity,
        seen: &mut Hello,
    ) -> Result<(), End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let (mut bytes, hello_end) = self.first_hello(cr, pending, activity, seen).await?;
        // Marked before the hello goes up, so whatever the server sends next
        // is read as its answer.
        let asked = hello_end.filter(|_| {
            self.stage
                .compare_exchange(OPEN, ASKED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        let Some(end) = asked else {
            self.stage.store(SETTLED, Ordering::Release);
            return send(uw, &bytes, up).await;
        };
        send(uw, &bytes[..end], up).await?;
        // What the client sent behind its hello is held (one buffer, not
        // two: every tunnel's state is sized for this step).
        bytes.advance(end);
        let held = bytes;
        let rest = if self.server_answer().await == RETRY {
            // Boxed: a retry is rare, and its state would otherwise be part
            // of every tunnel's.
            Box::pin(self.second_hello(cr, uw, held, up, activity, seen)).await?
        } else {
            held
        };
        send(uw, &rest, up).await
    }

    /// Waits until the server's answer to the first hello has been read.
    async fn server_answer(&self) -> u8 {
        std::future::poll_fn(|cx| {
            if self.stage() == ASKED {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                *waiting = Some(cx.waker().clone());
                // Checked again under the lock: `answer` stores first, then
                // takes the waker, so the answer is either seen here or woken.
                if self.stage() == ASKED {
                    return Poll::Pending;
                }
            }
            Poll::Ready(self.stage())
        })
        .await
    }

    /// Reads the client's opening bytes until the first ClientHello can be
    /// judged. Returns the bytes read and, when a hello passed, where its
    /// records end.
    async fn first_hello<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        mut pending: BytesMut,
        activity: &Activity,
        seen: &mut Hello,
    ) -> Result<(BytesMut, Option<usize>), End> {
        loop {
            match sni::parse(&pending) {
                Peek::NeedMore => {}
                Peek::NotTls if self.opts.require_sni => return Err(End::Refused("sni_missing")),
                Peek::NotTls => return Ok((pending, None)),
                Peek::ClientHello { sni, ech } => {
                    *seen = Hello { sni, ech };
                    self.judge(seen)?;
                    let end = sni::hello_end(&pending);
                    return Ok((pending, end));
                }
                // A hello we cannot read might be read differently by the
                // upstream: never let it through.
                Peek::Malformed(why) => {
                    tracing::debug!("unreadable ClientHello: {why}");
                    return Err(End::Refused("sni_mismatch"));
                }
            }
            if !read_more(r, &mut pending, activity).await? {
                // The client finished sending. Part of a hello cannot be
                // judged, so it never passes; nothing at all is a half-close
                // that the pump relays (unless SNI is required), while the
                // upstream may still answer.
                return if self.opts.require_sni || !pending.is_empty() {
                    Err(End::Refused("sni_missing"))
                } else {
                    Ok((pending, None))
                };
            }
        }
    }

    /// After a HelloRetryRequest: forwards the records the server skips
    /// until the second ClientHello, and checks that as the first was
    /// checked. Returns the hello and whatever followed it.
    async fn second_hello<R, W>(
        &self,
        cr: &mut R,
        uw: &mut W,
        mut held: BytesMut,
        up: &AtomicU64,
        activity: &Activity,
        seen: &mut Hello,
    ) -> Result<BytesMut, End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            match sni::lead(&held) {
                Lead::Skip(len) => {
                    send(uw, &held.split_to(len), up).await?;
                    continue;
                }
                Lead::NeedMore => {}
                Lead::Hello => match sni::parse(&held) {
                    Peek::NeedMore => {}
                    Peek::ClientHello { sni, ech } => {
                        *seen = Hello { sni, ech };
                        self.judge(seen)?;
                        self.stage.store(SETTLED, Ordering::Release);
                        return Ok(held);
                    }
                    // The server waits for a hello; anything else in its
                    // place is not passed on unread.
                    Peek::NotTls | Peek::Malformed(_) => {
                        tracing::debug!("no readable second ClientHello after a retry request");
                        return Err(End::Refused("sni_mismatch"));
                    }
                },
            }
            if !read_more(cr, &mut held, activity).await? {
                // The client gave up after the retry request; a partial
                // record or hello is not passed on.
                return if held.is_empty() {
                    Ok(held)
                } else {
                    Err(End::Refused("sni_missing"))
                };
            }
        }
    }

    /// The checks every ClientHello must pass: a server_name naming the
    /// CONNECT host (or none, unless required), and no Encrypted Client
    /// Hello unless allowed.
    ///
    /// With ECH, the name checked here is only the outer one: a shared
    /// front holding the ECH key (a CDN) routes on the encrypted inner name,
    /// so an agent allowed one site on that front could reach any other.
    fn judge(&self, hello: &Hello) -> Result<(), End> {
        let same = match &hello.sni {
            Some(sni) => matches!(Host::parse(sni), Ok(h) if &h == self.opts.sni_host),
            None => true,
        };
        if hello.sni.is_none() && self.opts.require_sni {
            Err(End::Refused("sni_missing"))
        } else if !same {
            Err(End::Refused("sni_mismatch"))
        } else if hello.ech && !self.opts.allow_ech {
            Err(End::Refused("ech_refused"))
        } else {
            Ok(())
        }
    }

    /// The upstream side: relays what the server sends until its answer to
    /// the client's first hello has been classified (or the gate settled
    /// otherwise). Returns true if the server finished sending meanwhile;
    /// `w` is then half-closed and the direction is done.
    pub(super) async fn watch<R, W>(
        &self,
        r: &mut R,
        w: &mut W,
        down: &AtomicU64,
        activity: &Activity,
    ) -> Result<bool, End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut reply = Vec::new();
        while matches!(self.stage(), OPEN | ASKED) {
            let buf = read_fresh(r).await.map_err(End::Error)?;
            if buf.is_empty() {
                // No retry request can come any more.
                self.answer(SETTLED);
                let _ = w.shutdown().await;
                return Ok(true);
            }
            match self.stage() {
                // The server spoke first: whatever the client sends is no
                // answer to a retry request.
                OPEN => self.stage.store(SETTLED, Ordering::Release),
                ASKED => {
                    let take = buf.len().min(sni::MAX_REPLY_BYTES - reply.len());
                    reply.extend_from_slice(&buf[..take]);
                    match sni::reply(&reply) {
                        Reply::NeedMore => {}
                        Reply::HelloRetry => self.answer(RETRY),
                        Reply::Other => self.answer(SETTLED),
                    }
                }
                _ => {}
            }
            activity.touch();
            w.write_all(&buf).await.map_err(End::Error)?;
            down.fetch_add(buf.len() as u64, Ordering::Relaxed);
            spare(buf);
        }
        Ok(false)
    }
}

/// Writes `bytes` to the upstream and counts them.
async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], up: &AtomicU64) -> Result<(), End> {
    if !bytes.is_empty() {
        w.write_all(bytes).await.map_err(End::Error)?;
        up.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Reads more client bytes into `buf`; false at EOF.
async fn read_more<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    activity: &Activity,
) -> Result<bool, End> {
    buf.reserve(4096);
    let n = r.read_buf(buf).await.map_err(End::Error)?;
    if n > 0 {
        activity.touch();
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests;
