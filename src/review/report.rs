//! Building the review's [`Report`] from the counters: sorting, the
//! baseline comparison, unused and expiring rules, the suggested allow
//! entries and their TOML patch; and rendering it as JSON or Markdown.
//!
//! Not here: the schema itself (the parent module), reading logs or
//! counting records (`read`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::read::{AgentTally, FileStats, Reach, Refusal, Tally};
use super::{
    AgentReport, AgentRules, DEFAULT_PORTS, ExpiringRule, FileReport, NewDestination, NotSuggested,
    Options, Period, Reached, Refused, Report, ReviewError, RuleInfo, RuleReport, SCHEMA, Skipped,
    Suggestion,
};
use crate::host::Host;

/// Rules expiring within this window are listed (SPEC: "rules that expired
/// or expire within 14 days"); the same window `check` warns about.
const EXPIRY_WINDOW: Duration = Duration::from_secs(14 * 86_400);

/// Suggested entries expire after this long, so that a rule added from a
/// review comes back to the next quarter's review instead of living forever.
const SUGGESTED_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

/// Denied names under one registrable domain (and port) at which the patch
/// suggests one `.domain` rule instead of one rule per name. Two names are
/// often unrelated services of one company (`www`, `api`); three or more
/// usually mean a family of shards or regions (`us-1.cdn…`, `eu-2.cdn…`)
/// where the next name will be denied too.
const GROUP_MIN_NAMES: usize = 3;

/// Rows per Markdown table; the JSON output always holds every row.
const MARKDOWN_ROWS: usize = 100;

/// The log reason a suggestion is made for: no rule allowed the name. Every
/// other reason is either not a policy gap (`destination_ip_prohibited`,
/// `malformed`, `unidentified`, `bad_credentials`, limits) or a deliberate
/// `deny` rule (`denied_by_rule`).
const SUGGESTIBLE_REASON: &str = "not_allowed";

// === baseline ===

/// What `--baseline` contributes: each agent's destinations last time.
#[derive(Debug, Default)]
pub(crate) struct Baseline {
    agents: HashMap<String, BaselineAgent>,
}

#[derive(Debug, Default)]
struct BaselineAgent {
    reached: HashSet<String>,
    denied: HashSet<String>,
}

/// Only the fields the comparison needs, so that baselines written by
/// later versions (which only ever add fields) still load.
#[derive(Deserialize)]
struct RawBaseline {
    schema: String,
    agents: Vec<RawBaselineAgent>,
}

#[derive(Deserialize)]
struct RawBaselineAgent {
    agent: String,
    #[serde(default)]
    reached: Vec<RawDestination>,
    #[serde(default)]
    denied: Vec<RawDestination>,
}

#[derive(Deserialize)]
struct RawDestination {
    destination: String,
}

/// Reads an earlier review's JSON output.
pub(crate) fn load_baseline(path: &Path) -> Result<Baseline, ReviewError> {
    let file = File::open(path).map_err(|source| ReviewError::BaselineRead {
        path: path.to_path_buf(),
        source,
    })?;
    let raw: RawBaseline = serde_json::from_reader(BufReader::new(file)).map_err(|e| {
        if e.is_io() {
            ReviewError::BaselineRead {
                path: path.to_path_buf(),
                source: e.into(),
            }
        } else {
            ReviewError::BaselineInvalid {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }
        }
    })?;
    if raw.schema != SCHEMA {
        return Err(ReviewError::BaselineInvalid {
            path: path.to_path_buf(),
            detail: format!("schema {:?} is not {SCHEMA:?}", raw.schema),
        });
    }
    let mut baseline = Baseline::default();
    for a in raw.agents {
        let entry = baseline.agents.entry(a.agent).or_default();
        entry
            .reached
            .extend(a.reached.into_iter().map(|d| d.destination));
        entry
            .denied
            .extend(a.denied.into_iter().map(|d| d.destination));
    }
    Ok(baseline)
}

// === build ===

