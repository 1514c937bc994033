//! Connections and the one call path: a connection's definition and
//! credentials opened ([`execute`]), a request rendered from an operation
//! and its parameters ([`render`]), circuit breakers and rate limits
//! ([`guard`]), one result shape ([`normalized`]), pagination followed ([`paginate`]) and every call recorded
//! ([`calllog`]).

pub mod calllog;
pub mod execute;
pub mod guard;
pub mod normalized;
pub mod paginate;
pub mod render;

use crate::store::StoreError;

/// What the call path refuses.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// No such resource in the tenant.
    #[error("{what} `{id}` does not exist")]
    NotFound {
        /// `connection`, `connector version`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A sealed credential no longer opens (its master key is gone, or the
    /// stored value is damaged).
    #[error(
        "the connection's `{field}` can no longer be decrypted (the master key it was sealed with \
         is gone, or the stored value is damaged): set the credentials again with \
         PUT /api/v1/connections/{connection}/credentials"
    )]
    CredentialsUnreadable {
        /// The credential's name.
        field: String,
        /// The connection's id.
        connection: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectionError {
    /// The stable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectionError::NotFound { .. } => "not_found",
            ConnectionError::CredentialsUnreadable { .. } => "credentials_unreadable",
            ConnectionError::Store(_) => "internal",
        }
    }
}
