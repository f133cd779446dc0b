//! Allow and deny rules: the pattern forms of SPEC "Configuration", parsed
//! once at load and compiled into hash indexes, so a decision costs a handful
//! of lookups per label of the host however many rules there are.
//!
//! Not here: which addresses may be dialled (addrs.rs), who the agent is
//! (identity.rs).

use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use rustc_hash::FxHashMap as HashMap;

use crate::host::{Host, Name};

/// A parsed rule: what it matches and on which port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub pattern: Pattern,
    /// `None`: the ports of `egress.ports` (allow) or any port (deny).
    pub port: Option<u16>,
}

/// The host part of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `api.openai.com`: that name only.
    Exact(Name),
    /// `*.githubusercontent.com`: any subdomain at any depth, not the apex.
    Subdomains(Name),
    /// `.pypi.org`: the apex and any subdomain (Squid's convention).
    Domain(Name),
    /// `bedrock-runtime.*.amazonaws.com`: exactly one label in place of `*`.
    OneLabel { prefix: Name, suffix: Name },
    /// `10.20.0.0/16`: IP-literal destinations in the range.
    Net(IpNet),
}

/// Parses one rule as written in the config. The message says what is wrong
/// and, where we can tell, what was probably meant.
pub fn parse(rule: &str) -> Result<RuleSpec, String> {
    let rule = rule.trim();
    if rule.is_empty() {
        return Err("empty rule".to_owned());
    }
    let (host, port) = split_port(rule)?;
    if let Some(net) = parse_net(host) {
        return Ok(RuleSpec {
            pattern: Pattern::Net(net?),
            port,
        });
    }
    if rule.starts_with('[') {
        return Err(format!(
            "brackets are for IPv6 addresses only: write {host:?} without them"
        ));
    }
    Ok(RuleSpec {
        pattern: parse_pattern(host)?,
        port,
    })
}

/// Splits a trailing `:port`. IPv6 needs brackets to carry a port
/// (`[2001:db8::/32]:443`); a bare IPv6 CIDR has none.
fn split_port(rule: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = rule.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[': write IPv6 as [2001:db8::/32]:443".to_owned())?;
        return match after {
            "" => Ok((inner, None)),
            p => Ok((
                inner,
                Some(parse_port(p.strip_prefix(':').ok_or("junk after ']'")?)?),
            )),
        };
    }
    if rule.matches(':').count() > 1 {
        // An unbracketed IPv6 address or CIDR: no port possible.
        return Ok((rule, None));
    }
    match rule.rsplit_once(':') {
        None => Ok((rule, None)),
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
        Ok(n) if p.starts_with(['+', '0']) => Err(format!("{p:?} is not a port; write {n}")),
        Ok(n) => Ok(n),
    }
}

/// `Some` if the text is an IP or CIDR (well-formed or not).
fn parse_net(host: &str) -> Option<Result<IpNet, String>> {
    let looks_ip = host.contains('/')
        || host.contains(':')
        || host.parse::<IpAddr>().is_ok()
        || (host.bytes().any(|b| b.is_ascii_digit())
            && host.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    looks_ip.then(|| crate::config::parse_cidr(host))
}

fn parse_pattern(host: &str) -> Result<Pattern, String> {
    let broad = |suffix: &Name| -> Result<(), String> {
        // `*.com` or `.io` would open a whole top-level domain: never what an
        // allow-list author means, and a deny rule that broad is better
        // written as the absence of allow rules.
        if !suffix.as_str().contains('.') {
            return Err(format!(
                "matches every name under the top-level domain {:?}: name a registrable domain",
                suffix.as_str()
            ));
        }
        Ok(())
    };
    if host == "*" || host == "." || host == "*." {
        return Err("matches every host: list the domains the agent needs".to_owned());
    }
    if let Some(rest) = host.strip_prefix("*.") {
        if rest.contains('*') {
            return Err("only one '*' per rule".to_owned());
        }
        let suffix = name(rest)?;
        broad(&suffix)?;
        return Ok(Pattern::Subdomains(suffix));
    }
    if let Some(rest) = host.strip_prefix('.') {
        if rest.contains('*') {
            return Err("'.domain' rules cannot contain '*'".to_owned());
        }
        let suffix = name(rest)?;
        broad(&suffix)?;
        return Ok(Pattern::Domain(suffix));
    }
    if let Some(rest) = host.strip_prefix('*') {
        return Err(format!(
            "'*' must be a whole label: use \"*.{r}\" (subdomains) or \".{r}\" (the domain and its subdomains)",
            r = rest.trim_start_matches('.')
        ));
    }
    if !host.contains('*') {
        return Ok(Pattern::Exact(name(host)?));
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let stars: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].contains('*'))
        .collect();
    if stars.len() > 1 {
        return Err("only one '*' per rule".to_owned());
    }
    let i = stars[0];
    if labels[i] != "*" {
        return Err(format!(
            "'*' must be a whole label, not part of {:?}",
            labels[i]
        ));
    }
    if i + 1 == labels.len() {
        return Err("'*' cannot stand for the top-level domain".to_owned());
    }
    let prefix = name(&labels[..i].join("."))?;
    let suffix = name(&labels[i + 1..].join("."))?;
    broad(&suffix)?;
    Ok(Pattern::OneLabel { prefix, suffix })
}

