//! Tenants (enterprises), their status and quota plans, and the platform
//! admins who manage them.
//!
//! Tiers: Free (1,000 calls a month, 10 requests a minute), Standard
//! (100,000; 60) and Premium (1,000,000; 300); a tenant may carry custom
//! values instead. Each tier also sets concurrent executions, a storage
//! limit and how long executions and call records are kept. How the limits
//! are enforced, across replicas, is in [`crate::quotas`].
//!
//! Platform admins belong to the reserved `platform` tenant: they manage
//! tenants and see no tenant's data.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Core;
use crate::domain::{TenantStatus, Tier};
use crate::http::{ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged};
use crate::identity::audit::record;
use crate::identity::{PLATFORM_TENANT, Role};
use crate::quotas::period_now;
use crate::quotas::plans::{Limits, limits_of};
use crate::store::{StoreError, Tenant};

fn require_platform_admin(p: &Principal) -> Result<(), ApiError> {
    if p.role == Role::PlatformAdmin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only platform admins manage tenants",
        ))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantView {
    id: String,
    name: String,
    status: String,
    tier: String,
    limits: Limits,
    custom_calls_per_month: Option<i64>,
    custom_requests_per_minute: Option<i64>,
    custom_concurrent_executions: Option<i64>,
    custom_storage_bytes: Option<i64>,
    custom_retention_days: Option<i64>,
    /// Whether its enterprise admins may publish enterprise-scoped connectors.
    enterprise_publishing: bool,
    calls_this_month: i64,
    /// API requests in the last minute, across every control-plane replica
    /// (the other replicas' counts up to a second late).
    requests_last_minute: i64,
    /// Stored bytes as last measured (absent until the first measurement).
    storage_bytes: Option<i64>,
    storage_measured_at: Option<String>,
    created_at: String,
}

