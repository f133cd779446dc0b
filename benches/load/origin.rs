//! The benchmark's origin: a minimal HTTP/1.1 server on 127.0.0.1 with
//! keep-alive, serving two resources:
//!
//! - `/small`: a 5-byte body, the unit of the request-rate workloads;
//! - `/bulk/<MiB>`: a body of that many MiB, streamed from a static buffer,
//!   for the throughput workload.
//!
//! It honours `Connection: close` (and closes after answering), answers 404
//! to anything else, and ignores request bodies (the benchmark sends none).
//! It is deliberately cheaper than any real origin, so that the load side's
//! CPU goes to driving sluice.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes written per `write` of a bulk body.
const BULK_CHUNK: usize = 256 * 1024;
static ZEROES: [u8; BULK_CHUNK] = [0; BULK_CHUNK];

const SMALL_BODY: &[u8] = b"hello";
const HEADERS: usize = 32;

/// Binds 127.0.0.1:0 and serves until the runtime stops.
pub async fn start() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream));
                }
                // EMFILE while the idle workload holds thousands of
                // connections: the benchmark reports the failed tunnels.
                Err(e) => {
                    eprintln!("origin: accept failed: {e}");
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    Ok(addr)
}

/// One request's head, as much as the origin cares about.
struct Request {
    len: usize,
    close: bool,
    bulk_mib: Option<u64>,
    found: bool,
}

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let req = loop {
            match parse(&buf) {
                Ok(Some(req)) => break req,
                Ok(None) => {}
                Err(()) => return,
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        buf.advance(req.len);
        if respond(&mut stream, &req).await.is_err() || req.close {
            return;
        }
    }
}

/// `Ok(None)`: the head is not complete yet. `Err`: not HTTP.
fn parse(buf: &[u8]) -> Result<Option<Request>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let close = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
    });
    let target = req.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let bulk_mib = path.strip_prefix("/bulk/").and_then(|n| n.parse().ok());
    Ok(Some(Request {
        len,
        close,
        bulk_mib,
        found: path == "/small" || bulk_mib.is_some(),
    }))
}

async fn respond(stream: &mut TcpStream, req: &Request) -> io::Result<()> {
    let connection = if req.close {
        "Connection: close\r\n"
    } else {
        ""
    };
    if let Some(mib) = req.bulk_mib {
        let mut left = mib << 20;
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {left}\r\n{connection}\r\n");
        stream.write_all(head.as_bytes()).await?;
        while left > 0 {
            let n = usize::try_from(left).map_or(BULK_CHUNK, |l| l.min(BULK_CHUNK));
            stream.write_all(&ZEROES[..n]).await?;
            left -= n as u64;
        }
        return Ok(());
    }
    let (status, body) = if req.found {
        ("200 OK", SMALL_BODY)
    } else {
        ("404 Not Found", &b""[..])
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{connection}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await
}
