//! The generated rule sets both policy benchmarks use: 10, 10,000 and
//! 100,000 rules, every rule form, deny rules first; and the destinations
//! probed in each, with the verdict each must get.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sluice::config::Config;
use sluice::host::Host;
use sluice::policy::Policy;

/// Agents in the large configuration.
pub const AGENTS: usize = 1000;
/// Rules per agent in the large configuration: 1,000 × 100 = 100,000.
pub const RULES_PER_AGENT: usize = 100;
/// The agent the large-config benchmarks act as: one in the middle, so
/// nothing depends on it being first or last.
pub const AGENT: usize = 777;

/// Forms in the rule cycle: exact (every other one with `:8443`), `*.x`,
/// `.x`, `a.*.x`, CIDR with port.
const FORMS: usize = 5;

/// Rule `j` of agent `i`: the forms in turn, every name distinct.
fn rule(i: usize, j: usize) -> String {
    match j % FORMS {
        0 if j % (2 * FORMS) == 0 => format!("host{j}.agent{i}.example.com"),
        0 => format!("host{j}.agent{i}.example.com:8443"),
        1 => format!("*.sub{j}.agent{i}.example.net"),
        2 => format!(".dom{j}.agent{i}.example.org"),
        3 => format!("api{j}.*.agent{i}.example.io"),
        _ => format!("11.{}.{}.0/24:5432", (j >> 8) & 255, j & 255),
    }
}

/// A configuration of `agents` agents with `rules` rules each, identified by
/// source range and by token. The first [`FORMS`] rules of each agent are
/// deny rules (one of each form), the rest allow rules, so that a small and
/// a large configuration exercise the same index tables and differ only in
/// how full they are.
pub fn config_toml(agents: usize, rules: usize) -> String {
    let mut out = String::from("[egress]\nports = [80, 443]\n");
    for i in 0..agents {
        let allow: Vec<String> = (FORMS..rules)
            .map(|j| format!("{:?}", rule(i, j)))
            .collect();
        let deny: Vec<String> = (0..FORMS).map(|j| format!("{:?}", rule(i, j))).collect();
        out.push_str(&format!(
            "\n[[agent]]\nname = \"agent{i}\"\nsources = [\"10.{}.{}.0/24\"]\ntoken_sha256 = [\"{}\"]\nallow = [{}]\ndeny = [{}]\n",
            i >> 8,
            i & 255,
            hex_sha256(&format!("token-{i}")),
            allow.join(", "),
            deny.join(", "),
        ));
    }
    out
}

fn hex_sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn load(toml: &str) -> Policy {
    let config = Config::from_toml(toml, Path::new("bench.toml"))
        .unwrap_or_else(|e| panic!("generated config is invalid: {e}"));
    Policy::new(Arc::new(config))
}

/// A destination and the verdict it must get, checked once before timing.
pub struct Case {
    pub label: &'static str,
    pub host: Host,
    pub port: u16,
    pub allowed: bool,
}

pub fn cases(agent: usize, rules: usize) -> Vec<Case> {
    let host = |s: String| Host::parse(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
    // The last rule of each form: an allow rule (the deny ones come first).
    let last = |form: usize| {
        (FORMS..rules)
            .rev()
            .find(|j| j % FORMS == form)
            .unwrap_or(form)
    };
    let exact = last(0);
    vec![
        Case {
            label: "hit_exact",
            host: host(format!("host{exact}.agent{agent}.example.com")),
            port: if exact % (2 * FORMS) == 0 { 443 } else { 8443 },
            allowed: true,
        },
        Case {
            label: "hit_one_label",
            host: host(format!("api{}.eu-west-1.agent{agent}.example.io", last(3))),
            port: 443,
            allowed: true,
        },
        Case {
            label: "hit_subdomain_deep",
            host: host(format!("a.b.c.sub{}.agent{agent}.example.net", last(1))),
            port: 443,
            allowed: true,
        },
        Case {
            label: "hit_cidr",
            host: host(format!("11.{}.{}.9", (last(4) >> 8) & 255, last(4) & 255)),
            port: 5432,
            allowed: true,
        },
        Case {
            label: "miss_name",
            host: host("a.b.c.not-allowed.example.com".to_owned()),
            port: 443,
            allowed: false,
        },
        Case {
            label: "miss_ip",
            host: host("93.184.215.14".to_owned()),
            port: 443,
            allowed: false,
        },
    ]
}

/// One rule-set size under test: the policy and the agent that acts in it.
pub struct Size {
    pub label: &'static str,
    pub policy: Policy,
    pub agent: usize,
    pub rules: usize,
}

/// The sizes compared, smallest (the baseline) first: 10 rules, 10,000 in
/// one agent, 100,000 as 1,000 agents × 100, and 100,000 in one agent (the
/// worst case for the index).
pub fn sizes() -> Vec<Size> {
    let size = |label, agents, agent, rules| Size {
        label,
        policy: load(&config_toml(agents, rules)),
        agent,
        rules,
    };
    vec![
        size("10_rules", 1, 0, 10),
        size("10k_rules", 1, 0, 10_000),
        size("100k_rules", AGENTS, AGENT, RULES_PER_AGENT),
        size("100k_rules_one_agent", 1, 0, 100_000),
    ]
}
