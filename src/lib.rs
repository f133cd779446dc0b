//! sluice: a DNS-aware egress gateway for AI agents.
//!
//! # Layout
//!
//! A request flows through the modules in this order:
//!
//! - [`proxy`]: accept a client connection, read the request head
//!   (`proxy::head`), understand its target (`proxy::target`)
//! - [`identity`]: work out which agent is calling (certificate, token, source)
//! - [`host`]: normalise the destination host
//! - [`policy`]: decide whether the agent may reach it (`policy::rules`), and
//!   which resolved addresses may be dialled (`policy::addrs`)
//! - [`dns`]: resolve the name with sluice's own resolver
//! - [`proxy`] again: connect to a vetted address (`proxy::connect`) and relay
//!   (`proxy::relay` for CONNECT, `proxy::forward` for absolute-form HTTP)
//! - [`telemetry`]: one access-log line and the metrics
//!
//! The control plane around it: [`config`] (parse and validate the TOML),
//! [`app`] (wire everything up for `sluice run`), [`reload`] (SIGHUP and file
//! changes), [`shutdown`] (drain and kill), [`admin`] (metrics and health), [`explain`] (`sluice explain`
//! and `check`'s summary), [`cli`] and [`command`] (the binary's commands).

pub mod admin;
pub mod app;
pub mod cli;
pub mod command;
pub mod config;
pub mod dns;
pub mod explain;
pub mod host;
pub mod identity;
#[cfg(test)]
mod mangle;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod review;
pub mod shutdown;
pub mod telemetry;
