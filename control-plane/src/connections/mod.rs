//! Connections and the one call path: a connection's definition and
//! credentials opened ([`execute`]), a request rendered from an operation
//! and its parameters (`catalogue::render`), circuit breakers and rate limits
//! ([`guard`]), one result shape ([`normalized`]), pagination followed ([`paginate`]) and every call recorded
//! ([`calllog`]); the rules of managing connections, which the API and the
//! console share ([`manage`]).

pub mod calllog;
pub mod execute;
pub mod guard;
pub mod manage;
pub mod normalized;
pub mod paginate;

use serde_json::Value;

use crate::store::StoreError;

/// What managing connections and the call path refuse.
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
    /// The request is invalid: every problem in `details` (`[{field, problem}]`).
    #[error("{message}")]
    Invalid {
        /// For a person.
        message: String,
        /// Every problem, or `null`.
        details: Value,
    },
    /// The resource is in a state that refuses the change.
    #[error("{message}")]
    Conflict {
        /// The stable code (`connector_not_published`, `incompatible_version`, …).
        code: &'static str,
        /// For a person.
        message: String,
        /// More about it, or `null`.
        details: Value,
    },
    /// The caller's role or grants do not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The vault could not seal a credential.
    #[error("the credentials could not be sealed")]
    Vault,
    /// Something on our side failed (logged; the caller sees a generic message).
    #[error("{0}")]
    Internal(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ConnectionError {
    /// No `what` with this id in the tenant.
    pub fn not_found(what: &'static str, id: &str) -> Self {
        ConnectionError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    /// An invalid request (add the problems with [`Self::with_details`]).
    pub fn invalid(message: impl Into<String>) -> Self {
        ConnectionError::Invalid {
            message: message.into(),
            details: Value::Null,
        }
    }

    /// A refusal because of the resource's state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ConnectionError::Conflict {
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The same error with `details` (for invalid requests and conflicts).
    pub fn with_details(mut self, more: Value) -> Self {
        if let ConnectionError::Invalid { details, .. }
        | ConnectionError::Conflict { details, .. } = &mut self
        {
            *details = more;
        }
        self
    }

    /// The problems of an invalid request (`[{field, problem}]`), if any.
    pub fn problems(&self) -> &[Value] {
        match self {
            ConnectionError::Invalid { details, .. } => {
                details.as_array().map(Vec::as_slice).unwrap_or_default()
            }
            _ => &[],
        }
    }

    /// The stable code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectionError::NotFound { .. } => "not_found",
            ConnectionError::CredentialsUnreadable { .. } => "credentials_unreadable",
            ConnectionError::Invalid { .. } => "invalid_request",
            ConnectionError::Conflict { code, .. } => code,
            ConnectionError::Forbidden(_) => "forbidden",
            ConnectionError::Vault => "vault_error",
            ConnectionError::Internal(_) | ConnectionError::Store(_) => "internal",
        }
    }
}
