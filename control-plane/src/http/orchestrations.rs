//! Orchestrations through the API: create from a definition (JSON or
//! YAML), every save a new version, lifecycle (draft → active ⇄ paused →
//! archived), versions, delete, and validation without saving.
//!
//! Beyond the definition's own validation, the API checks what only the
//! tenant's data can tell: each `call` step names an existing connection of
//! the enterprise and an operation of that connection's connector version.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Core;
use crate::catalogue::connector::Problem;
use crate::http::{ApiError, ApiPath, ApiQuery, Page, Principal, page_limit, paged, require_admin};
use crate::identity::audit::record_by;
use crate::store::{OrchestrationRow, now_unix};

/// An orchestration as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrchestrationView {
    id: String,
    name: String,
    /// `draft`, `active`, `paused` or `archived`.
    status: String,
    /// The newest version (executions pin the version they start on).
    version: i64,
    /// The trigger type: `manual`, `schedule` or `webhook`.
    trigger: String,
    steps: usize,
    created_by: String,
    created_at: String,
    updated_at: String,
    /// The newest version's definition (single-orchestration requests).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    definition: Option<Value>,
}

/// One saved version.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrchestrationVersionView {
    version: i64,
    created_by: String,
    created_at: String,
    #[schema(value_type = Object)]
    definition: Value,
}

fn view(o: OrchestrationRow, definition: &Value, with_definition: bool) -> OrchestrationView {
    OrchestrationView {
        trigger: definition["trigger"]["type"]
            .as_str()
            .unwrap_or("manual")
            .to_owned(),
        steps: definition["steps"].as_array().map_or(0, Vec::len),
        definition: with_definition.then(|| definition.clone()),
        id: o.id,
        name: o.name,
        status: o.status,
        version: o.latest_version,
        created_by: o.created_by,
        created_at: rfc3339(o.created_at),
        updated_at: rfc3339(o.updated_at),
    }
}

fn invalid(problems: Vec<Problem>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_definition",
        format!(
            "the orchestration definition has {} problem(s)",
            problems.len()
        ),
    )
    .with_details(json!(problems))
}

/// Every `call` step, with its path.
fn call_steps<'a>(steps: &'a Value, at: &str, out: &mut Vec<(String, &'a Value)>) {
    crate::domain::steps_where(steps, at, out, &|s| s["type"] == "call");
}

/// Parses and validates a body, including the tenant's connections.
async fn read(
    core: &Core,
    p: &Principal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, Vec<Problem>), ApiError> {
    crate::http::catalogue::check_content_type(headers)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid("the definition is not UTF-8 text"))?;
    let doc = match crate::orchestration::definition::parse(text) {
        Ok(d) => d,
        Err(p) => return Ok((Value::Null, vec![p])),
    };
    let mut problems = crate::orchestration::definition::validate(&doc);
    let mut calls = Vec::new();
    call_steps(&doc["steps"], "$.steps", &mut calls);
    if let Some(h) = doc.get("on_error").filter(|h| h.is_object()) {
        call_steps(&h["steps"], "$.on_error.steps", &mut calls);
    }
    if !calls.is_empty() {
        let connections = core
            .store
            .list_connections(&p.tenant_id, None, 10_000)
            .await?;
        for (path, step) in calls {
            let (Some(name), Some(op)) = (step["connection"].as_str(), step["operation"].as_str())
            else {
                continue;
            };
            let Some(c) = connections.iter().find(|c| c.name == name || c.id == name) else {
                problems.push(Problem {
                    path: format!("{path}.connection"),
                    problem: format!("your enterprise has no connection named `{name}`"),
                });
                continue;
            };
            let version = core
                .store
                .version(&c.connector_id, &c.connector_version)
                .await?;
            let has_op = version
                .and_then(|v| serde_json::from_str::<Value>(&v.definition).ok())
                .is_some_and(|d| {
                    d["operations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|o| o["id"] == op)
                });
            if !has_op {
                problems.push(Problem {
                    path: format!("{path}.operation"),
                    problem: format!(
                        "connection `{name}` ({} {}) has no operation `{op}`",
                        c.connector_slug, c.connector_version
                    ),
                });
            }
        }
    }
    // Sub-orchestrations must be this enterprise's (or this one, by name).
    let mut subs = Vec::new();
    crate::domain::steps_where(&doc["steps"], "$.steps", &mut subs, &|s| {
        s["type"] == "call_orchestration"
    });
    if !subs.is_empty() {
        let mine = core
            .store
            .list_orchestrations(&p.tenant_id, None, 10_000)
            .await?;
        for (path, step) in subs {
            let Some(target) = step["orchestration"].as_str() else {
                continue;
            };
            let known =
                doc["name"] == target || mine.iter().any(|o| o.id == target || o.name == target);
            if !known {
                problems.push(Problem {
                    path: format!("{path}.orchestration"),
                    problem: format!("your enterprise has no orchestration `{target}`"),
                });
            }
        }
    }
    Ok((doc, problems))
}

