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
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub use error::{ApiError, ApiResult};
pub(crate) use extract::{
    ApiJson, ApiPath, Page, name_problem, null_as_default, optional_json_body, page_limit, paged,
    query, require_admin, require_admin_to, require_operator,
};

use agents::{
    create_enrollment_token, create_group, get_agent, get_group, group_call, list_agents,
    list_groups, revoke_agent,
};
use ops::{healthz, method_not_allowed, metrics, not_found, openapi_json, readyz};

use crate::Core;
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
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
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

/// The router.
pub fn router(core: Arc<Core>) -> Router {
    let api = Router::new()
        .route("/agent-groups", post(create_group).get(list_groups))
        .route("/agent-groups/{id}", get(get_group))
        .route(
            "/agent-groups/{id}/enrollment-tokens",
            post(create_enrollment_token),
        )
        .route("/agent-groups/{id}/calls", post(group_call))
        .route("/agents", get(list_agents))
        .route("/agents/{id}", get(get_agent).delete(revoke_agent))
        .route(
            "/api-tokens",
            post(crate::http::tokens::create_token).get(crate::http::tokens::list_tokens),
        )
        .route(
            "/api-tokens/{id}",
            axum::routing::delete(crate::http::tokens::revoke_token),
        )
        .route("/audit", get(crate::http::tokens::list_audit))
        .route("/auth/login", post(crate::http::users::login_handler))
        .route("/auth/logout", post(crate::http::users::logout_handler))
        .route(
            "/users",
            post(crate::http::users::create_user_handler)
                .get(crate::http::users::list_users_handler),
        )
        .route(
            "/users/{id}",
            axum::routing::patch(crate::http::users::update_user_handler),
        )
        .route(
            "/connectors",
            post(crate::http::catalogue::create).get(crate::http::catalogue::list),
        )
        .route(
            "/connectors/validate",
            post(crate::http::catalogue::validate),
        )
        .route("/connectors/import", post(crate::http::catalogue::import))
        .route(
            "/connectors/{id}/publish",
            post(crate::http::publishing::publish),
        )
        .route(
            "/connectors/{id}/versions",
            post(crate::http::publishing::publish_update)
                .get(crate::http::publishing::list_versions),
        )
        .route(
            "/connectors/{id}/versions/{version}",
            get(crate::http::publishing::get_version),
        )
        .route(
            "/connectors/{id}/checklist",
            post(crate::http::publishing::checklist),
        )
        .route(
            "/connectors/{id}/unpublish",
            post(crate::http::publishing::unpublish),
        )
        .route(
            "/connectors/{id}/deprecate",
            post(crate::http::publishing::deprecate),
        )
        .route(
            "/connectors/{id}/review",
            post(crate::http::publishing::submit_review),
        )
        .route(
            "/connectors/{id}/usage",
            get(crate::http::publishing::usage),
        )
        .route(
            "/connections",
            post(crate::http::connections::create).get(crate::http::connections::list),
        )
        .route(
            "/connections/test",
            post(crate::http::connections::test_unsaved),
        )
        .route(
            "/connections/{id}",
            get(crate::http::connections::get)
                .patch(crate::http::connections::update)
                .delete(crate::http::connections::delete),
        )
        .route(
            "/connections/{id}/activate",
            post(crate::http::connections::activate),
        )
        .route(
            "/connections/{id}/deactivate",
            post(crate::http::connections::deactivate),
        )
        .route(
            "/connections/{id}/credentials",
            axum::routing::put(crate::http::connections::rotate_credentials),
        )
        .route(
            "/connections/{id}/move",
            post(crate::http::connections::move_version),
        )
        .route(
            "/connections/{id}/test",
            post(crate::http::connections::test_saved),
        )
        .route(
            "/connections/{id}/grants",
            get(crate::http::connections::grants).put(crate::http::connections::set_grants),
        )
        .route(
            "/connections/{id}/health",
            get(crate::http::connections::health),
        )
        .route(
            "/connections/{id}/health/check",
            post(crate::http::connections::check_now),
        )
        .route(
            "/connections/{id}/operations/{operation}/invoke",
            post(crate::http::connections::invoke),
        )
        .route("/api-calls", get(crate::http::connections::list_calls))
        .route("/api-calls/{id}", get(crate::http::connections::get_call))
        .route(
            "/orchestrations",
            post(crate::http::orchestrations::create).get(crate::http::orchestrations::list),
        )
        .route(
            "/orchestrations/validate",
            post(crate::http::orchestrations::validate),
        )
        .route(
            "/orchestrations/{id}",
            get(crate::http::orchestrations::get)
                .put(crate::http::orchestrations::replace)
                .delete(crate::http::orchestrations::delete),
        )
        .route(
            "/orchestrations/{id}/execute",
            post(crate::http::executions::execute),
        )
        .route(
            "/orchestrations/{id}/webhook-secret",
            post(crate::http::webhooks::create_secret),
        )
        .route("/hooks/{id}", post(crate::http::webhooks::trigger))
        .route("/executions", get(crate::http::executions::list))
        .route("/executions/{id}", get(crate::http::executions::get))
        .route(
            "/executions/{id}/cancel",
            post(crate::http::executions::cancel),
        )
        .route(
            "/executions/{id}/rerun",
            post(crate::http::executions::rerun),
        )
        .route("/dead-letters", get(crate::http::executions::dead_letters))
        .route("/dead-letters/items", get(crate::http::cdm::list_items))
        .route("/dead-letters/items/{id}", get(crate::http::cdm::get_item))
        .route(
            "/dead-letters/items/{id}/discard",
            post(crate::http::cdm::discard_item),
        )
        .route(
            "/dead-letters/items/{id}/replay",
            post(crate::http::cdm::replay_item),
        )
        .route(
            "/dead-letters/{id}/replay",
            post(crate::http::executions::replay),
        )
        .route("/executions/export", get(crate::http::executions::export))
        .route("/cdm/domains", get(crate::http::cdm::list_domains))
        .route("/cdm/domains/{domain}", get(crate::http::cdm::get_domain))
        .route("/cdm/validate", post(crate::http::cdm::validate))
        .route("/cdm/suggest", post(crate::http::cdm::suggest))
        .route(
            "/connectors/{id}/mappings/{operation}/suggest",
            post(crate::http::cdm::suggest_into_draft),
        )
        .route(
            "/connectors/{id}/mappings/{operation}/confirm",
            post(crate::http::cdm::confirm),
        )
        .route(
            "/connections/{id}/operations/{operation}/suggest",
            post(crate::http::cdm::suggest_from_call),
        )
        .route(
            "/dead-letters/{id}/discard",
            post(crate::http::executions::discard),
        )
        .route(
            "/orchestrations/{id}/versions",
            get(crate::http::orchestrations::versions),
        )
        .route(
            "/orchestrations/{id}/activate",
            post(crate::http::orchestrations::activate),
        )
        .route(
            "/orchestrations/{id}/pause",
            post(crate::http::orchestrations::pause),
        )
        .route(
            "/orchestrations/{id}/archive",
            post(crate::http::orchestrations::archive),
        )
        .route(
            "/orchestrations/{id}/restore",
            post(crate::http::orchestrations::restore),
        )
        .route("/notifications", get(crate::http::notifications::list))
        .route(
            "/notifications/{id}/read",
            post(crate::http::notifications::read),
        )
        .route("/catalogue", get(crate::http::catalogue::browse))
        .route(
            "/catalogue/{id}",
            get(crate::http::catalogue::catalogue_detail),
        )
        .route(
            "/catalogue/{id}/versions/{version}",
            get(crate::http::catalogue::catalogue_version),
        )
        .route(
            "/catalogue/{id}/promote",
            post(crate::http::publishing::promote),
        )
        .route("/reviews", get(crate::http::publishing::list_reviews))
        .route(
            "/reviews/{id}/approve",
            post(crate::http::publishing::approve_review),
        )
        .route(
            "/reviews/{id}/reject",
            post(crate::http::publishing::reject_review),
        )
        .route(
            "/connectors/{id}",
            get(crate::http::catalogue::get)
                .put(crate::http::catalogue::replace)
                .delete(crate::http::catalogue::delete),
        )
        .route("/openapi.json", get(openapi_json))
        .route(
            "/tenants",
            post(crate::http::tenants::create_tenant).get(crate::http::tenants::list_tenants),
        )
        .route(
            "/tenants/{id}",
            get(crate::http::tenants::get_tenant).patch(crate::http::tenants::update_tenant),
        )
        .route(
            "/tenants/{id}/users",
            post(crate::http::tenants::create_tenant_user),
        )
        .route("/usage", get(crate::http::tenants::own_usage))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // Mounted with its full path so that its redirect from `/api/v1/docs`
        // keeps the prefix.
        .merge(
            utoipa_swagger_ui::SwaggerUi::new("/api/v1/docs")
                .config(utoipa_swagger_ui::Config::from("/api/v1/openapi.json")),
        )
        .nest("/api/v1", api)
        .fallback(not_found)
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
