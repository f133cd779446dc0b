//! `sluice explain` and `sluice check`: the proxy's own decide → resolve →
//! vet steps, run for one destination without connecting, and the summary
//! that `check` prints. The only network traffic is DNS (none with
//! `--no-dns`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, RuleEntry};
use crate::dns::Resolver;
use crate::host::{self, Host};
use crate::policy::{AgentId, Policy, Verdict, addrs};

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Who {
    Agent(String),
    Source(IpAddr),
}

/// Why an explanation could not be given.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no agent is named {0:?}")]
    NoSuchAgent(String),
    #[error("no agent's sources contain {0}")]
    NoAgentForSource(IpAddr),
    #[error("destination {0:?}: {1}")]
    BadDestination(String, String),
    #[error("dns: {0}")]
    Resolver(#[from] crate::dns::DnsError),
}

/// The explanation, as printed (text) or serialised (json).
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub agent: String,
    pub host: String,
    pub port: u16,
    /// `allow`, `report` or `deny`.
    pub decision: &'static str,
    /// `null` when allowed; else the log reason it would carry.
    pub reason: Option<&'static str>,
    pub rule: Option<String>,
    /// Where the rule is written, `file:line:col`.
    pub rule_at: Option<String>,
    pub why: String,
    /// Whether DNS was consulted.
    pub resolved: bool,
    pub addresses: Vec<Address>,
    pub dns_error: Option<String>,
}

/// One resolved address and whether sluice would dial it.
#[derive(Debug, Serialize)]
pub struct Address {
    pub ip: IpAddr,
    /// Why it is forbidden; `null` if it may be dialled.
    pub forbidden: Option<&'static str>,
}

impl Explanation {
    /// `explain`'s exit code: 0 allowed or reported, 3 denied.
    pub fn exit_code(&self) -> i32 {
        if self.decision == "deny" { 3 } else { 0 }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "agent:     {}", self.agent);
        let _ = writeln!(s, "dest:      {}:{}", self.host, self.port);
        let _ = writeln!(s, "decision:  {}", self.decision);
        if let Some(r) = self.reason {
            let _ = writeln!(s, "reason:    {r}");
        }
        match (&self.rule, &self.rule_at) {
            (Some(rule), Some(at)) => {
                let _ = writeln!(s, "rule:      {rule:?} ({at})");
            }
            (Some(rule), None) => {
                let _ = writeln!(s, "rule:      {rule:?}");
            }
            _ => {}
        }
        let _ = writeln!(s, "why:       {}", self.why);
        if let Some(e) = &self.dns_error {
            let _ = writeln!(s, "dns:       {e}");
        }
        for a in &self.addresses {
            match a.forbidden {
                None => {
                    let _ = writeln!(s, "address:   {} (may be dialled)", a.ip);
                }
                Some(why) => {
                    let _ = writeln!(s, "address:   {} (forbidden: {why})", a.ip);
                }
            }
        }
        s
    }
}

/// Parses DEST: `host:port`, `host` (port 443), or an http(s) URL.
pub fn parse_dest(dest: &str) -> Result<(Host, u16), ExplainError> {
    let bad = |m: String| ExplainError::BadDestination(dest.to_owned(), m);
    let (authority, default_port) = if let Some(rest) = dest.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = dest.strip_prefix("https://") {
        (rest, 443)
    } else {
        (dest, 443)
    };
    let authority = authority.split(['/', '?', '#']).next().unwrap_or("");
    host::parse_authority(authority, Some(default_port)).map_err(|e| bad(e.to_string()))
}

/// Decides (and unless `no_dns`, resolves and vets) `dest` for `who`.
pub async fn explain(
    config: Config,
    who: &Who,
    dest: &str,
    no_dns: bool,
) -> Result<Explanation, ExplainError> {
    let (host, port) = parse_dest(dest)?;
    let policy = Policy::new(Arc::new(config));
    let id: AgentId = match who {
        Who::Agent(name) => policy
            .agent_by_name(name)
            .ok_or_else(|| ExplainError::NoSuchAgent(name.clone()))?,
        Who::Source(ip) => policy
            .identities
            .by_source(*ip)
            .ok_or(ExplainError::NoAgentForSource(*ip))?,
    };
    let mut e = decide(&policy, id, &host, port);
    if e.decision == "deny" {
        // Like the proxy: a refused name is never resolved.
        return Ok(e);
    }
    let ips = match &host {
        Host::Ip(ip) => Arc::from([*ip]),
        Host::Name(_) if no_dns => return Ok(e),
        Host::Name(name) => {
            let mut dns = policy.config.dns.clone();
            dns.timeout = dns.timeout.min(Duration::from_secs(10));
            e.resolved = true;
            match Resolver::new(&dns)?.resolve(name).await {
                Ok(ips) => ips,
                Err(err) => {
                    e.dns_error = Some(err.to_string());
                    e.why.push_str("; but the name does not resolve");
                    return Ok(e);
                }
            }
        }
    };
    e.addresses = ips
        .iter()
        .map(|&ip| Address {
            ip,
            forbidden: addrs::check(ip, &policy.config.egress.allow_cidrs)
                .err()
                .map(addrs::Forbidden::as_str),
        })
        .collect();
    if policy.vet(&ips).is_err() {
        e.decision = "deny";
        e.reason = Some("destination_ip_prohibited");
        e.why = "every address is forbidden (denied in every mode)".to_owned();
    }
    Ok(e)
}

