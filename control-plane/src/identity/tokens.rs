//! API tokens: opaque (`dibop_` and 43 random characters), shown once at
//! creation; only their SHA-256 is stored, with a 12-character prefix to
//! recognise them in lists. Sessions are tokens linked to a user.

use std::time::Duration;

use dibop_runtime::support::rfc3339;

use super::{PLATFORM_TENANT, Principal, Role};
use crate::Core;
use crate::domain::TenantStatus;
use crate::quotas::QuotaError;
use crate::store::{ApiTokenRow, Store, StoreError, Tenant, now_unix};

/// Creates a token; returns the row and the secret (shown once).
pub async fn issue_token(
    store: &Store,
    tenant_id: &str,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
) -> Result<(ApiTokenRow, String), StoreError> {
    let secret = crate::support::ids::new_secret("dibop_");
    let row = ApiTokenRow {
        id: crate::support::ids::new_id("tok"),
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        role,
        prefix: secret.chars().take(12).collect(),
        created_at: now_unix(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
        user_id: None,
        view_pii: None,
    };
    store
        .create_api_token(&row, &crate::support::ids::hash_secret(&secret))
        .await?;
    Ok((row, secret))
}

/// Token lookups are cached briefly so the hot path does not hit the
/// database; a revocation on this node takes effect at once, on other nodes
/// within this time.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// A short-lived cache of token hash → token (or its absence).
#[derive(Debug)]
pub struct TokenCache {
    entries: crate::support::cache::TtlCache<Option<ApiTokenRow>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: crate::support::cache::TtlCache::new(TOKEN_CACHE_TTL, 10_000),
        }
    }
}

impl TokenCache {
    pub async fn lookup(
        &self,
        core: &Core,
        token: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let hash = crate::support::ids::hash_secret(token);
        if let Some(t) = self.entries.get(&hash) {
            return Ok(t);
        }
        let found = core.store.api_token_by_hash(&hash).await?;
        if let Some(t) = &found
            && t.revoked_at.is_none()
        {
            // Refreshed at most once per TTL per token: last use, not every use.
            core.store.touch_api_token(&t.id, now_unix()).await?;
        }
        self.entries.insert(hash, found.clone());
        Ok(found)
    }

    /// Forgets a token (after revocation).
    pub fn forget(&self, token_id: &str) {
        self.entries
            .remove_where(|t| t.as_ref().is_some_and(|t| t.id == token_id));
    }
}

/// Why a bearer token does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown token.
    #[error("the token is not valid")]
    Invalid,
    /// Revoked: which token (its prefix) and when.
    #[error("the token `{prefix}` was revoked at {}", rfc3339(*at))]
    Revoked {
        /// The token's prefix.
        prefix: String,
        /// When (Unix seconds).
        at: i64,
    },
    /// Past its expiry.
    #[error("the token `{prefix}` expired at {}", rfc3339(*at))]
    Expired {
        /// The token's prefix.
        prefix: String,
        /// When (Unix seconds).
        at: i64,
    },
    /// The token's tenant was deleted.
    #[error("the token's tenant no longer exists")]
    TenantGone,
    /// The tenant is suspended.
    #[error("tenant `{0}` is suspended: contact the platform operator")]
    TenantSuspended(String),
    /// A role that does not exist in the token's tenant (a row from before
    /// the platform tenant held platform admins only).
    #[error(
        "the `{role}` role does not exist in tenant `{tenant}`: ask a platform admin for a user in your enterprise's tenant"
    )]
    RoleNotInTenant {
        /// The token's role.
        role: String,
        /// The tenant's name.
        tenant: String,
    },
    /// The tenant's request rate is used up.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Authenticates a bearer token: the caller, and its tenant (whose request
/// budget this request takes from, unless the caller is a platform admin).
pub async fn authenticate(core: &Core, token: &str) -> Result<(Principal, Tenant), AuthError> {
    let Some(t) = core.tokens.lookup(core, token).await? else {
        return Err(AuthError::Invalid);
    };
    if let Some(at) = t.revoked_at {
        return Err(AuthError::Revoked {
            prefix: t.prefix,
            at,
        });
    }
    if let Some(at) = t.expires_at
        && at <= now_unix()
    {
        return Err(AuthError::Expired {
            prefix: t.prefix,
            at,
        });
    }
    // A session (a token bound to a user) also ends when left idle.
    if t.user_id.is_some() {
        let idle_since = t.last_used_at.unwrap_or(t.created_at);
        if now_unix() - idle_since > super::users::SESSION_IDLE_SECS {
            return Err(AuthError::Expired {
                prefix: t.prefix,
                at: idle_since + super::users::SESSION_IDLE_SECS,
            });
        }
    }
    let tenant = core
        .quotas
        .tenant(&core.store, &t.tenant_id)
        .await?
        .ok_or(AuthError::TenantGone)?;
    if tenant.status == TenantStatus::Suspended {
        return Err(AuthError::TenantSuspended(tenant.name));
    }
    // The platform tenant holds platform admins only; an enterprise role
    // there must not reach global resources.
    if (tenant.name == PLATFORM_TENANT) != (t.role == Role::PlatformAdmin) {
        return Err(AuthError::RoleNotInTenant {
            role: t.role.to_string(),
            tenant: tenant.name,
        });
    }
    if t.role != Role::PlatformAdmin {
        core.quotas.check_rate(&tenant)?;
    }
    let principal = Principal {
        tenant_id: t.tenant_id,
        role: t.role,
        token_id: t.id,
        user_id: t.user_id,
        view_pii: t.view_pii.map(|v| v != 0),
    };
    Ok((principal, tenant))
}
