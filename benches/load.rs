//! End-to-end load benchmark: sluice's cost per unit of work.
//!
//! Run it with `bash benches/run-load.sh` (or `cargo bench --bench load`);
//! method and results are in docs/performance.md. Everything is on
//! loopback: a DNS responder and an HTTP origin in this process, sluice as
//! a subprocess (the binary cargo built for this bench, copied aside so a
//! concurrent build cannot swap it mid-run) with its access log written to
//! a file. With two or more CPUs, sluice is pinned to the first and this
//! process (load generator, origin, DNS: one tokio thread) to the second.
//!
//! Environment:
//! - `SLUICE_BENCH_SECONDS` per timed workload (default 5)
//! - `SLUICE_BENCH_RUNS` (default 1; with more, cells show median (min–max))
//! - `SLUICE_BENCH_IDLE_TUNNELS` (default 2000; capped by the open-files limit)
//! - `SLUICE_BENCH_PACED_RATE` requests/s of the open-loop keep-alive
//!   workload (default 20000, about a quarter of what one core relays)
//! - `SLUICE_BENCH_BIN` the sluice binary (default: cargo's `CARGO_BIN_EXE_sluice`)
//! - `SLUICE_BENCH_PIN=0` to leave CPU placement to the scheduler
//! - `SLUICE_BENCH_PROXY=squid` or `tinyproxy` to measure that proxy
//!   instead, the same way (Debian's packages; see child.rs); a list, such
//!   as `sluice,squid,tinyproxy`, measures each in turn, one run of each
//!   per round, and adds a table comparing the first with the others
//!
//! Without `--bench` (as `cargo test --benches` runs it) it does a smoke
//! run: a fraction of a second per workload, to show the harness works.

#[path = "load/child.rs"]
mod child;
#[path = "load/client.rs"]
mod client;
#[path = "load/dns.rs"]
mod dns;
#[path = "load/origin.rs"]
mod origin;
#[path = "load/procfs.rs"]
mod procfs;
#[path = "load/report.rs"]
mod report;
#[path = "load/tls.rs"]
mod tls;
#[path = "load/workloads.rs"]
mod workloads;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use workloads::{Bench, Measured};

/// Errors end the benchmark with a message; nothing here is recoverable.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Tunnels and absolute-form requests sent before measuring anything.
const WARM_UP: usize = 50;
/// File descriptors kept aside (runtime, log, listeners) when sizing the
/// idle workload to the open-files limit; each idle tunnel costs two.
const SPARE_FDS: u64 = 256;

#[derive(Debug)]
struct Options {
    duration: Duration,
    runs: usize,
    idle_tunnels: usize,
    paced_rate: f64,
    bin: PathBuf,
    pin: bool,
    /// Measured in this order, one run of each per round.
    proxies: Vec<child::Kind>,
}

impl Options {
    fn from_env() -> Result<Options, Error> {
        let bench = std::env::args().any(|a| a == "--bench");
        let (seconds, idle) = if bench { (5.0, 2000) } else { (0.3, 50) };
        let seconds: f64 = env("SLUICE_BENCH_SECONDS", seconds)?;
        if !(seconds > 0.0 && seconds < 3600.0) {
            return Err("SLUICE_BENCH_SECONDS must be between 0 and 3600".into());
        }
        Ok(Options {
            duration: Duration::from_secs_f64(seconds),
            runs: env("SLUICE_BENCH_RUNS", 1usize)?.max(1),
            idle_tunnels: env("SLUICE_BENCH_IDLE_TUNNELS", idle)?.max(1),
            paced_rate: match env("SLUICE_BENCH_PACED_RATE", 20_000.0)? {
                r if (1.0..=1e7).contains(&r) => r,
                _ => return Err("SLUICE_BENCH_PACED_RATE must be between 1 and 10000000".into()),
            },
            bin: std::env::var_os("SLUICE_BENCH_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
                PathBuf::from,
            ),
            pin: env("SLUICE_BENCH_PIN", 1u8)? != 0,
            proxies: match std::env::var("SLUICE_BENCH_PROXY") {
                Err(_) => vec![child::Kind::Sluice],
                Ok(list) => proxies(&list)?,
            },
        })
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Error> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        Err(_) => Ok(default),
    }
}

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn start() -> Result<(), Error> {
    let opts = Options::from_env()?;
    let cpus = placement(opts.pin);
    if let Some((_, load_cpu)) = cpus {
        // Before the runtime exists: every thread started later inherits it.
        pin_self(load_cpu)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(&opts, cpus))
}

/// (sluice's CPU, the load side's CPU), when there are two to give.
fn placement(pin: bool) -> Option<(u32, u32)> {
    let cpus = procfs::allowed_cpus();
    let taskset = Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (pin && taskset && cpus.len() >= 2).then(|| (cpus[0], cpus[1]))
}