/// The rules' verdict on `host:port` for the agent, with the rule that
/// decided it and where that rule is in the file.
fn decide(policy: &Policy, id: AgentId, host: &Host, port: u16) -> Explanation {
    let decision = policy.decide(id, host, port, SystemTime::now());
    let rule_at = decision
        .rule
        .as_deref()
        .and_then(|r| locate(&policy.config, id, r, &decision.verdict));
    let host_text = match host {
        Host::Name(n) => n.as_str().to_owned(),
        Host::Ip(ip) => ip.to_string(),
    };
    let (decision_text, reason, why) = match decision.verdict {
        Verdict::Allow => ("allow", None, "an allow rule matches".to_owned()),
        Verdict::Report(r) | Verdict::Deny(r) => {
            let mut why = match r {
                crate::policy::DenyReason::DeniedByRule => {
                    "a deny rule matches (deny wins over allow)".to_owned()
                }
                _ => "no allow rule matches this host and port".to_owned(),
            };
            let text = if matches!(decision.verdict, Verdict::Deny(_)) {
                "deny"
            } else {
                why.push_str(
                    "; the agent is in report mode, so it would be let through and logged",
                );
                "report"
            };
            (text, Some(r.as_str()), why)
        }
    };
    Explanation {
        agent: policy.agent(id).name.to_string(),
        host: host_text,
        port,
        decision: decision_text,
        reason,
        rule: decision.rule.as_deref().map(str::to_owned),
        rule_at,
        why,
        resolved: false,
        addresses: Vec::new(),
        dns_error: None,
    }
}

fn locate(config: &Config, id: AgentId, rule: &str, verdict: &Verdict) -> Option<String> {
    let a = &config.agents[id];
    let list: &[RuleEntry] = match verdict {
        Verdict::Allow => &a.allow,
        _ => &a.deny,
    };
    list.iter()
        .find(|r| r.text == rule)
        .map(|r| format!("{}:{}:{}", config.path.display(), r.line, r.col))
}

/// `sluice check`'s summary: what the file sets up, on one screen, plus
/// warnings about entries that expire within 14 days.
pub fn summary(config: &Config, now: SystemTime) -> (String, Vec<String>) {
    let mut s = String::new();
    let _ = writeln!(s, "{}: ok", config.path.display());
    let _ = writeln!(s, "  proxy:   {}", config.proxy.listen);
    if let Some(tls) = config.proxy.tls_listen {
        let _ = writeln!(s, "  tls:     {tls} (client certificates)");
    }
    let _ = writeln!(s, "  admin:   {}", config.admin.listen);
    let dns = match &config.dns.nameservers {
        Some(ns) => ns
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        None => "system resolv.conf".to_owned(),
    };
    let _ = writeln!(s, "  dns:     {dns}");
    let ports: Vec<String> = config
        .egress
        .ports
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(s, "  ports:   {} (rules without :port)", ports.join(", "));
    if !config.egress.allow_cidrs.is_empty() {
        let c: Vec<String> = config
            .egress
            .allow_cidrs
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(s, "  allowed internal ranges: {}", c.join(", "));
    }
    let _ = writeln!(s, "  agents:  {}", config.agents.len());
    let mut warnings = Vec::new();
    let soon = now + Duration::from_secs(14 * 86_400);
    for a in &config.agents {
        let mut ids = Vec::new();
        if !a.sources.is_empty() {
            ids.push(format!("{} source range(s)", a.sources.len()));
        }
        if !a.token_sha256.is_empty() {
            ids.push(format!("{} token(s)", a.token_sha256.len()));
        }
        if !a.spiffe_ids.is_empty() {
            ids.push(format!("{} SPIFFE ID(s)", a.spiffe_ids.len()));
        }
        let _ = writeln!(
            s,
            "    {:<24} {:<7} allow {:>4}  deny {:>3}  identity: {}",
            a.name,
            a.mode.as_str(),
            a.allow.len(),
            a.deny.len(),
            ids.join(", ")
        );
        for r in a.allow.iter().chain(&a.deny) {
            let Some(exp) = r.expires else { continue };
            let owner = r.owner.as_deref().unwrap_or("no owner");
            let at = format!("{}:{}:{}", config.path.display(), r.line, r.col);
            if exp <= now {
                warnings.push(format!(
                    "{at}: agent {:?}: rule {:?} ({owner}) has expired and no longer matches",
                    a.name, r.text
                ));
            } else if exp <= soon {
                let days = exp.duration_since(now).map_or(0, |d| d.as_secs() / 86_400);
                warnings.push(format!(
                    "{at}: agent {:?}: rule {:?} ({owner}) expires in {days} day(s)",
                    a.name, r.text
                ));
            }
        }
    }
    (s, warnings)
}
