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

use place::key_at;
use raw::RawConfig;
pub use values::{parse_cidr, parse_expiry};

use crate::policy::rules::RuleSpec;

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
    /// Let through ClientHellos that offer Encrypted Client Hello, whose
    /// real server name the SNI check cannot see. Default false.
    pub allow_ech: bool,
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
    /// Overrides `egress.allow_ech` for this agent.
    pub allow_ech: Option<bool>,
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
}

mod place;
mod raw;
mod validate;
mod values;

#[cfg(test)]
mod tests;