async fn tenant_view(core: &Core, t: Tenant) -> Result<TenantView, StoreError> {
    let store = &core.store;
    let (period, _) = period_now();
    let storage = store.tenant_storage(&t.id).await?;
    Ok(TenantView {
        limits: limits_of(&t),
        calls_this_month: store.usage(&t.id, &period).await?,
        requests_last_minute: core.quotas.requests_last_minute(&t.id),
        storage_bytes: storage.as_ref().map(|s| s.bytes),
        storage_measured_at: storage.map(|s| rfc3339(s.measured_at)),
        custom_storage_bytes: t.storage_bytes,
        custom_retention_days: t.retention_days,
        id: t.id,
        name: t.name,
        status: t.status.to_string(),
        tier: t.tier.to_string(),
        custom_calls_per_month: t.calls_per_month,
        custom_requests_per_minute: t.requests_per_minute,
        custom_concurrent_executions: t.concurrent_executions,
        enterprise_publishing: t.enterprise_publishing != 0,
        created_at: rfc3339(t.created_at),
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPlan {
    name: Option<String>,
    status: Option<String>,
    tier: Option<String>,
    /// A number sets a custom value; `null` returns to the tier's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    calls_per_month: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    requests_per_minute: Option<Option<i64>>,
    /// A number sets a custom value; `null` returns to the tier's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    concurrent_executions: Option<Option<i64>>,
    /// Stored bytes; a number sets a custom value, `null` returns to the tier's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    storage_bytes: Option<Option<i64>>,
    /// Days executions and call records are kept; `null` returns to the tier's.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    retention_days: Option<Option<i64>>,
    /// Lets the tenant's enterprise admins publish connectors for their own
    /// enterprise (global publishing stays with platform admins).
    enterprise_publishing: Option<bool>,
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(d).map(Some)
}

/// Applies a plan change, validating every field.
fn apply_plan(t: &mut Tenant, plan: &TenantPlan) -> Result<(), ApiError> {
    let mut problems = Vec::new();
    if let Some(s) = &plan.status {
        match s.parse() {
            Ok(s) => t.status = s,
            Err(e) => problems.push(json!({"field": "status", "problem": e.to_string()})),
        }
    }
    if let Some(tier) = &plan.tier {
        match tier.parse() {
            Ok(tier) => t.tier = tier,
            Err(e) => problems.push(json!({"field": "tier", "problem": e.to_string()})),
        }
    }
    for (field, value, target) in [
        (
            "calls_per_month",
            plan.calls_per_month,
            &mut t.calls_per_month,
        ),
        (
            "requests_per_minute",
            plan.requests_per_minute,
            &mut t.requests_per_minute,
        ),
        (
            "concurrent_executions",
            plan.concurrent_executions,
            &mut t.concurrent_executions,
        ),
        ("storage_bytes", plan.storage_bytes, &mut t.storage_bytes),
        ("retention_days", plan.retention_days, &mut t.retention_days),
    ] {
        match value {
            Some(Some(n)) if n < 1 => {
                problems.push(json!({"field": field, "problem": "must be at least 1"}))
            }
            Some(v) => *target = v,
            None => {}
        }
    }
    if let Some(on) = plan.enterprise_publishing {
        t.enterprise_publishing = i64::from(on);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("the tenant plan is invalid").with_details(json!(problems)))
    }
}

/// `POST /api/v1/tenants`
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", summary = "Create a tenant (platform admins)", request_body = TenantPlan, responses((status = 201, body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn create_tenant(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(plan): ApiJson<TenantPlan>,
) -> Result<Response, ApiError> {
    require_platform_admin(&p)?;
    let name = plan
        .name
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    if crate::http::name_problem(&name).is_some() || name == PLATFORM_TENANT {
        return Err(ApiError::invalid("the tenant is invalid").with_details(
            json!([{"field": "name", "problem": "must be 1 to 100 characters, no control characters, and not `platform`"}]),
        ));
    }
    let mut t = Tenant {
        id: crate::support::ids::new_id("ten"),
        name,
        created_at: 0,
        status: TenantStatus::Active,
        tier: Tier::Standard,
        calls_per_month: None,
        requests_per_minute: None,
        enterprise_publishing: 0,
        concurrent_executions: None,
        storage_bytes: None,
        retention_days: None,
    };
    apply_plan(&mut t, &plan)?;
    let tx = core.store.begin().await?;
    let created = tx.create_tenant(&t.id, &t.name).await?;
    t.created_at = created.created_at;
    tx.update_tenant_plan(&t).await?;
    record(
        &tx,
        None,
        &p.actor(),
        "tenant.create",
        ("tenant", &t.id),
        json!({"name": t.name, "tier": t.tier}),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(tenant_view(&core, t).await?)).into_response())
}

/// `GET /api/v1/tenants`
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", summary = "List tenants (platform admins)", responses((status = 200, body = [TenantView])), security(("bearer" = [])))]
pub(crate) async fn list_tenants(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    require_platform_admin(&p)?;
    let limit = page_limit(page.limit)?;
    let mut views = Vec::new();
    for t in core
        .store
        .list_tenants(page.cursor_of("ten_")?, limit + 1)
        .await?
    {
        views.push(tenant_view(&core, t).await?);
    }
    Ok(paged(views, limit, "/tenants", |t| t.id.clone()))
}

/// `GET /api/v1/usage`: the caller's own tenant, its limits and usage.
#[utoipa::path(get, path = "/api/v1/usage", tag = "tenants", summary = "Your tenant's plan, limits and usage (calls this month, stored bytes)", responses((status = 200, body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn own_usage(
    State(core): State<Arc<Core>>,
    p: Principal,
) -> Result<Json<TenantView>, ApiError> {
    let t = core
        .store
        .tenant(&p.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", &p.tenant_id))?;
    Ok(Json(tenant_view(&core, t).await?))
}

/// `GET /api/v1/tenants/{id}`
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", summary = "Get a tenant (platform admins)", params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn get_tenant(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TenantView>, ApiError> {
    require_platform_admin(&p)?;
    let t = core
        .store
        .tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", &id))?;
    Ok(Json(tenant_view(&core, t).await?))
}

