//! People: email and password sign-in, sessions, and a tenant's users.
//!
//! Passwords are hashed with Argon2id (OWASP baseline parameters, PHC
//! strings so they can be raised later) on the blocking pool, at most
//! [`MAX_CONCURRENT_HASHES`] at once: each hash takes about 19 MiB, so a
//! login flood cannot exhaust memory. A session is an API token linked to
//! its user (12 hours): the user's current role applies on the next request,
//! and disabling the user ends every session.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dibop_relay_agent::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::Core;
use crate::access::{TENANT_ROLES, record};
use crate::api::{ApiError, ApiJson, ApiPath, Principal, page_limit, paged, query, require_admin};
use crate::store::{ApiTokenRow, Store, StoreError, UserRow, now_unix};

/// Hashes running at once (each allocates about 19 MiB).
pub const MAX_CONCURRENT_HASHES: usize = 2;
/// Lifetime of a session.
pub const SESSION_TTL_SECS: i64 = 12 * 3600;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_CONCURRENT_HASHES));

/// A hash to compare against when the email is unknown, so that unknown and
/// known emails take the same time.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    argon2::Argon2::default()
        .hash_password(b"dibop-timing-equaliser")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Hashes a password off the async threads.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    let _permit = HASHING.acquire().await?;
    let hash = tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    Ok(hash)
}

/// Checks a password against a PHC string off the async threads.
pub async fn verify_password(password: String, hash: String) -> bool {
    let Ok(_permit) = HASHING.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

fn email_problem(email: &str) -> Option<&'static str> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    (!ok).then_some("must be an email address")
}

fn password_problem(password: &str) -> Option<String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        Some(format!("must be at least {MIN_PASSWORD_LEN} characters"))
    } else if n > 1024 {
        Some("must be at most 1024 characters".into())
    } else {
        None
    }
}

/// Why `role` cannot exist in a tenant (the platform tenant when `platform`):
/// the platform tenant holds platform admins only, every other tenant the
/// enterprise roles only.
pub fn role_problem(platform: bool, role: &str) -> Option<String> {
    if platform {
        (role != crate::tenants::PLATFORM_ADMIN).then(|| {
            format!(
                "the platform tenant holds platform admins only: must be {}",
                crate::tenants::PLATFORM_ADMIN
            )
        })
    } else {
        (!TENANT_ROLES.contains(&role))
            .then(|| format!("must be one of {}", TENANT_ROLES.join(", ")))
    }
}

/// Creates a user after validating every field; returns the row.
pub async fn create_user(
    store: &Store,
    tenant_id: &str,
    email: &str,
    password: &str,
    role: &str,
) -> Result<UserRow, ApiError> {
    let email = normalize_email(email);
    let mut problems = Vec::new();
    if let Some(p) = email_problem(&email) {
        problems.push(json!({"field": "email", "problem": p}));
    }
    if let Some(p) = password_problem(password) {
        problems.push(json!({"field": "password", "problem": p}));
    }
    let platform = store
        .tenant(tenant_id)
        .await?
        .is_some_and(|t| t.name == crate::tenants::PLATFORM_TENANT);
    if let Some(problem) = role_problem(platform, role) {
        problems.push(json!({"field": "role", "problem": problem}));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the user is invalid").with_details(json!(problems)));
    }
    let password_hash = hash_password(password.to_owned()).await.map_err(|e| {
        tracing::error!("{e}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot store the password",
        )
    })?;
    let user = UserRow {
        id: crate::ids::new_id("usr"),
        tenant_id: tenant_id.to_owned(),
        email,
        password_hash,
        role: role.to_owned(),
        created_at: now_unix(),
        disabled_at: None,
        view_pii: None,
    };
    store.create_user(&user).await?;
    Ok(user)
}

/// Signs a user in: a new session token, or `None` for wrong credentials.
pub async fn login(
    store: &Store,
    email: &str,
    password: &str,
) -> Result<Option<(UserRow, ApiTokenRow, String)>, StoreError> {
    let user = store.user_by_email(&normalize_email(email)).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| DUMMY_HASH.clone(), |u| u.password_hash.clone());
    let matches = verify_password(password.to_owned(), hash).await;
    let Some(user) = user.filter(|u| matches && u.disabled_at.is_none()) else {
        return Ok(None);
    };
    let secret = crate::ids::new_secret("dibop_");
    let row = ApiTokenRow {
        id: crate::ids::new_id("tok"),
        tenant_id: user.tenant_id.clone(),
        name: format!("session of {}", user.email),
        role: user.role.clone(),
        prefix: secret.chars().take(12).collect(),
        created_at: now_unix(),
        expires_at: Some(now_unix() + SESSION_TTL_SECS),
        revoked_at: None,
        last_used_at: None,
        user_id: None,
        view_pii: None,
    };
    store
        .create_session(&row, &user.id, &crate::ids::hash_secret(&secret))
        .await?;
    Ok(Some((user, row, secret)))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    email: String,
    password: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    id: String,
    email: String,
    role: String,
    created_at: String,
    disabled_at: Option<String>,
    /// Whether the user may see personal data (the role's default unless set).
    view_pii: bool,
}

