//! Throughput of `sluice review`: lines per second over a generated access
//! log, reviewed with JSON output into `io::sink()`.
//!
//! Run with `cargo bench --bench review`. The log (1 GiB by default; set
//! `SLUICE_BENCH_LOG_MB` to change it) is generated once into a temporary
//! file, then reviewed once with the figure printed, then measured by
//! criterion. No network is needed.

use std::error::Error;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput};
use sluice::review::{Format, Options, run};

/// Default log size, MiB.
const DEFAULT_MB: u64 = 1024;

/// Distinct agents and destinations per agent in the generated log: a busy
/// cluster's week, and enough keys that the maps are not trivially hot.
const AGENTS: usize = 20;
const DESTINATIONS: usize = 500;

fn main() -> Result<(), Box<dyn Error>> {
    let mb = match std::env::var("SLUICE_BENCH_LOG_MB") {
        Ok(v) => v.parse()?,
        Err(_) => DEFAULT_MB,
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("access.jsonl");
    let started = Instant::now();
    let lines = generate(&path, mb << 20)?;
    println!(
        "review bench: generated {lines} lines ({mb} MiB) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let logs = vec![path];
    let opts = Options {
        since: None,
        baseline: None,
        format: Format::Json,
        config: None,
        now: SystemTime::now(),
    };

    let started = Instant::now();
    let summary = run(&opts, &logs, &mut io::sink())?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "review bench: {} lines ({mb} MiB) in {secs:.2} s = {:.0} lines/s, {:.0} MiB/s",
        summary.lines,
        summary.lines as f64 / secs,
        mb as f64 / secs,
    );

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(secs.mul_add(12.0, 1.0).ceil() as u64))
        .configure_from_args();
    let mut group = c.benchmark_group("review");
    group.throughput(Throughput::Elements(lines));
    group.bench_function("json_to_sink", |b| {
        b.iter(|| black_box(run(&opts, black_box(&logs), &mut io::sink()).map(|s| s.records)))
    });
    group.finish();
    c.final_summary();
    Ok(())
}

/// Writes realistic CONNECT and plain-HTTP lines until the file holds
/// `bytes`; returns the number of lines.
fn generate(path: &Path, bytes: u64) -> io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let start = SystemTime::now() - Duration::from_secs(7 * 86_400);
    let (mut written, mut lines) = (0u64, 0u64);
    while written < bytes {
        let line = line(lines, start);
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

fn line(i: u64, start: SystemTime) -> String {
    let n = i as usize;
    let agent = format!("agent-{}", n % AGENTS);
    let dest = (n / AGENTS) % DESTINATIONS;
    let ts = humantime::format_rfc3339_millis(start + Duration::from_millis(i * 7));
    let (decision, rule, reason, status) = match n % 10 {
        0 => ("deny", "", "\"not_allowed\"", 403),
        1 => ("error", ",\"rule\":\".example.org\"", "\"dns_error\"", 502),
        _ => ("allow", ",\"rule\":\".example.org\"", "null", 200),
    };
    format!(
        "{{\"ts\":\"{ts}\",\"id\":\"0f3c9a{i:010x}\",\"agent\":\"{agent}\",\"identity\":\"source\",\
         \"src\":\"10.0.1.{}:{}\",\"method\":\"CONNECT\",\"host\":\"svc-{dest}.example.org\",\
         \"port\":443,\"decision\":\"{decision}\"{rule},\"mode\":\"enforce\",\"reason\":{reason},\
         \"status\":{status},\"ips\":[\"104.18.7.192\",\"104.18.6.192\"],\"ip\":\"104.18.7.192\",\
         \"sni\":\"svc-{dest}.example.org\",\"bytes_up\":{},\"bytes_down\":{},\"dns_ms\":1.2,\
         \"connect_ms\":8.4,\"duration_ms\":1532.0}}\n",
        n % 250,
        30_000 + n % 30_000,
        1000 + n % 977,
        90_000 + n % 7919,
    )
}
