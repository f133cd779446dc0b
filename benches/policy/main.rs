//! Benchmarks for the per-request policy path and the control-plane load:
//! `Policy::decide` with 10, 10,000 and 100,000 rules, host normalisation,
//! config parsing and compilation, identity lookups, the forbidden-address
//! check, access-log line serialisation, and reading a request head
//! (parse, the header lookups, the target). Not the relay or the network
//! (that is the load benchmark, `benches/load.rs`).
//!
//! Run: `cargo bench --bench policy` (all), or with a filter, e.g.
//! `cargo bench --bench policy -- decide`. Everything is in memory: no
//! network, no DNS, no files; the large configurations are generated here.
//!
//! What the numbers should show: `decide` costs about the same whatever the
//! number of rules (the rule index is hashed by suffix), and loading a
//! 100,000-rule configuration takes well under a second.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ipnet::IpNet;
use sluice::config::Config;
use sluice::host::Host;
use sluice::identity::Evidence;
use sluice::policy::{Policy, Verdict, addrs};
use sluice::proxy::target::{Kind, Target};
use sluice::proxy::{forward, head};
use sluice::telemetry::access_log::{Record, RequestId, Stamp};

mod rules;
use rules::{AGENT, AGENTS, RULES_PER_AGENT, config_toml, load};

fn bench_decide(c: &mut Criterion) {
    let now = SystemTime::now();
    let sizes = rules::sizes();
    let mut group = c.benchmark_group("decide");
    // Case by case, each across every size: the sizes being compared are
    // measured a few seconds apart, so a shared host's slow spells (which
    // last minutes) land on all of them or none. `benches/decide_scaling.rs`
    // goes further and alternates the sizes every millisecond.
    for i in 0..rules::cases(0, 10).len() {
        for size in &sizes {
            let case = rules::cases(size.agent, size.rules).swap_remove(i);
            let d = size.policy.decide(size.agent, &case.host, case.port, now);
            assert_eq!(
                d.verdict == Verdict::Allow,
                case.allowed,
                "{} {}: {d:?}",
                size.label,
                case.label
            );
            group.bench_function(BenchmarkId::new(case.label, size.label), |b| {
                b.iter(|| {
                    size.policy
                        .decide(black_box(size.agent), black_box(&case.host), case.port, now)
                });
            });
        }
    }
    group.finish();
}

fn bench_host_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_parse");
    for (label, input) in [
        ("plain", "api.openai.com"),
        ("plain_upper_trailing_dot", "API.OpenAI.com."),
        ("idna", "bücher.example"),
        ("ipv4", "93.184.215.14"),
        ("ipv6", "[2001:db8::1]"),
    ] {
        assert!(Host::parse(input).is_ok(), "{input}");
        group.bench_function(label, |b| b.iter(|| Host::parse(black_box(input))));
    }
    group.finish();
}

fn bench_load(c: &mut Criterion) {
    let toml = config_toml(AGENTS, RULES_PER_AGENT);
    let mut group = c.benchmark_group("load");
    // Each iteration takes a sizeable fraction of a second: few samples suffice.
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("from_toml_100k_rules", |b| {
        b.iter(|| Config::from_toml(black_box(&toml), Path::new("bench.toml")));
    });
    let config = Arc::new(
        Config::from_toml(&toml, Path::new("bench.toml"))
            .unwrap_or_else(|e| panic!("generated config is invalid: {e}")),
    );
    group.bench_function("policy_new_100k_rules", |b| {
        b.iter(|| Policy::new(black_box(config.clone())));
    });
    group.bench_function("from_toml_and_policy_new_100k_rules", |b| {
        b.iter(|| load(black_box(&toml)));
    });
    group.finish();
}

fn bench_identity(c: &mut Criterion) {
    let policy = load(&config_toml(AGENTS, 1));
    let peer: IpAddr = format!("10.{}.{}.42", AGENT >> 8, AGENT & 255)
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let stranger: IpAddr = [192, 0, 2, 1].into();
    let header = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("agent{AGENT}:token-{AGENT}"))
    );
    let by_token = Evidence {
        peer: stranger,
        spiffe_id: None,
        proxy_authorization: Some(header.as_bytes()),
    };
    assert_eq!(policy.identities.by_source(peer), Some(AGENT));
    assert_eq!(
        policy.identities.identify(&by_token).map(|i| i.agent),
        Ok(AGENT)
    );

    let mut group = c.benchmark_group("identity_1000_agents");
    group.bench_function("by_source_hit", |b| {
        b.iter(|| policy.identities.by_source(black_box(peer)));
    });
    group.bench_function("by_source_miss", |b| {
        b.iter(|| policy.identities.by_source(black_box(stranger)));
    });
    group.bench_function("by_token", |b| {
        b.iter(|| policy.identities.identify(black_box(&by_token)));
    });
    group.finish();
}

