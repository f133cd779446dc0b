//! Configuration: the TOML file, parsed into raw serde structs, then validated
//! and compiled into a [`Config`] that nothing downstream has to parse again.
//!
//! `Config::load` does the file IO; `Config::from_toml` does everything else,
//! so `check`, `run` and reload share one code path. Every error names the
//! file, line, column and key (SPEC "Command line"). Host patterns are parsed
//! here (via [`crate::policy::rules`]) so that a bad rule is a config error,
//! never a surprise at request time.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use toml::Spanned;

use place::{key_at, span_of_key};
use raw::{RawAgent, RawConfig, RawRule};
pub use values::{parse_cidr, parse_expiry};
use values::{parse_nameserver, parse_sha256, valid_agent_name};

use crate::policy::rules::{self, RuleSpec};

/// A validated configuration, ready to compile into a [`crate::policy::Policy`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages and relative paths).
    pub path: PathBuf,
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub dns: DnsConfig,
    pub egress: EgressConfig,
    pub limits: Limits,
    pub log: LogConfig,
    /// Present when `[tls]` is given; required by `proxy.tls_listen`.
    pub tls: Option<TlsConfig>,
    pub unidentified: UnidentifiedAction,
    pub agents: Vec<AgentConfig>,
}

/// `[proxy]`
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Plain HTTP proxy listener. Default `0.0.0.0:3128`.
    pub listen: SocketAddr,
    /// The same protocol over TLS with client certificates. Default: none.
    pub tls_listen: Option<SocketAddr>,
}

