//! The origin's side of a forwarded exchange: read a response head
//! without copying it (the reason phrase and headers stay byte ranges into
//! the bytes read), decide how its body is framed, and rewrite it for the
//! client.

use std::ops::Range;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{ForwardError, connection_tokens, hop_by_hop, push_header};
use crate::proxy::body::READ_CHUNK;
use crate::proxy::head::list_items;
use crate::proxy::target::{Framing, names_framing, parse_length};

/// Largest response head accepted from an origin.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 128;

/// A response head from the origin. The reason phrase and headers are
/// byte ranges into `raw`, not copies.
pub(super) struct Response {
    /// The head as received.
    pub(super) raw: BytesMut,
    /// The origin's status code.
    pub(super) status: u16,
    reason: Range<usize>,
    /// (name, value) of each header.
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// The origin said `Connection: close` (or spoke HTTP/1.0 without keep-alive).
    pub(super) close: bool,
}

/// Reads one response head from the origin into `buf`.
pub(super) async fn read_response<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    idle: Duration,
) -> Result<Response, ForwardError> {
    loop {
        if let Some(resp) = parse_response(buf)? {
            return Ok(resp);
        }
        buf.reserve(READ_CHUNK);
        let n = match tokio::time::timeout(idle, r.read_buf(buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(ForwardError::Upstream(e.to_string())),
            Err(_) => return Err(ForwardError::Timeout),
        };
        if n == 0 {
            return Err(ForwardError::Upstream(
                "origin closed the connection without a response".to_owned(),
            ));
        }
    }
}

/// A complete response head at the front of `buf`, split off it; `None`
/// while the head is still partial.
fn parse_response(buf: &mut BytesMut) -> Result<Option<Response>, ForwardError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE_HEAD => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(ForwardError::Protocol("response head too large".to_owned()));
        }
        Err(e) => {
            return Err(ForwardError::Protocol(format!(
                "malformed response head: {e}"
            )));
        }
    };
    let status = resp.code.unwrap_or(0);
    let version = resp.version.unwrap_or(1);
    // httparse hands out slices of `buf`: keep where they are.
    let base = buf.as_ptr() as usize;
    let at = |part: &[u8]| {
        (part.as_ptr() as usize)
            .checked_sub(base)
            .map(|start| start..start + part.len())
            .filter(|r| r.end <= n)
            .unwrap_or(0..0)
    };
    let reason = resp.reason.map_or(0..0, |r| at(r.as_bytes()));
    let headers: Vec<(Range<usize>, Range<usize>)> = resp
        .headers
        .iter()
        .map(|h| (at(h.name.as_bytes()), at(h.value)))
        .collect();
    let has = |name: &str, token: &str| {
        let values = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        list_items(values.map(|h| h.value)).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    };
    let close = has("connection", "close") || (version == 0 && !has("connection", "keep-alive"));
    Ok(Some(Response {
        raw: buf.split_to(n),
        status,
        reason,
        headers,
        close,
    }))
}

impl Response {
    /// RFC 9112 §6.3, strictly: conflicting lengths are the origin's error.
    pub(super) fn framing(&self, is_head: bool) -> Result<Framing, ForwardError> {
        if names_framing(self.values("connection")) {
            return Err(ForwardError::Protocol(
                "Connection names Content-Length or Transfer-Encoding".to_owned(),
            ));
        }
        if is_head || self.status == 204 || self.status == 304 {
            return Ok(Framing::None);
        }
        // The last coding decides: chunked last, or read until close.
        if let Some(last) = list_items(self.values("transfer-encoding")).last() {
            return Ok(if last.eq_ignore_ascii_case(b"chunked") {
                Framing::Chunked
            } else {
                Framing::Close
            });
        }
        let mut len: Option<u64> = None;
        for v in self.values("content-length") {
            let n = parse_length(v)
                .ok_or_else(|| ForwardError::Protocol("invalid Content-Length".to_owned()))?;
            if len.is_some_and(|l| l != n) {
                return Err(ForwardError::Protocol(
                    "conflicting Content-Length values".to_owned(),
                ));
            }
            len = Some(n);
        }
        Ok(match len {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        })
    }

