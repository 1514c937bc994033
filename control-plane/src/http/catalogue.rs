//! Connector drafts: create, read, replace and delete a tenant's connector
//! definitions, and validate a definition without saving it.
//!
//! Bodies are definitions in JSON (`application/json`) or YAML
//! (`application/yaml`). An invalid definition is refused with every
//! problem and its path in `details`; nothing is half-saved. A draft is
//! visible to its tenant only. Publishing and versions are in
//! [`crate::http::publishing`]; this module also serves the browsable catalogue
//! (`/catalogue`): global connectors plus the caller's enterprise ones.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Core;
use crate::catalogue::connector::{self, Problem};
use crate::http::{ApiError, ApiPath, ApiQuery, Page, Principal, page_limit, paged, require_admin};
use crate::identity::Role;
use crate::identity::audit::record_by;
use crate::store::{CatalogueFilter, CatalogueRow, ConnectorRow, now_unix};

/// A connector as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectorView {
    id: String,
    slug: String,
    name: String,
    category: String,
    /// `draft`, `published` or `deprecated`.
    status: String,
    /// `global` or `enterprise` once published.
    scope: Option<String>,
    /// The newest published version.
    latest_version: Option<String>,
    /// `pending` or `rejected` after a submission for the global catalogue.
    review_status: Option<String>,
    /// Why the review was rejected.
    review_reason: Option<String>,
    /// When a deprecated connector unpublishes itself.
    deprecated_until: Option<String>,
    /// What users of a deprecated connector should do.
    deprecation_message: Option<String>,
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

pub(crate) fn view(c: ConnectorRow, with_definition: bool) -> ConnectorView {
    let definition: Value = serde_json::from_str(&c.definition).unwrap_or(Value::Null);
    ConnectorView {
        operations: definition["operations"].as_array().map_or(0, Vec::len),
        definition: with_definition.then_some(definition),
        id: c.id,
        slug: c.slug,
        name: c.name,
        category: c.category,
        status: c.status,
        scope: c.scope,
        latest_version: c.latest_version,
        review_status: c.review_status,
        review_reason: c.review_reason,
        deprecated_until: c.deprecated_until.map(rfc3339),
        deprecation_message: c.deprecation_message,
        created_by: c.created_by,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// Refuses bodies that are neither JSON nor YAML.
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") || content_type.contains("yaml") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the document as application/json or application/yaml",
        ))
    }
}

/// Parses a JSON or YAML body into a document and validates it.
fn read_definition(headers: &HeaderMap, body: &[u8]) -> Result<(Value, Vec<Problem>), ApiError> {
    check_content_type(headers)?;
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
        scope: None,
        latest_version: None,
        review_status: None,
        review_reason: None,
        deprecated_until: None,
        deprecation_message: None,
    }
}

/// `POST /api/v1/connectors/validate`
#[utoipa::path(post, path = "/api/v1/connectors/validate", tag = "connectors", summary = "Validate a connector definition without saving it",
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 200, body = ValidationView)), security(("bearer" = [])))]
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
    responses((status = 201, body = ConnectorView),
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
    let (doc, problems) = read_definition(&headers, &body)?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let now = now_unix();
    let row = row_from(
        &doc,
        crate::support::ids::new_id("cnr"),
        &p.tenant_id,
        &p.actor(),
        now,
    );
    let tx = core.store.begin().await?;
    tx.create_connector(&row).await?;
    record_by(
        &tx,
        &p,
        "connector.create",
        ("connector", &row.id),
        json!({"slug": row.slug}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(view(row, true))).into_response())
}

/// `GET /api/v1/connectors`
#[utoipa::path(get, path = "/api/v1/connectors", tag = "connectors", summary = "List the tenant's connectors",
    responses((status = 200, body = [ConnectorView])), security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
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
    responses((status = 200, body = ConnectorView)),
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
#[utoipa::path(put, path = "/api/v1/connectors/{id}", tag = "connectors", summary = "Replace the working definition (what the next published version freezes)",
    params(("id" = String, Path, description = "The resource id")),
    request_body(content = Object, description = "A definition, JSON or YAML", content_type = "application/json"),
    responses((status = 200, body = ConnectorView)),
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
    core.quotas
        .ensure_storage(&core.store, &p.tenant_id)
        .await?;
    let (doc, problems) = read_definition(&headers, &body)?;
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    if existing.latest_version.is_some() && doc["slug"] != existing.slug.as_str() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "slug_frozen",
            format!(
                "the slug of a published connector cannot change (it is `{}`)",
                existing.slug
            ),
        ));
    }
    let mut row = row_from(
        &doc,
        existing.id.clone(),
        &p.tenant_id,
        &existing.created_by,
        existing.created_at,
    );
    row.status = existing.status;
    row.scope = existing.scope;
    row.latest_version = existing.latest_version;
    row.review_status = existing.review_status;
    row.review_reason = existing.review_reason;
    row.deprecated_until = existing.deprecated_until;
    row.deprecation_message = existing.deprecation_message;
    let tx = core.store.begin().await?;
    if !tx.update_connector(&row).await? {
        return Err(ApiError::not_found("connector", &existing.id));
    }
    record_by(
        &tx,
        &p,
        "connector.update",
        ("connector", &row.id),
        json!({"slug": row.slug}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(view(row, true)))
}