fn name(s: &str) -> Result<Name, String> {
    Name::parse(s).map_err(|e| e.to_string())
}

// === impl RuleIndex ===

/// Which ports a compiled rule admits.
#[derive(Debug, Clone, Copy)]
enum Ports {
    /// `egress.ports` (an allow rule without `:port`).
    Default,
    /// Any port (a deny rule without `:port`: deny wins on every port).
    Any,
    One(u16),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Position of the rule in the agent's list: the first match wins.
    index: u32,
    ports: Ports,
    /// Seconds since the epoch at which the rule stops matching.
    expires: Option<u64>,
}

/// One agent's allow or deny list, compiled. `lookup` is O(labels of the
/// host), independent of the number of rules: it probes one table once per
/// label suffix of the name ("a.b.c", "b.c", "c"), and every rule form that
/// could match hangs off the name it mentions.
///
/// The maps hash with rustc-hash's Fx hasher, not std's SipHash: SipHash
/// was most of a decision's cost. An unkeyed hash is safe here because the
/// tables are built from the config alone; a client picks only the keys
/// looked up, which cannot lengthen any probe sequence (hash flooding
/// needs control of what is inserted).
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// The name in each name rule (for `prefix.*.suffix`, the suffix) →
    /// the rules that mention it.
    names: HashMap<Box<str>, Node>,
    /// Prefix length → network address → entries. Few distinct lengths in
    /// practice, so a lookup is a few hash probes.
    nets: Vec<(u8, bool, HashMap<IpAddr, Vec<Entry>>)>,
}

/// The rules that mention one name.
#[derive(Debug, Default)]
struct Node {
    /// `name`, `*.name` and `.name` rules, each with its form.
    entries: Vec<(Form, Entry)>,
    /// `prefix.*.name` rules, by prefix. Rare, hence boxed.
    one_label: Option<Box<HashMap<Box<str>, Vec<Entry>>>>,
}

/// How a rule naming `n` matches: `n` itself, names below it, or both.
#[derive(Debug, Clone, Copy)]
enum Form {
    Exact,
    Subdomains,
    Domain,
}

impl Form {
    /// Whether the rule matches a host that is `n` itself (`whole`) or
    /// one below it.
    fn reaches(self, whole: bool) -> bool {
        match self {
            Form::Exact => whole,
            Form::Subdomains => !whole,
            Form::Domain => true,
        }
    }
}

/// The facts a lookup needs besides the host.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub port: u16,
    /// `egress.ports`, sorted.
    pub default_ports: &'a [u16],
    /// Seconds since the epoch: expired rules do not match.
    pub now: u64,
}

