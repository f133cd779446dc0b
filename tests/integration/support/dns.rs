//! DNS stub: a real authoritative-style DNS server on 127.0.0.1 (UDP and TCP, one port) whose
//! answers each test scripts, so the proxy under test never reaches the machine's resolver or the
//! internet. It owns the zone table, the wire handling and the query counters; it does not know
//! about the proxy, and it does no recursion, CNAMEs, wildcards or DNSSEC.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// TTL of records (and of the SOA in negative answers) for names without a `ttl` override.
const DEFAULT_TTL: u32 = 300;

/// Largest UDP answer for a query without EDNS (RFC 1035 §4.2.1); bigger ones are sent
/// truncated (TC) so the client retries over TCP, as a real server would.
const CLASSIC_UDP_LIMIT: usize = 512;

/// Payload size we advertise in our own OPT record: the DNS Flag Day 2020 value, which avoids
/// IP fragmentation on any path.
const ADVERTISED_PAYLOAD: u16 = 1232;

/// Binding UDP on port 0 and then TCP on the same port can lose a race with another socket
/// taking that TCP port; a handful of fresh UDP ports is plenty to get past it.
const BIND_ATTEMPTS: usize = 16;

/// Starts describing a stub server: add names, then [`DnsBuilder::run`] it.
pub fn dns() -> DnsBuilder {
    DnsBuilder::default()
}

/// What the stub answers, name by name. Names are ASCII (punycode for IDNs), matched
/// case-insensitively, with or without a trailing dot. A name never mentioned is answered
/// NXDOMAIN; a name with records but none of the queried type, NODATA. If several of
/// `nxdomain`/`servfail`/`refused`/`silent`/`rotating` are set on one name, the last one wins and
/// the name's A/AAAA records are not served.
#[derive(Debug, Default)]
pub struct DnsBuilder {
    names: HashMap<String, Entry>,
    ttls: HashMap<String, u32>,
}

/// One scripted name.
#[derive(Debug, Default)]
struct Entry {
    addrs: Vec<IpAddr>,
    behaviour: Behaviour,
}

/// How a name is answered. The last of `nxdomain`/`servfail`/`refused`/`silent`/`rotating` set
/// on a name wins; `addrs` are served only under `Records`.
#[derive(Debug, Default)]
enum Behaviour {
    #[default]
    Records,
    Rcode(ResponseCode),
    Silent,
    Rotating(Vec<IpAddr>),
}

// === impl DnsBuilder ===

impl DnsBuilder {
    /// Adds an A record for `name` (TTL 300 unless [`DnsBuilder::ttl`] says otherwise).
    /// Call repeatedly to give a name several addresses; they are answered in insertion order.
    pub fn a(self, name: &str, ip: [u8; 4]) -> Self {
        self.record(name, IpAddr::V4(Ipv4Addr::from(ip)))
    }

    /// Adds an AAAA record for `name`, like [`DnsBuilder::a`].
    pub fn aaaa(self, name: &str, ip: Ipv6Addr) -> Self {
        self.record(name, IpAddr::V6(ip))
    }

    /// Adds an A or AAAA record, by the address's family.
    pub fn ip(self, name: &str, ip: IpAddr) -> Self {
        self.record(name, ip)
    }

    /// Sets the TTL, in seconds, of `name`'s records and of the SOA in its negative answers
    /// (which bounds how long a resolver may cache the NXDOMAIN/NODATA). Does not make an
    /// unknown name known. Ignored for `rotating` names, which always use TTL 0.
    pub fn ttl(mut self, name: &str, secs: u32) -> Self {
        self.ttls.insert(key(name), secs);
        self
    }

    /// Answers NXDOMAIN for `name`, with an SOA in the authority section so the negative answer
    /// is cacheable per RFC 2308. (Unknown names get the same; this one makes the intent explicit
    /// and overrides records added for the name.)
    pub fn nxdomain(self, name: &str) -> Self {
        self.behave(name, Behaviour::Rcode(ResponseCode::NXDomain))
    }

    /// Answers SERVFAIL for `name`, whatever the query type.
    pub fn servfail(self, name: &str) -> Self {
        self.behave(name, Behaviour::Rcode(ResponseCode::ServFail))
    }

    /// Answers REFUSED for `name`, whatever the query type.
    pub fn refused(self, name: &str) -> Self {
        self.behave(name, Behaviour::Rcode(ResponseCode::Refused))
    }

    /// Never answers queries for `name` (on either transport), so the client times out.
    /// The queries are still counted.
    pub fn silent(self, name: &str) -> Self {
        self.behave(name, Behaviour::Silent)
    }

