//! `sluice review`: the weekly summary of access logs (SPEC "Review").
//!
//! Owns the entry point [`run`], its inputs ([`Options`], [`ReviewConfig`]),
//! its errors ([`ReviewError`]) and the JSON schema of its output
//! ([`Report`]), which is a contract: tools read it, and so does a later
//! `--baseline`. Fields are only ever added; [`SCHEMA`] changes if one is
//! removed or changes meaning.
//!
//! Reading files and folding lines into counters is `read`; turning the
//! counters into a report (baseline comparison, unused and expiring rules,
//! the suggested patch) and rendering it as JSON or Markdown is `report`.
//!
//! Not here: parsing the command line or the configuration file (the caller
//! builds a [`ReviewConfig`] from its `Config`), nor writing the access log.
//!
//! Memory is bounded by the number of distinct (agent, destination) pairs,
//! never by the number of lines: every record is folded into counters as soon
//! as it is parsed, and the line buffer has a fixed upper size.

mod read;
mod render;
mod report;
mod suggest;
mod tally;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use tally::Tally;

/// What `sluice review` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ignore records whose `ts` is before this instant (`--since`).
    pub since: Option<SystemTime>,
    /// An earlier review's JSON output (`--baseline`): destinations absent
    /// from it are listed as new.
    pub baseline: Option<PathBuf>,
    /// Output format (`--format`, default Markdown).
    pub format: Format,
    /// The allow rules in force (`--config`); without it, unused and
    /// expiring rules are not reported and the default ports 80 and 443 are
    /// assumed for the suggested patch.
    pub config: Option<ReviewConfig>,
    /// "Now" for expiry checks and the suggested `expires` dates; the
    /// caller passes `SystemTime::now()`, tests a fixed instant.
    pub now: SystemTime,
}

/// Output format of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: one section per agent, tables sorted by requests.
    Markdown,
    /// For tools, and for a later `--baseline`: the [`Report`] schema.
    Json,
}

/// The part of the configuration the review needs, decoupled from the
/// config module so that the review can be tested (and reused) without a
/// TOML file.
#[derive(Debug, Clone, Default)]
pub struct ReviewConfig {
    /// `egress.ports`: the ports a rule without `:port` allows. Suggested
    /// rules for other ports carry an explicit `:port`.
    pub ports: Vec<u16>,
    /// Every `[[agent]]`, in file order.
    pub agents: Vec<AgentRules>,
}

/// One agent's rules.
#[derive(Debug, Clone, Default)]
pub struct AgentRules {
    /// The agent's `name`, as the log's `agent` field shows it.
    pub name: String,
    /// The `allow` entries, in file order.
    pub allow: Vec<RuleInfo>,
    /// The `deny` entries, in file order (checked for expiry only).
    pub deny: Vec<RuleInfo>,
}

/// One allow or deny entry.
#[derive(Debug, Clone, Default)]
pub struct RuleInfo {
    /// The rule as written; the log's `rule` field holds exactly this text
    /// for the allow rule that matched.
    pub text: String,
    /// Who asked for it, when the entry is a table.
    pub owner: Option<String>,
    /// Why, when the entry is a table.
    pub reason: Option<String>,
    /// The instant the entry stops matching.
    pub expires: Option<SystemTime>,
}

/// The ports a rule without `:port` allows when no configuration is given
/// (SPEC `egress.ports` default).
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Counts of what [`run`] read and wrote, for the caller's own messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Log files read.
    pub files: usize,
    /// Non-blank lines read, in all files.
    pub lines: u64,
    /// Lines that were sluice records at or after `since`.
    pub records: u64,
    /// Lines that were not sluice records (foreign, truncated, too long).
    pub skipped: u64,
    /// Sluice records before `since`.
    pub before_since: u64,
    /// Agents in the report (including "-" and configured agents without
    /// traffic).
    pub agents: usize,
    /// Suggested allow entries in the patch.
    pub suggestions: usize,
}

/// Why a review could not be produced. `Display` names the file; the cause
/// is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// A log file could not be opened or read (exit code 2).
    #[error("{}: cannot read access log", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A gzip log holds data that is not a gzip stream past its header
    /// (exit code 1). A stream that merely ends early is not an error.
    #[error("{}: corrupt gzip data after line {line}", path.display())]
    CorruptGzip {
        path: PathBuf,
        /// Lines decoded before the corruption.
        line: u64,
        #[source]
        source: io::Error,
    },
    /// The baseline could not be opened or read (exit code 2).
    #[error("{}: cannot read baseline", path.display())]
    BaselineRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The baseline is not a review's JSON output (exit code 1).
    #[error("{}: not a sluice review JSON report: {detail}", path.display())]
    BaselineInvalid { path: PathBuf, detail: String },
    /// The report could not be written to the output (exit code 2).
    #[error("cannot write the review")]
    Write {
        #[source]
        source: io::Error,
    },
}

