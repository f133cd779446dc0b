//! Policy: what an agent may reach.
pub mod addrs;