    /// A DNS-rebinding attacker: the n-th A query for `name` (counting from 0) is answered with
    /// `addrs[n % len]` if that is an IPv4 address, else NODATA; AAAA queries keep their own
    /// count and take IPv6 addresses the same way. Always TTL 0, so nothing may be cached.
    ///
    /// # Panics
    /// If `addrs` is empty.
    pub fn rotating(self, name: &str, addrs: Vec<IpAddr>) -> Self {
        assert!(
            !addrs.is_empty(),
            "dns stub: rotating({name:?}) needs at least one address"
        );
        self.behave(name, Behaviour::Rotating(addrs))
    }

    /// Binds 127.0.0.1 on one OS-assigned port for both UDP and TCP and starts serving.
    /// The server runs until the returned [`DnsServer`] is dropped.
    ///
    /// # Panics
    /// If no port can be bound for both transports, or outside a tokio runtime.
    pub async fn run(self) -> DnsServer {
        let (udp, tcp) = bind().await;
        let addr = match udp.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("dns stub: local_addr: {e}"),
        };
        let zone = Arc::new(Zone::new(self));
        let tasks = [
            tokio::spawn(serve_udp(udp, Arc::clone(&zone))),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&zone))),
        ];
        DnsServer { addr, zone, tasks }
    }

    fn record(mut self, name: &str, ip: IpAddr) -> Self {
        self.names.entry(key(name)).or_default().addrs.push(ip);
        self
    }

    fn behave(mut self, name: &str, behaviour: Behaviour) -> Self {
        self.names.entry(key(name)).or_default().behaviour = behaviour;
        self
    }
}

/// Binds UDP on port 0, then TCP on the same port, retrying with a new UDP port if that TCP port
/// is taken.
async fn bind() -> (UdpSocket, TcpListener) {
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(udp) => udp,
            Err(e) => panic!("dns stub: bind udp 127.0.0.1:0: {e}"),
        };
        let addr = match udp.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("dns stub: local_addr: {e}"),
        };
        match TcpListener::bind(addr).await {
            Ok(tcp) => return (udp, tcp),
            Err(e) => last_err = Some(e),
        }
    }
    panic!("dns stub: no port free for both udp and tcp after {BIND_ATTEMPTS} tries: {last_err:?}")
}

/// Lower-cased, without one trailing dot: the form both scripted and queried names are keyed by.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

// === impl DnsServer ===

/// A running stub. Dropping it stops the server: its tasks, and any open TCP connections, are
/// aborted.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Zone>,
    tasks: [JoinHandle<()>; 2],
}

impl DnsServer {
    /// The address to use as nameserver: 127.0.0.1 and one port serving both UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Well-formed queries received so far for `name` (any type, both transports, answered or
    /// not). `name` is matched like the builder's names.
    pub fn queries(&self, name: &str) -> usize {
        self.zone.queries_for(&key(name))
    }

