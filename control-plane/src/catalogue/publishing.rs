//! The publishing lifecycle's rules that run outside a request: freezing a
//! version, and unpublishing connectors whose deprecation date passed. The
//! lifecycle itself (drafts, publish, review, promote, deprecate) is
//! described in `docs/connectors.md`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Core;
use crate::catalogue::lifecycle::{self, Bump, Change, Version};
use crate::identity::audit::record;
use crate::store::{ConnectorRow, StoreError, VersionRow, now_unix};

/// Shortest notice a deprecation gives.
pub const MIN_DEPRECATION_DAYS: i64 = 30;

/// The version row freezing `doc`.
pub fn freeze(
    c: &ConnectorRow,
    doc: &Value,
    version: Version,
    bump: Bump,
    changes: &[Change],
    notes: String,
    actor: &str,
) -> VersionRow {
    let text = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
    let auth: Vec<&str> = doc["auth"]["schemes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["type"].as_str())
        .collect();
    VersionRow {
        connector_id: c.id.clone(),
        version: version.to_string(),
        major: i64::from(version.major),
        minor: i64::from(version.minor),
        patch: i64::from(version.patch),
        name: text("name"),
        description: text("description"),
        category: text("category"),
        auth_types: format!(" {} ", auth.join(" ")),
        icon: doc["icon"].as_str().map(str::to_owned),
        operations: doc["operations"].as_array().map_or(0, Vec::len) as i64,
        definition: doc.to_string(),
        bump: bump.as_str().into(),
        breaking: i64::from(
            changes
                .iter()
                .any(|c| c.impact == lifecycle::Impact::Breaking),
        ),
        changes: json!(changes).to_string(),
        release_notes: notes,
        published_by: actor.to_owned(),
        published_at: now_unix(),
    }
}

/// Parses `2027-03-01` (midnight UTC) or an RFC 3339 time.
pub fn parse_date(s: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    let mut parts = s.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?)
        .ok()
        .map(|d| d.midnight().assume_utc().unix_timestamp())
}

/// Unpublishes deprecated connectors whose date has passed; returns how many.
pub async fn unpublish_expired(core: &Core, now: i64) -> Result<usize, StoreError> {
    let expired = core.store.expired_deprecations(now).await?;
    let count = expired.len();
    for mut c in expired {
        c.status = "draft".into();
        c.updated_at = now_unix();
        let tx = core.store.begin().await?;
        tx.update_lifecycle(&c).await?;
        record(
            &tx,
            Some(&c.tenant_id),
            "system",
            "connector.unpublish",
            ("connector", &c.id),
            json!({"reason": "deprecation date passed"}),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(connector = %c.id, slug = %c.slug, "deprecation date passed: unpublished");
    }
    Ok(count)
}

/// Checks for passed deprecation dates every minute until shutdown.
pub async fn sweep_deprecations(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = unpublish_expired(&core, now_unix()).await {
                    tracing::warn!("deprecation sweep failed: {e:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_date("next tuesday"), None);
        assert_eq!(parse_date("2027-02-30"), None);
    }
}
