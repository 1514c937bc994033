//! The connector catalogue's queries: frozen versions, lifecycle state,
//! the browsable catalogue and the review queue.
//!
//! Visibility is decided here, in SQL, in one place: a published
//! (or deprecated) connector is visible to every tenant when its scope is
//! `global`, and to its own tenant when it is `enterprise`. Platform admins
//! also see enterprise-scoped connectors (to promote them), never drafts.

use sqlx::Connection as _;
use sqlx::FromRow;

use super::{Exec as _, Fetch as _, Store, StoreError, unique_violation};

/// `SELECT <every connector column> FROM connectors <tail>`, as a static string.
macro_rules! select_connectors {
    ($tail:literal) => {
        concat!(
            "SELECT id, tenant_id, slug, name, category, status, definition, created_by, created_at, updated_at, \
             scope, latest_version, review_status, review_reason, deprecated_until, deprecation_message \
             FROM connectors ",
            $tail
        )
    };
}

/// A connector (its definition as JSON text).
#[derive(Debug, Clone, FromRow)]
pub struct ConnectorRow {
    /// Id (`cnr_…`).
    pub id: String,
    /// The tenant that owns it.
    pub tenant_id: String,
    /// From the definition.
    pub slug: String,
    /// From the definition.
    pub name: String,
    /// From the definition.
    pub category: String,
    /// `draft`, `published` or `deprecated`.
    pub status: String,
    /// The working definition, JSON (what the next version will freeze).
    pub definition: String,
    /// Who created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// `enterprise` or `global`, once published.
    pub scope: Option<String>,
    /// The newest frozen version, once published.
    pub latest_version: Option<String>,
    /// `pending` or `rejected` while submitted for the global catalogue.
    pub review_status: Option<String>,
    /// Why a review was rejected.
    pub review_reason: Option<String>,
    /// When a deprecated connector unpublishes itself.
    pub deprecated_until: Option<i64>,
    /// What deprecated users should do.
    pub deprecation_message: Option<String>,
}

/// One frozen, immutable version of a connector.
#[derive(Debug, Clone, FromRow)]
pub struct VersionRow {
    /// The connector.
    pub connector_id: String,
    /// `1.2.3`.
    pub version: String,
    /// Semantic version parts, for ordering.
    pub major: i64,
    /// Minor part.
    pub minor: i64,
    /// Patch part.
    pub patch: i64,
    /// From the definition.
    pub name: String,
    /// From the definition.
    pub description: String,
    /// From the definition.
    pub category: String,
    /// Space-separated and space-padded auth scheme types.
    pub auth_types: String,
    /// From the definition.
    pub icon: Option<String>,
    /// How many operations.
    pub operations: i64,
    /// The frozen definition, JSON.
    pub definition: String,
    /// `patch`, `minor` or `major`.
    pub bump: String,
    /// 1 when the version breaks users of the previous one.
    pub breaking: i64,
    /// JSON list of changes against the previous version.
    pub changes: String,
    /// Notes for people.
    pub release_notes: String,
    /// Who published it.
    pub published_by: String,
    /// When.
    pub published_at: i64,
}

/// A catalogue entry: the connector's state and its newest version.
#[derive(Debug, Clone, FromRow)]
pub struct CatalogueRow {
    /// Connector id.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Slug.
    pub slug: String,
    /// `published` or `deprecated`.
    pub status: String,
    /// `enterprise` or `global`.
    pub scope: String,
    /// Newest version.
    pub latest_version: String,
    /// Deprecation date.
    pub deprecated_until: Option<i64>,
    /// Deprecation note.
    pub deprecation_message: Option<String>,
    /// From the newest version.
    pub name: String,
    /// From the newest version.
    pub description: String,
    /// From the newest version.
    pub category: String,
    /// From the newest version.
    pub auth_types: String,
    /// From the newest version.
    pub icon: Option<String>,
    /// From the newest version.
    pub operations: i64,
    /// When the newest version was published.
    pub published_at: i64,
}

/// Catalogue search.
#[derive(Debug, Clone, Default)]
pub struct CatalogueFilter {
    /// Words in the name, slug or description (case-insensitive).
    pub text: Option<String>,
    /// Exact category.
    pub category: Option<String>,
    /// An auth scheme type the connector supports.
    pub auth_type: Option<String>,
    /// `global` or `enterprise`.
    pub scope: Option<String>,
}

