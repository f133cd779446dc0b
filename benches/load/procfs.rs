//! What the benchmark reads from /proc: CPU time per process (summed over
//! its threads, in nanoseconds, from `schedstat`), resident memory, the
//! open-files limit and the CPUs a process may run on.
//!
//! CPU time comes from `/proc/PID/task/TID/schedstat` (nanoseconds on CPU)
//! rather than `/proc/PID/stat` (clock ticks, usually 10 ms): a workload
//! that costs sluice 0.4 s of CPU is measured to the microsecond, not to
//! ±2.5%. `stat`'s ticks are read alongside as a cross-check, because a
//! thread that exits between two snapshots takes its schedstat with it
//! while `stat` keeps it.

use std::collections::HashMap;
use std::fs;
use std::io;

/// CPU time of one process at one moment.
#[derive(Debug, Clone)]
pub struct Cpu {
    /// Nanoseconds on CPU, per live thread.
    threads: HashMap<u32, u64>,
    /// utime and stime in clock ticks, including threads that have exited.
    ticks: (u64, u64),
}

impl Cpu {
    /// Reads `pid`'s threads now (`"self"` works too).
    pub fn read(pid: &str) -> io::Result<Cpu> {
        let mut threads = HashMap::new();
        for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            // A thread that exits while we list them has no file: skip it.
            let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
                threads.insert(tid, ns);
            }
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        Ok(Cpu {
            threads,
            ticks: stat_ticks(&stat).ok_or_else(|| io::Error::other("unreadable stat"))?,
        })
    }

    /// CPU time spent between `earlier` and `self`, in nanoseconds, and
    /// what `stat` says about the same interval (for the cross-check).
    pub fn since(&self, earlier: &Cpu, ticks_per_s: u64) -> (u64, u64) {
        let ns = self
            .threads
            .iter()
            .map(|(tid, &now)| now.saturating_sub(earlier.threads.get(tid).copied().unwrap_or(0)))
            .sum();
        let ticks = (self.ticks.0 + self.ticks.1).saturating_sub(earlier.ticks.0 + earlier.ticks.1);
        (ns, ticks * 1_000_000_000 / ticks_per_s.max(1))
    }

    /// The share of the CPU time since `earlier` spent in user space (the
    /// rest is the kernel's), at clock-tick resolution; None if no tick passed.
    pub fn user_share(&self, earlier: &Cpu) -> Option<f64> {
        let user = self.ticks.0.saturating_sub(earlier.ticks.0);
        let system = self.ticks.1.saturating_sub(earlier.ticks.1);
        (user + system > 0).then(|| user as f64 / (user + system) as f64)
    }
}

/// utime and stime from a `/proc/PID/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last ')'.
fn stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Clock ticks from the aggregate `cpu` line of /proc/stat, all CPUs.
#[derive(Debug, Clone, Copy)]
pub struct MachineTicks {
    /// CPU time every process used (user, nice, system, irq, softirq). The
    /// benchmark subtracts its own two processes to show interference.
    pub busy: u64,
    /// Time the hypervisor ran something else while a CPU wanted to run
    /// (`steal`): on a shared host, the sign of a noisy neighbour, whose
    /// caches and memory bandwidth inflate every CPU figure meanwhile.
    pub steal: u64,
}

pub fn machine_ticks() -> io::Result<MachineTicks> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    Ok(MachineTicks {
        busy: [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum(),
        steal: fields.get(7).copied().unwrap_or(0),
    })
}

/// Resident set size of `pid`, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))
}

/// This process's soft limit on open files, if it has one.
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft>  <hard>  files"
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The CPUs this process may run on, from `Cpus_allowed_list` ("0-3,8").
pub fn allowed_cpus() -> Vec<u32> {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    let mut cpus = Vec::new();
    for part in list.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>()) {
            cpus.extend(lo..=hi);
        }
    }
    cpus
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 if it cannot be asked.
pub fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
