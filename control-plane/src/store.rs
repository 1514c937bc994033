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

use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Pool, Transaction};
use sqlx::{Executor as _, FromRow};
use tokio::sync::{Mutex, MutexGuard};

/// A bound query run on a store's connection (its pool, or its transaction).
trait Fetch<T> {
    /// The row it finds, if any.
    async fn one(self, store: &Store) -> Result<Option<T>, StoreError>;
    /// Every row it finds.
    async fn all(self, store: &Store) -> Result<Vec<T>, StoreError>;
}

impl<T> Fetch<T> for sqlx::query::QueryAs<'_, Any, T, AnyArguments>
where
    T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
{
    async fn one(self, store: &Store) -> Result<Option<T>, StoreError> {
        Ok(self.fetch_optional(&mut *store.db().await?).await?)
    }

    async fn all(self, store: &Store) -> Result<Vec<T>, StoreError> {
        Ok(self.fetch_all(&mut *store.db().await?).await?)
    }
}

impl Fetch<AnyRow> for sqlx::query::Query<'_, Any, AnyArguments> {
    async fn one(self, store: &Store) -> Result<Option<AnyRow>, StoreError> {
        Ok(self.fetch_optional(&mut *store.db().await?).await?)
    }

    async fn all(self, store: &Store) -> Result<Vec<AnyRow>, StoreError> {
        Ok(self.fetch_all(&mut *store.db().await?).await?)
    }
}

/// A bound statement run on a store's connection.
trait Exec {
    /// Runs it; how many rows it changed.
    async fn run(self, store: &Store) -> Result<u64, StoreError>;
}

impl Exec for sqlx::query::Query<'_, Any, AnyArguments> {
    async fn run(self, store: &Store) -> Result<u64, StoreError> {
        Ok(self.execute(&mut *store.db().await?).await?.rows_affected())
    }
}

mod agents;
mod catalogue;
mod cdm;
mod connections;
mod executions;
mod idempotency;
mod identity;
mod limits;
mod orchestrations;
mod overview;
mod sso;
pub use agents::{AgentGroup, AgentRow, Redeem};
pub use catalogue::{CatalogueFilter, CatalogueRow, ConnectorRow, VersionRow};
pub use cdm::DeadLetterItem;
pub use connections::{ApiCallFilter, ApiCallRow, CallPayloadRow, ConnectionRow, HealthRow};
pub use executions::{ExecutionRow, StepRow};
pub use identity::{ApiTokenRow, AuditEntry, AuditFilter, Tenant, UserRow};
pub use orchestrations::{OrchestrationRow, OrchestrationVersionRow};
pub use overview::Overview;
pub use sso::{SsoLoginRow, SsoRow};

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

    /// One row of a tenant by id: `sql` takes the tenant as `$1`, the id as `$2`.
    async fn scoped<T>(
        &self,
        sql: &'static str,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        sqlx::query_as(sql).bind(tenant_id).bind(id).one(self).await
    }

    /// A page of a tenant's rows by id: `sql` takes the tenant as `$1`, the
    /// id to start after as `$2`, the page size as `$3`.
    async fn page<T>(
        &self,
        sql: &'static str,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<T>, StoreError>
    where
        T: Send + Unpin + for<'r> FromRow<'r, AnyRow>,
    {
        let q = sqlx::query_as(sql).bind(tenant_id).bind(after);
        q.bind(limit).all(self).await
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").run(self).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Stores the shared vocabulary's enums as their text.
macro_rules! text_columns {
    ($($t:ty),+) => {$(
        impl sqlx::Type<Any> for $t {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<Any>>::type_info()
            }
        }

        impl sqlx::Encode<'_, Any> for $t {
            fn encode_by_ref(
                &self,
                buf: &mut <Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'_, Any>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, Any> for $t {
            fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<'r, Any>>::decode(value)?.parse()?)
            }
        }
    )+};
}

text_columns!(
    crate::domain::Role,
    crate::domain::Tier,
    crate::domain::TenantStatus,
    crate::domain::ExecutionStatus
);

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
            role: crate::domain::Role::Operator,
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
                actor: Some("token:tok_1".into()),
                since: Some(0),
                ..Default::default()
            };
            assert_eq!(
                store.list_audit(Some("ten_a"), &f, 10).await.unwrap().len(),
                2
            );
            let f = AuditFilter {
                actor: Some("nobody".into()),
                ..Default::default()
            };
            assert!(
                store
                    .list_audit(Some("ten_a"), &f, 10)
                    .await
                    .unwrap()
                    .is_empty()
            );
            let f = AuditFilter {
                since: Some(i64::MAX),
                ..Default::default()
            };
            assert!(
                store
                    .list_audit(Some("ten_a"), &f, 10)
                    .await
                    .unwrap()
                    .is_empty()
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
