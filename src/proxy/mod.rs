//! The proxy listener.
pub mod sni;
