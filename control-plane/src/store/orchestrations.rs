//! Orchestrations and their versions. Every query takes the tenant.

use sqlx::Connection as _;
use sqlx::FromRow;

use super::{Exec as _, Fetch as _, Store, StoreError, unique_violation};

/// An orchestration.
#[derive(Debug, Clone, FromRow)]
pub struct OrchestrationRow {
    /// Id (`orc_…`).
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Unique per tenant (from the definition).
    pub name: String,
    /// `draft`, `active`, `paused` or `archived`.
    pub status: String,
    /// The newest version number.
    pub latest_version: i64,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

/// One saved version.
#[derive(Debug, Clone, FromRow)]
pub struct OrchestrationVersionRow {
    /// The orchestration.
    pub orchestration_id: String,
    /// 1, 2, …
    pub version: i64,
    /// The definition, JSON.
    pub definition: String,
    /// Who saved it.
    pub created_by: String,
    /// When.
    pub created_at: i64,
}

macro_rules! select_orchestrations {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, name, status, latest_version, created_by, created_at, updated_at FROM orchestrations ",
            $tail
        )
    };
}

impl Store {
    /// Stores a new orchestration with its first version.
    pub async fn create_orchestration(
        &self,
        o: &OrchestrationRow,
        definition: &str,
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO orchestrations (id, tenant_id, name, status, latest_version, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&o.id)
        .bind(&o.tenant_id)
        .bind(&o.name)
        .bind(&o.status)
        .bind(o.latest_version)
        .bind(&o.created_by)
        .bind(o.created_at)
        .bind(o.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, format!("an orchestration named `{}` already exists", o.name)))?;
        sqlx::query(
            "INSERT INTO orchestration_versions (orchestration_id, version, definition, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&o.id)
        .bind(o.latest_version)
        .bind(definition)
        .bind(&o.created_by)
        .bind(o.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Saves a new version (conditional on `previous` being the newest).
    pub async fn add_orchestration_version(
        &self,
        o: &OrchestrationRow,
        previous: i64,
        definition: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        let done = sqlx::query(
            "UPDATE orchestrations SET name = $1, latest_version = $2, updated_at = $3 \
             WHERE tenant_id = $4 AND id = $5 AND latest_version = $6",
        )
        .bind(&o.name)
        .bind(o.latest_version)
        .bind(o.updated_at)
        .bind(&o.tenant_id)
        .bind(&o.id)
        .bind(previous)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            unique_violation(
                e,
                format!("an orchestration named `{}` already exists", o.name),
            )
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the orchestration was saved by someone else meanwhile: reload it and try again"
                    .into(),
            ));
        }
        sqlx::query(
            "INSERT INTO orchestration_versions (orchestration_id, version, definition, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&o.id)
        .bind(o.latest_version)
        .bind(definition)
        .bind(actor)
        .bind(o.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One orchestration of a tenant.
    pub async fn orchestration(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<OrchestrationRow>, StoreError> {
        self.scoped(
            select_orchestrations!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// A tenant's orchestrations, by id after `after`.
    pub async fn list_orchestrations(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OrchestrationRow>, StoreError> {
        self.page(
            select_orchestrations!(
                "WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            tenant_id,
            after,
            limit,
        )
        .await
    }

    /// A page of a tenant's orchestrations (as [`Store::list_orchestrations`])
    /// each with its newest definition (JSON), in one query.
    pub async fn orchestrations_with_definitions(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<(OrchestrationRow, String)>, StoreError> {
        #[derive(FromRow)]
        struct WithDefinition {
            #[sqlx(flatten)]
            row: OrchestrationRow,
            definition: String,
        }
        let rows = sqlx::query_as::<_, WithDefinition>(
            "SELECT o.id, o.tenant_id, o.name, o.status, o.latest_version, o.created_by, o.created_at, \
             o.updated_at, v.definition FROM orchestrations o JOIN orchestration_versions v \
             ON v.orchestration_id = o.id AND v.version = o.latest_version \
             WHERE o.tenant_id = $1 AND ($2 IS NULL OR o.id > $2) ORDER BY o.id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .all(self)
        .await?;
        Ok(rows.into_iter().map(|r| (r.row, r.definition)).collect())
    }

    /// Sets an orchestration's status.
    pub async fn set_orchestration_status(
        &self,
        tenant_id: &str,
        id: &str,
        status: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE orchestrations SET status = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4")
            .bind(status)
            .bind(now)
            .bind(tenant_id)
            .bind(id)
            .run(self)
            .await?;
        Ok(())
    }

    /// Versions of an orchestration, newest first.
    pub async fn orchestration_versions(
        &self,
        id: &str,
    ) -> Result<Vec<OrchestrationVersionRow>, StoreError> {
        sqlx::query_as::<_, OrchestrationVersionRow>(
            "SELECT orchestration_id, version, definition, created_by, created_at FROM orchestration_versions \
             WHERE orchestration_id = $1 ORDER BY version DESC",
        )
        .bind(id).all(self).await
    }

    /// One version.
    pub async fn orchestration_version(
        &self,
        id: &str,
        version: i64,
    ) -> Result<Option<OrchestrationVersionRow>, StoreError> {
        sqlx::query_as::<_, OrchestrationVersionRow>(
            "SELECT orchestration_id, version, definition, created_by, created_at FROM orchestration_versions \
             WHERE orchestration_id = $1 AND version = $2",
        )
        .bind(id)
        .bind(version).one(self).await
    }

    /// Deletes an orchestration and its versions.
    pub async fn delete_orchestration(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "DELETE FROM orchestration_versions WHERE orchestration_id = $1 AND EXISTS \
             (SELECT 1 FROM orchestrations WHERE id = $1 AND tenant_id = $2)",
        )
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM orchestrations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every active orchestration of every tenant (the scheduler).
    pub async fn active_orchestrations(&self) -> Result<Vec<OrchestrationRow>, StoreError> {
        sqlx::query_as::<_, OrchestrationRow>(select_orchestrations!(
            "WHERE status = 'active' ORDER BY id"
        ))
        .all(self)
        .await
    }

    /// (cron, next firing) of an orchestration's schedule.
    pub async fn schedule(&self, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        use sqlx::Row as _;
        let row =
            sqlx::query("SELECT cron, next_fire_at FROM schedules WHERE orchestration_id = $1")
                .bind(id)
                .one(self)
                .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("cron")?, r.try_get("next_fire_at")?)),
            None => None,
        })
    }

    /// Plans a (new or changed) schedule's next firing.
    pub async fn plan_schedule(
        &self,
        id: &str,
        tenant_id: &str,
        cron: &str,
        next: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO schedules (orchestration_id, tenant_id, cron, next_fire_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (orchestration_id) DO UPDATE SET cron = excluded.cron, next_fire_at = excluded.next_fire_at",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(cron)
        .bind(next)
        .run(self)
        .await?;
        Ok(())
    }

    /// Claims the firing at `due` and plans `next`; false when another node did.
    pub async fn claim_schedule(&self, id: &str, due: i64, next: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE schedules SET next_fire_at = $1, last_fire_at = $2 WHERE orchestration_id = $3 AND next_fire_at = $2",
        )
        .bind(next)
        .bind(due)
        .bind(id)
        .run(self)
        .await?;
        Ok(done == 1)
    }

    /// Statuses of an orchestration's queued or running executions.
    pub async fn unfinished_of(&self, id: &str) -> Result<Vec<String>, StoreError> {
        use sqlx::Row as _;
        let rows = sqlx::query("SELECT status FROM executions WHERE orchestration_id = $1 AND status IN ('queued', 'running')")
            .bind(id)
            .all(self)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("status")?)).collect()
    }

    /// An orchestration of any tenant (webhooks carry no tenant).
    pub async fn orchestration_any(
        &self,
        id: &str,
    ) -> Result<Option<OrchestrationRow>, StoreError> {
        sqlx::query_as::<_, OrchestrationRow>(select_orchestrations!("WHERE id = $1"))
            .bind(id)
            .one(self)
            .await
    }

    /// Stores (replacing) an orchestration's sealed webhook secret.
    pub async fn set_webhook_secret(
        &self,
        id: &str,
        tenant_id: &str,
        sealed: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_secrets (orchestration_id, tenant_id, sealed, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (orchestration_id) DO UPDATE SET sealed = excluded.sealed, created_at = excluded.created_at",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(sealed)
        .bind(now)
        .run(self)
        .await?;
        Ok(())
    }

    /// Records a webhook delivery (`digest` of its signature or delivery
    /// id) until `expires_at`; `Some(received_at)` of the earlier delivery
    /// when it was already received, `None` when it is new.
    pub async fn remember_webhook_delivery(
        &self,
        orchestration_id: &str,
        digest: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<i64>, StoreError> {
        use sqlx::Row as _;
        sqlx::query("DELETE FROM webhook_deliveries WHERE expires_at < $1")
            .bind(now)
            .run(self)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (orchestration_id, digest, received_at, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (orchestration_id, digest) DO NOTHING",
        )
        .bind(orchestration_id)
        .bind(digest)
        .bind(now)
        .bind(expires_at)
        .run(self)
        .await?;
        if inserted == 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT received_at FROM webhook_deliveries WHERE orchestration_id = $1 AND digest = $2",
        )
        .bind(orchestration_id)
        .bind(digest)
        .one(self)
        .await?;
        Ok(Some(match row {
            Some(r) => r.try_get("received_at")?,
            None => now,
        }))
    }

    /// An orchestration's sealed webhook secret.
    pub async fn webhook_secret(&self, id: &str) -> Result<Option<String>, StoreError> {
        use sqlx::Row as _;
        let row = sqlx::query("SELECT sealed FROM webhook_secrets WHERE orchestration_id = $1")
            .bind(id)
            .one(self)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("sealed")?),
            None => None,
        })
    }
}
