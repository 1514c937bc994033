//! Single sign-on settings through the API: an enterprise's own OpenID
//! Connect provider (see [`crate::identity::sso`]). People sign in through
//! it in the console (`/sign-in`, "Sign in with single sign-on").

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::Core;
use crate::http::{ApiError, ApiJson, Principal};
use crate::identity::sso::{self, SsoSettings, SsoView};

/// `GET /api/v1/sso`
#[utoipa::path(get, path = "/api/v1/sso", tag = "access",
    summary = "The enterprise's single sign-on provider (the client secret is never shown)",
    responses((status = 200, body = SsoView),
        (status = 404, description = "None is set up", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    p: Principal,
) -> Result<Json<SsoView>, ApiError> {
    sso::settings_of(&core, &p)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("single sign-on", &p.tenant_id))
}

/// `PUT /api/v1/sso`
#[utoipa::path(put, path = "/api/v1/sso", tag = "access",
    summary = "Set the enterprise's OpenID Connect provider for single sign-on",
    description = "Checks every field and that the issuer answers OpenID Connect discovery. Register \
        `<console URL>/sign-in/sso/callback` as the client's redirect URI at the provider. Each email domain \
        signs in through one enterprise's provider. `default_role` lets anyone of those domains in on their \
        first sign-in with that role; without it only users an admin created may sign in.",
    request_body = SsoSettings,
    responses((status = 200, body = SsoView),
        (status = 422, description = "Every problem in `details`", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(settings): ApiJson<SsoSettings>,
) -> Result<Json<SsoView>, ApiError> {
    Ok(Json(sso::configure(&core, &p, settings).await?))
}

/// `DELETE /api/v1/sso`
#[utoipa::path(delete, path = "/api/v1/sso", tag = "access",
    summary = "Remove single sign-on: people sign in with their passwords again",
    responses((status = 204, description = "Removed"),
        (status = 404, description = "None is set up", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    p: Principal,
) -> Result<StatusCode, ApiError> {
    sso::remove(&core, &p).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new().routes(utoipa_axum::routes!(get, put, delete))
}