/// `DELETE /api/v1/connectors/{id}`
#[utoipa::path(delete, path = "/api/v1/connectors/{id}", tag = "connectors", summary = "Delete a draft that was never published",
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
    if !tx.delete_connector(&p.tenant_id, &id).await? {
        return Err(match tx.connector(&p.tenant_id, &id).await? {
            Some(c) => ApiError::new(
                StatusCode::CONFLICT,
                "published",
                format!(
                    "version {} was published and may be in use: unpublish or deprecate it instead",
                    c.latest_version.unwrap_or_default()
                ),
            ),
            None => ApiError::not_found("connector", &id),
        });
    }
    record_by(&tx, &p, "connector.delete", ("connector", &id), Value::Null).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?q=&category=&auth_type=&scope=&limit=&cursor=` of the catalogue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CatalogueQuery {
    q: Option<String>,
    category: Option<String>,
    auth_type: Option<String>,
    scope: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A connector in the catalogue (its newest published version).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogueEntry {
    id: String,
    slug: String,
    name: String,
    description: String,
    category: String,
    icon: Option<String>,
    /// `global` or `enterprise`.
    scope: String,
    /// Whether your enterprise owns it.
    owned_by_you: bool,
    /// `published` or `deprecated`.
    status: String,
    latest_version: String,
    /// The auth scheme types it supports.
    auth_types: Vec<String>,
    operations: usize,
    published_at: String,
    /// Present while deprecated: until when, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    deprecation: Option<DeprecationView>,
}

/// The warning of a deprecated connector.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeprecationView {
    /// When it leaves the catalogue.
    until: String,
    /// What to do instead.
    message: String,
}

/// One operation, as the catalogue lists it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OperationSummary {
    id: String,
    name: String,
    method: String,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

/// A catalogue entry with its operations and versions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogueDetail {
    #[serde(flatten)]
    entry: CatalogueEntry,
    base_url: String,
    documentation_url: Option<String>,
    health_check: String,
    operations_list: Vec<OperationSummary>,
    /// Every published version, newest first.
    versions: Vec<crate::catalogue::release::VersionView>,
    /// What a form for a connection to it asks: each auth scheme's
    /// credential fields, and the connection settings with this
    /// connector's defaults.
    form: ConnectionForm,
    /// The newest version's definition.
    #[schema(value_type = Object)]
    definition: Value,
}

/// The form of a new connection to a connector.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionForm {
    /// One entry per auth scheme the connector offers, the default first.
    auth: Vec<AuthForm>,
    /// Connection settings (`settings` of `POST /connections`), with defaults.
    settings: Vec<FormField>,
    /// The base URL calls go to unless the connection overrides it.
    base_url: String,
    /// Where calls can run: `cloud`, `agent_group` (a relay agent on site), `proxy`.
    execution_modes: Vec<&'static str>,
}

/// An auth scheme's credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuthForm {
    /// `auth_type` of the connection.
    #[serde(rename = "type")]
    kind: String,
    /// For a person.
    label: String,
    /// The `credentials` fields.
    fields: Vec<FormField>,
}

/// One field of a form.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FormField {
    /// Its key in the request.
    name: String,
    /// For a person.
    label: String,
    /// `string`, `password` (a secret: write-only, never shown again),
    /// `pem` (a certificate or key, several lines), `integer`, `boolean` or `enum`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// Whether it is a secret.
    secret: bool,
    required: bool,
    /// The value used when it is left out (a number, a boolean or a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<Value>,
    /// For `enum`.
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Vec<&'static str>>,
    /// For `integer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    minimum: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maximum: Option<i64>,
}

