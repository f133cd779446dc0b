//! TLS ClientHello SNI extraction: decide from the first bytes a client sends
//! into a CONNECT tunnel whether they are TLS and, if so, which host name the
//! ClientHello's server_name extension carries.
//!
//! This module only parses (RFC 8446 §4.1.2 and §5.1, RFC 6066 §3); it never
//! terminates TLS, reads sockets or decides policy. Comparing the name with
//! the CONNECT host, `require_sni` and the refusal belong to the tunnel code.
//!
//! The parser is strict where leniency would let the name we check differ
//! from the name the upstream server acts on: several host names, a second
//! server_name extension, name types nobody defines, or bytes left over
//! inside the hello are all refused rather than guessed at. It also reports
//! whether the hello offers Encrypted Client Hello: then the name checked
//! is only the outer one, and the server may act on an encrypted inner name
//! the proxy cannot see.
//!
//! A TLS 1.3 server may answer the first ClientHello with a
//! HelloRetryRequest, and the client then sends a second one, which the
//! server acts on. [`reply`] spots that request in the server's first bytes,
//! and [`lead`] finds the second hello among the records a client may send
//! before it, so the tunnel can check that one too.

/// The most bytes the proxy buffers while waiting for a complete ClientHello.
///
/// [`parse`] never returns [`Peek::NeedMore`] for a buffer of this length or
/// longer: a hello whose records do not all fit in the first
/// `MAX_HELLO_BYTES` bytes is [`Peek::Malformed`]. 16 KiB is about nine times
/// the largest hello mainstream clients send today (~1.8 KiB with a
/// post-quantum X25519MLKEM768 key share), leaving room for a resumption
/// ticket, ECH, and the hello being split over several records, while
/// bounding what one connection can make the proxy hold before the tunnel is
/// vetted.
pub const MAX_HELLO_BYTES: usize = 16 * 1024;

/// What the bytes buffered so far say about the start of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// The bytes so far are a valid prefix of a TLS handshake record stream; read more.
    NeedMore,
    /// The first byte cannot start a TLS handshake record (e.g. plain HTTP, an
    /// SSH banner, or an SSLv2-format hello, which cannot carry SNI at all).
    NotTls,
    /// A complete ClientHello. `sni` is the host_name entry of the
    /// server_name extension, as sent (never empty, always ASCII), `None`
    /// when the extension is absent.
    ClientHello {
        /// The requested host name, not normalised.
        sni: Option<String>,
        /// The hello carries an Encrypted Client Hello (or ESNI) extension:
        /// `sni` is then the outer, public name, and a server holding the
        /// ECH key routes on the encrypted inner one. A GREASE extension
        /// (sent by browsers that have no ECH key) looks the same, by design.
        ech: bool,
    },
    /// It starts like TLS (first byte 0x16) but is not a well-formed
    /// ClientHello: bad lengths, a record version other than 3.x, another
    /// handshake message, a hello over [`MAX_HELLO_BYTES`], several host_name
    /// entries, an empty or non-ASCII host name... The text says which, for
    /// logs.
    Malformed(&'static str),
}

/// Classify `buf`, the bytes a client has sent into a tunnel so far.
///
/// Call again with the grown buffer after every read while it answers
/// [`Peek::NeedMore`]. Answers are stable: once `buf` gives anything else,
/// every longer buffer starting with the same bytes gives the same answer, so
/// it does not matter how the bytes were split across reads. Bytes after the
/// ClientHello (early data, or anything else) are ignored. Never panics.
pub fn parse(buf: &[u8]) -> Peek {
    match buf.first() {
        None => return Peek::NeedMore,
        Some(&CONTENT_HANDSHAKE) => {}
        Some(_) => return Peek::NotTls,
    }
    // Looking only at the first MAX_HELLO_BYTES keeps "too big" stable: a
    // longer buffer cannot complete a hello the cap already ruled out.
    let buf = buf.get(..MAX_HELLO_BYTES).unwrap_or(buf);
    let message = match reassemble(buf) {
        Ok((message, _)) => message,
        Err(peek) => return peek,
    };
    match client_hello_sni(&message) {
        Ok((sni, ech)) => Peek::ClientHello { sni, ech },
        Err(why) => Peek::Malformed(why),
    }
}

