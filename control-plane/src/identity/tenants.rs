//! Tenants: the reserved `platform` tenant of platform admins.

use super::PLATFORM_TENANT;
use crate::store::{Store, StoreError, Tenant};

/// The reserved `platform` tenant, created on first use.
pub async fn platform_tenant(store: &Store) -> Result<Tenant, StoreError> {
    if let Some(t) = store.tenant_by_name(PLATFORM_TENANT).await? {
        return Ok(t);
    }
    match store
        .create_tenant(&crate::support::ids::new_id("ten"), PLATFORM_TENANT)
        .await
    {
        Ok(mut t) => {
            t.tier = crate::domain::Tier::Premium;
            store.update_tenant_plan(&t).await?;
            Ok(t)
        }
        // Another replica created it meanwhile.
        Err(StoreError::Conflict(_)) => store
            .tenant_by_name(PLATFORM_TENANT)
            .await?
            .ok_or_else(|| StoreError::Conflict("the platform tenant vanished".into())),
        Err(e) => Err(e),
    }
}
