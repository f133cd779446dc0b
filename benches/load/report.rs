//! The results table: one row per workload, with the targets, as a
//! Markdown table (so it can be pasted into docs/performance.md). With
//! several runs, each cell is the median and, in parentheses, the range.
//! When several proxies are measured in turn, a second table compares the
//! first with the others ([`comparison`]).
//!
//! Not here: measuring (workloads.rs).

use std::fmt::Write;

use crate::workloads::Measured;

/// What a row is about and the cost it should stay under.
#[derive(Debug)]
pub struct Row {
    pub name: &'static str,
    rate_unit: &'static str,
    cost_unit: &'static str,
    /// The target for `Measured::cost`, in `cost_unit` (None: the
    /// issue sets none).
    target: Option<f64>,
}

/// The workloads in the order they run and are printed.
pub const ROWS: [Row; 9] = [
    Row {
        name: "new tunnel + 1 small exchange + close (16 clients)",
        rate_unit: "tunnels/s",
        cost_unit: "µs/tunnel",
        target: Some(48.0),
    },
    Row {
        name: "keep-alive requests in 8 tunnels",
        rate_unit: "req/s",
        cost_unit: "µs/req",
        target: Some(8.0),
    },
    Row {
        name: "absolute-form GET, 8 keep-alive clients",
        rate_unit: "req/s",
        cost_unit: "µs/req",
        target: Some(18.0),
    },
    Row {
        name: "absolute-form GET, a new client connection each (16 clients)",
        rate_unit: "req/s",
        cost_unit: "µs/req",
        target: None,
    },
    Row {
        name: "bulk download, 4 tunnels × 64 MiB responses",
        rate_unit: "MiB/s",
        cost_unit: "µs/MiB",
        target: Some(200.0),
    },
    Row {
        name: "idle tunnels (after one exchange each)",
        rate_unit: "open",
        cost_unit: "KiB/tunnel RSS",
        target: Some(16.0),
    },
    Row {
        name: "idle tunnels through the TLS listener (client certificate)",
        rate_unit: "open",
        cost_unit: "KiB/tunnel RSS",
        target: None,
    },
    Row {
        name: "keep-alive requests in 64 tunnels at a fixed rate (open loop)",
        rate_unit: "req/s",
        cost_unit: "µs/req",
        target: None,
    },
    Row {
        name: "absolute-form GET, an agent's 13-field head, token identity (8 clients)",
        rate_unit: "req/s",
        cost_unit: "µs/req",
        target: None,
    },
];

/// Median and range of a set of samples (NaN when there are none).
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (median, xs[0], xs[n - 1])
}

/// One cell: the median, then the range when there were several runs,
/// then `unit`.
fn cell(xs: Vec<f64>, fmt: impl Fn(f64) -> String, unit: &str) -> (String, f64) {
    let runs = xs.len();
    let (median, lo, hi) = spread(xs);
    if median.is_nan() {
        return ("–".to_owned(), median);
    }
    let sep = if unit.is_empty() || unit == "%" {
        ""
    } else {
        " "
    };
    let text = if runs > 1 {
        format!("{} ({}–{}){sep}{unit}", fmt(median), fmt(lo), fmt(hi))
    } else {
        format!("{}{sep}{unit}", fmt(median))
    };
    (text, median)
}

