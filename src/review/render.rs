//! The review's [`Report`] as output: pretty JSON (every row), or Markdown
//! for people (tables capped, sorted by volume, with the TOML patch).

use std::io::{self, Write};

use super::suggest::times;
use super::{AgentReport, Refused, Report};

/// Rows per Markdown table; the JSON output always holds every row.
const MARKDOWN_ROWS: usize = 100;

/// Writes the report as pretty-printed JSON and a final newline.
pub(crate) fn write_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    out.write_all(b"\n")
}

/// Writes the report for people: a header (period, files, line counts,
/// skipped lines), a section per agent with tables sorted by volume, and
/// the suggested patch.
pub(crate) fn write_markdown(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "# sluice review\n")?;
    let period = match (&r.period.first, &r.period.last) {
        (Some(first), Some(last)) => format!("{first} to {last}"),
        _ => "no records".to_owned(),
    };
    let since = r
        .period
        .since
        .as_ref()
        .map_or(String::new(), |s| format!(" (records since {s})"));
    writeln!(out, "- Period: {period}{since}")?;
    writeln!(out, "- Generated: {}", r.generated)?;
    writeln!(out, "- Files read: {}", r.files.len())?;
    for f in &r.files {
        let gzip = if f.gzip { ", gzip" } else { "" };
        writeln!(
            out,
            "  - `{}`{gzip}: {} lines, {} records",
            cell(&f.path),
            f.lines,
            f.records
        )?;
    }
    writeln!(
        out,
        "- Lines: {} read, {} counted, {} skipped, {} before --since",
        r.lines, r.records, r.skipped, r.before_since
    )?;
    match &r.baseline {
        Some(b) => writeln!(out, "- Baseline: `{}`", cell(b))?,
        None => writeln!(out, "- Baseline: none")?,
    }
    let config = if r.config {
        "given"
    } else {
        "not given (unused and expiring rules not checked)"
    };
    writeln!(out, "- Configuration: {config}")?;
    write_skipped(r, out)?;
    for a in &r.agents {
        write_agent(a, out)?;
    }
    if !r.patch.is_empty() {
        writeln!(out, "\n## Suggested patch\n\n```toml\n{}```", r.patch)?;
    }
    Ok(())
}

fn write_skipped(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let notes: Vec<String> = r
        .files
        .iter()
        .flat_map(|f| {
            let s = &f.skipped_by_cause;
            let causes: Vec<String> = [
                (s.not_json, "not JSON"),
                (s.not_sluice, "JSON but not sluice records"),
                (s.too_long, "longer than 64 KiB"),
                (s.truncated, "truncated"),
            ]
            .into_iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
            let skipped = (f.skipped > 0).then(|| {
                format!(
                    "skipped {} lines in `{}` ({})",
                    f.skipped,
                    cell(&f.path),
                    causes.join(", ")
                )
            });
            let cut = f.gzip_truncated.then(|| {
                format!(
                    "`{}`: the gzip stream ends early; anything after the cut is missing",
                    cell(&f.path)
                )
            });
            skipped.into_iter().chain(cut)
        })
        .collect();
    if !notes.is_empty() {
        writeln!(out)?;
        for n in notes {
            writeln!(out, "- {n}")?;
        }
    }
    Ok(())
}

fn write_agent(a: &AgentReport, out: &mut dyn Write) -> io::Result<()> {
    if a.agent == "-" {
        writeln!(out, "\n## Requests without an agent (`-`)")?;
    } else {
        writeln!(out, "\n## Agent `{}`", cell(&a.agent))?;
    }
    if a.in_config == Some(false) {
        writeln!(out, "\n_Not in the configuration._")?;
    }
    write_reached(a, out)?;
    write_refused(a, out)?;
    if let Some(new) = &a.new_since_baseline {
        writeln!(out, "\n### New since the baseline ({})\n", new.len())?;
        let rows = new
            .iter()
            .map(|n| vec![n.destination.clone(), n.kind.clone(), n.count.to_string()]);
        table(out, "| destination | kind | count |\n|---|---|--:|", rows)?;
    }
    write_rule_health(a, out)?;
    write_suggestions(a, out)
}

/// Where the agent went, with traffic and first and last sighting.
fn write_reached(a: &AgentReport, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "\n### Reached destinations ({})\n", a.reached.len())?;
    let rows = a.reached.iter().map(|d| {
        let reported = if d.reported > 0 {
            d.reported.to_string()
        } else {
            String::new()
        };
        vec![
            d.destination.clone(),
            d.requests.to_string(),
            reported,
            bytes(d.bytes_up),
            bytes(d.bytes_down),
            d.first_seen.clone(),
            d.last_seen.clone(),
        ]
    });
    let head = "| destination | requests | in report mode | bytes up | bytes down | first seen | last seen |\n|---|--:|--:|--:|--:|---|---|";
    table(out, head, rows)?;
    Ok(())
}