/// What the server's first bytes after a ClientHello say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Too few bytes to tell; read more.
    NeedMore,
    /// A HelloRetryRequest: the client will send a second ClientHello,
    /// which must pass the same checks as the first.
    HelloRetry,
    /// Anything else (a ServerHello, an alert, not TLS): the handshake goes
    /// on, or ends, without another ClientHello.
    Other,
}

/// The most server bytes [`reply`] needs to give an answer other than
/// [`Reply::NeedMore`]: a ServerHello's first 38 bytes even when each
/// arrives in a record of its own.
pub const MAX_REPLY_BYTES: usize = (RECORD_HEADER_LEN + 1) * REPLY_PREFIX;

/// Classify `buf`, the first bytes the server sent after the client's
/// ClientHello reached it. Like [`parse`], answers are stable as `buf`
/// grows, and never `NeedMore` from [`MAX_REPLY_BYTES`] on.
///
/// Only a well-formed HelloRetryRequest counts: it is what a TLS server
/// sends (RFC 8446 §4.1.4), and the tunnel's threat is its client, not the
/// server the client was allowed to reach.
pub fn reply(buf: &[u8]) -> Reply {
    let mut prefix = [0u8; REPLY_PREFIX];
    let mut have = 0;
    let mut rest = buf;
    while have < REPLY_PREFIX {
        let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            return match check_record_header_prefix(rest) {
                Ok(()) => Reply::NeedMore,
                Err(_) => Reply::Other,
            };
        };
        let Ok(declared) = check_record_header(header) else {
            return Reply::Other;
        };
        let (payload, after) = after.split_at_checked(declared).unwrap_or((after, &[]));
        let take = payload.len().min(REPLY_PREFIX - have);
        prefix[have..have + take].copy_from_slice(&payload[..take]);
        have += take;
        if have > 0 && prefix[0] != HANDSHAKE_SERVER_HELLO {
            return Reply::Other;
        }
        if have < REPLY_PREFIX && payload.len() < declared {
            return Reply::NeedMore;
        }
        rest = after;
    }
    // Handshake header (4), legacy_version (2), then the random.
    if prefix[HANDSHAKE_HEADER_LEN + 2..] == HELLO_RETRY_RANDOM {
        Reply::HelloRetry
    } else {
        Reply::Other
    }
}

/// Between a HelloRetryRequest and the second ClientHello, a client may
/// send records the server passes over: the compatibility
/// change_cipher_spec, alerts, and 0-RTT early data it sent before it saw
/// the retry request (RFC 8446 §4.2.10, which the server skips).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lead {
    /// Too few bytes to tell; read more.
    NeedMore,
    /// A complete record of one of those kinds, this many bytes long.
    Skip(usize),
    /// Something else, which must be the second ClientHello: ask [`parse`].
    Hello,
}

/// What the client bytes in `buf` start with, after a HelloRetryRequest.
pub fn lead(buf: &[u8]) -> Lead {
    let Some(&kind) = buf.first() else {
        return Lead::NeedMore;
    };
    if !matches!(
        kind,
        CONTENT_CHANGE_CIPHER_SPEC | CONTENT_ALERT | CONTENT_APPLICATION_DATA
    ) {
        return Lead::Hello;
    }
    let Some(header) = buf.first_chunk::<RECORD_HEADER_LEN>() else {
        // Let `parse` refuse a record version that is not 3.x.
        return match buf.get(1) {
            Some(&major) if major != 3 => Lead::Hello,
            _ => Lead::NeedMore,
        };
    };
    let len = RECORD_HEADER_LEN + usize::from(u16::from_be_bytes([header[3], header[4]]));
    if header[1] != 3 || len > RECORD_HEADER_LEN + MAX_CIPHERTEXT {
        Lead::Hello
    } else if buf.len() < len {
        Lead::NeedMore
    } else {
        Lead::Skip(len)
    }
}

