//! The configuration file as serde sees it: one struct per TOML table,
//! `deny_unknown_fields` everywhere, defaults as documented in
//! docs/configuration.md. Semantic checks live in `config.rs`, which turns
//! these into a validated [`super::Config`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) proxy: RawProxy,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) dns: RawDns,
    #[serde(default)]
    pub(super) egress: RawEgress,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) log: RawLog,
    pub(super) tls: Option<RawTls>,
    #[serde(default)]
    pub(super) unidentified: RawUnidentified,
    #[serde(default, rename = "agent")]
    pub(super) agents: Vec<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    #[serde(default = "default_proxy_listen")]
    pub(super) listen: SocketAddr,
    pub(super) tls_listen: Option<Spanned<SocketAddr>>,
}

impl Default for RawProxy {
    fn default() -> Self {
        RawProxy {
            listen: default_proxy_listen(),
            tls_listen: None,
        }
    }
}

fn default_proxy_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3128))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    pub(super) listen: SocketAddr,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) nameservers: Option<Vec<Spanned<String>>>,
    #[serde(default = "default_dns_timeout", with = "humantime_serde")]
    pub(super) timeout: Duration,
    #[serde(default = "yes")]
    pub(super) hosts_file: bool,
}

impl Default for RawDns {
    fn default() -> Self {
        RawDns {
            nameservers: None,
            timeout: default_dns_timeout(),
            hosts_file: true,
        }
    }
}

fn default_dns_timeout() -> Duration {
    Duration::from_secs(2)
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgress {
    #[serde(default = "default_ports")]
    pub(super) ports: Vec<Spanned<u16>>,
    #[serde(default)]
    pub(super) allow_cidrs: Vec<Spanned<String>>,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub(super) connect_timeout: Duration,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub(super) idle_timeout: Duration,
    #[serde(default)]
    pub(super) require_sni: bool,
    #[serde(default)]
    pub(super) allow_ech: bool,
}

impl Default for RawEgress {
    fn default() -> Self {
        RawEgress {
            ports: default_ports(),
            allow_cidrs: Vec::new(),
            connect_timeout: default_connect_timeout(),
            idle_timeout: default_idle_timeout(),
            require_sni: false,
            allow_ech: false,
        }
    }
}

fn default_ports() -> Vec<Spanned<u16>> {
    vec![Spanned::new(0..0, 80), Spanned::new(0..0, 443)]
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_head_size")]
    pub(super) head_size: Spanned<usize>,
    #[serde(default = "default_head_timeout", with = "humantime_serde")]
    pub(super) head_timeout: Duration,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: Spanned<usize>,
    #[serde(default = "default_max_connections_per_agent")]
    pub(super) max_connections_per_agent: Spanned<usize>,
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub(super) shutdown_grace: Duration,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            head_size: default_head_size(),
            head_timeout: default_head_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_agent: default_max_connections_per_agent(),
            shutdown_grace: default_shutdown_grace(),
        }
    }
}

fn default_head_size() -> Spanned<usize> {
    Spanned::new(0..0, 16384)
}
fn default_head_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}
fn default_max_connections_per_agent() -> Spanned<usize> {
    Spanned::new(0..0, 1000)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) path: Option<PathBuf>,
    #[serde(default)]
    pub(super) include_query: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUnidentified {
    #[serde(default = "default_action")]
    pub(super) action: Spanned<String>,
}

impl Default for RawUnidentified {
    fn default() -> Self {
        RawUnidentified {
            action: default_action(),
        }
    }
}

fn default_action() -> Spanned<String> {
    Spanned::new(0..0, "deny".to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) sources: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) token_sha256: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) spiffe_ids: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) deny: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) mode: Option<Spanned<String>>,
    pub(super) require_sni: Option<bool>,
    pub(super) allow_ech: Option<bool>,
}

/// An allow/deny entry: a bare string or a table with provenance.
pub(super) struct RawRule {
    pub(super) rule: String,
    pub(super) owner: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) expires: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuleTable {
    pub(super) rule: String,
    pub(super) owner: Option<String>,
    pub(super) reason: Option<String>,
    pub(super) expires: Option<String>,
}

impl<'de> Deserialize<'de> for RawRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawRule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rule string or a table { rule, owner, reason, expires }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRule, E> {
                Ok(RawRule {
                    rule: v.to_owned(),
                    owner: None,
                    reason: None,
                    expires: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawRule, A::Error> {
                let t =
                    RawRuleTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRule {
                    rule: t.rule,
                    owner: t.owner,
                    reason: t.reason,
                    expires: t.expires,
                })
            }
        }
        d.deserialize_any(V)
    }
}
