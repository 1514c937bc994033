//! Agent groups, enrollment tokens, agents, and HTTP calls through an
//! agent of a group.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_protocol::CallRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, Page, name_problem, optional_json_body,
    page_limit, paged, require_admin, require_operator,
};

use crate::Core;
use crate::connections::normalized::NormalizedResult;
use crate::identity::Principal;
use crate::store::{AgentGroup, AgentRow, now_unix};
use dibop_runtime::support::rfc3339;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct GroupView {
    id: String,
    tenant_id: String,
    name: String,
    description: String,
    created_at: String,
    agents_online: usize,
}

fn group_view(core: &Core, g: AgentGroup) -> GroupView {
    GroupView {
        agents_online: core.registry.online_in_group(&g.id),
        id: g.id,
        tenant_id: g.tenant_id,
        name: g.name,
        description: g.description,
        created_at: rfc3339(g.created_at),
    }
}

#[utoipa::path(post, path = "/api/v1/agent-groups", tag = "agents", summary = "Create an agent group", request_body = NewGroup, responses((status = 201, body = GroupView)), security(("bearer" = [])))]
pub(crate) async fn create_group(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<Response> {
    require_admin(&p)?;
    let name = body.name.trim();
    let mut problems = Vec::new();
    if let Some(problem) = name_problem(name) {
        problems.push(json!({"field": "name", "problem": problem}));
    }
    if body.description.len() > 1000 {
        problems
            .push(json!({"field": "description", "problem": "must be at most 1000 characters"}));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the agent group is invalid").with_details(json!(problems)));
    }
    let group = AgentGroup {
        id: crate::support::ids::new_id("grp"),
        tenant_id: p.tenant_id.clone(),
        name: name.to_owned(),
        description: body.description,
        created_at: now_unix(),
    };
    let tx = core.store.begin().await?;
    tx.create_group(&group).await?;
    crate::identity::audit::record_by(
        &tx,
        &p,
        "agent_group.create",
        ("agent_group", &group.id),
        json!({"name": group.name}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(group_view(&core, group))).into_response())
}

#[utoipa::path(get, path = "/api/v1/agent-groups", tag = "agents", summary = "List agent groups", responses((status = 200, body = [GroupView])), security(("bearer" = [])))]
pub(crate) async fn list_groups(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Response> {
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_groups(&p.tenant_id, page.cursor_of("grp_")?, limit + 1)
        .await?;
    let views: Vec<GroupView> = rows.into_iter().map(|g| group_view(&core, g)).collect();
    Ok(paged(views, limit, "/agent-groups", |g| g.id.clone()))
}

async fn load_group(core: &Core, p: &Principal, id: &str) -> ApiResult<AgentGroup> {
    core.store
        .group(&p.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent group", id))
}

#[utoipa::path(get, path = "/api/v1/agent-groups/{id}", tag = "agents", summary = "Get an agent group", params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = GroupView)), security(("bearer" = [])))]
pub(crate) async fn get_group(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<GroupView>> {
    let group = load_group(&core, &p, &id).await?;
    Ok(Json(group_view(&core, group)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEnrollmentToken {
    /// Lifetime in seconds (default 24 h, at most 30 days).
    ttl_secs: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/agent-groups/{id}/enrollment-tokens", tag = "agents", summary = "Create a single-use enrollment token", request_body = Option<NewEnrollmentToken>, params(("id" = String, Path, description = "The resource id")), responses((status = 201, body = crate::http::openapi::EnrollmentTokenView)), security(("bearer" = [])))]
pub(crate) async fn create_enrollment_token(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    require_admin(&p)?;
    // The body is optional: no body means the defaults.
    let options: NewEnrollmentToken = optional_json_body(&body)?.unwrap_or_default();
    let issued = crate::agents::enroll::issue_token(&core, &p, &id, options.ttl_secs).await?;
    let body = json!({
        "id": issued.id,
        "group_id": issued.group_id,
        "token": issued.token,
        "expires_at": rfc3339(issued.expires_at),
        "install_command": issued.install_command(),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AgentView {
    id: String,
    name: String,
    group_id: String,
    status: &'static str,
    version: String,
    hostname: String,
    last_seen: Option<String>,
    enrolled_at: String,
    certificate_expires_at: String,
    revoked_at: Option<String>,
    in_flight: u32,
}

fn agent_view(core: &Core, a: AgentRow) -> AgentView {
    let state = crate::agents::enroll::state_of(core, &a);
    AgentView {
        id: a.id,
        name: a.name,
        group_id: a.group_id,
        status: state.status,
        version: state.version,
        hostname: state.hostname,
        last_seen: state.last_seen.map(rfc3339),
        enrolled_at: rfc3339(a.enrolled_at),
        certificate_expires_at: rfc3339(a.cert_not_after),
        revoked_at: a.revoked_at.map(rfc3339),
        in_flight: state.in_flight,
    }
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", summary = "List agents", responses((status = 200, body = [AgentView])), security(("bearer" = [])))]
pub(crate) async fn list_agents(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> ApiResult<Response> {
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_agents(
            &p.tenant_id,
            page.group_id.as_deref(),
            page.cursor_of("agt_")?,
            limit + 1,
        )
        .await?;
    let views: Vec<AgentView> = rows.into_iter().map(|a| agent_view(&core, a)).collect();
    Ok(paged(views, limit, "/agents", |a| a.id.clone()))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", summary = "Get an agent", params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = AgentView)), security(("bearer" = [])))]
pub(crate) async fn get_agent(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AgentView>> {
    let row = core
        .store
        .agent(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", &id))?;
    Ok(Json(agent_view(&core, row)))
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", summary = "Revoke an agent", params(("id" = String, Path, description = "The resource id")), responses((status = 204, description = "Revoked; its tunnel is closed"), (status = 409, description = "Already revoked", body = crate::http::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn revoke_agent(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    require_admin(&p)?;
    crate::agents::enroll::revoke(&core, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /agent-groups/{id}/calls`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallBody {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    /// A string is sent as is; any other JSON value is sent as JSON.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    body: Option<Value>,
    timeout_ms: Option<u32>,
}

fn default_method() -> String {
    "GET".into()
}

/// Largest timeout a caller may ask for.
const MAX_CALL_TIMEOUT_MS: u32 = 120_000;
/// Default when the caller gives none.
const DEFAULT_CALL_TIMEOUT_MS: u32 = 30_000;

#[utoipa::path(post, path = "/api/v1/agent-groups/{id}/calls", tag = "calls", summary = "Perform an HTTP call through an agent of the group", request_body = CallBody, params(("id" = String, Path, description = "The resource id")), responses((status = 200, description = "The normalized result, whatever happened to the call", body = NormalizedResult)), security(("bearer" = [])))]
pub(crate) async fn group_call(
    State(core): State<Arc<Core>>,
    p: Principal,
    tenant: Option<axum::Extension<crate::store::Tenant>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CallBody>,
) -> ApiResult<Response> {
    require_operator(&p)?;
    // Groups are never reassigned, so an online agent of the group is proof
    // enough; the database is asked only when none is online.
    if !core.registry.group_owned_by(&id, &p.tenant_id) {
        load_group(&core, &p, &id).await?;
    }
    if let Some(tenant) = &tenant {
        core.quotas.take_call(&core.store, &tenant.0).await?;
    }
    let mut problems = Vec::new();
    let method = body.method.to_ascii_uppercase();
    if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&method.as_str()) {
        problems.push(json!({"field": "method", "problem": format!(
            "`{}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", body.method)}));
    }
    if !crate::catalogue::connector::is_http_url(&body.url) {
        problems.push(json!({"field": "url", "problem":
            "must be an absolute http(s) URL: a host name or IPv4 address, an optional port, then a path without spaces"}));
    }
    let timeout_ms = body.timeout_ms.unwrap_or(DEFAULT_CALL_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_CALL_TIMEOUT_MS {
        problems.push(
            json!({"field": "timeout_ms", "problem": format!("must be 1..={MAX_CALL_TIMEOUT_MS}")}),
        );
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the call is invalid").with_details(json!(problems)));
    }
    let mut headers: Vec<(String, String)> = body.headers.into_iter().collect();
    let payload = match body.body {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.into_bytes(),
        Some(v) => {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
    };
    let request = CallRequest {
        call_id: 0,
        method,
        url: body.url,
        headers,
        body: payload,
        timeout_ms,
    };
    let started = Instant::now();
    let result = core.registry.call(&id, request).await;
    core.metrics.call(
        "diagnostic",
        result.error.as_ref().map(|e| e.class.as_str()),
        started.elapsed().as_secs_f64(),
    );
    Ok(Json(NormalizedResult::from_result(result, started.elapsed())).into_response())
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(create_group, list_groups))
        .routes(utoipa_axum::routes!(get_group))
        .routes(utoipa_axum::routes!(create_enrollment_token))
        .routes(utoipa_axum::routes!(list_agents))
        .routes(utoipa_axum::routes!(get_agent, revoke_agent))
        .routes(utoipa_axum::routes!(group_call))
}
