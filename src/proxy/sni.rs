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
//! inside the hello are all refused rather than guessed at.

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
        Ok(message) => message,
        Err(peek) => return peek,
    };
    match client_hello_sni(&message) {
        Ok(sni) => Peek::ClientHello { sni },
        Err(why) => Peek::Malformed(why),
    }
}

/// TLS record content type of handshake records (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type of a ClientHello (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Extension type of server_name (RFC 6066 §3).
const EXTENSION_SERVER_NAME: u16 = 0;
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

/// Join the handshake records at the start of `buf` until they hold the whole
/// first handshake message, which must be a ClientHello; return that message,
/// header included. `Err` is `NeedMore` or `Malformed`.
fn reassemble(buf: &[u8]) -> Result<Vec<u8>, Peek> {
    let mut message = Vec::new();
    let mut rest = buf;
    loop {
        let Some((header, after)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
            check_record_header_prefix(rest)?;
            return Err(need_more(buf));
        };
        let declared = check_record_header(header)?;
        let (payload, after) = after.split_at_checked(declared).unwrap_or((after, &[]));
        message.extend_from_slice(payload);
        if let Some(total) = message_len(&message)? {
            if message.len() >= total {
                // Whatever follows the hello in its last record is not ours
                // to judge: the upstream sees the same first message we saw.
                message.truncate(total);
                return Ok(message);
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
/// server_name extension (RFC 8446 §4.1.2).
fn client_hello_sni(message: &[u8]) -> Result<Option<String>, &'static str> {
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
        return Ok(None);
    }
    let mut extensions = Reader(r.vec16().ok_or("extensions overrun the ClientHello")?);
    if !r.0.is_empty() {
        return Err("bytes after the ClientHello extensions");
    }
    let mut sni = None;
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
    }
    Ok(sni)
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
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
    use tokio::io::AsyncReadExt;
    use tokio_rustls::TlsConnector;

    use super::*;

    const NAME: &str = "api.example.com";

    fn config(versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
        // No roots: the client never gets far enough to verify anything.
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }

    fn configs() -> Vec<(&'static str, ClientConfig)> {
        vec![
            ("tls12", config(&[&rustls::version::TLS12])),
            ("tls13", config(&[&rustls::version::TLS13])),
            ("both", config(rustls::ALL_VERSIONS)),
        ]
    }

    /// The first record a rustls client writes, read off a duplex pipe with
    /// nobody answering, framed by hand so the test does not lean on `parse`.
    async fn rustls_hello(config: ClientConfig, name: ServerName<'static>) -> Vec<u8> {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let handshake = tokio::spawn(TlsConnector::from(Arc::new(config)).connect(name, client));
        let mut record = vec![0; RECORD_HEADER_LEN];
        server.read_exact(&mut record).await.unwrap();
        let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
        record.resize(RECORD_HEADER_LEN + len, 0);
        server
            .read_exact(&mut record[RECORD_HEADER_LEN..])
            .await
            .unwrap();
        drop(server);
        // The client sees EOF instead of a ServerHello: only its failure matters.
        assert!(handshake.await.unwrap().is_err());
        record
    }

    async fn rustls_hellos() -> Vec<(String, Vec<u8>, Peek)> {
        let mut hellos = Vec::new();
        for (label, config) in configs() {
            let dns = ServerName::try_from(NAME).unwrap().to_owned();
            let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)).into());
            let named = Peek::ClientHello {
                sni: Some(NAME.to_owned()),
            };
            let bare = Peek::ClientHello { sni: None };
            hellos.push((
                format!("{label} dns"),
                rustls_hello(config.clone(), dns).await,
                named,
            ));
            hellos.push((format!("{label} ip"), rustls_hello(config, ip).await, bare));
        }
        hellos
    }

    /// Deterministic xorshift64*: reproducible without extra crates.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform-enough in `0..n`; `n` must be non-zero.
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            self.next().to_be_bytes()[0]
        }
    }

    fn u16_len(bytes: &[u8]) -> [u8; 2] {
        u16::try_from(bytes.len()).unwrap().to_be_bytes()
    }

    fn record(payload: &[u8]) -> Vec<u8> {
        [&[CONTENT_HANDSHAKE, 3, 1][..], &u16_len(payload), payload].concat()
    }

    fn handshake(msg_type: u8, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        [&[msg_type][..], &len[1..], body].concat()
    }

    /// A ClientHello body with one cipher suite and null compression.
    fn hello_body(session_id: &[u8], extensions: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0xab; 32]);
        body.push(u8::try_from(session_id.len()).unwrap());
        body.extend_from_slice(session_id);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        if let Some(extensions) = extensions {
            body.extend_from_slice(&u16_len(extensions));
            body.extend_from_slice(extensions);
        }
        body
    }

    fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
        [&kind.to_be_bytes()[..], &u16_len(data), data].concat()
    }

    fn server_name(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let list: Vec<u8> = entries
            .iter()
            .flat_map(|(kind, name)| [&[*kind][..], &u16_len(name), name].concat())
            .collect();
        extension(
            EXTENSION_SERVER_NAME,
            &[&u16_len(&list)[..], &list].concat(),
        )
    }

    /// One record holding a ClientHello with these extensions.
    fn hello_with(extensions: &[u8]) -> Vec<u8> {
        record(&handshake(
            HANDSHAKE_CLIENT_HELLO,
            &hello_body(&[], Some(extensions)),
        ))
    }

    /// The handshake bytes carried by a run of records (test-side framing).
    fn payload(mut records: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some((header, rest)) = records.split_first_chunk::<RECORD_HEADER_LEN>() {
            let (fragment, rest) =
                rest.split_at(usize::from(u16::from_be_bytes([header[3], header[4]])));
            out.extend_from_slice(fragment);
            records = rest;
        }
        out
    }

    /// Re-frame handshake bytes into records of `1..=max` payload bytes each.
    fn reframe(handshake: &[u8], max: usize, rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = handshake;
        while !rest.is_empty() {
            let (fragment, tail) = rest.split_at((1 + rng.below(max)).min(rest.len()));
            out.extend_from_slice(&record(fragment));
            rest = tail;
        }
        out
    }

    #[tokio::test]
    async fn rustls_hellos_give_their_server_name() {
        for (label, hello, expected) in rustls_hellos().await {
            assert_eq!(parse(&hello), expected, "{label}");
        }
    }

    #[tokio::test]
    async fn rustls_hello_without_sni_has_none() {
        let mut config = config(rustls::ALL_VERSIONS);
        config.enable_sni = false;
        let hello = rustls_hello(config, ServerName::try_from(NAME).unwrap().to_owned()).await;
        assert_eq!(parse(&hello), Peek::ClientHello { sni: None });
    }

    #[tokio::test]
    async fn every_prefix_of_a_rustls_hello_needs_more() {
        for (label, hello, _) in rustls_hellos().await {
            for end in 0..hello.len() {
                assert_eq!(parse(&hello[..end]), Peek::NeedMore, "{label} cut at {end}");
            }
        }
    }

    #[tokio::test]
    async fn resplit_hellos_give_the_same_answer() {
        let mut rng = Rng(0x5eed_0001);
        for (label, hello, expected) in rustls_hellos().await {
            let message = payload(&hello);
            for max in [1, 2, 3, 5, 16, 100, 1000] {
                let records = reframe(&message, max, &mut rng);
                for end in 0..records.len() {
                    assert_eq!(
                        parse(&records[..end]),
                        Peek::NeedMore,
                        "{label} max {max} at {end}"
                    );
                }
                assert_eq!(parse(&records), expected, "{label} max {max}");
                // What follows the hello (a CCS, early data, junk) does not change the answer.
                let trailed =
                    [&records[..], &[0x14, 3, 3, 0, 1, 1, 0x17, 3, 3, 0xff, 0xff]].concat();
                assert_eq!(parse(&trailed), expected, "{label} max {max} trailed");
            }
        }
    }

    #[test]
    fn non_tls_first_bytes_are_not_tls() {
        let inputs: [&[u8]; 7] = [
            b"GET / HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"G",
            b"\x00",
            // An SSLv2-format hello: no extensions, so no SNI to check.
            b"\x80\x2e\x01\x03\x01",
            // A TLS record, but not a handshake one.
            b"\x17\x03\x03\x00\x05hello",
            b"\x15\x03\x03\x00\x02\x02\x28",
        ];
        for input in inputs {
            assert_eq!(parse(input), Peek::NotTls, "{input:?}");
        }
        assert_eq!(parse(b""), Peek::NeedMore);
    }

    #[test]
    fn hand_built_hellos_give_their_server_name() {
        let named = |name: &str| Peek::ClientHello {
            sni: Some(name.to_owned()),
        };
        let no_ext = record(&handshake(
            HANDSHAKE_CLIENT_HELLO,
            &hello_body(&[7; 32], None),
        ));
        assert_eq!(parse(&no_ext), Peek::ClientHello { sni: None });
        assert_eq!(parse(&hello_with(&[])), Peek::ClientHello { sni: None });
        let grease = extension(0x0a0a, &[]);
        let alpn = extension(16, b"\x00\x03\x02h2");
        assert_eq!(
            parse(&hello_with(&[grease.clone(), alpn.clone()].concat())),
            Peek::ClientHello { sni: None }
        );
        let sni = server_name(&[(0, b"a.example")]);
        assert_eq!(
            parse(&hello_with(&[grease, sni, alpn].concat())),
            named("a.example")
        );
        // As sent: neither lower-cased nor stripped of its trailing dot.
        assert_eq!(
            parse(&hello_with(&server_name(&[(0, b"A.Example.")]))),
            named("A.Example.")
        );
    }

    #[test]
    fn malformed_hellos_say_why() {
        let body = hello_body(&[], Some(&server_name(&[(0, b"a.example")])));
        let good = handshake(HANDSHAKE_CLIENT_HELLO, &body);
        let sni = |entries: &[(u8, &[u8])]| hello_with(&server_name(entries));
        let mut huge_record = record(&good);
        huge_record[3..5].copy_from_slice(&0x4001_u16.to_be_bytes());
        let mut overlong_hello = record(&good);
        overlong_hello[6..9].copy_from_slice(&[0xff, 0xff, 0xff]);
        let mut short_hello = record(&good);
        short_hello[6..9].copy_from_slice(&[0, 0, 40]);
        let mut bad_version = body.clone();
        bad_version[0] = 2;
        // Fixed fields end at 34: session id length, then suites at 35.
        let patched = |at: usize, bytes: &[u8]| {
            let mut body = hello_body(&[], Some(&[]));
            body.splice(at..at + bytes.len(), bytes.iter().copied());
            record(&handshake(HANDSHAKE_CLIENT_HELLO, &body))
        };
        let hello_with_session_id = |id: &[u8]| {
            record(&handshake(
                HANDSHAKE_CLIENT_HELLO,
                &hello_body(id, Some(&[])),
            ))
        };
        let two_records = |second: &[u8]| [&record(&good[..10])[..], second].concat();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                record(&handshake(2, &body)),
                "first handshake message is not a ClientHello",
            ),
            (vec![0x16, 2, 0], "record version is not 3.x"),
            (vec![0x16, 3, 1, 0, 0], "empty handshake record"),
            (huge_record, "record longer than 2^14 bytes"),
            (overlong_hello, "ClientHello larger than MAX_HELLO_BYTES"),
            (short_hello, "ClientHello shorter than its fixed fields"),
            (
                two_records(&[0x17, 3, 3, 0, 1, 0]),
                "non-handshake record inside the ClientHello",
            ),
            (two_records(&[0x16, 4]), "record version is not 3.x"),
            (two_records(&[0x16, 3, 3, 0, 0]), "empty handshake record"),
            (
                record(&handshake(HANDSHAKE_CLIENT_HELLO, &bad_version)),
                "ClientHello version is not 3.x",
            ),
            (
                hello_with_session_id(&[0; 33]),
                "session id longer than 32 bytes",
            ),
            (patched(34, &[200]), "session id overruns the ClientHello"),
            (patched(35, &[0, 3]), "cipher suites length is zero or odd"),
            (patched(35, &[0, 0]), "cipher suites length is zero or odd"),
            (
                patched(35, &[0, 200]),
                "cipher suites overrun the ClientHello",
            ),
            (patched(39, &[0]), "no compression methods"),
            (
                patched(39, &[9]),
                "compression methods overrun the ClientHello",
            ),
            (patched(41, &[0, 1]), "extensions overrun the ClientHello"),
            (
                hello_with(&[0, 0x0a, 0, 9, 1]),
                "extension overruns the extensions block",
            ),
            (hello_with(&[0]), "truncated extension header"),
            (
                hello_with(&[server_name(&[(0, b"a")]), server_name(&[(0, b"b")])].concat()),
                "several server_name extensions",
            ),
            (
                sni(&[(0, b"a.example"), (0, b"b.example")]),
                "several host_name entries",
            ),
            (
                sni(&[(0, b"a.example"), (1, b"b.example")]),
                "server_name entry of unknown type",
            ),
            (sni(&[(0, b"")]), "empty host name"),
            (sni(&[(0, "é.example".as_bytes())]), "non-ASCII host name"),
            (sni(&[]), "empty server_name list"),
            (
                hello_with(&extension(0, &[])),
                "server_name list overruns its extension",
            ),
            (
                hello_with(&extension(0, &[0, 4, 0, 0, 1, b'a', 0])),
                "bytes after the server_name list",
            ),
            (
                hello_with(&extension(0, &[0, 4, 0, 0, 9, b'a'])),
                "host name overruns the server_name list",
            ),
        ];
        for (input, why) in cases {
            assert_eq!(parse(&input), Peek::Malformed(why), "{input:02x?}");
        }
        // Bytes after the extensions block, inside the hello's declared length.
        let mut trailing = hello_body(&[], Some(&[]));
        trailing.push(0);
        let trailing = record(&handshake(HANDSHAKE_CLIENT_HELLO, &trailing));
        assert_eq!(
            parse(&trailing),
            Peek::Malformed("bytes after the ClientHello extensions")
        );
    }

    /// A hello padded so its single record plus header is `total` bytes.
    fn padded_hello(total: usize) -> Vec<u8> {
        let fixed = hello_with(&extension(21, &[])).len();
        hello_with(&extension(21, &vec![0; total - fixed]))
    }

    #[test]
    fn the_cap_is_inclusive_and_stable() {
        let biggest = padded_hello(MAX_HELLO_BYTES);
        assert_eq!(biggest.len(), MAX_HELLO_BYTES);
        assert_eq!(parse(&biggest), Peek::ClientHello { sni: None });
        assert_eq!(parse(&biggest[..MAX_HELLO_BYTES - 1]), Peek::NeedMore);
        // One byte more cannot fit: refused as soon as its length is known.
        let too_big = padded_hello(MAX_HELLO_BYTES + 1);
        assert_eq!(
            parse(&too_big[..9]),
            Peek::Malformed("ClientHello larger than MAX_HELLO_BYTES")
        );
        // A hello that would fit in one record, but arrives in one-byte records,
        // runs into the cap; and no later byte can change that answer.
        let split = reframe(&payload(&padded_hello(4096)), 1, &mut Rng(1));
        let why = Peek::Malformed("ClientHello records exceed MAX_HELLO_BYTES");
        assert_eq!(parse(&split[..MAX_HELLO_BYTES - 1]), Peek::NeedMore);
        assert_eq!(parse(&split[..MAX_HELLO_BYTES]), why);
        assert_eq!(parse(&split), why);
    }

    /// One random edit of `input`, biased towards the length fields that
    /// steer the walk.
    fn mutate(input: &mut Vec<u8>, rng: &mut Rng) {
        let at = rng.below(input.len().max(1));
        match rng.below(7) {
            0 if !input.is_empty() => input[at] ^= 1 << rng.below(8),
            1 if !input.is_empty() => {
                input[at] = [0, 1, 0x7f, 0x80, 0xff, rng.byte()][rng.below(6)]
            }
            2 => input.insert(at.min(input.len()), rng.byte()),
            3 if !input.is_empty() => {
                drop(input.drain(at..(at + 1 + rng.below(8)).min(input.len())))
            }
            4 => input.truncate(at),
            5 if input.len() > at + 1 => {
                let len = u16::from_be_bytes([input[at], input[at + 1]]);
                let delta = [1, u16::MAX, 2, 256][rng.below(4)];
                input[at..at + 2].copy_from_slice(&len.wrapping_add(delta).to_be_bytes());
            }
            _ => {
                let from = rng.below(input.len().max(1));
                let chunk: Vec<u8> = input
                    .iter()
                    .skip(from)
                    .take(rng.below(64))
                    .copied()
                    .collect();
                input.splice(at.min(input.len())..at.min(input.len()), chunk);
            }
        }
    }

    #[tokio::test]
    async fn arbitrary_input_never_panics_and_answers_are_stable() {
        let mut rng = Rng(0x00c0_ffee_d00d_f00d);
        let mut seeds: Vec<Vec<u8>> = rustls_hellos()
            .await
            .into_iter()
            .map(|(_, hello, _)| hello)
            .collect();
        let sni = server_name(&[(0, b"a.example")]);
        seeds.push(hello_with(&sni));
        seeds.push(reframe(&payload(&hello_with(&sni)), 7, &mut rng));
        seeds.push(record(&handshake(
            HANDSHAKE_CLIENT_HELLO,
            &hello_body(&[1; 32], None),
        )));
        for round in 0..20_000 {
            let mut input = if round % 10 == 0 {
                // Raw noise behind a plausible record header, to get past the first byte.
                let mut noise = vec![CONTENT_HANDSHAKE, 3];
                noise.extend((0..rng.below(600)).map(|_| rng.byte()));
                noise
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            for _ in 0..1 + rng.below(4) {
                mutate(&mut input, &mut rng);
            }
            let whole = parse(&input);
            let cut = rng.below(input.len() + 1);
            let early = parse(&input[..cut]);
            assert!(
                early == Peek::NeedMore || early == whole,
                "{early:?} then {whole:?} for {input:02x?}"
            );
        }
    }

    #[test]
    fn noise_longer_than_the_cap_always_gets_an_answer() {
        let mut rng = Rng(7);
        for _ in 0..50 {
            let mut input = vec![CONTENT_HANDSHAKE, 3];
            input.extend((0..MAX_HELLO_BYTES + rng.below(100)).map(|_| rng.byte()));
            assert_ne!(parse(&input), Peek::NeedMore);
        }
    }
}
