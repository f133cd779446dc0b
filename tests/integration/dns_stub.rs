//! Self-tests of the DNS stub (`support::dns`), driven by a real hickory resolver and by raw
//! hickory-proto packets. They pin the stub's contract, not the proxy's behaviour.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::dns::{DnsServer, dns};

/// Resolver timeout: long enough for loopback, short enough that the timeout test is quick.
const TIMEOUT: Duration = Duration::from_millis(200);

/// How long a raw exchange waits before failing the test instead of hanging it; only a broken
/// stub gets near it.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

/// A resolver that asks only `server`, over UDP with TCP fallback: no resolv.conf, no hosts
/// file, no cache, no retries.
fn resolver(server: &DnsServer) -> TokioResolver {
    resolver_with(server, NameServerConfig::udp_and_tcp, |_| {})
}

/// Like [`resolver`], with the transports `ns` picks and options adjusted by `tweak`.
fn resolver_with(
    server: &DnsServer,
    ns: fn(IpAddr) -> NameServerConfig,
    tweak: impl FnOnce(&mut ResolverOpts),
) -> TokioResolver {
    let mut name_server = ns(server.addr().ip());
    for connection in &mut name_server.connections {
        connection.port = server.addr().port();
    }
    let config = ResolverConfig::from_name_servers(vec![name_server]);
    let mut builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let opts = builder.options_mut();
    opts.timeout = TIMEOUT;
    opts.attempts = 0; // retries after the first try, so 0 = one try
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    tweak(opts);
    builder.build().expect("resolver builds")
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().expect("valid ipv6 literal")
}

/// The `NoRecords` inside a lookup error, which is where NXDOMAIN and NODATA land.
fn no_records(err: &NetError) -> &NoRecords {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => no_records,
        other => panic!("expected a no-records error, got {other:?}"),
    }
}

async fn ipv4s(resolver: &TokioResolver, name: &str) -> Vec<IpAddr> {
    let lookup = resolver.lookup_ip(name).await.expect("lookup succeeds");
    lookup.iter().collect()
}

/// One A query with the given id, as a raw packet.
fn query_packet(id: u16, name: &str, edns: bool) -> Vec<u8> {
    let mut query = Message::query();
    query.metadata.id = id;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    if edns {
        query.set_edns(Edns::new());
    }
    query.to_vec().expect("query encodes")
}

async fn tcp_exchange(stream: &mut TcpStream, packet: &[u8]) -> Message {
    let len = u16::try_from(packet.len()).expect("fits a u16");
    stream
        .write_all(&len.to_be_bytes())
        .await
        .expect("write length");
    stream.write_all(packet).await.expect("write query");
    let answer = tokio::time::timeout(ANSWER_DEADLINE, async {
        let len = stream.read_u16().await.expect("read length");
        let mut answer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut answer).await.expect("read answer");
        answer
    })
    .await
    .expect("answered in time");
    Message::from_vec(&answer).expect("answer decodes")
}