/// `PATCH /api/v1/tenants/{id}`: suspend, resume, change tier or limits.
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", summary = "Suspend, resume or change a tenant's plan (platform admins)", request_body = TenantPlan, params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = TenantView)), security(("bearer" = [])))]
pub(crate) async fn update_tenant(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(plan): ApiJson<TenantPlan>,
) -> Result<Json<TenantView>, ApiError> {
    require_platform_admin(&p)?;
    let mut t = core
        .store
        .tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", &id))?;
    if t.name == PLATFORM_TENANT {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the platform tenant cannot be changed",
        ));
    }
    if plan.name.is_some() {
        return Err(ApiError::invalid("a tenant's name cannot be changed")
            .with_details(json!([{"field": "name", "problem": "read-only"}])));
    }
    let before = t.status;
    apply_plan(&mut t, &plan)?;
    let tx = core.store.begin().await?;
    tx.update_tenant_plan(&t).await?;
    let action = match (before, t.status) {
        (TenantStatus::Active, TenantStatus::Suspended) => "tenant.suspend",
        (TenantStatus::Suspended, TenantStatus::Active) => "tenant.resume",
        _ => "tenant.update_plan",
    };
    record(
        &tx,
        None,
        &p.actor(),
        action,
        ("tenant", &t.id),
        json!({"tier": t.tier, "limits": limits_of(&t)}),
    )
    .await?;
    tx.commit().await?;
    core.quotas.forget(&t.id);
    Ok(Json(tenant_view(&core, t).await?))
}

/// A tenant's user created by a platform admin (typically its first
/// enterprise admin).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTenantUser {
    email: String,
    /// At least 12 characters; hand it to the person, who should change it.
    password: String,
    /// `enterprise_admin` (the default), `operator` or `viewer`.
    role: Option<String>,
}

/// `POST /api/v1/tenants/{id}/users`: a platform admin gives a tenant a
/// user (its first enterprise admin). The platform admin sees nothing of the
/// tenant's data afterwards: the answer is the new user, no session.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/users", tag = "tenants", summary = "Create a tenant's user, e.g. its first enterprise admin (platform admins)", request_body = NewTenantUser, params(("id" = String, Path, description = "The resource id")), responses((status = 201, body = crate::http::users::UserView), (status = 404, description = "No such tenant", body = crate::http::openapi::ErrorBody), (status = 409, description = "The email is already taken", body = crate::http::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create_tenant_user(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewTenantUser>,
) -> Result<Response, ApiError> {
    require_platform_admin(&p)?;
    let t = core
        .store
        .tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant", &id))?;
    if t.name == PLATFORM_TENANT {
        return Err(ApiError::invalid("the platform tenant holds platform admins only")
            .with_details(json!([{"field": "id", "problem": "create platform admins with `dibop admin create-platform-admin`"}])));
    }
    let role = body.role.as_deref().unwrap_or("enterprise_admin");
    let user =
        crate::identity::users::new_user(&core.store, &t.id, &body.email, &body.password, role)
            .await?;
    let tx = core.store.begin().await?;
    tx.create_user(&user).await?;
    let details = json!({"email": user.email, "role": user.role, "by": "platform_admin"});
    // In the tenant's own audit log (its admins see who made the user) and the platform's.
    record(
        &tx,
        Some(&t.id),
        &p.actor(),
        "user.create",
        ("user", &user.id),
        details.clone(),
    )
    .await?;
    record(
        &tx,
        None,
        &p.actor(),
        "tenant.create_user",
        ("tenant", &t.id),
        json!({"user_id": user.id, "role": user.role}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(crate::http::users::user_view(&user)),
    )
        .into_response())
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(create_tenant, list_tenants))
        .routes(utoipa_axum::routes!(own_usage))
        .routes(utoipa_axum::routes!(get_tenant, update_tenant))
        .routes(utoipa_axum::routes!(create_tenant_user))
}
