//! Tenants (enterprises), their status and quota plans, and the platform
//! admins who manage them.
//!
//! Tiers: Free (1,000 calls a month, 10 requests a minute), Standard
//! (100,000; 60) and Premium (1,000,000; 300); a tenant may carry custom
//! values instead. The request rate applies to every authenticated API
//! request of the tenant (a token bucket refilled continuously); the monthly
//! quota counts relayed calls, kept in memory and written to the database in
//! batches every two seconds. Exceeding either answers 429 with
//! `Retry-After` and a message naming the limit. Both are enforced per
//! control-plane process: with several replicas the effective rate is the
//! sum (shared counters come with scale-out).
//!
//! Platform admins belong to the reserved `platform` tenant: they manage
//! tenants and see no tenant's data.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_relay_agent::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Core;
use crate::access::record;
use crate::api::{ApiError, ApiJson, ApiPath, Principal, page_limit, paged, query};
use crate::store::{Store, StoreError, Tenant};

/// Name of the reserved tenant that holds platform admins.
pub const PLATFORM_TENANT: &str = "platform";
/// Role of platform admins.
pub const PLATFORM_ADMIN: &str = "platform_admin";
/// How long a tenant's plan is cached.
const TENANT_CACHE_TTL: Duration = Duration::from_secs(10);

/// A tenant's effective limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Limits {
    /// Relayed calls per calendar month (UTC).
    pub calls_per_month: i64,
    /// API requests per minute.
    pub requests_per_minute: i64,
    /// Orchestration executions running at once (more wait in the queue).
    pub concurrent_executions: i64,
}

/// The tiers and their limits.
pub const TIERS: [(&str, Limits); 3] = [
    (
        "free",
        Limits {
            calls_per_month: 1_000,
            requests_per_minute: 10,
            concurrent_executions: 2,
        },
    ),
    (
        "standard",
        Limits {
            calls_per_month: 100_000,
            requests_per_minute: 60,
            concurrent_executions: 10,
        },
    ),
    (
        "premium",
        Limits {
            calls_per_month: 1_000_000,
            requests_per_minute: 300,
            concurrent_executions: 50,
        },
    ),
];

/// The limits a tenant runs with: custom values, else its tier's.
pub fn limits_of(t: &Tenant) -> Limits {
    let tier = TIERS
        .iter()
        .find(|(n, _)| *n == t.tier)
        .map_or(TIERS[1].1, |(_, l)| *l);
    Limits {
        calls_per_month: t.calls_per_month.unwrap_or(tier.calls_per_month),
        requests_per_minute: t.requests_per_minute.unwrap_or(tier.requests_per_minute),
        concurrent_executions: t
            .concurrent_executions
            .unwrap_or(tier.concurrent_executions),
    }
}

/// The current quota period (`YYYY-MM`, UTC) and the seconds until the next.
pub fn period_now() -> (String, i64) {
    let now = time::OffsetDateTime::now_utc();
    let period = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    let (y, m) = if now.month() == time::Month::December {
        (now.year() + 1, time::Month::January)
    } else {
        (now.year(), now.month().next())
    };
    let next = time::Date::from_calendar_date(y, m, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(0);
    (period, (next - now.unix_timestamp()).max(1))
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The rate it was made for; a plan change starts a fresh bucket.
    rpm: f64,
}

#[derive(Debug, Default)]
struct Usage {
    period: String,
    /// Counted in the database when this entry was loaded or last flushed.
    stored: i64,
    /// Counted here and not yet written.
    pending: i64,
}

/// Tenant plans, request rates and monthly usage.
#[derive(Debug)]
pub struct Quotas {
    tenants: crate::cache::TtlCache<Tenant>,
    buckets: Mutex<HashMap<String, Bucket>>,
    usage: tokio::sync::Mutex<HashMap<String, Usage>>,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            tenants: crate::cache::TtlCache::new(TENANT_CACHE_TTL, 100_000),
            buckets: Mutex::default(),
            usage: tokio::sync::Mutex::default(),
        }
    }
}

fn too_many(message: String, retry_after: u64) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        .with_retry_after(retry_after)
}

impl Quotas {
    /// The tenant's current row (cached briefly).
    pub async fn tenant(&self, store: &Store, id: &str) -> Result<Option<Tenant>, StoreError> {
        if let Some(t) = self.tenants.get(id) {
            return Ok(Some(t));
        }
        let t = store.tenant(id).await?;
        if let Some(t) = &t {
            self.tenants.insert(id.to_owned(), t.clone());
        }
        Ok(t)
    }

