//! Tenants, their plans and usage, users, sessions, API tokens, tenant keys
//! and the audit log.

use sqlx::{Connection as _, FromRow, Row as _};

use crate::domain::{Role, TenantStatus, Tier};

use super::{Exec as _, Fetch as _, Store, StoreError, now_unix, unique_violation};

/// `SELECT <every token column> FROM api_tokens <tail>`, as a static string.
macro_rules! select_tokens {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, name, role, prefix, created_at, expires_at, revoked_at, last_used_at, user_id, \
             view_pii FROM api_tokens ",
            $tail
        )
    };
}

/// `SELECT <every user column> FROM users <tail>`, as a static string.
macro_rules! select_users {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, email, password_hash, role, created_at, disabled_at, view_pii FROM users ",
            $tail
        )
    };
}

/// `SELECT <every tenant column> FROM tenants <tail>`, as a static string.
macro_rules! select_tenants {
    ($tail:literal) => {
        concat!(
            "SELECT id, name, created_at, status, tier, calls_per_month, requests_per_minute, enterprise_publishing, \
             concurrent_executions, storage_bytes, retention_days FROM tenants ",
            $tail
        )
    };
}

/// A tenant (an enterprise).
#[derive(Debug, Clone, FromRow)]
pub struct Tenant {
    /// Id (`ten_…`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time (Unix seconds).
    pub created_at: i64,
    /// Whether it may use the platform.
    pub status: TenantStatus,
    /// Its plan.
    pub tier: Tier,
    /// Overrides the tier's monthly call quota.
    pub calls_per_month: Option<i64>,
    /// Overrides the tier's request rate.
    pub requests_per_minute: Option<i64>,
    /// 1 when the platform lets it publish enterprise-scoped connectors.
    pub enterprise_publishing: i64,
    /// Overrides the tier's concurrent executions.
    pub concurrent_executions: Option<i64>,
    /// Overrides the tier's storage limit (bytes).
    pub storage_bytes: Option<i64>,
    /// Overrides the tier's retention of executions and call records (days).
    pub retention_days: Option<i64>,
}

/// An API token (its secret is never stored, only its hash).
#[derive(Debug, Clone, FromRow)]
pub struct ApiTokenRow {
    /// Id (`tok_…`).
    pub id: String,
    /// The tenant it acts in.
    pub tenant_id: String,
    /// A label for people.
    pub name: String,
    /// The role it carries.
    pub role: Role,
    /// The first characters of the token, to recognise it in lists.
    pub prefix: String,
    /// Creation time.
    pub created_at: i64,
    /// Expiry, if any.
    pub expires_at: Option<i64>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// Last use (updated at most every few seconds).
    pub last_used_at: Option<i64>,
    /// The signed-in user, for session tokens.
    pub user_id: Option<String>,
    /// `view_pii` given (1) or withheld (0); `None` follows the role.
    pub view_pii: Option<i64>,
}

/// A person who signs in.
#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    /// Id (`usr_…`).
    pub id: String,
    /// The tenant.
    pub tenant_id: String,
    /// Unique, lower-cased.
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
    /// Creation time.
    pub created_at: i64,
    /// When disabled, if disabled.
    pub disabled_at: Option<i64>,
    /// `view_pii` given (1) or withheld (0); `None` follows the role.
    pub view_pii: Option<i64>,
}

/// One audit log entry.
#[derive(Debug, Clone, FromRow)]
pub struct AuditEntry {
    /// Time-ordered id (`aud_…`): newer entries sort after older ones.
    pub id: String,
    /// The tenant, or `None` for platform-level entries.
    pub tenant_id: Option<String>,
    /// When (Unix seconds).
    pub at: i64,
    /// Who: `token:tok_…`, `agent:agt_…`, `cli`, `system`.
    pub actor: String,
    /// What, e.g. `agent.revoke`.
    pub action: String,
    /// The kind of resource.
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// Where the request came from.
    pub source_ip: String,
    /// The request id, to find the matching log lines.
    pub request_id: String,
    /// Extra facts as JSON text (never secrets).
    pub details: String,
}

/// Filters of the audit log query.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this action.
    pub action: Option<String>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only this resource.
    pub resource_id: Option<String>,
    /// Only entries older than this id (the cursor).
    pub before: Option<String>,
    /// Only this actor (`user:usr_…`, `token:tok_…`, `cli`).
    pub actor: Option<String>,
    /// Only entries at or after this time (Unix seconds).
    pub since: Option<i64>,
}

/// `SELECT <audit columns> FROM audit_log WHERE <scope> AND <filters>`,
/// newest first, as a static string.
macro_rules! select_audit {
    ($scope:literal) => {
        concat!(
            "SELECT id, tenant_id, at, actor, action, resource_type, resource_id, source_ip, request_id, \
             details FROM audit_log WHERE ",
            $scope,
            " AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR resource_type = $3) \
             AND ($4 IS NULL OR resource_id = $4) AND ($5 IS NULL OR id < $5) \
             AND ($7 IS NULL OR actor = $7) AND ($8 IS NULL OR at >= $8) ORDER BY id DESC LIMIT $6"
        )
    };
}

