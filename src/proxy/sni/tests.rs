//! Tests for the SNI reader: ClientHellos made by rustls and built by
//! hand, re-split across records and reads, malformed, padded, at the size
//! cap, and arbitrary bytes (never a panic, always a stable answer).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;

use super::*;
use crate::mangle::Rng;

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
            ech: false,
        };
        let bare = Peek::ClientHello {
            sni: None,
            ech: false,
        };
        hellos.push((
            format!("{label} dns"),
            rustls_hello(config.clone(), dns).await,
            named,
        ));
        hellos.push((format!("{label} ip"), rustls_hello(config, ip).await, bare));
    }
    hellos
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
    assert_eq!(
        parse(&hello),
        Peek::ClientHello {
            sni: None,
            ech: false,
        }
    );
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
            let trailed = [&records[..], &[0x14, 3, 3, 0, 1, 1, 0x17, 3, 3, 0xff, 0xff]].concat();
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
        ech: false,
    };
    let no_ext = record(&handshake(
        HANDSHAKE_CLIENT_HELLO,
        &hello_body(&[7; 32], None),
    ));
    assert_eq!(
        parse(&no_ext),
        Peek::ClientHello {
            sni: None,
            ech: false,
        }
    );
    assert_eq!(
        parse(&hello_with(&[])),
        Peek::ClientHello {
            sni: None,
            ech: false,
        }
    );
    let grease = extension(0x0a0a, &[]);
    let alpn = extension(16, b"\x00\x03\x02h2");
    assert_eq!(
        parse(&hello_with(&[grease.clone(), alpn.clone()].concat())),
        Peek::ClientHello {
            sni: None,
            ech: false,
        }
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
    assert_eq!(
        parse(&biggest),
        Peek::ClientHello {
            sni: None,
            ech: false,
        }
    );
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
        1 if !input.is_empty() => input[at] = [0, 1, 0x7f, 0x80, 0xff, rng.byte()][rng.below(6)],
        2 => input.insert(at.min(input.len()), rng.byte()),
        3 if !input.is_empty() => drop(input.drain(at..(at + 1 + rng.below(8)).min(input.len()))),
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

/// Encrypted Client Hello (and GREASE ECH, which browsers send when they
/// have no key, and ESNI before it) is reported, next to the outer name.
#[test]
fn hellos_offering_ech_say_so() {
    let sni = server_name(&[(0, b"a.example")]);
    // ECH (final and draft codepoints) and ESNI, then their neighbours.
    let table = [
        (0xfe0d, true),
        (0xfe08, true),
        (0xfe0c, true),
        (0xffce, true),
        (0xfe07, false),
        (0xfe0e, false),
        (0xffcd, false),
    ];
    for (kind, ech) in table {
        let ext = extension(kind, &[0, 0, 1, 0, 1, 7, 0, 2, 0xaa, 0xbb]);
        assert_eq!(
            parse(&hello_with(&[sni.clone(), ext].concat())),
            Peek::ClientHello {
                sni: Some("a.example".to_owned()),
                ech,
            },
            "{kind:#06x}"
        );
    }
}

mod retry;
