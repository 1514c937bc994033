//! Single sign-on: each tenant's OpenID Connect provider, the email domains
//! it signs in, and sign-ins on their way through a provider.

use sqlx::{FromRow, Row as _};

use super::{Exec as _, Fetch as _, Store, StoreError};

/// A tenant's provider (the client secret sealed).
#[derive(Debug, Clone, FromRow)]
pub struct SsoRow {
    /// The tenant.
    pub tenant_id: String,
    /// The provider's issuer URL.
    pub issuer: String,
    /// The client registered at the provider.
    pub client_id: String,
    /// Its secret, sealed by the vault.
    pub client_secret: String,
    /// The role of someone signing in for the first time; `None`: only
    /// users an admin created may sign in.
    pub default_role: Option<String>,
    /// 1 when sign-in through it is on.
    pub enabled: i64,
    /// Last change.
    pub updated_at: i64,
}

/// A sign-in on its way through a provider.
#[derive(Debug, Clone, FromRow)]
pub struct SsoLoginRow {
    /// SHA-256 of the `state` sent to the provider.
    pub state_hash: String,
    /// The tenant whose provider it is.
    pub tenant_id: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// Where to go once signed in.
    pub next_path: String,
    /// When it started.
    pub created_at: i64,
}

impl Store {
    /// A tenant's provider, if it has one.
    pub async fn sso(&self, tenant_id: &str) -> Result<Option<SsoRow>, StoreError> {
        sqlx::query_as::<_, SsoRow>(
            "SELECT tenant_id, issuer, client_id, client_secret, default_role, enabled, updated_at \
             FROM tenant_sso WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .one(self)
        .await
    }

    /// The email domains a tenant's provider signs in.
    pub async fn sso_domains(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT domain FROM sso_domains WHERE tenant_id = $1 ORDER BY domain")
                .bind(tenant_id)
                .all(self)
                .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("domain").map_err(StoreError::from))
            .collect()
    }

    /// The tenant whose provider signs in `domain`.
    pub async fn sso_tenant_of(&self, domain: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT tenant_id FROM sso_domains WHERE domain = $1")
            .bind(domain)
            .one(self)
            .await?;
        row.map(|r| {
            r.try_get::<String, _>("tenant_id")
                .map_err(StoreError::from)
        })
        .transpose()
    }

    /// Which of `domains` another tenant's provider already signs in.
    pub async fn sso_domains_taken(
        &self,
        tenant_id: &str,
        domains: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut taken = Vec::new();
        for d in domains {
            if let Some(owner) = self.sso_tenant_of(d).await?
                && owner != tenant_id
            {
                taken.push(d.clone());
            }
        }
        Ok(taken)
    }

    /// Stores a tenant's provider and its domains (replacing both).
    pub async fn put_sso(&self, row: &SsoRow, domains: &[String]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM tenant_sso WHERE tenant_id = $1")
            .bind(&row.tenant_id)
            .run(self)
            .await?;
        sqlx::query(
            "INSERT INTO tenant_sso (tenant_id, issuer, client_id, client_secret, default_role, enabled, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.tenant_id)
        .bind(&row.issuer)
        .bind(&row.client_id)
        .bind(&row.client_secret)
        .bind(&row.default_role)
        .bind(row.enabled)
        .bind(row.updated_at)
        .run(self)
        .await?;
        sqlx::query("DELETE FROM sso_domains WHERE tenant_id = $1")
            .bind(&row.tenant_id)
            .run(self)
            .await?;
        for d in domains {
            sqlx::query("INSERT INTO sso_domains (domain, tenant_id) VALUES ($1, $2)")
                .bind(d)
                .bind(&row.tenant_id)
                .run(self)
                .await?;
        }
        Ok(())
    }

    /// Removes a tenant's provider; whether it had one.
    pub async fn delete_sso(&self, tenant_id: &str) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM sso_domains WHERE tenant_id = $1")
            .bind(tenant_id)
            .run(self)
            .await?;
        Ok(sqlx::query("DELETE FROM tenant_sso WHERE tenant_id = $1")
            .bind(tenant_id)
            .run(self)
            .await?
            > 0)
    }

    /// Records a sign-in on its way (and forgets those older than `expired_before`).
    pub async fn create_sso_login(
        &self,
        row: &SsoLoginRow,
        expired_before: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sso_logins WHERE created_at < $1")
            .bind(expired_before)
            .run(self)
            .await?;
        sqlx::query(
            "INSERT INTO sso_logins (state_hash, tenant_id, verifier, nonce, next_path, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.state_hash)
        .bind(&row.tenant_id)
        .bind(&row.verifier)
        .bind(&row.nonce)
        .bind(&row.next_path)
        .bind(row.created_at)
        .run(self)
        .await?;
        Ok(())
    }

    /// Takes a sign-in on its way (once: a second take finds nothing).
    pub async fn take_sso_login(
        &self,
        state_hash: &str,
    ) -> Result<Option<SsoLoginRow>, StoreError> {
        let row = sqlx::query_as::<_, SsoLoginRow>(
            "SELECT state_hash, tenant_id, verifier, nonce, next_path, created_at \
             FROM sso_logins WHERE state_hash = $1",
        )
        .bind(state_hash)
        .one(self)
        .await?;
        let taken = sqlx::query("DELETE FROM sso_logins WHERE state_hash = $1")
            .bind(state_hash)
            .run(self)
            .await?;
        Ok(row.filter(|_| taken > 0))
    }
}
