//! Idempotency keys: a retried request is answered once.

use sqlx::Row as _;

use super::{Exec as _, Store, StoreError};

impl Store {
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
        .run(self)
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
        .run(self)
        .await?;
        if inserted > 0 {
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
            .run(self)
            .await?;
        Ok(())
    }

    /// Releases a claimed key (the request failed on our side; a retry may run).
    pub async fn release_idempotency_key(&self, scope: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idem_key = $2")
            .bind(scope)
            .bind(key)
            .run(self)
            .await?;
        Ok(())
    }
}