async fn udp_exchange(socket: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Message {
    socket.send_to(packet, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(ANSWER_DEADLINE, socket.recv_from(&mut buf))
        .await
        .expect("answered in time")
        .expect("recv");
    Message::from_vec(&buf[..len]).expect("answer decodes")
}

#[tokio::test]
async fn answers_a_and_aaaa_for_one_name() {
    let server = dns()
        .a("api.example.com", [192, 0, 2, 10])
        .aaaa("api.example.com", v6("2001:db8::10"))
        .run()
        .await;
    let resolver = resolver(&server);

    let ips = ipv4s(&resolver, "api.example.com.").await;

    assert_eq!(ips, [v4(192, 0, 2, 10), IpAddr::V6(v6("2001:db8::10"))]);
    assert_eq!(
        server.queries("api.example.com"),
        2,
        "one A and one AAAA query"
    );
}

#[tokio::test]
async fn names_match_case_insensitively_with_or_without_trailing_dot() {
    let server = dns().a("Api.Example.COM.", [192, 0, 2, 11]).run().await;
    let resolver = resolver(&server);

    let lookup = resolver
        .ipv4_lookup("aPI.example.com")
        .await
        .expect("lookup");

    let ips: Vec<_> = lookup.answers().iter().map(|r| r.data.clone()).collect();
    assert_eq!(ips, [RData::A(A(Ipv4Addr::new(192, 0, 2, 11)))]);
    assert_eq!(server.queries("API.EXAMPLE.COM."), 1);
    assert_eq!(server.queries("api.example.com"), 1);
}

#[tokio::test]
async fn serves_several_records_in_order_with_default_and_custom_ttl() {
    let server = dns()
        .a("many.example", [192, 0, 2, 1])
        .a("many.example", [192, 0, 2, 2])
        .ip("many.example", v4(192, 0, 2, 3))
        .a("short.example", [192, 0, 2, 4])
        .ttl("short.example", 42)
        .run()
        .await;
    let resolver = resolver(&server);

    let many = resolver.ipv4_lookup("many.example.").await.expect("lookup");
    let short = resolver
        .ipv4_lookup("short.example.")
        .await
        .expect("lookup");

    let ips: Vec<_> = many.answers().iter().map(|r| r.data.clone()).collect();
    let expected: Vec<_> = [1, 2, 3]
        .map(|d| RData::A(A(Ipv4Addr::new(192, 0, 2, d))))
        .into();
    assert_eq!(ips, expected);
    assert!(
        many.answers().iter().all(|r| r.ttl == 300),
        "{:?}",
        many.answers()
    );
    assert!(
        short.answers().iter().all(|r| r.ttl == 42),
        "{:?}",
        short.answers()
    );
}

#[tokio::test]
async fn nxdomain_is_a_no_records_error_with_rcode_and_soa() {
    let server = dns()
        .a("gone.example", [192, 0, 2, 1])
        .nxdomain("gone.example")
        .ttl("gone.example", 30)
        .run()
        .await;
    let resolver = resolver(&server);

    for name in ["gone.example.", "never-scripted.example."] {
        let err = resolver
            .lookup_ip(name)
            .await
            .expect_err("must not resolve");

        assert!(err.is_nx_domain(), "{name}: {err:?}");
        let no_records = no_records(&err);
        assert_eq!(no_records.response_code, ResponseCode::NXDomain, "{name}");
        assert!(no_records.soa.is_some(), "{name}: SOA in authority");
    }
    let err = resolver.lookup_ip("gone.example.").await.expect_err("nx");
    assert_eq!(
        no_records(&err).negative_ttl,
        Some(30),
        "SOA carries the name's TTL"
    );
}

#[tokio::test]
async fn known_name_without_that_type_is_nodata() {
    let server = dns().a("v4only.example", [192, 0, 2, 1]).run().await;
    let resolver = resolver(&server);

    let err = resolver
        .ipv6_lookup("v4only.example.")
        .await
        .expect_err("no AAAA");

    assert!(!err.is_nx_domain(), "{err:?}");
    let no_records = no_records(&err);
    assert_eq!(no_records.response_code, ResponseCode::NoError);
    assert!(no_records.soa.is_some(), "SOA in authority");
}

#[tokio::test]
async fn servfail_and_refused_surface_as_response_code_errors() {
    let server = dns()
        .servfail("broken.example")
        .refused("private.example")
        .run()
        .await;
    let resolver = resolver(&server);

    let broken = resolver
        .ipv4_lookup("broken.example.")
        .await
        .expect_err("servfail");
    let private = resolver
        .ipv4_lookup("private.example.")
        .await
        .expect_err("refused");

    assert!(
        matches!(
            broken,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail))
        ),
        "{broken:?}"
    );
    assert!(
        matches!(
            private,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))
        ),
        "{private:?}"
    );
    assert_eq!(
        server.queries("broken.example"),
        1,
        "attempts = 0: no retry"
    );
}