    /// Forgets a cached tenant (after a plan change on this node).
    pub fn forget(&self, id: &str) {
        self.tenants.remove_where(|t| t.id == id);
    }

    /// Takes one request from the tenant's per-minute budget.
    pub fn check_rate(&self, t: &Tenant) -> Result<(), ApiError> {
        let rpm = limits_of(t).requests_per_minute.max(1) as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| b.at.elapsed() < Duration::from_secs(120));
        }
        let fresh = Bucket {
            tokens: rpm,
            at: Instant::now(),
            rpm,
        };
        let bucket = buckets.entry(t.id.clone()).or_insert(fresh);
        if bucket.rpm != rpm {
            *bucket = Bucket {
                tokens: rpm,
                at: Instant::now(),
                rpm,
            };
        }
        let refill = bucket.at.elapsed().as_secs_f64() * rpm / 60.0;
        bucket.tokens = (bucket.tokens + refill).min(rpm);
        bucket.at = Instant::now();
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) * 60.0 / rpm).ceil().max(1.0) as u64;
        Err(too_many(
            format!(
                "tenant `{}` exceeded its limit of {} API requests per minute ({} tier); retry in {wait} s",
                t.name, rpm as i64, t.tier
            ),
            wait,
        ))
    }

    /// Counts one relayed call against the tenant's monthly quota.
    pub async fn take_call(&self, store: &Store, t: &Tenant) -> Result<(), ApiError> {
        let limit = limits_of(t).calls_per_month;
        let (period, reset_in) = period_now();
        let mut usage = self.usage.lock().await;
        let entry = usage.entry(t.id.clone()).or_default();
        if entry.period != period {
            // New month (or first use): start from what the database counted.
            *entry = Usage {
                stored: store.usage(&t.id, &period).await?,
                period: period.clone(),
                pending: 0,
            };
        }
        if entry.stored + entry.pending >= limit {
            return Err(too_many(
                format!(
                    "tenant `{}` used its monthly quota of {limit} calls ({} tier); it resets at {}",
                    t.name,
                    t.tier,
                    rfc3339(crate::store::now_unix() + reset_in)
                ),
                reset_in as u64,
            ));
        }
        entry.pending += 1;
        Ok(())
    }

    /// Writes pending call counts to the database.
    pub async fn flush(&self, store: &Store) {
        let pending: Vec<(String, String, i64)> = {
            let mut usage = self.usage.lock().await;
            usage
                .iter_mut()
                .filter(|(_, u)| u.pending > 0)
                .map(|(id, u)| {
                    let n = std::mem::take(&mut u.pending);
                    u.stored += n;
                    (id.clone(), u.period.clone(), n)
                })
                .collect()
        };
        for (tenant, period, n) in pending {
            if let Err(e) = store.add_usage(&tenant, &period, n).await {
                tracing::error!(%tenant, "cannot record {n} calls of usage: {e}");
            }
        }
    }
}

/// Runs [`Quotas::flush`] every two seconds until `shutdown`, then once more.
pub async fn flush_usage(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tick.tick() => core.quotas.flush(&core.store).await,
            _ = shutdown.cancelled() => break,
        }
    }
    core.quotas.flush(&core.store).await;
}