impl ReviewError {
    /// The SPEC exit code: 1 for invalid input (a corrupt log, a malformed
    /// baseline), 2 for runtime failures (a file that cannot be read, an
    /// output that cannot be written).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::CorruptGzip { .. } | Self::BaselineInvalid { .. } => 1,
            Self::Read { .. } | Self::BaselineRead { .. } | Self::Write { .. } => 2,
        }
    }
}

/// Reads every log in `logs` (plain or gzip, in any order), summarises them
/// per agent and writes the report to `out` in `opts.format`.
///
/// The baseline, when given, is read first, so that a bad one fails before
/// gigabytes of logs are read. Lines that are not sluice records are counted
/// and named in the report, never fatal. Shows a progress line on stderr
/// when stderr is a terminal and the logs total more than 64 MiB.
///
/// # Errors
///
/// [`ReviewError`], each naming its file; see [`ReviewError::exit_code`].
pub fn run(
    opts: &Options,
    logs: &[PathBuf],
    out: &mut dyn io::Write,
) -> Result<Summary, ReviewError> {
    let baseline = opts
        .baseline
        .as_deref()
        .map(report::load_baseline)
        .transpose()?;
    let mut tally = Tally::default();
    let files = read::read_logs(logs, opts.since, &mut tally)?;
    let report = report::build(tally, files, opts, baseline.as_ref());
    let written = match opts.format {
        Format::Json => render::write_json(&report, out),
        Format::Markdown => render::write_markdown(&report, out),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|source| ReviewError::Write { source })?;
    Ok(report.summary())
}

/// Parses `--since`: a date (`YYYY-MM-DD`, the start of that day, UTC) or
/// an RFC 3339 time. `None` when it is neither.
pub fn parse_since(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let is_date = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if is_date {
        humantime::parse_rfc3339(&format!("{s}T00:00:00Z")).ok()
    } else {
        humantime::parse_rfc3339_weak(s).ok()
    }
}

// === the JSON schema ===

/// The value of [`Report::schema`] for this layout.
pub const SCHEMA: &str = "sluice-review/1";

/// A review: the JSON output of `sluice review --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`] ("sluice-review/1").
    pub schema: String,
    /// When the review ran (RFC 3339, UTC, seconds).
    pub generated: String,
    /// The time span the counted records cover.
    pub period: Period,
    /// Every log read, in the order given.
    pub files: Vec<FileReport>,
    /// Non-blank lines read, in all files.
    pub lines: u64,
    /// Lines counted as sluice records.
    pub records: u64,
    /// Lines skipped as not sluice records.
    pub skipped: u64,
    /// Sluice records before `--since`.
    pub before_since: u64,
    /// The `--baseline` file, if one was given.
    pub baseline: Option<String>,
    /// Whether a configuration was given (`unused_rules`, `expiring_rules`
    /// and `in_config` are null without one).
    pub config: bool,
    /// One entry per agent seen in the logs or named in the configuration,
    /// by name, with "-" (no agent determined) last.
    pub agents: Vec<AgentReport>,
    /// The suggested TOML patch (see `suggestions`); empty when there is
    /// nothing to suggest.
    pub patch: String,
}

/// The span of time the review covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Period {
    /// `--since`, if given.
    pub since: Option<String>,
    /// The earliest `ts` counted; null when no record was counted.
    pub first: Option<String>,
    /// The latest `ts` counted; null when no record was counted.
    pub last: Option<String>,
}

/// What became of one log file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    pub path: String,
    /// Recognised by its magic bytes, whatever its name.
    pub gzip: bool,
    /// Non-blank lines.
    pub lines: u64,
    /// Sluice records counted.
    pub records: u64,
    /// Sluice records before `--since`.
    pub before_since: u64,
    /// Lines skipped, in all.
    pub skipped: u64,
    /// Lines skipped, by cause.
    pub skipped_by_cause: Skipped,
    /// The gzip stream ended early (a file still being compressed?).
    pub gzip_truncated: bool,
}

/// Skipped lines by cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Not JSON (another program's output).
    pub not_json: u64,
    /// JSON without the sluice fields (`ts`, `decision`).
    pub not_sluice: u64,
    /// Longer than 64 KiB.
    pub too_long: u64,
    /// The last line of a file, cut short.
    pub truncated: u64,
}

