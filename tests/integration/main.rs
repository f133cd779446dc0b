//! The one integration-test binary: shared fixtures live in `support`, one module per area.

mod dns_stub;
mod support;
