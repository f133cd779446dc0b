//! The load generator's HTTP/1.1 client: one connection to the proxy, used
//! either as a CONNECT tunnel to the origin or for absolute-form requests.
//! It sends prepared request bytes and reads a response framed by
//! Content-Length (the only framing the origin and sluice's forwarder give
//! it here), discarding the body.
//!
//! Not here: scheduling, timing or counting (workloads.rs).

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

/// Read size while draining bulk bodies.
const READ_SIZE: usize = 256 * 1024;
const HEADERS: usize = 32;

/// One client connection to the proxy.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// The parts of a response head the client needs.
struct Head {
    len: usize,
    status: u16,
    content_length: Option<u64>,
}

impl Conn {
    /// A plain connection to the proxy (for absolute-form requests).
    pub async fn open(proxy: SocketAddr) -> Result<Conn, Error> {
        let stream = TcpStream::connect(proxy).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// A tunnel to `authority` ("host:port"): CONNECT, then 200.
    pub async fn tunnel(proxy: SocketAddr, authority: &str) -> Result<Conn, Error> {
        let mut conn = Conn::open(proxy).await?;
        let connect = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        conn.stream.write_all(connect.as_bytes()).await?;
        let head = conn.head().await?;
        if head.status != 200 {
            return Err(format!("CONNECT answered {}", head.status).into());
        }
        // A 2xx to CONNECT has no body: what follows is the tunnel's.
        conn.buf.advance(head.len);
        Ok(conn)
    }

    /// Sends `request` and reads the whole response; returns its body size.
    /// Anything but 200 is an error.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<u64, Error> {
        self.stream.write_all(request).await?;
        let head = self.head().await?;
        self.buf.advance(head.len);
        if head.status != 200 {
            return Err(format!("request answered {}", head.status).into());
        }
        let total = head
            .content_length
            .ok_or("response without Content-Length")?;
        let mut left = total;
        loop {
            let take = left.min(self.buf.len() as u64);
            self.buf.advance(take as usize);
            left -= take;
            if left == 0 {
                return Ok(total);
            }
            self.fill(READ_SIZE).await?;
        }
    }

    /// Reads until a whole response head is buffered, and parses it.
    async fn head(&mut self) -> Result<Head, Error> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = resp.parse(&self.buf)? {
                let content_length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse().ok());
                return Ok(Head {
                    len,
                    status: resp.code.unwrap_or(0),
                    content_length,
                });
            }
            self.fill(4096).await?;
        }
    }

    /// One read of up to `size` more bytes; the peer closing is an error.
    async fn fill(&mut self, size: usize) -> Result<(), Error> {
        self.buf.reserve(size);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err("connection closed mid-response".into());
        }
        Ok(())
    }
}
