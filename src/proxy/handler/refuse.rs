//! Refusals on a client connection: record the refusal on the log entry,
//! send its response (status, `Proxy-Status`, one-line body), then
//! half-close and drain what the client is still sending, briefly.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Duration, Instant};

use crate::policy::Policy;
use crate::telemetry::access_log::Entry;

use super::super::ClientIo;
use super::super::error::{Context, ProxyError};
use super::Conn;

/// How long a refused connection is drained before closing, so that the
/// refusal is not destroyed by a TCP reset while the client is still
/// sending (RFC 9112 §9.6).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

impl<S: ClientIo> Conn<S> {
    /// Refuses the request in hand: responds, logs, lingers.
    pub(super) async fn refuse_in_place(
        &mut self,
        policy: &Policy,
        err: ProxyError,
        mut log: Entry,
        rule: Option<&str>,
    ) {
        let response = self.refusal(policy, &err, &mut log, rule);
        let _ = self.stream.write_all(&response).await;
        log.finish().await;
        self.linger().await;
    }

    /// Records the refusal on the log entry and renders the response.
    fn refusal(
        &self,
        policy: &Policy,
        err: &ProxyError,
        log: &mut Entry,
        rule: Option<&str>,
    ) -> Vec<u8> {
        let tokens = policy.tokens_in_use();
        let r = &mut log.record;
        r.decision = err.decision();
        r.reason = Some(err.reason());
        r.status = Some(err.status(tokens));
        let authority = match (&r.host, r.port) {
            (Some(h), Some(p)) if h.contains(':') => Some(format!("[{h}]:{p}")),
            (Some(h), Some(p)) => Some(format!("{h}:{p}")),
            _ => None,
        };
        let cx = Context {
            agent: r.agent.as_deref(),
            authority: authority.as_deref(),
            rule,
            peer: self.peer.ip(),
            head_limit: policy.config.limits.head_size,
        };
        tracing::debug!(peer = %self.peer, "refused: {err}");
        err.response(&cx, tokens)
    }

    /// Half-closes and drains what the client is still sending, briefly.
    async fn linger(&mut self) {
        let _ = self.stream.flush().await;
        let _ = self.stream.shutdown().await;
        // On the heap: an array here would be part of every connection's
        // future (refusals can happen on any request), idle tunnels included.
        let mut scratch = vec![0u8; 4096];
        let mut drained = 0;
        let until = Instant::now() + LINGER;
        while drained < LINGER_BYTES {
            match tokio::time::timeout_at(until, self.stream.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }
}
