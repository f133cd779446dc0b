//! Connecting upstream: dial the vetted addresses, in the resolver's order,
//! one after another until one answers. Only addresses that policy has
//! vetted ever reach this module; it never resolves anything itself.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::error::{ConnectFailure, ProxyError};

/// A connected upstream.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    pub elapsed: Duration,
}

/// Tries each address with `timeout` apiece. On failure returns the last
/// error and the last address tried.
pub async fn first(
    ips: &[IpAddr],
    port: u16,
    timeout: Duration,
) -> Result<Connected, (ProxyError, Option<IpAddr>)> {
    let started = Instant::now();
    let mut last: Option<(ProxyError, IpAddr)> = None;
    for &ip in ips {
        let addr = SocketAddr::new(ip, port);
        let err = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests and TLS records are small and latency-bound;
                // Nagle would only delay them.
                let _ = stream.set_nodelay(true);
                return Ok(Connected {
                    stream,
                    addr,
                    elapsed: started.elapsed(),
                });
            }
            Ok(Err(e)) => ProxyError::Connect {
                kind: classify(&e),
                source: e,
            },
            Err(_) => ProxyError::Connect {
                kind: ConnectFailure::Timeout,
                source: io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {timeout:?}"),
                ),
            },
        };
        tracing::debug!(%addr, "connect failed: {err}");
        last = Some((err, ip));
    }
    match last {
        Some((e, ip)) => Err((e, Some(ip))),
        None => Err((
            ProxyError::Connect {
                kind: ConnectFailure::Unavailable,
                source: io::Error::other("no address to connect to"),
            },
            None,
        )),
    }
}

fn classify(e: &io::Error) -> ConnectFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        io::ErrorKind::TimedOut => ConnectFailure::Timeout,
        _ => ConnectFailure::Unavailable,
    }
}
