//! Fixtures for the integration tests: loopback servers the tests script and
//! inspect, and sluice itself in-process.
#![expect(
    dead_code,
    reason = "each test module uses a different subset of the fixtures"
)]

pub mod auth;
pub mod dns;
pub mod net;
pub mod pki;
pub mod proxy;
pub mod tls_origin;