    /// Each header as (name, value), in order.
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// Every value of the header `name`; names compared as bytes (see
    /// `Head::get_all`).
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

pub(super) fn rewrite_response(resp: &Response, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(resp.raw.len() + 32);
    // httparse accepts only three-digit status codes.
    let [_, hundreds, tens, ones] = [1000, 100, 10, 1].map(|d| b'0' + (resp.status / d % 10) as u8);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[hundreds, tens, ones, b' ']);
    out.extend_from_slice(&resp.raw[resp.reason.clone()]);
    out.extend_from_slice(b"\r\n");
    let tokens = connection_tokens(resp.values("connection"));
    let chunked = resp.values("transfer-encoding").next().is_some();
    for (name, value) in resp.headers() {
        if hop_by_hop(name, &tokens) || (chunked && name.eq_ignore_ascii_case(b"content-length")) {
            continue;
        }
        push_header(&mut out, name, value);
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::mangle;

    async fn rewritten(raw: &str, close: bool) -> (String, String) {
        let mut buf = BytesMut::from(raw);
        let mut nothing: &[u8] = &[];
        let resp = read_response(&mut nothing, &mut buf, Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let out = rewrite_response(&resp, close);
        (
            String::from_utf8(out).unwrap_or_default(),
            String::from_utf8_lossy(&buf).into_owned(),
        )
    }

    #[tokio::test]
    async fn a_response_head_loses_hop_by_hop_headers_and_keeps_the_rest_in_order() {
        let (out, rest) = rewritten(
            "HTTP/1.1 200 Fine Thanks\r\nConnection: x-trace, keep-alive\r\nX-Trace: 1\r\n\
             Keep-Alive: timeout=5\r\nContent-Type: text/plain\r\nProxy-Authenticate: Basic\r\n\
             Content-Length: 5\r\nSet-Cookie: a=b\r\n\r\nhello",
            false,
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
             Set-Cookie: a=b\r\n\r\n"
        );
        assert_eq!(rest, "hello", "the body stays in the buffer");
    }

    #[tokio::test]
    async fn chunked_wins_over_content_length_and_close_is_added_when_asked() {
        let (out, _) = rewritten(
            "HTTP/1.1 404 \r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            true,
        )
        .await;
        assert_eq!(
            out,
            "HTTP/1.1 404 \r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
    }

    const RESPONSES: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-a\r\nX-A: 1\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"a\"\r\n\r\n",
    ];

    /// Whatever an origin sends, a response head sluice accepts reaches the
    /// client as one well-formed head with the same status and the same
    /// body framing that sluice relays by: otherwise the client would split
    /// the byte stream into responses differently than sluice does.
    #[test]
    fn a_relayed_response_head_is_read_by_the_client_as_sluice_read_it() {
        let mut accepted = 0;
        for input in mangle::variants(&RESPONSES, 20_000, 0x0bad_0e1e_c0de_0001) {
            let mut buf = BytesMut::from(&input[..]);
            let Ok(Some(resp)) = parse_response(&mut buf) else {
                continue;
            };
            for is_head in [false, true] {
                let Ok(framing) = resp.framing(is_head) else {
                    continue;
                };
                accepted += 1;
                for close in [false, true] {
                    let out = rewrite_response(&resp, close);
                    let shown = (
                        String::from_utf8_lossy(&input),
                        String::from_utf8_lossy(&out),
                    );
                    let mut again = BytesMut::from(&out[..]);
                    let sent = match parse_response(&mut again) {
                        Ok(Some(sent)) => sent,
                        other => panic!("{:?}: {shown:?}", other.map(|r| r.map(|r| r.status))),
                    };
                    assert!(again.is_empty(), "{shown:?}");
                    assert_eq!(sent.status, resp.status, "{shown:?}");
                    assert_eq!(sent.framing(is_head).ok(), Some(framing), "{shown:?}");
                    assert!(!close || sent.close, "{shown:?}");
                }
            }
        }
        assert!(accepted > 1_000, "only {accepted} variants were accepted");
    }
}
