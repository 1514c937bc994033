//! The credential vault: envelope encryption of tenants' secrets.
//!
//! - Each tenant has a 256-bit **data key**, stored only wrapped
//!   (AES-256-GCM) by the **master key** of a [`KeyProvider`].
//! - Each secret is sealed with AES-256-GCM under its tenant's data key and
//!   a random 96-bit nonce (aws-lc-rs `RandomizedNonceKey`). The associated
//!   data binds the ciphertext to its tenant, owner record and field, so a
//!   ciphertext copied to another row, field or tenant fails to open.
//! - Master keys come from a key file created at first start with mode 0600
//!   (default), or from the `DIBOP_MASTER_KEY` environment variable
//!   (base64); an external KMS implements [`KeyProvider`] (wrap/unwrap
//!   without ever revealing its key).
//! - `dibop admin rotate-master-key` re-wraps every data key under a new
//!   master key; secrets themselves are untouched.
//!
//! Plaintexts travel as [`Secret`], whose `Debug`/`Display` print a redaction
//! and which cannot be serialized, so it reaches no response or log by accident.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::store::{Store, StoreError};

/// Ciphertext format version prefix.
const FORMAT: &str = "v1";
/// Length of keys.
const KEY_LEN: usize = 32;
/// Length of AES-GCM nonces.
const NONCE_LEN: usize = 12;

/// A secret value: redacted when printed, never serialized.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a plaintext.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plaintext, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.zeroize();
    }
}

/// Vault failures. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The master key could not be loaded.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A ciphertext failed to open: wrong key, tampered, or moved to another
    /// record, field or tenant.
    #[error(
        "a stored secret could not be decrypted (wrong master key, or the ciphertext was altered or moved)"
    )]
    Open,
    /// Encryption failed.
    #[error("encryption failed")]
    Seal,
    /// A stored value is not in the vault's format.
    #[error("a stored secret is not in the vault's format")]
    Format,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Wraps and unwraps tenants' data keys. Implemented by the key file, the
/// environment variable, and external KMS adapters.
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// A stable id of the current master key (not secret).
    fn key_id(&self) -> String;
    /// Encrypts a data key, bound to `context`.
    fn wrap(&self, data_key: &[u8], context: &[u8]) -> Result<Vec<u8>, VaultError>;
    /// Decrypts a data key wrapped by [`KeyProvider::wrap`] with the same context.
    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError>;
}

fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, VaultError> {
    let key = RandomizedNonceKey::new(&AES_256_GCM, key).map_err(|_| VaultError::Seal)?;
    let mut in_out = plaintext.to_vec();
    let nonce = key
        .seal_in_place_append_tag(Aad::from(aad), &mut in_out)
        .map_err(|_| VaultError::Seal)?;
    let mut out = nonce.as_ref().to_vec();
    out.extend_from_slice(&in_out);
    Ok(out)
}

fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(VaultError::Format);
    }
    let key = RandomizedNonceKey::new(&AES_256_GCM, key).map_err(|_| VaultError::Open)?;
    let nonce =
        Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).map_err(|_| VaultError::Format)?;
    let mut in_out = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut in_out)
        .map_err(|_| VaultError::Open)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

fn random_key() -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let mut key = Zeroizing::new(vec![0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(&mut key).map_err(|_| VaultError::Seal)?;
    Ok(key)
}

/// A master key held in memory (from a file or the environment).
pub struct LocalKey {
    key: Zeroizing<Vec<u8>>,
    source: String,
}

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey")
            .field("source", &self.source)
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl LocalKey {
    /// Parses a base64 key of 32 bytes.
    pub fn from_base64(text: &str, source: &str) -> Result<Self, VaultError> {
        let key = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| VaultError::MasterKey(format!("{source} is not base64")))?,
        );
        if key.len() != KEY_LEN {
            return Err(VaultError::MasterKey(format!(
                "{source} must hold {KEY_LEN} bytes (base64), not {}",
                key.len()
            )));
        }
        Ok(LocalKey {
            key,
            source: source.to_owned(),
        })
    }

    /// A new random key.
    pub fn generate(source: &str) -> Result<Self, VaultError> {
        Ok(LocalKey {
            key: random_key()?,
            source: source.to_owned(),
        })
    }

    /// Loads the key file, creating it (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, VaultError> {
        let source = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text, &source),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate(&source)?;
                key.write_new(path)?;
                Ok(key)
            }
            Err(e) => Err(VaultError::MasterKey(format!("cannot read {source}: {e}"))),
        }
    }

    /// Writes the key to a new file with mode 0600.
    pub fn write_new(&self, path: &Path) -> Result<(), VaultError> {
        use std::io::Write as _;
        let err = |e: std::io::Error| {
            VaultError::MasterKey(format!("cannot write {}: {e}", path.display()))
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(err)?;
        file.write_all(Zeroizing::new(B64.encode(&*self.key)).as_bytes())
            .map_err(err)?;
        file.write_all(b"\n").map_err(err)?;
        file.sync_all().map_err(err)
    }
}

