//! Connections through the API: the HTTP face of [`crate::connections::manage`]
//! (which holds the rules the console shares), invocation and the API-call
//! log.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Core;
use crate::connections::execute::{self, TestOutcome};
use crate::connections::manage::{
    self, ConnectionPatch, ConnectionRequest, ConnectionView, CredentialsRequest, GrantsRequest,
    GrantsView, HealthView, MoveRequest, MoveView, StateChange,
};
use crate::http::{
    ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged, require_operator,
};
use crate::store::ApiCallFilter;

/// The body of an invocation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// Parameter values by name.
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    #[schema(value_type = Option<Object>)]
    parameters: Map<String, Value>,
    /// Follow the operation's pagination, up to this many pages (1-100).
    #[serde(default)]
    max_pages: Option<u32>,
}

/// `POST /api/v1/connections`
#[utoipa::path(post, path = "/api/v1/connections", tag = "connections",
    summary = "Create a connection from a published connector version (inactive unless `activate`)",
    request_body = ConnectionRequest,
    responses((status = 201, body = ConnectionView),
        (status = 422, description = "Every problem in `details`", body = crate::http::openapi::ErrorBody),
        (status = 404, body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(req): ApiJson<ConnectionRequest>,
) -> Result<Response, ApiError> {
    let v = manage::create(&core, &p, req).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /api/v1/connections`
#[utoipa::path(get, path = "/api/v1/connections", tag = "connections", summary = "The enterprise's connections",
    responses((status = 200, body = [ConnectionView])), security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let limit = page_limit(page.limit)?;
    let views = manage::list(&core, &p, page.cursor_of("con_")?, limit + 1).await?;
    Ok(paged(views, limit, "/connections", |v| v.id.clone()))
}

/// `GET /api/v1/connections/{id}`
#[utoipa::path(get, path = "/api/v1/connections/{id}", tag = "connections", summary = "One connection (secrets never shown)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let c = manage::own(&core, &p, &id).await?;
    Ok(Json(manage::view(&core, c, None).await?))
}

/// `PATCH /api/v1/connections/{id}`
#[utoipa::path(patch, path = "/api/v1/connections/{id}", tag = "connections",
    summary = "Change a connection's name, base URL, settings (log level at run time) or execution mode",
    params(("id" = String, Path, description = "The resource id")), request_body = ConnectionPatch,
    responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> Result<Json<ConnectionView>, ApiError> {
    Ok(Json(manage::update(&core, &p, &id, patch).await?))
}

/// `POST /api/v1/connections/{id}/move`
#[utoipa::path(post, path = "/api/v1/connections/{id}/move", tag = "connections",
    summary = "Move a connection to another version of its connector (after a major version notice)",
    description = "Answers the computed changes between the versions and what the move would break: an auth \
        scheme the new version dropped, credentials it needs, operations, mappings or parameters that the \
        tenant's orchestrations use. A move that would break something is refused (409 with the problems); \
        `dry_run` only reports.",
    params(("id" = String, Path, description = "The resource id")), request_body = MoveRequest,
    responses((status = 200, body = MoveView), (status = 409, description = "Same version, or the move would break the connection (`incompatible_version`, problems in `details`)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such connection or version", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn move_version(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> Result<Json<MoveView>, ApiError> {
    Ok(Json(manage::move_version(&core, &p, &id, req).await?))
}

/// `DELETE /api/v1/connections/{id}`
#[utoipa::path(delete, path = "/api/v1/connections/{id}", tag = "connections",
    summary = "Delete a connection with its credentials and health history (the call log keeps its name)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    manage::delete(&core, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/connections/{id}/activate`
#[utoipa::path(post, path = "/api/v1/connections/{id}/activate", tag = "connections", summary = "Activate: calls allowed, health monitored",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = StateChange)),
    security(("bearer" = [])))]
pub(crate) async fn activate(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StateChange>, ApiError> {
    Ok(Json(manage::set_active(&core, &p, &id, true).await?))
}

/// `POST /api/v1/connections/{id}/deactivate`
#[utoipa::path(post, path = "/api/v1/connections/{id}/deactivate", tag = "connections",
    summary = "Deactivate: no new calls, no health checks; credentials kept",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = StateChange)),
    security(("bearer" = [])))]
