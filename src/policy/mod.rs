//! Policy: what an agent may reach. [`Policy`] is compiled once from a
//! [`Config`] and is immutable; a reload builds a new one. Everything here is
//! pure: no IO, no async, no clock reads except the `now` a caller passes.
//!
//! Not here: the DNS lookup itself (dns.rs) and the connection (proxy/).

pub mod addrs;
pub mod rules;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use crate::config::{AgentConfig, Config, Mode};
use crate::host::Host;
use crate::identity::Identities;
use crate::telemetry::metrics::{AgentSeries, Metrics};
use rules::{Query, RuleIndex};

/// Index of an agent in the policy it came from.
pub type AgentId = usize;

/// A compiled, immutable policy: agents, their rules, identity indexes.
#[derive(Debug)]
pub struct Policy {
    pub config: Arc<Config>,
    agents: Vec<AgentPolicy>,
    pub identities: Identities,
    /// `egress.ports`, sorted, for rules without a port.
    default_ports: Vec<u16>,
}

/// One agent, compiled.
#[derive(Debug)]
pub struct AgentPolicy {
    /// Shared so that log records can hold it without copying.
    pub name: Arc<str>,
    pub mode: Mode,
    pub require_sni: bool,
    pub allow_ech: bool,
    allow: RuleIndex,
    deny: RuleIndex,
    allow_text: Vec<Arc<str>>,
    deny_text: Vec<Arc<str>>,
    /// Its metric series, resolved on first use (policy stays free of the
    /// registry; the handles are only cached here).
    series: OnceLock<Arc<AgentSeries>>,
    /// Client connections attributed to this agent now. Shared with the
    /// policy this one replaced (same agent name), so a reload neither
    /// resets nor double-counts the limit.
    active: Arc<AtomicUsize>,
}

/// One connection counted against its agent's
/// `limits.max_connections_per_agent`; released on drop.
#[derive(Debug)]
pub struct AgentSlot {
    agent: Arc<str>,
    active: Arc<AtomicUsize>,
}

impl AgentSlot {
    /// The agent it counts against.
    pub fn agent(&self) -> &str {
        &self.agent
    }
}

impl Drop for AgentSlot {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the rules or the address checks refuse a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No allow rule matches.
    NotAllowed,
    /// A deny rule matches.
    DeniedByRule,
    /// Every resolved (or literal) address is forbidden.
    DestinationIpProhibited,
}

impl DenyReason {
    /// The log `reason` (SPEC "Responses to refusals").
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NotAllowed => "not_allowed",
            DenyReason::DeniedByRule => "denied_by_rule",
            DenyReason::DestinationIpProhibited => "destination_ip_prohibited",
        }
    }
}

/// The outcome of the rules for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The rules deny it, but the agent is in report mode: let it through.
    Report(DenyReason),
    Deny(DenyReason),
}

/// A verdict and the rule that made it (none when nothing matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub rule: Option<Arc<str>>,
}

impl Policy {
    /// Compiles a validated configuration.
    pub fn new(config: Arc<Config>) -> Policy {
        let agents = config
            .agents
            .iter()
            .map(|a| AgentPolicy::new(a, &config))
            .collect();
        let mut default_ports = config.egress.ports.clone();
        default_ports.sort_unstable();
        default_ports.dedup();
        Policy {
            identities: Identities::new(&config),
            agents,
            default_ports,
            config,
        }
    }

    pub fn agent(&self, id: AgentId) -> &AgentPolicy {
        &self.agents[id]
    }

    pub fn agents(&self) -> &[AgentPolicy] {
        &self.agents
    }

    /// Looks an agent up by name (for `explain --agent`).
    pub fn agent_by_name(&self, name: &str) -> Option<AgentId> {
        self.agents.iter().position(|a| &*a.name == name)
    }

