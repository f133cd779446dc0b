//! Destination host normalisation (SPEC "Decision", step 1).
//!
//! Owns turning the host part of an authority into a [`Host`]: either a DNS
//! [`Name`] in canonical form (lower-case ASCII, punycode, no trailing dot)
//! or an IP address. Numeric forms that are not a strict dotted quad
//! (`127.1`, `0x7f.1`, `2130706433`, `0177.0.0.1`) are errors, so they are
//! never resolved, never matched against a name rule and never dialled.
//!
//! Not here: which hosts an agent may reach (`policy::rules`), which
//! addresses may be dialled (`policy::addrs`), resolution (`dns`), or taking
//! a request line or URL apart (`proxy`).

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::AsciiDenyList;

/// Longest label, in bytes (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;

/// Longest name in dotted form without the root dot: the 255-byte wire limit
/// of RFC 1035 less the leading length octet and the root label.
const MAX_NAME: usize = 253;

/// A destination host: a normalised DNS name or an IP address.
///
/// An IP literal is an address, never a name: `Host::parse("1.2.3.4")` is
/// `Host::Ip`, so name rules can never match it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, to be resolved by sluice's own resolver.
    Name(Name),
    /// An IPv4 dotted quad or a bracketed IPv6 literal. IPv4-mapped IPv6
    /// literals stay `V6`; `policy::addrs` classifies the address they carry.
    Ip(IpAddr),
}

/// A validated, normalised DNS name: lower-case ASCII (IDNA → punycode), no
/// trailing dot, only letters, digits, '-' and '.', no empty label, labels
/// of at most 63 bytes, at most 253 bytes in all, and never a numeric form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Box<str>);

/// Why a host or authority was rejected. Every variant is a malformed
/// request (400); `Display` is a short lower-case reason for the log and the
/// refusal body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing where a host was expected (also "." alone).
    #[error("empty host")]
    Empty,
    /// Two dots in a row, or a leading dot.
    #[error("empty label")]
    EmptyLabel,
    /// A label (after IDNA) over 63 bytes.
    #[error("label longer than 63 bytes")]
    LabelTooLong,
    /// The name (after IDNA, without the trailing dot) over 253 bytes.
    #[error("name longer than 253 bytes")]
    NameTooLong,
    /// A character other than an ASCII letter, digit, '-' or '.' (after IDNA).
    #[error("invalid character {0:?} in host")]
    InvalidChar(char),
    /// The name failed UTS 46 processing (disallowed code point, bad punycode,
    /// bidi or joiner rules).
    #[error("invalid internationalised domain name")]
    Idna,
    /// The last label is numeric (WHATWG "ends in a number") but the host is
    /// not a strict dotted quad.
    #[error("numeric host form is not a valid IPv4 address")]
    MalformedIpv4,
    /// An IP literal where only a name is accepted ([`Name::parse`]).
    #[error("IP address where a name is required")]
    NotAName,
    /// A bracketed literal that is not an IPv6 address.
    #[error("invalid IPv6 literal")]
    InvalidIpv6,
    /// An IPv6 literal with a zone identifier (`[fe80::1%eth0]`): it names an
    /// interface of the proxy's host, never a remote destination.
    #[error("IPv6 zone identifier not allowed")]
    Ipv6Zone,
    /// An IPv6 address without the brackets an authority requires.
    #[error("IPv6 literal must be in brackets")]
    UnbracketedIpv6,
    /// Characters after the closing bracket that are not `:port`.
    #[error("unexpected characters after IPv6 literal")]
    TrailingAfterIpv6,
    /// No port in the authority and no default for this protocol.
    #[error("missing port")]
    MissingPort,
    /// A port that is empty, signed, not decimal, 0 or over 65535.
    #[error("port must be a decimal number from 1 to 65535")]
    InvalidPort,
}

// === impl Host ===

impl Host {
    /// Parses the host part of an authority: a DNS name, a dotted-quad IPv4
    /// literal, or a bracketed IPv6 literal (`[::1]`).
    ///
    /// Names are lower-cased, lose one trailing dot and go through IDNA
    /// (UTS 46, non-transitional) to ASCII. Anything that ends in a number
    /// must be a strict dotted quad (also after IDNA, so full-width
    /// `１２７．０．０．１` is the address 127.0.0.1, as in a browser).
    ///
    /// # Errors
    /// Any [`HostError`] except the port variants.
    pub fn parse(s: &str) -> Result<Host, HostError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::InvalidIpv6)?;
            return parse_ipv6(inner).map(|ip| Host::Ip(IpAddr::V6(ip)));
        }
        match normalise(s) {
            Ok(Parsed::Name(name)) => Ok(Host::Name(name)),
            Ok(Parsed::Ipv4(ip)) => Ok(Host::Ip(IpAddr::V4(ip))),
            Err(HostError::InvalidChar(':')) if s.parse::<Ipv6Addr>().is_ok() => {
                Err(HostError::UnbracketedIpv6)
            }
            Err(err) => Err(err),
        }
    }

    /// The name, unless this host is an IP address.
    pub fn name(&self) -> Option<&Name> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) => None,
        }
    }
}

