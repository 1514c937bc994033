//! Identifiers and secrets.
//!
//! Ids are a type prefix and 20 random hex digits (`agt_3f…`), so a pasted id
//! says what it names. Secrets are 32 random bytes; only their SHA-256 is
//! stored.

use base64::Engine as _;

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Secrets are made from these bytes: a weaker fallback would be worse
    // than stopping, and the OS generator does not fail in practice.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!(
            "the operating system's random number generator failed; refusing to make ids or secrets"
        );
    }
    bytes
}

/// A new id with `prefix`, e.g. `new_id("grp")` → `grp_9c1e…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random::<10>()))
}

/// A new time-ordered id: newer ids sort after older ones (audit entries,
/// API calls), so "newest first" lists page by id.
pub fn time_ordered_id(prefix: &str) -> String {
    let micros = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    format!("{prefix}_{micros:016x}{:08x}", fastrand::u32(..))
}

/// A new secret, base64url without padding, with a recognisable prefix.
pub fn new_secret(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>())
    )
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        secret.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_are_unique_and_prefixed() {
        let a = new_id("agt");
        assert!(a.starts_with("agt_") && a.len() == 24);
        assert_ne!(a, new_id("agt"));
        let s = new_secret("dibop_");
        assert!(s.starts_with("dibop_") && s.len() > 40);
        assert_eq!(hash_secret(&s), hash_secret(&s));
        assert_ne!(hash_secret(&s), hash_secret("other"));
    }
}