/// `SELECT <catalogue columns> FROM connectors c JOIN connector_versions v <tail>`.
macro_rules! select_catalogue {
    ($tail:literal) => {
        concat!(
            "SELECT c.id, c.tenant_id, c.slug, c.status, c.scope, c.latest_version, c.deprecated_until, \
             c.deprecation_message, v.name, v.description, v.category, v.auth_types, v.icon, v.operations, v.published_at \
             FROM connectors c JOIN connector_versions v ON v.connector_id = c.id AND v.version = c.latest_version \
             WHERE c.status IN ('published', 'deprecated') \
             AND (c.scope = 'global' OR c.tenant_id = $1 OR $2 = 1) ",
            $tail
        )
    };
}

/// `%text%` for LIKE, lower-cased, with LIKE's wildcards escaped.
fn like(text: &str) -> String {
    let mut out = String::from("%");
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

impl Store {
    /// Stores a new connector.
    pub async fn create_connector(&self, c: &ConnectorRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connectors (id, tenant_id, slug, name, category, status, definition, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.id)
        .bind(&c.tenant_id)
        .bind(&c.slug)
        .bind(&c.name)
        .bind(&c.category)
        .bind(&c.status)
        .bind(&c.definition)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(c.updated_at)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| unique_violation(e, format!("a connector with slug `{}` already exists", c.slug)))?;
        Ok(())
    }

    /// One connector of a tenant.
    pub async fn connector(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<ConnectorRow>, StoreError> {
        self.scoped(
            select_connectors!("WHERE tenant_id = $1 AND id = $2"),
            tenant_id,
            id,
        )
        .await
    }

    /// A tenant's connectors, by id after `after`.
    pub async fn list_connectors(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ConnectorRow>, StoreError> {
        self.page(
            select_connectors!(
                "WHERE tenant_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
            ),
            tenant_id,
            after,
            limit,
        )
        .await
    }

    /// Replaces a connector's working definition; false when there is no such connector.
    pub async fn update_connector(&self, c: &ConnectorRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connectors SET slug = $1, name = $2, category = $3, definition = $4, updated_at = $5 \
             WHERE tenant_id = $6 AND id = $7",
        )
        .bind(&c.slug)
        .bind(&c.name)
        .bind(&c.category)
        .bind(&c.definition)
        .bind(c.updated_at)
        .bind(&c.tenant_id)
        .bind(&c.id)
        .execute(&mut *self.db().await?)
        .await
        .map_err(|e| unique_violation(e, format!("a connector with slug `{}` already exists", c.slug)))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a draft that was never published; false when there is no such draft.
    pub async fn delete_connector(&self, tenant_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM connectors WHERE tenant_id = $1 AND id = $2 AND status = 'draft' \
             AND latest_version IS NULL",
        )
        .bind(tenant_id)
        .bind(id)
        .run(self)
        .await?;
        Ok(done > 0)
    }

    /// A connector of any tenant (for platform admins acting on reviews).
    pub async fn connector_any_tenant(&self, id: &str) -> Result<Option<ConnectorRow>, StoreError> {
        sqlx::query_as::<_, ConnectorRow>(select_connectors!("WHERE id = $1"))
            .bind(id)
            .one(self)
            .await
    }

    /// Freezes a version and moves the connector's lifecycle columns to
    /// `c`'s, atomically. `previous` is the version `c` was read with: if
    /// another publish won the race, nothing is written and this is a
    /// conflict.
    pub async fn publish_version(
        &self,
        c: &ConnectorRow,
        previous: Option<&str>,
        v: &VersionRow,
    ) -> Result<(), StoreError> {
        let mut db = self.db().await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "INSERT INTO connector_versions (connector_id, version, major, minor, patch, name, description, \
             category, auth_types, icon, operations, definition, bump, breaking, changes, release_notes, \
             published_by, published_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(&v.connector_id)
        .bind(&v.version)
        .bind(v.major)
        .bind(v.minor)
        .bind(v.patch)
        .bind(&v.name)
        .bind(&v.description)
        .bind(&v.category)
        .bind(&v.auth_types)
        .bind(&v.icon)
        .bind(v.operations)
        .bind(&v.definition)
        .bind(&v.bump)
        .bind(v.breaking)
        .bind(&v.changes)
        .bind(&v.release_notes)
        .bind(&v.published_by)
        .bind(v.published_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, format!("version {} is already published", v.version)))?;
        let done = sqlx::query(
            "UPDATE connectors SET latest_version = $1, status = $2, scope = $3, review_status = $4, \
             review_reason = $5, updated_at = $6 \
             WHERE id = $7 AND (latest_version = $8 OR ($8 IS NULL AND latest_version IS NULL))",
        )
        .bind(&v.version)
        .bind(&c.status)
        .bind(&c.scope)
        .bind(&c.review_status)
        .bind(&c.review_reason)
        .bind(c.updated_at)
        .bind(&c.id)
        .bind(previous)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the connector was published by someone else meanwhile: reload it and try again"
                    .into(),
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes a connector's lifecycle columns (status, scope, review,
    /// deprecation).
    pub async fn update_lifecycle(&self, c: &ConnectorRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connectors SET status = $1, scope = $2, review_status = $3, review_reason = $4, \
             deprecated_until = $5, deprecation_message = $6, updated_at = $7 WHERE id = $8",
        )
        .bind(&c.status)
        .bind(&c.scope)
        .bind(&c.review_status)
        .bind(&c.review_reason)
        .bind(c.deprecated_until)
        .bind(&c.deprecation_message)
        .bind(c.updated_at)
        .bind(&c.id)
        .run(self)
        .await?;
        Ok(())
    }

    /// A connector's versions, newest first.
    pub async fn versions(&self, connector_id: &str) -> Result<Vec<VersionRow>, StoreError> {
        sqlx::query_as::<_, VersionRow>(
            "SELECT * FROM connector_versions WHERE connector_id = $1 \
             ORDER BY major DESC, minor DESC, patch DESC",
        )
        .bind(connector_id)
        .all(self)
        .await
    }

    /// One version.
    pub async fn version(
        &self,
        connector_id: &str,
        version: &str,
    ) -> Result<Option<VersionRow>, StoreError> {
        sqlx::query_as::<_, VersionRow>(
            "SELECT * FROM connector_versions WHERE connector_id = $1 AND version = $2",
        )
        .bind(connector_id)
        .bind(version)
        .one(self)
        .await
    }

    /// The catalogue as `tenant_id` sees it, filtered, by id after `after`.
    pub async fn catalogue(
        &self,
        tenant_id: &str,
        platform: bool,
        filter: &CatalogueFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CatalogueRow>, StoreError> {
        let text = filter.text.as_deref().map(like);
        let auth = filter.auth_type.as_deref().map(|a| like(&format!(" {a} ")));
        sqlx::query_as::<_, CatalogueRow>(select_catalogue!(
            "AND ($3 IS NULL OR LOWER(v.name) LIKE $3 ESCAPE '\\' OR LOWER(c.slug) LIKE $3 ESCAPE '\\' \
                 OR LOWER(v.description) LIKE $3 ESCAPE '\\') \
             AND ($4 IS NULL OR v.category = $4) \
             AND ($5 IS NULL OR v.auth_types LIKE $5 ESCAPE '\\') \
             AND ($6 IS NULL OR c.scope = $6) \
             AND ($7 IS NULL OR c.id > $7) ORDER BY c.id LIMIT $8"
        ))
        .bind(tenant_id)
        .bind(i64::from(platform))
        .bind(text)
        .bind(filter.category.as_deref())
        .bind(auth)
        .bind(filter.scope.as_deref())
        .bind(after)
        .bind(limit).all(self).await
    }

    /// One catalogue entry, if `tenant_id` may see it.
    pub async fn catalogue_entry(
        &self,
        tenant_id: &str,
        platform: bool,
        id: &str,
    ) -> Result<Option<CatalogueRow>, StoreError> {
        sqlx::query_as::<_, CatalogueRow>(select_catalogue!("AND c.id = $3"))
            .bind(tenant_id)
            .bind(i64::from(platform))
            .bind(id)
            .one(self)
            .await
    }

    /// Connectors submitted for the global catalogue, by id after `after`.
    pub async fn pending_reviews(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ConnectorRow>, StoreError> {
        sqlx::query_as::<_, ConnectorRow>(select_connectors!(
            "WHERE review_status = 'pending' AND ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .all(self)
        .await
    }

    /// Deprecated connectors whose date has passed.
    pub async fn expired_deprecations(&self, now: i64) -> Result<Vec<ConnectorRow>, StoreError> {
        sqlx::query_as::<_, ConnectorRow>(select_connectors!(
            "WHERE status = 'deprecated' AND deprecated_until <= $1 ORDER BY id"
        ))
        .bind(now)
        .all(self)
        .await
    }

    /// The platform tenant's connector with this slug (built-ins).
    pub async fn connector_by_slug(
        &self,
        tenant_id: &str,
        slug: &str,
    ) -> Result<Option<ConnectorRow>, StoreError> {
        sqlx::query_as::<_, ConnectorRow>(select_connectors!("WHERE tenant_id = $1 AND slug = $2"))
            .bind(tenant_id)
            .bind(slug)
            .one(self)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like("VIN"), "%vin%");
        assert_eq!(like("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
