//! Identity: which agent is calling. SPEC "Identity", in its order: a client
//! certificate's SPIFFE ID, then `Proxy-Authorization: Basic` credentials,
//! then the TCP peer address (most specific CIDR wins).
//!
//! Nothing else counts: headers such as X-Forwarded-For are never read, and
//! credentials that are present but wrong never fall back to the source
//! address (an attacker on an agent's subnet must not be able to turn a bad
//! token into that agent's identity). Not here: what the agent may reach
//! (policy/).

use std::net::IpAddr;

use base64::Engine as _;
use ipnet::IpNet;
use rustc_hash::FxHashMap as HashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::policy::AgentId;

/// How the agent was identified: the log's `identity` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Spiffe,
    Token,
    Source,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Spiffe => "spiffe",
            Method::Token => "token",
            Method::Source => "source",
        }
    }
}

/// A request attributed to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identified {
    pub agent: AgentId,
    pub method: Method,
}

/// Why no agent could be attributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Nothing identifies the caller.
    #[error("unidentified")]
    Unidentified,
    /// Credentials were presented and are wrong (or malformed).
    #[error("bad credentials")]
    BadCredentials,
}

impl IdentityError {
    /// The log `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityError::Unidentified => "unidentified",
            IdentityError::BadCredentials => "bad_credentials",
        }
    }
}

/// What the connection and request offer as proof of identity.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub peer: IpAddr,
    /// The URI SAN of a verified client certificate, if one was presented.
    pub spiffe_id: Option<&'a str>,
    /// The raw `Proxy-Authorization` header value, if present.
    pub proxy_authorization: Option<&'a [u8]>,
}

/// Identity indexes compiled from the agents' `sources`, `token_sha256` and
/// `spiffe_ids`. Fx-hashed, as the rule index is (see
/// [`crate::policy::rules::RuleIndex`]): built from the config only.
#[derive(Debug, Default)]
pub struct Identities {
    /// Prefix length (longest first) → network → agent.
    v4: Vec<(u8, HashMap<u32, AgentId>)>,
    v6: Vec<(u8, HashMap<u128, AgentId>)>,
    spiffe: HashMap<Box<str>, AgentId>,
    /// Agent name → (agent, accepted token digests).
    tokens: HashMap<Box<str>, (AgentId, Vec<[u8; 32]>)>,
}

impl Identities {
    pub fn new(config: &Config) -> Identities {
        let mut ix = Identities::default();
        for (id, a) in config.agents.iter().enumerate() {
            for net in &a.sources {
                match net {
                    IpNet::V4(n) => insert(&mut ix.v4, n.prefix_len(), u32::from(n.network()), id),
                    IpNet::V6(n) => insert(&mut ix.v6, n.prefix_len(), u128::from(n.network()), id),
                }
            }
            for s in &a.spiffe_ids {
                ix.spiffe.insert(s.as_str().into(), id);
            }
            if !a.token_sha256.is_empty() {
                ix.tokens
                    .insert(a.name.as_str().into(), (id, a.token_sha256.clone()));
            }
        }
        ix.v4.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        ix.v6.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        ix
    }

    /// Whether any agent authenticates by token.
    pub fn tokens_in_use(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Attributes a request to an agent, in SPEC order.
    pub fn identify(&self, ev: &Evidence<'_>) -> Result<Identified, IdentityError> {
        if let Some(id) = ev.spiffe_id {
            return match self.spiffe.get(id) {
                Some(&agent) => Ok(Identified {
                    agent,
                    method: Method::Spiffe,
                }),
                None => Err(IdentityError::Unidentified),
            };
        }
        if let Some(header) = ev.proxy_authorization {
            return self.by_token(header).map(|agent| Identified {
                agent,
                method: Method::Token,
            });
        }
        self.by_source(ev.peer)
            .map(|agent| Identified {
                agent,
                method: Method::Source,
            })
            .ok_or(IdentityError::Unidentified)
    }

    /// The agent whose most specific source range holds `ip`.
    pub fn by_source(&self, ip: IpAddr) -> Option<AgentId> {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4.iter().find_map(|(len, map)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    map.get(&(bits & mask)).copied()
                })
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                self.v6.iter().find_map(|(len, map)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    map.get(&(bits & mask)).copied()
                })
            }
        }
    }

    fn by_token(&self, header: &[u8]) -> Result<AgentId, IdentityError> {
        let basic = parse_basic(header).ok_or(IdentityError::BadCredentials)?;
        let digest: [u8; 32] = Sha256::digest(basic.token().as_bytes()).into();
        let (agent, accepted) = self
            .tokens
            .get(basic.name())
            .ok_or(IdentityError::BadCredentials)?;
        // Compare against every accepted digest without stopping early, so the
        // time taken says nothing about which one (if any) matched.
        let mut ok = subtle::Choice::from(0);
        for d in accepted {
            ok |= d.ct_eq(&digest);
        }
        if bool::from(ok) {
            Ok(*agent)
        } else {
            Err(IdentityError::BadCredentials)
        }
    }
}

fn insert<K: std::hash::Hash + Eq>(
    list: &mut Vec<(u8, HashMap<K, AgentId>)>,
    len: u8,
    key: K,
    id: AgentId,
) {
    match list.iter_mut().find(|(l, _)| *l == len) {
        Some((_, map)) => {
            map.entry(key).or_insert(id);
        }
        None => list.push((len, HashMap::from_iter([(key, id)]))),
    }
}

/// `Basic base64(name:token)`, decoded. The scheme is case-insensitive
/// (RFC 9110 §11.1); anything else is malformed. The name and token are
/// read from the one buffer base64 decoded into: no copies of the token.
fn parse_basic(header: &[u8]) -> Option<Basic> {
    let text = header.trim_ascii();
    let space = text.iter().position(|&b| b == b' ')?;
    let (scheme, creds) = text.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(creds.trim_ascii())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let colon = text.bytes().position(|b| b == b':')?;
    Some(Basic { text, colon })
}

/// Decoded Basic credentials: `name:token`, valid UTF-8.
struct Basic {
    text: String,
    colon: usize,
}

impl Basic {
    fn name(&self) -> &str {
        &self.text[..self.colon]
    }

    fn token(&self) -> &str {
        &self.text[self.colon + 1..]
    }
}

#[cfg(test)]
mod tests;
