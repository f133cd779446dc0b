//! Refusals: the one place where a failed request becomes a status code, an
//! RFC 9209 `Proxy-Status` header, a one-line body and a log reason (SPEC
//! "Responses to refusals", row for row).

use std::fmt::Write as _;

use crate::dns::DnsError;
use crate::identity::IdentityError;
use crate::policy::DenyReason;

use super::forward::ForwardError;

/// Why sluice answers a request itself instead of relaying it.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("identity: {0}")]
    Identity(IdentityError),
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    HeadTooLarge,
    #[error("denied: {}", .0.as_str())]
    Denied(DenyReason),
    #[error("resolve: {0}")]
    Dns(DnsError),
    #[error("connect: {kind:?}: {source}")]
    Connect {
        kind: ConnectFailure,
        #[source]
        source: std::io::Error,
    },
    /// The origin's response head was not one sluice will relay.
    #[error("invalid response: {0}")]
    UpstreamProtocol(String),
    /// The origin sent no response head within the idle timeout.
    #[error("no response before the idle timeout")]
    ResponseTimeout,
    #[error("connection limit reached")]
    ConnectionLimit,
}

/// How an upstream connect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Unavailable,
    Timeout,
}

/// What a refusal needs to describe itself in a message.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub agent: Option<&'a str>,
    /// `host:port`, when the target was understood.
    pub authority: Option<&'a str>,
    /// The rule that denied it, if one did.
    pub rule: Option<&'a str>,
    pub peer: std::net::IpAddr,
    pub head_limit: usize,
}

impl ProxyError {
    /// The status sent to the client. `tokens_in_use` makes an unidentified
    /// request 407 (so clients send credentials) instead of 403.
    pub fn status(&self, tokens_in_use: bool) -> u16 {
        match self {
            ProxyError::Identity(IdentityError::BadCredentials) => 407,
            ProxyError::Identity(IdentityError::Unidentified) if tokens_in_use => 407,
            ProxyError::Identity(IdentityError::Unidentified) | ProxyError::Denied(_) => 403,
            ProxyError::Malformed(_) => 400,
            ProxyError::HeadTooLarge => 431,
            ProxyError::Dns(DnsError::Timeout) => 504,
            ProxyError::Dns(_) => 502,
            ProxyError::Connect {
                kind: ConnectFailure::Timeout,
                ..
            }
            | ProxyError::ResponseTimeout => 504,
            ProxyError::Connect { .. } | ProxyError::UpstreamProtocol(_) => 502,
            ProxyError::ConnectionLimit => 503,
        }
    }

