//! Building the review's [`Report`] from the counters: sorting, the
//! baseline comparison, unused and expiring rules, the suggested allow
//! entries and their TOML patch.
//!
//! Not here: the schema itself (the parent module), reading logs or
//! counting records (`read`), rendering (`render`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::read::FileStats;
use super::suggest::{patch, suggest};
use super::tally::{AgentTally, Reach, Refusal, Tally};
use super::{
    AgentReport, AgentRules, DEFAULT_PORTS, ExpiringRule, FileReport, NewDestination, Options,
    Period, Reached, Refused, Report, ReviewError, RuleInfo, RuleReport, SCHEMA, Skipped,
};

/// Rules expiring within this window are listed (SPEC: "rules that expired
/// or expire within 14 days"); the same window `check` warns about.
const EXPIRY_WINDOW: Duration = Duration::from_secs(14 * 86_400);

/// Suggested entries expire after this long, so that a rule added from a
/// review comes back to the next quarter's review instead of living forever.
const SUGGESTED_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

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
pub(super) struct AgentContext<'a> {
    config: bool,
    rules: Option<&'a AgentRules>,
    /// `None`: no baseline; `Some(None)`: the baseline lacks this agent.
    baseline: Option<Option<&'a BaselineAgent>>,
    pub(super) ports: &'a [u16],
    now: SystemTime,
    pub(super) expires: &'a str,
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
            names_tried: r
                .names_tried
                .into_iter()
                .map(|(k, n)| (k.into(), n))
                .collect(),
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