fn label_of(name: &str) -> String {
    let mut out = String::new();
    for (i, word) in name.split('_').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let word = match word {
            "id" => "ID",
            "api" => "API",
            "url" => "URL",
            "pem" => "PEM",
            w => w,
        };
        if i == 0 {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The form of a connection to `definition`'s connector.
pub fn connection_form(definition: &Value) -> ConnectionForm {
    let field = |name: &str, kind, secret, required, default: Option<Value>| FormField {
        label: label_of(name),
        name: name.to_owned(),
        kind,
        secret,
        required,
        default,
        options: None,
        minimum: None,
        maximum: None,
    };
    let auth = definition["auth"]["schemes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|scheme| {
            let kind = scheme["type"].as_str().unwrap_or_default().to_owned();
            let declared = scheme["fields"].as_array();
            let fields = crate::connections::manage::fields_of(scheme)
                .into_iter()
                .map(|(name, secret, required)| {
                    let label = declared
                        .and_then(|d| d.iter().find(|f| f["name"] == name.as_str()))
                        .and_then(|f| f["label"].as_str())
                        .map(str::to_owned);
                    let pem = matches!(name.as_str(), "client_certificate" | "client_key");
                    let kind = match (pem, secret) {
                        (true, _) => "pem",
                        (false, true) => "password",
                        (false, false) => "string",
                    };
                    let mut f = field(&name, kind, secret, required, None);
                    if let Some(l) = label {
                        f.label = l;
                    }
                    f
                })
                .collect();
            AuthForm {
                label: label_of(&kind).replace("Oauth2", "OAuth 2.0"),
                kind,
                fields,
            }
        })
        .collect();
    let r = &definition["resilience"];
    let timeout = r["timeout_ms"].as_i64().unwrap_or(30_000);
    let retries = r["retries"]["max_attempts"].as_i64().unwrap_or(1).max(1) - 1;
    let mut timeout_field = field("timeout_ms", "integer", false, false, Some(json!(timeout)));
    timeout_field.label = "Timeout (ms)".into();
    timeout_field.minimum = Some(1);
    timeout_field.maximum = Some(300_000);
    let mut retries_field = field("max_retries", "integer", false, false, Some(json!(retries)));
    retries_field.minimum = Some(0);
    retries_field.maximum = Some(10);
    let mut log_level = field("log_level", "enum", false, false, Some(json!("info")));
    log_level.options = Some(vec!["error", "warn", "info", "debug"]);
    let mut payloads = field(
        "log_payloads",
        "enum",
        false,
        false,
        Some(json!("failures")),
    );
    payloads.label = "Keep request and response bodies of".into();
    payloads.options = Some(vec!["failures", "all", "none"]);
    let mut ca = field("tls.extra_ca_pem", "pem", false, false, None);
    ca.label = "Extra trusted CA certificates (PEM)".into();
    let mut verify = field(
        "tls.reject_unauthorized",
        "boolean",
        false,
        false,
        Some(json!(true)),
    );
    verify.label = "Verify the system's certificate".into();
    ConnectionForm {
        auth,
        settings: vec![
            timeout_field,
            field(
                "retry_on_failure",
                "boolean",
                false,
                false,
                Some(json!(true)),
            ),
            retries_field,
            log_level,
            payloads,
            ca,
            verify,
        ],
        base_url: definition["base_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        execution_modes: vec!["cloud", "agent_group", "proxy"],
    }
}

fn entry(row: CatalogueRow, tenant_id: &str) -> CatalogueEntry {
    CatalogueEntry {
        owned_by_you: row.tenant_id == tenant_id,
        operations: usize::try_from(row.operations).unwrap_or(0),
        icon: row.icon,
        auth_types: row
            .auth_types
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        deprecation: match (row.status.as_str(), row.deprecated_until) {
            ("deprecated", Some(until)) => Some(DeprecationView {
                until: rfc3339(until),
                message: row.deprecation_message.unwrap_or_default(),
            }),
            _ => None,
        },
        id: row.id,
        slug: row.slug,
        name: row.name,
        description: row.description,
        category: row.category,
        scope: row.scope,
        status: row.status,
        latest_version: row.latest_version,
        published_at: rfc3339(row.published_at),
    }
}

/// `GET /api/v1/catalogue`
#[utoipa::path(get, path = "/api/v1/catalogue", tag = "catalogue",
    summary = "Browse and search the catalogue: global connectors plus your enterprise's own",
    params(("q" = Option<String>, Query, description = "Words in the name, slug or description"),
        ("category" = Option<String>, Query, description = "e.g. dms, oem, crm, finance, reference"),
        ("auth_type" = Option<String>, Query, description = "An auth scheme type, e.g. api_key"),
        ("scope" = Option<String>, Query, description = "global or enterprise"),
        ("limit" = Option<i64>, Query, description = "1..=500, default 100"),
        ("cursor" = Option<String>, Query, description = "From the previous page's Link header")),
    responses((status = 200, body = [CatalogueEntry])),
    security(("bearer" = [])))]
