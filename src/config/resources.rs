//! Files a configuration points at: STARTTLS certificates and AUTH
//! password files. Loaded with the config (start-up or reload, main
//! thread), so a bad file is a config error, never a runtime surprise.
//! Also builds the outbound TLS client config (`client_tls`). May call:
//! nothing in the crate. Must never: accept a password file line it cannot
//! read or a hash other than SHA512-CRYPT/SHA256-CRYPT (that is an error).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A ready rustls server configuration for STARTTLS.
#[derive(Clone)]
pub struct TlsMaterial {
    /// Shared, immutable rustls config.
    pub server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsMaterial")
    }
}

impl TlsMaterial {
    /// Reads a PEM certificate chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<TlsMaterial, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad certificate PEM in {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("no certificate found in {}", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key do not fit together: {e}"))?;
        Ok(TlsMaterial {
            server: Arc::new(server),
        })
    }
}

/// AUTH users and their password hashes (SHA512-CRYPT or SHA256-CRYPT).
#[derive(Clone, Default)]
pub struct Credentials {
    users: HashMap<String, String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({} users)", self.users.len())
    }
}

const DOVECOT_PREFIXES: [&str; 2] = ["{SHA512-CRYPT}", "{SHA256-CRYPT}"];

impl Credentials {
    /// Reads `user:hash` lines; `#` starts a comment line.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Credentials::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {}: expected user:hash", n + 1));
            };
            let hash = DOVECOT_PREFIXES
                .iter()
                .fold(hash, |h, p| h.strip_prefix(p).unwrap_or(h));
            if !(hash.starts_with("$6$") || hash.starts_with("$5$")) {
                return Err(format!("line {}: the hash for {user:?} is not SHA512-CRYPT ($6$) or SHA256-CRYPT ($5$)", n + 1));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Credentials { users })
    }

    /// Checks a user's password. Costs the hash's rounds of CPU.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(h) if h.starts_with("$6$") => sha_crypt::sha512_check(password, h).is_ok(),
            Some(h) => sha_crypt::sha256_check(password, h).is_ok(),
            None => false,
        }
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file named no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_sha512_crypt() {
        let params = sha_crypt::Sha512Params::new(1000).expect("rounds");
        let hash = sha_crypt::sha512_simple("s3cret", &params).expect("hash");
        let c = Credentials::parse(&format!(
            "# users\nalice:{hash}\nbob:{{SHA512-CRYPT}}{hash}\n"
        ))
        .expect("parse");
        assert!(c.verify("alice", "s3cret"));
        assert!(c.verify("bob", "s3cret"));
        assert!(!c.verify("alice", "wrong"));
        assert!(!c.verify("carol", "s3cret"));
    }

    #[test]
    fn rejects_cleartext() {
        assert!(Credentials::parse("alice:plain")
            .unwrap_err()
            .contains("line 1"));
        assert!(Credentials::parse("garbage").is_err());
    }
}

/// The system's trusted roots, read once per process.
fn system_roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                log::warn!("no system CA certificates found: tls_verify = \"ca\"/\"host\" will trust only tls_ca");
            }
            Arc::new(store)
        })
        .clone()
}

/// A rustls client config for outbound STARTTLS. `verify` is Momentum's
/// `tls_verify`: "no" (encrypt only), "ca" (chain to a trusted root, any
/// name) or "host" (chain and name).
pub fn client_tls(verify: &str, ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if verify == "no" {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::AnyCert(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = (*system_roots()).clone();
        if let Some(ca) = ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read {}: {e}", ca.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("bad PEM in {}: {e}", ca.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("no usable CA certificate in {}", ca.display()));
            }
        }
        let webpki =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("TLS verifier: {e}"))?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = if verify == "ca" {
            Arc::new(verify::AnyName(webpki))
        } else {
            webpki
        };
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

mod verify {
    //! Certificate verifiers for `tls_verify = "no"` and `"ca"`.

    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::client::WebPkiServerVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// Accepts any certificate (opportunistic encryption), still checking
    /// the handshake signatures.
    #[derive(Debug)]
    pub struct AnyCert(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// Requires a chain to a trusted root but accepts any name on it.
    #[derive(Debug)]
    pub struct AnyName(pub Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for AnyName {
        fn verify_server_cert(
            &self,
            e: &CertificateDer<'_>,
            i: &[CertificateDer<'_>],
            n: &ServerName<'_>,
            o: &[u8],
            t: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            match self.0.verify_server_cert(e, i, n, o, t) {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls12_signature(m, c, d)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.0.verify_tls13_signature(m, c, d)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }
}