    /// The log `reason` and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Identity(e) => e.as_str(),
            ProxyError::Malformed(_) => "malformed",
            ProxyError::HeadTooLarge => "head_too_large",
            ProxyError::Denied(r) => r.as_str(),
            ProxyError::Dns(DnsError::Timeout) => "dns_timeout",
            ProxyError::Dns(_) => "dns_error",
            ProxyError::Connect { kind, .. } => match kind {
                ConnectFailure::Refused => "connection_refused",
                ConnectFailure::Unavailable => "destination_unavailable",
                ConnectFailure::Timeout => "connection_timeout",
            },
            ProxyError::UpstreamProtocol(_) => "http_protocol_error",
            ProxyError::ResponseTimeout => "http_response_timeout",
            ProxyError::ConnectionLimit => "connection_limit",
        }
    }

    /// The log `decision`: `error` when the policy allowed the request and
    /// DNS or the upstream failed; `deny` otherwise.
    pub fn decision(&self) -> &'static str {
        match self {
            ProxyError::Dns(_)
            | ProxyError::Connect { .. }
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::ResponseTimeout => "error",
            _ => "deny",
        }
    }

    /// The `Proxy-Status` value (RFC 9209 §2.3 error types).
    pub fn proxy_status(&self) -> String {
        let error = match self {
            ProxyError::Identity(_) => "http_request_denied",
            ProxyError::Denied(DenyReason::DestinationIpProhibited) => "destination_ip_prohibited",
            ProxyError::Denied(_) => "http_request_denied",
            ProxyError::Malformed(_) | ProxyError::HeadTooLarge => "http_request_error",
            ProxyError::Dns(DnsError::Timeout) => "dns_timeout",
            ProxyError::Dns(DnsError::Rcode { rcode }) => {
                return format!("sluice; error=dns_error; rcode=\"{rcode}\"");
            }
            ProxyError::Dns(DnsError::Other(_)) => "dns_error",
            ProxyError::Connect { kind, .. } => match kind {
                ConnectFailure::Refused => "connection_refused",
                ConnectFailure::Unavailable => "destination_unavailable",
                ConnectFailure::Timeout => "connection_timeout",
            },
            ProxyError::UpstreamProtocol(_) => "http_protocol_error",
            ProxyError::ResponseTimeout => "http_response_timeout",
            ProxyError::ConnectionLimit => "connection_limit_reached",
        };
        format!("sluice; error={error}")
    }

    /// The one-line body: what happened, in words an agent's operator (or
    /// the agent's model) can act on.
    pub fn message(&self, cx: &Context<'_>) -> String {
        let who = match cx.agent {
            Some(a) => format!("agent \"{a}\""),
            None => "this client".to_owned(),
        };
        let dest = cx.authority.unwrap_or("the destination");
        match self {
            ProxyError::Identity(IdentityError::BadCredentials) => {
                "sluice: the proxy credentials are not valid".to_owned()
            }
            ProxyError::Identity(IdentityError::Unidentified) => format!(
                "sluice: request from {} matches no agent (send proxy credentials or connect from a registered source)",
                cx.peer
            ),
            ProxyError::Malformed(why) => format!("sluice: malformed request: {why}"),
            ProxyError::HeadTooLarge => {
                format!("sluice: request head larger than {} bytes", cx.head_limit)
            }
            ProxyError::Denied(DenyReason::NotAllowed) => {
                format!("sluice: {who} may not reach {dest} (no allow rule matches)")
            }
            ProxyError::Denied(DenyReason::DeniedByRule) => {
                let mut m = format!("sluice: {who} may not reach {dest} (deny rule");
                if let Some(rule) = cx.rule {
                    let _ = write!(m, " \"{rule}\"");
                }
                m.push_str(" matches)");
                m
            }
            ProxyError::Denied(DenyReason::DestinationIpProhibited) => format!(
                "sluice: {who} may not reach {dest} (it resolves only to forbidden addresses)"
            ),
            ProxyError::Dns(DnsError::Timeout) => {
                format!("sluice: DNS lookup for {dest} timed out")
            }
            ProxyError::Dns(e) => format!("sluice: cannot resolve {dest}: {e}"),
            ProxyError::Connect { kind, .. } => match kind {
                ConnectFailure::Refused => format!("sluice: {dest} refused the connection"),
                ConnectFailure::Unavailable => format!("sluice: {dest} is unreachable"),
                ConnectFailure::Timeout => format!("sluice: connecting to {dest} timed out"),
            },
            ProxyError::UpstreamProtocol(why) => {
                format!("sluice: {dest} sent a response sluice will not relay: {why}")
            }
            ProxyError::ResponseTimeout => format!(
                "sluice: {dest} took the request but sent no response within the idle timeout"
            ),
            ProxyError::ConnectionLimit => {
                "sluice: too many connections; try again later".to_owned()
            }
        }
    }

    /// The refusal for a forward that failed before any byte of the
    /// origin's response reached the client. `Err` gives the error back
    /// once the response has started: then the connection can only close.
    ///
    /// # Errors
    /// [`ForwardError::Broken`], and a bad request body found after the
    /// response began.
    pub fn from_forward(e: ForwardError) -> Result<ProxyError, ForwardError> {
        Ok(match e {
            ForwardError::Upstream(msg) => ProxyError::Connect {
                kind: ConnectFailure::Unavailable,
                source: std::io::Error::other(msg),
            },
            ForwardError::Timeout => ProxyError::ResponseTimeout,
            ForwardError::Protocol(why) => ProxyError::UpstreamProtocol(why),
            ForwardError::ClientBody {
                why,
                responded: false,
            } => ProxyError::Malformed(why),
            e @ (ForwardError::ClientBody { .. } | ForwardError::Broken(_)) => return Err(e),
        })
    }

    /// The complete HTTP/1.1 response. The connection is closed after it.
    pub fn response(&self, cx: &Context<'_>, tokens_in_use: bool) -> Vec<u8> {
        let status = self.status(tokens_in_use);
        let mut body = self.message(cx);
        body.push('\n');
        let mut out = String::with_capacity(256 + body.len());
        let _ = write!(
            out,
            "HTTP/1.1 {status} {}\r\nProxy-Status: {}\r\n",
            reason_phrase(status),
            self.proxy_status()
        );
        if status == 407 {
            out.push_str("Proxy-Authenticate: Basic realm=\"sluice\"\r\n");
        }
        let _ = write!(
            out,
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        out.into_bytes()
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC "Responses to refusals", row by row.
    #[test]
    fn spec_table() {
        let io = || std::io::Error::other("x");
        let rows: Vec<(ProxyError, u16, &str, &str)> = vec![
            (
                ProxyError::Denied(DenyReason::NotAllowed),
                403,
                "sluice; error=http_request_denied",
                "not_allowed",
            ),
            (
                ProxyError::Denied(DenyReason::DeniedByRule),
                403,
                "sluice; error=http_request_denied",
                "denied_by_rule",
            ),
            (
                ProxyError::Denied(DenyReason::DestinationIpProhibited),
                403,
                "sluice; error=destination_ip_prohibited",
                "destination_ip_prohibited",
            ),
            (
                ProxyError::Identity(IdentityError::Unidentified),
                403,
                "sluice; error=http_request_denied",
                "unidentified",
            ),
            (
                ProxyError::Identity(IdentityError::BadCredentials),
                407,
                "sluice; error=http_request_denied",
                "bad_credentials",
            ),
            (
                ProxyError::Dns(DnsError::Rcode { rcode: "NXDOMAIN" }),
                502,
                "sluice; error=dns_error; rcode=\"NXDOMAIN\"",
                "dns_error",
            ),
            (
                ProxyError::Dns(DnsError::Timeout),
                504,
                "sluice; error=dns_timeout",
                "dns_timeout",
            ),
            (
                ProxyError::Connect {
                    kind: ConnectFailure::Refused,
                    source: io(),
                },
                502,
                "sluice; error=connection_refused",
                "connection_refused",
            ),
            (
                ProxyError::Connect {
                    kind: ConnectFailure::Unavailable,
                    source: io(),
                },
                502,
                "sluice; error=destination_unavailable",
                "destination_unavailable",
            ),
            (
                ProxyError::Connect {
                    kind: ConnectFailure::Timeout,
                    source: io(),
                },
                504,
                "sluice; error=connection_timeout",
                "connection_timeout",
            ),
            (
                ProxyError::ResponseTimeout,
                504,
                "sluice; error=http_response_timeout",
                "http_response_timeout",
            ),
            (
                ProxyError::UpstreamProtocol("x".to_owned()),
                502,
                "sluice; error=http_protocol_error",
                "http_protocol_error",
            ),
            (
                ProxyError::Malformed("x"),
                400,
                "sluice; error=http_request_error",
                "malformed",
            ),
            (
                ProxyError::HeadTooLarge,
                431,
                "sluice; error=http_request_error",
                "head_too_large",
            ),
            (
                ProxyError::ConnectionLimit,
                503,
                "sluice; error=connection_limit_reached",
                "connection_limit",
            ),
        ];
        for (e, status, ps, reason) in rows {
            assert_eq!(e.status(false), status, "{e}");
            assert_eq!(e.proxy_status(), ps, "{e}");
            assert_eq!(e.reason(), reason, "{e}");
        }
        assert_eq!(
            ProxyError::Identity(IdentityError::Unidentified).status(true),
            407
        );
    }

    #[test]
    fn body_is_one_line() {
        let cx = Context {
            agent: Some("orchestrator"),
            authority: Some("evil.example:443"),
            rule: None,
            peer: [10, 0, 1, 7].into(),
            head_limit: 16384,
        };
        let r = ProxyError::Denied(DenyReason::NotAllowed).response(&cx, false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"));
        assert!(text.ends_with(
            "\r\n\r\nsluice: agent \"orchestrator\" may not reach evil.example:443 (no allow rule matches)\n"
        ));
    }
}