fn pin_self(cpu: u32) -> Result<(), Error> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("taskset could not pin the load generator to CPU {cpu}").into());
    }
    Ok(())
}

async fn bench(opts: &Options, cpus: Option<(u32, u32)>) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let bin = copy_binary(&opts.bin, dir.path())?;
    let dns = dns::start().await?;
    let origin = origin::start().await?;
    let idle_tunnels = fit_idle(opts.idle_tunnels);
    let tls_tunnels = idle_tunnels.div_ceil(2);
    let pki = if opts.proxies.contains(&child::Kind::Sluice) {
        Some(std::sync::Arc::new(tls::Pki::new(dir.path())?))
    } else {
        None
    };
    let ticks_per_s = procfs::ticks_per_second();
    describe(opts, cpus, idle_tunnels);

    // runs[p][r]: proxy p's run r, one Measured per row of report::ROWS.
    let mut runs: Vec<Vec<Vec<Measured>>> = vec![Vec::new(); opts.proxies.len()];
    for run in 1..=opts.runs {
        for (p, &kind) in opts.proxies.iter().enumerate() {
            let proxy = child::Sluice::start_kind(
                kind,
                &child::Setup {
                    bin: &bin,
                    dns,
                    origin_port: origin.port(),
                    max_connections: idle_tunnels + tls_tunnels + 1000,
                    cpu: cpus.map(|(s, _)| s),
                    dir: dir.path(),
                    tls: pki.as_deref().filter(|_| kind == child::Kind::Sluice),
                },
            )
            .await?;
            let b = Bench {
                proxy: proxy.proxy,
                tls: proxy.tls.zip(pki.clone()),
                authority: format!("{}:{}", kind.origin_host(), origin.port()).into(),
                keeps_clients: kind.keeps_clients(),
                sluice_pid: proxy.pid,
                ticks_per_s,
                duration: opts.duration,
                paced_rate: opts.paced_rate,
            };
            eprintln!("run {run}/{}: {kind:?} pid {}", opts.runs, proxy.pid);
            let result = one_run(&b, idle_tunnels, tls_tunnels).await;
            let log_path = proxy.log_path.clone();
            proxy.stop().await?;
            let (measured, expected) = result?;
            if kind == child::Kind::Sluice {
                check_log(&log_path, expected)?;
            }
            std::fs::remove_file(&log_path)?;
            runs[p].push(measured);
        }
    }
    for (&kind, runs) in opts.proxies.iter().zip(&runs) {
        let name = kind.name();
        println!();
        print!("{}", report::table(runs, name));
        let mut notes = report::notes(runs);
        if !kind.keeps_clients() {
            notes.push(format!(
                "{name} closes the client's connection after every absolute-form response: \
                 the keep-alive absolute-form rows cannot be measured (see the new-connection row)"
            ));
        }
        if !notes.is_empty() {
            println!();
        }
        for line in notes {
            println!("- {line}");
        }
    }
    if opts.proxies.len() > 1 {
        let names: Vec<&str> = opts.proxies.iter().map(|k| k.name()).collect();
        println!();
        print!("{}", report::comparison(&names, &runs));
    }
    Ok(())
}

