//! Agent groups, enrollment tokens and agents.

use sqlx::{Connection as _, FromRow, Row as _};

use super::{Exec as _, Fetch as _, Store, StoreError, now_unix, unique_violation};

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

impl Store {
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
        let sql = "SELECT id, tenant_id, name, description, created_at FROM agent_groups \
             WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3";
        self.page(sql, tenant_id, after, limit).await
    }

    /// One group of a tenant.
    pub async fn group(&self, tenant_id: &str, id: &str) -> Result<Option<AgentGroup>, StoreError> {
        let sql = "SELECT id, tenant_id, name, description, created_at FROM agent_groups WHERE tenant_id = $1 AND id = $2";
        self.scoped(sql, tenant_id, id).await
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
        .run(self)
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
        .one(self)
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
                .one(self)
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
        sqlx::query_as::<_, AgentRow>(select_agents!("WHERE id = $1"))
            .bind(id)
            .one(self)
            .await
    }

    /// One agent of a tenant.
    pub async fn agent(&self, tenant_id: &str, id: &str) -> Result<Option<AgentRow>, StoreError> {
        self.scoped(
            select_agents!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// A tenant's agents, optionally of one group, by id after `after`.
    pub async fn list_agents(
        &self,
        tenant_id: &str,
        group_id: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AgentRow>, StoreError> {
        sqlx::query_as::<_, AgentRow>(select_agents!(
            "WHERE tenant_id = $1 AND ($2 IS NULL OR group_id = $2) AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(group_id)
        .bind(after)
        .bind(limit).all(self).await
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
            .run(self)
            .await?;
        Ok(())
    }

    /// Updates the last contact time.
    pub async fn agent_seen(&self, id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET last_seen = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .run(self)
            .await?;
        Ok(())
    }

    /// Records a renewed certificate.
    pub async fn agent_renewed(&self, id: &str, not_after: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE agents SET cert_not_after = $1 WHERE id = $2")
            .bind(not_after)
            .bind(id)
            .run(self)
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
        .run(self)
        .await?;
        Ok(done > 0)
    }
}