impl Store {
    /// Creates a tenant on the `standard` tier.
    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant, StoreError> {
        let now = now_unix();
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(now)
            .execute(&mut *self.db().await?)
            .await
            .map_err(|e| unique_violation(e, format!("a tenant named `{name}` already exists")))?;
        Ok(Tenant {
            id: id.into(),
            name: name.into(),
            created_at: now,
            status: TenantStatus::Active,
            tier: Tier::Standard,
            calls_per_month: None,
            requests_per_minute: None,
            enterprise_publishing: 0,
            concurrent_executions: None,
            storage_bytes: None,
            retention_days: None,
        })
    }

    /// Finds a tenant by name.
    pub async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        sqlx::query_as::<_, Tenant>(select_tenants!("WHERE name = $1"))
            .bind(name)
            .one(self)
            .await
    }

    /// Finds a tenant by id.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        sqlx::query_as::<_, Tenant>(select_tenants!("WHERE id = $1"))
            .bind(id)
            .one(self)
            .await
    }

    /// All tenants, by id after `after`.
    pub async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query_as::<_, Tenant>(select_tenants!(
            "WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .all(self)
        .await
    }

    /// Stores a tenant's status and plan.
    pub async fn update_tenant_plan(&self, t: &Tenant) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tenants SET status = $1, tier = $2, calls_per_month = $3, requests_per_minute = $4, \
             enterprise_publishing = $5, concurrent_executions = $7, storage_bytes = $8, retention_days = $9 \
             WHERE id = $6",
        )
        .bind(t.status)
        .bind(t.tier)
        .bind(t.calls_per_month)
        .bind(t.requests_per_minute)
        .bind(t.enterprise_publishing)
        .bind(&t.id)
        .bind(t.concurrent_executions)
        .bind(t.storage_bytes)
        .bind(t.retention_days)
        .run(self)
        .await?;
        Ok(())
    }

    /// Calls counted for a tenant in a period (`YYYY-MM`).
    pub async fn usage(&self, tenant_id: &str, period: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT calls FROM usage_counters WHERE tenant_id = $1 AND period = $2")
                .bind(tenant_id)
                .bind(period)
                .one(self)
                .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>("calls")?,
            None => 0,
        })
    }

    /// Adds calls to a tenant's counter for a period.
    pub async fn add_usage(
        &self,
        tenant_id: &str,
        period: &str,
        calls: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO usage_counters (tenant_id, period, calls) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, period) DO UPDATE SET calls = usage_counters.calls + excluded.calls",
        )
        .bind(tenant_id)
        .bind(period)
        .bind(calls)
        .run(self)
        .await?;
        Ok(())
    }

    /// Stores an API token (with the hash of its secret).
    pub async fn create_api_token(
        &self,
        token: &ApiTokenRow,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, name, role, token_hash, created_at, prefix, expires_at, view_pii) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&token.id)
        .bind(&token.tenant_id)
        .bind(&token.name)
        .bind(token.role)
        .bind(token_hash)
        .bind(token.created_at)
        .bind(&token.prefix)
        .bind(token.expires_at)
        .bind(token.view_pii)
        .run(self)
        .await?;
        Ok(())
    }

    /// Looks up a token by the hash of its secret, whatever its state. A
    /// session token takes its user's current role, and is revoked when the
    /// user is disabled.
    pub async fn api_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        sqlx::query_as::<_, ApiTokenRow>(
            "SELECT t.id, t.tenant_id, t.name, COALESCE(u.role, t.role) AS role, t.prefix, t.created_at, \
                    t.expires_at, COALESCE(t.revoked_at, u.disabled_at) AS revoked_at, t.last_used_at, t.user_id, \
                    CASE WHEN t.user_id IS NULL THEN t.view_pii ELSE u.view_pii END AS view_pii \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(token_hash).one(self).await
    }

    /// Gives (1) or withholds (0) `view_pii` on an API token.
    pub async fn set_token_view_pii(&self, id: &str, view_pii: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET view_pii = $1 WHERE id = $2")
            .bind(view_pii)
            .bind(id)
            .run(self)
            .await?;
        Ok(())
    }

    /// Stores a session token for a user.
    pub async fn create_session(
        &self,
        token: &ApiTokenRow,
        user_id: &str,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        self.create_api_token(token, token_hash).await?;
        sqlx::query("UPDATE api_tokens SET user_id = $1 WHERE id = $2")
            .bind(user_id)
            .bind(&token.id)
            .run(self)
            .await?;
        Ok(())
    }

    /// Creates a user.
    pub async fn create_user(&self, user: &UserRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, tenant_id, email, password_hash, role, created_at, view_pii) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&user.id)
        .bind(&user.tenant_id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.role)
        .bind(user.created_at)
        .bind(user.view_pii)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| {
            unique_violation(
                e,
                format!("a user with email `{}` already exists", user.email),
            )
        })?;
        Ok(())
    }

    /// One user of a tenant.
    pub async fn user(&self, tenant_id: &str, id: &str) -> Result<Option<UserRow>, StoreError> {
        self.scoped(
            select_users!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// A user by email (any tenant: emails are unique).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        sqlx::query_as::<_, UserRow>(select_users!("WHERE email = $1"))
            .bind(email)
            .one(self)
            .await
    }

    /// A tenant's users, by id after `after`.
    pub async fn list_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UserRow>, StoreError> {
        self.page(
            select_users!("WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            tenant_id,
            after,
            limit,
        )
        .await
    }

    /// Changes a tenant user's role and/or disabled state; the updated row,
    /// or `None` when there is no such user in the tenant.
    pub async fn update_user(
        &self,
        tenant_id: &str,
        id: &str,
        role: Option<Role>,
        disabled_at: Option<Option<i64>>,
        view_pii: Option<Option<i64>>,
    ) -> Result<Option<UserRow>, StoreError> {
        if let Some(view_pii) = view_pii {
            sqlx::query("UPDATE users SET view_pii = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(view_pii)
                .bind(tenant_id)
                .bind(id)
                .run(self)
                .await?;
        }
        if let Some(role) = role {
            sqlx::query("UPDATE users SET role = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(role)
                .bind(tenant_id)
                .bind(id)
                .run(self)
                .await?;
        }
        if let Some(disabled_at) = disabled_at {
            sqlx::query("UPDATE users SET disabled_at = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(disabled_at)
                .bind(tenant_id)
                .bind(id)
                .run(self)
                .await?;
        }
        self.scoped(
            select_users!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// Replaces a user's password hash.
    pub async fn set_user_password(&self, id: &str, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .run(self)
            .await?;
        Ok(())
    }

    /// The ids of a user's sessions (to forget them from caches).
    pub async fn session_ids_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM api_tokens WHERE user_id = $1")
            .bind(user_id)
            .all(self)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(StoreError::from))
            .collect()
    }

    /// A tenant's tokens, by id after `after`.
    pub async fn list_api_tokens(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiTokenRow>, StoreError> {
        self.page(
            select_tokens!("WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            tenant_id,
            after,
            limit,
        )
        .await
    }

    /// Revokes a tenant's token; false when there is no such token.
    pub async fn revoke_api_token(
        &self,
        tenant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3")
            .bind(now)
            .bind(tenant_id)
            .bind(id)
            .run(self)
            .await?;
        self.scoped(
            select_tokens!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// One API token of a tenant.
    pub async fn api_token(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        self.scoped(
            select_tokens!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// Records a token's use.
    pub async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .run(self)
            .await?;
        Ok(())
    }

    /// A tenant's wrapped data key.
    pub async fn tenant_key(&self, tenant_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant_id)
            .one(self)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("wrapped_key")?),
            None => None,
        })
    }

    /// Stores a tenant's first data key; false if one exists already.
    pub async fn insert_tenant_key(
        &self,
        tenant_id: &str,
        wrapped: &str,
        master_key_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO tenant_keys (tenant_id, wrapped_key, master_key_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(wrapped)
        .bind(master_key_id)
        .bind(now_unix())
        .run(self)
        .await?;
        Ok(done > 0)
    }

    /// Every wrapped data key: (tenant id, wrapped key).
    pub async fn tenant_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, wrapped_key FROM tenant_keys ORDER BY tenant_id")
            .all(self)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tenant_id")?, r.try_get("wrapped_key")?)))
            .collect()
    }

    /// Replaces wrapped data keys in one transaction (master key rotation).
    pub async fn replace_tenant_keys(
        &self,
        keys: &[(String, String)],
        master_key_id: &str,
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        for (tenant_id, wrapped) in keys {
            sqlx::query(
                "UPDATE tenant_keys SET wrapped_key = $1, master_key_id = $2 WHERE tenant_id = $3",
            )
            .bind(wrapped)
            .bind(master_key_id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends to the audit log.
    pub async fn audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (id, tenant_id, at, actor, action, resource_type, resource_id, source_ip, request_id, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.resource_type)
        .bind(&e.resource_id)
        .bind(&e.source_ip)
        .bind(&e.request_id)
        .bind(&e.details)
        .run(self)
        .await?;
        Ok(())
    }

    /// A tenant's audit entries (or the platform's, with `None`), newest first.
    pub async fn list_audit(
        &self,
        tenant_id: Option<&str>,
        f: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // Two statements, not `($1 IS NULL AND tenant_id IS NULL) OR tenant_id = $1`:
        // each walks the (tenant_id, id) index backwards instead of scanning the log.
        let sql = match tenant_id {
            Some(_) => select_audit!("tenant_id = $1"),
            None => select_audit!("tenant_id IS NULL AND CAST($1 AS TEXT) IS NULL"),
        };
        sqlx::query_as::<_, AuditEntry>(sql)
            .bind(tenant_id)
            .bind(&f.action)
            .bind(&f.resource_type)
            .bind(&f.resource_id)
            .bind(&f.before)
            .bind(limit)
            .bind(&f.actor)
            .bind(f.since)
            .all(self)
            .await
    }
}
