//! Absolute-form HTTP forwarding: rewrite the request for the origin
//! (origin-form target, hop-by-hop and `Proxy-*` headers removed), stream
//! the body up and the response down, byte for byte, and tell the caller
//! whether both connections can carry another request.
//!
//! Bodies are never buffered whole (body.rs): they pass through a
//! fixed-size buffer, with their framing checked (chunked.rs) so that
//! sluice, the client and the origin agree on where each message ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::ClientIo;
use super::body::{BodyError, relay_body};
use super::head::{Head, list_items};
use super::target::{Framing, Target};

mod response;
use response::{Response, read_response, rewrite_response};

/// A forwarded exchange.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// The origin's final status, sent to the client.
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// The client connection may carry another request.
    pub client_reusable: bool,
    /// The upstream connection may carry another request.
    pub upstream_reusable: bool,
}

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The client's request body was malformed, cut short or stalled.
    /// Unless the origin's final response had started reaching the client
    /// (`responded`), the client can still be told so with a 400.
    #[error("request body: {why}")]
    ClientBody { why: &'static str, responded: bool },
    /// The origin's connection failed (reset, closed, idle) before any
    /// response byte reached the client: answer 502. On a pooled
    /// connection, a safe request is retried on a fresh one.
    #[error("upstream: {0}")]
    Upstream(String),
    /// The origin answered with a response head sluice will not relay
    /// (malformed, too large, or framed ambiguously), before any response
    /// byte reached the client: answer 502 `http_protocol_error`.
    #[error("invalid response: {0}")]
    Protocol(String),
    /// The origin sent no response head within the idle timeout: answer
    /// 504 `http_response_timeout` (never retried: it may be working).
    #[error("no response before the idle timeout")]
    Timeout,
    /// Something failed after the response had started: the client
    /// connection can only be closed.
    #[error("relay: {0}")]
    Broken(String),
}

/// Options that shape one forward.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub idle_timeout: Duration,
}

/// Forwards one request. `cbuf` holds client bytes read past the head;
/// `ubuf` is the upstream connection's read buffer (kept across requests).
pub async fn forward<C: ClientIo>(
    client: &mut C,
    cbuf: &mut BytesMut,
    head: &Head,
    target: &Target,
    upstream: &mut TcpStream,
    ubuf: &mut BytesMut,
    opts: Options,
) -> Result<Forwarded, ForwardError> {
    let super::target::Kind::Forward {
        origin_form, body, ..
    } = &target.kind
    else {
        return Err(ForwardError::Upstream(
            "not a forwardable request".to_owned(),
        ));
    };
    let msg = Message {
        head: rewrite_request(head, origin_form, target),
        body: *body,
        is_head: head.method() == "HEAD",
        client_wants_close: head.version == 0 || head.has_token("connection", "close"),
    };
    let idle = opts.idle_timeout;
    // A plain TCP client splits by borrowing; tokio's generic split (an
    // Arc and a lock taken on every read and write) only for TLS.
    match client.tcp() {
        Some(tcp) => {
            let (cr, cw) = tcp.split();
            exchange(cr, cw, cbuf, &msg, upstream, ubuf, idle).await
        }
        None => {
            let (cr, cw) = tokio::io::split(client);
            exchange(cr, cw, cbuf, &msg, upstream, ubuf, idle).await
        }
    }
}

/// The request as it goes to the origin, and what shapes its response.
struct Message {
    /// The rewritten request head.
    head: Vec<u8>,
    body: Framing,
    is_head: bool,
    client_wants_close: bool,
}

