//! Certificates made at test time (rcgen): CAs, a server certificate for
//! 127.0.0.1 / localhost, agent certificates with SPIFFE URI SANs (valid,
//! expired, foreign), written as PEM files into a tempdir; and a rustls
//! client that speaks to sluice's TLS listener. No key is ever checked in.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A certificate authority that signs leaves.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: Leaf,
}

/// A certificate and its private key, PEM and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let leaf = Leaf::new(&cert, &key);
        Ca {
            issuer: Issuer::new(params, key),
            cert: leaf,
        }
    }

    /// The proxy's server certificate: 127.0.0.1 and localhost.
    pub fn server(&self) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "sluice");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// An agent's client certificate with these URI SANs, valid for ages.
    pub fn agent(&self, uris: &[&str]) -> Leaf {
        self.issue(agent_params(uris))
    }

    /// An agent certificate that expired in 2021.
    pub fn expired_agent(&self, uri: &str) -> Leaf {
        let mut params = agent_params(&[uri]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf::new(&cert, &key)
    }
}

fn agent_params(uris: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "agent");
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
        .collect();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

impl Leaf {
    fn new(cert: &rcgen::Certificate, key: &KeyPair) -> Leaf {
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// Writes `<name>.pem` and `<name>-key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::try_from(self.key_der.clone()).unwrap()
    }
}

/// The files of a TLS listener set-up: a CA that signs agents (the
/// `client_ca`), the server certificate (signed by the same CA, so one
/// `--proxy-cacert` serves both ways) and a tempdir that holds them.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Leaf,
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("agents CA");
        let server = ca.server();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, &ca.cert.cert_pem).unwrap();
        let (cert_path, key_path) = server.write(dir.path(), "server");
        Pki {
            dir,
            ca,
            server,
            ca_path,
            cert_path,
            key_path,
        }
    }

    /// The `[tls]` section and `tls_listen` for the proxy fixture.
    pub fn toml(&self) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            self.cert_path.display(),
            self.key_path.display(),
            self.ca_path.display()
        )
    }

    /// Writes an agent's files into the tempdir.
    pub fn write(&self, leaf: &Leaf, name: &str) -> (PathBuf, PathBuf) {
        leaf.write(self.dir.path(), name)
    }
}

/// Opens TLS to `addr` trusting `ca` for the server, presenting `client` if
/// given, offering ALPN h2 and http/1.1. With TLS 1.3 a client certificate the server rejects may only show
/// on the first read, so `Ok` here does not mean the server accepted it.
pub async fn connect(
    addr: SocketAddr,
    ca: &Ca,
    client: Option<&Leaf>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.der.clone()], leaf.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::from(addr.ip());
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}
