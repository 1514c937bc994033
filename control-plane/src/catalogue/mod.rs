//! The connector catalogue: the connector definition and its validation
//! ([`connector`]), versions and their lifecycle ([`lifecycle`]), publishing
//! ([`publishing`]), OpenAPI import ([`import`]) and the built-in connectors
//! ([`builtin`]).

pub mod builtin;
pub mod connector;
pub mod import;
pub mod lifecycle;
pub mod publishing;

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
