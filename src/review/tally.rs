//! The tally the review folds records into as soon as they are parsed:
//! per agent, what was reached, refused, would be refused in enforce mode,
//! or failed, with counts, bytes and first and last sighting. Not here:
//! reading the records (`read`) and what the tally turns into (`report`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::SystemTime;

use super::read::{Decision, Record};

/// Everything counted so far, per agent ("-" when the log's agent is null).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    agents: HashMap<Box<str>, AgentTally>,
    /// Earliest and latest `ts` among counted records.
    span: Option<Seen>,
    /// Reused to build destination keys without allocating per line.
    key: String,
}

/// One agent's counters. Each map is keyed by the destination as shown
/// ("host:port", "[v6]:port", or "-" when the request named none).
#[derive(Debug, Default)]
pub(crate) struct AgentTally {
    pub(crate) reached: HashMap<Box<str>, Reach>,
    pub(crate) would_deny: HashMap<Box<str>, Refusal>,
    pub(crate) denied: HashMap<Box<str>, Refusal>,
    pub(crate) errors: HashMap<Box<str>, Refusal>,
    /// Allow rules that decided at least one request (decision allow, or
    /// error: the rule matched and only DNS or the upstream failed).
    pub(crate) rules: HashSet<Box<str>>,
}

/// First and last `ts` seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) first: SystemTime,
    pub(crate) last: SystemTime,
}

/// Where a destination came from in the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Target {
    pub(crate) host: Option<Box<str>>,
    pub(crate) port: Option<u16>,
}

/// A destination reached (decision allow or report).
#[derive(Debug, Clone)]
pub(crate) struct Reach {
    pub(crate) target: Target,
    pub(crate) requests: u64,
    /// Of `requests`, those let through by report mode.
    pub(crate) reported: u64,
    pub(crate) bytes_up: u64,
    pub(crate) bytes_down: u64,
    pub(crate) seen: Seen,
}

/// A destination refused, reported or failed, with its reasons.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) target: Target,
    pub(crate) count: u64,
    /// Log reasons and their counts; a handful per destination.
    pub(crate) reasons: Vec<(Box<str>, u64)>,
    /// For `sni_mismatch`: the server names tried through this destination
    /// (domain fronting attempts), at most [`MAX_NAMES_TRIED`] distinct
    /// ones; later new names count under [`OTHER_NAMES`].
    pub(crate) names_tried: Vec<(Box<str>, u64)>,
    pub(crate) seen: Seen,
}

/// Distinct tried names kept per destination: an agent spraying random
/// names must not grow the review's memory without bound.
const MAX_NAMES_TRIED: usize = 16;
/// Where names beyond [`MAX_NAMES_TRIED`] are counted.
const OTHER_NAMES: &str = "(other names)";

impl Seen {
    fn at(ts: SystemTime) -> Self {
        Self {
            first: ts,
            last: ts,
        }
    }

    fn widen(&mut self, ts: SystemTime) {
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
    }
}

impl Tally {
    /// Folds one record in. Allocates only for a destination, reason or
    /// rule not seen before for that agent.
    pub(crate) fn add(&mut self, rec: &Record<'_>) {
        match &mut self.span {
            Some(span) => span.widen(rec.ts),
            None => self.span = Some(Seen::at(rec.ts)),
        }
        let agent_name = rec.agent.as_deref().unwrap_or("-");
        if !self.agents.contains_key(agent_name) {
            self.agents.insert(agent_name.into(), AgentTally::default());
        }
        let Some(agent) = self.agents.get_mut(agent_name) else {
            return;
        };
        destination_key(&mut self.key, rec.host.as_deref(), rec.port);
        let key = self.key.as_str();
        let reason = rec.reason.as_deref().unwrap_or("none");
        match rec.decision {
            Decision::Allow => {
                agent.reach(key, rec, false);
                agent.note_rule(rec.rule.as_deref());
            }
            Decision::Report => {
                agent.reach(key, rec, true);
                refuse(&mut agent.would_deny, key, rec, reason);
            }
            Decision::Deny => refuse(&mut agent.denied, key, rec, reason),
            Decision::Error => {
                refuse(&mut agent.errors, key, rec, reason);
                agent.note_rule(rec.rule.as_deref());
            }
        }
    }

    pub(crate) fn into_parts(self) -> (HashMap<Box<str>, AgentTally>, Option<Seen>) {
        (self.agents, self.span)
    }
}

impl AgentTally {
    fn reach(&mut self, key: &str, rec: &Record<'_>, reported: bool) {
        if !self.reached.contains_key(key) {
            let reach = Reach {
                target: Target::of(rec),
                requests: 0,
                reported: 0,
                bytes_up: 0,
                bytes_down: 0,
                seen: Seen::at(rec.ts),
            };
            self.reached.insert(key.into(), reach);
        }
        if let Some(r) = self.reached.get_mut(key) {
            r.requests += 1;
            r.reported += u64::from(reported);
            r.bytes_up = r.bytes_up.saturating_add(rec.bytes_up.unwrap_or(0));
            r.bytes_down = r.bytes_down.saturating_add(rec.bytes_down.unwrap_or(0));
            r.seen.widen(rec.ts);
        }
    }

    fn note_rule(&mut self, rule: Option<&str>) {
        if let Some(rule) = rule
            && !self.rules.contains(rule)
        {
            self.rules.insert(rule.into());
        }
    }
}

fn refuse(map: &mut HashMap<Box<str>, Refusal>, key: &str, rec: &Record<'_>, reason: &str) {
    if !map.contains_key(key) {
        let refusal = Refusal {
            target: Target::of(rec),
            count: 0,
            reasons: Vec::new(),
            names_tried: Vec::new(),
            seen: Seen::at(rec.ts),
        };
        map.insert(key.into(), refusal);
    }
    let Some(r) = map.get_mut(key) else {
        return;
    };
    r.count += 1;
    r.seen.widen(rec.ts);
    count_in(&mut r.reasons, reason, usize::MAX);
    if reason == "sni_mismatch"
        && let Some(sni) = rec.sni.as_deref()
    {
        count_in(&mut r.names_tried, sni, MAX_NAMES_TRIED);
    }
}

/// Counts `name` in `list`, which holds at most `cap` names besides
/// [`OTHER_NAMES`].
fn count_in(list: &mut Vec<(Box<str>, u64)>, name: &str, cap: usize) {
    let name = if list.len() >= cap && !list.iter().any(|(have, _)| &**have == name) {
        OTHER_NAMES
    } else {
        name
    };
    match list.iter_mut().find(|(have, _)| &**have == name) {
        Some((_, n)) => *n += 1,
        None => list.push((name.into(), 1)),
    }
}

impl Target {
    fn of(rec: &Record<'_>) -> Self {
        Self {
            host: rec.host.as_deref().map(Into::into),
            port: rec.port,
        }
    }
}

/// Writes the destination as people read it into `buf`: `host:port`, with
/// brackets around an IPv6 literal, `host` alone when the port is unknown,
/// "-" when the request named no host (e.g. a malformed head).
fn destination_key(buf: &mut String, host: Option<&str>, port: Option<u16>) {
    buf.clear();
    let Some(host) = host else {
        buf.push('-');
        return;
    };
    if host.contains(':') && !host.starts_with('[') {
        let _ = write!(buf, "[{host}]");
    } else {
        buf.push_str(host);
    }
    if let Some(port) = port {
        let _ = write!(buf, ":{port}");
    }
}
