//! The gate around a HelloRetryRequest, driven over in-memory streams:
//! whatever the client sends behind its first hello, however it is split
//! into reads, no second hello naming another host (or unreadable) reaches
//! the server after a retry request, and everything reaches it otherwise.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::{Activity, End, Options};
use super::*;
use crate::host::Name;
use crate::mangle::Rng;

fn vec16(data: &[u8]) -> Vec<u8> {
    [&u16::try_from(data.len()).unwrap().to_be_bytes()[..], data].concat()
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    [&[kind, 3, 3][..], &vec16(payload)].concat()
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    [&[kind][..], &len[1..], body].concat()
}

/// A ClientHello message (no record framing) naming `name`.
fn hello(name: &str) -> Vec<u8> {
    let entry = [&[0u8][..], &vec16(name.as_bytes())].concat();
    let server_name = [&[0u8, 0][..], &vec16(&vec16(&entry))].concat();
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend_from_slice(&vec16(&server_name));
    handshake(1, &body)
}

/// `message` in handshake records of 1..=`max` bytes each.
fn framed(message: &[u8], max: usize, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in message.chunks(1 + rng.below(max)) {
        out.extend_from_slice(&record(0x16, piece));
    }
    out
}

/// The server's first flight: a HelloRetryRequest, or an ordinary
/// ServerHello (any other random).
fn server_answer(retry: bool) -> Vec<u8> {
    let random: [u8; 32] = if retry {
        Sha256::digest(b"HelloRetryRequest").into()
    } else {
        [9; 32]
    };
    let body = [&[3u8, 3][..], &random, &[0, 0x13, 0x01, 0, 0, 0]].concat();
    record(0x16, &handshake(2, &body))
}

/// Runs the gate between a client sending `stream` in `chunks` and a
/// server that answers the first `first_len` bytes with `answer`. Returns
/// what the gate decided and every byte the server received.
async fn run(
    stream: &[u8],
    chunks: &[usize],
    first_len: usize,
    answer: Vec<u8>,
) -> (Result<(), End>, Vec<u8>) {
    let host = Host::Name(Name::parse("a.example").unwrap());
    let opts = Options {
        idle_timeout: Duration::from_secs(30),
        sni_host: &host,
        require_sni: false,
        allow_ech: false,
    };
    let (mut client, mut cr) = tokio::io::duplex(1 << 20);
    let (mut uw, mut server_in) = tokio::io::duplex(1 << 20);
    let (mut server_out, mut ur) = tokio::io::duplex(1 << 20);
    let (mut cw, _client_in) = tokio::io::duplex(1 << 20);
    let sending = {
        let stream = stream.to_vec();
        let chunks = chunks.to_vec();
        tokio::spawn(async move {
            let mut rest = &stream[..];
            for &n in chunks.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(n.min(rest.len()));
                // The gate may stop reading (a refusal): that is not an error here.
                if client.write_all(now).await.is_err() {
                    return;
                }
                client.flush().await.unwrap();
                tokio::task::yield_now().await;
                rest = later;
            }
            let _ = client.shutdown().await;
        })
    };
    let server = tokio::spawn(async move {
        let mut got = vec![0; first_len];
        server_in.read_exact(&mut got).await.unwrap();
        server_out.write_all(&answer).await.unwrap();
        server_in.read_to_end(&mut got).await.unwrap();
        drop(server_out);
        got
    });
    let (up, down, activity) = (AtomicU64::new(0), AtomicU64::new(0), Activity::new());
    let gate = Gate::new(&opts);
    let mut seen = Hello::default();
    let ((decided, relayed), _) = tokio::join!(
        async {
            let decided = gate
                .open(&mut cr, &mut uw, BytesMut::new(), &up, &activity, &mut seen)
                .await;
            // What the tunnel's pump does next: relay the rest as it is.
            let relayed = match decided {
                Ok(()) => tokio::io::copy(&mut cr, &mut uw).await.unwrap(),
                Err(_) => 0,
            };
            uw.shutdown().await.unwrap();
            (decided, relayed)
        },
        gate.watch(&mut ur, &mut cw, &down, &activity),
    );
    drop(cr);
    sending.await.unwrap();
    let got = server.await.unwrap();
    let counted = up.load(Ordering::Relaxed) + relayed;
    assert_eq!(
        counted,
        got.len() as u64,
        "bytes_up counts what the server got"
    );
    (decided, got)
}

/// What the second hello, if any, is in a generated case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Second {
    Same,
    Other,
    Garbage,
}

#[tokio::test]
async fn no_other_name_gets_past_a_retry_request() {
    let mut rng = Rng(0x6a7e_0001);
    let first = framed(&hello("a.example"), 400, &mut rng);
    for case in 0..5_000 {
        let retry = case % 4 != 0;
        let second = *rng.pick(&[Second::Same, Second::Other, Second::Garbage]);
        // Records a server passes over, before the second hello.
        let mut skipped = Vec::new();
        for _ in 0..rng.below(4) {
            let kind = *rng.pick(&[0x14u8, 0x15, 0x17]);
            let len = 1 + rng.below(300);
            skipped.extend_from_slice(&record(kind, &vec![0x5a; len]));
        }
        let second_bytes = match second {
            Second::Same => framed(&hello("a.example"), 1 + rng.below(80), &mut rng),
            Second::Other => framed(&hello("b.example"), 1 + rng.below(80), &mut rng),
            Second::Garbage => {
                let mut bytes = framed(&hello("a.example"), 80, &mut rng);
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 + rng.byte() % 255;
                bytes.truncate(at + 1 + rng.below(bytes.len() - at));
                bytes
            }
        };
        let after = record(0x17, &vec![0x33; rng.below(50) + 1]);
        let stream = [&first[..], &skipped, &second_bytes, &after].concat();
        let chunks: Vec<usize> = (0..8).map(|_| 1 + rng.below(120)).collect();
        let (decided, got) = run(&stream, &chunks, first.len(), server_answer(retry)).await;
        let label = format!("case {case}: retry {retry}, {second:?}, chunks {chunks:?}");
        match (retry, second, decided) {
            (false, _, Ok(())) | (true, Second::Same, Ok(())) => {
                assert_eq!(got, stream, "{label}: everything passes");
            }
            (true, Second::Other, Err(End::Refused("sni_mismatch"))) => {
                assert_eq!(got, [&first[..], &skipped].concat(), "{label}");
            }
            // A garbled hello may still read as a.example's (a flipped bit
            // in the random, say); otherwise nothing of it passes.
            (true, Second::Garbage, Ok(())) => assert_eq!(got, stream, "{label}"),
            (true, Second::Garbage, Err(End::Refused(_))) => {
                assert!(got.len() <= first.len() + skipped.len(), "{label}");
                assert_eq!(got, stream[..got.len()], "{label}");
            }
            (_, _, decided) => panic!("{label}: {decided:?}"),
        }
    }
}
