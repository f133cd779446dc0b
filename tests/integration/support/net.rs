//! Loopback peers: clients that connect from a chosen 127.0.0.x source (so
//! tests can be several agents at once), raw HTTP exchanges, and origins
//! that count their connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Connects to `to` from `from` (any port).
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(to).await.unwrap()
}

/// A parsed response head plus whatever body arrived until close (or
/// Content-Length bytes).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response head and its body (Content-Length, or to EOF when
/// absent). Bytes past it stay unread in the stream (reads are exact).
pub async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(
            n == 1,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let mut body = Vec::new();
    match len {
        Some(n) => {
            body.resize(n, 0);
            s.read_exact(&mut body).await.unwrap();
        }
        None if status == 200 && headers.is_empty() => {} // CONNECT established
        None => {
            s.read_to_end(&mut body).await.unwrap();
        }
    }
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends `request` as-is and reads the response.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &str) -> Response {
    s.write_all(request.as_bytes()).await.unwrap();
    read_response(s).await
}

/// A CONNECT from `from` through `proxy` to `target`, with extra header lines.
pub async fn connect(
    from: [u8; 4],
    proxy: SocketAddr,
    target: &str,
    headers: &str,
) -> (TcpStream, Response) {
    let mut s = connect_from(from, proxy).await;
    let r = exchange(
        &mut s,
        &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n"),
    )
    .await;
    (s, r)
}

/// Asserts that `echo` (what an [`Origin`] answered) starts with the
/// request line `line`: the request arrived as the origin should see it.
pub fn assert_request_line(echo: &str, line: &str) {
    assert!(echo.starts_with(&format!("{line}\r\n")), "{echo}");
}

/// A one-connection origin on 127.0.0.1:0 that reads until the client
/// half-closes, then sends `answer(what it received)` and closes. Returns
/// its port.
pub async fn answer_after_eof(answer: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let mut got = Vec::new();
        s.read_to_end(&mut got)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.write_all(&answer(got))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    addr.port()
}

/// Half-closes `s` (the client sends nothing more) and reads everything
/// that comes back until EOF.
pub async fn half_close_and_read<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> String {
    s.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    answer
}

/// An HTTP/1.1 origin on `ip`:0 that answers every request with 200 and a
/// body describing what it received (request line and headers), keeping
/// connections alive. Counts accepted connections.
pub struct Origin {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start(ip: [u8; 4]) -> Origin {
        Self::start_on(SocketAddr::from((ip, 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> Origin {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_origin(stream));
            }
        });
        Origin {
            addr,
            accepted,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads requests (head + Content-Length or chunked body) and answers each.
async fn serve_origin(mut s: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap())
        {
            while buf.len() < len {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            body = buf.drain(..len).collect();
        } else if lower.contains("transfer-encoding: chunked") {
            // Read until the terminating chunk; decode naively (test data is simple).
            loop {
                if let Some(i) = find(&buf, b"0\r\n\r\n") {
                    let raw: Vec<u8> = buf.drain(..i + 5).collect();
                    body = dechunk(&raw);
                    break;
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
        let reply = format!("{head}body={}", String::from_utf8_lossy(&body));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n{reply}",
            reply.len()
        );
        if s.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    loop {
        let i = find(rest, b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..i]).unwrap(), 16).unwrap();
        rest = &rest[i + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A listener that counts connections and never answers (for "must not be dialled" checks).
pub struct Sentinel {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sentinel {
    pub async fn start_on(addr: SocketAddr) -> Sentinel {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(s);
            }
        });
        Sentinel {
            addr,
            accepted,
            task,
        }
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.task.abort();
    }
}