/// One agent's part of the review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The agent's name; "-" for requests no agent could be determined for.
    pub agent: String,
    /// Whether the configuration names this agent; null without one.
    pub in_config: Option<bool>,
    /// Destinations reached (decision `allow` or `report`), by requests.
    pub reached: Vec<Reached>,
    /// Destinations that report mode let through but the rules would have
    /// denied (decision `report`), by count. Also listed in `reached`.
    pub would_deny: Vec<Refused>,
    /// Destinations refused (decision `deny`), by count.
    pub denied: Vec<Refused>,
    /// Destinations the policy allowed but DNS or the upstream failed
    /// (decision `error`), by count.
    pub errors: Vec<Refused>,
    /// Destinations reached or denied in this period but not in the
    /// baseline's; null without `--baseline`.
    pub new_since_baseline: Option<Vec<NewDestination>>,
    /// Allow rules that decided no request (no `allow` or `error` record
    /// carries them): candidates for removal. Null without a configuration
    /// or for an agent it does not name.
    pub unused_rules: Option<Vec<RuleReport>>,
    /// Allow and deny rules expired, or expiring within 14 days of the
    /// review. Null without a configuration or for an agent it does not
    /// name.
    pub expiring_rules: Option<Vec<ExpiringRule>>,
    /// Allow entries suggested for denials that look legitimate.
    pub suggestions: Vec<Suggestion>,
    /// Denied as `not_allowed` but deliberately not suggested, and why.
    pub not_suggested: Vec<NotSuggested>,
}

/// A destination reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reached {
    /// `host:port` (`[v6]:port` for IPv6 literals; "-" when none was named).
    pub destination: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub requests: u64,
    /// Of `requests`, those let through by report mode.
    pub reported: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// A destination refused, would-be refused or failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// As in [`Reached::destination`].
    pub destination: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub count: u64,
    /// Log `reason` → count.
    pub reasons: BTreeMap<String, u64>,
    /// Server names tried in refused tunnels (`sni_mismatch`) → count:
    /// what a domain-fronting attempt was after.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub names_tried: BTreeMap<String, u64>,
    pub first_seen: String,
    pub last_seen: String,
}

/// A destination absent from the baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDestination {
    pub destination: String,
    /// "reached" or "denied".
    pub kind: String,
    /// Requests (reached) or refusals (denied) in this period.
    pub count: u64,
}

/// A configured rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    pub rule: String,
    pub owner: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339, UTC.
    pub expires: Option<String>,
}

/// A configured rule that has expired or expires soon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiringRule {
    pub rule: String,
    /// "allow" or "deny".
    pub list: String,
    pub owner: Option<String>,
    pub reason: Option<String>,
    /// RFC 3339, UTC: the instant the rule stops (or stopped) matching.
    pub expires: String,
    /// Already expired at the time of the review.
    pub expired: bool,
}

/// A suggested allow entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    /// The rule: `name`, `name:port`, `.domain` or `.domain:port`.
    pub rule: String,
    /// The denied names it covers.
    pub names: Vec<String>,
    /// Refusals (and report-mode would-be refusals) it would have allowed.
    pub count: u64,
    /// Of `count`, those in report mode.
    pub reported: u64,
    /// The entry's `reason` in the patch.
    pub reason: String,
    /// The entry's `expires` in the patch (YYYY-MM-DD, 90 days on).
    pub expires: String,
}

/// A `not_allowed` destination no rule is suggested for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotSuggested {
    pub destination: String,
    pub count: u64,
    /// "ip_literal" (IP destinations need a CIDR rule chosen by hand),
    /// "public_suffix" (a rule would cover a whole TLD or hosting
    /// platform), "invalid_name", or "already_in_config" (the exact rule is
    /// configured: it was added since, or it has expired).
    pub why: String,
}

impl Report {
    /// Counts for the caller.
    pub fn summary(&self) -> Summary {
        Summary {
            files: self.files.len(),
            lines: self.lines,
            records: self.records,
            skipped: self.skipped,
            before_since: self.before_since,
            agents: self.agents.len(),
            suggestions: self.agents.iter().map(|a| a.suggestions.len()).sum(),
        }
    }
}

impl ReviewConfig {
    /// The rules the review checks, taken from a loaded configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let info = |r: &crate::config::RuleEntry| RuleInfo {
            text: r.text.clone(),
            owner: r.owner.clone(),
            reason: r.reason.clone(),
            expires: r.expires,
        };
        Self {
            ports: config.egress.ports.clone(),
            agents: config
                .agents
                .iter()
                .map(|a| AgentRules {
                    name: a.name.clone(),
                    allow: a.allow.iter().map(info).collect(),
                    deny: a.deny.iter().map(info).collect(),
                })
                .collect(),
        }
    }
}
