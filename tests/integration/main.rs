//! The one integration-test binary: shared fixtures live in `support`, one
//! module per area. Everything runs on loopback: the DNS stub, origins and
//! sluice itself (in-process, or the built binary for the CLI tests).

mod dns_stub;
mod support;
mod tls;
mod tunnel;
