//! Records that failed CDM validation in orchestrations.

use sqlx::FromRow;

use super::{Exec as _, Fetch as _, Store, StoreError};

/// A record in the dead-letter queue.
#[derive(Debug, Clone, FromRow)]
pub struct DeadLetterItem {
    /// Id (`dli_…`, derived from execution, step and position: a resumed
    /// step does not store it twice).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The execution that met it.
    pub execution_id: String,
    /// Its orchestration.
    pub orchestration_id: String,
    /// The mapping step's path.
    pub step_path: String,
    /// The CDM domain.
    pub domain: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The record (JSON).
    pub record: String,
    /// The rules it broke (JSON list of `{field, rule, message}`).
    pub problems: String,
    /// `open`, `discarded` or `replayed`.
    pub status: String,
    /// When (Unix seconds).
    pub created_at: i64,
    /// The execution that took the corrected record on, once replayed.
    pub replay_execution_id: Option<String>,
}

impl Store {
    /// Stores a dead-lettered record, once per id.
    pub async fn add_dead_letter_item(&self, d: &DeadLetterItem) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dead_letter_items (id, tenant_id, execution_id, orchestration_id, step_path, domain, \
             direction, record, problems, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&d.id)
        .bind(&d.tenant_id)
        .bind(&d.execution_id)
        .bind(&d.orchestration_id)
        .bind(&d.step_path)
        .bind(&d.domain)
        .bind(&d.direction)
        .bind(&d.record)
        .bind(&d.problems)
        .bind(&d.status)
        .bind(d.created_at)
        .run(self)
        .await?;
        Ok(())
    }

    /// A tenant's dead-lettered records, by id after `after`.
    pub async fn dead_letter_items(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        execution_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetterItem>, StoreError> {
        sqlx::query_as::<_, DeadLetterItem>(
            "SELECT id, tenant_id, execution_id, orchestration_id, step_path, domain, direction, record, problems, \
             status, created_at, replay_execution_id FROM dead_letter_items WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR execution_id = $3) AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5",
        )
        .bind(tenant_id)
        .bind(status)
        .bind(execution_id)
        .bind(after)
        .bind(limit).all(self).await
    }

    /// One dead-lettered record of a tenant.
    pub async fn dead_letter_item(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<DeadLetterItem>, StoreError> {
        let sql = "SELECT id, tenant_id, execution_id, orchestration_id, step_path, domain, direction, record, problems, \
             status, created_at, replay_execution_id FROM dead_letter_items WHERE tenant_id = $1 AND id = $2";
        self.scoped(sql, tenant_id, id).await
    }

    /// Marks an open dead-lettered record replayed, with its corrected
    /// record and the execution that took it on; false when not open.
    pub async fn replay_dead_letter_item(
        &self,
        tenant_id: &str,
        id: &str,
        record: &str,
        execution_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE dead_letter_items SET status = 'replayed', record = $3, replay_execution_id = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'open'",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(record)
        .bind(execution_id)
        .run(self)
        .await?
            > 0)
    }

    /// Discards an open dead-lettered record; false when not open.
    pub async fn discard_dead_letter_item(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE dead_letter_items SET status = 'discarded' WHERE tenant_id = $1 AND id = $2 AND status = 'open'",
        )
        .bind(tenant_id)
        .bind(id)
        .run(self)
        .await?
            > 0)
    }
}