#[tokio::test]
async fn silent_name_times_out() {
    let server = dns().silent("blackhole.example").run().await;
    let resolver = resolver(&server);

    let started = Instant::now();
    let err = resolver
        .lookup_ip("blackhole.example.")
        .await
        .expect_err("no answer");

    assert!(matches!(err, NetError::Timeout), "{err:?}");
    assert!(
        started.elapsed() < TIMEOUT * 5,
        "took {:?}",
        started.elapsed()
    );
    assert!(
        server.queries("blackhole.example") >= 2,
        "A and AAAA were asked"
    );
}

#[tokio::test]
async fn rotating_name_rebinds_on_every_query_despite_a_caching_resolver() {
    let server = dns()
        .rotating(
            "rebind.example",
            vec![
                v4(192, 0, 2, 66),
                v4(127, 0, 0, 1),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        )
        .run()
        .await;
    // The default cache is on here: TTL 0 alone must stop the resolver reusing an answer.
    let resolver = resolver_with(&server, NameServerConfig::udp_and_tcp, |opts| {
        opts.cache_size = ResolverOpts::default().cache_size;
    });

    let mut seen = Vec::new();
    for _ in 0..4 {
        match resolver.ipv4_lookup("rebind.example.").await {
            Ok(lookup) => {
                assert!(lookup.answers().iter().all(|r| r.ttl == 0));
                seen.extend(lookup.answers().iter().map(|r| Some(r.data.clone())));
            }
            Err(err) => {
                assert_eq!(no_records(&err).response_code, ResponseCode::NoError);
                seen.push(None);
            }
        }
    }
    let aaaa = resolver
        .ipv6_lookup("rebind.example.")
        .await
        .expect_err("turn 0 is v4");

    assert_eq!(
        seen,
        [
            Some(RData::A(A(Ipv4Addr::new(192, 0, 2, 66)))),
            Some(RData::A(A(Ipv4Addr::LOCALHOST))),
            None, // the v6 turn: NODATA for A
            Some(RData::A(A(Ipv4Addr::new(192, 0, 2, 66)))),
        ]
    );
    assert_eq!(
        no_records(&aaaa).response_code,
        ResponseCode::NoError,
        "AAAA counts apart"
    );
    assert_eq!(server.queries("rebind.example"), 5);
}

#[tokio::test]
async fn counts_queries_per_name_and_in_total() {
    let server = dns()
        .a("counted.example", [192, 0, 2, 1])
        .a("other.example", [192, 0, 2, 2])
        .run()
        .await;
    let resolver = resolver(&server);

    resolver
        .lookup_ip("counted.example.")
        .await
        .expect("lookup");
    resolver
        .ipv4_lookup("counted.example.")
        .await
        .expect("lookup");
    resolver
        .ipv4_lookup("unknown.example.")
        .await
        .expect_err("nx");

    assert_eq!(server.queries("counted.example"), 3);
    assert_eq!(server.queries("other.example"), 0);
    assert_eq!(server.queries("unknown.example"), 1);
    assert_eq!(server.total_queries(), 4);
}

#[tokio::test]
async fn serves_many_concurrent_lookups() {
    let mut builder = dns();
    for i in 0..32u8 {
        builder = builder.a(&format!("n{i}.example"), [192, 0, 2, i]);
    }
    let server = builder.run().await;
    let resolver = resolver_with(&server, NameServerConfig::udp_and_tcp, |opts| {
        // Under load on a 2-core box a 200 ms budget is tight; this test is about concurrency.
        opts.timeout = Duration::from_secs(5);
    });

    let mut lookups = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let resolver = resolver.clone();
        lookups.spawn(async move {
            let ips = ipv4s(&resolver, &format!("n{i}.example.")).await;
            (i, ips)
        });
    }
    while let Some(result) = lookups.join_next().await {
        let (i, ips) = result.expect("task");
        assert_eq!(ips, [v4(192, 0, 2, i)]);
    }
    assert_eq!(server.total_queries(), 64);
}