    /// Well-formed queries received so far for any name, both transports.
    pub fn total_queries(&self) -> usize {
        self.zone.total.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

// === impl Zone ===

/// The frozen script plus the counters the server updates; shared by both transports.
#[derive(Debug)]
struct Zone {
    names: HashMap<String, Entry>,
    ttls: HashMap<String, u32>,
    /// Per rotating name: how many A and AAAA queries it has had, in that order.
    turns: HashMap<String, [AtomicUsize; 2]>,
    counts: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    /// MNAME and RNAME of the SOA in negative answers.
    soa_names: (Name, Name),
}

impl Zone {
    fn new(builder: DnsBuilder) -> Self {
        let turns = builder
            .names
            .iter()
            .filter(|(_, entry)| matches!(entry.behaviour, Behaviour::Rotating(_)))
            .map(|(name, _)| (name.clone(), Default::default()))
            .collect();
        Self {
            names: builder.names,
            ttls: builder.ttls,
            turns,
            counts: Mutex::default(),
            total: AtomicUsize::new(0),
            soa_names: (
                stub_name("ns.dns-stub.test."),
                stub_name("hostmaster.dns-stub.test."),
            ),
        }
    }

    fn queries_for(&self, key: &str) -> usize {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }

    fn count(&self, key: &str) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *counts.entry(key.to_owned()).or_default() += 1;
    }

    /// Decodes one query and encodes the answer. `None` means send nothing: the packet was not a
    /// well-formed query, or the name is `silent`.
    fn respond(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        let response = self.answer(&request)?;
        let bytes = response.to_vec().ok()?;
        let limit = match transport {
            Transport::Tcp => return Some(bytes),
            Transport::Udp => request
                .edns
                .as_ref()
                .map_or(CLASSIC_UDP_LIMIT, |edns| usize::from(edns.max_payload()))
                .max(CLASSIC_UDP_LIMIT),
        };
        if bytes.len() <= limit {
            return Some(bytes);
        }
        response.truncate().to_vec().ok()
    }

    fn answer(&self, request: &Message) -> Option<Message> {
        // Never answer a response: two stubs (or a reflected packet) must not ping-pong.
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let query = request.queries.first()?;
        let name = key(&query.name.to_ascii());
        self.count(&name);

        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        // Copies RD and CD, as RFC 6895 §2 asks.
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.authoritative = true;
        response.metadata.recursion_available = true;
        response.queries = request.queries.clone();
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(ADVERTISED_PAYLOAD);
            response.edns = Some(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return Some(response);
        }

        let Some(entry) = self.names.get(&name) else {
            self.negative(&mut response, &name, ResponseCode::NXDomain);
            return Some(response);
        };
        match &entry.behaviour {
            Behaviour::Silent => return None,
            Behaviour::Rcode(ResponseCode::NXDomain) => {
                self.negative(&mut response, &name, ResponseCode::NXDomain);
            }
            Behaviour::Rcode(rcode) => response.metadata.response_code = *rcode,
            Behaviour::Records => {
                let ttl = self.ttls.get(&name).copied().unwrap_or(DEFAULT_TTL);
                response.answers = matching(&entry.addrs, query, ttl);
            }
            Behaviour::Rotating(addrs) => {
                response.answers = self.rotate(&name, addrs, query);
            }
        }
        if response.answers.is_empty() && response.metadata.response_code == ResponseCode::NoError {
            // NODATA: the name exists but has nothing of this type.
            self.negative(&mut response, &name, ResponseCode::NoError);
        }
        Some(response)
    }

    /// The rotating name's next address for this query type, if it is of that type.
    fn rotate(&self, name: &str, addrs: &[IpAddr], query: &Query) -> Vec<Record> {
        let slot = match query.query_type {
            RecordType::A => 0,
            RecordType::AAAA => 1,
            _ => return Vec::new(),
        };
        let Some(turns) = self.turns.get(name) else {
            return Vec::new();
        };
        let turn = turns[slot].fetch_add(1, Ordering::SeqCst);
        matching(std::slice::from_ref(&addrs[turn % addrs.len()]), query, 0)
    }

    /// Sets `rcode` and puts the SOA in authority, owned by the root: the stub answers for the
    /// whole namespace, so the root is the apex of every name it serves.
    fn negative(&self, response: &mut Message, name: &str, rcode: ResponseCode) {
        let ttl = match self.names.get(name).map(|entry| &entry.behaviour) {
            Some(Behaviour::Rotating(_)) => 0,
            _ => self.ttls.get(name).copied().unwrap_or(DEFAULT_TTL),
        };
        let (mname, rname) = self.soa_names.clone();
        // Refresh, retry and expire only matter to secondaries; MINIMUM is the negative TTL.
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, ttl);
        response.metadata.response_code = rcode;
        response.authorities = vec![Record::from_rdata(Name::root(), ttl, RData::SOA(soa))];
    }
}

/// Answer records from `addrs` of the queried type, owned by the query name as the client spelt
/// it (resolvers using 0x20 case randomisation compare it byte for byte).
fn matching(addrs: &[IpAddr], query: &Query, ttl: u32) -> Vec<Record> {
    addrs
        .iter()
        .filter_map(|ip| match (ip, query.query_type) {
            (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(query.name.clone(), ttl, rdata))
        .collect()
}

fn stub_name(name: &str) -> Name {
    match Name::from_ascii(name) {
        Ok(name) => name,
        Err(e) => panic!("dns stub: bad built-in name {name:?}: {e}"),
    }
}

// === transports ===

/// Which transport a query came on: only UDP answers are size-limited.
#[derive(Debug, Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// Answers datagrams one at a time: every answer is computed without waiting, and a `silent`
/// name simply gets no reply, so one slow query never holds up the next.
async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(bytes) = zone.respond(&buf[..len], Transport::Udp) {
            // A client that has gone away is its own problem; the server carries on.
            let _sent = socket.send_to(&bytes, peer).await;
        }
    }
}

/// Accepts TCP connections; each is served on its own task, owned by a `JoinSet` so aborting
/// this task closes every connection too.
async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_tcp_connection(stream, Arc::clone(&zone)));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// RFC 1035 §4.2.2 framing: each message is preceded by its length as a big-endian u16. Clients
/// may pipeline several queries on one connection; they are answered in order.
async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut packet = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut packet).await.is_err() {
            return;
        }
        let Some(bytes) = zone.respond(&packet, Transport::Tcp) else {
            continue;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