/// TLS record content types (RFC 8446 §5.1).
const CONTENT_CHANGE_CIPHER_SPEC: u8 = 0x14;
const CONTENT_ALERT: u8 = 0x15;
const CONTENT_HANDSHAKE: u8 = 0x16;
const CONTENT_APPLICATION_DATA: u8 = 0x17;
/// The largest encrypted record payload: 2^14 + 2048 (TLS 1.2, RFC 5246
/// §6.2.3; TLS 1.3 allows 2^14 + 256).
const MAX_CIPHERTEXT: usize = (1 << 14) + 2048;
/// Handshake message type of a ServerHello, which a HelloRetryRequest is.
const HANDSHAKE_SERVER_HELLO: u8 = 2;
/// Bytes of a ServerHello up to the end of its random.
const REPLY_PREFIX: usize = HANDSHAKE_HEADER_LEN + 2 + 32;
/// The random of a HelloRetryRequest: SHA-256 of "HelloRetryRequest"
/// (RFC 8446 §4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];
/// Handshake message type of a ClientHello (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Extension type of server_name (RFC 6066 §3).
const EXTENSION_SERVER_NAME: u16 = 0;
/// Extension types that carry an encrypted ClientHello or server name:
/// encrypted_client_hello (0xfe0d, and 0xfe08-0xfe0c of the drafts before
/// it) and the older encrypted_server_name (0xffce).
fn is_ech(kind: u16) -> bool {
    matches!(kind, 0xfe08..=0xfe0d | 0xffce)
}

/// The only ServerName type RFC 6066 defines.
const NAME_TYPE_HOST_NAME: u8 = 0;
/// Record header: content type, legacy version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;
/// Handshake header: message type, length (3).
const HANDSHAKE_HEADER_LEN: usize = 4;
/// A plaintext record carries at most 2^14 bytes (RFC 8446 §5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
/// The smallest ClientHello body: version (2), random (32), empty session id
/// (1), one cipher suite (2 + 2), one compression method (1 + 1).
const MIN_HELLO_BODY: usize = 41;

/// Where the records holding the ClientHello at the start of `buf` end:
/// the bytes after that are the client's next flight, not part of the hello.
/// `None` unless [`parse`] gives [`Peek::ClientHello`] for `buf`.
pub fn hello_end(buf: &[u8]) -> Option<usize> {
    let buf = buf.get(..MAX_HELLO_BYTES).unwrap_or(buf);
    let (message, end) = reassemble(buf).ok()?;
    client_hello_sni(&message).ok().map(|_| end)
}

/// Join the handshake records at the start of `buf` until they hold the whole
/// first handshake message, which must be a ClientHello; return that message,
/// header included, and where its last record ends in `buf`. `Err` is
/// `NeedMore` or `Malformed`.
fn reassemble(buf: &[u8]) -> Result<(Vec<u8>, usize), Peek> {
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            check_record_header_prefix(rest)?;
            return Err(need_more(buf));
        };
        let declared = check_record_header(header)?;
        let (payload, after) = after.split_at_checked(declared).unwrap_or((after, &[]));
        let before = message.len();
        message.extend_from_slice(payload);
        if let Some(total) = message_len(&message)? {
            // The hello must end with its record (RFC 8446 §5.1: it may
            // precede a key change). Anything after it in that record would
            // be a second handshake message the upstream reads once it has
            // answered the first, say a second ClientHello after a
            // HelloRetryRequest, which the gate would never see on its own.
            if before + declared > total {
                return Err(Peek::Malformed(
                    "bytes after the ClientHello in its last record",
                ));
            }
            if message.len() == total {
                return Ok((message, buf.len() - after.len()));
            }
        }
        if payload.len() < declared {
            return Err(need_more(buf));
        }
        rest = after;
    }
}

/// Check the first bytes of a record header when fewer than five are here.
fn check_record_header_prefix(partial: &[u8]) -> Result<(), Peek> {
    // Every record must be a handshake record until the hello is complete
    // (RFC 8446 §5.1 forbids interleaving); the first one was checked by
    // `parse` already, so a mismatch here is a later record.
    if partial.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(Peek::Malformed(
            "non-handshake record inside the ClientHello",
        ));
    }
    if partial.get(1).is_some_and(|&major| major != 3) {
        return Err(Peek::Malformed("record version is not 3.x"));
    }
    Ok(())
}

/// Check a complete record header; return its declared payload length.
fn check_record_header(header: &[u8; RECORD_HEADER_LEN]) -> Result<usize, Peek> {
    check_record_header_prefix(header)?;
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    if len == 0 {
        // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent.
        return Err(Peek::Malformed("empty handshake record"));
    }
    if len > MAX_RECORD_PAYLOAD {
        return Err(Peek::Malformed("record longer than 2^14 bytes"));
    }
    Ok(len)
}

