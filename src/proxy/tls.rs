//! The TLS proxy listener (`proxy.tls_listen`): the same proxy protocol as
//! the plain listener, inside TLS with a client certificate that is
//! required and verified against `tls.client_ca` (SPEC "Identity", 1).
//!
//! Owns: loading the TLS material named in `[tls]` into a rustls
//! [`ServerConfig`] (at start, on every reload, and for `sluice check`), the
//! accept loop, the handshake and its failures (counted by kind, one
//! access-log line each), and reading the SPIFFE ID off the verified leaf
//! certificate. Not here: what the SPIFFE ID means (identity.rs) and
//! everything after the handshake (handler.rs, which is generic over the
//! stream).
//!
//! SPIFFE ID: the first `spiffe://` URI SAN of the leaf. A verified
//! certificate without one is still a credential: it is presented to
//! identity.rs as an ID no agent can have (config requires `spiffe://…`),
//! so the request is unidentified rather than falling back to the source
//! address.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::version::{TLS12, TLS13};
use rustls::{CertificateError, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Duration, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, TlsConfig};
use crate::shutdown::Shutdown;
use crate::telemetry::access_log::{Entry, src_text};

use super::{ClientIo, Slot, State, Tracker, handler};

/// TLS client connections relay through the generic (buffered) path.
impl ClientIo for Box<TlsStream<TcpStream>> {}

/// Reads the certificate chain, key and client CA named in `tls` and builds
/// the server side: TLS 1.3 and 1.2 (ring), client certificates required,
/// ALPN `http/1.1`. Every error names the file at fault.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = read_chain(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let roots = read_roots(&tls.client_ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| invalid(&tls.client_ca, format!("unusable as a client CA: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| invalid(&tls.cert, format!("no usable TLS version: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => "does not match the certificate".to_owned(),
                e => format!("unusable with the certificate: {e}"),
            };
            invalid(&tls.key, format!("{why} in {}", tls.cert.display()))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What `sluice check` says about `[tls]`: the files that exist are
/// validated exactly as `run` would (an error if unusable); the ones that do
/// not exist are returned as warnings, because a config is often checked
/// where the certificates (mounted secrets) are not. `run` fails on them.
pub fn check(tls: &TlsConfig) -> Result<Vec<String>, ConfigError> {
    let files = [
        ("tls.cert", &tls.cert),
        ("tls.key", &tls.key),
        ("tls.client_ca", &tls.client_ca),
    ];
    let missing: Vec<String> = files
        .iter()
        .filter(|(_, p)| !p.exists())
        .map(|(key, p)| format!("{key}: {} does not exist here; `run` needs it", p.display()))
        .collect();
    if missing.is_empty() {
        server_config(tls)?;
        return Ok(missing);
    }
    if tls.cert.exists() {
        read_chain(&tls.cert)?;
    }
    if tls.key.exists() {
        read_key(&tls.key)?;
    }
    if tls.client_ca.exists() {
        read_roots(&tls.client_ca)?;
    }
    Ok(missing)
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: String) -> ConfigError {
    ConfigError::Tls {
        path: path.to_owned(),
        message,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| invalid(path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no PEM CERTIFICATE in it".to_owned()));
    }
    Ok(certs)
}

/// The server certificate chain, leaf first; the leaf must parse as X.509.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let chain = read_certs(path)?;
    if let Some(leaf) = chain.first() {
        webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| invalid(path, format!("not a usable certificate: {e}")))?;
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(path, "no PEM private key in it".to_owned()),
        e => invalid(path, format!("not a valid PEM private key: {e}")),
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in read_certs(path)?.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| invalid(path, format!("certificate #{} is unusable: {e}", i + 1)))?;
    }
    Ok(roots)
}

/// Why a handshake failed: the `kind` label of
/// `sluice_tls_handshake_failures_total` and the log's `tls_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client sent no certificate.
    NoCertificate,
    /// The client certificate has expired.
    Expired,
    /// The client certificate is not issued by `tls.client_ca`.
    UnknownCa,
    /// Any other certificate problem: not yet valid, bad signature, wrong
    /// key usage, undecodable.
    BadCertificate,
    /// Not TLS, no common version or cipher, an alert from the client (it
    /// rejected our certificate), or the connection broke mid-handshake.
    Protocol,
    /// No handshake within `limits.head_timeout`.
    Timeout,
}

impl Failure {
    /// Every kind, for pre-creating the series.
    pub const ALL: [Failure; 6] = [
        Failure::NoCertificate,
        Failure::Expired,
        Failure::UnknownCa,
        Failure::BadCertificate,
        Failure::Protocol,
        Failure::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoCertificate => "no_certificate",
            Failure::Expired => "expired",
            Failure::UnknownCa => "unknown_ca",
            Failure::BadCertificate => "bad_certificate",
            Failure::Protocol => "protocol",
            Failure::Timeout => "timeout",
        }
    }

    /// Classifies a failed accept; tokio-rustls carries the rustls error
    /// inside the io::Error.
    fn of(e: &io::Error) -> Failure {
        let tls = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::NoCertificatesPresented) => Failure::NoCertificate,
            Some(rustls::Error::InvalidCertificate(c)) => match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    Failure::Expired
                }
                CertificateError::UnknownIssuer => Failure::UnknownCa,
                _ => Failure::BadCertificate,
            },
            _ => Failure::Protocol,
        }
    }
}