/// The proxies a `SLUICE_BENCH_PROXY` list names, in its order, each once.
fn proxies(list: &str) -> Result<Vec<child::Kind>, Error> {
    let mut kinds = Vec::new();
    for name in list.split(',').map(str::trim) {
        let kind = child::Kind::from_name(name).ok_or_else(|| {
            format!(
                "SLUICE_BENCH_PROXY={list:?}: {name:?} is not sluice, squid or tinyproxy \
                 (give one, or several separated by commas)"
            )
        })?;
        if kinds.contains(&kind) {
            return Err(format!("SLUICE_BENCH_PROXY={list:?} names {name} twice").into());
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// One fresh sluice through every workload; the results in [`report::ROWS`]
/// order, and the access-log lines they should have produced.
async fn one_run(
    b: &Bench,
    idle_tunnels: usize,
    tls_tunnels: usize,
) -> Result<(Vec<Measured>, u64), Error> {
    let mut logged = workloads::warm_up(b, WARM_UP).await?;
    workloads::settle(b).await?;
    // First, on a fresh heap: memory freed by earlier workloads would be
    // reused by the tunnels and hide their cost. The plain idle tunnels stay
    // open while the TLS ones are measured, for the same reason.
    let (idle, held) = workloads::idle(b, idle_tunnels).await?;
    let idle = step(b, report::ROWS[5].name, async { Ok(idle) }).await?;
    let idle_tls = step(b, report::ROWS[6].name, workloads::idle_tls(b, tls_tunnels)).await?;
    drop(held);
    workloads::settle(b).await?;
    let tunnels = step(b, report::ROWS[0].name, workloads::tunnels(b)).await?;
    let keepalive = step(b, report::ROWS[1].name, workloads::keepalive(b)).await?;
    let absolute = step(b, report::ROWS[2].name, workloads::absolute(b)).await?;
    let fresh = step(b, report::ROWS[3].name, workloads::absolute_fresh(b)).await?;
    let bulk = step(b, report::ROWS[4].name, workloads::bulk(b)).await?;
    let paced = step(b, report::ROWS[7].name, workloads::keepalive_paced(b)).await?;
    let agent = step(b, report::ROWS[8].name, workloads::absolute_agent(b)).await?;
    let all = vec![
        tunnels, keepalive, absolute, fresh, bulk, idle, idle_tls, paced, agent,
    ];
    logged += all.iter().map(|m| m.logged).sum::<u64>();
    Ok((all, logged))
}

/// Runs one workload, says how it went, and lets sluice go quiet after it.
async fn step(
    b: &Bench,
    name: &str,
    work: impl Future<Output = Result<Measured, Error>>,
) -> Result<Measured, Error> {
    let m = work.await?;
    let opened = m
        .open_secs
        .map_or(String::new(), |s| format!(", opened in {s:.2} s"));
    let busy = match (m.sluice_busy, m.load_busy, m.other_busy, m.steal) {
        (Some(s), Some(l), Some(o), Some(st)) => {
            format!(", CPU busy: sluice {s:.2} load {l:.2} other {o:.2} steal {st:.2}")
        }
        _ => String::new(),
    };
    eprintln!(
        "  {name}: {} units, rate {:.1}, cost {:.2}{opened}{busy}{}",
        m.units,
        m.rate,
        m.cost,
        if m.errors > 0 {
            format!(", {} errors", m.errors)
        } else {
            String::new()
        }
    );
    workloads::settle(b).await?;
    Ok(m)
}

/// Copies the binary into `dir`, so that another build writing the same
/// target directory cannot change what is measured.
fn copy_binary(bin: &Path, dir: &Path) -> Result<PathBuf, Error> {
    let meta = std::fs::metadata(bin).map_err(|e| {
        format!(
            "sluice binary {}: {e} (set SLUICE_BENCH_BIN)",
            bin.display()
        )
    })?;
    let age = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .map_or("?".to_owned(), |a| format!("{} s", a.as_secs()));
    eprintln!("binary: {} (built {age} ago)", bin.display());
    let copy = dir.join("sluice");
    std::fs::copy(bin, &copy)?;
    Ok(copy)
}

/// The idle workload's size, within the open-files limit (both this process
/// and sluice hold two descriptors per idle tunnel, plain or TLS).
fn fit_idle(wanted: usize) -> usize {
    let Some(limit) = procfs::open_files_limit() else {
        return wanted;
    };
    // Plain idle tunnels and half as many TLS ones are held at once.
    let fits = usize::try_from(limit.saturating_sub(SPARE_FDS) / 3).unwrap_or(usize::MAX);
    if fits < wanted {
        eprintln!(
            "note: open-files limit {limit} allows {fits} idle tunnels, not {wanted} (raise `ulimit -n`)"
        );
    }
    wanted.min(fits).max(1)
}

fn describe(opts: &Options, cpus: Option<(u32, u32)>, idle: usize) {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Counted from the affinity mask read before pinning this process.
    let cores = cpus.map_or_else(|| procfs::allowed_cpus().len().to_string(), |_| "2+".into());
    eprintln!("machine: {model}, {cores} CPUs, Linux {}", kernel.trim());
    match cpus {
        Some((s, l)) => eprintln!("placement: sluice on CPU {s}, load generator on CPU {l}"),
        None => eprintln!("placement: not pinned"),
    }
    eprintln!(
        "settings: {:.1} s per workload, {} run(s), {idle} idle tunnels, open loop at {} req/s",
        opts.duration.as_secs_f64(),
        opts.runs,
        opts.paced_rate
    );
}

/// Every request and tunnel must have its access-log line, all "allow".
fn check_log(path: &Path, expected: u64) -> Result<(), Error> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let (mut lines, mut allowed) = (0u64, 0u64);
    for line in file.lines() {
        let line = line?;
        lines += 1;
        allowed += u64::from(line.contains("\"decision\":\"allow\""));
    }
    eprintln!("  access log: {lines} lines ({allowed} allow), expected {expected}");
    if lines < expected {
        eprintln!("  WARNING: access-log lines are missing");
    }
    Ok(())
}
