//! The one integration-test binary: shared fixtures live in `support`, one
//! module per area. Everything runs on loopback: the DNS stub, origins and
//! sluice itself (in-process, or the built binary for the CLI tests).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "fixtures and helpers are test steps: a failed step is a failed test"
)]

mod cli;
mod dns_stub;
mod forward;
mod identity;
mod lifecycle;
mod refusals;
mod review;
mod sni;
mod support;
mod tls;
mod tunnel;
