//! Connections, their sealed credential fields, health history and the
//! API-call log. Every query takes the tenant.

use sqlx::Connection as _;
use sqlx::FromRow;

use super::{Exec as _, Fetch as _, Store, StoreError, unique_violation};

/// A connection.
#[derive(Debug, Clone, FromRow)]
pub struct ConnectionRow {
    /// Id (`con_…`).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The connector it is made from.
    pub connector_id: String,
    /// The connector version it stays on.
    pub connector_version: String,
    /// The connector's slug (kept for the call log).
    pub connector_slug: String,
    /// Unique per tenant.
    pub name: String,
    /// The auth scheme type in use.
    pub auth_type: String,
    /// Base URL override.
    pub base_url: Option<String>,
    /// JSON settings.
    pub settings: String,
    /// `cloud`, `agent_group` or `proxy`.
    pub execution_mode: String,
    /// For `agent_group`.
    pub agent_group_id: Option<String>,
    /// For `proxy`.
    pub proxy_url: Option<String>,
    /// `inactive` or `active`.
    pub status: String,
    /// `unchecked`, `healthy`, `degraded` or `offline`.
    pub health: String,
    /// Last health check.
    pub health_checked_at: Option<i64>,
    /// Bumped on each credential change.
    pub credentials_version: i64,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// One health check.
#[derive(Debug, Clone, FromRow)]
pub struct HealthRow {
    /// The connection.
    pub connection_id: String,
    /// When.
    pub at: i64,
    /// `healthy`, `degraded` or `offline`.
    pub status: String,
    /// The Test Connection outcome.
    pub outcome: String,
    /// What happened.
    pub detail: String,
    /// How long it took.
    pub duration_ms: i64,
}

/// The bodies of a recorded call (capped; sensitive personal values masked).
#[derive(Debug, Clone, Default, FromRow)]
pub struct CallPayloadRow {
    /// The call (`call_…`).
    pub call_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// What was sent, if anything.
    pub request_body: Option<String>,
    /// What came back, if anything.
    pub response_body: Option<String>,
    /// 1 when the request body was cut at the cap.
    pub request_truncated: i64,
    /// 1 when the response body was cut at the cap.
    pub response_truncated: i64,
    /// When (Unix seconds).
    pub at: i64,
}

/// One recorded connector call.
#[derive(Debug, Clone, FromRow)]
pub struct ApiCallRow {
    /// Time-ordered id (`call_…`).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The connection (may since be deleted).
    pub connection_id: String,
    /// Its connector.
    pub connector_id: String,
    /// Its name at the time.
    pub connection_name: String,
    /// The connector.
    pub connector_slug: String,
    /// Operation id.
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// URL without credentials.
    pub url: String,
    /// HTTP status, if any.
    pub status: Option<i64>,
    /// 1 when it succeeded.
    pub ok: i64,
    /// Error class when it failed.
    pub error_class: Option<String>,
    /// Duration at the control plane.
    pub duration_us: i64,
    /// Response body size.
    pub response_bytes: i64,
    /// Tries.
    pub attempts: i64,
    /// `cloud` or the agent id.
    pub ran_on: String,
    /// Who asked.
    pub actor: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// Filters of the call log.
#[derive(Debug, Clone, Default)]
pub struct ApiCallFilter {
    /// One connection.
    pub connection_id: Option<String>,
    /// One operation.
    pub operation: Option<String>,
    /// `ok` or `failed`.
    pub outcome: Option<String>,
    /// One error class.
    pub error_class: Option<String>,
    /// Older than this id (cursor).
    pub before: Option<String>,
    /// At or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Before this time (Unix seconds).
    pub until: Option<i64>,
}

macro_rules! select_connections {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, connector_id, connector_version, connector_slug, name, auth_type, base_url, \
             settings, execution_mode, agent_group_id, proxy_url, status, health, health_checked_at, \
             credentials_version, created_by, created_at, updated_at FROM connections ",
            $tail
        )
    };
}

macro_rules! select_calls {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, connection_id, connector_id, connection_name, connector_slug, operation, method, \
             url, status, ok, error_class, duration_us, response_bytes, attempts, ran_on, actor, at FROM api_calls ",
            $tail
        )
    };
}