pub(crate) fn user_view(u: &UserRow) -> UserView {
    UserView {
        view_pii: crate::pii::role_views(&u.role, u.view_pii),
        id: u.id.clone(),
        email: u.email.clone(),
        role: u.role.clone(),
        created_at: rfc3339(u.created_at),
        disabled_at: u.disabled_at.map(rfc3339),
    }
}

/// `POST /api/v1/auth/login` (no token needed).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "access", summary = "Sign in with email and password", request_body = LoginBody, responses((status = 200, body = crate::openapi::SessionView), (status = 401, description = "Wrong email or password", body = crate::openapi::ErrorBody)))]
pub(crate) async fn login_handler(
    State(core): State<Arc<Core>>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    match login(&core.store, &body.email, &body.password).await? {
        Some((user, session, secret)) => {
            record(
                &core.store,
                Some(&user.tenant_id),
                &format!("user:{}", user.id),
                "session.create",
                ("session", &session.id),
                Value::Null,
            )
            .await;
            Ok(Json(json!({
                "token": secret,
                "token_type": "Bearer",
                "expires_at": session.expires_at.map(rfc3339),
                "user": user_view(&user),
                "tenant_id": user.tenant_id,
            }))
            .into_response())
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the email or the password is wrong",
        )),
    }
}

/// `POST /api/v1/auth/logout`: revokes the token used for this request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "access", summary = "Sign out: the token of this request stops working", responses((status = 204, description = "Signed out"), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn logout_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
) -> Result<StatusCode, ApiError> {
    core.store
        .revoke_api_token(&p.tenant_id, &p.token_id, now_unix())
        .await?;
    core.tokens.forget(&p.token_id);
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "session.revoke",
        ("session", &p.token_id),
        Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUser {
    email: String,
    password: String,
    role: String,
}

/// `POST /api/v1/users`
#[utoipa::path(post, path = "/api/v1/users", tag = "access", summary = "Create a user", request_body = NewUser, responses((status = 201, body = UserView), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create_user_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let user = create_user(
        &core.store,
        &p.tenant_id,
        &body.email,
        &body.password,
        &body.role,
    )
    .await?;
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "user.create",
        ("user", &user.id),
        json!({"email": user.email, "role": user.role}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/users/{}", user.id))],
        Json(user_view(&user)),
    )
        .into_response())
}

/// `GET /api/v1/users`
#[utoipa::path(get, path = "/api/v1/users", tag = "access", summary = "List users", responses((status = 200, body = [UserView]), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list_users_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
    q: Result<Query<crate::api::Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    crate::api::require_admin_to(&p, "list users")?;
    let page = query(q)?;
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_users(&p.tenant_id, page.cursor_of("usr_")?, limit + 1)
        .await?;
    let views: Vec<UserView> = rows.iter().map(user_view).collect();
    Ok(paged(views, limit, "/users", |u| u.id.clone()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    role: Option<String>,
    disabled: Option<bool>,
    /// Give (`true`) or withhold (`false`) `view_pii`; `null` returns to the role's default.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    view_pii: Option<Option<bool>>,
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

/// `PATCH /api/v1/users/{id}`: change the role or disable/enable; takes
/// effect on the user's next request.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "access", summary = "Change a user's role or disable them", request_body = UserPatch, params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = UserView), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn update_user_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    require_admin(&p)?;
    if let Some(role) = &body.role
        && let Some(problem) = role_problem(p.is_platform_admin(), role)
    {
        return Err(ApiError::invalid("the change is invalid")
            .with_details(json!([{"field": "role", "problem": problem}])));
    }
    let disabled_at = body.disabled.map(|d| d.then(now_unix));
    let user = core
        .store
        .update_user(
            &p.tenant_id,
            &id,
            body.role.as_deref(),
            disabled_at,
            body.view_pii.map(|v| v.map(i64::from)),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("user", &id))?;
    // Sessions cached on this node must see the change on their next request.
    for session in core.store.session_ids_of(&user.id).await? {
        core.tokens.forget(&session);
    }
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "user.update",
        ("user", &user.id),
        json!({"role": body.role, "disabled": body.disabled, "view_pii": body.view_pii}),
    )
    .await;
    Ok(Json(user_view(&user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_per_salt() {
        let a = hash_password("correct horse battery".into()).await.unwrap();
        let b = hash_password("correct horse battery".into()).await.unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify_password("correct horse battery".into(), a.clone()).await);
        assert!(!verify_password("wrong horse battery".into(), a).await);
    }

    #[test]
    fn emails_and_passwords_are_checked() {
        assert!(email_problem("ana@dealer.example").is_none());
        assert!(email_problem("ana@localhost").is_some());
        assert!(email_problem("ana dealer@x.y").is_some());
        assert!(password_problem("short").is_some());
        assert!(password_problem("long enough password").is_none());
    }
}
