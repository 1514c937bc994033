//! The publishing lifecycle of connectors through the API: the HTTP face of
//! [`crate::catalogue::release`], which holds the rules (drafts, the
//! checklist, versions and their bumps, reviews, promotion, deprecation).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::Core;
use crate::catalogue::release::{
    self, ChecklistRequest, ChecklistView, DeprecateRequest, PublishRequest, RejectRequest,
    ReviewView, UpdateRequest, UsageView, VersionView, version_view,
};
use crate::http::catalogue::{ConnectorView, view};
use crate::http::{ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged};

/// `POST /api/v1/connectors/{id}/publish`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/publish", tag = "connectors",
    summary = "Publish a draft: checklist, then version 1.0.0 in the global or enterprise catalogue",
    params(("id" = String, Path, description = "The resource id")), request_body = PublishRequest,
    responses((status = 200, body = ConnectorView),
        (status = 409, description = "Already published", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The checklist failed: each failing item in `details`", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn publish(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(
        release::publish(&core, &p, &id, req).await?,
        true,
    )))
}

/// `POST /api/v1/connectors/{id}/versions`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/versions", tag = "connectors",
    summary = "Publish an update: freezes the working definition as the next version",
    description = "The change against the newest version is computed; a bump smaller than it needs \
        (a breaking change needs major, an addition minor) is refused with the changes in `details`.",
    params(("id" = String, Path, description = "The resource id")), request_body = UpdateRequest,
    responses((status = 201, body = VersionView),
        (status = 409, description = "Not yet published, nothing changed, or the bump is too small", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "The checklist failed", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn publish_update(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Response, ApiError> {
    let v = release::publish_update(&core, &p, &id, req).await?;
    Ok((StatusCode::CREATED, Json(version_view(v, false))).into_response())
}

/// `GET /api/v1/connectors/{id}/versions`
#[utoipa::path(get, path = "/api/v1/connectors/{id}/versions", tag = "connectors", summary = "A connector's published versions, newest first",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = [VersionView])),
    security(("bearer" = [])))]
pub(crate) async fn list_versions(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    let versions = release::versions(&core, &p, &id).await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| version_view(v, false))
            .collect(),
    ))
}

/// `GET /api/v1/connectors/{id}/versions/{version}`
#[utoipa::path(get, path = "/api/v1/connectors/{id}/versions/{version}", tag = "connectors", summary = "One published version with its frozen definition",
    params(("id" = String, Path, description = "The resource id"), ("version" = String, Path, description = "e.g. 1.2.0")),
    responses((status = 200, body = VersionView)),
    security(("bearer" = [])))]
pub(crate) async fn get_version(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath((id, version)): ApiPath<(String, String)>,
) -> Result<Json<VersionView>, ApiError> {
    let v = release::version(&core, &p, &id, &version).await?;
    Ok(Json(version_view(v, true)))
}

/// `POST /api/v1/connectors/{id}/checklist`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/checklist", tag = "connectors",
    summary = "Run the pre-publication checklist on the working definition without publishing",
    params(("id" = String, Path, description = "The resource id")), request_body = ChecklistRequest,
    responses((status = 200, body = ChecklistView)),
    security(("bearer" = [])))]
pub(crate) async fn checklist(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ChecklistRequest>,
) -> Result<Json<ChecklistView>, ApiError> {
    Ok(Json(
        release::check(&core, &p, &id, req.test_target.as_ref()).await?,
    ))
}

/// `POST /api/v1/connectors/{id}/unpublish`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/unpublish", tag = "connectors",
    summary = "Take a connector out of the catalogue (its versions stay for existing users; no new connections)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = ConnectorView)),
    security(("bearer" = [])))]
pub(crate) async fn unpublish(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(release::unpublish(&core, &p, &id).await?, false)))
}

/// `POST /api/v1/connectors/{id}/deprecate`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/deprecate", tag = "connectors",
    summary = "Deprecate: visible with a warning until a date at least 30 days ahead, then unpublished",
    params(("id" = String, Path, description = "The resource id")), request_body = DeprecateRequest,
    responses((status = 200, body = ConnectorView)),
    security(("bearer" = [])))]
