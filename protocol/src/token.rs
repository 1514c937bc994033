//! The enrollment token: one pasteable string an admin hands to a dealer.
//!
//! `dibop-enroll-v1.` followed by base64url (no padding) of the postcard
//! encoding of [`EnrollmentToken`]. It carries where to dial, the single-use
//! secret and the SHA-256 fingerprint of the control plane's CA, so the agent
//! can verify the control plane before it sends the secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "dibop-enroll-v1.";

/// The contents of an enrollment token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// `host:port` of the control plane's tunnel endpoint.
    pub address: String,
    /// The single-use secret.
    pub secret: String,
    /// SHA-256 of the DER encoding of the control plane's CA certificate.
    pub ca_sha256: [u8; 32],
    /// When the token stops working (seconds since the Unix epoch).
    pub expires_at_unix: i64,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("address", &self.address)
            .field("secret", &"<redacted>")
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

/// Why a string is not an enrollment token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Wrong prefix: not a token of this format, or a truncated paste.
    #[error(
        "not a DIBOP enrollment token: it must start with `{PREFIX}` (copy the whole token from the console)"
    )]
    Prefix,
    /// The body is not valid base64url or not a token.
    #[error("the enrollment token is damaged ({0}): copy it again, in one piece")]
    Damaged(String),
}

impl EnrollmentToken {
    /// The pasteable form.
    pub fn encode(&self) -> String {
        // Serializing a struct of strings and integers into a Vec cannot fail.
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses the pasteable form; surrounding whitespace is ignored.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        let body = text.trim().strip_prefix(PREFIX).ok_or(TokenError::Prefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| TokenError::Damaged(e.to_string()))?;
        let token: EnrollmentToken =
            crate::decode_payload(&bytes).map_err(|e| TokenError::Damaged(e.to_string()))?;
        if token.address.is_empty() || token.secret.is_empty() {
            return Err(TokenError::Damaged("empty address or secret".into()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnrollmentToken {
        EnrollmentToken {
            address: "cp.example.com:4433".into(),
            secret: "s3cr3t".into(),
            ca_sha256: [7; 32],
            expires_at_unix: 1_900_000_000,
        }
    }

    #[test]
    fn round_trips_and_tolerates_whitespace() {
        let text = format!("  {}\n", sample().encode());
        assert_eq!(EnrollmentToken::decode(&text).unwrap(), sample());
    }

    #[test]
    fn damaged_tokens_get_clear_errors() {
        assert_eq!(EnrollmentToken::decode("hello"), Err(TokenError::Prefix));
        let mut text = sample().encode();
        text.truncate(text.len() - 5);
        assert!(matches!(
            EnrollmentToken::decode(&text),
            Err(TokenError::Damaged(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        assert!(!format!("{:?}", sample()).contains("s3cr3t"));
    }
}