fn bench_addrs(c: &mut Criterion) {
    let allow: Vec<IpNet> = ["10.96.0.0/12", "fd00:1::/64"]
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect();
    let mut group = c.benchmark_group("addrs_check");
    for (label, ip, dialable) in [
        ("public_v4", "93.184.215.14", true),
        ("public_v6", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", true),
        ("private_v4", "10.1.2.3", false),
        ("allowed_exception_v4", "10.96.0.10", true),
        ("metadata_mapped_v6", "::ffff:169.254.169.254", false),
        ("nat64_private", "64:ff9b::a00:1", false),
    ] {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert_eq!(addrs::check(ip, &allow).is_ok(), dialable, "{ip}");
        group.bench_function(label, |b| b.iter(|| addrs::check(black_box(ip), &allow)));
    }
    group.finish();
}

/// `ms` milliseconds after the Unix epoch.
fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// One access-log line from a filled-in record: an allowed absolute-form
/// request (most fields present) and a refused CONNECT (few).
fn bench_log_line(c: &mut Criterion) {
    let allowed = Record {
        ts: Stamp(at(1_795_336_200_123)),
        id: RequestId {
            prefix: 0x0123_4567_89ab_cdef,
            n: 0x42,
        },
        agent: Some("research-agent".into()),
        identity: Some("token"),
        src: "10.42.7.19:51234".into(),
        method: Some("GET".into()),
        host: Some("api.example.com".to_owned()),
        port: Some(80),
        path: Some("/v1/search".to_owned()),
        decision: "allow",
        rule: Some("api.example.com".into()),
        mode: Some("enforce"),
        status: Some(200),
        ips: Some(Arc::from([
            [93, 184, 215, 14].into(),
            [93, 184, 215, 15].into(),
        ])),
        ip: Some([93, 184, 215, 14].into()),
        bytes_up: Some(312),
        bytes_down: Some(18_734),
        dns_ms: Some(0.012),
        connect_ms: Some(1.403),
        duration_ms: 23.731,
        ..Record::default()
    };
    let refused = Record {
        ts: Stamp(at(1_795_336_200_124)),
        id: RequestId {
            prefix: 0x0123_4567_89ab_cdef,
            n: 0x43,
        },
        agent: Some("research-agent".into()),
        identity: Some("source"),
        src: "10.42.7.19:51236".into(),
        method: Some("CONNECT".into()),
        host: Some("evil.example".to_owned()),
        port: Some(443),
        decision: "deny",
        reason: Some("not_allowed"),
        status: Some(403),
        duration_ms: 0.041,
        ..Record::default()
    };
    let mut group = c.benchmark_group("access_log_line");
    for (label, record) in [("allowed_request", &allowed), ("refused_connect", &refused)] {
        group.bench_function(label, |b| b.iter(|| black_box(record).to_line()));
    }
    group.finish();
}

/// What sluice does with a request's head before the policy sees it: read
/// and parse it (here from memory), look for credentials, understand the
/// target and check its framing.
fn bench_request_head(c: &mut Criterion) {
    let raw = b"GET http://api.example.com:8080/v1/items?page=2 HTTP/1.1\r\n\
        Host: api.example.com:8080\r\n\
        User-Agent: agent/1.0\r\n\
        Accept: application/json\r\n\
        Accept-Encoding: gzip, deflate\r\n\
        Authorization: Bearer abcdefghijklmnopqrstuvwxyz\r\n\
        X-Request-Id: 7f3c2a9e-8d41-4b6a-9c0e-2f5d1a7b3e64\r\n\
        Connection: keep-alive\r\n\
        Proxy-Authorization: Basic Y2k6c2VjcmV0\r\n\r\n";
    // head::read bounds its reads with tokio's timer; a slice is always
    // ready, so one poll completes it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let _in_runtime = rt.enter();
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    // One poll of `head::read` on the slice: it is always ready.
    let read_head = || {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut r = &raw[..];
        let mut buf = bytes::BytesMut::new();
        let read = std::pin::pin!(head::read(&mut r, &mut buf, 65536, far, far));
        let std::task::Poll::Ready(Ok(head)) = read.poll(&mut cx) else {
            panic!("the head did not parse in one poll");
        };
        head
    };
    let mut group = c.benchmark_group("request_head");
    group.bench_function("absolute_form_9_headers", |b| {
        b.iter(|| {
            let head = read_head();
            let auth = head.get_one("proxy-authorization").map(|a| a.is_some());
            let target = Target::parse(black_box(&head));
            black_box((auth, target.is_ok()))
        });
    });
    // The same, then the head sluice sends upstream: every field checked
    // against the hop-by-hop and Proxy-* lists and copied.
    group.bench_function("absolute_form_9_headers_rewritten", |b| {
        b.iter(|| {
            let head = read_head();
            let Ok(target) = Target::parse(black_box(&head)) else {
                panic!("the target did not parse");
            };
            let Kind::Forward { origin_form, .. } = &target.kind else {
                panic!("not a forwarded request");
            };
            black_box(forward::rewrite_request(&head, origin_form, &target))
        });
    });
    group.finish();
}

fn criterion() -> Criterion {
    // Short runs keep the whole suite to a couple of minutes; the per-call
    // benchmarks are in nanoseconds, so 2s of samples is plenty.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = bench_decide, bench_host_parse, bench_load, bench_identity, bench_addrs, bench_log_line,
        bench_request_head
}
criterion_main!(benches);