pub(crate) async fn deactivate(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StateChange>, ApiError> {
    Ok(Json(manage::set_active(&core, &p, &id, false).await?))
}

/// `PUT /api/v1/connections/{id}/credentials`
#[utoipa::path(put, path = "/api/v1/connections/{id}/credentials", tag = "connections",
    summary = "Rotate credentials: replaces every field (audited; cached tokens are dropped)",
    params(("id" = String, Path, description = "The resource id")), request_body = CredentialsRequest,
    responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
pub(crate) async fn rotate_credentials(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CredentialsRequest>,
) -> Result<Json<ConnectionView>, ApiError> {
    Ok(Json(
        manage::rotate_credentials(&core, &p, &id, &req.credentials).await?,
    ))
}

/// `POST /api/v1/connections/{id}/test`
#[utoipa::path(post, path = "/api/v1/connections/{id}/test", tag = "connections",
    summary = "Test Connection with the saved credentials: authenticate and run the health check",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = TestOutcome)),
    security(("bearer" = [])))]
pub(crate) async fn test_saved(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    Ok(Json(manage::test_saved(&core, &p, &id).await?))
}

/// `POST /api/v1/connections/test`
#[utoipa::path(post, path = "/api/v1/connections/test", tag = "connections",
    summary = "Test Connection with credentials typed into the form, before saving (nothing is stored)",
    request_body = ConnectionRequest,
    responses((status = 200, body = TestOutcome), (status = 404, body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn test_unsaved(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(req): ApiJson<ConnectionRequest>,
) -> Result<Json<TestOutcome>, ApiError> {
    Ok(Json(manage::test_unsaved(&core, &p, req).await?))
}

/// `GET /api/v1/connections/{id}/grants`
#[utoipa::path(get, path = "/api/v1/connections/{id}/grants", tag = "connections",
    summary = "A connection's roles (admin, one per HTTP verb) and who holds them",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = GrantsView)),
    security(("bearer" = [])))]
pub(crate) async fn grants(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GrantsView>, ApiError> {
    Ok(Json(manage::grants(&core, &p, &id).await?))
}

/// `PUT /api/v1/connections/{id}/grants`
#[utoipa::path(put, path = "/api/v1/connections/{id}/grants", tag = "connections",
    summary = "Set who holds the connection's roles (enterprise admins and the connection's admins)",
    description = "Enterprise admins hold every role on every connection. Others need the HTTP verb's role to invoke \
        operations of that verb, and `admin` to manage the connection (it includes every verb); viewers never invoke.",
    params(("id" = String, Path, description = "The resource id")), request_body = GrantsRequest,
    responses((status = 200, body = GrantsView)),
    security(("bearer" = [])))]
pub(crate) async fn set_grants(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<GrantsRequest>,
) -> Result<Json<GrantsView>, ApiError> {
    Ok(Json(manage::set_grants(&core, &p, &id, req).await?))
}

/// `GET /api/v1/connections/{id}/health`
#[utoipa::path(get, path = "/api/v1/connections/{id}/health", tag = "connections", summary = "Health history, newest first (up to 500)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = [HealthView])),
    security(("bearer" = [])))]
pub(crate) async fn health(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<HealthView>>, ApiError> {
    Ok(Json(manage::health(&core, &p, &id, 500).await?))
}

/// `POST /api/v1/connections/{id}/health/check`
#[utoipa::path(post, path = "/api/v1/connections/{id}/health/check", tag = "connections", summary = "Run a health check now and record it",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = HealthView)),
    security(("bearer" = [])))]