impl KeyProvider for LocalKey {
    fn key_id(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.key);
        format!("local:{}", hex::encode(&digest.as_ref()[..8]))
    }

    fn wrap(&self, data_key: &[u8], context: &[u8]) -> Result<Vec<u8>, VaultError> {
        seal(&self.key, context, data_key)
    }

    fn unwrap(&self, wrapped: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        open(&self.key, context, wrapped)
    }
}

/// Where the master key comes from: `DIBOP_MASTER_KEY` if set, else
/// `DATA_DIR/master.key` (created at first start).
pub fn default_provider(data_dir: &Path) -> Result<Box<dyn KeyProvider>, VaultError> {
    match std::env::var("DIBOP_MASTER_KEY") {
        Ok(v) if !v.is_empty() => Ok(Box::new(LocalKey::from_base64(&v, "DIBOP_MASTER_KEY")?)),
        _ => Ok(Box::new(LocalKey::load_or_create(&master_key_path(
            data_dir,
        ))?)),
    }
}

/// The key file of a data directory.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

fn key_context(tenant_id: &str) -> Vec<u8> {
    format!("dibop/tenant-data-key/v1|{tenant_id}").into_bytes()
}

fn secret_aad(tenant_id: &str, owner: &str, field: &str) -> Vec<u8> {
    // Length-prefixed so that no two (tenant, owner, field) triples collide.
    format!(
        "dibop/secret/v1|{}:{tenant_id}|{}:{owner}|{}:{field}",
        tenant_id.len(),
        owner.len(),
        field.len()
    )
    .into_bytes()
}

/// The vault: seals and opens tenants' secrets.
#[derive(Debug)]
pub struct Vault {
    provider: Box<dyn KeyProvider>,
    /// Unwrapped data keys, per tenant, for this process's life.
    cache: Mutex<std::collections::HashMap<String, Zeroizing<Vec<u8>>>>,
}

impl Vault {
    /// A vault over a key provider.
    pub fn new(provider: Box<dyn KeyProvider>) -> Self {
        Vault {
            provider,
            cache: Mutex::new(Default::default()),
        }
    }

    async fn data_key(
        &self,
        store: &Store,
        tenant_id: &str,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if let Some(k) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant_id)
        {
            return Ok(k.clone());
        }
        let context = key_context(tenant_id);
        let key = match store.tenant_key(tenant_id).await? {
            Some(wrapped) => {
                let wrapped = B64.decode(wrapped).map_err(|_| VaultError::Format)?;
                self.provider.unwrap(&wrapped, &context)?
            }
            None => {
                let key = random_key()?;
                let wrapped = B64.encode(self.provider.wrap(&key, &context)?);
                // Two racing creators: the first insert wins, both then use it.
                if !store
                    .insert_tenant_key(tenant_id, &wrapped, &self.provider.key_id())
                    .await?
                {
                    let stored = store
                        .tenant_key(tenant_id)
                        .await?
                        .ok_or(VaultError::Format)?;
                    self.provider.unwrap(
                        &B64.decode(stored).map_err(|_| VaultError::Format)?,
                        &context,
                    )?
                } else {
                    key
                }
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant_id.to_owned(), key.clone());
        Ok(key)
    }

    /// Checks that the master key opens the stored data keys (one is
    /// enough), so a wrong key stops the start instead of failing later.
    pub async fn verify(&self, store: &Store) -> Result<(), VaultError> {
        if let Some((tenant_id, wrapped)) = store.tenant_keys().await?.into_iter().next() {
            let wrapped = B64.decode(wrapped).map_err(|_| VaultError::Format)?;
            self.provider.unwrap(&wrapped, &key_context(&tenant_id)).map_err(|_| {
                VaultError::MasterKey(format!(
                    "the master key ({}) does not open the data keys in the database: was the key file replaced?",
                    self.provider.key_id()
                ))
            })?;
        }
        Ok(())
    }

