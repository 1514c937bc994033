//! People: email and password sign-in, sessions, and a tenant's users.
//!
//! Passwords are hashed with Argon2id (OWASP baseline parameters, PHC
//! strings so they can be raised later) on the blocking pool, at most
//! [`MAX_CONCURRENT_HASHES`] at once: each hash takes about 19 MiB, so a
//! login flood cannot exhaust memory. A session is an API token linked to
//! its user (12 hours): the user's current role applies on the next request,
//! and disabling the user ends every session.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Core;
use crate::http::{ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged};
use crate::identity::Role;
use crate::identity::access;
use crate::identity::users::{SignedIn, sign_in, sign_out};
use crate::store::UserRow;

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
    #[schema(value_type = String)]
    role: Role,
    created_at: String,
    disabled_at: Option<String>,
    /// Whether the user may see personal data (the role's default unless set).
    view_pii: bool,
}

pub(crate) fn user_view(u: &UserRow) -> UserView {
    UserView {
        view_pii: crate::cdm::pii::role_views(u.role, u.view_pii),
        id: u.id.clone(),
        email: u.email.clone(),
        role: u.role,
        created_at: rfc3339(u.created_at),
        disabled_at: u.disabled_at.map(rfc3339),
    }
}

/// `POST /api/v1/auth/login` (no token needed).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "access", summary = "Sign in with email and password", request_body = LoginBody, responses((status = 200, body = crate::http::openapi::SessionView), (status = 401, description = "Wrong email or password", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn login_handler(
    State(core): State<Arc<Core>>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    match sign_in(&core.store, &body.email, &body.password).await? {
        Some((SignedIn { user, session }, secret)) => Ok(Json(json!({
            "token": secret,
            "token_type": "Bearer",
            "expires_at": session.expires_at.map(rfc3339),
            "user": user_view(&user),
            "tenant_id": user.tenant_id,
        }))
        .into_response()),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the email or the password is wrong",
        )),
    }
}

/// `POST /api/v1/auth/logout`: revokes the token used for this request.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "access", summary = "Sign out: the token of this request stops working", responses((status = 204, description = "Signed out")), security(("bearer" = [])))]
pub(crate) async fn logout_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
) -> Result<StatusCode, ApiError> {
    sign_out(&core, &p).await?;
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
#[utoipa::path(post, path = "/api/v1/users", tag = "access", summary = "Create a user", request_body = NewUser, responses((status = 201, body = UserView)), security(("bearer" = [])))]
pub(crate) async fn create_user_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let user = access::create_user(&core, &p, &body.email, &body.password, &body.role).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/users/{}", user.id))],
        Json(user_view(&user)),
    )
        .into_response())
}

/// `GET /api/v1/users`
#[utoipa::path(get, path = "/api/v1/users", tag = "access", summary = "List users", responses((status = 200, body = [UserView])), security(("bearer" = [])))]
pub(crate) async fn list_users_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    crate::http::require_admin_to(&p, "list users")?;
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
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "access", summary = "Change a user's role or disable them", request_body = UserPatch, params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = UserView)), security(("bearer" = [])))]
pub(crate) async fn update_user_handler(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<UserView>, ApiError> {
    let change = access::UserChange {
        role: body.role,
        disabled: body.disabled,
        view_pii: body.view_pii,
    };
    Ok(Json(user_view(
        &access::update_user(&core, &p, &id, change).await?,
    )))
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(login_handler))
        .routes(utoipa_axum::routes!(logout_handler))
        .routes(utoipa_axum::routes!(
            create_user_handler,
            list_users_handler
        ))
        .routes(utoipa_axum::routes!(update_user_handler))
}
