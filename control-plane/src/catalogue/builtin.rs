//! The built-in catalogue: the definition files of `catalogue/`, compiled
//! into the binary and published globally by the platform at every start.
//!
//! A built-in that is new is published as 1.0.0; one whose file changed
//! since its newest version gets a new version with the bump its changes
//! need (computed, so a breaking edit becomes a major version). A built-in
//! a platform admin unpublished stays unpublished, and a platform
//! connector with the same slug that someone created by hand is left alone.

use serde_json::json;

use crate::catalogue::lifecycle::{self, Version};
use crate::identity::audit::record;
use crate::store::{ConnectorRow, Store, now_unix};

/// Who the built-ins are published by.
pub const ACTOR: &str = "system:builtin";

/// (file name, contents) of every built-in definition.
pub const DEFINITIONS: &[(&str, &str)] = &[
    (
        "dms-sim.yaml",
        include_str!("../../../catalogue/dms-sim.yaml"),
    ),
    (
        "nhtsa-vpic.yaml",
        include_str!("../../../catalogue/nhtsa-vpic.yaml"),
    ),
    (
        "rest-countries.yaml",
        include_str!("../../../catalogue/rest-countries.yaml"),
    ),
    (
        "open-meteo.yaml",
        include_str!("../../../catalogue/open-meteo.yaml"),
    ),
];

/// Publishes or updates every built-in; returns one line per change.
/// `base_urls` (slug, URL) moves built-ins to where their systems run here
/// (`dibop dev` points the simulator's connector at its simulator).
pub async fn load(store: &Store, base_urls: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let platform = crate::identity::tenants::platform_tenant(store).await?;
    let mut done = Vec::new();
    for (file, text) in DEFINITIONS {
        let mut doc = crate::catalogue::connector::parse(text)
            .map_err(|p| anyhow::anyhow!("catalogue/{file}: {p}"))?;
        if let Some((_, url)) = base_urls
            .iter()
            .find(|(slug, _)| doc["slug"] == slug.as_str())
        {
            doc["base_url"] = json!(url);
            if doc["documentation_url"]
                .as_str()
                .is_some_and(|d| d.starts_with("http://127.0.0.1:9100"))
            {
                doc["documentation_url"] = json!(format!("{url}/health"));
            }
        }
        let problems = crate::catalogue::connector::validate(&doc);
        anyhow::ensure!(
            problems.is_empty(),
            "catalogue/{file} is invalid: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let slug = doc["slug"].as_str().unwrap_or_default().to_owned();
        let now = now_unix();
        let existing = store.connector_by_slug(&platform.id, &slug).await?;
        let (mut c, previous) = match existing {
            None => {
                let c = ConnectorRow {
                    id: crate::support::ids::new_id("cnr"),
                    tenant_id: platform.id.clone(),
                    slug: slug.clone(),
                    name: doc["name"].as_str().unwrap_or_default().into(),
                    category: doc["category"].as_str().unwrap_or_default().into(),
                    status: "draft".into(),
                    definition: doc.to_string(),
                    created_by: ACTOR.into(),
                    created_at: now,
                    updated_at: now,
                    scope: None,
                    latest_version: None,
                    review_status: None,
                    review_reason: None,
                    deprecated_until: None,
                    deprecation_message: None,
                };
                store.create_connector(&c).await?;
                (c, None)
            }
            Some(c) if c.created_by != ACTOR => {
                tracing::warn!(%slug, "a platform connector with a built-in's slug exists: the built-in is not loaded");
                continue;
            }
            Some(c) if c.latest_version.is_some() && c.status == "draft" => continue,
            Some(c) => {
                let latest = c.latest_version.clone();
                (c, latest)
            }
        };
        let (version, bump, changes) = match &previous {
            None => (Version::FIRST, lifecycle::Bump::Major, Vec::new()),
            Some(v) => {
                let old = store
                    .version(&c.id, v)
                    .await?
                    .map(|r| r.definition)
                    .unwrap_or_default();
                let old: serde_json::Value = serde_json::from_str(&old).unwrap_or_default();
                let changes = lifecycle::diff(&old, &doc);
                if changes.is_empty() {
                    continue;
                }
                let bump = lifecycle::required_bump(&changes);
                (
                    Version::parse(v).unwrap_or(Version::FIRST).bumped(bump),
                    bump,
                    changes,
                )
            }
        };
        c.definition = doc.to_string();
        c.updated_at = now;
        let tx = store.begin().await?;
        tx.update_connector(&c).await?;
        let notes = if previous.is_none() {
            "Built-in catalogue.".to_owned()
        } else {
            format!("Built-in catalogue update ({} change(s)).", changes.len())
        };
        let v =
            crate::catalogue::publishing::freeze(&c, &doc, version, bump, &changes, notes, ACTOR);
        c.status = "published".into();
        c.scope = Some("global".into());
        tx.publish_version(&c, previous.as_deref(), &v).await?;
        record(
            &tx,
            None,
            ACTOR,
            "connector.publish",
            ("connector", &c.id),
            json!({"slug": slug, "version": v.version, "builtin": true}),
        )
        .await?;
        tx.commit().await?;
        done.push(format!("{slug} {}", v.version));
    }
    if !done.is_empty() {
        tracing::info!(published = ?done, "built-in catalogue loaded");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_valid_and_passes_the_checklist() {
        for (file, text) in DEFINITIONS {
            let doc = crate::catalogue::connector::parse(text).unwrap();
            let problems = crate::catalogue::connector::validate(&doc);
            assert!(problems.is_empty(), "{file}: {problems:#?}");
            let failed: Vec<_> = lifecycle::checklist(&doc)
                .into_iter()
                .filter(|i| !i.passed)
                .collect();
            assert!(failed.is_empty(), "{file}: {failed:#?}");
        }
    }

    #[tokio::test]
    async fn loading_twice_publishes_once_and_an_edit_is_versioned() {
        for db in crate::store::testdb::all().await {
            let store = &db.store;
            let first = load(store, &[]).await.unwrap();
            assert_eq!(first.len(), DEFINITIONS.len(), "{}", db.name);
            assert!(first.iter().all(|l| l.ends_with(" 1.0.0")), "{first:?}");
            assert!(
                load(store, &[]).await.unwrap().is_empty(),
                "{}: a second start republished",
                db.name
            );
            // Someone edited a built-in file: a description change is a patch.
            let platform = crate::identity::tenants::platform_tenant(store)
                .await
                .unwrap();
            let c = store
                .connector_by_slug(&platform.id, "open-meteo")
                .await
                .unwrap()
                .unwrap();
            let mut old: serde_json::Value = serde_json::from_str(&c.definition).unwrap();
            old["description"] = json!("Old words.");
            let mut v = store.version(&c.id, "1.0.0").await.unwrap().unwrap();
            v.version = "1.0.1".into();
            v.patch = 1;
            v.definition = old.to_string();
            store.publish_version(&c, Some("1.0.0"), &v).await.unwrap();
            assert_eq!(
                load(store, &[]).await.unwrap(),
                ["open-meteo 1.0.2"],
                "{}",
                db.name
            );
            db.finish().await;
        }
    }
}