#[tokio::test]
async fn answers_a_raw_tcp_query_with_echoed_header_and_question() {
    let server = dns().a("tcp.example", [192, 0, 2, 53]).run().await;
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");

    let first = tcp_exchange(&mut stream, &query_packet(0x1234, "TCP.example.", false)).await;
    let second = tcp_exchange(&mut stream, &query_packet(0x4321, "nope.example.", false)).await;

    assert_eq!(first.metadata.id, 0x1234);
    assert_eq!(first.metadata.message_type, MessageType::Response);
    assert!(first.metadata.authoritative && first.metadata.recursion_available);
    assert!(first.metadata.recursion_desired, "RD copied from the query");
    assert_eq!(first.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        first.queries[0].name.to_ascii(),
        "TCP.example.",
        "question echoed as sent"
    );
    let answers: Vec<_> = first.answers.iter().map(|r| r.data.clone()).collect();
    assert_eq!(answers, [RData::A(A(Ipv4Addr::new(192, 0, 2, 53)))]);
    assert_eq!(
        second.metadata.id, 0x4321,
        "second query on the same connection"
    );
    assert_eq!(second.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(server.queries("tcp.example"), 1);
}

#[tokio::test]
async fn resolver_works_over_tcp_only() {
    let server = dns().a("tcp-only.example", [192, 0, 2, 54]).run().await;
    let resolver = resolver_with(&server, NameServerConfig::tcp, |_| {});

    let ips = ipv4s(&resolver, "tcp-only.example.").await;

    assert_eq!(ips, [v4(192, 0, 2, 54)]);
}

#[tokio::test]
async fn oversized_udp_answer_is_truncated_and_the_resolver_retries_over_tcp() {
    let mut builder = dns();
    for d in 1..=60u8 {
        builder = builder.a("big.example", [192, 0, 2, d]);
    }
    let server = builder.run().await;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");

    let raw = udp_exchange(
        &socket,
        server.addr(),
        &query_packet(7, "big.example.", false),
    )
    .await;
    let resolver = resolver_with(&server, NameServerConfig::udp_and_tcp, |opts| {
        opts.edns0 = false; // so the 512-byte limit applies
    });
    let ips = ipv4s(&resolver, "big.example.").await;

    assert!(raw.metadata.truncation, "60 A records exceed 512 bytes");
    assert!(raw.answers.is_empty());
    assert_eq!(ips.len(), 60);
}

#[tokio::test]
async fn malformed_packets_are_ignored_and_the_server_keeps_serving() {
    let server = dns().a("ok.example", [192, 0, 2, 1]).run().await;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let mut stream = TcpStream::connect(server.addr()).await.expect("connect");

    socket
        .send_to(b"\x00\x01garbage", server.addr())
        .await
        .expect("send");
    socket.send_to(&[], server.addr()).await.expect("send");
    let mut reply = Message::from_vec(&query_packet(9, "ok.example.", false)).expect("decodes");
    reply.metadata.message_type = MessageType::Response;
    socket
        .send_to(&reply.to_vec().expect("encodes"), server.addr())
        .await
        .expect("send");
    stream.write_all(b"\x00\x05junk!").await.expect("write");

    let udp = udp_exchange(
        &socket,
        server.addr(),
        &query_packet(10, "ok.example.", true),
    )
    .await;
    let tcp = tcp_exchange(&mut stream, &query_packet(11, "ok.example.", false)).await;

    assert_eq!(
        udp.metadata.id, 10,
        "the first datagram answered is the good one"
    );
    assert!(udp.edns.is_some(), "EDNS query gets an OPT back");
    assert_eq!(tcp.metadata.id, 11);
    assert_eq!(
        server.total_queries(),
        2,
        "only the well-formed queries count"
    );
}

#[tokio::test]
async fn dropping_the_server_closes_its_port() {
    let server = dns().a("x.example", [192, 0, 2, 1]).run().await;
    let addr = server.addr();

    drop(server);

    // Abort takes effect when the runtime next polls the tasks, so give it turns, not time.
    for _ in 0..1000 {
        if TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{addr} still accepting after the server was dropped");
}
