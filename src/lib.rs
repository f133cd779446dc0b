//! sluice: a DNS-aware egress gateway for AI agents.
//!
//! # Layout
//!
//! A request flows through the modules in this order:
//!
//! - [`proxy`]: accept a client connection, read the request head
//! - [`identity`]: work out which agent is calling (certificate, token, source)
//! - [`host`]: normalise the destination host
//! - [`policy`]: decide whether the agent may reach it, and which resolved
//!   addresses may be dialled
//! - [`dns`]: resolve the name with sluice's own resolver
//! - [`proxy`] again: connect to a vetted address and relay
//! - [`telemetry`]: one access-log line and the metrics
//!
//! The control plane around it: [`config`] (parse and validate the TOML),
//! [`app`] (wire everything up for `sluice run`), [`admin`] (metrics and
//! health), [`explain`] (`sluice explain`).

pub mod host;
pub mod policy;
pub mod proxy;
pub mod review;
