//! Operations endpoints: `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`, and the answers to unknown paths and methods.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ApiError;

use crate::Core;

/// No route: the API's error under `/api/`, elsewhere the console's page.
pub(crate) async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if uri.path().starts_with("/api/") {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint").into_response()
    } else {
        crate::console::not_found()
    }
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not support that method",
    )
}

#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Liveness", responses((status = 200, description = "Serving")))]
pub(crate) async fn healthz(State(core): State<Arc<Core>>) -> Json<Value> {
    Json(
        json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "agents_online": core.registry.online_count()}),
    )
}

pub(crate) async fn openapi_json() -> Json<Value> {
    static DOC: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(crate::http::openapi::document);
    Json(DOC.clone())
}

#[utoipa::path(get, path = "/metrics", tag = "health", summary = "Prometheus metrics", responses((status = 200, description = "Text exposition format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(core): State<Arc<Core>>) -> Response {
    let text = core.metrics.render(core.registry.online_count());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Readiness: the database answers", responses((status = 200, description = "Ready"), (status = 503, body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn readyz(State(core): State<Arc<Core>>) -> Result<Json<Value>, ApiError> {
    core.store.ping().await.map_err(|e| {
        tracing::warn!("readiness check failed: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the database does not answer",
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(metrics))
        .routes(utoipa_axum::routes!(readyz))
}
