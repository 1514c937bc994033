//! The HTTP API (`/api/v1`) and `/healthz`.
//!
//! Conventions: JSON in and out; every error is
//! `{"error":{"code","message","details","request_id"}}`; every response
//! carries `x-request-id`; `Authorization: Bearer <token>` on `/api/v1/*`;
//! a resource of another tenant answers 404. Lists return a JSON array and,
//! when more remain, a `Link: <…?cursor=…>; rel="next"` header
//! (`?limit=` 1..=500, default 100). See `docs/api.md`.

pub mod agents;
pub mod catalogue;
pub mod cdm;
pub mod connections;
pub mod error;
pub mod executions;
pub mod extract;
pub mod idempotency;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod orchestrations;
pub mod publishing;
pub mod sso;
pub mod tenants;
mod tokens;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use error::{ApiError, ApiResult};
pub(crate) use extract::{
    ApiJson, ApiPath, ApiQuery, Page, null_as_default, optional_json_body, page_limit, paged,
    require_admin, require_admin_to, require_operator,
};

use ops::{method_not_allowed, not_found, openapi_json};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::Core;
pub(crate) use crate::domain::name_problem;
pub use crate::identity::{Principal, RequestMeta, request_meta};

async fn request_meta_layer(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| crate::support::ids::new_id("req"));
    let source_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let meta = RequestMeta {
        id: id.clone(),
        source_ip,
    };
    let empty = req
        .uri()
        .query()
        .filter(|_| req.uri().path().starts_with("/api/v1/"))
        .and_then(extract::empty_param);
    let response = match empty {
        Some(name) => ApiError::invalid(format!(
            "query parameter `{name}` is empty: leave it out, or give it a value"
        ))
        .into_response(),
        None => crate::identity::in_request(meta.clone(), next.run(req)).await,
    };
    let mut response = crate::identity::in_request(meta, uniform_error(response)).await;
    core.metrics.http_response(response.status().as_u16());
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        core.metrics.quota_rejection();
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Gives errors produced outside our handlers (body too large, and any
/// other framework rejection) the API's one error shape.
async fn uniform_error(response: Response) -> Response {
    let status = response.status();
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    // JSON is already the API's shape; HTML is the console's own error page.
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", text),
        StatusCode::NOT_FOUND => ("not_found", "there is nothing at this path".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not take this method".to_owned(),
        ),
        s if s.is_server_error() => (
            "internal",
            "the control plane failed to complete the request".to_owned(),
        ),
        _ => (
            "bad_request",
            if text.is_empty() {
                status.to_string()
            } else {
                text
            },
        ),
    };
    ApiError::new(status, code, message).into_response()
}

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Routes with their OpenAPI operations (each area's `routes()`).
pub(crate) type Routes = OpenApiRouter<Arc<Core>>;

/// Every documented route with its OpenAPI operation: one list, from
/// which both the router and the document are made.
pub fn api() -> OpenApiRouter<Arc<Core>> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::routes())
        .merge(agents::routes())
        .merge(tokens::routes())
        .merge(users::routes())
        .merge(sso::routes())
        .merge(tenants::routes())
        .merge(catalogue::routes())
        .merge(publishing::routes())
        .merge(connections::routes())
        .merge(notifications::routes())
        .merge(orchestrations::routes())
        .merge(executions::routes())
        .merge(webhooks::routes())
        .merge(cdm::routes())
}

/// The router.
pub fn router(core: Arc<Core>) -> Router {
    let (api, _) = api().split_for_parts();
    api.route("/api/v1/openapi.json", get(openapi_json))
        // Mounted with its full path so that its redirect from `/api/v1/docs`
        // keeps the prefix.
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/api/v1/docs")
                .config(utoipa_swagger_ui::Config::from("/api/v1/openapi.json")),
        )
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            core.clone(),
            crate::http::idempotency::layer,
        ))
        .layer(middleware::from_fn_with_state(
            core.clone(),
            request_meta_layer,
        ))
        .with_state(core)
}