/// The full length of the handshake message whose first bytes are `message`,
/// once its header is here; checks what can be checked before that.
fn message_len(message: &[u8]) -> Result<Option<usize>, Peek> {
    if message
        .first()
        .is_some_and(|&t| t != HANDSHAKE_CLIENT_HELLO)
    {
        return Err(Peek::Malformed(
            "first handshake message is not a ClientHello",
        ));
    }
    let Some(&[_, a, b, c]) = message.first_chunk::<HANDSHAKE_HEADER_LEN>() else {
        return Ok(None);
    };
    let body = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    if body < MIN_HELLO_BODY {
        return Err(Peek::Malformed("ClientHello shorter than its fixed fields"));
    }
    // Refuse now rather than buffer up to the cap for a hello that cannot
    // fit even in a single record.
    if RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + body > MAX_HELLO_BYTES {
        return Err(Peek::Malformed("ClientHello larger than MAX_HELLO_BYTES"));
    }
    Ok(Some(HANDSHAKE_HEADER_LEN + body))
}

/// `NeedMore`, unless the cap is reached: then the hello can never complete.
fn need_more(buf: &[u8]) -> Peek {
    if buf.len() >= MAX_HELLO_BYTES {
        Peek::Malformed("ClientHello records exceed MAX_HELLO_BYTES")
    } else {
        Peek::NeedMore
    }
}

/// Walk a complete ClientHello (handshake header included) to the
/// server_name extension (RFC 8446 §4.1.2); also say whether it offers ECH.
fn client_hello_sni(message: &[u8]) -> Result<(Option<String>, bool), &'static str> {
    let mut r = Reader(message.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default());
    let version = r.take(2).ok_or("truncated ClientHello version")?;
    if version.first() != Some(&3) {
        return Err("ClientHello version is not 3.x");
    }
    r.take(32).ok_or("truncated ClientHello random")?;
    let session_id = r.vec8().ok_or("session id overruns the ClientHello")?;
    if session_id.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec16().ok_or("cipher suites overrun the ClientHello")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err("cipher suites length is zero or odd");
    }
    let compression = r
        .vec8()
        .ok_or("compression methods overrun the ClientHello")?;
    if compression.is_empty() {
        return Err("no compression methods");
    }
    if r.0.is_empty() {
        // Hellos from before extensions existed end here; they carry no SNI.
        return Ok((None, false));
    }
    let mut extensions = Reader(r.vec16().ok_or("extensions overrun the ClientHello")?);
    if !r.0.is_empty() {
        return Err("bytes after the ClientHello extensions");
    }
    let mut sni = None;
    let mut ech = false;
    while !extensions.0.is_empty() {
        let kind = extensions.u16().ok_or("truncated extension header")?;
        let data = extensions
            .vec16()
            .ok_or("extension overruns the extensions block")?;
        if kind == EXTENSION_SERVER_NAME {
            // Servers differ on which of two copies wins; checking one while
            // the upstream honours the other would bypass the SNI check.
            if sni.is_some() {
                return Err("several server_name extensions");
            }
            sni = Some(host_name(data)?);
        }
        ech |= is_ech(kind);
    }
    Ok((sni, ech))
}

/// The host_name entry of a server_name extension's data (RFC 6066 §3).
fn host_name(data: &[u8]) -> Result<String, &'static str> {
    let mut r = Reader(data);
    let mut list = Reader(r.vec16().ok_or("server_name list overruns its extension")?);
    if !r.0.is_empty() {
        return Err("bytes after the server_name list");
    }
    let mut found = None;
    while !list.0.is_empty() {
        // Undefined name types have no known length, so nothing after them
        // can be read reliably; some servers stop there, others fail.
        if list.u8() != Some(NAME_TYPE_HOST_NAME) {
            return Err("server_name entry of unknown type");
        }
        let name = list
            .vec16()
            .ok_or("host name overruns the server_name list")?;
        if found.is_some() {
            return Err("several host_name entries");
        }
        found = Some(name);
    }
    let name = found.ok_or("empty server_name list")?;
    if name.is_empty() {
        return Err("empty host name");
    }
    if !name.is_ascii() {
        return Err("non-ASCII host name");
    }
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| "non-ASCII host name")
}

/// A cursor over TLS presentation-language fields; `None` means the field
/// runs past the end.
struct Reader<'a>(&'a [u8]);

// === impl Reader ===

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (field, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(field)
    }

    fn u8(&mut self) -> Option<u8> {
        let (&byte, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(byte)
    }

    fn u16(&mut self) -> Option<u16> {
        let (bytes, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_be_bytes(*bytes))
    }

    /// An opaque vector with a one-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// An opaque vector with a two-byte length prefix.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests;
