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
use serde_json::{Value, json};

use crate::Core;
use crate::http::{
    ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged, require_admin,
};
use crate::identity::audit::record_by;
use crate::identity::tokens::issue_token;
use crate::store::{ApiTokenRow, AuditFilter, now_unix};

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
    require_admin(&p)?;
    let mut problems = Vec::new();
    let name = body.name.trim();
    if let Some(problem) = crate::http::name_problem(name) {
        problems.push(json!({"field": "name", "problem": problem}));
    }
    let role = crate::identity::users::tenant_role(p.is_platform_admin(), &body.role);
    if let Err(problem) = &role {
        problems.push(json!({"field": "role", "problem": problem}));
    }
    if let Some(ttl) = body.ttl_secs
        && !(60..=10 * 365 * 24 * 3600).contains(&ttl)
    {
        problems.push(
            json!({"field": "ttl_secs", "problem": "must be between 60 and 315360000 (10 years)"}),
        );
    }
    let (true, Ok(role)) = (problems.is_empty(), role) else {
        return Err(ApiError::invalid("the API token is invalid").with_details(json!(problems)));
    };
    let expires_at = body.ttl_secs.map(|t| now_unix() + t as i64);
    let tx = core.store.begin().await?;
    let (mut row, secret) = issue_token(&tx, &p.tenant_id, name, role, expires_at).await?;
    if let Some(v) = body.view_pii {
        tx.set_token_view_pii(&row.id, i64::from(v)).await?;
        row.view_pii = Some(i64::from(v));
    }
    record_by(
        &tx,
        &p,
        "api_token.create",
        ("api_token", &row.id),
        json!({"name": row.name, "role": row.role, "view_pii": body.view_pii}),
    )
    .await?;
    tx.commit().await?;
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
    require_admin(&p)?;
    match core.store.api_token(&p.tenant_id, &id).await? {
        None => return Err(ApiError::not_found("API token", &id)),
        Some(t) if t.revoked_at.is_some() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_revoked",
                format!(
                    "API token `{}` was already revoked at {}",
                    t.prefix,
                    rfc3339(t.revoked_at.unwrap_or_default())
                ),
            ));
        }
        Some(_) => {}
    }
    let tx = core.store.begin().await?;
    let Some(row) = tx.revoke_api_token(&p.tenant_id, &id, now_unix()).await? else {
        return Err(ApiError::not_found("API token", &id));
    };
    record_by(
        &tx,
        &p,
        "api_token.revoke",
        ("api_token", &row.id),
        json!({"name": row.name}),
    )
    .await?;
    tx.commit().await?;
    core.tokens.forget(&row.id);
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