    /// Seals `secret` for `field` of record `owner` of `tenant_id`.
    pub async fn seal(
        &self,
        store: &Store,
        tenant_id: &str,
        owner: &str,
        field: &str,
        secret: &Secret,
    ) -> Result<String, VaultError> {
        let key = self.data_key(store, tenant_id).await?;
        let sealed = seal(
            &key,
            &secret_aad(tenant_id, owner, field),
            secret.expose().as_bytes(),
        )?;
        Ok(format!("{FORMAT}:{}", B64.encode(sealed)))
    }

    /// Opens a value sealed by [`Vault::seal`] for the same tenant, owner and field.
    pub async fn open(
        &self,
        store: &Store,
        tenant_id: &str,
        owner: &str,
        field: &str,
        sealed: &str,
    ) -> Result<Secret, VaultError> {
        let body = sealed.strip_prefix("v1:").ok_or(VaultError::Format)?;
        let bytes = B64.decode(body).map_err(|_| VaultError::Format)?;
        let key = self.data_key(store, tenant_id).await?;
        let plain = open(&key, &secret_aad(tenant_id, owner, field), &bytes)?;
        String::from_utf8(plain.to_vec())
            .map(Secret)
            .map_err(|_| VaultError::Format)
    }
}

/// Rotates the master key of `data_dir` (or of `DIBOP_MASTER_KEY`, taking
/// the new one from `DIBOP_NEW_MASTER_KEY`). With the key file, the new key
/// is written beside it first, every data key is re-wrapped in one
/// transaction, then the files are swapped (the old key is kept as
/// `master.key.old-<time>` until the operator removes it). Returns the new
/// key id and the number of data keys re-wrapped.
pub async fn rotate_master_key(
    store: &Store,
    data_dir: &Path,
) -> Result<(String, usize), VaultError> {
    let old = default_provider(data_dir)?;
    if std::env::var("DIBOP_MASTER_KEY").is_ok_and(|v| !v.is_empty()) {
        let new_text = std::env::var("DIBOP_NEW_MASTER_KEY").map_err(|_| {
            VaultError::MasterKey(
                "the key comes from DIBOP_MASTER_KEY: put the new key in DIBOP_NEW_MASTER_KEY"
                    .into(),
            )
        })?;
        let new = LocalKey::from_base64(&new_text, "DIBOP_NEW_MASTER_KEY")?;
        let n = rewrap_all(store, old.as_ref(), &new).await?;
        return Ok((new.key_id(), n));
    }
    let path = master_key_path(data_dir);
    let staged = path.with_extension("key.new");
    let _ = std::fs::remove_file(&staged);
    let new = LocalKey::generate(&path.display().to_string())?;
    new.write_new(&staged)?;
    let n = rewrap_all(store, old.as_ref(), &new).await?;
    let io = |e: std::io::Error| {
        VaultError::MasterKey(format!("re-wrapped, but cannot swap the key files: {e}"))
    };
    let kept = path.with_extension(format!("key.old-{}", crate::store::now_unix()));
    std::fs::rename(&path, &kept).map_err(io)?;
    std::fs::rename(&staged, &path).map_err(io)?;
    Ok((new.key_id(), n))
}

