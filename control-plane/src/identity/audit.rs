//! The audit log: every change made through the API or the CLI, with who,
//! which tenant (none for platform-level entries), what, which resource,
//! when, from where, and the request id.

use serde_json::Value;

use super::request_meta;
use crate::store::{AuditEntry, Store, StoreError, now_unix};

/// A time-ordered audit id: newer ids sort after older ones.
fn audit_id() -> String {
    crate::support::ids::time_ordered_id("aud")
}

/// Appends an audit entry for the request being served. A failure to
/// write it fails the change it records (call it before answering).
pub async fn record(
    store: &Store,
    tenant_id: Option<&str>,
    actor: &str,
    action: &str,
    resource: (&str, &str),
    details: Value,
) -> Result<(), StoreError> {
    let meta = request_meta();
    let entry = AuditEntry {
        id: audit_id(),
        tenant_id: tenant_id.map(str::to_owned),
        at: now_unix(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        resource_type: resource.0.to_owned(),
        resource_id: resource.1.to_owned(),
        source_ip: meta.source_ip,
        request_id: meta.id,
        details: if details.is_null() {
            String::new()
        } else {
            details.to_string()
        },
    };
    store.audit(&entry).await.inspect_err(|e| {
        tracing::error!(
            action,
            resource_id = resource.1,
            "cannot write the audit log: {e}"
        )
    })
}

/// [`record`] for what the caller `p` did in its own tenant.
pub async fn record_by(
    store: &Store,
    p: &super::Principal,
    action: &str,
    resource: (&str, &str),
    details: Value,
) -> Result<(), StoreError> {
    record(
        store,
        Some(&p.tenant_id),
        &p.actor(),
        action,
        resource,
        details,
    )
    .await
}