pub(crate) async fn deprecate(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<DeprecateRequest>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(
        release::deprecate(&core, &p, &id, req).await?,
        false,
    )))
}

/// `POST /api/v1/connectors/{id}/review`
#[utoipa::path(post, path = "/api/v1/connectors/{id}/review", tag = "connectors",
    summary = "Submit a connector for the global catalogue (a platform admin approves or rejects)",
    params(("id" = String, Path, description = "The resource id")), request_body = ChecklistRequest,
    responses((status = 200, body = ConnectorView),
        (status = 422, description = "The checklist failed", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn submit_review(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ChecklistRequest>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(
        release::submit_review(&core, &p, &id, req).await?,
        false,
    )))
}

/// `GET /api/v1/connectors/{id}/usage`
#[utoipa::path(get, path = "/api/v1/connectors/{id}/usage", tag = "connectors", summary = "Where a connector is used",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = UsageView)),
    security(("bearer" = [])))]
pub(crate) async fn usage(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UsageView>, ApiError> {
    Ok(Json(release::usage(&core, &p, &id).await?))
}

/// `GET /api/v1/reviews`
#[utoipa::path(get, path = "/api/v1/reviews", tag = "catalogue", summary = "Connectors submitted for the global catalogue (platform admins)",
    responses((status = 200, body = [ReviewView])),
    security(("bearer" = [])))]
pub(crate) async fn list_reviews(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let limit = page_limit(page.limit)?;
    let views = release::reviews(&core, &p, page.cursor_of("cnr_")?, limit + 1).await?;
    Ok(paged(views, limit, "/reviews", |r| r.id.clone()))
}

/// `POST /api/v1/reviews/{id}/approve`
#[utoipa::path(post, path = "/api/v1/reviews/{id}/approve", tag = "catalogue",
    summary = "Approve a submission: the connector joins the global catalogue (platform admins)",
    params(("id" = String, Path, description = "The connector id")),
    responses((status = 200, body = ConnectorView), (status = 422, description = "The checklist failed", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn approve_review(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(
        release::approve_review(&core, &p, &id).await?,
        false,
    )))
}

/// `POST /api/v1/reviews/{id}/reject`
#[utoipa::path(post, path = "/api/v1/reviews/{id}/reject", tag = "catalogue",
    summary = "Reject a submission with a reason (platform admins)",
    params(("id" = String, Path, description = "The connector id")), request_body = RejectRequest,
    responses((status = 200, body = ConnectorView)),
    security(("bearer" = [])))]
pub(crate) async fn reject_review(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RejectRequest>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(
        release::reject_review(&core, &p, &id, req).await?,
        false,
    )))
}

/// `POST /api/v1/catalogue/{id}/promote`
#[utoipa::path(post, path = "/api/v1/catalogue/{id}/promote", tag = "catalogue",
    summary = "Promote an enterprise connector to the global catalogue (platform admins)",
    params(("id" = String, Path, description = "The connector id")),
    responses((status = 200, body = ConnectorView)),
    security(("bearer" = [])))]
pub(crate) async fn promote(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectorView>, ApiError> {
    Ok(Json(view(release::promote(&core, &p, &id).await?, false)))
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(publish))
        .routes(utoipa_axum::routes!(publish_update, list_versions))
        .routes(utoipa_axum::routes!(get_version))
        .routes(utoipa_axum::routes!(checklist))
        .routes(utoipa_axum::routes!(unpublish))
        .routes(utoipa_axum::routes!(deprecate))
        .routes(utoipa_axum::routes!(submit_review))
        .routes(utoipa_axum::routes!(usage))
        .routes(utoipa_axum::routes!(list_reviews))
        .routes(utoipa_axum::routes!(approve_review))
        .routes(utoipa_axum::routes!(reject_review))
        .routes(utoipa_axum::routes!(promote))
}
