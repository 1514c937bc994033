//! Executions and their step records.

use crate::domain::ExecutionStatus;
use sqlx::Connection as _;
use sqlx::FromRow;

use super::{Exec as _, Fetch as _, Store, StoreError};

/// One execution of an orchestration version.
#[derive(Debug, Clone, FromRow)]
pub struct ExecutionRow {
    /// Id (`exe_…`, time-ordered).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The orchestration.
    pub orchestration_id: String,
    /// Its name when started.
    pub orchestration_name: String,
    /// The pinned version.
    pub version: i64,
    /// Where it is in its life.
    pub status: ExecutionStatus,
    /// The run's parameters (JSON).
    pub parameters: String,
    /// The result (JSON), when finished.
    pub output: Option<String>,
    /// Why it failed (JSON `{class, message, step}`).
    pub error: Option<String>,
    /// `manual`, `api`, `schedule`, `webhook`, `rerun`.
    pub trigger_type: String,
    /// Who started it.
    pub created_by: String,
    /// When queued.
    pub created_at: i64,
    /// When it first ran.
    pub started_at: Option<i64>,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// The execution this one re-runs.
    pub rerun_of: Option<String>,
    /// Dead-letter state of a failed execution: `open`, `replayed`, `discarded`.
    pub dead_letter: Option<String>,
}

impl ExecutionRow {
    /// A new, queued execution of the newest version of `o`.
    pub fn queued(
        o: &super::OrchestrationRow,
        parameters: String,
        trigger: &str,
        created_by: String,
    ) -> ExecutionRow {
        ExecutionRow {
            id: crate::support::ids::time_ordered_id("exe"),
            tenant_id: o.tenant_id.clone(),
            orchestration_id: o.id.clone(),
            orchestration_name: o.name.clone(),
            version: o.latest_version,
            status: ExecutionStatus::Queued,
            parameters,
            output: None,
            error: None,
            trigger_type: trigger.into(),
            created_by,
            created_at: super::now_unix(),
            started_at: None,
            finished_at: None,
            rerun_of: None,
            dead_letter: None,
        }
    }
}

/// One step's record in an execution.
#[derive(Debug, Clone, FromRow)]
pub struct StepRow {
    /// The execution.
    pub execution_id: String,
    /// Where the step is (`steps[2].then[0]`, `steps[3].steps[0]#7`).
    pub path: String,
    /// Order of first start.
    pub seq: i64,
    /// The step's id.
    pub step_id: String,
    /// The step's type.
    pub step_type: String,
    /// running, succeeded, failed, skipped.
    pub status: String,
    /// Input after reference resolution (JSON).
    pub input: Option<String>,
    /// Output (JSON).
    pub output: Option<String>,
    /// Error (JSON).
    pub error: Option<String>,
    /// Tries.
    pub attempts: i64,
    /// When it (last) started.
    pub started_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// How long it took.
    pub duration_ms: Option<i64>,
}

macro_rules! select_executions {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, orchestration_id, orchestration_name, version, status, parameters, output, error, \
             trigger_type, created_by, created_at, started_at, finished_at, rerun_of, dead_letter FROM executions ",
            $tail
        )
    };
}

impl Store {
    /// Stores a new (queued) execution.
    pub async fn create_execution(&self, e: &ExecutionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO executions (id, tenant_id, orchestration_id, orchestration_name, version, status, parameters, \
             trigger_type, created_by, created_at, rerun_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&e.id)
        .bind(&e.tenant_id)
        .bind(&e.orchestration_id)
        .bind(&e.orchestration_name)
        .bind(e.version)
        .bind(e.status)
        .bind(&e.parameters)
        .bind(&e.trigger_type)
        .bind(&e.created_by)
        .bind(e.created_at)
        .bind(&e.rerun_of)
        .run(self)
        .await?;
        Ok(())
    }