/// Latencies in ms, whatever their size, so that ranges read easily.
fn millis(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn number(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn percent(x: f64) -> String {
    format!("{:.0}", x * 100.0)
}

/// The table for `runs` (each run has one `Measured` per row of [`ROWS`]).
/// `proxy` names the measured proxy in the headings.
pub fn table(runs: &[Vec<Measured>], proxy: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | rate | p50 | p99 | {proxy} CPU per unit | target | of which user space | {proxy} CPU busy | load CPU busy | other CPU | steal |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, row) in ROWS.iter().enumerate() {
        let column = |f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<f64> {
            runs.iter().filter_map(|r| r.get(i)).filter_map(f).collect()
        };
        let (rate, _) = cell(column(&|m| Some(m.rate)), number, row.rate_unit);
        let (p50, _) = cell(column(&|m| m.p50_us), millis, "ms");
        let (p99, _) = cell(column(&|m| m.p99_us), millis, "ms");
        let (cost, median_cost) = cell(column(&|m| Some(m.cost)), number, row.cost_unit);
        let target = match row.target {
            Some(t) if median_cost <= t => format!("≤ {t} {} (ok)", row.cost_unit),
            Some(t) => format!("≤ {t} {} (**over**)", row.cost_unit),
            None => "–".to_owned(),
        };
        let (user, _) = cell(column(&|m| m.sluice_user), percent, "%");
        let (sluice, _) = cell(column(&|m| m.sluice_busy), percent, "%");
        let (load, _) = cell(column(&|m| m.load_busy), percent, "%");
        let (other, _) = cell(column(&|m| m.other_busy), percent, "%");
        let (steal, _) = cell(column(&|m| m.steal), percent, "%");
        let _ = writeln!(
            out,
            "| {} | {rate} | {p50} | {p99} | {cost} | {target} | {user} | {sluice} | {load} | {other} | {steal} |",
            row.name
        );
    }
    out
}

/// Other processes using more than this share of a CPU during a workload
/// make its figures suspect (they share sluice's or the load side's CPU).
const DISTURBED: f64 = 0.25;

/// The hypervisor withholding more than this share of a CPU makes a
/// workload's figures suspect: in an A/B on a 2-core guest, the run that
/// had a third of a CPU stolen cost 25–40% more per unit than the one with
/// 3% (docs/performance.md). Little steal is no proof of a quiet host.
const STOLEN: f64 = 0.05;

/// Notes for under the table: errors, and workloads that other processes
/// disturbed, per run.
pub fn notes(runs: &[Vec<Measured>]) -> Vec<String> {
    let mut lines = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        for (m, row) in run.iter().zip(ROWS.iter()) {
            if let Some(other) = m.other_busy.filter(|&o| o > DISTURBED) {
                lines.push(format!(
                    "run {}: {}: other processes used {:.0}% of a CPU meanwhile (figures disturbed)",
                    r + 1,
                    row.name,
                    other * 100.0
                ));
            }
            if let Some(steal) = m.steal.filter(|&s| s > STOLEN) {
                lines.push(format!(
                    "run {}: {}: the hypervisor withheld {:.0}% of a CPU meanwhile (steal; figures inflated)",
                    r + 1,
                    row.name,
                    steal * 100.0
                ));
            }
            if m.errors > 0 {
                lines.push(format!(
                    "run {}: {}: {} errors (first: {})",
                    r + 1,
                    row.name,
                    m.errors,
                    m.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
    }
    lines
}

/// The first proxy against the others, row by row: each one's median cost,
/// the first's median divided by the cheapest other's, and the same ratio
/// round by round (a round runs each proxy once, minutes apart, so its
/// ratio is spared most of the host's drift). `runs[p][r]` is proxy `p`'s
/// run `r`, in [`ROWS`] order.
pub fn comparison(names: &[&str], runs: &[Vec<Vec<Measured>>]) -> String {
    let mut out = String::new();
    let Some((subject, _)) = names.split_first() else {
        return out;
    };
    let _ = writeln!(
        out,
        "| workload | {} | {subject} ÷ the cheaper other | round by round |",
        names.join(" | ")
    );
    let _ = writeln!(out, "|---|{}---|---|", "---|".repeat(names.len()));
    for (i, row) in ROWS.iter().enumerate() {
        // Proxy p's cost in round r, if it was measured.
        let cost = |p: usize, r: usize| {
            runs.get(p)
                .and_then(|runs| runs.get(r))
                .and_then(|run| run.get(i))
                .map(|m| m.cost)
                .filter(|c| c.is_finite())
        };
        let rounds = runs.first().map_or(0, Vec::len);
        let median = |p: usize| spread((0..rounds).filter_map(|r| cost(p, r)).collect()).0;
        let cells: Vec<String> = (0..names.len())
            .map(|p| match median(p) {
                m if m.is_nan() => "–".to_owned(),
                m => format!("{} {}", number(m), row.cost_unit),
            })
            .collect();
        // The cheapest of the others, by median.
        let cheapest = (1..names.len())
            .map(|p| (p, median(p)))
            .filter(|(_, m)| m.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let ratio = match cheapest {
            Some((p, m)) if median(0).is_finite() => {
                format!("{:.2} ({})", median(0) / m, names[p])
            }
            _ => "–".to_owned(),
        };
        let by_round: Vec<String> = (0..rounds)
            .filter_map(|r| {
                let others = (1..names.len()).filter_map(|p| cost(p, r));
                let cheapest = others.min_by(f64::total_cmp)?;
                Some(format!("{:.2}", cost(0, r)? / cheapest))
            })
            .collect();
        let by_round = if by_round.is_empty() {
            "–".to_owned()
        } else {
            by_round.join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {ratio} | {by_round} |",
            row.name,
            cells.join(" | ")
        );
    }
    out
}