impl Store {
    /// Stores a new connection and its sealed fields, atomically.
    pub async fn create_connection(
        &self,
        c: &ConnectionRow,
        secrets: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO connections (id, tenant_id, connector_id, connector_version, connector_slug, name, \
             auth_type, base_url, settings, execution_mode, agent_group_id, proxy_url, status, health, \
             health_checked_at, credentials_version, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.connector_id)
        .bind(&c.connector_version)
        .bind(&c.connector_slug)
        .bind(&c.name)
        .bind(&c.auth_type)
        .bind(&c.base_url)
        .bind(&c.settings)
        .bind(&c.execution_mode)
        .bind(&c.agent_group_id)
        .bind(&c.proxy_url)
        .bind(&c.status)
        .bind(&c.health)
        .bind(c.health_checked_at)
        .bind(c.credentials_version)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, format!("a connection named `{}` already exists", c.name)))?;
        for (field, sealed) in secrets {
            sqlx::query(
                "INSERT INTO connection_secrets (connection_id, field, sealed) VALUES ($1, $2, $3)",
            )
            .bind(&c.id)
            .bind(field)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One connection of a tenant.
    pub async fn connection(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ConnectionRow>, StoreError> {
        self.scoped(
            select_connections!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// A tenant's connections, by id after `after`.
    pub async fn list_connections(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        self.page(
            select_connections!(
                "WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            tenant_id,
            after,
            limit,
        )
        .await
    }

    /// Every active connection (health monitoring).
    pub async fn active_connections(&self) -> Result<Vec<ConnectionRow>, StoreError> {
        sqlx::query_as::<_, ConnectionRow>(select_connections!(
            "WHERE status = 'active' ORDER BY id"
        ))
        .all(self)
        .await
    }

    /// Writes a connection's settings and state.
    pub async fn update_connection(&self, c: &ConnectionRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET name = $1, base_url = $2, settings = $3, execution_mode = $4, \
             agent_group_id = $5, proxy_url = $6, status = $7, updated_at = $8 WHERE tenant_id = $9 AND id = $10",
        )
        .bind(&c.name)
        .bind(&c.base_url)
        .bind(&c.settings)
        .bind(&c.execution_mode)
        .bind(&c.agent_group_id)
        .bind(&c.proxy_url)
        .bind(&c.status)
        .bind(c.updated_at)
        .bind(&c.tenant_id)
        .bind(&c.id)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| unique_violation(e, format!("a connection named `{}` already exists", c.name)))?;
        Ok(())
    }

    /// Moves a connection to another version of its connector.
    pub async fn set_connection_version(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET connector_version = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(version)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .run(self)
        .await?;
        Ok(())
    }

    /// Replaces a connection's sealed fields (all of them) and bumps its
    /// credentials version.
    pub async fn replace_secrets(
        &self,
        tenant_id: &str,
        id: &str,
        secrets: &[(String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "UPDATE connections SET credentials_version = credentials_version + 1, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM connection_secrets WHERE connection_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for (field, sealed) in secrets {
            sqlx::query(
                "INSERT INTO connection_secrets (connection_id, field, sealed) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(field)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores one sealed field in place (a rotated refresh token), without
    /// changing the credentials version (the agent's cache already has it).
    pub async fn set_secret(&self, id: &str, field: &str, sealed: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connection_secrets (connection_id, field, sealed) VALUES ($1, $2, $3) \
             ON CONFLICT (connection_id, field) DO UPDATE SET sealed = excluded.sealed",
        )
        .bind(id)
        .bind(field)
        .bind(sealed)
        .run(self)
        .await?;
        Ok(())
    }

    /// A connection's sealed fields.
    pub async fn secrets(&self, id: &str) -> Result<Vec<(String, String)>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT field, sealed FROM connection_secrets WHERE connection_id = $1 ORDER BY field",
        )
        .bind(id)
        .all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("field")?,
                    r.try_get::<String, _>("sealed")?,
                ))
            })
            .collect()
    }

    /// Deletes a connection with its secrets and health history.
    pub async fn delete_connection(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        for table in [
            "connection_secrets",
            "connection_health",
            "connection_grants",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE connection_id = $1 AND EXISTS \
                 (SELECT 1 FROM connections WHERE id = $1 AND tenant_id = $2)"
            )))
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        }
        let done = sqlx::query("DELETE FROM connections WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a health check and the connection's new health.
    pub async fn record_health(&self, h: &HealthRow) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO connection_health (connection_id, at, status, outcome, detail, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&h.connection_id)
        .bind(h.at)
        .bind(&h.status)
        .bind(&h.outcome)
        .bind(&h.detail)
        .bind(h.duration_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE connections SET health = $1, health_checked_at = $2 WHERE id = $3")
            .bind(&h.status)
            .bind(h.at)
            .bind(&h.connection_id)
            .execute(&mut *tx)
            .await?;
        // Keep the newest 500 checks per connection.
        sqlx::query(
            "DELETE FROM connection_health WHERE connection_id = $1 AND at < \
             (SELECT MIN(at) FROM (SELECT at FROM connection_health WHERE connection_id = $1 \
              ORDER BY at DESC LIMIT 500) newest)",
        )
        .bind(&h.connection_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A connection's health checks, newest first.
    pub async fn health_history(&self, id: &str, limit: i64) -> Result<Vec<HealthRow>, StoreError> {
        sqlx::query_as::<_, HealthRow>(
            "SELECT connection_id, at, status, outcome, detail, duration_ms FROM connection_health \
             WHERE connection_id = $1 ORDER BY at DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .all(self)
        .await
    }

    /// Appends a batch to the API-call log in one transaction.
    pub async fn record_calls(&self, calls: &[ApiCallRow]) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        for c in calls {
            Self::insert_call(&mut *tx, c).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends calls and their payloads in one transaction.
    pub async fn record_calls_with(
        &self,
        batch: &[(ApiCallRow, Option<CallPayloadRow>)],
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        for (c, _) in batch {
            Self::insert_call(&mut *tx, c).await?;
        }
        for p in batch.iter().filter_map(|(_, p)| p.as_ref()) {
            sqlx::query(
                "INSERT INTO api_call_payloads (call_id, tenant_id, request_body, response_body, \
                 request_truncated, response_truncated, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&p.call_id)
            .bind(&p.tenant_id)
            .bind(&p.request_body)
            .bind(&p.response_body)
            .bind(p.request_truncated)
            .bind(p.response_truncated)
            .bind(p.at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One call of a tenant, with its payload when still kept.
    pub async fn call(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(ApiCallRow, Option<CallPayloadRow>)>, StoreError> {
        let Some(call) =
            sqlx::query_as::<_, ApiCallRow>(select_calls!("WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(id)
                .one(self)
                .await?
        else {
            return Ok(None);
        };
        let payload = sqlx::query_as::<_, CallPayloadRow>(
            "SELECT call_id, tenant_id, request_body, response_body, request_truncated, response_truncated, at \
             FROM api_call_payloads WHERE tenant_id = $1 AND call_id = $2",
        )
        .bind(tenant_id)
        .bind(id)
        .one(self)
        .await?;
        Ok(Some((call, payload)))
    }

    /// Appends to the API-call log.
    pub async fn record_call(&self, c: &ApiCallRow) -> Result<(), StoreError> {
        Self::insert_call(&mut *self.db().await?, c).await
    }

    async fn insert_call<'e, E>(executor: E, c: &ApiCallRow) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        sqlx::query(
            "INSERT INTO api_calls (id, tenant_id, connection_id, connection_name, connector_slug, operation, \
             method, url, status, ok, error_class, duration_us, response_bytes, attempts, ran_on, actor, at, connector_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.connection_id)
        .bind(&c.connection_name)
        .bind(&c.connector_slug)
        .bind(&c.operation)
        .bind(&c.method)
        .bind(&c.url)
        .bind(c.status)
        .bind(c.ok)
        .bind(&c.error_class)
        .bind(c.duration_us)
        .bind(c.response_bytes)
        .bind(c.attempts)
        .bind(&c.ran_on)
        .bind(&c.actor)
        .bind(c.at)
        .bind(&c.connector_id)
        .execute(executor)
        .await?;
        Ok(())
    }

    /// A tenant's call log, newest first.
    pub async fn list_calls(
        &self,
        tenant_id: &str,
        f: &ApiCallFilter,
        limit: i64,
    ) -> Result<Vec<ApiCallRow>, StoreError> {
        sqlx::query_as::<_, ApiCallRow>(
            select_calls!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR connection_id = $2) AND ($3 IS NULL OR operation = $3) \
             AND ($4 IS NULL OR ok = $4) AND ($5 IS NULL OR error_class = $5) AND ($6 IS NULL OR id < $6) \
             AND ($8 IS NULL OR at >= $8) AND ($9 IS NULL OR at < $9) \
             ORDER BY id DESC LIMIT $7"
        ),
        )
        .bind(tenant_id)
        .bind(&f.connection_id)
        .bind(&f.operation)
        .bind(f.outcome.as_deref().map(|o| i64::from(o == "ok")))
        .bind(&f.error_class)
        .bind(&f.before)
        .bind(limit)
        .bind(f.since)
        .bind(f.until)
        .all(self)
        .await
    }

    /// A connection's grants: (subject, role).
    pub async fn grants(&self, connection_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT subject, role FROM connection_grants WHERE connection_id = $1 ORDER BY subject, role",
        )
        .bind(connection_id)
        .all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("subject")?,
                    r.try_get::<String, _>("role")?,
                ))
            })
            .collect()
    }

    /// Replaces a connection's grants.
    pub async fn replace_grants(
        &self,
        connection_id: &str,
        grants: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query("DELETE FROM connection_grants WHERE connection_id = $1")
            .bind(connection_id)
            .execute(&mut *tx)
            .await?;
        for (subject, role) in grants {
            sqlx::query(
                "INSERT INTO connection_grants (connection_id, subject, role) VALUES ($1, $2, $3)",
            )
            .bind(connection_id)
            .bind(subject)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether `subject` holds `role` (or `admin`) on the connection.
    pub async fn has_grant(
        &self,
        connection_id: &str,
        subject: &str,
        role: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "SELECT 1 FROM connection_grants WHERE connection_id = $1 AND subject = $2 AND (role = $3 OR role = 'admin')",
        )
        .bind(connection_id)
        .bind(subject)
        .bind(role)
        .one(self)
        .await?
        .is_some())
    }

    /// Whether a user or token of this tenant exists (`user:usr_…`, `token:tok_…`).
    pub async fn subject_exists(&self, tenant_id: &str, subject: &str) -> Result<bool, StoreError> {
        let (table, id) = match subject.split_once(':') {
            Some(("user", id)) => ("users", id),
            Some(("token", id)) => ("api_tokens", id),
            _ => return Ok(false),
        };
        Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM {table} WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant_id)
        .bind(id)
        .one(self)
        .await?
        .is_some())
    }

    /// (enterprises with a connection, active connections, calls since
    /// `day_ago`, calls since `month_ago`) of a connector.
    pub async fn connector_usage(
        &self,
        connector_id: &str,
        day_ago: i64,
        month_ago: i64,
    ) -> Result<(i64, i64, i64, i64), StoreError> {
        use sqlx::Row as _;
        let c = sqlx::query(
            "SELECT COUNT(DISTINCT tenant_id) AS enterprises, \
             COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0) AS active \
             FROM connections WHERE connector_id = $1",
        )
        .bind(connector_id)
        .fetch_one(&mut *self.db().await?)
        .await?;
        let calls = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN at >= $2 THEN 1 ELSE 0 END), 0) AS day, COUNT(*) AS month \
             FROM api_calls WHERE connector_id = $1 AND at >= $3",
        )
        .bind(connector_id)
        .bind(day_ago)
        .bind(month_ago)
        .fetch_one(&mut *self.db().await?)
        .await?;
        Ok((
            c.try_get::<i64, _>("enterprises")?,
            c.try_get::<i64, _>("active")?,
            calls.try_get::<i64, _>("day")?,
            calls.try_get::<i64, _>("month")?,
        ))
    }

    /// (tenant, connection id, name, version) of every connection of a connector.
    pub async fn connections_of_connector(
        &self,
        connector_id: &str,
    ) -> Result<Vec<(String, String, String, String)>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT tenant_id, id, name, connector_version FROM connections WHERE connector_id = $1 ORDER BY tenant_id, id",
        )
        .bind(connector_id)
        .all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("id")?,
                    r.try_get("name")?,
                    r.try_get("connector_version")?,
                ))
            })
            .collect()
    }

    /// Adds a notification for a tenant.
    pub async fn notify(
        &self,
        tenant_id: &str,
        kind: &str,
        message: &str,
        details: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO notifications (id, tenant_id, kind, message, details, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(crate::support::ids::time_ordered_id("ntf"))
        .bind(tenant_id)
        .bind(kind)
        .bind(message)
        .bind(details)
        .bind(super::now_unix())
        .run(self)
        .await?;
        Ok(())
    }

    /// A tenant's notifications, newest first: (id, kind, message, details, created_at, read_at).
    #[allow(clippy::type_complexity)]
    pub async fn notifications(
        &self,
        tenant_id: &str,
        unread_only: bool,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(String, String, String, String, i64, Option<i64>)>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT id, kind, message, details, created_at, read_at FROM notifications \
             WHERE tenant_id = $1 AND ($2 = 0 OR read_at IS NULL) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(tenant_id)
        .bind(i64::from(unread_only))
        .bind(before)
        .bind(limit)
        .all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("kind")?,
                    r.try_get("message")?,
                    r.try_get("details")?,
                    r.try_get("created_at")?,
                    r.try_get("read_at")?,
                ))
            })
            .collect()
    }

    /// Marks a notification read; false when the tenant has no such notification.
    pub async fn mark_read(&self, tenant_id: &str, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .run(self)
        .await?;
        Ok(done > 0)
    }
}
