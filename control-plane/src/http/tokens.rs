//! API tokens of a tenant and the audit log.
//!
//! Tokens are opaque: `dibop_` and 43 random characters, shown once at
//! creation; only their SHA-256 is stored, with a 12-character prefix to
//! recognise them in lists. Every change made through the API or the CLI is
//! written to the audit log: who, which tenant (none for platform-level
//! entries), what, which resource, when, from where, and the request id.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Core;
use crate::http::{ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged};
use crate::identity::access;
use crate::store::{ApiTokenRow, AuditFilter};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    name: String,
    role: String,
    /// Lifetime in seconds; none means no expiry.
    ttl_secs: Option<u64>,
    /// Give (`true`) or withhold (`false`) the `view_pii` permission; by
    /// default the role decides (enterprise_admin and operator have it).
    view_pii: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenView {
    id: String,
    name: String,
    #[schema(value_type = String)]
    role: crate::identity::Role,
    prefix: String,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
    /// Whether it may see personal data (the role's default unless set).
    view_pii: bool,
}

fn token_view(t: ApiTokenRow) -> TokenView {
    TokenView {
        view_pii: crate::cdm::pii::role_views(t.role, t.view_pii),
        id: t.id,
        name: t.name,
        role: t.role,
        prefix: t.prefix,
        created_at: rfc3339(t.created_at),
        expires_at: t.expires_at.map(rfc3339),
        revoked_at: t.revoked_at.map(rfc3339),
        last_used_at: t.last_used_at.map(rfc3339),
    }
}

/// `POST /api/v1/api-tokens`
#[utoipa::path(post, path = "/api/v1/api-tokens", tag = "access", summary = "Create an API token (the secret is shown once)", request_body = NewToken, responses((status = 201, body = crate::http::openapi::CreatedTokenView)), security(("bearer" = [])))]
pub(crate) async fn create_token(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let new = access::NewToken {
        name: body.name,
        role: body.role,
        ttl_secs: body.ttl_secs,
        view_pii: body.view_pii,
    };
    let (row, secret) = access::create_token(&core, &p, new).await?;
    let mut view = serde_json::to_value(token_view(row)).unwrap_or_default();
    view["token"] = Value::String(secret);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /api/v1/api-tokens`
#[utoipa::path(get, path = "/api/v1/api-tokens", tag = "access", summary = "List API tokens (no secrets)", responses((status = 200, body = [TokenView])), security(("bearer" = [])))]
pub(crate) async fn list_tokens(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    crate::http::require_admin_to(&p, "list API tokens")?;
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_api_tokens(&p.tenant_id, page.cursor_of("tok_")?, limit + 1)
        .await?;
    let views: Vec<TokenView> = rows.into_iter().map(token_view).collect();
    Ok(paged(views, limit, "/api-tokens", |t| t.id.clone()))
}

/// `DELETE /api/v1/api-tokens/{id}`
#[utoipa::path(delete, path = "/api/v1/api-tokens/{id}", tag = "access", summary = "Revoke an API token", params(("id" = String, Path, description = "The resource id")), responses((status = 204, description = "Revoked"), (status = 409, description = "Already revoked", body = crate::http::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn revoke_token(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    access::revoke_token(&core, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    action: Option<String>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// `user:usr_…`, `token:tok_…` or `cli`.
    actor: Option<String>,
    /// RFC 3339 time or a date: entries at or after it.
    since: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditView {
    id: String,
    at: String,
    actor: String,
    action: String,
    resource_type: String,
    resource_id: String,
    source_ip: String,
    request_id: String,
    /// What changed (`null` when nothing more is said).
    details: Value,
}

/// `GET /api/v1/audit`: the tenant's entries, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "access", summary = "The tenant's audit log, newest first", responses((status = 200, body = [AuditView])), security(("bearer" = [])))]
pub(crate) async fn list_audit(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    crate::http::require_admin_to(&p, "read the audit log")?;
    let limit = page_limit(q.limit)?;
    if q.cursor.as_deref().is_some_and(|c| !c.starts_with("aud_")) {
        return Err(ApiError::invalid(
            "cursor is not an audit cursor: use the `Link` header of the previous page",
        ));
    }
    let filter = AuditFilter {
        action: q.action,
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        before: q.cursor,
        since: crate::http::connections::time_bound("since", q.since.as_deref())?,
        actor: q.actor,
    };
    let rows = core
        .store
        .list_audit(Some(&p.tenant_id), &filter, limit + 1)
        .await?;
    let views: Vec<AuditView> = rows
        .into_iter()
        .map(|e| AuditView {
            details: serde_json::from_str(&e.details).unwrap_or(Value::Null),
            id: e.id,
            at: rfc3339(e.at),
            actor: e.actor,
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            source_ip: e.source_ip,
            request_id: e.request_id,
        })
        .collect();
    Ok(paged(views, limit, "/audit", |e| e.id.clone()))
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(create_token, list_tokens))
        .routes(utoipa_axum::routes!(revoke_token))
        .routes(utoipa_axum::routes!(list_audit))
}
