//! The control plane's own certificate authority.
//!
//! Created at first start in the data directory (`ca.key`, 0600, and
//! `ca.crt`) and reused afterwards. It signs agents' client certificates
//! (short-lived, subject CN = agent id) and the tunnel's server certificate,
//! which names [`TUNNEL_SERVER_NAME`]. Agents pin it by the SHA-256
//! fingerprint their enrollment token carries.

use std::path::Path;

use dibop_runtime::tls::{TUNNEL_SERVER_NAME, sha256, to_pem};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateSigningRequestDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use time::{Duration, OffsetDateTime};

/// CA failures.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Files could not be read or written.
    #[error("CA files in {dir}: {reason}")]
    Files {
        /// The data directory.
        dir: String,
        /// What went wrong.
        reason: String,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate error: {0}")]
    Cert(#[from] rcgen::Error),
}

/// The loaded CA.
#[derive(Debug)]
pub struct Ca {
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    fingerprint: [u8; 32],
}

/// A signed certificate and its expiry.
#[derive(Debug)]
pub struct Signed {
    /// DER.
    pub der: Vec<u8>,
    /// Expiry in Unix seconds.
    pub not_after_unix: i64,
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // Positive, non-zero 127-bit serial.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.crt");
        let files = |reason: String| CaError::Files {
            dir: dir.display().to_string(),
            reason,
        };
        if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path)
                .map_err(|e| files(format!("reading ca.key: {e}")))?;
            let cert_pem =
                std::fs::read(&cert_path).map_err(|e| files(format!("reading ca.crt: {e}")))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let cert_der = CertificateDer::from_pem_slice(&cert_pem)
                .map_err(|e| files(format!("ca.crt: {e}")))?;
            let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
            return Ok(Ca {
                fingerprint: sha256(&cert_der),
                cert_der,
                issuer,
            });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "DIBOP control plane CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "DIBOP");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        dibop_runtime::support::create_private_dir(dir)
            .map_err(|e| files(format!("cannot write {}: {e}", dir.display())))?;
        write_private(&key_path, key.serialize_pem().as_bytes())
            .map_err(|e| files(format!("writing ca.key: {e}")))?;
        std::fs::write(&cert_path, to_pem("CERTIFICATE", &cert_der))
            .map_err(|e| files(format!("writing ca.crt: {e}")))?;
        let issuer = Issuer::new(params, key);
        Ok(Ca {
            fingerprint: sha256(&cert_der),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Signs an agent's CSR. The subject is replaced: CN = `agent_id`,
    /// client-auth only, valid for `ttl`.
    pub fn sign_agent(
        &self,
        csr_der: &[u8],
        agent_id: &str,
        ttl: std::time::Duration,
    ) -> Result<Signed, CaError> {
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
            csr_der,
        ))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, agent_id);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::try_from(ttl).unwrap_or(Duration::days(30));
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(Signed {
            der: cert.der().to_vec(),
            not_after_unix: params.not_after.unix_timestamp(),
        })
    }

    /// A fresh server certificate for the tunnel endpoint, with its chain
    /// (leaf, then CA) and key.
    pub fn tunnel_server_cert(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![TUNNEL_SERVER_NAME.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, TUNNEL_SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(397);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Reads the agent id (subject CN) from a client certificate.
pub fn agent_id_of(cert_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_signs_agents() {
        dibop_runtime::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca.fingerprint(),
            again.fingerprint(),
            "the CA is reused, not recreated"
        );

        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "someone-else");
        let csr = params.serialize_request(&key).unwrap();
        let signed = again
            .sign_agent(csr.der(), "agt_123", std::time::Duration::from_secs(3600))
            .unwrap();
        assert_eq!(
            agent_id_of(&signed.der).as_deref(),
            Some("agt_123"),
            "the CA decides the subject"
        );
        assert!(signed.not_after_unix > OffsetDateTime::now_utc().unix_timestamp());
    }

    #[test]
    fn garbage_csr_is_an_error() {
        dibop_runtime::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        assert!(
            ca.sign_agent(b"not a csr", "agt_1", std::time::Duration::from_secs(60))
                .is_err()
        );
    }
}
