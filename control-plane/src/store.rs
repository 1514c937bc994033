//! The control plane's persistent state, in SQL.
//!
//! Two backends share one set of queries and migrations: SQLite, the
//! embedded default (one file in the data directory, WAL), and PostgreSQL
//! (`--database-url postgres://…`). The SQL is written to run unchanged on
//! both: `$n` parameters, `BIGINT` Unix seconds for times, `RETURNING`.
//! Migrations in `control-plane/migrations/` are applied at start, and a
//! database migrated by a newer release is refused. Every query that touches
//! tenant data takes the tenant id, so another tenant's row is simply not
//! found. No sqlx type leaves this module.

use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Connection as _, Pool, Transaction};
use sqlx::{Executor as _, FromRow, Row};
use tokio::sync::{Mutex, MutexGuard};

/// `SELECT <every agent column> FROM agents <tail>`, as a static string.
macro_rules! select_agents {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, group_id, name, hostname, version, enrolled_at, last_seen, cert_not_after, revoked_at \
             FROM agents ",
            $tail
        )
    };
}

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

/// `SELECT <every connector column> FROM connectors <tail>`, as a static string.
macro_rules! select_connectors {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, slug, name, category, status, definition, created_by, created_at, updated_at, \
             scope, latest_version, review_status, review_reason, deprecated_until, deprecation_message \
             FROM connectors ",
            $tail
        )
    };
}

mod catalogue;
mod cdm;
mod connections;
mod executions;
mod limits;
mod orchestrations;
pub use catalogue::{CatalogueFilter, CatalogueRow, VersionRow};
pub use cdm::DeadLetterItem;
pub use connections::{ApiCallFilter, ApiCallRow, CallPayloadRow, ConnectionRow, HealthRow};
pub use executions::{ExecutionRow, StepRow};
pub use orchestrations::{OrchestrationRow, OrchestrationVersionRow};

/// Storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a query.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL names no supported backend.
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    Url(String),
    /// A unique name is taken.
    #[error("{0}")]
    Conflict(String),
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
    /// `active` or `suspended`.
    pub status: String,
    /// `free`, `standard` or `premium`.
    pub tier: String,
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
    pub role: String,
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
    /// Role name.
    pub role: String,
    /// Creation time.
    pub created_at: i64,
    /// When disabled, if disabled.
    pub disabled_at: Option<i64>,
    /// `view_pii` given (1) or withheld (0); `None` follows the role.
    pub view_pii: Option<i64>,
}

/// A connector (its definition as JSON text).
#[derive(Debug, Clone, FromRow)]
pub struct ConnectorRow {
    /// Id (`cnr_…`).
    pub id: String,
    /// The tenant that owns it.
    pub tenant_id: String,
    /// From the definition.
    pub slug: String,
    /// From the definition.
    pub name: String,
    /// From the definition.
    pub category: String,
    /// `draft`, `published` or `deprecated`.
    pub status: String,
    /// The working definition, JSON (what the next version will freeze).
    pub definition: String,
    /// Who created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// `enterprise` or `global`, once published.
    pub scope: Option<String>,
    /// The newest frozen version, once published.
    pub latest_version: Option<String>,
    /// `pending` or `rejected` while submitted for the global catalogue.
    pub review_status: Option<String>,
    /// Why a review was rejected.
    pub review_reason: Option<String>,
    /// When a deprecated connector unpublishes itself.
    pub deprecated_until: Option<i64>,
    /// What deprecated users should do.
    pub deprecation_message: Option<String>,
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
}

/// An agent group.
#[derive(Debug, Clone, FromRow)]
pub struct AgentGroup {
    /// Id (`grp_…`).
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Unique within the tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Creation time (Unix seconds).
    pub created_at: i64,
}

/// An enrolled agent.
#[derive(Debug, Clone, FromRow)]
pub struct AgentRow {
    /// Id (`agt_…`).
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Group.
    pub group_id: String,
    /// Display name.
    pub name: String,
    /// Host it last reported.
    pub hostname: String,
    /// Release it last reported.
    pub version: String,
    /// Enrollment time.
    pub enrolled_at: i64,
    /// Last contact.
    pub last_seen: Option<i64>,
    /// Current certificate expiry.
    pub cert_not_after: i64,
    /// Revocation time.
    pub revoked_at: Option<i64>,
}