/// Re-wraps every tenant data key from `old` to `new`; returns how many.
/// Secrets sealed under the data keys stay valid.
pub async fn rewrap_all(
    store: &Store,
    old: &dyn KeyProvider,
    new: &dyn KeyProvider,
) -> Result<usize, VaultError> {
    let keys = store.tenant_keys().await?;
    let mut rewrapped = Vec::with_capacity(keys.len());
    for (tenant_id, wrapped) in &keys {
        let context = key_context(tenant_id);
        let key = old.unwrap(
            &B64.decode(wrapped).map_err(|_| VaultError::Format)?,
            &context,
        )?;
        rewrapped.push((tenant_id.clone(), B64.encode(new.wrap(&key, &context)?)));
    }
    store.replace_tenant_keys(&rewrapped, &new.key_id()).await?;
    Ok(rewrapped.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn vault_and_store() -> (tempfile::TempDir, Store, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("dibop.db"))
            .await
            .unwrap();
        store.create_tenant("ten_a", "A").await.unwrap();
        store.create_tenant("ten_b", "B").await.unwrap();
        let key = LocalKey::load_or_create(&dir.path().join("master.key")).unwrap();
        (dir, store, Vault::new(Box::new(key)))
    }

    #[tokio::test]
    async fn secrets_round_trip_and_are_bound_to_their_place() {
        let (_dir, store, vault) = vault_and_store().await;
        let secret = Secret::new("s3cr3t-api-key");
        let sealed = vault
            .seal(&store, "ten_a", "con_1", "api_key", &secret)
            .await
            .unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("s3cr3t"));
        assert_eq!(
            vault
                .open(&store, "ten_a", "con_1", "api_key", &sealed)
                .await
                .unwrap(),
            secret
        );
        // Moved to another field, record or tenant: refuses to open.
        assert!(matches!(
            vault
                .open(&store, "ten_a", "con_1", "password", &sealed)
                .await,
            Err(VaultError::Open)
        ));
        assert!(matches!(
            vault
                .open(&store, "ten_a", "con_2", "api_key", &sealed)
                .await,
            Err(VaultError::Open)
        ));
        assert!(
            vault
                .open(&store, "ten_b", "con_1", "api_key", &sealed)
                .await
                .is_err()
        );
        // Same plaintext twice: different ciphertexts (random nonces).
        assert_ne!(
            sealed,
            vault
                .seal(&store, "ten_a", "con_1", "api_key", &secret)
                .await
                .unwrap()
        );
        // Tampering is detected.
        let mut bytes = B64.decode(&sealed[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("v1:{}", B64.encode(bytes));
        assert!(matches!(
            vault
                .open(&store, "ten_a", "con_1", "api_key", &tampered)
                .await,
            Err(VaultError::Open)
        ));
    }

    #[tokio::test]
    async fn master_key_rotation_keeps_secrets_readable() {
        let (dir, store, vault) = vault_and_store().await;
        let sealed = vault
            .seal(&store, "ten_a", "con_1", "token", &Secret::new("abc"))
            .await
            .unwrap();
        let old = LocalKey::load_or_create(&dir.path().join("master.key")).unwrap();
        let new = LocalKey::generate("test").unwrap();
        assert_eq!(rewrap_all(&store, &old, &new).await.unwrap(), 1);
        let after = Vault::new(Box::new(new));
        assert_eq!(
            after
                .open(&store, "ten_a", "con_1", "token", &sealed)
                .await
                .unwrap()
                .expose(),
            "abc"
        );
        // The old master key no longer opens the data keys.
        let stale = Vault::new(Box::new(old));
        assert!(
            stale
                .open(&store, "ten_a", "con_1", "token", &sealed)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn key_file_is_private_and_plaintext_never_reaches_the_database() {
        let (dir, store, vault) = vault_and_store().await;
        let canary = "CANARY-9f8e7d6c5b4a";
        let sealed = vault
            .seal(&store, "ten_a", "con_1", "password", &Secret::new(canary))
            .await
            .unwrap();
        // Store the ciphertext in a real row, so the scan below has something to find.
        store
            .claim_idempotency_key("scope", "key", "ten_a", "fp", 1)
            .await
            .unwrap();
        store
            .complete_idempotency_key("scope", "key", 201, &sealed)
            .await
            .unwrap();
        store.close().await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
                "plaintext found on disk"
            );
        }
    }

    #[test]
    fn secrets_print_redacted() {
        let s = Secret::new("hunter2hunter2");
        assert_eq!(format!("{s}"), "<redacted>");
        assert!(!format!("{s:?}").contains("hunter2"));
        let key = LocalKey::generate("test").unwrap();
        assert!(!format!("{key:?}").contains(&B64.encode(&*key.key)));
    }

    #[test]
    fn bad_master_keys_are_named() {
        assert!(
            LocalKey::from_base64("!!", "DIBOP_MASTER_KEY")
                .unwrap_err()
                .to_string()
                .contains("DIBOP_MASTER_KEY")
        );
        assert!(
            LocalKey::from_base64(&B64.encode([0u8; 16]), "k")
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }
}
