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
        /// Path as sent, without the query (for the log).
        path: String,
        /// Query without '?', if any.
        query: Option<String>,
        /// The origin-form request-target to send upstream (`/path?query`).
        origin_form: String,
        /// The request body's framing.
        body: Framing,
    },
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
        let (path, query) = match origin_form.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (origin_form.clone(), None),
        };
        check_host_header(head, &host, port)?;
        Ok(Target {
            host,
            port,
            kind: Kind::Forward {
                path,
                query,
                origin_form,
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
/// name the policy never saw.
fn check_host_header(head: &Head, host: &Host, port: u16) -> Result<(), &'static str> {
    let value = match head.get_one("host") {
        Err(_) => return Err("more than one Host header"),
        Ok(None) => return Ok(()),
        Ok(Some(v)) => v,
    };
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
