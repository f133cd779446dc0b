//! Suggested allow entries for names an agent was refused, grouped under
//! their registrable domain (the PSL) when enough names share one, and the
//! TOML patch that adds them.

use std::collections::{BTreeMap, HashSet};

use super::report::AgentContext;
use super::{AgentReport, NotSuggested, Refused, Suggestion};
use crate::host::Host;

/// Denied names under one registrable domain (and port) at which the patch
/// suggests one `.domain` rule instead of one rule per name. Two names are
/// often unrelated services of one company (`www`, `api`); three or more
/// usually mean a family of shards or regions (`us-1.cdn…`, `eu-2.cdn…`)
/// where the next name will be denied too.
const GROUP_MIN_NAMES: usize = 3;

/// The log reason a suggestion is made for: no rule allowed the name. Every
/// other reason is either not a policy gap (`destination_ip_prohibited`,
/// `malformed`, `unidentified`, `bad_credentials`, limits) or a deliberate
/// `deny` rule (`denied_by_rule`).
const SUGGESTIBLE_REASON: &str = "not_allowed";

/// One name denied as `not_allowed`, with its counts.
struct Candidate {
    name: String,
    count: u64,
    reported: u64,
}

pub(super) fn suggest(
    denied: &[Refused],
    would_deny: &[Refused],
    configured: &HashSet<&str>,
    ctx: &AgentContext<'_>,
) -> (Vec<Suggestion>, Vec<NotSuggested>) {
    let mut not_suggested = Vec::new();
    let groups = group(denied, would_deny, ctx, &mut not_suggested);
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

/// The refused names that an allow rule could cover, grouped by registrable
/// domain and port (`":port"`, or `""` for the agent's usual ports); the
/// rest go to `not_suggested` with the reason.
fn group(
    denied: &[Refused],
    would_deny: &[Refused],
    ctx: &AgentContext<'_>,
    not_suggested: &mut Vec<NotSuggested>,
) -> BTreeMap<(String, String), Vec<Candidate>> {
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
        let (name, domain) = match registrable(host) {
            Ok(found) => found,
            Err(why) => {
                not_suggested.push(NotSuggested {
                    destination: row.destination.clone(),
                    count,
                    why: why.to_owned(),
                });
                continue;
            }
        };
        let port = match row.port {
            Some(p) if !ctx.ports.contains(&p) => format!(":{p}"),
            _ => String::new(),
        };
        let reported = if reported { count } else { 0 };
        let names = groups.entry((domain, port)).or_default();
        match names.iter_mut().find(|c| c.name == name) {
            Some(c) => {
                c.count += count;
                c.reported += reported;
            }
            None => names.push(Candidate {
                name,
                count,
                reported,
            }),
        }
    }
    groups
}

/// A host's normalised name and its registrable domain, or why no rule
/// should be suggested for it.
fn registrable(host: &str) -> Result<(String, String), &'static str> {
    let name = match Host::parse(host) {
        Ok(Host::Name(name)) => name,
        Ok(Host::Ip(_)) => return Err("ip_literal"),
        Err(_) => return Err("invalid_name"),
    };
    let name = name.as_str();
    match psl::domain_str(name).filter(|_| psl::suffix_str(name) != Some(name)) {
        Some(domain) => Ok((name.to_owned(), domain.to_owned())),
        None => Err("public_suffix"),
    }
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
pub(super) fn times(n: u64) -> String {
    if n == 1 {
        "once".to_owned()
    } else {
        format!("{n} times")
    }
}

/// The suggested entries as TOML in the SPEC's table form, one `[[agent]]`
/// block per agent with suggestions.
pub(super) fn patch(agents: &[AgentReport]) -> String {
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
