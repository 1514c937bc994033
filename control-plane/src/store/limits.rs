//! Shared request-rate windows, storage accounting and retention.

use sqlx::Connection as _;
use sqlx::Row;

use super::{Exec as _, Fetch as _, Store, StoreError};

/// Bytes a tenant's rows take, per table, as one `SELECT tenant_id, bytes`.
///
/// `LENGTH` counts characters of the stored text (JSON payloads, definitions,
/// URLs); each row adds a fixed overhead for its keys, numbers and index
/// entries, so many small rows are not free.
const STORAGE_QUERIES: [&str; 7] = [
    "SELECT tenant_id, SUM(COALESCE(LENGTH(url), 0) + LENGTH(operation) + LENGTH(connection_name) \
     + COALESCE(LENGTH(error_class), 0) + 160) AS bytes FROM api_calls GROUP BY tenant_id",
    "SELECT tenant_id, SUM(LENGTH(parameters) + COALESCE(LENGTH(output), 0) \
     + COALESCE(LENGTH(error), 0) + 200) AS bytes FROM executions GROUP BY tenant_id",
    "SELECT e.tenant_id, SUM(COALESCE(LENGTH(s.input), 0) + COALESCE(LENGTH(s.output), 0) \
     + COALESCE(LENGTH(s.error), 0) + LENGTH(s.path) + 120) AS bytes \
     FROM execution_steps s JOIN executions e ON e.id = s.execution_id GROUP BY e.tenant_id",
    "SELECT o.tenant_id, SUM(LENGTH(v.definition) + 100) AS bytes \
     FROM orchestration_versions v JOIN orchestrations o ON o.id = v.orchestration_id GROUP BY o.tenant_id",
    "SELECT c.tenant_id, SUM(LENGTH(v.definition) + LENGTH(v.changes) + LENGTH(v.release_notes) + 200) AS bytes \
     FROM connector_versions v JOIN connectors c ON c.id = v.connector_id GROUP BY c.tenant_id",
    "SELECT tenant_id, SUM(LENGTH(definition) + 200) AS bytes FROM connectors GROUP BY tenant_id",
    "SELECT tenant_id, SUM(COALESCE(LENGTH(request_body), 0) + COALESCE(LENGTH(response_body), 0) + 60) AS bytes \
     FROM api_call_payloads GROUP BY tenant_id",
];

/// A tenant's measured storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUsage {
    /// Tenant.
    pub tenant_id: String,
    /// Bytes, as last measured.
    pub bytes: i64,
    /// When (Unix seconds).
    pub measured_at: i64,
}