async fn own(core: &Core, p: &Principal, id: &str) -> Result<OrchestrationRow, ApiError> {
    core.store
        .orchestration(&p.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("orchestration", id))
}

async fn definition_of(core: &Core, o: &OrchestrationRow) -> Result<Value, ApiError> {
    Ok(core
        .store
        .orchestration_version(&o.id, o.latest_version)
        .await?
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or(Value::Null))
}

/// `POST /api/v1/orchestrations/validate`
#[utoipa::path(post, path = "/api/v1/orchestrations/validate", tag = "orchestrations",
    summary = "Validate an orchestration definition against your enterprise's connections, without saving",
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 200, body = crate::http::catalogue::ValidationView)),
    security(("bearer" = [])))]
pub(crate) async fn validate(
    State(core): State<Arc<Core>>,
    p: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (_, problems) = read(&core, &p, &headers, &body).await?;
    Ok(Json(
        json!({"valid": problems.is_empty(), "problems": problems}),
    ))
}

/// `POST /api/v1/orchestrations`
#[utoipa::path(post, path = "/api/v1/orchestrations", tag = "orchestrations",
    summary = "Create an orchestration (a draft, version 1) from a definition",
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 201, body = OrchestrationView),
        (status = 422, description = "Every problem of the definition, with its path", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(core): State<Arc<Core>>,
    p: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    core.quotas
        .ensure_storage(&core.store, &p.tenant_id)
        .await?;
    let (doc, problems) = read(&core, &p, &headers, &body).await?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let now = now_unix();
    let row = OrchestrationRow {
        id: crate::support::ids::new_id("orc"),
        tenant_id: p.tenant_id.clone(),
        name: doc["name"].as_str().unwrap_or_default().trim().to_owned(),
        status: "draft".into(),
        latest_version: 1,
        created_by: p.actor(),
        created_at: now,
        updated_at: now,
    };
    let tx = core.store.begin().await?;
    tx.create_orchestration(&row, &doc.to_string()).await?;
    record_by(
        &tx,
        &p,
        "orchestration.create",
        ("orchestration", &row.id),
        json!({"name": row.name}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view(row, &doc, true))).into_response())
}

/// `GET /api/v1/orchestrations`
#[utoipa::path(get, path = "/api/v1/orchestrations", tag = "orchestrations", summary = "Your enterprise's orchestrations",
    responses((status = 200, body = [OrchestrationView])), security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let limit = page_limit(page.limit)?;
    let after = page.cursor_of("orc_")?;
    // With the newest definitions (trigger and step count) in one query.
    let views: Vec<OrchestrationView> = core
        .store
        .orchestrations_with_definitions(&p.tenant_id, after, limit + 1)
        .await?
        .into_iter()
        .map(|(o, d)| view(o, &parsed(&d), false))
        .collect();
    Ok(paged(views, limit, "/orchestrations", |v| v.id.clone()))
}

