//! Reading request heads off a client connection: the size limit, the
//! deadline, and httparse's strict parse. The head's bytes are kept as one
//! buffer and everything else refers into it, so a request costs one
//! allocation for its headers however many there are.
//!
//! Not here: what the head means (target.rs) or whether it may pass
//! (handler.rs).

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Headers per request; more is answered 431 like an oversized head.
const MAX_HEADERS: usize = 100;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Head {
    buf: Bytes,
    method: Range<usize>,
    target: Range<usize>,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// A header that must appear at most once appeared several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

/// Why no head could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The client closed (or went idle) before sending any byte: not a request.
    #[error("closed")]
    Closed,
    /// The head did not fit in `limits.head_size` (or had too many headers).
    #[error("request head too large")]
    TooLarge,
    /// The head did not arrive before the deadline.
    #[error("request head timed out")]
    Timeout,
    /// Not a well-formed HTTP/1.x request head.
    #[error("{0}")]
    Malformed(&'static str),
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request head from `r` into `buf` (which may already hold
/// bytes left over from the previous request). `first_byte` bounds the wait
/// for the request to start (keep-alive idle time); `deadline` bounds the
/// whole head once it has.
pub async fn read<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    limit: usize,
    first_byte: Instant,
    deadline: Instant,
) -> Result<Head, ReadError> {
    loop {
        if !buf.is_empty() {
            if let Some((n, mut head)) = parse(buf)? {
                if n > limit {
                    return Err(ReadError::TooLarge);
                }
                head.buf = buf.split_to(n).freeze();
                return Ok(head);
            }
            if buf.len() >= limit {
                return Err(ReadError::TooLarge);
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096.min(limit + 1 - buf.len().min(limit)).max(1024));
        }
        let until = if buf.is_empty() {
            first_byte.min(deadline)
        } else {
            deadline
        };
        let n = match tokio::time::timeout_at(until, r.read_buf(buf)).await {
            Ok(read) => read?,
            Err(_) if buf.is_empty() => return Err(ReadError::Closed),
            Err(_) => return Err(ReadError::Timeout),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Malformed("connection closed in the middle of the request head")
            });
        }
    }
}

/// The elements of a comma-separated header list (RFC 9110 §5.6.1) over
/// all of its field lines, in order, trimmed; empty elements included.
pub fn list_items<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// The length of the head and the head itself if `buf` holds a complete
/// one. Parsed once: the returned head's `buf` is empty, and its parts are
/// offsets from the start of `buf`, where the caller splits the head's
/// bytes off to put them in.
fn parse(buf: &[u8]) -> Result<Option<(usize, Head)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooLarge),
        Err(e) => return Err(ReadError::Malformed(parse_error(e))),
    };
    let base = buf.as_ptr() as usize;
    // httparse hands out slices of `buf`; keep them as offsets so the
    // head can own its bytes.
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let head = Head {
        buf: Bytes::new(),
        method: range(req.method.unwrap_or_default().as_bytes()),
        target: range(req.path.unwrap_or_default().as_bytes()),
        version: req.version.unwrap_or(1),
        headers: req
            .headers
            .iter()
            .map(|h| (range(h.name.as_bytes()), range(h.value)))
            .collect(),
    };
    Ok(Some((n, head)))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => {
            "invalid header name (obsolete line folding is not accepted)"
        }
        httparse::Error::HeaderValue => {
            "invalid header value (obsolete line folding is not accepted)"
        }
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => {
            "invalid request line (HTTP/0.9 and bare targets are not accepted)"
        }
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "not an HTTP/1.0 or HTTP/1.1 request",
    }
}

impl Head {
    pub fn method(&self) -> &str {
        self.str(&self.method)
    }

    /// The request-target exactly as sent.
    pub fn target(&self) -> &str {
        self.str(&self.target)
    }

    /// Every header in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (&self.buf[n.clone()], &self.buf[v.clone()]))
    }

    /// Every value of the header `name` (case-insensitive). Names are
    /// compared as bytes: a request's headers are looked up several times,
    /// and checking every name as UTF-8 on each lookup showed in profiles.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The single value of `name`; `Err` if it appears more than once.
    pub fn get_one<'a>(&'a self, name: &'a str) -> Result<Option<&'a [u8]>, Duplicate> {
        let mut it = self.get_all(name);
        let first = it.next();
        if it.next().is_some() {
            Err(Duplicate)
        } else {
            Ok(first)
        }
    }

    /// Whether any comma-separated token of the header `name` equals `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        list_items(self.get_all(name)).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    fn str(&self, r: &Range<usize>) -> &str {
        // httparse validated these as tokens / request-target bytes (ASCII).
        std::str::from_utf8(&self.buf[r.clone()]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn read_str(input: &[u8], limit: usize) -> Result<Head, ReadError> {
        let mut r = input;
        let mut buf = BytesMut::new();
        let far = Instant::now() + Duration::from_secs(5);
        read(&mut r, &mut buf, limit, far, far).await
    }

    #[tokio::test]
    async fn parses_connect() {
        let h = read_str(
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nX: 1\r\n\r\n",
            1024,
        )
        .await
        .unwrap();
        assert_eq!(h.method(), "CONNECT");
        assert_eq!(h.target(), "a.example:443");
        assert_eq!(h.version, 1);
        assert_eq!(h.get_one("host").unwrap(), Some(&b"a.example:443"[..]));
        assert_eq!(h.headers().count(), 2);
    }

    #[tokio::test]
    async fn rejects_bad_heads() {
        for (input, want) in [
            (&b"GET /\r\n\r\n"[..], "request line"),
            (b"GET http://a/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n", "folding"),
            (
                b"GET http://a/ HTTP/1.1\r\nBad Name: a\r\n\r\n",
                "header name",
            ),
            (b"GET http://a/ HTTP/1.1\r\nX: a", "middle"),
        ] {
            match read_str(input, 1024).await {
                Err(ReadError::Malformed(m)) => assert!(m.contains(want), "{m} !~ {want}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn limits_size() {
        let big = format!("GET http://a/ HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            read_str(big.as_bytes(), 1024).await,
            Err(ReadError::TooLarge)
        ));
        assert!(read_str(big.as_bytes(), 4096).await.is_ok());
        assert!(matches!(read_str(b"", 1024).await, Err(ReadError::Closed)));
    }
}
