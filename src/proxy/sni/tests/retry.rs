//! Tests for what the tunnel reads around a HelloRetryRequest: the
//! server's answer (`reply`), the records a client may send before its
//! second hello (`lead`), and where a hello's records end (`hello_end`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::kx_group::{SECP256R1, X25519};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConnection, ServerConnection};

use super::*;

fn provider(groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = groups.to_vec();
    Arc::new(provider)
}

/// A rustls server's first flight, in memory, for a client whose first
/// key share is for `client_groups[0]`, against a server that takes only
/// X25519: a HelloRetryRequest when the client leads with P-256.
fn server_answer(client_groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Vec<u8> {
    let ck = rcgen::generate_simple_self_signed(vec![NAME.to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider(&[X25519]))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider(client_groups))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(NAME).unwrap().to_owned();
    let mut client = ClientConnection::new(Arc::new(client), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server)).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    server.read_tls(&mut &hello[..]).unwrap();
    server.process_new_packets().unwrap();
    let mut answer = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut answer).unwrap();
    }
    answer
}

#[test]
fn a_rustls_retry_request_is_spotted_however_it_is_split() {
    let answer = server_answer(&[SECP256R1, X25519]);
    assert_eq!(reply(&answer), Reply::HelloRetry);
    // The retry request's own record (a change_cipher_spec may follow it).
    let len = usize::from(u16::from_be_bytes([answer[3], answer[4]]));
    let message = &answer[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
    let mut rng = Rng(0x5eed_0002);
    for max in [1, 2, 3, 7, 38, 1000] {
        let records = reframe(message, max, &mut rng);
        assert_eq!(reply(&records), Reply::HelloRetry, "max {max}");
        for end in 0..records.len() {
            let early = reply(&records[..end]);
            assert!(
                early == Reply::NeedMore || early == Reply::HelloRetry,
                "max {max} at {end}: {early:?}"
            );
        }
    }
}

#[test]
fn an_ordinary_server_hello_is_no_retry_request() {
    let answer = server_answer(&[X25519]);
    assert_eq!(answer[RECORD_HEADER_LEN], HANDSHAKE_SERVER_HELLO);
    assert_eq!(reply(&answer), Reply::Other);
    // Up to the end of the random, it cannot be told from a retry request.
    let end = RECORD_HEADER_LEN + REPLY_PREFIX;
    assert_eq!(reply(&answer[..end - 1]), Reply::NeedMore);
    assert_eq!(reply(&answer[..end]), Reply::Other);
}

#[test]
fn replies_that_are_not_a_server_hello() {
    let cases: [(&[u8], Reply); 7] = [
        (b"", Reply::NeedMore),
        (&[CONTENT_HANDSHAKE, 3], Reply::NeedMore),
        (&[CONTENT_ALERT, 3, 3, 0, 2, 2, 40], Reply::Other),
        (b"SSH-2.0-OpenSSH_9.6\r\n", Reply::Other),
        (&[CONTENT_HANDSHAKE, 2, 0], Reply::Other),
        (&[CONTENT_HANDSHAKE, 3, 3, 0, 0], Reply::Other),
        // A certificate where the ServerHello belongs.
        (&[CONTENT_HANDSHAKE, 3, 3, 0, 4, 11, 0, 0, 0], Reply::Other),
    ];
    for (input, expected) in cases {
        assert_eq!(reply(input), expected, "{input:02x?}");
    }
}

#[test]
fn replies_are_stable_and_bounded() {
    let mut rng = Rng(0x00c0_ffee_0003);
    let seeds = [
        server_answer(&[SECP256R1, X25519]),
        server_answer(&[X25519]),
    ];
    for round in 0..20_000 {
        let mut input = seeds[round % 2].clone();
        for _ in 0..1 + rng.below(3) {
            super::mutate(&mut input, &mut rng);
        }
        let whole = reply(&input);
        let early = reply(&input[..rng.below(input.len() + 1)]);
        assert!(
            early == Reply::NeedMore || early == whole,
            "{early:?} then {whole:?} for {input:02x?}"
        );
        if input.len() >= MAX_REPLY_BYTES {
            assert_ne!(whole, Reply::NeedMore, "{input:02x?}");
        }
    }
    // The worst case the bound is for: one byte per record.
    let message = handshake(HANDSHAKE_SERVER_HELLO, &[[3, 3], [0; 2]].concat());
    let message = [&message[..6], &HELLO_RETRY_RANDOM[..]].concat();
    let records = reframe(&message, 1, &mut rng);
    assert_eq!(records.len(), MAX_REPLY_BYTES);
    assert_eq!(reply(&records[..MAX_REPLY_BYTES - 1]), Reply::NeedMore);
    assert_eq!(reply(&records), Reply::HelloRetry);
}

#[test]
fn records_before_a_second_hello() {
    let hello = hello_with(&server_name(&[(0, b"a.example")]));
    let early_data = [&[CONTENT_APPLICATION_DATA, 3, 3, 0, 3][..], &[9; 3]].concat();
    let cases: [(&[u8], Lead); 10] = [
        (b"", Lead::NeedMore),
        (&[CONTENT_CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 1], Lead::Skip(6)),
        (&[CONTENT_CHANGE_CIPHER_SPEC, 3, 3, 0, 1], Lead::NeedMore),
        (&[CONTENT_CHANGE_CIPHER_SPEC, 3], Lead::NeedMore),
        (&[CONTENT_ALERT, 3, 3, 0, 2, 1, 90, 0x16], Lead::Skip(7)),
        (&early_data, Lead::Skip(8)),
        (&hello, Lead::Hello),
        // Not a record a server skips: left to `parse`, which refuses it.
        (&[CONTENT_CHANGE_CIPHER_SPEC, 2], Lead::Hello),
        (&[CONTENT_APPLICATION_DATA, 3, 3, 0x48, 0x01], Lead::Hello),
        (b"GET / HTTP/1.1\r\n", Lead::Hello),
    ];
    for (input, expected) in cases {
        assert_eq!(lead(input), expected, "{input:02x?}");
    }
}

#[tokio::test]
async fn a_hello_ends_with_its_records() {
    for (label, hello, _) in rustls_hellos().await {
        assert_eq!(hello_end(&hello), Some(hello.len()), "{label}");
        let behind = [&hello[..], &[CONTENT_CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 1]].concat();
        assert_eq!(hello_end(&behind), Some(hello.len()), "{label}");
        let records = reframe(&payload(&hello), 5, &mut Rng(4));
        assert_eq!(hello_end(&records), Some(records.len()), "{label}");
        assert_eq!(hello_end(&records[..records.len() - 1]), None, "{label}");
    }
}

/// A second handshake message inside the hello's last record (a second
/// ClientHello, say, for the server to read after its retry request) is
/// refused outright, however much of that record has arrived.
#[test]
fn bytes_after_the_hello_in_its_record_are_refused() {
    let hello = payload(&hello_with(&server_name(&[(0, b"a.example")])));
    let other = payload(&hello_with(&server_name(&[(0, b"b.example")])));
    let why = Peek::Malformed("bytes after the ClientHello in its last record");
    let both = record(&[&hello[..], &other].concat());
    assert_eq!(parse(&both), why);
    assert_eq!(parse(&both[..RECORD_HEADER_LEN + hello.len()]), why);
    assert_eq!(hello_end(&both), None);
    // One byte more in the record is enough.
    let one = record(&[&hello[..], &[0]].concat());
    assert_eq!(parse(&one), why);
}