/// `GET /api/v1/orchestrations/{id}`
#[utoipa::path(get, path = "/api/v1/orchestrations/{id}", tag = "orchestrations", summary = "An orchestration with its newest definition",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = OrchestrationView)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrchestrationView>, ApiError> {
    let o = own(&core, &p, &id).await?;
    let d = definition_of(&core, &o).await?;
    Ok(Json(view(o, &d, true)))
}

/// `PUT /api/v1/orchestrations/{id}`
#[utoipa::path(put, path = "/api/v1/orchestrations/{id}", tag = "orchestrations",
    summary = "Save a new version (running executions keep theirs)",
    params(("id" = String, Path, description = "The resource id")),
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 200, body = OrchestrationView)),
    security(("bearer" = [])))]
pub(crate) async fn replace(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<OrchestrationView>, ApiError> {
    require_admin(&p)?;
    let mut o = own(&core, &p, &id).await?;
    core.quotas
        .ensure_storage(&core.store, &p.tenant_id)
        .await?;
    if o.status == "archived" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "archived",
            "an archived orchestration cannot change",
        ));
    }
    let (doc, problems) = read(&core, &p, &headers, &body).await?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let previous = o.latest_version;
    o.latest_version += 1;
    o.name = doc["name"].as_str().unwrap_or_default().trim().to_owned();
    o.updated_at = now_unix();
    let tx = core.store.begin().await?;
    tx.add_orchestration_version(&o, previous, &doc.to_string(), &p.actor())
        .await?;
    record_by(
        &tx,
        &p,
        "orchestration.update",
        ("orchestration", &o.id),
        json!({"version": o.latest_version}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(view(o, &doc, true)))
}

/// `GET /api/v1/orchestrations/{id}/versions`
#[utoipa::path(get, path = "/api/v1/orchestrations/{id}/versions", tag = "orchestrations", summary = "Every saved version, newest first",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = [OrchestrationVersionView])),
    security(("bearer" = [])))]
pub(crate) async fn versions(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<OrchestrationVersionView>>, ApiError> {
    let o = own(&core, &p, &id).await?;
    Ok(Json(
        core.store
            .orchestration_versions(&o.id)
            .await?
            .into_iter()
            .map(|v| OrchestrationVersionView {
                version: v.version,
                created_by: v.created_by,
                created_at: rfc3339(v.created_at),
                definition: serde_json::from_str(&v.definition).unwrap_or(Value::Null),
            })
            .collect(),
    ))
}

/// Allowed lifecycle moves: (from, action) → to.
fn transition(from: &str, action: &str) -> Option<&'static str> {
    match (from, action) {
        ("draft" | "paused", "activate") => Some("active"),
        ("active", "pause") => Some("paused"),
        ("draft" | "active" | "paused", "archive") => Some("archived"),
        ("archived", "restore") => Some("draft"),
        _ => None,
    }
}

async fn lifecycle(
    core: &Core,
    p: &Principal,
    id: &str,
    action: &str,
) -> Result<Json<OrchestrationView>, ApiError> {
    require_admin(p)?;
    let mut o = own(core, p, id).await?;
    let Some(to) = transition(&o.status, action) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "illegal_transition",
            format!("an orchestration that is {} cannot {action}", o.status),
        ));
    };
    o.status = to.into();
    o.updated_at = now_unix();
    let tx = core.store.begin().await?;
    tx.set_orchestration_status(&p.tenant_id, id, to, o.updated_at)
        .await?;
    record_by(
        &tx,
        p,
        &format!("orchestration.{action}"),
        ("orchestration", id),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    let d = definition_of(core, &o).await?;
    Ok(Json(view(o, &d, false)))
}