/// What redeeming an enrollment token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeem {
    /// Redeemed now: the tenant and group the agent joins.
    Ok {
        /// Tenant.
        tenant_id: String,
        /// Group.
        group_id: String,
        /// The token's id.
        token_id: String,
    },
    /// No such token.
    Unknown,
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
}

/// Which SQL server holds the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The database. A clone shares the pool; [`Store::begin`] gives a store
/// whose every query runs in one transaction until [`Store::commit`].
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool<Any>,
    backend: Backend,
    tx: Option<Arc<Mutex<Option<Transaction<'static, Any>>>>>,
}

/// A connection for one query: from the pool, or the store's transaction.
enum Db<'a> {
    Pooled(PoolConnection<Any>),
    Tx(MutexGuard<'a, Option<Transaction<'static, Any>>>),
}

impl std::ops::Deref for Db<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            Db::Pooled(c) => c,
            Db::Tx(t) => t.as_ref().expect("a store used after its commit"),
        }
    }
}

impl std::ops::DerefMut for Db<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            Db::Pooled(c) => c,
            Db::Tx(t) => t.as_mut().expect("a store used after its commit"),
        }
    }
}

/// Hides the password of a database URL for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub use dibop_runtime::support::now_unix;

impl Store {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        Self::open(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Opens the database at `url` (`sqlite://PATH` or `postgres://…`) and
    /// applies migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(redact_url(url)));
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        options = match backend {
            // One writer at a time is SQLite's model; a few readers share the WAL.
            Backend::Sqlite => options.max_connections(8).after_connect(|conn, _| {
                Box::pin(async move {
                    // First, so that the pragmas after it wait for a lock held by
                    // another process (`dibop admin` beside `dibop serve`) too.
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options.max_connections(16),
        };
        let pool = options.connect(url).await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store {
            pool,
            backend,
            tx: None,
        })
    }

    /// Connects once to a PostgreSQL `url` and runs `SELECT 1`, changing
    /// nothing (for `--check-config`); SQLite URLs are not opened.
    pub async fn ping_url(url: &str) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        if url.starts_with("sqlite:") {
            return Ok(());
        }
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(url).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    /// A store whose queries all run in one new transaction: the change
    /// and its audit entry commit together or not at all. Nothing is
    /// written until [`Store::commit`]; dropping it rolls back. Queries of
    /// the returned store wait for each other (one connection).
    ///
    /// On SQLite the transaction takes the write lock at once (`BEGIN
    /// IMMEDIATE`): one that read first and wrote later would otherwise fail
    /// at its first write whenever another connection wrote in between.
    pub async fn begin(&self) -> Result<Store, StoreError> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Store {
            pool: self.pool.clone(),
            backend: self.backend,
            tx: Some(Arc::new(Mutex::new(Some(tx)))),
        })
    }

    /// Commits the transaction [`Store::begin`] opened (a store outside a
    /// transaction has nothing to commit).
    pub async fn commit(self) -> Result<(), StoreError> {
        if let Some(tx) = self.tx
            && let Some(tx) = tx.lock().await.take()
        {
            tx.commit().await?;
        }
        Ok(())
    }

    /// The connection for the next query.
    async fn db(&self) -> Result<Db<'_>, StoreError> {
        Ok(match &self.tx {
            None => Db::Pooled(self.pool.acquire().await?),
            Some(tx) => Db::Tx(tx.lock().await),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

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
            status: "active".into(),
            tier: "standard".into(),
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
        Ok(
            sqlx::query_as::<_, Tenant>(select_tenants!("WHERE name = $1"))
                .bind(name)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// Finds a tenant by id.
    pub async fn tenant(&self, id: &str) -> Result<Option<Tenant>, StoreError> {
        Ok(
            sqlx::query_as::<_, Tenant>(select_tenants!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// All tenants, by id after `after`.
    pub async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Tenant>, StoreError> {
        Ok(sqlx::query_as::<_, Tenant>(select_tenants!(
            "WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
    }

    /// Stores a tenant's status and plan.
    pub async fn update_tenant_plan(&self, t: &Tenant) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tenants SET status = $1, tier = $2, calls_per_month = $3, requests_per_minute = $4, \
             enterprise_publishing = $5, concurrent_executions = $7, storage_bytes = $8, retention_days = $9 \
             WHERE id = $6",
        )
        .bind(&t.status)
        .bind(&t.tier)
        .bind(t.calls_per_month)
        .bind(t.requests_per_minute)
        .bind(t.enterprise_publishing)
        .bind(&t.id)
        .bind(t.concurrent_executions)
        .bind(t.storage_bytes)
        .bind(t.retention_days)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// Calls counted for a tenant in a period (`YYYY-MM`).
    pub async fn usage(&self, tenant_id: &str, period: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT calls FROM usage_counters WHERE tenant_id = $1 AND period = $2")
                .bind(tenant_id)
                .bind(period)
                .fetch_optional(&mut *self.db().await?)
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
        .execute(&mut *self.db().await?)
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
        .bind(&token.role)
        .bind(token_hash)
        .bind(token.created_at)
        .bind(&token.prefix)
        .bind(token.expires_at)
        .bind(token.view_pii)
        .execute(&mut *self.db().await?)
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
        Ok(sqlx::query_as::<_, ApiTokenRow>(
            "SELECT t.id, t.tenant_id, t.name, COALESCE(u.role, t.role) AS role, t.prefix, t.created_at, \
                    t.expires_at, COALESCE(t.revoked_at, u.disabled_at) AS revoked_at, t.last_used_at, t.user_id, \
                    CASE WHEN t.user_id IS NULL THEN t.view_pii ELSE u.view_pii END AS view_pii \
             FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *self.db().await?)
        .await?)
    }

    /// Gives (1) or withholds (0) `view_pii` on an API token.
    pub async fn set_token_view_pii(&self, id: &str, view_pii: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET view_pii = $1 WHERE id = $2")
            .bind(view_pii)
            .bind(id)
            .execute(&mut *self.db().await?)
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
            .execute(&mut *self.db().await?)
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
        .bind(&user.role)
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

    /// A user by email (any tenant: emails are unique).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, UserRow>(select_users!("WHERE email = $1"))
                .bind(email)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// A tenant's users, by id after `after`.
    pub async fn list_users(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UserRow>, StoreError> {
        Ok(sqlx::query_as::<_, UserRow>(select_users!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
    }

    /// Changes a tenant user's role and/or disabled state; the updated row,
    /// or `None` when there is no such user in the tenant.
    pub async fn update_user(
        &self,
        tenant_id: &str,
        id: &str,
        role: Option<&str>,
        disabled_at: Option<Option<i64>>,
        view_pii: Option<Option<i64>>,
    ) -> Result<Option<UserRow>, StoreError> {
        if let Some(view_pii) = view_pii {
            sqlx::query("UPDATE users SET view_pii = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(view_pii)
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *self.db().await?)
                .await?;
        }
        if let Some(role) = role {
            sqlx::query("UPDATE users SET role = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(role)
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *self.db().await?)
                .await?;
        }
        if let Some(disabled_at) = disabled_at {
            sqlx::query("UPDATE users SET disabled_at = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(disabled_at)
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *self.db().await?)
                .await?;
        }
        Ok(
            sqlx::query_as::<_, UserRow>(select_users!("WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// Replaces a user's password hash.
    pub async fn set_user_password(&self, id: &str, password_hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash)
            .bind(id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// The ids of a user's sessions (to forget them from caches).
    pub async fn session_ids_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM api_tokens WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&mut *self.db().await?)
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
        Ok(sqlx::query_as::<_, ApiTokenRow>(select_tokens!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
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
            .execute(&mut *self.db().await?)
            .await?;
        Ok(
            sqlx::query_as::<_, ApiTokenRow>(select_tokens!("WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// One API token of a tenant.
    pub async fn api_token(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, ApiTokenRow>(select_tokens!("WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// Records a token's use.
    pub async fn touch_api_token(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// A tenant's wrapped data key.
    pub async fn tenant_key(&self, tenant_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&mut *self.db().await?)
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
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every wrapped data key: (tenant id, wrapped key).
    pub async fn tenant_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, wrapped_key FROM tenant_keys ORDER BY tenant_id")
            .fetch_all(&mut *self.db().await?)
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

    /// Claims an idempotency key; `Ok(None)` when newly claimed (in
    /// progress), else the existing record (fingerprint, status, sealed response).
    pub async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        tenant_id: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<(String, i64, String)>, StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2 AND created_at < $3",
        )
        .bind(scope)
        .bind(key)
        .bind(now - 24 * 3600)
        .execute(&mut *self.db().await?)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, idem_key, tenant_id, fingerprint, status, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (scope, idem_key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(tenant_id)
        .bind(fingerprint)
        .bind(now)
        .execute(&mut *self.db().await?)
        .await?;
        if inserted.rows_affected() > 0 {
            return Ok(None);
        }
        let row = sqlx::query("SELECT fingerprint, status, response FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(scope)
            .bind(key)
            .fetch_one(&mut *self.db().await?)
            .await?;
        Ok(Some((
            row.try_get("fingerprint")?,
            row.try_get::<i64, _>("status")?,
            row.try_get("response")?,
        )))
    }

    /// Stores the outcome of a claimed key.
    pub async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        status: i64,
        response: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE idempotency_keys SET status = $1, response = $2 WHERE scope = $3 AND idem_key = $4")
            .bind(status)
            .bind(response)
            .bind(scope)
            .bind(key)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// Releases a claimed key (the request failed on our side; a retry may run).
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(scope)
            .bind(key)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// Stores a new connector.
    pub async fn create_connector(&self, c: &ConnectorRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connectors (id, tenant_id, slug, name, category, status, definition, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.slug)
        .bind(&c.name)
        .bind(&c.category)
        .bind(&c.status)
        .bind(&c.definition)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| unique_violation(e, format!("a connector with slug `{}` already exists", c.slug)))?;
        Ok(())
    }

    /// One connector of a tenant.
    pub async fn connector(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ConnectorRow>, StoreError> {
        Ok(sqlx::query_as::<_, ConnectorRow>(select_connectors!(
            "WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *self.db().await?)
        .await?)
    }

    /// A tenant's connectors, by id after `after`.
    pub async fn list_connectors(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ConnectorRow>, StoreError> {
        Ok(sqlx::query_as::<_, ConnectorRow>(select_connectors!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
    }

    /// Replaces a connector's working definition; false when there is no such connector.
    pub async fn update_connector(&self, c: &ConnectorRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connectors SET slug = $1, name = $2, category = $3, definition = $4, updated_at = $5 \
             WHERE tenant_id = $6 AND id = $7",
        )
        .bind(&c.slug)
        .bind(&c.name)
        .bind(&c.category)
        .bind(&c.definition)
        .bind(c.updated_at)
        .bind(&c.tenant_id)
        .bind(&c.id)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| unique_violation(e, format!("a connector with slug `{}` already exists", c.slug)))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a draft that was never published; false when there is no such draft.
    pub async fn delete_connector(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM connectors WHERE tenant_id = $1 AND id = $2 AND status = 'draft' \
             AND latest_version IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() > 0)
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
        .execute(&mut *self.db().await?)
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
        Ok(sqlx::query_as::<_, AuditEntry>(
            "SELECT id, tenant_id, at, actor, action, resource_type, resource_id, source_ip, request_id, details \
             FROM audit_log \
             WHERE (($1 IS NULL AND tenant_id IS NULL) OR tenant_id = $1) \
               AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR resource_type = $3) \
               AND ($4 IS NULL OR resource_id = $4) AND ($5 IS NULL OR id < $5) \
             ORDER BY id DESC LIMIT $6",
        )
        .bind(tenant_id)
        .bind(&f.action)
        .bind(&f.resource_type)
        .bind(&f.resource_id)
        .bind(&f.before)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
    }

    /// Creates an agent group.
    pub async fn create_group(&self, group: &AgentGroup) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_groups (id, tenant_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&group.id)
        .bind(&group.tenant_id)
        .bind(&group.name)
        .bind(&group.description)
        .bind(group.created_at)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| unique_violation(e, format!("an agent group named `{}` already exists", group.name)))?;
        Ok(())
    }

    /// Lists a tenant's groups, by name, after `after_name` when given.
    pub async fn list_groups(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AgentGroup>, StoreError> {
        Ok(sqlx::query_as::<_, AgentGroup>(
            "SELECT id, tenant_id, name, description, created_at FROM agent_groups \
             WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
    }

    /// One group of a tenant.
    pub async fn group(&self, tenant_id: &str, id: &str) -> Result<Option<AgentGroup>, StoreError> {
        Ok(sqlx::query_as::<_, AgentGroup>(
            "SELECT id, tenant_id, name, description, created_at FROM agent_groups WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *self.db().await?)
        .await?)
    }

    /// Stores a new enrollment token (its secret's hash only).
    pub async fn create_enrollment_token(
        &self,
        id: &str,
        tenant_id: &str,
        group_id: &str,
        secret_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant_id, group_id, secret_hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(group_id)
        .bind(secret_hash)
        .bind(expires_at)
        .bind(now_unix())
        .execute(&mut *self.db().await?)
        .await?;
        Ok(())
    }

    /// Marks a token used, once: concurrent redemptions of one token cannot
    /// both succeed.
    pub async fn redeem_enrollment_token(
        &self,
        secret_hash: &str,
        now: i64,
    ) -> Result<Redeem, StoreError> {
        let row = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = $1 \
             WHERE secret_hash = $2 AND used_at IS NULL AND expires_at > $1 \
             RETURNING id, tenant_id, group_id",
        )
        .bind(now)
        .bind(secret_hash)
        .fetch_optional(&mut *self.db().await?)
        .await?;
        if let Some(row) = row {
            return Ok(Redeem::Ok {
                token_id: row.try_get("id")?,
                tenant_id: row.try_get("tenant_id")?,
                group_id: row.try_get("group_id")?,
            });
        }
        let state =
            sqlx::query("SELECT used_at, expires_at FROM enrollment_tokens WHERE secret_hash = $1")
                .bind(secret_hash)
                .fetch_optional(&mut *self.db().await?)
                .await?;
        Ok(match state {
            None => Redeem::Unknown,
            Some(row) if row.try_get::<Option<i64>, _>("used_at")?.is_some() => Redeem::Used,
            Some(_) => Redeem::Expired,
        })
    }

    /// Records an enrolled agent and links it to its token.
    pub async fn create_agent(&self, agent: &AgentRow, token_id: &str) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, group_id, name, hostname, version, enrolled_at, last_seen, cert_not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&agent.id)
        .bind(&agent.tenant_id)
        .bind(&agent.group_id)
        .bind(&agent.name)
        .bind(&agent.hostname)
        .bind(&agent.version)
        .bind(agent.enrolled_at)
        .bind(agent.last_seen)
        .bind(agent.cert_not_after)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE enrollment_tokens SET agent_id = $1 WHERE id = $2")
            .bind(&agent.id)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One agent, whatever its tenant (for the tunnel, which knows only the
    /// certificate).
    pub async fn agent_any_tenant(&self, id: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, AgentRow>(select_agents!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// One agent of a tenant.
    pub async fn agent(&self, tenant_id: &str, id: &str) -> Result<Option<AgentRow>, StoreError> {
        Ok(
            sqlx::query_as::<_, AgentRow>(select_agents!("WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *self.db().await?)
                .await?,
        )
    }

    /// A tenant's agents, optionally of one group, by id after `after`.
    pub async fn list_agents(
        &self,
        tenant_id: &str,
        group_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AgentRow>, StoreError> {
        Ok(sqlx::query_as::<_, AgentRow>(select_agents!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR group_id = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(group_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db().await?)
        .await?)
    }

    /// Records what an agent reported when it connected.
    pub async fn agent_connected(
        &self,
        id: &str,
        hostname: &str,
        version: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET hostname = $1, version = $2, last_seen = $3 WHERE id = $4")
            .bind(hostname)
            .bind(version)
            .bind(now)
            .bind(id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// Updates the last contact time.
    pub async fn agent_seen(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// Records a renewed certificate.
    pub async fn agent_renewed(&self, id: &str, not_after: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET cert_not_after = $1 WHERE id = $2")
            .bind(not_after)
            .bind(id)
            .execute(&mut *self.db().await?)
            .await?;
        Ok(())
    }

    /// Revokes an agent of a tenant; false when there is no such agent.
    pub async fn revoke_agent(
        &self,
        tenant_id: &str,
        id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *self.db().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn unique_violation(e: sqlx::Error, message: String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(message),
        _ => StoreError::Db(e),
    }
}

/// Test databases: the store test suite runs against every backend.
#[cfg(test)]
pub(crate) mod testdb {
    use super::*;

    /// The environment variable naming a PostgreSQL server for tests.
    pub const POSTGRES_ENV: &str = "DIBOP_TEST_POSTGRES_URL";

    /// A fresh, empty, migrated database.
    pub struct TestDb {
        pub store: Store,
        pub name: &'static str,
        _dir: Option<tempfile::TempDir>,
        drop: Option<(String, String)>,
    }

    impl TestDb {
        /// Closes the store and drops a PostgreSQL test database.
        pub async fn finish(self) {
            self.store.close().await;
            if let Some((admin, db)) = self.drop {
                sqlx::any::install_default_drivers();
                if let Ok(pool) = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin)
                    .await
                {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            }
        }
    }

    /// SQLite always; PostgreSQL too when `DIBOP_TEST_POSTGRES_URL` is set
    /// (a new database per test on that server, dropped afterwards).
    pub async fn all() -> Vec<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open_sqlite(&dir.path().join("dibop.db"))
            .await
            .unwrap();
        let mut dbs = vec![TestDb {
            store: sqlite,
            name: "sqlite",
            _dir: Some(dir),
            drop: None,
        }];
        match std::env::var(POSTGRES_ENV) {
            Ok(admin) if !admin.is_empty() => {
                sqlx::any::install_default_drivers();
                let db = format!(
                    "dibop_test_{}",
                    crate::support::ids::new_id("db").trim_start_matches("db_")
                );
                let pool = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(&admin)
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                let base = admin.split('?').next().unwrap_or(&admin);
                let url = format!("{}/{db}", &base[..base.rfind('/').unwrap_or(base.len())]);
                let store = Store::open(&url).await.unwrap();
                dbs.push(TestDb {
                    store,
                    name: "postgres",
                    _dir: None,
                    drop: Some((admin, db)),
                });
            }
            _ => eprintln!(
                "{POSTGRES_ENV} is not set: this store test runs on SQLite only (PostgreSQL SKIPPED)"
            ),
        }
        dbs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call slots and breaker changes, as replicas share them.
    #[tokio::test]
    async fn pacing_slots_and_breakers_are_shared() {
        for db in testdb::all().await {
            let store = &db.store;
            // Slots 500 µs apart from an idle start; a slot given back is reused.
            assert_eq!(
                store.reserve_slot("con_a", 10_000, 500).await.unwrap(),
                10_500,
                "{}",
                db.name
            );
            assert_eq!(
                store.reserve_slot("con_a", 10_100, 500).await.unwrap(),
                11_000
            );
            assert_eq!(store.reserve_slot("con_a", 0, -500).await.unwrap(), 10_500);
            assert_eq!(
                store.reserve_slot("con_a", 20_000, 500).await.unwrap(),
                20_500
            );
            store.set_breaker("con_a", 99_000, 3, 1_000).await.unwrap();
            store.set_breaker("con_b", 0, 0, 2_000).await.unwrap();
            let changed = store.breakers_since(1_500).await.unwrap();
            assert_eq!(changed, [("con_b".to_owned(), 0, 0, 2_000)], "{}", db.name);
            store.set_breaker("con_a", 0, 0, 3_000).await.unwrap();
            assert_eq!(store.breakers_since(2_500).await.unwrap().len(), 1);
        }
    }

    async fn seed(store: &Store) {
        store.create_tenant("ten_a", "A").await.unwrap();
        store.create_tenant("ten_b", "B").await.unwrap();
        let group = AgentGroup {
            id: "grp_a".into(),
            tenant_id: "ten_a".into(),
            name: "site".into(),
            description: String::new(),
            created_at: 0,
        };
        store.create_group(&group).await.unwrap();
    }

    #[tokio::test]
    async fn tokens_redeem_once_and_expire() {
        for db in testdb::all().await {
            let store = &db.store;
            seed(store).await;
            store
                .create_enrollment_token("enr_1", "ten_a", "grp_a", "h1", 1_000)
                .await
                .unwrap();
            store
                .create_enrollment_token("enr_2", "ten_a", "grp_a", "h2", 1_000)
                .await
                .unwrap();
            assert!(
                matches!(
                    store.redeem_enrollment_token("h1", 500).await.unwrap(),
                    Redeem::Ok { .. }
                ),
                "{}",
                db.name
            );
            assert_eq!(
                store.redeem_enrollment_token("h1", 501).await.unwrap(),
                Redeem::Used,
                "{}",
                db.name
            );
            assert_eq!(
                store.redeem_enrollment_token("h2", 1_000).await.unwrap(),
                Redeem::Expired,
                "{}",
                db.name
            );
            assert_eq!(
                store.redeem_enrollment_token("nope", 1).await.unwrap(),
                Redeem::Unknown,
                "{}",
                db.name
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn concurrent_redemptions_of_one_token_succeed_once() {
        for db in testdb::all().await {
            seed(&db.store).await;
            db.store
                .create_enrollment_token("enr_1", "ten_a", "grp_a", "h1", i64::MAX)
                .await
                .unwrap();
            let tries = (0..8).map(|i| {
                let store = db.store.clone();
                tokio::spawn(
                    async move { store.redeem_enrollment_token("h1", 100 + i).await.unwrap() },
                )
            });
            let mut wins = 0;
            for t in tries {
                if matches!(t.await.unwrap(), Redeem::Ok { .. }) {
                    wins += 1;
                }
            }
            assert_eq!(wins, 1, "{}", db.name);
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn groups_and_agents_are_scoped_to_their_tenant() {
        for db in testdb::all().await {
            let store = &db.store;
            seed(store).await;
            assert!(store.group("ten_a", "grp_a").await.unwrap().is_some());
            assert!(
                store.group("ten_b", "grp_a").await.unwrap().is_none(),
                "{}",
                db.name
            );
            assert!(
                store
                    .list_groups("ten_b", None, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            let dup = AgentGroup {
                id: "grp_x".into(),
                tenant_id: "ten_a".into(),
                name: "site".into(),
                description: String::new(),
                created_at: 0,
            };
            assert!(
                matches!(store.create_group(&dup).await, Err(StoreError::Conflict(_))),
                "{}",
                db.name
            );

            store
                .create_enrollment_token("enr_1", "ten_a", "grp_a", "h1", i64::MAX)
                .await
                .unwrap();
            let agent = AgentRow {
                id: "agt_1".into(),
                tenant_id: "ten_a".into(),
                group_id: "grp_a".into(),
                name: "gw".into(),
                hostname: "gw".into(),
                version: "0.1.0".into(),
                enrolled_at: 10,
                last_seen: None,
                cert_not_after: 99,
                revoked_at: None,
            };
            store.create_agent(&agent, "enr_1").await.unwrap();
            assert_eq!(
                store
                    .list_agents("ten_a", None, None, 10)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(
                store
                    .list_agents("ten_a", Some("grp_a"), None, 10)
                    .await
                    .unwrap()
                    .len(),
                1
            );
            assert!(
                store
                    .list_agents("ten_a", None, Some("agt_1"), 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "cursor"
            );
            assert!(
                store.agent("ten_b", "agt_1").await.unwrap().is_none(),
                "{}",
                db.name
            );
            assert!(
                !store.revoke_agent("ten_b", "agt_1", 50).await.unwrap(),
                "another tenant cannot revoke"
            );
            assert!(store.revoke_agent("ten_a", "agt_1", 50).await.unwrap());
            assert!(store.revoke_agent("ten_a", "agt_1", 60).await.unwrap());
            let row = store.agent_any_tenant("agt_1").await.unwrap().unwrap();
            assert_eq!(row.revoked_at, Some(50), "the first revocation time stays");
            store
                .agent_connected("agt_1", "host-2", "0.2.0", 70)
                .await
                .unwrap();
            store.agent_renewed("agt_1", 500).await.unwrap();
            let row = store.agent("ten_a", "agt_1").await.unwrap().unwrap();
            assert_eq!(
                (
                    row.hostname.as_str(),
                    row.version.as_str(),
                    row.last_seen,
                    row.cert_not_after
                ),
                ("host-2", "0.2.0", Some(70), 500)
            );
            db.finish().await;
        }
    }

    fn token(id: &str, tenant: &str) -> ApiTokenRow {
        ApiTokenRow {
            id: id.into(),
            tenant_id: tenant.into(),
            name: "ci".into(),
            role: "operator".into(),
            prefix: "dibop_ab".into(),
            created_at: 1,
            expires_at: Some(1_000),
            revoked_at: None,
            last_used_at: None,
            user_id: None,
            view_pii: None,
        }
    }

    #[tokio::test]
    async fn api_tokens_resolve_list_and_revoke_within_their_tenant() {
        for db in testdb::all().await {
            let store = &db.store;
            seed(store).await;
            store
                .create_api_token(&token("tok_1", "ten_a"), "hash1")
                .await
                .unwrap();
            store
                .create_api_token(&token("tok_2", "ten_b"), "hash2")
                .await
                .unwrap();
            let t = store.api_token_by_hash("hash1").await.unwrap().unwrap();
            assert_eq!(
                (t.tenant_id.as_str(), t.role.as_str(), t.expires_at),
                ("ten_a", "operator", Some(1_000))
            );
            assert!(store.api_token_by_hash("other").await.unwrap().is_none());
            assert_eq!(
                store
                    .list_api_tokens("ten_a", None, 10)
                    .await
                    .unwrap()
                    .len(),
                1,
                "{}",
                db.name
            );
            assert!(
                store
                    .revoke_api_token("ten_a", "tok_2", 5)
                    .await
                    .unwrap()
                    .is_none(),
                "another tenant's token"
            );
            assert_eq!(
                store
                    .revoke_api_token("ten_a", "tok_1", 5)
                    .await
                    .unwrap()
                    .unwrap()
                    .revoked_at,
                Some(5)
            );
            store.touch_api_token("tok_1", 9).await.unwrap();
            assert_eq!(
                store
                    .api_token_by_hash("hash1")
                    .await
                    .unwrap()
                    .unwrap()
                    .last_used_at,
                Some(9)
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn audit_entries_filter_page_and_stay_in_their_tenant() {
        for db in testdb::all().await {
            let store = &db.store;
            seed(store).await;
            for (i, (tenant, action)) in [
                (Some("ten_a"), "group.create"),
                (Some("ten_a"), "agent.revoke"),
                (Some("ten_b"), "group.create"),
                (None, "tenant.create"),
            ]
            .into_iter()
            .enumerate()
            {
                let entry = AuditEntry {
                    id: format!("aud_{i:04}"),
                    tenant_id: tenant.map(str::to_owned),
                    at: i as i64,
                    actor: "token:tok_1".into(),
                    action: action.into(),
                    resource_type: action.split('.').next().unwrap_or("").into(),
                    resource_id: format!("r{i}"),
                    source_ip: "127.0.0.1".into(),
                    request_id: "req_1".into(),
                    details: "{}".into(),
                };
                store.audit(&entry).await.unwrap();
            }
            let all = store
                .list_audit(Some("ten_a"), &AuditFilter::default(), 10)
                .await
                .unwrap();
            let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(
                ids,
                ["aud_0001", "aud_0000"],
                "newest first, own tenant only ({})",
                db.name
            );
            let f = AuditFilter {
                action: Some("agent.revoke".into()),
                ..Default::default()
            };
            assert_eq!(
                store.list_audit(Some("ten_a"), &f, 10).await.unwrap().len(),
                1
            );
            let f = AuditFilter {
                before: Some("aud_0001".into()),
                ..Default::default()
            };
            assert_eq!(
                store.list_audit(Some("ten_a"), &f, 10).await.unwrap()[0].id,
                "aud_0000"
            );
            let platform = store
                .list_audit(None, &AuditFilter::default(), 10)
                .await
                .unwrap();
            assert_eq!(
                platform.len(),
                1,
                "platform entries are separate ({})",
                db.name
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn reopening_keeps_data_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dibop.db");
        let store = Store::open_sqlite(&path).await.unwrap();
        store.create_tenant("ten_a", "A").await.unwrap();
        // A release from the future applied migration 9999.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (9999, 'future', '2030-01-01', TRUE, X'00', 0)",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        store.close().await;
        let err = Store::open_sqlite(&path).await.unwrap_err();
        assert!(matches!(err, StoreError::Migrate(_)), "{err}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://dibop:s3cret@db:5432/dibop"),
            "postgres://dibop:***@db:5432/dibop"
        );
        assert_eq!(
            redact_url("postgres://dibop@db/dibop"),
            "postgres://dibop@db/dibop"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/dibop/dibop.db"),
            "sqlite:///var/lib/dibop/dibop.db"
        );
    }
}