impl RuleIndex {
    /// Compiles `rules`; rules without a port admit `egress.ports` when
    /// `is_allow`, any port otherwise.
    pub fn new<'a>(
        rules: impl IntoIterator<Item = (&'a RuleSpec, Option<SystemTime>)>,
        is_allow: bool,
    ) -> Self {
        let mut ix = RuleIndex::default();
        for (i, (spec, expires)) in rules.into_iter().enumerate() {
            let entry = Entry {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                ports: match (spec.port, is_allow) {
                    (Some(p), _) => Ports::One(p),
                    (None, true) => Ports::Default,
                    (None, false) => Ports::Any,
                },
                expires: expires.map(epoch_secs),
            };
            match &spec.pattern {
                Pattern::Exact(n) => ix.node(n).entries.push((Form::Exact, entry)),
                Pattern::Subdomains(n) => ix.node(n).entries.push((Form::Subdomains, entry)),
                Pattern::Domain(n) => ix.node(n).entries.push((Form::Domain, entry)),
                Pattern::OneLabel { prefix, suffix } => ix
                    .node(suffix)
                    .one_label
                    .get_or_insert_default()
                    .entry(Box::from(prefix.as_str()))
                    .or_default()
                    .push(entry),
                Pattern::Net(net) => {
                    let (len, v4) = (net.prefix_len(), matches!(net, IpNet::V4(_)));
                    let slot = match ix.nets.iter().position(|(l, v, _)| *l == len && *v == v4) {
                        Some(s) => s,
                        None => {
                            ix.nets.push((len, v4, HashMap::default()));
                            ix.nets.len() - 1
                        }
                    };
                    ix.nets[slot]
                        .2
                        .entry(net.network())
                        .or_default()
                        .push(entry);
                }
            }
        }
        // Longest prefixes first is not needed for "first match" semantics
        // (we take the lowest index over all hits) but keeps probes ordered.
        ix.nets.sort_by_key(|(len, _, _)| std::cmp::Reverse(*len));
        ix
    }

    /// The index (position in the list) of the first rule matching `host`
    /// and the query's port, if any.
    pub fn lookup(&self, host: &Host, q: &Query<'_>) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut consider = |e: &Entry| {
            if best.is_none_or(|b| e.index < b) && e.admits(q) {
                best = Some(e.index);
            }
        };
        match host {
            Host::Ip(ip) => {
                let ip = ip.to_canonical();
                for (len, v4, map) in &self.nets {
                    if *v4 != ip.is_ipv4() {
                        continue;
                    }
                    if let Ok(net) = IpNet::new(ip, *len) {
                        map.get(&net.network())
                            .into_iter()
                            .flatten()
                            .for_each(&mut consider);
                    }
                }
            }
            Host::Name(_) if self.names.is_empty() => {}
            Host::Name(name) => {
                let h = name.as_str();
                // Each suffix at a label boundary, the whole name first:
                // "a.b.c", "b.c", "c". `before` is where the previous
                // label starts: the wildcard of `prefix.*.suffix`.
                let (mut start, mut before) = (0, None);
                loop {
                    if let Some(node) = self.names.get(&h[start..]) {
                        for (form, e) in &node.entries {
                            if form.reaches(start == 0) {
                                consider(e);
                            }
                        }
                        // The prefix is all the labels before the wildcard: at least one.
                        if let (Some(by_prefix), Some(w @ 1..)) = (&node.one_label, before) {
                            let prefix = &h[..w - 1];
                            by_prefix
                                .get(prefix)
                                .into_iter()
                                .flatten()
                                .for_each(&mut consider);
                        }
                    }
                    let Some(dot) = h[start..].find('.') else {
                        break;
                    };
                    before = Some(start);
                    start += dot + 1;
                }
            }
        }
        best
    }

    /// The node for the name a rule mentions, created on first use.
    fn node(&mut self, n: &Name) -> &mut Node {
        self.names.entry(Box::from(n.as_str())).or_default()
    }

    /// Whether the list has no rules, for summaries.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.nets.is_empty()
    }
}

impl Entry {
    fn admits(&self, q: &Query<'_>) -> bool {
        let port_ok = match self.ports {
            Ports::Any => true,
            Ports::One(p) => p == q.port,
            Ports::Default => q.default_ports.binary_search(&q.port).is_ok(),
        };
        port_ok && self.expires.is_none_or(|t| q.now < t)
    }
}

/// Whole seconds since the Unix epoch (0 for times before it).
pub fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
