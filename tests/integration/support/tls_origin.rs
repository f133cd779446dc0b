//! A TLS origin on 127.0.0.1:0 with a certificate made at test time, and a
//! matching client config: for checking what passes through a CONNECT
//! tunnel (SNI gate) end to end. Counts the bytes it received.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub struct TlsOrigin {
    pub addr: SocketAddr,
    cert: CertificateDer<'static>,
    /// Raw bytes received on any connection (0: nothing ever reached it).
    received: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsOrigin {
    /// Serves `names` (certificate SANs); answers each request line with
    /// "hello over tls" and closes.
    pub async fn start(names: &[&str]) -> TlsOrigin {
        TlsOrigin::start_with(names, provider()).await
    }

    /// Like `start`, but the server takes only X25519 key shares: a client
    /// that leads with another group (see `retry_config`) gets a
    /// HelloRetryRequest and must send a second ClientHello.
    pub async fn start_retrying(names: &[&str]) -> TlsOrigin {
        let mut x25519_only = rustls::crypto::ring::default_provider();
        x25519_only.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
        TlsOrigin::start_with(names, Arc::new(x25519_only)).await
    }

    async fn start_with(
        names: &[&str],
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> TlsOrigin {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (r, h) = (received.clone(), handshakes.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (r, h) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let counted = Counting {
                        inner: tcp,
                        count: r,
                    };
                    let Ok(mut tls) = acceptor.accept(counted).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 1024];
                    if tls.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = tls.write_all(b"hello over tls").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        TlsOrigin {
            addr,
            cert,
            received,
            handshakes,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// A client that trusts this origin's certificate.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config())
    }

    /// The config behind `connector`, for sans-IO clients.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        self.client_config(provider())
    }

    /// A client config that trusts this origin and offers a P-256 key share
    /// first (X25519 second): against `start_retrying`, every handshake
    /// goes through a HelloRetryRequest.
    pub fn retry_config(&self) -> Arc<rustls::ClientConfig> {
        use rustls::crypto::ring::kx_group::{SECP256R1, X25519};
        let mut p256_first = rustls::crypto::ring::default_provider();
        p256_first.kx_groups = vec![SECP256R1, X25519];
        self.client_config(Arc::new(p256_first))
    }

    fn client_config(
        &self,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts bytes read from the inner stream.
struct Counting<S> {
    inner: S,
    count: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.count.fetch_add(n, Ordering::SeqCst);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes at most one byte per call: a peer that splits everything, e.g. a
/// ClientHello across as many TCP segments as it has bytes.
pub struct Trickle<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        match Pin::new(&mut self.0).poll_write(cx, one) {
            // Flush each byte so it leaves as its own segment (TCP_NODELAY).
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            other => other,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