/// Accepts TLS connections on `listener` until sluice drains: like the
/// plain listener (connections count against `limits.max_connections`, and
/// are cut when sluice is killed), with a handshake first.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tracker: Arc<Tracker>,
    shutdown: Arc<Shutdown>,
) {
    for kind in Failure::ALL {
        state
            .metrics
            .tls_handshake_failures
            .with_label_values(&[kind.as_str()]);
    }
    let listener = super::Listener::new(listener);
    let mut draining = std::pin::pin!(shutdown.draining());
    while let Some((stream, peer)) = listener.accept(draining.as_mut()).await {
        let max = state.policy().config.limits.max_connections;
        let slot = tracker.acquire(max, &state.metrics);
        let (state, shutdown) = (state.clone(), shutdown.clone());
        // The connection's future is made inside the task: made outside and
        // moved in, it would occupy two slots of the task (measured: 27 KiB
        // per connection instead of 13).
        tokio::spawn(async move {
            let conn = std::pin::pin!(connection(state, stream, peer, slot, shutdown.clone()));
            shutdown.guard(conn).await;
        });
    }
}

/// One TLS connection: handshake, then the proxy protocol; or a 503 (over
/// TLS, so the client can read it) when `slot` is `None`.
async fn connection(
    state: Arc<State>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Option<Slot>,
    shutdown: Arc<Shutdown>,
) {
    // Installed before this listener starts and never removed; read per
    // connection so that a reload applies to the next handshake.
    let Some(config) = state.tls() else {
        return;
    };
    let deadline = state.policy().config.limits.head_timeout;
    let started = Instant::now();
    let (stream, spiffe) = match handshake(config, stream, deadline).await {
        Handshake::Done(stream, spiffe) => (stream, spiffe),
        Handshake::Closed => return,
        Handshake::Failed(kind) => return refuse(&state, peer, started, kind).await,
    };
    match slot {
        Some(slot) => {
            handler::Conn::new(state, stream, peer, Some(spiffe), shutdown)
                .serve()
                .await;
            drop(slot);
        }
        None => super::over_limit(state, stream, peer, Some(&spiffe)).await,
    }
}

enum Handshake {
    /// Verified; the SPIFFE ID to identify by (empty when the certificate has none).
    /// Boxed: the stream (rustls state, ~1.3 KiB) is then one pointer in
    /// every future that carries the connection, not a copy in each.
    Done(Box<TlsStream<TcpStream>>, String),
    /// Closed (or reset) before sending a byte: a port probe, not a failure.
    Closed,
    Failed(Failure),
}

/// The handshake, bounded by `deadline` from the first moment.
async fn handshake(config: Arc<ServerConfig>, stream: TcpStream, deadline: Duration) -> Handshake {
    let attempt = async {
        let mut probe = [0u8; 1];
        if !matches!(stream.peek(&mut probe).await, Ok(n) if n > 0) {
            return Handshake::Closed;
        }
        match TlsAcceptor::from(config).accept(stream).await {
            Ok(stream) => {
                let spiffe = spiffe_id(stream.get_ref().1.peer_certificates());
                Handshake::Done(Box::new(stream), spiffe.unwrap_or_default())
            }
            Err(e) => Handshake::Failed(Failure::of(&e)),
        }
    };
    timeout(deadline, attempt)
        .await
        .unwrap_or(Handshake::Failed(Failure::Timeout))
}

/// The first `spiffe://` URI SAN of the leaf (the first certificate of the
/// verified chain).
pub fn spiffe_id(chain: Option<&[CertificateDer<'_>]>) -> Option<String> {
    let leaf = chain?.first()?;
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    cert.valid_uri_names()
        .find(|uri| uri.starts_with("spiffe://"))
        .map(str::to_owned)
}

/// Counts and logs a failed handshake. No agent is named: on this listener
/// only a verified certificate identifies, and there is none.
async fn refuse(state: &State, peer: SocketAddr, started: Instant, kind: Failure) {
    state
        .metrics
        .tls_handshake_failures
        .with_label_values(&[kind.as_str()])
        .inc();
    tracing::debug!(%peer, kind = kind.as_str(), "TLS handshake failed");
    let mut log = Entry::started_at(&state.log, src_text(peer), started);
    log.record.reason = Some("tls_handshake");
    log.record.tls_error = Some(kind.as_str());
    log.finish().await;
}
