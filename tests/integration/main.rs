//! The one integration-test binary: shared fixtures live in `support`, one
//! module per area. Everything runs on loopback: the DNS stub, origins and
//! sluice itself (in-process, or the built binary for the CLI tests).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code, fixtures included: a failed unwrap is a failed test, with its message"
)]

mod cli;
mod dns_stub;
mod forward;
mod identity;
mod refusals;
mod support;
mod tunnel;
