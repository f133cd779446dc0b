//! Proxy credentials as a client and an operator write them: the SHA-256
//! a config lists in `token_sha256`, and the `Proxy-Authorization: Basic`
//! value an agent sends.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of `token`, as `printf %s TOKEN | sha256sum` prints it.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `base64(user:password)`, the credentials part of a Basic header.
pub fn basic_credentials(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// A complete `Proxy-Authorization` header line, CRLF included.
pub fn proxy_authorization(user: &str, password: &str) -> String {
    format!(
        "Proxy-Authorization: Basic {}\r\n",
        basic_credentials(user, password)
    )
}

/// Base64 of arbitrary text (for deliberately malformed credentials).
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}
