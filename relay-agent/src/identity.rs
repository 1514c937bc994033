//! The agent's identity on disk: its private key, its client certificate, the
//! control plane's CA and what enrollment told it.
//!
//! Files in the data directory (key and metadata are written 0600):
//! - `agent.key`: PKCS#8 private key (PEM), made on this machine, never sent;
//! - `agent.crt`: the client certificate signed by the control plane (PEM);
//! - `ca.crt`: the control plane's CA certificate (PEM);
//! - `agent.json`: ids, control plane address, certificate expiry.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use dibop_runtime::tls::to_pem;

/// What `agent.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityMeta {
    /// The agent's id.
    pub agent_id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The agent group.
    pub group_id: String,
    /// `host:port` of the control plane's tunnel.
    pub control_plane: String,
    /// Expiry of `agent.crt` (seconds since the Unix epoch).
    pub not_after_unix: i64,
    /// When the certificate was issued (seconds since the Unix epoch).
    pub issued_at_unix: i64,
}

/// A loaded identity.
#[derive(Debug)]
pub struct Identity {
    /// Metadata.
    pub meta: IdentityMeta,
    /// The private key (PKCS#8 DER).
    pub key_pkcs8: Vec<u8>,
    /// The client certificate (DER).
    pub cert_der: Vec<u8>,
    /// The CA certificate (DER).
    pub ca_der: Vec<u8>,
    dir: PathBuf,
}

/// Identity files missing or unreadable.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Nothing enrolled in this directory.
    #[error(
        "this agent is not enrolled (no {0}): run `dibop-agent enroll <TOKEN>` with the token from the console"
    )]
    NotEnrolled(String),
    /// A file is damaged.
    #[error("identity file {path} is unreadable: {reason}; enroll the agent again")]
    Damaged {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The directory already holds an identity.
    #[error(
        "{0} already holds an enrolled agent; pass --force to replace it, or use another --data-dir"
    )]
    AlreadyEnrolled(String),
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), IdentityError> {
    use std::io::Write as _;
    let err = |source| IdentityError::Write {
        path: path.display().to_string(),
        source,
    };
    // Write to a temporary file, then rename: a crash never leaves half a key.
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(err)
}

impl Identity {
    fn paths(dir: &Path) -> [PathBuf; 4] {
        ["agent.json", "agent.key", "agent.crt", "ca.crt"].map(|f| dir.join(f))
    }

    /// Whether `dir` holds an identity.
    pub fn exists(dir: &Path) -> bool {
        dir.join("agent.json").exists()
    }

    /// Loads the identity from `dir`.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let [meta_path, key_path, cert_path, ca_path] = Self::paths(dir);
        let read = |p: &Path| -> Result<Vec<u8>, IdentityError> {
            std::fs::read(p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    IdentityError::NotEnrolled(p.display().to_string())
                } else {
                    IdentityError::Damaged {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    }
                }
            })
        };
        let damaged = |p: &Path, reason: String| IdentityError::Damaged {
            path: p.display().to_string(),
            reason,
        };
        let meta: IdentityMeta = serde_json::from_slice(&read(&meta_path)?)
            .map_err(|e| damaged(&meta_path, e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?)
            .map_err(|e| damaged(&key_path, e.to_string()))?;
        let key_pkcs8 = match key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => return Err(damaged(&key_path, "not a PKCS#8 key".into())),
        };
        let cert = CertificateDer::from_pem_slice(&read(&cert_path)?)
            .map_err(|e| damaged(&cert_path, e.to_string()))?;
        let ca = CertificateDer::from_pem_slice(&read(&ca_path)?)
            .map_err(|e| damaged(&ca_path, e.to_string()))?;
        Ok(Identity {
            meta,
            key_pkcs8,
            cert_der: cert.to_vec(),
            ca_der: ca.to_vec(),
            dir: dir.to_owned(),
        })
    }

    /// Writes a fresh identity into `dir` (created 0700 if missing).
    pub fn store(
        dir: &Path,
        meta: IdentityMeta,
        key_pkcs8: Vec<u8>,
        cert_der: Vec<u8>,
        ca_der: Vec<u8>,
    ) -> Result<Identity, IdentityError> {
        create_private_dir(dir)?;
        let identity = Identity {
            meta,
            key_pkcs8,
            cert_der,
            ca_der,
            dir: dir.to_owned(),
        };
        let [_, key_path, _, ca_path] = Self::paths(dir);
        write_file(
            &key_path,
            to_pem("PRIVATE KEY", &identity.key_pkcs8).as_bytes(),
            true,
        )?;
        write_file(
            &ca_path,
            to_pem("CERTIFICATE", &identity.ca_der).as_bytes(),
            false,
        )?;
        identity.save_certificate()?;
        Ok(identity)
    }

    /// Replaces the certificate after a renewal and saves it.
    pub fn renew(
        &mut self,
        cert_der: Vec<u8>,
        not_after_unix: i64,
        issued_at_unix: i64,
    ) -> Result<(), IdentityError> {
        self.cert_der = cert_der;
        self.meta.not_after_unix = not_after_unix;
        self.meta.issued_at_unix = issued_at_unix;
        self.save_certificate()
    }

    fn save_certificate(&self) -> Result<(), IdentityError> {
        let [meta_path, _, cert_path, _] = Self::paths(&self.dir);
        write_file(
            &cert_path,
            to_pem("CERTIFICATE", &self.cert_der).as_bytes(),
            false,
        )?;
        let meta = serde_json::to_vec_pretty(&self.meta).unwrap_or_default();
        // agent.json is written last: its presence means "enrolled".
        write_file(&meta_path, &meta, true)
    }

    /// The key as rustls wants it.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// Whether the certificate is past the point where it should be renewed:
    /// two thirds of its lifetime.
    pub fn wants_renewal(&self, now_unix: i64) -> bool {
        let life = (self.meta.not_after_unix - self.meta.issued_at_unix).max(1);
        now_unix >= self.meta.issued_at_unix + life * 2 / 3
    }
}

/// Creates `dir` (and parents) with owner-only permissions.
pub fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    dibop_runtime::support::create_private_dir(dir).map_err(|source| IdentityError::Write {
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> IdentityMeta {
        IdentityMeta {
            agent_id: "agt_1".into(),
            tenant_id: "ten_1".into(),
            group_id: "grp_1".into(),
            control_plane: "127.0.0.1:4433".into(),
            not_after_unix: 1_000 + 3_000,
            issued_at_unix: 1_000,
        }
    }

    #[test]
    fn store_load_round_trip_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        Identity::store(
            dir.path(),
            meta(),
            key.serialize_der(),
            vec![1, 2, 3],
            vec![4, 5],
        )
        .unwrap();
        let loaded = Identity::load(dir.path()).unwrap();
        assert_eq!(loaded.meta, meta());
        assert_eq!(loaded.key_pkcs8, key.serialize_der());
        assert_eq!(loaded.cert_der, vec![1, 2, 3]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("agent.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn missing_identity_says_how_to_enroll() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("dibop-agent enroll"), "{err}");
    }

    #[test]
    fn renewal_is_due_after_two_thirds() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let id =
            Identity::store(dir.path(), meta(), key.serialize_der(), vec![1], vec![2]).unwrap();
        assert!(!id.wants_renewal(2_999));
        assert!(id.wants_renewal(3_000));
    }
}