    /// An execution of a tenant.
    pub async fn execution(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ExecutionRow>, StoreError> {
        self.scoped(
            select_executions!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// An execution of any tenant (the engine).
    pub async fn execution_any(&self, id: &str) -> Result<Option<ExecutionRow>, StoreError> {
        sqlx::query_as::<_, ExecutionRow>(select_executions!("WHERE id = $1"))
            .bind(id)
            .one(self)
            .await
    }

    /// A tenant's executions, newest first.
    pub async fn list_executions(
        &self,
        tenant_id: &str,
        orchestration_id: Option<&str>,
        status: Option<ExecutionStatus>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ExecutionRow>, StoreError> {
        sqlx::query_as::<_, ExecutionRow>(select_executions!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR orchestration_id = $2) AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(orchestration_id)
        .bind(status)
        .bind(before)
        .bind(limit).all(self).await
    }

    /// Unfinished executions no live node holds (never claimed, claimed by
    /// `node` itself in an earlier life, or with a lease that ran out).
    /// Sub-orchestration runs are left out: their parent runs them.
    pub async fn orphaned_executions(
        &self,
        node: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query(
            "SELECT id FROM executions WHERE status IN ('queued', 'running') \
             AND trigger_type <> 'orchestration' \
             AND (owner IS NULL OR owner = $1 OR lease_until < $2) ORDER BY id",
        )
        .bind(node)
        .bind(now)
        .all(self)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Claims an unfinished execution of `tenant_id` for `node` until
    /// `until`, if no other live node holds it and fewer than `limit` of the
    /// tenant's executions are claimed with a live lease (on any node).
    /// Returns whether it is now `node`'s (and `running`). On PostgreSQL the check and the
    /// claim hold a per-tenant advisory lock, so two nodes cannot both take
    /// the last slot; SQLite serialises writes anyway.
    pub async fn claim_execution(
        &self,
        id: &str,
        tenant_id: &str,
        node: &str,
        now: i64,
        until: i64,
        limit: i64,
    ) -> Result<bool, StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        if self.backend == super::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))::TEXT AS locked")
                .bind(tenant_id)
                .fetch_one(&mut *tx)
                .await?;
        }
        let claimed = sqlx::query(
            "UPDATE executions SET owner = $2, lease_until = $3, status = 'running', \
             started_at = COALESCE(started_at, $4) \
             WHERE id = $1 AND status IN ('queued', 'running') \
             AND (owner IS NULL OR owner = $2 OR lease_until < $4) \
             AND (SELECT COUNT(*) FROM executions r WHERE r.tenant_id = $6 \
                  AND r.status IN ('queued', 'running') AND r.owner IS NOT NULL \
                  AND r.id <> $1 AND r.lease_until >= $4) < $5",
        )
        .bind(id)
        .bind(node)
        .bind(until)
        .bind(now)
        .bind(limit)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Who holds an execution: `(owner, lease_until)`.
    pub async fn execution_lease(
        &self,
        id: &str,
    ) -> Result<Option<(Option<String>, Option<i64>)>, StoreError> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT owner, lease_until FROM executions WHERE id = $1")
            .bind(id)
            .one(self)
            .await?;
        row.map(|r| Ok((r.try_get("owner")?, r.try_get("lease_until")?)))
            .transpose()
    }

    /// Extends the leases of `node`'s unfinished executions.
    pub async fn renew_leases(&self, node: &str, until: i64) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE executions SET lease_until = $2 WHERE owner = $1 AND status IN ('queued', 'running')",
        )
        .bind(node)
        .bind(until)
        .run(self)
        .await
    }

    /// Moves an execution to `status` unless it already ended; false when it had.
    pub async fn update_execution(
        &self,
        id: &str,
        status: ExecutionStatus,
        output: Option<&str>,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let finished = status.is_finished();
        let done = sqlx::query(
            "UPDATE executions SET status = $1, output = COALESCE($2, output), error = COALESCE($3, error), \
             started_at = COALESCE(started_at, $4), finished_at = CASE WHEN $5 = 1 THEN $4 ELSE finished_at END, \
             dead_letter = CASE WHEN $1 = 'failed' THEN 'open' ELSE dead_letter END \
             WHERE id = $6 AND status NOT IN ('succeeded', 'partially_succeeded', 'failed', 'cancelled')",
        )
        .bind(status)
        .bind(output)
        .bind(error)
        .bind(now)
        .bind(i64::from(finished))
        .bind(id)
        .run(self)
        .await?;
        Ok(done > 0)
    }

    /// Rewrites the step inputs and outputs of an execution longer than
    /// `limit` with what `clip` makes of them. Returns how many were cut.
    pub async fn clip_step_payloads(
        &self,
        execution_id: &str,
        limit: usize,
        clip: fn(&str, usize) -> Option<String>,
    ) -> Result<u64, StoreError> {
        let rows = sqlx::query(
            "SELECT path, input, output FROM execution_steps WHERE execution_id = $1 \
             AND (LENGTH(input) > $2 OR LENGTH(output) > $2)",
        )
        .bind(execution_id)
        .bind(limit as i64)
        .all(self)
        .await?;
        let mut cut = 0;
        for row in rows {
            use sqlx::Row as _;
            let path: String = row.try_get("path")?;
            let input: Option<String> = row.try_get("input")?;
            let output: Option<String> = row.try_get("output")?;
            let input = input.as_deref().and_then(|t| clip(t, limit));
            let output = output.as_deref().and_then(|t| clip(t, limit));
            cut += u64::from(input.is_some()) + u64::from(output.is_some());
            sqlx::query(
                "UPDATE execution_steps SET input = COALESCE($1, input), output = COALESCE($2, output) \
                 WHERE execution_id = $3 AND path = $4",
            )
            .bind(input)
            .bind(output)
            .bind(execution_id)
            .bind(&path)
            .run(self)
            .await?;
        }
        Ok(cut)
    }

    /// An execution's step records, in the order they started.
    pub async fn step_records(&self, execution_id: &str) -> Result<Vec<StepRow>, StoreError> {
        sqlx::query_as::<_, StepRow>(
            "SELECT execution_id, path, seq, step_id, step_type, status, input, output, error, attempts, started_at, \
             finished_at, duration_ms FROM execution_steps WHERE execution_id = $1 ORDER BY seq",
        )
        .bind(execution_id).all(self).await
    }

    /// Records that a step starts (again).
    pub async fn start_step(&self, s: &StepRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO execution_steps (execution_id, path, seq, step_id, step_type, status, input, attempts, started_at) \
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8) \
             ON CONFLICT (execution_id, path) DO UPDATE SET status = 'running', input = excluded.input, \
             attempts = excluded.attempts, started_at = excluded.started_at, output = NULL, error = NULL",
        )
        .bind(&s.execution_id)
        .bind(&s.path)
        .bind(s.seq)
        .bind(&s.step_id)
        .bind(&s.step_type)
        .bind(&s.input)
        .bind(s.attempts)
        .bind(s.started_at)
        .run(self)
        .await?;
        Ok(())
    }

    /// Records steps that were not taken as `skipped` (their reason in
    /// `error`); a step already recorded keeps its record.
    pub async fn skip_steps(&self, rows: &[StepRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        for s in rows {
            sqlx::query(
                "INSERT INTO execution_steps (execution_id, path, seq, step_id, step_type, status, error, attempts, started_at, finished_at, duration_ms) \
                 VALUES ($1, $2, $3, $4, $5, 'skipped', $6, 0, $7, $7, 0) ON CONFLICT (execution_id, path) DO NOTHING",
            )
            .bind(&s.execution_id)
            .bind(&s.path)
            .bind(s.seq)
            .bind(&s.step_id)
            .bind(&s.step_type)
            .bind(&s.error)
            .bind(s.started_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks a running step `waiting` (with why, in `error`) or `running`
    /// again, without ending it.
    pub async fn set_step_waiting(
        &self,
        execution_id: &str,
        path: &str,
        why: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE execution_steps SET status = $3, error = $4 WHERE execution_id = $1 AND path = $2",
        )
        .bind(execution_id)
        .bind(path)
        .bind(if why.is_some() { "waiting" } else { "running" })
        .bind(why)
        .run(self)
        .await?;
        Ok(())
    }

    /// Records a step's outcome.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_step(
        &self,
        execution_id: &str,
        path: &str,
        status: &str,
        input: Option<&str>,
        output: Option<&str>,
        error: Option<&str>,
        attempts: i64,
        now: i64,
        duration_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE execution_steps SET status = $1, output = $2, error = $3, attempts = $4, finished_at = $5, \
             duration_ms = $6, input = COALESCE($9, input) WHERE execution_id = $7 AND path = $8",
        )
        .bind(status)
        .bind(output)
        .bind(error)
        .bind(attempts)
        .bind(now)
        .bind(duration_ms)
        .bind(execution_id)
        .bind(path)
        .bind(input)
        .run(self)
        .await?;
        Ok(())
    }

    /// Failed executions waiting in the dead-letter queue, newest first.
    pub async fn dead_letters(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ExecutionRow>, StoreError> {
        sqlx::query_as::<_, ExecutionRow>(select_executions!(
            "WHERE tenant_id = $1 AND dead_letter = 'open' AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        ))
        .bind(tenant_id)
        .bind(before)
        .bind(limit).all(self).await
    }

    /// Moves an open dead letter to `state`; false when it is not open.
    pub async fn close_dead_letter(
        &self,
        tenant_id: &str,
        id: &str,
        state: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE executions SET dead_letter = $1 WHERE tenant_id = $2 AND id = $3 AND dead_letter = 'open'",
        )
        .bind(state)
        .bind(tenant_id)
        .bind(id)
        .run(self)
        .await?;
        Ok(done > 0)
    }

    /// Copies the steps of `from` that succeeded before step number `seq`
    /// into `to` (a replay from a later step).
    pub async fn copy_steps_before(
        &self,
        from: &str,
        to: &str,
        seq: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO execution_steps (execution_id, path, seq, step_id, step_type, status, input, output, error, \
             attempts, started_at, finished_at, duration_ms) \
             SELECT $2, path, seq, step_id, step_type, status, input, output, error, attempts, started_at, finished_at, \
             duration_ms FROM execution_steps WHERE execution_id = $1 AND status = 'succeeded' AND seq < $3",
        )
        .bind(from)
        .bind(to)
        .bind(seq)
        .run(self)
        .await?;
        Ok(done)
    }

    /// Copies the succeeded step records of `from` into `to` (a re-run from
    /// the failed step reuses them, as a resumed execution would).
    pub async fn copy_succeeded_steps(&self, from: &str, to: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO execution_steps (execution_id, path, seq, step_id, step_type, status, input, output, error, \
             attempts, started_at, finished_at, duration_ms) \
             SELECT $2, path, seq, step_id, step_type, status, input, output, error, attempts, started_at, finished_at, \
             duration_ms FROM execution_steps WHERE execution_id = $1 AND status = 'succeeded'",
        )
        .bind(from)
        .bind(to)
        .run(self)
        .await?;
        Ok(done)
    }
}