/// Turns the tally into the report.
pub(crate) fn build(
    tally: Tally,
    files: Vec<FileStats>,
    opts: &Options,
    baseline: Option<&Baseline>,
) -> Report {
    let (mut tallies, span) = tally.into_parts();
    let config = opts.config.as_ref();
    let ports: Vec<u16> = match config {
        Some(c) if !c.ports.is_empty() => c.ports.clone(),
        _ => DEFAULT_PORTS.to_vec(),
    };
    let mut names: Vec<String> = tallies.keys().map(|k| k.to_string()).collect();
    for a in config.map_or(&[][..], |c| &c.agents[..]) {
        if !tallies.contains_key(a.name.as_str()) {
            names.push(a.name.clone());
        }
    }
    // By name, with the unidentified "-" last.
    names.sort_by(|a, b| (a == "-", a).cmp(&(b == "-", b)));
    let expires = date(opts.now + SUGGESTED_LIFETIME);
    let agents: Vec<AgentReport> = names
        .into_iter()
        .map(|name| {
            let tally = tallies.remove(name.as_str()).unwrap_or_default();
            let rules = config.and_then(|c| c.agents.iter().find(|a| a.name == name));
            let ctx = AgentContext {
                config: config.is_some(),
                rules,
                baseline: baseline.map(|b| b.agents.get(&name)),
                ports: &ports,
                now: opts.now,
                expires: &expires,
            };
            agent_report(name, tally, &ctx)
        })
        .collect();
    let files: Vec<FileReport> = files.into_iter().map(file_report).collect();
    Report {
        schema: SCHEMA.to_owned(),
        generated: stamp(opts.now),
        period: Period {
            since: opts.since.map(stamp),
            first: span.map(|s| stamp(s.first)),
            last: span.map(|s| stamp(s.last)),
        },
        lines: files.iter().map(|f| f.lines).sum(),
        records: files.iter().map(|f| f.records).sum(),
        skipped: files.iter().map(|f| f.skipped).sum(),
        before_since: files.iter().map(|f| f.before_since).sum(),
        files,
        baseline: opts.baseline.as_deref().map(display_path),
        config: config.is_some(),
        patch: patch(&agents),
        agents,
    }
}

/// What one agent's report depends on besides its tally.
struct AgentContext<'a> {
    config: bool,
    rules: Option<&'a AgentRules>,
    /// `None`: no baseline; `Some(None)`: the baseline lacks this agent.
    baseline: Option<Option<&'a BaselineAgent>>,
    ports: &'a [u16],
    now: SystemTime,
    expires: &'a str,
}