impl fmt::Display for Host {
    /// Names as they are, IPv4 dotted, IPv6 in brackets: the form that goes
    /// back into an authority.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name.as_str()),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

// === impl Name ===

impl Name {
    /// Parses and normalises a DNS name, as [`Host::parse`] does.
    ///
    /// # Errors
    /// [`HostError::NotAName`] for an IPv4 dotted quad or an IPv6 literal
    /// (bracketed or not); [`HostError::MalformedIpv4`] for other numeric
    /// forms; otherwise the name errors of [`HostError`].
    pub fn parse(s: &str) -> Result<Name, HostError> {
        if s.starts_with('[') || s.parse::<Ipv6Addr>().is_ok() {
            return Err(HostError::NotAName);
        }
        match normalise(s)? {
            Parsed::Name(name) => Ok(name),
            Parsed::Ipv4(_) => Err(HostError::NotAName),
        }
    }

    /// The normalised name: lower-case ASCII, no trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === authority ===

/// Parses an authority: `host:port`, `[v6]:port`, or `host` / `[v6]` alone,
/// in which case `default_port` is used.
///
/// The port is decimal, 1 to 65535, without a sign. Userinfo (`user@host`) is
/// not part of an authority here and fails as an invalid character.
///
/// # Errors
/// [`HostError::MissingPort`] when there is no port and no default,
/// [`HostError::InvalidPort`] for a bad port (including `host:`), and the
/// errors of [`Host::parse`].
pub fn parse_authority(s: &str, default_port: Option<u16>) -> Result<(Host, u16), HostError> {
    let (host, port) = split_authority(s)?;
    let host = Host::parse(host)?;
    let port = match port {
        Some(port) => parse_port(port)?,
        None => default_port.ok_or(HostError::MissingPort)?,
    };
    Ok((host, port))
}

/// Splits an authority into its host and, when a ':' is present, its port.
fn split_authority(s: &str) -> Result<(&str, Option<&str>), HostError> {
    if s.starts_with('[') {
        let end = s.find(']').ok_or(HostError::InvalidIpv6)?;
        let (host, rest) = s.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(HostError::TrailingAfterIpv6),
        };
    }
    match s.split_once(':') {
        None => Ok((s, None)),
        Some((host, port)) if !port.contains(':') => Ok((host, Some(port))),
        // More than one ':' outside brackets: an IPv6 address (perhaps with a
        // port) that cannot be split unambiguously, or junk.
        Some(_) => {
            let unbracketed = s.parse::<Ipv6Addr>().is_ok()
                || s.rsplit_once(':')
                    .is_some_and(|(h, _)| h.parse::<Ipv6Addr>().is_ok());
            Err(if unbracketed {
                HostError::UnbracketedIpv6
            } else {
                HostError::InvalidChar(':')
            })
        }
    }
}

fn parse_port(s: &str) -> Result<u16, HostError> {
    // u16::from_str would accept a leading '+'; insist on digits only.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::InvalidPort);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::InvalidPort),
        Ok(port) => Ok(port),
    }
}

// === normalisation ===

/// What an unbracketed host turned out to be.
enum Parsed {
    Name(Name),
    Ipv4(Ipv4Addr),
}

/// Lower-case, IDNA, strip one trailing dot, validate; then the WHATWG
/// "ends in a number" rule decides between a name and an IPv4 address.
fn normalise(s: &str) -> Result<Parsed, HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    let ascii: Cow<'_, str> = if is_canonical_ascii(s) {
        Cow::Borrowed(s)
    } else {
        // The empty deny list lets ASCII through (lower-cased) so that
        // `validate` names the offending character; UTS 46 maps some
        // non-ASCII characters onto ASCII ones ('＿' → '_'), which it then
        // catches too.
        idna::domain_to_ascii_cow(s.as_bytes(), AsciiDenyList::EMPTY)
            .map_err(|_| HostError::Idna)?
    };
    // Stripping after IDNA treats '。' and '．' (which map to '.') like '.'.
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    validate(name)?;
    if ends_in_number(name) {
        // std's parser is the strict dotted quad: four decimal octets, no
        // leading zeros, nothing else. Everything else numeric is ambiguous
        // between resolvers (inet_aton reads `127.1` and `0x7f.1` as
        // 127.0.0.1), so it is refused rather than guessed at.
        return name
            .parse::<Ipv4Addr>()
            .map(Parsed::Ipv4)
            .map_err(|_| HostError::MalformedIpv4);
    }
    Ok(Parsed::Name(Name(name.into())))
}

/// True when `s` is already in canonical form as far as IDNA is concerned:
/// lower-case letters, digits, '-' and '.' only, and no punycode label
/// (which IDNA would have to decode and check). IDNA returns such input
/// unchanged, so it can be skipped.
fn is_canonical_ascii(s: &str) -> bool {
    s.bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'))
        && !s.split('.').any(|label| label.starts_with("xn--"))
}

/// Checks the ASCII form (without its trailing dot) against SPEC's rules.
fn validate(name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(HostError::EmptyLabel);
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(HostError::InvalidChar(c));
        }
        if label.len() > MAX_LABEL {
            return Err(HostError::LabelTooLong);
        }
    }
    if name.len() > MAX_NAME {
        return Err(HostError::NameTooLong);
    }
    Ok(())
}

/// WHATWG URL "ends in a number": the last label is all decimal digits, or
/// `0x` followed by zero or more hex digits. Such a host is an IPv4 address
/// attempt, never a name (no top-level domain is numeric).
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn parse_ipv6(s: &str) -> Result<Ipv6Addr, HostError> {
    if s.contains('%') {
        return Err(HostError::Ipv6Zone);
    }
    s.parse().map_err(|_| HostError::InvalidIpv6)
}

#[cfg(test)]
mod tests;
