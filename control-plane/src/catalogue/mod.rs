//! The connector catalogue: the connector definition and its validation
//! ([`connector`]), versions and their lifecycle ([`lifecycle`]), freezing
//! versions and the deprecation sweep ([`publishing`]), the release rules
//! the API and the console share ([`release`]), OpenAPI import
//! ([`import`]), the built-in connectors ([`builtin`]), and an operation
//! with its parameters rendered as an HTTP request ([`render`]).

pub mod builtin;
pub mod connector;
pub mod definition;
pub mod import;
pub mod lifecycle;
pub mod publishing;
pub mod release;
pub mod render;

use serde_json::Value;

use crate::store::StoreError;

/// What the catalogue's rules refuse.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// No such resource for the caller.
    #[error("{what} `{id}` does not exist")]
    NotFound {
        /// `connector`, `version`, `review`, `catalogue entry`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The connector's state refuses it.
    #[error("{message}")]
    Conflict {
        /// The stable code (`already_published`, `breaking_change`, …).
        code: &'static str,
        /// For a person.
        message: String,
        /// The computed changes, when they are the reason.
        details: Value,
    },
    /// The caller's role or the tenant's plan does not allow it.
    #[error("{message}")]
    Forbidden {
        /// `forbidden` or `enterprise_publishing_disabled`.
        code: &'static str,
        /// For a person.
        message: String,
    },
    /// The pre-publication checklist failed.
    #[error("{message}")]
    ChecklistFailed {
        /// Which items failed.
        message: String,
        /// Each failing item.
        failed: Value,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CatalogueError {
    /// No `what` with this id.
    pub fn not_found(what: &'static str, id: &str) -> Self {
        CatalogueError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    /// An invalid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        CatalogueError::Invalid(message.into())
    }

    /// A refusal with its code.
    pub fn forbidden_as(code: &'static str, message: impl Into<String>) -> Self {
        CatalogueError::Forbidden {
            code,
            message: message.into(),
        }
    }

    /// The same error with `details` (for conflicts).
    pub fn with_details(mut self, more: Value) -> Self {
        if let CatalogueError::Conflict { details, .. } = &mut self {
            *details = more;
        }
        self
    }
}

/// A catalogue entry in detail: its row, its versions (newest first) and
/// the definition of the version the catalogue offers.
#[derive(Debug, Clone)]
pub struct EntryDetail {
    /// The entry as the catalogue lists it.
    pub row: crate::store::CatalogueRow,
    /// Every published version, newest first.
    pub versions: Vec<crate::store::VersionRow>,
    /// The offered version's definition (`null` if it cannot be read).
    pub definition: serde_json::Value,
}

/// The entry `id` in detail, if a caller of `tenant_id` (a platform admin
/// when `platform`) may see it.
pub async fn entry_detail(
    store: &crate::store::Store,
    tenant_id: &str,
    platform: bool,
    id: &str,
) -> Result<Option<EntryDetail>, crate::store::StoreError> {
    let Some(row) = store.catalogue_entry(tenant_id, platform, id).await? else {
        return Ok(None);
    };
    let versions = store.versions(&row.id).await?;
    let definition = versions
        .iter()
        .find(|v| v.version == row.latest_version)
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or(serde_json::Value::Null);
    Ok(Some(EntryDetail {
        row,
        versions,
        definition,
    }))
}
