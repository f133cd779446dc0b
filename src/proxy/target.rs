//! What a request asks for: the destination of a CONNECT (authority-form)
//! or of an absolute-form request, normalised, plus the checks that keep a
//! forwarded request unambiguous (Host agreement, body framing).
//!
//! Not here: reading the bytes (head.rs) or whether the destination is
//! allowed (policy/).

use crate::host::{self, Host};

use super::head::{Head, list_items};

/// The destination and shape of one request.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: Host,
    pub port: u16,
    pub kind: Kind,
}

/// CONNECT tunnel or forwarded HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Forward {
        /// The origin-form request-target to send upstream (`/path?query`).
        origin_form: String,
        /// Where the query starts in `origin_form` (just after its '?').
        query_at: Option<usize>,
        /// The request body's framing.
        body: Framing,
    },
}

impl Kind {
    /// A forwarded request's path as sent, without the query (for the log).
    pub fn path(&self) -> Option<&str> {
        match self {
            Kind::Connect => None,
            Kind::Forward {
                origin_form,
                query_at,
                ..
            } => Some(&origin_form[..query_at.map_or(origin_form.len(), |q| q - 1)]),
        }
    }

    /// A forwarded request's query without its '?', if it has one.
    pub fn query(&self) -> Option<&str> {
        match self {
            Kind::Connect => None,
            Kind::Forward {
                origin_form,
                query_at,
                ..
            } => query_at.map(|q| &origin_form[q..]),
        }
    }
}

/// How a message body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

impl Target {
    /// Parses and checks the request's target. Errors are `malformed` (400),
    /// the message says what was wrong.
    pub fn parse(head: &Head) -> Result<Target, &'static str> {
        if head.method() == "CONNECT" {
            let (host, port) = host::parse_authority(head.target(), None)
                .map_err(|_| "CONNECT needs host:port with a valid host and port")?;
            return Ok(Target {
                host,
                port,
                kind: Kind::Connect,
            });
        }
        let t = head.target();
        let rest = match t.get(..7) {
            Some(s) if s.eq_ignore_ascii_case("http://") => &t[7..],
            _ if t.starts_with('/') || t == "*" => {
                return Err(
                    "origin-form request: send requests to a proxy in absolute form (http://host/path) or use CONNECT",
                );
            }
            _ if t.len() > 8 && t[..8].eq_ignore_ascii_case("https://") => {
                return Err("https:// in absolute form is not proxied: use CONNECT for TLS");
            }
            _ => return Err("request-target is not an http:// URL"),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path_query) = rest.split_at(split);
        if authority.contains('@') {
            return Err("userinfo in the URL is not allowed");
        }
        if path_query.contains('#') {
            return Err("fragment in the request-target");
        }
        let (host, port) = host::parse_authority(authority, Some(80))
            .map_err(|_| "invalid host or port in the URL")?;
        let origin_form = match path_query {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        let query_at = origin_form.find('?').map(|i| i + 1);
        check_host_header(head, authority, &host, port)?;
        Ok(Target {
            host,
            port,
            kind: Kind::Forward {
                origin_form,
                query_at,
                body: request_framing(head)?,
            },
        })
    }

    /// `host:port` as the log and messages show it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The Host header, when present, must name the URI's host and port (SPEC
/// "Protocols"): an origin that routes on Host must not be steered to a
/// name the policy never saw. `authority` is the URI's, as sent, which
/// parsed to `host` and `port`.
fn check_host_header(
    head: &Head,
    authority: &str,
    host: &Host,
    port: u16,
) -> Result<(), &'static str> {
    let value = match head.get_one("host") {
        Err(_) => return Err("more than one Host header"),
        Ok(None) => return Ok(()),
        Ok(Some(v)) => v,
    };
    // What clients send: the URI's authority again, byte for byte. The
    // same bytes parse the same way, so there is nothing to compare.
    if value == authority.as_bytes() {
        return Ok(());
    }
    let value = std::str::from_utf8(value).map_err(|_| "Host header is not ASCII")?;
    let (h, p) =
        host::parse_authority(value.trim(), Some(80)).map_err(|_| "invalid Host header")?;
    if &h != host || p != port {
        return Err("Host header does not match the URL");
    }
    Ok(())
}

