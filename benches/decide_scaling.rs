//! Does a policy decision cost the same with 100,000 rules as with 10?
//!
//! Criterion (`benches/policy`) times each size for seconds before moving
//! to the next, and on a shared host that leaves a slow spell in some cells
//! and not others: one cell moved 40% between runs. This benchmark pairs the
//! sizes instead. Each round times a batch of about a millisecond at every
//! size, back to back, in an order that rotates from round to round, and
//! keeps each size's ratio to the 10-rule batch of the same round. A slow
//! spell lasts far longer than a round, so it divides out of the ratio; the
//! median over the rounds is the figure, with the 10th–90th percentiles.
//!
//! Two kinds of probe:
//! - the criterion cases: one destination asked again and again, which is
//!   the lookup's own cost (it makes the same probes whatever the size);
//! - `miss_spread`: 4,096 different refused names in turn, so that a large
//!   table's probes land in memory the cache does not hold, as they would
//!   between unrelated requests.
//!
//! Run: `cargo bench --bench decide_scaling`. It takes 10-15 seconds once built
//! and prints one row per case. Nothing is asserted: speed is reported by
//! benchmarks, not enforced by them.

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use sluice::host::Host;
use sluice::policy::{DenyReason, Verdict};

#[path = "policy/rules.rs"]
mod rules;
use rules::Size;

/// Rounds per case; odd, so the median is one round's ratio.
const ROUNDS: usize = 201;
/// Nanoseconds a batch should take at the baseline size.
const BATCH_NS: f64 = 1_000_000.0;
/// Distinct names in the `miss_spread` case.
const SPREAD: usize = 4096;

/// What one size is asked in a case: destinations taken in turn.
type Probes = Vec<(Host, u16)>;

fn main() {
    let now = SystemTime::now();
    let sizes = rules::sizes();
    println!(
        "decide: each size against 10 rules, alternated every ~1 ms; \
         ns per decision (median), ×ratio to 10 rules (median, p10–p90) over {ROUNDS} rounds"
    );
    print!("{:<20}", "case");
    for size in &sizes {
        print!(" {:>30}", size.label);
    }
    println!();

    // (median ratio, case, size) for every cell.
    let mut cells = Vec::new();
    for i in 0..rules::cases(0, 10).len() {
        let mut label = "";
        let probes: Vec<Probes> = sizes
            .iter()
            .map(|size| {
                let case = rules::cases(size.agent, size.rules).swap_remove(i);
                let d = size.policy.decide(size.agent, &case.host, case.port, now);
                assert_eq!(d.verdict == Verdict::Allow, case.allowed, "{d:?}");
                label = case.label;
                vec![(case.host, case.port)]
            })
            .collect();
        cells.extend(report(label, &sizes, &probes, now));
    }
    let spread: Probes = (0..SPREAD)
        .map(|k| {
            let name = format!("x{k}.refused{k}.example.com");
            (
                Host::parse(&name).unwrap_or_else(|e| panic!("{name}: {e}")),
                443,
            )
        })
        .collect();
    for size in &sizes {
        let (host, port) = &spread[SPREAD / 2];
        let d = size.policy.decide(size.agent, host, *port, now);
        assert_eq!(
            d.verdict,
            Verdict::Deny(DenyReason::NotAllowed),
            "{}: {d:?}",
            size.label
        );
    }
    let probes = vec![spread; sizes.len()];
    cells.extend(report("miss_spread", &sizes, &probes, now));

    let (ratio, case, size) = cells
        .into_iter()
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((1.0, "-", "-"));
    let verdict = if ratio <= 1.10 {
        "within 10% of 10 rules"
    } else {
        "MORE than 10% above 10 rules"
    };
    println!("largest median ratio: ×{ratio:.3} ({case}, {size}): {verdict}");
}

/// Measures one case at every size, prints its row and returns each size's
/// median ratio with the case and size it belongs to.
fn report<'a>(
    case: &'a str,
    sizes: &'a [Size],
    probes: &[Probes],
    now: SystemTime,
) -> Vec<(f64, &'a str, &'a str)> {
    let ns = paired_rounds(sizes, probes, now);
    let mut cells = Vec::with_capacity(sizes.len());
    print!("{case:<20}");
    for (s, size) in sizes.iter().enumerate() {
        let mut ratios: Vec<f64> = (0..ROUNDS).map(|r| ns[s][r] / ns[0][r]).collect();
        let median_ns = median(&mut ns[s].clone());
        let [p10, p50, p90] = percentiles(&mut ratios);
        let cell = format!("{median_ns:.0} ns ×{p50:.2} ({p10:.2}–{p90:.2})");
        print!(" {cell:>30}");
        cells.push((p50, case, size.label));
    }
    println!();
    cells
}

/// `ns[size][round]`: nanoseconds per decision in each size's batch of
/// each round. The batch length is fixed from the baseline size so that
/// a batch lasts about [`BATCH_NS`] and covers every probe equally often.
fn paired_rounds(sizes: &[Size], probes: &[Probes], now: SystemTime) -> Vec<Vec<f64>> {
    let per = batch(&sizes[0], &probes[0], probes[0].len().max(1000), now);
    let len = probes[0].len();
    let n = ((BATCH_NS / per) as usize).div_ceil(len).max(1) * len;
    // One untimed round warms caches and branch predictors for every size.
    for (size, p) in sizes.iter().zip(probes) {
        batch(size, p, n, now);
    }
    let mut ns = vec![Vec::with_capacity(ROUNDS); sizes.len()];
    for round in 0..ROUNDS {
        for k in 0..sizes.len() {
            let s = (round + k) % sizes.len();
            ns[s].push(batch(&sizes[s], &probes[s], n, now));
        }
    }
    ns
}

/// Nanoseconds per decision over `n` decisions, the probes taken in turn.
fn batch(size: &Size, probes: &[(Host, u16)], n: usize, now: SystemTime) -> f64 {
    let started = Instant::now();
    for (host, port) in probes.iter().cycle().take(n) {
        black_box(
            size.policy
                .decide(black_box(size.agent), black_box(host), *port, now),
        );
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn median(xs: &mut [f64]) -> f64 {
    percentiles(xs)[1]
}

/// 10th, 50th and 90th percentiles (nearest rank).
fn percentiles(xs: &mut [f64]) -> [f64; 3] {
    xs.sort_by(f64::total_cmp);
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    [at(0.1), at(0.5), at(0.9)]
}
