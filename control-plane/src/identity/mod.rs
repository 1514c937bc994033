//! Who is asking, and on whose behalf: tenants and their plans
//! ([`tenants`]), users and passwords ([`users`]), API tokens and sessions
//! ([`tokens`]), roles, and the audit log ([`audit`]).
//!
//! Roles: `platform_admin` (only in the reserved `platform` tenant: manages
//! tenants and the catalogue, never sees a tenant's data), and in every
//! other tenant `enterprise_admin`, `operator` and `viewer`.

pub mod access;
pub mod audit;
pub mod sso;
pub mod tenants;
pub mod tokens;
pub mod users;

/// Name of the reserved tenant that holds platform admins.
pub const PLATFORM_TENANT: &str = "platform";

pub use crate::domain::Role;

/// What the identity rules refuse.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The input breaks rules; each problem names its field.
    #[error("{message}")]
    Invalid {
        /// What was refused.
        message: String,
        /// `{"field", "problem"}` per problem.
        problems: Vec<serde_json::Value>,
    },
    /// No such resource in the caller's tenant.
    #[error("{what} `{id}` does not exist")]
    NotFound {
        /// `user`, `API token`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The caller's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The resource's state refuses it.
    #[error("{message}")]
    Conflict {
        /// The stable code (`already_revoked`, `own_access`).
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// The database failed or refused (a conflict, say).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Something that is not the caller's fault.
    #[error("{0}")]
    Internal(String),
}

/// Facts about the request being served, for errors and the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The request id (`x-request-id`).
    pub id: String,
    /// The peer's IP address.
    pub source_ip: String,
}

tokio::task_local! {
    static REQUEST: RequestMeta;
}

/// Runs `f` as the serving of the request `meta` describes.
pub async fn in_request<F: Future>(meta: RequestMeta, f: F) -> F::Output {
    REQUEST.scope(meta, f).await
}

/// The request being served (empty outside a request).
pub fn request_meta() -> RequestMeta {
    REQUEST.try_with(Clone::clone).unwrap_or_default()
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Tenant the token belongs to.
    pub tenant_id: String,
    /// What the caller may do.
    pub role: Role,
    /// The API token used.
    pub token_id: String,
    /// The signed-in user, for session tokens.
    pub user_id: Option<String>,
    /// `view_pii` given or withheld for this user or token (`None`: the role decides).
    pub view_pii: Option<bool>,
}

impl Principal {
    /// Whether the caller is a platform admin (who belongs to the platform
    /// tenant, which holds no other role).
    pub fn is_platform_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// How connection grants name this caller: `user:usr_…` for a
    /// signed-in user, `token:tok_…` for an API token.
    pub fn subject(&self) -> String {
        match &self.user_id {
            Some(u) => format!("user:{u}"),
            None => format!("token:{}", self.token_id),
        }
    }
}