pub(crate) async fn check_now(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<HealthView>, ApiError> {
    Ok(Json(manage::check_now(&core, &p, &id).await?))
}

/// `POST /api/v1/connections/{id}/operations/{operation}/invoke`
#[utoipa::path(post, path = "/api/v1/connections/{id}/operations/{operation}/invoke", tag = "connections",
    summary = "Invoke an operation: the normalized result, with where it ran",
    description = "The answer is 200 with the normalized result (`ok`, `method`, `url`, `status`, `statusText`, `headers`, `body`, \
        `text`, `parseError`, `timing`, `attempts`, `agentId`, `error`, `ranOn`) whatever the system answered; \
        with `max_pages`, the operation's pagination is followed and `pages` holds every page's body.",
    params(("id" = String, Path, description = "The connection id"), ("operation" = String, Path, description = "The operation id")),
    request_body = InvokeBody,
    responses((status = 200, body = Object), (status = 409, description = "The connection is inactive", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Bad parameters: every problem in `details`", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn invoke(
    State(core): State<Arc<Core>>,
    p: Principal,
    tenant: Option<axum::Extension<crate::store::Tenant>>,
    ApiPath((id, operation)): ApiPath<(String, String)>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_operator(&p)?;
    // The body is optional: an operation without parameters needs none.
    let body: InvokeBody = crate::http::optional_json_body(&raw)?.unwrap_or_default();
    let resolved = execute::resolve_cached(&core, &p.tenant_id, &id).await?;
    if resolved.row.status != "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "connection_inactive",
            format!(
                "connection {} is inactive: activate it to make calls",
                resolved.row.name
            ),
        ));
    }
    let Some(op) = resolved.operation(&operation).cloned() else {
        return Err(ApiError::not_found("operation", &operation));
    };
    manage::authorize(&core, &p, &resolved.row, op.method.as_str()).await?;
    if let Some(pages) = body.max_pages
        && !(1..=100).contains(&pages)
    {
        return Err(ApiError::invalid("max_pages must be 1..=100"));
    }
    if let Some(tenant) = &tenant {
        core.quotas.check_storage(&tenant.0)?;
        core.quotas.take_call(&core.store, &tenant.0).await?;
    }
    let request = match execute::prepare(&core, &resolved, &op, &body.parameters).await {
        Ok(r) => r,
        Err(execute::Unprepared::Invalid(problems)) => {
            return Err(
                ApiError::invalid(format!("the call of `{operation}` is invalid")).with_details(
                    json!(
                        problems
                            .iter()
                            .map(|p| json!({"problem": p}))
                            .collect::<Vec<_>>()
                    ),
                ),
            );
        }
        // A call needed first (OpenID Connect discovery) failed: the
        // normalized result says how.
        Err(execute::Unprepared::Failed(result)) => {
            let out = dibop_protocol::InvokeResult {
                result: *result,
                rotated_refresh_token: None,
                token_fetches: 0,
            };
            return Ok(Json(execute::result_json(
                out,
                "",
                std::time::Duration::ZERO,
            )));
        }
    };
    let max_pages = body.max_pages.unwrap_or(1);
    let (out, ran_on, elapsed) =
        execute::run(&core, &resolved, &operation, request, &p.actor(), true).await;
    if max_pages <= 1 {
        return Ok(Json(execute::result_json(out, &ran_on, elapsed)));
    }
    let pages = crate::connections::paginate::follow(
        &core,
        &resolved,
        &op,
        &operation,
        &body.parameters,
        out,
        max_pages,
        &p.actor(),
    )
    .await;
    Ok(Json(pages))
}
/// `?connection_id=&operation=&outcome=&error_class=&since=&until=&limit=&cursor=` of the call log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallQuery {
    connection_id: Option<String>,
    operation: Option<String>,
    outcome: Option<String>,
    error_class: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// One call with its bodies (`GET /api-calls/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiCallDetailView {
    #[serde(flatten)]
    call: ApiCallView,
    /// What was sent (JSON when it was JSON), capped at 16 KiB; absent for
    /// calls without a body and once the payload retention has passed.
    #[schema(value_type = Option<Object>)]
    request_body: Option<Value>,
    /// What came back, the same way.
    #[schema(value_type = Option<Object>)]
    response_body: Option<Value>,
    /// Whether a body was cut at the cap.
    request_truncated: bool,
    response_truncated: bool,
    /// Whether the bodies were kept: they are removed after a shorter time
    /// than the call record (at most 7 days).
    payload_kept: bool,
}

fn call_view(
    c: crate::store::ApiCallRow,
    keys: Option<&std::collections::BTreeSet<String>>,
) -> ApiCallView {
    ApiCallView {
        at: rfc3339(c.at),
        duration_ms: c.duration_us as f64 / 1000.0,
        ok: c.ok != 0,
        id: c.id,
        connection_id: c.connection_id,
        connection_name: c.connection_name,
        connector_slug: c.connector_slug,
        operation: c.operation,
        method: c.method,
        url: match keys {
            Some(k) => crate::cdm::pii::redact_url(&c.url, k),
            None => c.url,
        },
        status: c.status,
        error_class: c.error_class,
        response_bytes: c.response_bytes,
        attempts: c.attempts,
        ran_on: c.ran_on,
        actor: c.actor,
    }
}

