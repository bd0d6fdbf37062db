//! Connections as both tools use them: plain TCP until STARTTLS, then
//! rustls (client or server side); the TLS configurations (a self-signed
//! certificate for the sink, a client that accepts any certificate, as a
//! benchmark measures throughput, not trust); and timeouts.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use impulse::conn::{with_timeout, Conn};

/// The name the load generator expects on the sink's certificate.
pub const SINK_TLS_NAME: &str = "impulse-sink.invalid";

/// A server config with a fresh self-signed certificate.
pub fn self_signed_server() -> Result<Arc<rustls::ServerConfig>, String> {
    let key = rcgen::generate_simple_self_signed(vec![SINK_TLS_NAME.to_string()])
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
    impulse::config::client_tls("no", None)
}