/// `[admin]`
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:9090`.
    pub listen: SocketAddr,
}

/// `[dns]`
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Name servers (UDP and TCP). `None`: the system's resolv.conf.
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Per-query timeout. Default 2s.
    pub timeout: Duration,
    /// Honour /etc/hosts. Default true.
    pub hosts_file: bool,
}

/// `[egress]`
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Ports that a rule without an explicit port allows. Default `[80, 443]`.
    pub ports: Vec<u16>,
    /// Exceptions to the forbidden address ranges. Default empty.
    pub allow_cidrs: Vec<IpNet>,
    /// Upstream TCP connect timeout, per address tried. Default 10s.
    pub connect_timeout: Duration,
    /// A tunnel with no bytes either way for this long is closed. Default 15m.
    pub idle_timeout: Duration,
    /// Refuse tunnels whose first bytes are not a ClientHello with SNI. Default false.
    pub require_sni: bool,
}

/// `[limits]`
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes of request head (request line + headers); more → 431. Default 16384.
    pub head_size: usize,
    /// The whole head must arrive within this. Default 10s.
    pub head_timeout: Duration,
    /// Client connections in total. Default 10000.
    pub max_connections: usize,
    /// Client connections per identified agent. Default 1000.
    pub max_connections_per_agent: usize,
    /// On SIGTERM, how long open tunnels may finish. Default 30s.
    pub shutdown_grace: Duration,
}

/// `[log]`
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Access log file; `None`: standard output.
    pub path: Option<PathBuf>,
    /// Log the query string of plain-HTTP requests. Default false.
    pub include_query: bool,
}

/// `[tls]`: paths are resolved relative to the config file.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// `[unidentified] action`: what happens to requests that match no agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnidentifiedAction {
    Deny,
}

/// Whether an agent's rule denials are enforced or only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Report,
}

impl Mode {
    /// The log's `mode` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Report => "report",
        }
    }
}

/// One `[[agent]]`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub sources: Vec<IpNet>,
    /// SHA-256 digests of accepted proxy tokens.
    pub token_sha256: Vec<[u8; 32]>,
    pub spiffe_ids: Vec<String>,
    pub allow: Vec<RuleEntry>,
    pub deny: Vec<RuleEntry>,
    pub mode: Mode,
    /// Overrides `egress.require_sni` for this agent.
    pub require_sni: Option<bool>,
}

/// One allow or deny entry, as written and as compiled.
#[derive(Debug, Clone)]
pub struct RuleEntry {
    /// The rule as written, e.g. `"*.githubusercontent.com"`; what the log's `rule` shows.
    pub text: String,
    pub spec: RuleSpec,
    pub owner: Option<String>,
    pub reason: Option<String>,
    /// The moment the entry stops matching. A bare date means the end of that day (UTC).
    pub expires: Option<SystemTime>,
    /// Where it was written, 1-based.
    pub line: usize,
    pub col: usize,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or a TLS file it names) could not be read (exit code 2).
    #[error("{}: cannot read the file", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is invalid (exit code 1).
    #[error("{}", .0)]
    Invalid(Box<Invalid>),
    /// A TLS file named in `[tls]` (certificate, key or client CA) is
    /// readable but unusable (exit code 1). Unreadable ones are `Io`.
    #[error("{}: {message}", path.display())]
    Tls { path: PathBuf, message: String },
}

/// A validation error pinned to its place in the file.
#[derive(Debug)]
pub struct Invalid {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// Dotted key path, e.g. `agent[1].allow[2]`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.key,
            self.message
        )
    }
}

// === impl Config ===

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates `text`; `path` is used for messages and to
    /// resolve relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cx = Cx {
            text,
            path,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
        cx.validate(raw)
    }
}

/// Validation context: the source text, for turning byte spans into line:col.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
    /// Byte offset at which each line starts. Every rule records its place,
    /// so placing one must not rescan the text: with 100,000 rules that
    /// made loading quadratic (minutes instead of milliseconds).
    line_starts: Vec<usize>,
}

impl Cx<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = self.line_col(span.start);
        ConfigError::Invalid(Box::new(Invalid {
            file: self.path.to_owned(),
            line,
            col,
            key: key.into(),
            message: message.into(),
        }))
    }

    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let key = key_at(self.text, span.start);
        // toml's messages may span several lines; the first carries the point.
        let message = e.message().lines().next().unwrap_or("invalid TOML").trim();
        self.err(span, key, message.to_owned())
    }

    fn relative(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
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

        let tls = tls.map(|t| TlsConfig {
            cert: self.relative(t.cert),
            key: self.relative(t.key),
            client_ca: self.relative(t.client_ca),
        });
        if let Some(tl) = &proxy.tls_listen {
            if tls.is_none() {
                return Err(self.err(
                    tl.span(),
                    "proxy.tls_listen",
                    "needs a [tls] section with cert, key and client_ca",
                ));
            }
        }

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
        if dns.timeout.is_zero() {
            return Err(self.err(
                span_of_key(self.text, "dns.timeout"),
                "dns.timeout",
                "must be greater than zero",
            ));
        }

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
        for (key, d) in [
            ("egress.connect_timeout", egress.connect_timeout),
            ("egress.idle_timeout", egress.idle_timeout),
            ("limits.head_timeout", limits.head_timeout),
        ] {
            if d.is_zero() {
                return Err(self.err(
                    span_of_key(self.text, key),
                    key,
                    "must be greater than zero",
                ));
            }
        }
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

        let agents = self.validate_agents(agents)?;

        Ok(Config {
            path: self.path.to_owned(),
            proxy: ProxyConfig {
                listen: proxy.listen,
                tls_listen: proxy.tls_listen.map(Spanned::into_inner),
            },
            admin: AdminConfig {
                listen: admin.listen,
            },
            dns: DnsConfig {
                nameservers,
                timeout: dns.timeout,
                hosts_file: dns.hosts_file,
            },
            egress: EgressConfig {
                ports,
                allow_cidrs,
                connect_timeout: egress.connect_timeout,
                idle_timeout: egress.idle_timeout,
                require_sni: egress.require_sni,
            },
            limits: Limits {
                head_size: limits.head_size.into_inner(),
                head_timeout: limits.head_timeout,
                max_connections: limits.max_connections.into_inner(),
                max_connections_per_agent: limits.max_connections_per_agent.into_inner(),
                shutdown_grace: limits.shutdown_grace,
            },
            log: LogConfig {
                path: log.path.map(|p| self.relative(p)),
                include_query: log.include_query,
            },
            tls,
            unidentified: UnidentifiedAction::Deny,
            agents,
        })
    }

    fn validate_agents(
        &self,
        raw: Vec<Spanned<RawAgent>>,
    ) -> Result<Vec<AgentConfig>, ConfigError> {
        let mut agents: Vec<AgentConfig> = Vec::with_capacity(raw.len());
        let mut names = std::collections::HashMap::new();
        let mut ranges: std::collections::HashMap<IpNet, usize> = std::collections::HashMap::new();
        let mut spiffe: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (ai, agent) in raw.into_iter().enumerate() {
            let span = agent.span();
            let a = agent.into_inner();
            let key = |k: &str| format!("agent[{ai}].{k}");
            let name = a.name.get_ref().clone();
            if !valid_agent_name(&name) {
                return Err(self.err(
                    a.name.span(),
                    key("name"),
                    format!("{name:?} is not a valid agent name: use [a-z0-9][a-z0-9-_.]*"),
                ));
            }
            if let Some(prev) = names.insert(name.clone(), ai) {
                return Err(self.err(
                    a.name.span(),
                    key("name"),
                    format!("{name:?} is already the name of agent[{prev}]"),
                ));
            }
            let mut sources = Vec::with_capacity(a.sources.len());
            for (i, s) in a.sources.iter().enumerate() {
                let net = parse_cidr(s.get_ref())
                    .map_err(|m| self.err(s.span(), key(&format!("sources[{i}]")), m))?;
                if let Some(prev) = ranges.insert(net, ai) {
                    if prev != ai {
                        return Err(self.err(
                            s.span(),
                            key(&format!("sources[{i}]")),
                            format!(
                                "{net} is also claimed by agent {:?}: a source range identifies one agent",
                                agents[prev].name
                            ),
                        ));
                    }
                }
                sources.push(net);
            }
            let mut token_sha256 = Vec::with_capacity(a.token_sha256.len());
            for (i, t) in a.token_sha256.iter().enumerate() {
                token_sha256.push(parse_sha256(t.get_ref()).ok_or_else(|| {
                    self.err(
                        t.span(),
                        key(&format!("token_sha256[{i}]")),
                        "must be 64 hex digits: the SHA-256 of the token, e.g. from `printf %s TOKEN | sha256sum`",
                    )
                })?);
            }
            let mut spiffe_ids = Vec::with_capacity(a.spiffe_ids.len());
            for (i, s) in a.spiffe_ids.iter().enumerate() {
                let id = s.get_ref();
                if !id.starts_with("spiffe://") || id.len() <= "spiffe://".len() {
                    return Err(self.err(
                        s.span(),
                        key(&format!("spiffe_ids[{i}]")),
                        format!("{id:?} is not a SPIFFE ID (spiffe://trust-domain/path)"),
                    ));
                }
                if let Some(prev) = spiffe.insert(id.clone(), ai) {
                    if prev != ai {
                        return Err(self.err(
                            s.span(),
                            key(&format!("spiffe_ids[{i}]")),
                            format!("{id:?} is also claimed by agent {:?}", agents[prev].name),
                        ));
                    }
                }
                spiffe_ids.push(id.clone());
            }
            if sources.is_empty() && token_sha256.is_empty() && spiffe_ids.is_empty() {
                return Err(self.err(
                    span,
                    key("sources"),
                    format!("agent {name:?} has no sources, token_sha256 or spiffe_ids: nothing could ever identify it"),
                ));
            }
            let allow = self.validate_rules(&a.allow, &key("allow"))?;
            let deny = self.validate_rules(&a.deny, &key("deny"))?;
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
            agents.push(AgentConfig {
                name,
                sources,
                token_sha256,
                spiffe_ids,
                allow,
                deny,
                mode,
                require_sni: a.require_sni,
            });
        }
        Ok(agents)
    }

    fn validate_rules(
        &self,
        raw: &[Spanned<RawRule>],
        key: &str,
    ) -> Result<Vec<RuleEntry>, ConfigError> {
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
}

mod place;
mod raw;
mod values;

#[cfg(test)]
mod tests;