fn require_platform_admin(p: &Principal) -> Result<(), ApiError> {
    if p.role == PLATFORM_ADMIN {
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
    /// Whether its enterprise admins may publish enterprise-scoped connectors.
    enterprise_publishing: bool,
    calls_this_month: i64,
    created_at: String,
}

async fn tenant_view(store: &Store, t: Tenant) -> Result<TenantView, StoreError> {
    let (period, _) = period_now();
    Ok(TenantView {
        limits: limits_of(&t),
        calls_this_month: store.usage(&t.id, &period).await?,
        id: t.id,
        name: t.name,
        status: t.status,
        tier: t.tier,
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
        if matches!(s.as_str(), "active" | "suspended") {
            t.status = s.clone();
        } else {
            problems.push(json!({"field": "status", "problem": "must be active or suspended"}));
        }
    }
    if let Some(tier) = &plan.tier {
        if TIERS.iter().any(|(n, _)| n == tier) {
            t.tier = tier.clone();
        } else {
            problems.push(json!({"field": "tier", "problem": "must be free, standard or premium"}));
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
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", summary = "Create a tenant (platform admins)", request_body = TenantPlan, responses((status = 201, body = TenantView), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
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
    if name.is_empty() || name.len() > 100 || name == PLATFORM_TENANT {
        return Err(ApiError::invalid("the tenant is invalid").with_details(
            json!([{"field": "name", "problem": "must be 1 to 100 characters and not `platform`"}]),
        ));
    }
    let mut t = Tenant {
        id: crate::ids::new_id("ten"),
        name,
        created_at: 0,
        status: "active".into(),
        tier: "standard".into(),
        calls_per_month: None,
        requests_per_minute: None,
        enterprise_publishing: 0,
        concurrent_executions: None,
    };
    apply_plan(&mut t, &plan)?;
    let created = core.store.create_tenant(&t.id, &t.name).await?;
    t.created_at = created.created_at;
    core.store.update_tenant_plan(&t).await?;
    record(
        &core.store,
        None,
        &p.actor(),
        "tenant.create",
        ("tenant", &t.id),
        json!({"name": t.name, "tier": t.tier}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(tenant_view(&core.store, t).await?),
    )
        .into_response())
}

/// `GET /api/v1/tenants`
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", summary = "List tenants (platform admins)", responses((status = 200, body = [TenantView]), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list_tenants(
    State(core): State<Arc<Core>>,
    p: Principal,
    q: Result<Query<crate::api::Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_platform_admin(&p)?;
    let page = query(q)?;
    let limit = page_limit(page.limit)?;
    let mut views = Vec::new();
    for t in core
        .store
        .list_tenants(page.cursor_of("ten_")?, limit + 1)
        .await?
    {
        views.push(tenant_view(&core.store, t).await?);
    }
    Ok(paged(views, limit, "/tenants", |t| t.id.clone()))
}

/// `GET /api/v1/tenants/{id}`
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", summary = "Get a tenant (platform admins)", params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = TenantView), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
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
    Ok(Json(tenant_view(&core.store, t).await?))
}

/// `PATCH /api/v1/tenants/{id}`: suspend, resume, change tier or limits.
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", summary = "Suspend, resume or change a tenant's plan (platform admins)", request_body = TenantPlan, params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = TenantView), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
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
    let before = (t.status.clone(), t.tier.clone());
    apply_plan(&mut t, &plan)?;
    core.store.update_tenant_plan(&t).await?;
    core.quotas.forget(&t.id);
    let action = match (before.0.as_str(), t.status.as_str()) {
        ("active", "suspended") => "tenant.suspend",
        ("suspended", "active") => "tenant.resume",
        _ => "tenant.update_plan",
    };
    record(
        &core.store,
        None,
        &p.actor(),
        action,
        ("tenant", &t.id),
        json!({"tier": t.tier, "limits": limits_of(&t)}),
    )
    .await;
    Ok(Json(tenant_view(&core.store, t).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(tier: &str) -> Tenant {
        Tenant {
            id: "ten_1".into(),
            name: "acme".into(),
            created_at: 0,
            status: "active".into(),
            tier: tier.into(),
            calls_per_month: None,
            requests_per_minute: None,
            enterprise_publishing: 0,
            concurrent_executions: None,
        }
    }

    #[test]
    fn tiers_and_custom_values() {
        assert_eq!(
            limits_of(&tenant("free")),
            Limits {
                calls_per_month: 1_000,
                requests_per_minute: 10,
                concurrent_executions: 2,
            }
        );
        assert_eq!(limits_of(&tenant("premium")).requests_per_minute, 300);
        let mut t = tenant("standard");
        t.requests_per_minute = Some(5);
        assert_eq!(
            limits_of(&t),
            Limits {
                calls_per_month: 100_000,
                requests_per_minute: 5,
                concurrent_executions: 10,
            }
        );
    }

    #[test]
    fn request_rate_is_a_bucket_per_tenant() {
        let quotas = Quotas::default();
        let t = tenant("free");
        for _ in 0..10 {
            quotas.check_rate(&t).unwrap();
        }
        let err = quotas.check_rate(&t).unwrap_err();
        assert!(
            format!("{err:?}").contains("10 API requests per minute"),
            "{err:?}"
        );
        let mut other = tenant("free");
        other.id = "ten_2".into();
        quotas.check_rate(&other).unwrap();
    }

    #[test]
    fn periods_are_calendar_months() {
        let (period, reset_in) = period_now();
        assert_eq!(period.len(), 7);
        assert!(reset_in > 0 && reset_in <= 31 * 24 * 3600);
    }
}