fn agent_report(agent: String, tally: AgentTally, ctx: &AgentContext<'_>) -> AgentReport {
    let mut reached: Vec<Reached> = tally.reached.into_iter().map(reached_row).collect();
    reached.sort_by(|a, b| {
        b.requests
            .cmp(&a.requests)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    let would_deny = refused_rows(tally.would_deny);
    let denied = refused_rows(tally.denied);
    let errors = refused_rows(tally.errors);
    let new_since_baseline = ctx.baseline.map(|b| new_destinations(&reached, &denied, b));
    let allow = ctx.rules.map_or(&[][..], |r| &r.allow[..]);
    let (unused_rules, expiring_rules) = if let Some(rules) = ctx.rules {
        let unused = allow
            .iter()
            .filter(|r| !tally.rules.contains(r.text.as_str()))
            .map(rule_report)
            .collect();
        (Some(unused), Some(expiring(rules, ctx.now)))
    } else {
        (None, None)
    };
    let (suggestions, not_suggested) = if agent == "-" {
        // Rules belong to an agent; unidentified traffic needs an identity.
        (Vec::new(), Vec::new())
    } else {
        let configured: HashSet<&str> = allow.iter().map(|r| r.text.as_str()).collect();
        suggest(&denied, &would_deny, &configured, ctx)
    };
    AgentReport {
        in_config: ctx.config.then_some(ctx.rules.is_some()),
        agent,
        reached,
        would_deny,
        denied,
        errors,
        new_since_baseline,
        unused_rules,
        expiring_rules,
        suggestions,
        not_suggested,
    }
}

fn reached_row((destination, r): (Box<str>, Reach)) -> Reached {
    Reached {
        destination: destination.into(),
        host: r.target.host.map(Into::into),
        port: r.target.port,
        requests: r.requests,
        reported: r.reported,
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
        first_seen: stamp(r.seen.first),
        last_seen: stamp(r.seen.last),
    }
}

fn refused_rows(map: HashMap<Box<str>, Refusal>) -> Vec<Refused> {
    let mut rows: Vec<Refused> = map
        .into_iter()
        .map(|(destination, r)| Refused {
            destination: destination.into(),
            host: r.target.host.map(Into::into),
            port: r.target.port,
            count: r.count,
            reasons: r.reasons.into_iter().map(|(k, n)| (k.into(), n)).collect(),
            first_seen: stamp(r.seen.first),
            last_seen: stamp(r.seen.last),
        })
        .collect();
    rows.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    rows
}

fn new_destinations(
    reached: &[Reached],
    denied: &[Refused],
    baseline: Option<&BaselineAgent>,
) -> Vec<NewDestination> {
    let known = |set: fn(&BaselineAgent) -> &HashSet<String>, d: &str| {
        baseline.is_some_and(|b| set(b).contains(d))
    };
    let reached = reached
        .iter()
        .filter(|r| !known(|b| &b.reached, &r.destination))
        .map(|r| (r.destination.clone(), "reached", r.requests));
    let denied = denied
        .iter()
        .filter(|r| !known(|b| &b.denied, &r.destination))
        .map(|r| (r.destination.clone(), "denied", r.count));
    reached
        .chain(denied)
        .map(|(destination, kind, count)| NewDestination {
            destination,
            kind: kind.to_owned(),
            count,
        })
        .collect()
}

fn rule_report(r: &RuleInfo) -> RuleReport {
    RuleReport {
        rule: r.text.clone(),
        owner: r.owner.clone(),
        reason: r.reason.clone(),
        expires: r.expires.map(stamp),
    }
}

fn expiring(rules: &AgentRules, now: SystemTime) -> Vec<ExpiringRule> {
    let lists = [("allow", &rules.allow), ("deny", &rules.deny)];
    let mut out: Vec<ExpiringRule> = lists
        .into_iter()
        .flat_map(|(list, entries)| entries.iter().map(move |r| (list, r)))
        .filter_map(|(list, r)| {
            let expires = r.expires?;
            (expires <= now + EXPIRY_WINDOW).then(|| ExpiringRule {
                rule: r.text.clone(),
                list: list.to_owned(),
                owner: r.owner.clone(),
                reason: r.reason.clone(),
                expires: stamp(expires),
                expired: expires <= now,
            })
        })
        .collect();
    // RFC 3339 in UTC with a fixed width sorts as time does.
    out.sort_by(|a, b| a.expires.cmp(&b.expires).then_with(|| a.rule.cmp(&b.rule)));
    out
}

// === suggestions ===

/// One name denied as `not_allowed`, with its counts.
struct Candidate {
    name: String,
    count: u64,
    reported: u64,
}

fn suggest(
    denied: &[Refused],
    would_deny: &[Refused],
    configured: &HashSet<&str>,
    ctx: &AgentContext<'_>,
) -> (Vec<Suggestion>, Vec<NotSuggested>) {
    let mut not_suggested = Vec::new();
    // (registrable domain, ":port" or "") → names under it.
    let mut groups: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
    let rows = denied
        .iter()
        .map(|r| (r, false))
        .chain(would_deny.iter().map(|r| (r, true)));
    for (row, reported) in rows {
        let Some(&count) = row.reasons.get(SUGGESTIBLE_REASON) else {
            continue;
        };
        let Some(host) = row.host.as_deref() else {
            continue;
        };
        let skip = |why: &str| NotSuggested {
            destination: row.destination.clone(),
            count,
            why: why.to_owned(),
        };
        let name = match Host::parse(host) {
            Ok(Host::Name(name)) => name,
            Ok(Host::Ip(_)) => {
                not_suggested.push(skip("ip_literal"));
                continue;
            }
            Err(_) => {
                not_suggested.push(skip("invalid_name"));
                continue;
            }
        };
        let name = name.as_str();
        let Some(domain) = psl::domain_str(name).filter(|_| psl::suffix_str(name) != Some(name))
        else {
            not_suggested.push(skip("public_suffix"));
            continue;
        };
        let port = match row.port {
            Some(p) if !ctx.ports.contains(&p) => format!(":{p}"),
            _ => String::new(),
        };
        let names = groups.entry((domain.to_owned(), port)).or_default();
        match names.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                c.count += count;
                c.reported += if reported { count } else { 0 };
            }
            None => names.push(Candidate {
                name: name.to_owned(),
                count,
                reported: if reported { count } else { 0 },
            }),
        }
    }
    let mut suggestions = Vec::new();
    for ((domain, port), mut names) in groups {
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let rules: Vec<(String, Vec<Candidate>)> = if names.len() >= GROUP_MIN_NAMES {
            vec![(format!(".{domain}{port}"), names)]
        } else {
            names
                .into_iter()
                .map(|c| (format!("{}{port}", c.name), vec![c]))
                .collect()
        };
        for (rule, covered) in rules {
            let count = covered.iter().map(|c| c.count).sum();
            if configured.contains(rule.as_str()) {
                not_suggested.push(NotSuggested {
                    destination: rule,
                    count,
                    why: "already_in_config".to_owned(),
                });
                continue;
            }
            let reported = covered.iter().map(|c| c.reported).sum();
            let names: Vec<String> = covered.into_iter().map(|c| c.name).collect();
            suggestions.push(Suggestion {
                reason: suggestion_reason(count, reported, &names),
                rule,
                names,
                count,
                reported,
                expires: ctx.expires.to_owned(),
            });
        }
    }
    suggestions.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.rule.cmp(&b.rule)));
    not_suggested.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.destination.cmp(&b.destination))
    });
    (suggestions, not_suggested)
}