/// `since`/`until` of the call log: an RFC 3339 time or a date.
pub(crate) fn time_bound(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            crate::catalogue::publishing::parse_date(v.trim()).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{name} `{v}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z) or a date (2026-12-01)"
                ))
            })
        })
        .transpose()
}

/// `GET /api/v1/api-calls/{id}`
#[utoipa::path(get, path = "/api/v1/api-calls/{id}", tag = "connections", summary = "One call of the API-call log, with its request and response bodies",
    params(("id" = String, Path, description = "The call id")),
    responses((status = 200, body = ApiCallDetailView)),
    security(("bearer" = [])))]
pub(crate) async fn get_call(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiCallDetailView>, ApiError> {
    core.calls.flush(&core.store).await;
    let (call, payload) = core
        .store
        .call(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("call", &id))?;
    let keys = if crate::cdm::pii::can_view(&p) {
        None
    } else {
        Some(crate::cdm::pii::keys_for(&core, &p.tenant_id).await)
    };
    let body = |text: Option<String>| {
        text.map(|t| {
            let mut v = serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t));
            if let Some(k) = &keys {
                crate::cdm::pii::redact(&mut v, k);
            }
            v
        })
    };
    let payload = payload.unwrap_or_default();
    let kept = !payload.call_id.is_empty();
    Ok(Json(ApiCallDetailView {
        call: call_view(call, keys.as_deref()),
        request_truncated: payload.request_truncated != 0,
        response_truncated: payload.response_truncated != 0,
        request_body: body(payload.request_body),
        response_body: body(payload.response_body),
        payload_kept: kept,
    }))
}

/// One entry of the API-call log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiCallView {
    id: String,
    at: String,
    connection_id: String,
    connection_name: String,
    connector_slug: String,
    operation: String,
    method: String,
    /// Without credentials.
    url: String,
    status: Option<i64>,
    ok: bool,
    error_class: Option<String>,
    duration_ms: f64,
    response_bytes: i64,
    attempts: i64,
    /// `cloud` or the agent id.
    ran_on: String,
    actor: String,
}

/// `GET /api/v1/api-calls`
#[utoipa::path(get, path = "/api/v1/api-calls", tag = "connections", summary = "The API-call log, newest first",
    params(("connection_id" = Option<String>, Query, description = "One connection"),
        ("operation" = Option<String>, Query, description = "One operation id"),
        ("outcome" = Option<String>, Query, description = "ok or failed"),
        ("error_class" = Option<String>, Query, description = "e.g. timeout, auth_failure"),
        ("since" = Option<String>, Query, description = "Calls at or after this time (RFC 3339 or a date)"),
        ("until" = Option<String>, Query, description = "Calls before this time (RFC 3339 or a date)"),
        ("limit" = Option<i64>, Query, description = "1..=500, default 100"),
        ("cursor" = Option<String>, Query, description = "From the previous page's Link header")),
    responses((status = 200, body = [ApiCallView])),
    security(("bearer" = [])))]
pub(crate) async fn list_calls(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<CallQuery>,
) -> Result<Response, ApiError> {
    // This node's buffered calls first, so a caller sees its own calls.
    core.calls.flush(&core.store).await;
    let limit = page_limit(q.limit)?;
    if let Some(o) = &q.outcome
        && !matches!(o.as_str(), "ok" | "failed")
    {
        return Err(ApiError::invalid("outcome must be ok or failed"));
    }
    let page = crate::http::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        group_id: None,
    };
    let since = time_bound("since", q.since.as_deref())?;
    let until = time_bound("until", q.until.as_deref())?;
    let filter = ApiCallFilter {
        connection_id: q.connection_id,
        operation: q.operation,
        outcome: q.outcome,
        error_class: q.error_class,
        before: page.cursor_of("call_")?.map(str::to_owned),
        since,
        until,
    };
    let rows = core
        .store
        .list_calls(&p.tenant_id, &filter, limit + 1)
        .await?;
    let keys = if crate::cdm::pii::can_view(&p) {
        None
    } else {
        Some(crate::cdm::pii::keys_for(&core, &p.tenant_id).await)
    };
    let views: Vec<ApiCallView> = rows
        .into_iter()
        .map(|c| call_view(c, keys.as_deref()))
        .collect();
    Ok(paged(views, limit, "/api-calls", |c| c.id.clone()))
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(create, list))
        .routes(utoipa_axum::routes!(get, update, delete))
        .routes(utoipa_axum::routes!(move_version))
        .routes(utoipa_axum::routes!(activate))
        .routes(utoipa_axum::routes!(deactivate))
        .routes(utoipa_axum::routes!(rotate_credentials))
        .routes(utoipa_axum::routes!(test_saved))
        .routes(utoipa_axum::routes!(test_unsaved))
        .routes(utoipa_axum::routes!(grants, set_grants))
        .routes(utoipa_axum::routes!(health))
        .routes(utoipa_axum::routes!(check_now))
        .routes(utoipa_axum::routes!(invoke))
        .routes(utoipa_axum::routes!(get_call))
        .routes(utoipa_axum::routes!(list_calls))
}
