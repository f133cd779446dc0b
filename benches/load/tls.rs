//! sluice's TLS listener under the benchmark: certificates made here (rcgen:
//! a CA, a server certificate for 127.0.0.1, an agent certificate whose URI
//! SAN is the bench agent's SPIFFE ID) and a client that opens a tunnel
//! through the listener with one exchange in it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;

/// The bench agent's identity on the TLS listener.
pub const SPIFFE_ID: &str = "spiffe://bench.local/agent";

/// The PEM files sluice's `[tls]` names, and the client side's credentials.
pub struct Pki {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    connector: TlsConnector,
}

impl Pki {
    /// Makes the certificates and writes sluice's files into `dir`.
    pub fn new(dir: &Path) -> Result<Pki, Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_der = ca_cert.der().clone();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;

        let agent_key = KeyPair::generate()?;
        let mut agent = CertificateParams::default();
        agent.subject_alt_names = vec![SanType::URI(Ia5String::try_from(SPIFFE_ID)?)];
        agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let agent_cert = agent.signed_by(&agent_key, &issuer)?;

        let pki = Pki {
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            client_ca: dir.join("ca.pem"),
            connector: connector(ca_der, &agent_cert, &agent_key)?,
        };
        std::fs::write(&pki.cert, server_cert.pem())?;
        std::fs::write(&pki.key, server_key.serialize_pem())?;
        std::fs::write(&pki.client_ca, ca_cert.pem())?;
        Ok(pki)
    }

    /// A tunnel through the TLS listener at `proxy` to `authority`, with one
    /// exchange of `request` done in it (the response has a Content-Length).
    pub async fn tunnel(
        &self,
        proxy: SocketAddr,
        authority: &str,
        request: &[u8],
    ) -> Result<TlsStream<TcpStream>, Error> {
        let tcp = TcpStream::connect(proxy).await?;
        tcp.set_nodelay(true)?;
        let mut s = self
            .connector
            .connect(ServerName::from(proxy.ip()), tcp)
            .await?;
        s.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
        )
        .await?;
        let head = read_head(&mut s).await?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("CONNECT over TLS refused: {head}").into());
        }
        s.write_all(request).await?;
        let head = read_head(&mut s).await?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .ok_or("response without Content-Length")?;
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).await?;
        Ok(s)
    }
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("cert", &self.cert)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

/// Reads up to the end of a head, byte by byte (nothing past it is taken).
async fn read_head(s: &mut TlsStream<TcpStream>) -> Result<String, Error> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = s.read_u8().await?;
        head.push(b);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn connector(
    ca: CertificateDer<'static>,
    agent: &rcgen::Certificate,
    agent_key: &KeyPair,
) -> Result<TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let key = PrivateKeyDer::try_from(agent_key.serialize_der())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![agent.der().clone()], key)?;
    Ok(TlsConnector::from(Arc::new(config)))
}
