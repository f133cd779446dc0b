//! Semantic checks: the serde structs of `raw.rs` become a [`Config`],
//! section by section, in the order the file documents them. Every error
//! goes through [`Cx::err`], so it names the file, line, column and key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::place::span_of_key;
use super::raw::{RawAgent, RawConfig, RawDns, RawEgress, RawLimits, RawRule, RawTls};
use super::values::{parse_cidr, parse_expiry, parse_nameserver, parse_sha256, valid_agent_name};
use super::{
    AdminConfig, AgentConfig, Config, ConfigError, Cx, DnsConfig, EgressConfig, Limits, LogConfig,
    Mode, ProxyConfig, RuleEntry, TlsConfig, UnidentifiedAction,
};
use crate::policy::rules;

impl Cx<'_> {
    pub(super) fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let RawConfig {
            proxy,
            admin,
            dns,
            egress,
            limits,
            log,
            tls,
            unidentified,
            agents,
        } = raw;
        let tls = self.tls(tls, proxy.tls_listen.as_ref())?;
        let dns = self.dns(dns)?;
        let egress = self.egress(egress)?;
        let limits = self.limits(limits)?;
        if unidentified.action.get_ref() != "deny" {
            return Err(self.err(
                unidentified.action.span(),
                "unidentified.action",
                format!(
                    "{:?} is not supported: the only action is \"deny\"",
                    unidentified.action.get_ref()
                ),
            ));
        }
        let agents = self.agents(agents)?;
        Ok(Config {
            path: self.path.to_owned(),
            proxy: ProxyConfig {
                listen: proxy.listen,
                tls_listen: proxy.tls_listen.map(Spanned::into_inner),
            },
            admin: AdminConfig {
                listen: admin.listen,
            },
            dns,
            egress,
            limits,
            log: LogConfig {
                path: log.path.map(|p| self.relative(p)),
                include_query: log.include_query,
            },
            tls,
            unidentified: UnidentifiedAction::Deny,
            agents,
        })
    }

    /// `[tls]`, with its paths made relative to the config file; required
    /// by `proxy.tls_listen`.
    fn tls(
        &self,
        tls: Option<RawTls>,
        tls_listen: Option<&Spanned<std::net::SocketAddr>>,
    ) -> Result<Option<TlsConfig>, ConfigError> {
        let tls = tls.map(|t| TlsConfig {
            cert: self.relative(t.cert),
            key: self.relative(t.key),
            client_ca: self.relative(t.client_ca),
        });
        if let (Some(listen), None) = (tls_listen, &tls) {
            return Err(self.err(
                listen.span(),
                "proxy.tls_listen",
                "needs a [tls] section with cert, key and client_ca",
            ));
        }
        Ok(tls)
    }

    fn dns(&self, dns: RawDns) -> Result<DnsConfig, ConfigError> {
        let nameservers = match dns.nameservers {
            None => None,
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, ns) in list.iter().enumerate() {
                    out.push(parse_nameserver(ns.get_ref()).ok_or_else(|| {
                        self.err(
                            ns.span(),
                            format!("dns.nameservers[{i}]"),
                            format!("{:?} is not an IP address or IP:port", ns.get_ref()),
                        )
                    })?);
                }
                if out.is_empty() {
                    return Err(self.err(
                        span_of_key(self.text, "dns.nameservers"),
                        "dns.nameservers",
                        "is empty: remove it to use the system's resolv.conf",
                    ));
                }
                Some(out)
            }
        };
        self.positive("dns.timeout", dns.timeout)?;
        Ok(DnsConfig {
            nameservers,
            timeout: dns.timeout,
            hosts_file: dns.hosts_file,
        })
    }

    fn egress(&self, egress: RawEgress) -> Result<EgressConfig, ConfigError> {
        let mut ports = Vec::with_capacity(egress.ports.len());
        for (i, p) in egress.ports.iter().enumerate() {
            if *p.get_ref() == 0 {
                return Err(self.err(
                    p.span(),
                    format!("egress.ports[{i}]"),
                    "port 0 is not a port",
                ));
            }
            ports.push(*p.get_ref());
        }
        let mut allow_cidrs = Vec::with_capacity(egress.allow_cidrs.len());
        for (i, c) in egress.allow_cidrs.iter().enumerate() {
            allow_cidrs.push(
                parse_cidr(c.get_ref())
                    .map_err(|m| self.err(c.span(), format!("egress.allow_cidrs[{i}]"), m))?,
            );
        }
        self.positive("egress.connect_timeout", egress.connect_timeout)?;
        self.positive("egress.idle_timeout", egress.idle_timeout)?;
        Ok(EgressConfig {
            ports,
            allow_cidrs,
            connect_timeout: egress.connect_timeout,
            idle_timeout: egress.idle_timeout,
            require_sni: egress.require_sni,
            allow_ech: egress.allow_ech,
        })
    }

    fn limits(&self, limits: RawLimits) -> Result<Limits, ConfigError> {
        self.positive("limits.head_timeout", limits.head_timeout)?;
        // Below 1 KiB not even an ordinary request head fits; above 1 MiB is a
        // memory-exhaustion lever for whoever can reach the proxy.
        if !(1024..=1 << 20).contains(limits.head_size.get_ref()) {
            return Err(self.err(
                limits.head_size.span(),
                "limits.head_size",
                "must be between 1024 and 1048576 bytes",
            ));
        }
        for (key, v) in [
            ("limits.max_connections", &limits.max_connections),
            (
                "limits.max_connections_per_agent",
                &limits.max_connections_per_agent,
            ),
        ] {
            if *v.get_ref() == 0 {
                return Err(self.err(v.span(), key, "must be at least 1"));
            }
        }
        Ok(Limits {
            head_size: limits.head_size.into_inner(),
            head_timeout: limits.head_timeout,
            max_connections: limits.max_connections.into_inner(),
            max_connections_per_agent: limits.max_connections_per_agent.into_inner(),
            shutdown_grace: limits.shutdown_grace,
        })
    }

    /// A duration that must not be zero (durations carry no span of their
    /// own: the error points at the key).
    fn positive(&self, key: &str, d: Duration) -> Result<(), ConfigError> {
        if d.is_zero() {
            return Err(self.err(
                span_of_key(self.text, key),
                key,
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    fn agents(&self, raw: Vec<Spanned<RawAgent>>) -> Result<Vec<AgentConfig>, ConfigError> {
        let mut agents: Vec<AgentConfig> = Vec::with_capacity(raw.len());
        let mut claims = Claims::default();
        for (ai, agent) in raw.into_iter().enumerate() {
            let a = self.agent(ai, agent, &mut claims, &agents)?;
            agents.push(a);
        }
        Ok(agents)
    }

    /// Agent `ai`. Names, source ranges and SPIFFE IDs each belong to one
    /// agent: `claims` holds those of the agents before it (`earlier`).
    fn agent(
        &self,
        ai: usize,
        agent: Spanned<RawAgent>,
        claims: &mut Claims,
        earlier: &[AgentConfig],
    ) -> Result<AgentConfig, ConfigError> {
        let span = agent.span();
        let a = agent.into_inner();
        let key = |k: &str| format!("agent[{ai}].{k}");
        let name = self.agent_name(ai, &a.name, claims)?;
        let sources = self.sources(ai, &a.sources, claims, earlier)?;
        let token_sha256 = self.tokens(ai, &a.token_sha256)?;
        let spiffe_ids = self.spiffe_ids(ai, &a.spiffe_ids, claims, earlier)?;
        if sources.is_empty() && token_sha256.is_empty() && spiffe_ids.is_empty() {
            return Err(self.err(
                span,
                key("sources"),
                format!("agent {name:?} has no sources, token_sha256 or spiffe_ids: nothing could ever identify it"),
            ));
        }
        let mode = match a.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("enforce", _)) => Mode::Enforce,
            Some(("report", _)) => Mode::Report,
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    key("mode"),
                    format!("{other:?} is not a mode: use \"enforce\" or \"report\""),
                ));
            }
        };
        Ok(AgentConfig {
            name,
            sources,
            token_sha256,
            spiffe_ids,
            allow: self.rules(&a.allow, &key("allow"))?,
            deny: self.rules(&a.deny, &key("deny"))?,
            mode,
            require_sni: a.require_sni,
            allow_ech: a.allow_ech,
        })
    }

    /// A well-formed name no earlier agent has.
    fn agent_name(
        &self,
        ai: usize,
        name: &Spanned<String>,
        claims: &mut Claims,
    ) -> Result<String, ConfigError> {
        let key = format!("agent[{ai}].name");
        let text = name.get_ref().clone();
        if !valid_agent_name(&text) {
            return Err(self.err(
                name.span(),
                key,
                format!("{text:?} is not a valid agent name: use [a-z0-9][a-z0-9-_.]*"),
            ));
        }
        if let Some(prev) = claims.names.insert(text.clone(), ai) {
            return Err(self.err(
                name.span(),
                key,
                format!("{text:?} is already the name of agent[{prev}]"),
            ));
        }
        Ok(text)
    }

    /// Source ranges, none of them another agent's.
    fn sources(
        &self,
        ai: usize,
        raw: &[Spanned<String>],
        claims: &mut Claims,
        earlier: &[AgentConfig],
    ) -> Result<Vec<IpNet>, ConfigError> {
        let mut sources = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            let key = format!("agent[{ai}].sources[{i}]");
            let net = parse_cidr(s.get_ref()).map_err(|m| self.err(s.span(), key.clone(), m))?;
            match claims.ranges.insert(net, ai) {
                Some(prev) if prev != ai => {
                    return Err(self.err(
                        s.span(),
                        key,
                        format!(
                            "{net} is also claimed by agent {:?}: a source range identifies one agent",
                            earlier[prev].name
                        ),
                    ));
                }
                _ => sources.push(net),
            }
        }
        Ok(sources)
    }

    /// Token digests, each 64 hex digits.
    fn tokens(&self, ai: usize, raw: &[Spanned<String>]) -> Result<Vec<[u8; 32]>, ConfigError> {
        raw.iter()
            .enumerate()
            .map(|(i, t)| {
                parse_sha256(t.get_ref()).ok_or_else(|| {
                    self.err(
                        t.span(),
                        format!("agent[{ai}].token_sha256[{i}]"),
                        "must be 64 hex digits: the SHA-256 of the token, e.g. from `printf %s TOKEN | sha256sum`",
                    )
                })
            })
            .collect()
    }

    /// SPIFFE IDs, none of them another agent's.
    fn spiffe_ids(
        &self,
        ai: usize,
        raw: &[Spanned<String>],
        claims: &mut Claims,
        earlier: &[AgentConfig],
    ) -> Result<Vec<String>, ConfigError> {
        let mut ids = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            let key = format!("agent[{ai}].spiffe_ids[{i}]");
            let id = s.get_ref();
            if !id.starts_with("spiffe://") || id.len() <= "spiffe://".len() {
                return Err(self.err(
                    s.span(),
                    key,
                    format!("{id:?} is not a SPIFFE ID (spiffe://trust-domain/path)"),
                ));
            }
            match claims.spiffe.insert(id.clone(), ai) {
                Some(prev) if prev != ai => {
                    return Err(self.err(
                        s.span(),
                        key,
                        format!("{id:?} is also claimed by agent {:?}", earlier[prev].name),
                    ));
                }
                _ => ids.push(id.clone()),
            }
        }
        Ok(ids)
    }

    /// An agent's `allow` or `deny` list; each rule keeps its line and column
    /// for `explain` and the review.
    fn rules(&self, raw: &[Spanned<RawRule>], key: &str) -> Result<Vec<RuleEntry>, ConfigError> {
        let mut out = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let rr = r.get_ref();
            let key = format!("{key}[{i}]");
            let spec = rules::parse(&rr.rule)
                .map_err(|m| self.err(r.span(), &key, format!("{:?}: {m}", rr.rule)))?;
            let expires = match &rr.expires {
                None => None,
                Some(e) => Some(parse_expiry(e).ok_or_else(|| {
                    self.err(
                        r.span(),
                        format!("{key}.expires"),
                        format!("{e:?} is not a date (YYYY-MM-DD) or RFC 3339 time"),
                    )
                })?),
            };
            let (line, col) = self.line_col(r.span().start);
            out.push(RuleEntry {
                text: rr.rule.clone(),
                spec,
                owner: rr.owner.clone(),
                reason: rr.reason.clone(),
                expires,
                line,
                col,
            });
        }
        Ok(out)
    }

    /// A path from the file, relative to the file's own directory.
    fn relative(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.path
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(p)
        }
    }
}

/// Who has claimed what so far, by agent index.
#[derive(Default)]
struct Claims {
    names: HashMap<String, usize>,
    ranges: HashMap<IpNet, usize>,
    spiffe: HashMap<String, usize>,
}