    /// SPEC "Decision" step 2: deny rules first, then the first allow rule;
    /// nothing matched denies. Report mode turns a rule denial into `Report`.
    pub fn decide(&self, agent: AgentId, host: &Host, port: u16, now: SystemTime) -> Decision {
        let a = &self.agents[agent];
        let q = Query {
            port,
            default_ports: &self.default_ports,
            now: rules::epoch_secs(now),
        };
        let (reason, rule) = if let Some(i) = a.deny.lookup(host, &q) {
            (
                DenyReason::DeniedByRule,
                Some(a.deny_text[i as usize].clone()),
            )
        } else if let Some(i) = a.allow.lookup(host, &q) {
            return Decision {
                verdict: Verdict::Allow,
                rule: Some(a.allow_text[i as usize].clone()),
            };
        } else {
            (DenyReason::NotAllowed, None)
        };
        let verdict = match a.mode {
            Mode::Enforce => Verdict::Deny(reason),
            Mode::Report => Verdict::Report(reason),
        };
        Decision { verdict, rule }
    }

    /// SPEC "Decision" step 3: keep the addresses that may be dialled, in
    /// the resolver's order. None left → `DestinationIpProhibited`.
    pub fn vet(&self, ips: &Arc<[IpAddr]>) -> Result<Arc<[IpAddr]>, DenyReason> {
        let ok: Arc<[IpAddr]> = if ips.iter().all(|ip| self.dialable(*ip)) {
            // The usual case: the list is shared, not copied.
            ips.clone()
        } else {
            ips.iter()
                .copied()
                .filter(|ip| self.dialable(*ip))
                .collect()
        };
        if ok.is_empty() {
            Err(DenyReason::DestinationIpProhibited)
        } else {
            Ok(ok)
        }
    }

    /// Whether sluice may connect to `ip` (public, or an `allow_cidrs` exception).
    pub fn dialable(&self, ip: IpAddr) -> bool {
        addrs::check(ip, &self.config.egress.allow_cidrs).is_ok()
    }

    /// Takes one of the agent's connection slots, unless it already holds
    /// `limits.max_connections_per_agent`.
    pub fn acquire(&self, agent: AgentId) -> Option<AgentSlot> {
        let a = &self.agents[agent];
        let max = self.config.limits.max_connections_per_agent;
        let mut n = a.active.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match a
                .active
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Some(AgentSlot {
                        agent: a.name.clone(),
                        active: a.active.clone(),
                    });
                }
                Err(now) => n = now,
            }
        }
    }

    /// Carries the per-agent connection counts over from the policy this
    /// one replaces, matching agents by name.
    pub fn inherit(mut self, old: &Policy) -> Policy {
        for a in &mut self.agents {
            if let Some(prev) = old.agents.iter().find(|p| p.name == a.name) {
                a.active = prev.active.clone();
            }
        }
        self
    }

    /// Whether any agent authenticates by token (then the unidentified get 407).
    pub fn tokens_in_use(&self) -> bool {
        self.identities.tokens_in_use()
    }
}

impl AgentPolicy {
    /// The agent's hot metric series, resolved once per policy.
    pub fn series(&self, metrics: &Metrics) -> Arc<AgentSeries> {
        self.series
            .get_or_init(|| Arc::new(metrics.agent_series(&self.name)))
            .clone()
    }

    fn new(a: &AgentConfig, config: &Config) -> AgentPolicy {
        let allow = RuleIndex::new(a.allow.iter().map(|r| (&r.spec, r.expires)), true);
        let deny = RuleIndex::new(a.deny.iter().map(|r| (&r.spec, r.expires)), false);
        AgentPolicy {
            name: Arc::from(a.name.as_str()),
            mode: a.mode,
            require_sni: a.require_sni.unwrap_or(config.egress.require_sni),
            allow_ech: a.allow_ech.unwrap_or(config.egress.allow_ech),
            allow,
            deny,
            allow_text: a.allow.iter().map(|r| Arc::from(r.text.as_str())).collect(),
            deny_text: a.deny.iter().map(|r| Arc::from(r.text.as_str())).collect(),
            active: Arc::new(AtomicUsize::new(0)),
            series: OnceLock::new(),
        }
    }
}

#[cfg(test)]
mod tests;
