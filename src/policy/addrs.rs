//! Forbidden addresses.