macro_rules! lifecycle_handler {
    ($name:ident, $action:literal, $summary:literal) => {
        #[doc = concat!("`POST /api/v1/orchestrations/{id}/", $action, "`")]
        #[utoipa::path(post, path = concat!("/api/v1/orchestrations/{id}/", $action), tag = "orchestrations", summary = $summary,
            params(("id" = String, Path, description = "The resource id")),
            responses((status = 200, body = OrchestrationView), (status = 409, description = "Not allowed from the current status", body = crate::http::openapi::ErrorBody)),
            security(("bearer" = [])))]
        pub(crate) async fn $name(
            State(core): State<Arc<Core>>,
            p: Principal,
            ApiPath(id): ApiPath<String>,
        ) -> Result<Json<OrchestrationView>, ApiError> {
            lifecycle(&core, &p, &id, $action).await
        }
    };
}

lifecycle_handler!(
    activate,
    "activate",
    "Activate (draft or paused → active): triggers run it"
);
lifecycle_handler!(
    pause,
    "pause",
    "Pause (active → paused): triggers stop, running executions finish"
);
lifecycle_handler!(archive, "archive", "Archive: read-only, no new executions");
lifecycle_handler!(
    restore,
    "restore",
    "Restore an archived orchestration as a draft"
);

/// `DELETE /api/v1/orchestrations/{id}`
#[utoipa::path(delete, path = "/api/v1/orchestrations/{id}", tag = "orchestrations", summary = "Delete an orchestration and its versions",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&p)?;
    let tx = core.store.begin().await?;
    if !tx.delete_orchestration(&p.tenant_id, &id).await? {
        return Err(ApiError::not_found("orchestration", &id));
    }
    record_by(
        &tx,
        &p,
        "orchestration.delete",
        ("orchestration", &id),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The example orchestration of `catalogue/orchestrations/`, compiled in.
pub const EXAMPLE: &str =
    include_str!("../../../catalogue/orchestrations/vin-decode-and-enrich.yaml");

/// Creates (and activates) the example orchestration for a tenant unless
/// one of its name exists; returns its id (`dibop dev`).
pub async fn ensure_example(core: &Core, tenant_id: &str) -> anyhow::Result<String> {
    let doc =
        crate::orchestration::definition::parse(EXAMPLE).map_err(|p| anyhow::anyhow!("{p}"))?;
    let problems = crate::orchestration::definition::validate(&doc);
    anyhow::ensure!(
        problems.is_empty(),
        "the example orchestration is invalid: {problems:?}"
    );
    let name = doc["name"].as_str().unwrap_or_default().to_owned();
    if let Some(o) = core
        .store
        .list_orchestrations(tenant_id, None, 10_000)
        .await?
        .into_iter()
        .find(|o| o.name == name)
    {
        return Ok(o.id);
    }
    let now = now_unix();
    let row = OrchestrationRow {
        id: crate::support::ids::new_id("orc"),
        tenant_id: tenant_id.to_owned(),
        name,
        status: "active".into(),
        latest_version: 1,
        created_by: "dibop-dev".into(),
        created_at: now,
        updated_at: now,
    };
    core.store
        .create_orchestration(&row, &doc.to_string())
        .await?;
    Ok(row.id)
}

/// A stored definition, parsed (`null` if it does not parse).
fn parsed(definition: &str) -> Value {
    serde_json::from_str(definition).unwrap_or(Value::Null)
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(validate))
        .routes(utoipa_axum::routes!(create, list))
        .routes(utoipa_axum::routes!(get, replace, delete))
        .routes(utoipa_axum::routes!(versions))
        .routes(utoipa_axum::routes!(activate))
        .routes(utoipa_axum::routes!(pause))
        .routes(utoipa_axum::routes!(archive))
        .routes(utoipa_axum::routes!(restore))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_moves() {
        assert_eq!(transition("draft", "activate"), Some("active"));
        assert_eq!(transition("active", "pause"), Some("paused"));
        assert_eq!(transition("paused", "activate"), Some("active"));
        assert_eq!(transition("archived", "activate"), None);
        assert_eq!(transition("draft", "pause"), None);
        assert_eq!(transition("archived", "restore"), Some("draft"));
    }
}
