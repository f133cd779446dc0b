//! The benchmark's name server: a UDP responder on 127.0.0.1 that knows one
//! name, [`HOST`], with one A record (127.0.0.1, TTL 300). Every other name
//! is NXDOMAIN; other types of [`HOST`] are NODATA. Negative answers carry
//! an SOA so sluice's resolver caches them too: otherwise each request would
//! re-ask for the AAAA record and the benchmark would measure DNS traffic,
//! not the proxy's steady state.
//!
//! Not here: TCP, truncation, scripting of answers (the integration tests'
//! stub does those; benches must not import from tests/).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// The origin's name, as the benchmark's clients ask for it.
pub const HOST: &str = "origin.bench";

/// TTL of the A record and of negative answers: longer than any workload,
/// so the cache (capped at 300 s by sluice) stays warm throughout.
const TTL: u32 = 300;

/// Binds 127.0.0.1:0 and answers queries until the runtime stops.
pub async fn start() -> io::Result<SocketAddr> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = socket.local_addr()?;
    tokio::spawn(serve(socket));
    Ok(addr)
}

async fn serve(socket: UdpSocket) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&buf[..len]) {
            // A resolver that went away retries or gives up on its own.
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// The encoded answer to one query; `None` for anything that is not one.
fn answer(packet: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let query = request.queries.first()?;
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    response.queries = request.queries.clone();

    let ascii = query.name.to_ascii();
    let known = ascii.trim_end_matches('.').eq_ignore_ascii_case(HOST);
    if known && query.query_type == RecordType::A {
        // Owned by the name as the client spelt it (0x20 case randomisation).
        let a = RData::A(A(Ipv4Addr::LOCALHOST));
        response.answers = vec![Record::from_rdata(query.name.clone(), TTL, a)];
    } else {
        response.metadata.response_code = if known {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        };
        let mname = Name::from_ascii("ns.origin.bench.").ok()?;
        let rname = Name::from_ascii("hostmaster.origin.bench.").ok()?;
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, TTL);
        response.authorities = vec![Record::from_rdata(Name::root(), TTL, RData::SOA(soa))];
    }
    response.to_vec().ok()
}
