//! Connector drafts: create, read, replace and delete a tenant's connector
//! definitions, and validate a definition without saving it.
//!
//! Bodies are definitions in JSON (`application/json`) or YAML
//! (`application/yaml`). An invalid definition is refused with every
//! problem and its path in `details`; nothing is half-saved. A draft is
//! visible to its tenant only. Publishing, versions and the shared catalogue
//! come with the rest of the catalogue work.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dibop_relay_agent::rfc3339;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Core;
use crate::access::record;
use crate::api::{ApiError, ApiPath, Principal, page_limit, paged, query, require_admin};
use crate::connector::{self, Problem};
use crate::store::{ConnectorRow, now_unix};

/// A connector as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorView {
    id: String,
    slug: String,
    name: String,
    category: String,
    status: String,
    operations: usize,
    created_by: String,
    created_at: String,
    updated_at: String,
    /// The definition (`GET /connectors/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    definition: Option<Value>,
}

/// The answer of `POST /connectors/validate`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidationView {
    valid: bool,
    problems: Vec<ProblemView>,
}

/// One problem of a definition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemView {
    /// Where, e.g. `operations[1].method`.
    path: String,
    /// What is wrong.
    problem: String,
}

fn view(c: ConnectorRow, with_definition: bool) -> ConnectorView {
    let definition: Value = serde_json::from_str(&c.definition).unwrap_or(Value::Null);
    ConnectorView {
        operations: definition["operations"].as_array().map_or(0, Vec::len),
        definition: with_definition.then_some(definition),
        id: c.id,
        slug: c.slug,
        name: c.name,
        category: c.category,
        status: c.status,
        created_by: c.created_by,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// Parses a JSON or YAML body into a document and validates it.
fn read_definition(headers: &HeaderMap, body: &[u8]) -> Result<(Value, Vec<Problem>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !(content_type.starts_with("application/json") || content_type.contains("yaml")) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the definition as application/json or application/yaml",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::invalid("the definition is not UTF-8 text"))?;
    match connector::parse(text) {
        Ok(doc) => {
            let problems = connector::validate(&doc);
            Ok((doc, problems))
        }
        Err(p) => Ok((Value::Null, vec![p])),
    }
}

fn invalid(problems: Vec<Problem>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_definition",
        format!("the connector definition has {} problem(s)", problems.len()),
    )
    .with_details(json!(problems))
}

fn row_from(
    doc: &Value,
    id: String,
    tenant_id: &str,
    actor: &str,
    created_at: i64,
) -> ConnectorRow {
    let text = |k: &str| doc[k].as_str().unwrap_or_default().to_owned();
    ConnectorRow {
        id,
        tenant_id: tenant_id.to_owned(),
        slug: text("slug"),
        name: text("name"),
        category: text("category"),
        status: "draft".into(),
        definition: doc.to_string(),
        created_by: actor.to_owned(),
        created_at,
        updated_at: now_unix(),
    }
}

/// `POST /api/v1/connectors/validate`
#[utoipa::path(post, path = "/api/v1/connectors/validate", tag = "connectors", summary = "Validate a connector definition without saving it",
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 200, body = ValidationView), (status = 401, body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn validate(
    _p: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ValidationView>, ApiError> {
    let (_, problems) = read_definition(&headers, &body)?;
    Ok(Json(ValidationView {
        valid: problems.is_empty(),
        problems: problems
            .into_iter()
            .map(|p| ProblemView {
                path: p.path,
                problem: p.problem,
            })
            .collect(),
    }))
}

/// `POST /api/v1/connectors`
#[utoipa::path(post, path = "/api/v1/connectors", tag = "connectors", summary = "Create a connector draft from a definition",
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 201, body = ConnectorView), (status = 409, body = crate::openapi::ErrorBody),
        (status = 422, description = "Every problem of the definition, with its path", body = crate::openapi::ErrorBody),
        (status = 401, body = crate::openapi::ErrorBody), (status = 403, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(core): State<Arc<Core>>,
    p: Principal,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let (doc, problems) = read_definition(&headers, &body)?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let now = now_unix();
    let row = row_from(
        &doc,
        crate::ids::new_id("cnr"),
        &p.tenant_id,
        &p.actor(),
        now,
    );
    core.store.create_connector(&row).await?;
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "connector.create",
        ("connector", &row.id),
        json!({"slug": row.slug}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(view(row, true))).into_response())
}

/// `GET /api/v1/connectors`
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors", summary = "List the tenant's connectors",
    responses((status = 200, body = [ConnectorView]), (status = 401, body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    q: Result<Query<crate::api::Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let page = query(q)?;
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_connectors(&p.tenant_id, page.cursor_of("cnr_")?, limit + 1)
        .await?;
    let views: Vec<ConnectorView> = rows.into_iter().map(|c| view(c, false)).collect();
    Ok(paged(views, limit, "/connectors", |c| c.id.clone()))
}

/// `GET /api/v1/connectors/{id}`
#[utoipa::path(get, path = "/api/v1/connectors/{id}", tag = "connectors", summary = "Get a connector with its definition",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = ConnectorView), (status = 404, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    let row = core
        .store
        .connector(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("connector", &id))?;
    Ok(Json(view(row, true)))
}

/// `PUT /api/v1/connectors/{id}`
#[utoipa::path(put, path = "/api/v1/connectors/{id}", tag = "connectors", summary = "Replace a draft's definition",
    params(("id" = String, Path, description = "The resource id")),
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 200, body = ConnectorView), (status = 404, body = crate::openapi::ErrorBody),
        (status = 422, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn replace(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<ConnectorView>, ApiError> {
    require_admin(&p)?;
    let existing = core
        .store
        .connector(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("connector", &id))?;
    let (doc, problems) = read_definition(&headers, &body)?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let row = row_from(
        &doc,
        existing.id,
        &p.tenant_id,
        &existing.created_by,
        existing.created_at,
    );
    if !core.store.update_connector(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_draft",
            "only drafts can be edited",
        ));
    }
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "connector.update",
        ("connector", &row.id),
        json!({"slug": row.slug}),
    )
    .await;
    Ok(Json(view(row, true)))
}

/// `DELETE /api/v1/connectors/{id}`
#[utoipa::path(delete, path = "/api/v1/connectors/{id}", tag = "connectors", summary = "Delete a draft",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&p)?;
    if !core.store.delete_connector(&p.tenant_id, &id).await? {
        return Err(ApiError::not_found("connector draft", &id));
    }
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "connector.delete",
        ("connector", &id),
        Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