/// Sends `msg` and its body up while relaying the response down.
async fn exchange<R, W>(
    mut cr: R,
    mut cw: W,
    cbuf: &mut BytesMut,
    msg: &Message,
    upstream: &mut TcpStream,
    ubuf: &mut BytesMut,
    idle: Duration,
) -> Result<Forwarded, ForwardError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (request_head, body) = (&msg.head, msg.body);
    let (is_head, client_wants_close) = (msg.is_head, msg.client_wants_close);
    let (mut ur, mut uw) = upstream.split();
    // Set once the final response starts towards the client: from then on
    // a failure of the request body can only close the connection.
    let responded = AtomicBool::new(false);

    let up = async {
        let sent = relay_body(&mut cr, cbuf, &mut uw, body, idle, request_head).await;
        request_sent(sent, request_head.len() as u64)
    };
    let down = async {
        let (resp, mut bytes) = final_response(&mut ur, ubuf, &mut cw, idle).await?;
        let framing = resp.framing(is_head)?;
        let close = client_wants_close || framing == Framing::Close;
        let out = rewrite_response(&resp, close);
        bytes += out.len() as u64;
        responded.store(true, Ordering::Relaxed);
        let n = relay_body(&mut ur, ubuf, &mut cw, framing, idle, &out)
            .await
            .map_err(|e| ForwardError::Broken(e.to_string()))?;
        cw.flush()
            .await
            .map_err(|e| ForwardError::Broken(e.to_string()))?;
        bytes += n;
        let upstream_ok = framing != Framing::Close && !resp.close && ubuf.is_empty();
        Ok::<_, ForwardError>((resp.status, bytes, !close, upstream_ok))
    };
    let ((up_bytes, body_sent), (status, down_bytes, client_ok, upstream_ok)) =
        match tokio::try_join!(up, down) {
            Ok(done) => done,
            Err(ForwardError::ClientBody { why, .. }) => {
                return Err(ForwardError::ClientBody {
                    why,
                    responded: responded.load(Ordering::Relaxed),
                });
            }
            Err(e) => return Err(e),
        };
    Ok(Forwarded {
        status,
        bytes_up: up_bytes,
        bytes_down: down_bytes,
        client_reusable: client_ok && body_sent,
        upstream_reusable: upstream_ok && body_sent,
    })
}

/// The request's side of an exchange: the bytes sent upstream and whether
/// the whole body went, or why the client is at fault.
fn request_sent(sent: Result<u64, BodyError>, head_len: u64) -> Result<(u64, bool), ForwardError> {
    match sent {
        Ok(n) => Ok((head_len + n, true)),
        Err(BodyError::HeadWrite(e)) => Err(ForwardError::Upstream(e.to_string())),
        // The origin stopped reading (it may already have answered): the
        // response decides what the client sees.
        Err(BodyError::Write(_)) => Ok((head_len, false)),
        Err(BodyError::Malformed(m)) => Err(client_body(m)),
        Err(BodyError::Truncated) => Err(client_body("client closed before the end of the body")),
        Err(BodyError::Idle) => Err(client_body("client went idle in the middle of the body")),
        Err(BodyError::Read(_)) => Err(client_body("reading the request body failed")),
    }
}

fn client_body(why: &'static str) -> ForwardError {
    ForwardError::ClientBody {
        why,
        responded: false,
    }
}

