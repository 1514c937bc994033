//! Counts for a tenant's overview (the console's dashboard).

use sqlx::Row as _;

use super::{Fetch as _, Store, StoreError};

/// How a tenant's things stand, counted in the database.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    /// Active connections by health (`healthy`, `degraded`, `offline`,
    /// `unchecked`).
    pub connections_by_health: Vec<(String, i64)>,
    /// Inactive connections.
    pub inactive_connections: i64,
    /// Executions created since the start of the day, by status.
    pub executions_by_status: Vec<(String, i64)>,
    /// API calls in the window.
    pub calls: i64,
    /// Of which failed.
    pub failed_calls: i64,
}

impl Store {
    /// Counts a tenant's connections, its executions since `day_start` and
    /// its API calls since `calls_since` (Unix seconds).
    pub async fn overview(
        &self,
        tenant_id: &str,
        day_start: i64,
        calls_since: i64,
    ) -> Result<Overview, StoreError> {
        let mut o = Overview::default();
        let rows = sqlx::query(
            "SELECT status, health, COUNT(*) AS n FROM connections WHERE tenant_id = $1 \
             GROUP BY status, health",
        )
        .bind(tenant_id)
        .all(self)
        .await?;
        for r in rows {
            let (status, health, n): (String, String, i64) =
                (r.try_get("status")?, r.try_get("health")?, r.try_get("n")?);
            if status == "active" {
                o.connections_by_health.push((health, n));
            } else {
                o.inactive_connections += n;
            }
        }
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM executions WHERE tenant_id = $1 AND created_at >= $2 \
             GROUP BY status",
        )
        .bind(tenant_id)
        .bind(day_start)
        .all(self)
        .await?;
        for r in rows {
            o.executions_by_status
                .push((r.try_get("status")?, r.try_get("n")?));
        }
        if let Some(r) = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CASE WHEN ok = 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS failed \
             FROM api_calls WHERE tenant_id = $1 AND at >= $2",
        )
        .bind(tenant_id)
        .bind(calls_since)
        .one(self)
        .await?
        {
            o.calls = r.try_get("n")?;
            o.failed_calls = r.try_get::<i64, _>("failed")?;
        }
        Ok(o)
    }
}