/// Request body framing, refusing the shapes that let two parsers disagree
/// about where a request ends (request smuggling): Content-Length together
/// with Transfer-Encoding, several Content-Length values, any
/// Transfer-Encoding other than exactly `chunked`, and a `Connection`
/// header naming either (see [`names_framing`]).
pub(super) fn request_framing(head: &Head) -> Result<Framing, &'static str> {
    if names_framing(head.get_all("connection")) {
        return Err("Connection names Content-Length or Transfer-Encoding");
    }
    let te: Vec<&[u8]> = head.get_all("transfer-encoding").collect();
    let cl: Vec<&[u8]> = head.get_all("content-length").collect();
    if !te.is_empty() && !cl.is_empty() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if !te.is_empty() {
        if head.version == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 request");
        }
        if te.len() != 1 || !te[0].trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err("Transfer-Encoding other than chunked");
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(Framing::None),
        [v] => parse_length(v)
            .map(|n| {
                if n == 0 {
                    Framing::None
                } else {
                    Framing::Length(n)
                }
            })
            .ok_or("invalid Content-Length"),
        _ => Err("more than one Content-Length"),
    }
}

/// Whether `Connection` values name Content-Length or Transfer-Encoding.
/// A proxy removes the headers `Connection` names (RFC 9110 §7.6.1), so
/// forwarding such a message would take its framing away: the peer would
/// read the body as the next message (request smuggling, or a response
/// the client splits differently than sluice). Such messages are refused.
pub fn names_framing<'a>(connection: impl Iterator<Item = &'a [u8]>) -> bool {
    list_items(connection).any(|t| {
        t.eq_ignore_ascii_case(b"content-length") || t.eq_ignore_ascii_case(b"transfer-encoding")
    })
}

/// A Content-Length value: digits only (no sign, no list, no spaces inside).
pub fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::head;
    use bytes::BytesMut;
    use tokio::time::{Duration, Instant};

    /// Reads `raw` as a request head and parses its target.
    async fn parse(raw: &str) -> Result<Target, &'static str> {
        let mut r = raw.as_bytes();
        let mut buf = BytesMut::new();
        let far = Instant::now() + Duration::from_secs(5);
        let head = head::read(&mut r, &mut buf, 64 * 1024, far, far)
            .await
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"));
        Target::parse(&head)
    }

    async fn target(raw: &str) -> Target {
        parse(raw).await.unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    /// What the origin is sent, and what the log shows as path and query.
    #[tokio::test]
    async fn the_request_target_splits_into_path_and_query_at_the_first_question_mark() {
        for (url, origin_form, path, query) in [
            ("http://a.example", "/", "/", None),
            ("http://a.example/", "/", "/", None),
            ("http://a.example?q=1", "/?q=1", "/", Some("q=1")),
            (
                "http://a.example/x/y?q=1&r",
                "/x/y?q=1&r",
                "/x/y",
                Some("q=1&r"),
            ),
            ("http://a.example/x?", "/x?", "/x", Some("")),
            ("http://a.example/x?a?b", "/x?a?b", "/x", Some("a?b")),
        ] {
            let t = target(&format!("GET {url} HTTP/1.1\r\n\r\n")).await;
            let Kind::Forward { origin_form: o, .. } = &t.kind else {
                panic!("{url}: not forwarded");
            };
            assert_eq!(o, origin_form, "{url}");
            assert_eq!(t.kind.path(), Some(path), "{url}");
            assert_eq!(t.kind.query(), query, "{url}");
        }
        let connect = target("CONNECT a.example:443 HTTP/1.1\r\n\r\n").await;
        assert_eq!((connect.kind.path(), connect.kind.query()), (None, None));
    }

    /// A Host header equal to the URI's authority passes without a second
    /// parse; any other must still name the same host and port.
    #[tokio::test]
    async fn the_host_header_must_name_the_uri_host_and_port() {
        for (url, host, ok) in [
            ("http://a.example:8080/", "a.example:8080", true),
            ("http://A.example:8080/", "A.example:8080", true),
            ("http://a.example:8080/", "A.EXAMPLE:8080", true),
            ("http://a.example/", "a.example:80", true),
            ("http://a.example:8080/", "a.example", false),
            ("http://a.example:8080/", "b.example:8080", false),
            ("http://a.example/", "a.example:81", false),
        ] {
            let raw = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(parse(&raw).await.is_ok(), ok, "{raw:?}");
        }
    }
}
