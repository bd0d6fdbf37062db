//! Files a configuration points at: STARTTLS certificates and AUTH
//! password files. Loaded with the config (start-up or reload, main
//! thread), so a bad file is a config error, never a runtime surprise.

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
