//! Connections as both tools use them: plain TCP until STARTTLS, then
//! rustls (client or server side); the TLS configurations (a self-signed
//! certificate for the sink, a client that accepts any certificate, as a
//! benchmark measures throughput, not trust); and timeouts.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use futures_rustls::{TlsAcceptor, TlsConnector};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Plain or TLS; `Gone` only while a handshake owns the stream.
pub enum Conn {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// Client side after STARTTLS.
    Client(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// Server side after STARTTLS.
    Server(Box<futures_rustls::server::TlsStream<TcpStream>>),
    /// A handshake failed; nothing left to talk to.
    Gone,
}

impl Conn {
    /// Reads what is available; 0 = closed by the peer.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf).await,
            Conn::Client(s) => s.read(buf).await,
            Conn::Server(s) => s.read(buf).await,
            Conn::Gone => Ok(0),
        }
    }

    /// Writes all of `data` and flushes.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Client(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Server(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Client side of STARTTLS.
    pub async fn connect_tls(&mut self, config: Arc<rustls::ClientConfig>) -> io::Result<()> {
        let Conn::Plain(stream) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain",
            ));
        };
        let name = ServerName::try_from("impulse-sink.invalid")
            .map_err(|e| io::Error::other(e.to_string()))?;
        let tls = TlsConnector::from(config).connect(name, stream).await?;
        *self = Conn::Client(Box::new(tls));
        Ok(())
    }

    /// Server side of STARTTLS.
    pub async fn accept_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let Conn::Plain(stream) = std::mem::replace(self, Conn::Gone) else {
            return Err(io::Error::other(
                "STARTTLS on a connection that is not plain",
            ));
        };
        let tls = TlsAcceptor::from(config).accept(stream).await?;
        *self = Conn::Server(Box::new(tls));
        Ok(())
    }

    /// Closes (TLS close_notify where it applies); errors are moot here.
    pub async fn close(&mut self) {
        let _ = match self {
            Conn::Plain(s) => s.close().await,
            Conn::Client(s) => s.close().await,
            Conn::Server(s) => s.close().await,
            Conn::Gone => Ok(()),
        };
    }
}

/// Runs `fut` for at most `limit`; `None` on timeout.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// A server config with a fresh self-signed certificate.
pub fn self_signed_server() -> Result<Arc<rustls::ServerConfig>, String> {
    let key = rcgen::generate_simple_self_signed(vec!["impulse-sink.invalid".to_string()])
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let pkey = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert], pkey)
        .map(Arc::new)
        .map_err(|e| format!("TLS server config: {e}"))
}

/// A client config that accepts any server certificate (benchmark only).
pub fn insecure_client() -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCert(provider.clone()));
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// Accepts every certificate but still checks handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