/// Reads the origin's final response head, passing interim ones (100
/// Continue, 103 Early Hints) through to the client; returns it with the
/// bytes of the interim heads sent.
async fn final_response<R, W>(
    ur: &mut R,
    ubuf: &mut BytesMut,
    cw: &mut W,
    idle: Duration,
) -> Result<(Response, u64), ForwardError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut bytes = 0u64;
    loop {
        let resp = read_response(ur, ubuf, idle).await?;
        match resp.status {
            101 => {
                return Err(ForwardError::Protocol(
                    "101 Switching Protocols without an Upgrade request".to_owned(),
                ));
            }
            100..200 => {
                cw.write_all(&resp.raw)
                    .await
                    .map_err(|e| ForwardError::Broken(e.to_string()))?;
                bytes += resp.raw.len() as u64;
            }
            _ => return Ok((resp, bytes)),
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus every `Proxy-*` header: credentials meant for sluice must never
/// reach an origin.
/// Names are compared as bytes: every header of every forwarded request
/// and response passes through here.
fn hop_by_hop(name: &[u8], connection_tokens: &[&[u8]]) -> bool {
    const HOP: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name.len() >= 6 && name[..6].eq_ignore_ascii_case(b"proxy-")
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    list_items(values).filter(|t| !t.is_empty()).collect()
}

/// The head sent upstream for a forwarded request: origin-form target,
/// the client's fields minus hop-by-hop and `Proxy-*` ones, and `Host` if
/// the client sent none.
pub fn rewrite_request(head: &Head, origin_form: &str, target: &Target) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    out.extend_from_slice(origin_form.as_bytes());
    out.extend_from_slice(if head.version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let tokens = connection_tokens(head.get_all("connection"));
    let mut has_host = false;
    for (name, value) in head.headers() {
        if hop_by_hop(name, &tokens) {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case(b"host");
        push_header(&mut out, name, value);
    }
    if !has_host {
        let host = if target.port == 80 {
            target.host.to_string()
        } else {
            target.authority()
        };
        push_header(&mut out, b"Host", host.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::parse_authority;
    use crate::mangle;
    use crate::proxy::head::{self, ReadError};
    use crate::proxy::target::{Kind, request_framing};
    use tokio::time::Instant;

    /// One request head read from `bytes`, and what was left after it.
    async fn head_of(bytes: &[u8]) -> (Result<Head, ReadError>, usize) {
        let mut r = bytes;
        let mut buf = BytesMut::new();
        let far = Instant::now() + Duration::from_secs(5);
        let head = head::read(&mut r, &mut buf, 64 * 1024, far, far).await;
        (head, buf.len() + r.len())
    }

    const REQUESTS: [&[u8]; 4] = [
        b"POST http://api.example.com/v1/x?y=1 HTTP/1.1\r\nHost: api.example.com\r\n\
          Content-Length: 5\r\nConnection: keep-alive\r\n\r\n",
        b"POST http://api.example.com:8080/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\
          Proxy-Authorization: Bearer secret\r\nX-A: 1\r\n\r\n",
        b"GET http://[2001:db8::1]/ HTTP/1.0\r\nConnection: x-a\r\nX-A: 1\r\nAccept: */*\r\n\r\n",
        b"PUT http://api.example.com/ HTTP/1.1\r\nHost: api.example.com:80\r\n\
          Content-Length: 0\r\nTE: trailers\r\nUpgrade: h2c\r\n\r\n",
    ];

    /// Whatever an agent sends, a request sluice accepts reaches the origin
    /// as one well-formed head that frames the body exactly as sluice
    /// relays it, names the same host, and carries no `Proxy-*` header. A
    /// request the origin read differently would be smuggling.
    #[tokio::test]
    async fn a_forwarded_head_is_read_by_the_origin_as_sluice_read_it() {
        let mut accepted = 0;
        for input in mangle::variants(&REQUESTS, 20_000, 0x0005_eed5_f0e4_a4d5) {
            let Ok(head) = head_of(&input).await.0 else {
                continue;
            };
            let Ok(target) = Target::parse(&head) else {
                continue;
            };
            let Kind::Forward {
                origin_form, body, ..
            } = &target.kind
            else {
                continue;
            };
            accepted += 1;
            let shown = String::from_utf8_lossy(&input);
            let out = rewrite_request(&head, origin_form, &target);
            let (sent, left) = head_of(&out).await;
            let sent = sent.unwrap_or_else(|e| {
                panic!("{e}: {shown:?} became {:?}", String::from_utf8_lossy(&out))
            });
            assert_eq!(left, 0, "{shown:?}");
            assert_eq!(
                request_framing(&sent),
                Ok(*body),
                "{shown:?} became {:?}",
                String::from_utf8_lossy(&out)
            );
            let host = sent
                .get_one("host")
                .unwrap_or_else(|_| panic!("two Host headers: {out:?}"))
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| parse_authority(v, Some(80)).ok());
            assert_eq!(
                host,
                Some((target.host.clone(), target.port)),
                "{shown:?} became {:?}",
                String::from_utf8_lossy(&out)
            );
            assert!(
                !sent
                    .headers()
                    .any(|(n, _)| n.len() >= 6 && n[..6].eq_ignore_ascii_case(b"proxy-")),
                "{:?}",
                String::from_utf8_lossy(&out)
            );
        }
        assert!(accepted > 1_000, "only {accepted} variants were accepted");
    }
}