pub(crate) async fn browse(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<CatalogueQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(q.limit)?;
    let page = crate::http::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        group_id: None,
    };
    if let Some(scope) = &q.scope
        && !matches!(scope.as_str(), "global" | "enterprise")
    {
        return Err(ApiError::invalid(format!(
            "scope `{scope}` is not one of global, enterprise"
        )));
    }
    if let Some(kind) = &q.auth_type
        && !connector::AUTH_TYPES.iter().any(|(t, _)| t == kind)
    {
        return Err(ApiError::invalid(format!(
            "auth_type `{kind}` is not one of {}",
            connector::AUTH_TYPES
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if q.q.as_ref().is_some_and(|t| t.len() > 200) {
        return Err(ApiError::invalid("q must be at most 200 characters"));
    }
    let filter = CatalogueFilter {
        text: q
            .q
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_owned()),
        category: q.category,
        auth_type: q.auth_type,
        scope: q.scope,
    };
    let rows = core
        .store
        .catalogue(
            &p.tenant_id,
            p.role == Role::PlatformAdmin,
            &filter,
            page.cursor_of("cnr_")?,
            limit + 1,
        )
        .await?;
    let entries: Vec<CatalogueEntry> = rows.into_iter().map(|r| entry(r, &p.tenant_id)).collect();
    Ok(paged(entries, limit, "/catalogue", |e| e.id.clone()))
}

async fn visible(core: &Core, p: &Principal, id: &str) -> Result<CatalogueRow, ApiError> {
    core.store
        .catalogue_entry(&p.tenant_id, p.role == Role::PlatformAdmin, id)
        .await?
        .ok_or_else(|| ApiError::not_found("catalogue entry", id))
}

/// `GET /api/v1/catalogue/{id}`
#[utoipa::path(get, path = "/api/v1/catalogue/{id}", tag = "catalogue", summary = "A catalogue entry with its operations and versions",
    params(("id" = String, Path, description = "The connector id")),
    responses((status = 200, body = CatalogueDetail)),
    security(("bearer" = [])))]
pub(crate) async fn catalogue_detail(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CatalogueDetail>, ApiError> {
    let crate::catalogue::EntryDetail {
        row,
        versions,
        definition,
    } = crate::catalogue::entry_detail(&core.store, &p.tenant_id, p.is_platform_admin(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found("catalogue entry", &id))?;
    let entry = entry(row, &p.tenant_id);
    let text = |k: &str| definition[k].as_str().map(str::to_owned);
    Ok(Json(CatalogueDetail {
        base_url: text("base_url").unwrap_or_default(),
        documentation_url: text("documentation_url"),
        health_check: text("health_check").unwrap_or_default(),
        operations_list: definition["operations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| OperationSummary {
                id: o["id"].as_str().unwrap_or_default().into(),
                name: o["name"].as_str().unwrap_or_default().into(),
                method: o["method"].as_str().unwrap_or_default().into(),
                path: o["path"].as_str().unwrap_or_default().into(),
                description: o["description"].as_str().map(str::to_owned),
            })
            .collect(),
        versions: versions
            .into_iter()
            .map(|v| crate::catalogue::release::version_view(v, false))
            .collect(),
        entry,
        form: connection_form(&definition),
        definition,
    }))
}

/// `GET /api/v1/catalogue/{id}/versions/{version}`
#[utoipa::path(get, path = "/api/v1/catalogue/{id}/versions/{version}", tag = "catalogue", summary = "One version of a catalogue entry with its frozen definition",
    params(("id" = String, Path, description = "The connector id"), ("version" = String, Path, description = "e.g. 1.2.0")),
    responses((status = 200, body = crate::catalogue::release::VersionView)),
    security(("bearer" = [])))]
pub(crate) async fn catalogue_version(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath((id, version)): ApiPath<(String, String)>,
) -> Result<Json<crate::catalogue::release::VersionView>, ApiError> {
    let row = visible(&core, &p, &id).await?;
    let v = core
        .store
        .version(&row.id, &version)
        .await?
        .ok_or_else(|| ApiError::not_found("version", &version))?;
    Ok(Json(crate::catalogue::release::version_view(v, true)))
}

