//! Fixtures for the integration tests: loopback servers the tests script and inspect.

pub mod dns;