impl Store {
    /// Shares a connection's breaker: open until `open_until_ms` (0: closed).
    pub async fn set_breaker(
        &self,
        connection_id: &str,
        open_until_ms: i64,
        failures: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connection_breakers (connection_id, open_until_ms, failures, updated_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (connection_id) DO UPDATE SET \
             open_until_ms = excluded.open_until_ms, failures = excluded.failures, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(connection_id)
        .bind(open_until_ms)
        .bind(failures)
        .bind(now_ms)
        .run(self)
        .await?;
        Ok(())
    }

    /// Breakers changed after `since_ms`: (connection, open until, failures, changed at).
    pub async fn breakers_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(String, i64, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT connection_id, open_until_ms, failures, updated_at_ms FROM connection_breakers \
             WHERE updated_at_ms > $1",
        )
        .bind(since_ms)
        .all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("connection_id")?,
                    r.try_get("open_until_ms")?,
                    r.try_get("failures")?,
                    r.try_get("updated_at_ms")?,
                ))
            })
            .collect()
    }

    /// Reserves the next call slot of a rate-limited connection (GCRA,
    /// atomic in the database): the new theoretical arrival time, in
    /// microseconds like `now_us` and `interval_us`.
    pub async fn reserve_slot(
        &self,
        connection_id: &str,
        now_us: i64,
        interval_us: i64,
    ) -> Result<i64, StoreError> {
        let sql = match self.backend {
            super::Backend::Postgres => {
                "INSERT INTO connection_pacing (connection_id, tat_us) VALUES ($1, $2 + $3) \
                 ON CONFLICT (connection_id) DO UPDATE SET \
                 tat_us = GREATEST(connection_pacing.tat_us, $2) + $3 RETURNING tat_us"
            }
            super::Backend::Sqlite => {
                "INSERT INTO connection_pacing (connection_id, tat_us) VALUES ($1, $2 + $3) \
                 ON CONFLICT (connection_id) DO UPDATE SET \
                 tat_us = MAX(connection_pacing.tat_us, $2) + $3 RETURNING tat_us"
            }
        };
        let row = sqlx::query(sql)
            .bind(connection_id)
            .bind(now_us)
            .bind(interval_us)
            .fetch_one(&mut *self.db().await?)
            .await?;
        Ok(row.try_get("tat_us")?)
    }

    /// Adds requests counted by `node` to the shared per-minute windows.
    pub async fn add_rate_requests(
        &self,
        node: &str,
        counts: &[(String, i64, i64)],
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        for (tenant, window, n) in counts {
            sqlx::query(
                "INSERT INTO rate_windows (tenant_id, window_start, node_id, requests) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, window_start, node_id) \
                 DO UPDATE SET requests = rate_windows.requests + excluded.requests",
            )
            .bind(tenant)
            .bind(window)
            .bind(node)
            .bind(n)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Requests counted by every node but `node` in windows from `since`:
    /// `(tenant, window_start, requests)`.
    pub async fn rate_of_others(
        &self,
        node: &str,
        since: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, window_start, CAST(SUM(requests) AS BIGINT) AS requests FROM rate_windows \
             WHERE window_start >= $1 AND node_id <> $2 GROUP BY tenant_id, window_start",
        )
        .bind(since)
        .bind(node)
        .all(self)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("tenant_id")?,
                    r.try_get("window_start")?,
                    r.try_get("requests")?,
                ))
            })
            .collect()
    }

    /// Forgets rate windows that started before `before`.
    pub async fn prune_rate_windows(&self, before: i64) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
            .bind(before)
            .run(self)
            .await
    }

    /// Measures every tenant's stored bytes and records them.
    pub async fn measure_storage(&self, now: i64) -> Result<Vec<StorageUsage>, StoreError> {
        let mut totals = std::collections::BTreeMap::<String, i64>::new();
        for tenant in sqlx::query("SELECT id FROM tenants").all(self).await? {
            totals.insert(tenant.try_get("id")?, 0);
        }
        for q in STORAGE_QUERIES {
            for row in sqlx::query(q).all(self).await? {
                let tenant: String = row.try_get(0)?;
                let bytes: Option<i64> = row.try_get(1)?;
                *totals.entry(tenant).or_default() += bytes.unwrap_or(0);
            }
        }
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        let mut out = Vec::with_capacity(totals.len());
        for (tenant_id, bytes) in totals {
            sqlx::query(
                "INSERT INTO storage_usage (tenant_id, bytes, measured_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET bytes = excluded.bytes, measured_at = excluded.measured_at",
            )
            .bind(&tenant_id)
            .bind(bytes)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            out.push(StorageUsage {
                tenant_id,
                bytes,
                measured_at: now,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every tenant's last measured storage.
    pub async fn storage_usage(&self) -> Result<Vec<StorageUsage>, StoreError> {
        let rows = sqlx::query("SELECT tenant_id, bytes, measured_at FROM storage_usage")
            .all(self)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StorageUsage {
                    tenant_id: r.try_get("tenant_id")?,
                    bytes: r.try_get("bytes")?,
                    measured_at: r.try_get("measured_at")?,
                })
            })
            .collect()
    }

    /// One tenant's last measured storage, if measured.
    pub async fn tenant_storage(
        &self,
        tenant_id: &str,
    ) -> Result<Option<StorageUsage>, StoreError> {
        let row = sqlx::query("SELECT bytes, measured_at FROM storage_usage WHERE tenant_id = $1")
            .bind(tenant_id)
            .one(self)
            .await?;
        row.map(|r| {
            Ok(StorageUsage {
                tenant_id: tenant_id.to_owned(),
                bytes: r.try_get("bytes")?,
                measured_at: r.try_get("measured_at")?,
            })
        })
        .transpose()
    }

    /// Deletes a tenant's call payloads older than `cutoff` (they are kept
    /// for less time than the call records); how many.
    pub async fn prune_call_payloads(
        &self,
        tenant_id: &str,
        cutoff: i64,
    ) -> Result<u64, StoreError> {
        sqlx::query("DELETE FROM api_call_payloads WHERE tenant_id = $1 AND at < $2")
            .bind(tenant_id)
            .bind(cutoff)
            .run(self)
            .await
    }

    /// Deletes a tenant's call records and finished executions (with their
    /// steps) older than `cutoff`, keeping open dead letters. Returns
    /// `(calls, executions)` deleted.
    pub async fn prune_tenant_history(
        &self,
        tenant_id: &str,
        cutoff: i64,
    ) -> Result<(u64, u64), StoreError> {
        sqlx::query("DELETE FROM api_call_payloads WHERE tenant_id = $1 AND at < $2")
            .bind(tenant_id)
            .bind(cutoff)
            .run(self)
            .await?;
        let calls = sqlx::query("DELETE FROM api_calls WHERE tenant_id = $1 AND at < $2")
            .bind(tenant_id)
            .bind(cutoff)
            .run(self)
            .await?;
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "DELETE FROM execution_steps WHERE execution_id IN (SELECT id FROM executions \
             WHERE tenant_id = $1 AND finished_at IS NOT NULL AND finished_at < $2 \
             AND (dead_letter IS NULL OR dead_letter <> 'open'))",
        )
        .bind(tenant_id)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
        let executions = sqlx::query(
            "DELETE FROM executions WHERE tenant_id = $1 AND finished_at IS NOT NULL \
             AND finished_at < $2 AND (dead_letter IS NULL OR dead_letter <> 'open')",
        )
        .bind(tenant_id)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((calls, executions))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdb;
    use crate::store::{ApiCallRow, ExecutionRow, StepRow};

    fn execution(id: &str, tenant: &str) -> ExecutionRow {
        ExecutionRow {
            id: id.into(),
            tenant_id: tenant.into(),
            orchestration_id: "orc_1".into(),
            orchestration_name: "sync".into(),
            version: 1,
            status: crate::domain::ExecutionStatus::Queued,
            parameters: r#"{"vin":"1HGCM82633A004352"}"#.into(),
            output: None,
            error: None,
            trigger_type: "api".into(),
            created_by: "test".into(),
            created_at: 0,
            started_at: None,
            finished_at: None,
            rerun_of: None,
            dead_letter: None,
        }
    }

    fn call(id: &str, tenant: &str, at: i64) -> ApiCallRow {
        ApiCallRow {
            id: id.into(),
            tenant_id: tenant.into(),
            connection_id: "con_1".into(),
            connector_id: "cnr_1".into(),
            connection_name: "DMS".into(),
            connector_slug: "dms".into(),
            operation: "list_vehicles".into(),
            method: "GET".into(),
            url: "https://dms.example/api/v1/vehicles".into(),
            status: Some(200),
            ok: 1,
            error_class: None,
            duration_us: 1_000,
            response_bytes: 10,
            attempts: 1,
            ran_on: "cloud".into(),
            actor: "test".into(),
            at,
        }
    }

    #[tokio::test]
    async fn rate_windows_are_shared_between_nodes() {
        for db in testdb::all().await {
            let s = &db.store;
            let counts = vec![("ten_a".to_owned(), 100, 7), ("ten_a".to_owned(), 101, 2)];
            s.add_rate_requests("node_1", &counts).await.unwrap();
            s.add_rate_requests("node_1", &counts[1..]).await.unwrap();
            s.add_rate_requests("node_2", &[("ten_a".to_owned(), 101, 5)])
                .await
                .unwrap();
            let mut seen_by_2 = s.rate_of_others("node_2", 100).await.unwrap();
            seen_by_2.sort();
            assert_eq!(
                seen_by_2,
                vec![("ten_a".to_owned(), 100, 7), ("ten_a".to_owned(), 101, 4)],
                "{}",
                db.name
            );
            assert_eq!(
                s.rate_of_others("node_1", 101).await.unwrap(),
                vec![("ten_a".to_owned(), 101, 5)]
            );
            assert_eq!(s.prune_rate_windows(101).await.unwrap(), 1);
            assert_eq!(s.rate_of_others("node_2", 0).await.unwrap().len(), 1);
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn execution_claims_are_exclusive_expire_and_count_against_the_tenant_limit() {
        for db in testdb::all().await {
            let s = &db.store;
            s.create_tenant("ten_a", "A").await.unwrap();
            for id in ["exe_1", "exe_2", "exe_3"] {
                s.create_execution(&execution(id, "ten_a")).await.unwrap();
            }
            let now = 1_000;
            // Node A takes exe_1; B cannot take it while A's lease lives.
            assert!(
                s.claim_execution("exe_1", "ten_a", "node_a", now, now + 15, 2)
                    .await
                    .unwrap()
            );
            assert!(
                !s.claim_execution("exe_1", "ten_a", "node_b", now, now + 15, 2)
                    .await
                    .unwrap()
            );
            // The tenant may run two: B takes exe_2, nobody a third.
            assert!(
                s.claim_execution("exe_2", "ten_a", "node_b", now, now + 15, 2)
                    .await
                    .unwrap()
            );
            assert!(
                !s.claim_execution("exe_3", "ten_a", "node_a", now, now + 15, 2)
                    .await
                    .unwrap(),
                "{}",
                db.name
            );
            // A finished execution frees its slot.
            s.update_execution(
                "exe_2",
                crate::domain::ExecutionStatus::Succeeded,
                None,
                None,
                now,
            )
            .await
            .unwrap();
            assert!(
                s.claim_execution("exe_3", "ten_a", "node_a", now, now + 15, 2)
                    .await
                    .unwrap()
            );
            // A's leases run out (A stopped): B finds and takes its executions.
            let later = now + 20;
            let mut orphans = s.orphaned_executions("node_b", later).await.unwrap();
            orphans.sort();
            assert_eq!(orphans, ["exe_1", "exe_3"], "{}", db.name);
            assert!(
                s.claim_execution("exe_1", "ten_a", "node_b", later, later + 15, 2)
                    .await
                    .unwrap()
            );
            // A renewing keeps what it still holds.
            assert_eq!(s.renew_leases("node_a", later + 15).await.unwrap(), 1);
            assert_eq!(
                s.execution_lease("exe_3").await.unwrap(),
                Some((Some("node_a".to_owned()), Some(later + 15)))
            );
            assert!(
                s.orphaned_executions("node_c", later)
                    .await
                    .unwrap()
                    .is_empty()
            );
            db.finish().await;
        }
    }

    #[tokio::test]
    async fn storage_is_measured_per_tenant_and_retention_keeps_open_dead_letters() {
        for db in testdb::all().await {
            let s = &db.store;
            s.create_tenant("ten_a", "A").await.unwrap();
            s.create_tenant("ten_b", "B").await.unwrap();
            let now = 10_000_000;
            let old = now - 40 * 86_400;
            for (id, status, at) in [
                ("exe_old", Some("succeeded"), old),
                ("exe_dead", Some("failed"), old),
                ("exe_new", Some("succeeded"), now),
                ("exe_run", None, now),
            ] {
                s.create_execution(&execution(id, "ten_a")).await.unwrap();
                if let Some(status) = status {
                    s.update_execution(id, status.parse().unwrap(), None, None, at)
                        .await
                        .unwrap();
                }
            }
            s.start_step(&StepRow {
                execution_id: "exe_old".into(),
                path: "steps[0]".into(),
                seq: 0,
                step_id: "decode".into(),
                step_type: "call".into(),
                status: "succeeded".into(),
                input: Some("x".repeat(10_000)),
                output: None,
                error: None,
                attempts: 1,
                started_at: old,
                finished_at: None,
                duration_ms: None,
            })
            .await
            .unwrap();
            s.record_calls(&[call("cal_1", "ten_a", old), call("cal_2", "ten_a", now)])
                .await
                .unwrap();
            let before = s.measure_storage(now).await.unwrap();
            let a = before
                .iter()
                .find(|u| u.tenant_id == "ten_a")
                .unwrap()
                .bytes;
            let b = before
                .iter()
                .find(|u| u.tenant_id == "ten_b")
                .unwrap()
                .bytes;
            assert!(a > 10_000, "{}: {a}", db.name);
            assert_eq!(b, 0, "{}", db.name);
            assert_eq!(s.tenant_storage("ten_a").await.unwrap().unwrap().bytes, a);

            // Another tenant's retention touches nothing of ten_a.
            assert_eq!(s.prune_tenant_history("ten_b", now).await.unwrap(), (0, 0));
            let cutoff = now - 30 * 86_400;
            assert_eq!(
                s.prune_tenant_history("ten_a", cutoff).await.unwrap(),
                (1, 1),
                "{}",
                db.name
            );
            assert!(s.execution("ten_a", "exe_old").await.unwrap().is_none());
            for kept in ["exe_dead", "exe_new", "exe_run"] {
                assert!(
                    s.execution("ten_a", kept).await.unwrap().is_some(),
                    "{kept}"
                );
            }
            let after = s.measure_storage(now + 1).await.unwrap();
            let a2 = after.iter().find(|u| u.tenant_id == "ten_a").unwrap().bytes;
            assert!(a2 < a - 10_000, "{}: {a2} vs {a}", db.name);
            db.finish().await;
        }
    }
}