/// What was refused, would be refused in enforce mode, or failed.
fn write_refused(a: &AgentReport, out: &mut dyn Write) -> io::Result<()> {
    if !a.would_deny.is_empty() {
        writeln!(
            out,
            "\n### Would be denied in enforce mode ({})\n",
            a.would_deny.len()
        )?;
        refused_table(out, &a.would_deny)?;
    }
    writeln!(out, "\n### Denied destinations ({})\n", a.denied.len())?;
    refused_table(out, &a.denied)?;
    if !a.errors.is_empty() {
        writeln!(
            out,
            "\n### Errors: allowed, but DNS or the upstream failed ({})\n",
            a.errors.len()
        )?;
        refused_table(out, &a.errors)?;
    }
    Ok(())
}

/// Allow rules that matched nothing, and rules expired or about to.
fn write_rule_health(a: &AgentReport, out: &mut dyn Write) -> io::Result<()> {
    if let Some(unused) = &a.unused_rules {
        writeln!(
            out,
            "\n### Allow rules that matched nothing ({})\n",
            unused.len()
        )?;
        let rows = unused.iter().map(|u| {
            vec![
                u.rule.clone(),
                u.owner.clone().unwrap_or_default(),
                u.reason.clone().unwrap_or_default(),
                u.expires.clone().unwrap_or_default(),
            ]
        });
        table(
            out,
            "| rule | owner | reason | expires |\n|---|---|---|---|",
            rows,
        )?;
    }
    if let Some(expiring) = &a.expiring_rules {
        writeln!(
            out,
            "\n### Rules expired or expiring within 14 days ({})\n",
            expiring.len()
        )?;
        let rows = expiring.iter().map(|e| {
            let status = if e.expired { "expired" } else { "expiring" };
            vec![
                e.rule.clone(),
                e.list.clone(),
                e.owner.clone().unwrap_or_default(),
                e.expires.clone(),
                status.to_owned(),
            ]
        });
        table(
            out,
            "| rule | list | owner | expires | status |\n|---|---|---|---|---|",
            rows,
        )?;
    }
    Ok(())
}

fn write_suggestions(a: &AgentReport, out: &mut dyn Write) -> io::Result<()> {
    if !a.suggestions.is_empty() {
        writeln!(
            out,
            "\n### Suggested allow entries ({})\n",
            a.suggestions.len()
        )?;
        let rows = a
            .suggestions
            .iter()
            .map(|s| vec![s.rule.clone(), s.count.to_string(), s.reason.clone()]);
        table(out, "| rule | count | reason |\n|---|--:|---|", rows)?;
    }
    if !a.not_suggested.is_empty() {
        writeln!(out, "\nDenied as not_allowed but not suggested:\n")?;
        for n in a.not_suggested.iter().take(MARKDOWN_ROWS) {
            let why = match n.why.as_str() {
                "ip_literal" => "an IP literal: write a CIDR rule by hand if it is intended",
                "public_suffix" => "a public suffix: a rule would cover every site under it",
                "already_in_config" => "the rule is already configured (added since, or expired)",
                _ => "not a valid host name",
            };
            writeln!(
                out,
                "- `{}` ({}): {why}",
                cell(&n.destination),
                times(n.count)
            )?;
        }
    }
    Ok(())
}

fn refused_table(out: &mut dyn Write, rows: &[Refused]) -> io::Result<()> {
    let rows = rows.iter().map(|d| {
        let mut reasons = counts(d.reasons.iter());
        if !d.names_tried.is_empty() {
            // Most tried first.
            let mut names: Vec<(&String, &u64)> = d.names_tried.iter().collect();
            names.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            reasons.push_str("; SNI tried: ");
            reasons.push_str(&counts(names.into_iter()));
        }
        vec![
            d.destination.clone(),
            d.count.to_string(),
            reasons,
            d.first_seen.clone(),
            d.last_seen.clone(),
        ]
    });
    table(
        out,
        "| destination | count | reasons | first seen | last seen |\n|---|--:|---|---|---|",
        rows,
    )
}

/// `a (2), b (1)`: each item with its count, in the order given.
fn counts<'a>(items: impl Iterator<Item = (&'a String, &'a u64)>) -> String {
    let items: Vec<String> = items.map(|(item, n)| format!("{item} ({n})")).collect();
    items.join(", ")
}

/// Writes a table with at most [`MARKDOWN_ROWS`] rows, or "None." when
/// there are none.
fn table(
    out: &mut dyn Write,
    head: &str,
    rows: impl ExactSizeIterator<Item = Vec<String>>,
) -> io::Result<()> {
    let total = rows.len();
    if total == 0 {
        return writeln!(out, "None.");
    }
    writeln!(out, "{head}")?;
    for row in rows.take(MARKDOWN_ROWS) {
        let cells: Vec<String> = row.iter().map(|c| cell(c)).collect();
        writeln!(out, "| {} |", cells.join(" | "))?;
    }
    if total > MARKDOWN_ROWS {
        writeln!(
            out,
            "\n… and {} more (the JSON output has every row).",
            total - MARKDOWN_ROWS
        )?;
    }
    Ok(())
}

/// Escapes a value for a table cell or a code span. Log content is
/// untrusted: a `|` or a line break must not break the table, and a
/// terminal escape (an agent chooses the server names it tries) must not
/// reach the reader's terminal. Control characters and backticks become
/// spaces.
fn cell(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() || c == '`' { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|")
}

/// Bytes in binary units, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