/// `?base_url=&slug=&category=` of an import.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ImportQuery {
    /// The API's base URL, when the document's servers are relative or absent.
    base_url: Option<String>,
    /// The connector's slug (default: from the title).
    slug: Option<String>,
    /// The connector's category (default: `other`).
    category: Option<String>,
}

/// The answer of an import.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportView {
    /// The new draft.
    connector: ConnectorView,
    /// What the import could not carry over or had to guess: refine these.
    warnings: Vec<String>,
}

/// `POST /api/v1/connectors/import`
#[utoipa::path(post, path = "/api/v1/connectors/import", tag = "connectors",
    summary = "Create a draft from an OpenAPI document (Swagger 2.0, OpenAPI 3.0 or 3.1; JSON or YAML)",
    description = "Servers, security schemes, operations, parameters and schemas become a draft; `$ref`s are resolved \
        inside the document only (never fetched). What could not be carried over is listed in `warnings`.",
    params(ImportQuery),
    request_body(content = Object, description = "An OpenAPI document, JSON or YAML", content_type = "application/json"),
    responses((status = 201, body = ImportView),
        (status = 422, description = "Not an OpenAPI document, too large, cyclic, or the result is invalid: every problem in `details`", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn import(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    core.quotas
        .ensure_storage(&core.store, &p.tenant_id)
        .await?;
    check_content_type(&headers)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("the document is not UTF-8 text"))?;
    let options = crate::catalogue::import::Options {
        base_url: q.base_url,
        slug: q.slug,
        category: q.category,
    };
    let imported = crate::catalogue::import::from_openapi(text, &options).map_err(|problems| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_openapi",
            format!("the OpenAPI document cannot be imported: {}", problems[0]),
        )
        .with_details(json!(problems))
    })?;
    let problems = connector::validate(&imported.definition);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    let row = row_from(
        &imported.definition,
        crate::support::ids::new_id("cnr"),
        &p.tenant_id,
        &p.actor(),
        now_unix(),
    );
    let tx = core.store.begin().await?;
    tx.create_connector(&row).await?;
    record_by(
        &tx,
        &p,
        "connector.import",
        ("connector", &row.id),
        json!({"slug": row.slug, "warnings": imported.warnings.len()}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(ImportView {
            connector: view(row, true),
            warnings: imported.warnings,
        }),
    )
        .into_response())
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(validate))
        .routes(utoipa_axum::routes!(create, list))
        .routes(utoipa_axum::routes!(get, replace, delete))
        .routes(utoipa_axum::routes!(browse))
        .routes(utoipa_axum::routes!(catalogue_detail))
        .routes(utoipa_axum::routes!(catalogue_version))
        .routes(utoipa_axum::routes!(import))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A form a console or client can render for the simulator's connector:
    /// each scheme's fields, secrets marked, the connector's own defaults.
    #[test]
    fn the_connection_form_names_fields_secrets_and_defaults() {
        let doc =
            crate::catalogue::connector::parse(include_str!("../../../catalogue/dms-sim.yaml"))
                .unwrap();
        let form = serde_json::to_value(connection_form(&doc)).unwrap();
        assert_eq!(form["auth"][0]["type"], "api_key");
        assert_eq!(
            form["auth"][0]["fields"],
            json!([{"name": "api_key", "label": "API key", "type": "password", "secret": true, "required": true}])
        );
        let basic = &form["auth"][1];
        assert_eq!(basic["type"], "basic");
        assert_eq!(basic["fields"][0]["name"], "username");
        assert_eq!(basic["fields"][0]["type"], "string");
        assert_eq!(basic["fields"][1]["type"], "password");
        let settings = form["settings"].as_array().unwrap();
        let timeout = settings.iter().find(|f| f["name"] == "timeout_ms").unwrap();
        assert_eq!(timeout["default"], 10000, "the connector's own timeout");
        let retries = settings
            .iter()
            .find(|f| f["name"] == "max_retries")
            .unwrap();
        assert_eq!(
            (retries["default"].as_i64(), retries["maximum"].as_i64()),
            (Some(2), Some(10))
        );
        let level = settings.iter().find(|f| f["name"] == "log_level").unwrap();
        assert_eq!(level["options"], json!(["error", "warn", "info", "debug"]));
        assert_eq!(form["base_url"], "http://127.0.0.1:9100");
    }
}