/// The patch entry's `reason`, e.g. "seen 12 times, denied as not_allowed".
fn suggestion_reason(count: u64, reported: u64, names: &[String]) -> String {
    let times = times(count);
    let across = match names {
        [_] => String::new(),
        [a, b, c] => format!(" across 3 names ({a}, {b}, {c})"),
        _ => format!(
            " across {} names ({}, {}, …)",
            names.len(),
            names[0],
            names[1]
        ),
    };
    let how = if reported == count {
        "would be denied as not_allowed (report mode)".to_owned()
    } else if reported == 0 {
        "denied as not_allowed".to_owned()
    } else {
        format!("denied as not_allowed ({reported} in report mode)")
    };
    format!("seen {times}{across}, {how}")
}

/// "once", "2 times", …
fn times(n: u64) -> String {
    if n == 1 {
        "once".to_owned()
    } else {
        format!("{n} times")
    }
}

/// The suggested entries as TOML in the SPEC's table form, one `[[agent]]`
/// block per agent with suggestions.
fn patch(agents: &[AgentReport]) -> String {
    let with: Vec<&AgentReport> = agents
        .iter()
        .filter(|a| !a.suggestions.is_empty())
        .collect();
    if with.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "# Suggested allow entries for destinations denied as not_allowed.\n\
         # Review each one, set its owner, and merge it into that agent's\n\
         # existing `allow` list: do not add a second [[agent]] with the same name.\n",
    );
    for a in with {
        out.push_str(&format!("\n[[agent]]\nname = {}\n", quote(&a.agent)));
        out.push_str(&format!(
            "# merge into the allow list of agent {}\n",
            quote(&a.agent)
        ));
        out.push_str("allow = [\n");
        for s in &a.suggestions {
            out.push_str(&format!(
                "  {{ rule = {}, owner = \"TODO\", reason = {}, expires = {} }},\n",
                quote(&s.rule),
                quote(&s.reason),
                quote(&s.expires),
            ));
        }
        out.push_str("]\n");
    }
    out
}

/// A single-line TOML basic string. Log content is untrusted: quotes,
/// backslashes and control characters are escaped, so that an agent name
/// cannot end the string, the comment it also appears in, or the line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn file_report(f: FileStats) -> FileReport {
    FileReport {
        path: display_path(&f.path),
        gzip: f.gzip,
        lines: f.lines,
        records: f.records,
        before_since: f.before_since,
        skipped: f.skipped.total(),
        skipped_by_cause: Skipped {
            not_json: f.skipped.not_json,
            not_sluice: f.skipped.not_sluice,
            too_long: f.skipped.too_long,
            truncated: f.skipped.truncated,
        },
        gzip_truncated: f.gzip_truncated,
    }
}

fn display_path(p: &Path) -> String {
    p.display().to_string()
}

/// RFC 3339, UTC, whole seconds.
fn stamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// YYYY-MM-DD, UTC.
fn date(t: SystemTime) -> String {
    let s = stamp(t);
    s.get(..10).unwrap_or(&s).to_owned()
}

// === rendering ===

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
    if let Some(new) = &a.new_since_baseline {
        writeln!(out, "\n### New since the baseline ({})\n", new.len())?;
        let rows = new
            .iter()
            .map(|n| vec![n.destination.clone(), n.kind.clone(), n.count.to_string()]);
        table(out, "| destination | kind | count |\n|---|---|--:|", rows)?;
    }
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
    write_suggestions(a, out)
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
        let reasons: Vec<String> = d
            .reasons
            .iter()
            .map(|(r, n)| format!("{r} ({n})"))
            .collect();
        vec![
            d.destination.clone(),
            d.count.to_string(),
            reasons.join(", "),
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
/// untrusted: a `|` or a newline must not break the table.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r', '`'], " ")
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
