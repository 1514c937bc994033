//! The HTTP API (`/api/v1`) and `/healthz`.
//!
//! Conventions: JSON in and out; every error is
//! `{"error":{"code","message","details","request_id"}}`; every response
//! carries `x-request-id`; `Authorization: Bearer <token>` on `/api/v1/*`;
//! a resource of another tenant answers 404. Lists return a JSON array and,
//! when more remain, a `Link: <…?cursor=…>; rel="next"` header
//! (`?limit=` 1..=500, default 100). See `docs/api.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dibop_protocol::{CallRequest, CallResult, EnrollmentToken, ResponseBody};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::Core;
use crate::store::{AgentGroup, AgentRow, ApiTokenRow, StoreError, now_unix};
use dibop_relay_agent::rfc3339;

/// Facts about the request being served, for errors and the audit log.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The request id (`x-request-id`).
    pub id: String,
    /// The peer's IP address.
    pub source_ip: String,
}

tokio::task_local! {
    static REQUEST: RequestMeta;
}

/// The request being served (empty outside a request).
pub fn request_meta() -> RequestMeta {
    REQUEST.try_with(Clone::clone).unwrap_or_default()
}

/// The one error type of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a stable code and a message for a person.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    /// The stable code (`not_found`, `credentials_unreadable`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub(crate) fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} `{id}` does not exist"),
        )
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            other => {
                tracing::error!("store failure: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the control plane failed to complete the request",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_meta().id;
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "request_id": request_id,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Reads a JSON body (already parsed) as `T`: the top level must be an
/// object, `25.0` counts as the integer 25 (as in JSON Schema), and an
/// error names where in the body it is.
pub(crate) fn from_json_value<T: serde::de::DeserializeOwned>(mut v: Value) -> ApiResult<T> {
    if !v.is_object() {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    integral_floats(&mut v);
    serde_path_to_error::deserialize(v).map_err(|e| match e.path().to_string().as_str() {
        "." => ApiError::invalid(format!("the request body is invalid: {}", e.inner())),
        path => ApiError::invalid(format!(
            "the request body is invalid at `{path}`: {}",
            e.inner()
        )),
    })
}

/// A body serde_json could not read: `400 malformed_json`, or, when it is
/// well-formed but nested too deep, `422` as for definitions.
fn unreadable_json(why: &str) -> ApiError {
    if why.contains("recursion limit") {
        ApiError::invalid("the body nests deeper than 128 levels")
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {why}"),
        )
    }
}

/// [`from_json_value`] from bytes; `None` when the body is empty or `null`.
pub(crate) fn optional_json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| unreadable_json(&e.to_string()))?;
    if v.is_null() {
        return Ok(None);
    }
    from_json_value(v).map(Some)
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(v)) => from_json_value(v).map(ApiJson),
            Err(rejection) => Err(match rejection {
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with `Content-Type: application/json`",
                ),
                JsonRejection::JsonSyntaxError(e) => unreadable_json(&e.body_text()),
                JsonRejection::JsonDataError(e) => ApiError::invalid(e.body_text()),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                ),
                other => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", other.body_text()),
            }),
        }
    }
}

/// What is wrong with a name of something a person made (trimmed before):
/// 1 to 100 characters, no control characters.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.chars().count() > 100 {
        Some("must be 1 to 100 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters (such as NUL or a line break)")
    } else {
        None
    }
}

/// For `#[serde(default, deserialize_with = "null_as_default")]`: `null`
/// is the same as leaving the field out.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Turns numbers like `25.0` into integers, at any depth.
fn integral_floats(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats),
        Value::Object(m) => m.values_mut().for_each(integral_floats),
        _ => {}
    }
}

/// Path parameters with the API's error shape.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Tenant the token belongs to.
    pub tenant_id: String,
    /// Role name.
    pub role: String,
    /// The API token used.
    pub token_id: String,
    /// The signed-in user, for session tokens.
    pub user_id: Option<String>,
    /// `view_pii` given or withheld for this user or token (`None`: the role decides).
    pub view_pii: Option<bool>,
}

impl Principal {
    /// Whether the caller is a platform admin (who belongs to the platform
    /// tenant, which holds no other role).
    pub fn is_platform_admin(&self) -> bool {
        self.role == crate::tenants::PLATFORM_ADMIN
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// How connection grants name this caller: `user:usr_…` for a
    /// signed-in user, `token:tok_…` for an API token.
    pub fn subject(&self) -> String {
        match &self.user_id {
            Some(u) => format!("user:{u}"),
            None => format!("token:{}", self.token_id),
        }
    }
}

/// Token lookups are cached briefly so the hot path does not hit the
/// database; a revocation on this node takes effect at once, on other nodes
/// within this time.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);

/// A short-lived cache of token hash → token (or its absence).
#[derive(Debug)]
pub struct TokenCache {
    entries: crate::cache::TtlCache<Option<ApiTokenRow>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache {
            entries: crate::cache::TtlCache::new(TOKEN_CACHE_TTL, 10_000),
        }
    }
}

impl TokenCache {
    pub(crate) async fn lookup(
        &self,
        core: &Core,
        token: &str,
    ) -> Result<Option<ApiTokenRow>, StoreError> {
        let hash = crate::ids::hash_secret(token);
        if let Some(t) = self.entries.get(&hash) {
            return Ok(t);
        }
        let found = core.store.api_token_by_hash(&hash).await?;
        if let Some(t) = &found
            && t.revoked_at.is_none()
        {
            // Refreshed at most once per TTL per token: last use, not every use.
            core.store.touch_api_token(&t.id, now_unix()).await?;
        }
        self.entries.insert(hash, found.clone());
        Ok(found)
    }

    /// Forgets a token (after revocation).
    pub fn forget(&self, token_id: &str) {
        self.entries
            .remove_where(|t| t.as_ref().is_some_and(|t| t.id == token_id));
    }
}

impl FromRequestParts<Arc<Core>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        core: &Arc<Core>,
    ) -> Result<Self, Self::Rejection> {
        let unauthenticated =
            |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            unauthenticated("missing `Authorization: Bearer <token>` header".into())
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthenticated("the Authorization header must be `Bearer <token>`".into())
            })?;
        let Some(t) = core.tokens.lookup(core, token).await? else {
            return Err(unauthenticated("the token is not valid".into()));
        };
        if let Some(at) = t.revoked_at {
            return Err(unauthenticated(format!(
                "the token `{}` was revoked at {}",
                t.prefix,
                rfc3339(at)
            )));
        }
        if let Some(at) = t.expires_at
            && at <= now_unix()
        {
            return Err(unauthenticated(format!(
                "the token `{}` expired at {}",
                t.prefix,
                rfc3339(at)
            )));
        }
        let tenant = core
            .quotas
            .tenant(&core.store, &t.tenant_id)
            .await?
            .ok_or_else(|| unauthenticated("the token's tenant no longer exists".into()))?;
        if tenant.status == "suspended" {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_suspended",
                format!(
                    "tenant `{}` is suspended: contact the platform operator",
                    tenant.name
                ),
            ));
        }
        // The platform tenant holds platform admins only; an enterprise role
        // there (a row from before that rule) must not reach global resources.
        if (tenant.name == crate::tenants::PLATFORM_TENANT)
            != (t.role == crate::tenants::PLATFORM_ADMIN)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "the `{}` role does not exist in tenant `{}`: ask a platform admin for a user in your enterprise's tenant",
                    t.role, tenant.name
                ),
            ));
        }
        if t.role != crate::tenants::PLATFORM_ADMIN {
            core.quotas.check_rate(&tenant)?;
        }
        parts.extensions.insert(tenant);
        Ok(Principal {
            tenant_id: t.tenant_id,
            role: t.role,
            token_id: t.id,
            user_id: t.user_id,
            view_pii: t.view_pii.map(|v| v != 0),
        })
    }
}

/// The first query parameter given without a value (`?cursor=`): the API
/// refuses those rather than guess whether "empty" means "none".
fn empty_param(query: &str) -> Option<String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find(|pair| pair.split_once('=').is_none_or(|(_, v)| v.is_empty()))
        .map(|pair| pair.split('=').next().unwrap_or_default().to_owned())
}

async fn request_meta_layer(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| crate::ids::new_id("req"));
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
        .and_then(empty_param);
    let response = match empty {
        Some(name) => ApiError::invalid(format!(
            "query parameter `{name}` is empty: leave it out, or give it a value"
        ))
        .into_response(),
        None => REQUEST.scope(meta.clone(), next.run(req)).await,
    };
    let mut response = REQUEST.scope(meta, uniform_error(response)).await;
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
            post(crate::access::create_token).get(crate::access::list_tokens),
        )
        .route(
            "/api-tokens/{id}",
            axum::routing::delete(crate::access::revoke_token),
        )
        .route("/audit", get(crate::access::list_audit))
        .route("/auth/login", post(crate::users::login_handler))
        .route("/auth/logout", post(crate::users::logout_handler))
        .route(
            "/users",
            post(crate::users::create_user_handler).get(crate::users::list_users_handler),
        )
        .route(
            "/users/{id}",
            axum::routing::patch(crate::users::update_user_handler),
        )
        .route(
            "/connectors",
            post(crate::catalogue::create).get(crate::catalogue::list),
        )
        .route("/connectors/validate", post(crate::catalogue::validate))
        .route("/connectors/import", post(crate::catalogue::import))
        .route("/connectors/{id}/publish", post(crate::publishing::publish))
        .route(
            "/connectors/{id}/versions",
            post(crate::publishing::publish_update).get(crate::publishing::list_versions),
        )
        .route(
            "/connectors/{id}/versions/{version}",
            get(crate::publishing::get_version),
        )
        .route(
            "/connectors/{id}/checklist",
            post(crate::publishing::checklist),
        )
        .route(
            "/connectors/{id}/unpublish",
            post(crate::publishing::unpublish),
        )
        .route(
            "/connectors/{id}/deprecate",
            post(crate::publishing::deprecate),
        )
        .route(
            "/connectors/{id}/review",
            post(crate::publishing::submit_review),
        )
        .route("/connectors/{id}/usage", get(crate::publishing::usage))
        .route(
            "/connections",
            post(crate::connections::create).get(crate::connections::list),
        )
        .route("/connections/test", post(crate::connections::test_unsaved))
        .route(
            "/connections/{id}",
            get(crate::connections::get)
                .patch(crate::connections::update)
                .delete(crate::connections::delete),
        )
        .route(
            "/connections/{id}/activate",
            post(crate::connections::activate),
        )
        .route(
            "/connections/{id}/deactivate",
            post(crate::connections::deactivate),
        )
        .route(
            "/connections/{id}/credentials",
            axum::routing::put(crate::connections::rotate_credentials),
        )
        .route(
            "/connections/{id}/move",
            post(crate::connections::move_version),
        )
        .route(
            "/connections/{id}/test",
            post(crate::connections::test_saved),
        )
        .route(
            "/connections/{id}/grants",
            get(crate::connections::grants).put(crate::connections::set_grants),
        )
        .route("/connections/{id}/health", get(crate::connections::health))
        .route(
            "/connections/{id}/health/check",
            post(crate::connections::check_now),
        )
        .route(
            "/connections/{id}/operations/{operation}/invoke",
            post(crate::connections::invoke),
        )
        .route("/api-calls", get(crate::connections::list_calls))
        .route("/api-calls/{id}", get(crate::connections::get_call))
        .route(
            "/orchestrations",
            post(crate::orchestrations::create).get(crate::orchestrations::list),
        )
        .route(
            "/orchestrations/validate",
            post(crate::orchestrations::validate),
        )
        .route(
            "/orchestrations/{id}",
            get(crate::orchestrations::get)
                .put(crate::orchestrations::replace)
                .delete(crate::orchestrations::delete),
        )
        .route(
            "/orchestrations/{id}/execute",
            post(crate::executions::execute),
        )
        .route(
            "/orchestrations/{id}/webhook-secret",
            post(crate::webhooks::create_secret),
        )
        .route("/hooks/{id}", post(crate::webhooks::trigger))
        .route("/executions", get(crate::executions::list))
        .route("/executions/{id}", get(crate::executions::get))
        .route("/executions/{id}/cancel", post(crate::executions::cancel))
        .route("/executions/{id}/rerun", post(crate::executions::rerun))
        .route("/dead-letters", get(crate::executions::dead_letters))
        .route("/dead-letters/items", get(crate::cdm_api::list_items))
        .route("/dead-letters/items/{id}", get(crate::cdm_api::get_item))
        .route(
            "/dead-letters/items/{id}/discard",
            post(crate::cdm_api::discard_item),
        )
        .route(
            "/dead-letters/items/{id}/replay",
            post(crate::cdm_api::replay_item),
        )
        .route("/dead-letters/{id}/replay", post(crate::executions::replay))
        .route("/executions/export", get(crate::executions::export))
        .route("/cdm/domains", get(crate::cdm_api::list_domains))
        .route("/cdm/domains/{domain}", get(crate::cdm_api::get_domain))
        .route("/cdm/validate", post(crate::cdm_api::validate))
        .route("/cdm/suggest", post(crate::cdm_api::suggest))
        .route(
            "/connectors/{id}/mappings/{operation}/suggest",
            post(crate::cdm_api::suggest_into_draft),
        )
        .route(
            "/connectors/{id}/mappings/{operation}/confirm",
            post(crate::cdm_api::confirm),
        )
        .route(
            "/connections/{id}/operations/{operation}/suggest",
            post(crate::cdm_api::suggest_from_call),
        )
        .route(
            "/dead-letters/{id}/discard",
            post(crate::executions::discard),
        )
        .route(
            "/orchestrations/{id}/versions",
            get(crate::orchestrations::versions),
        )
        .route(
            "/orchestrations/{id}/activate",
            post(crate::orchestrations::activate),
        )
        .route(
            "/orchestrations/{id}/pause",
            post(crate::orchestrations::pause),
        )
        .route(
            "/orchestrations/{id}/archive",
            post(crate::orchestrations::archive),
        )
        .route(
            "/orchestrations/{id}/restore",
            post(crate::orchestrations::restore),
        )
        .route("/notifications", get(crate::notifications::list))
        .route("/notifications/{id}/read", post(crate::notifications::read))
        .route("/catalogue", get(crate::catalogue::browse))
        .route("/catalogue/{id}", get(crate::catalogue::catalogue_detail))
        .route(
            "/catalogue/{id}/versions/{version}",
            get(crate::catalogue::catalogue_version),
        )
        .route("/catalogue/{id}/promote", post(crate::publishing::promote))
        .route("/reviews", get(crate::publishing::list_reviews))
        .route(
            "/reviews/{id}/approve",
            post(crate::publishing::approve_review),
        )
        .route(
            "/reviews/{id}/reject",
            post(crate::publishing::reject_review),
        )
        .route(
            "/connectors/{id}",
            get(crate::catalogue::get)
                .put(crate::catalogue::replace)
                .delete(crate::catalogue::delete),
        )
        .route("/openapi.json", get(openapi_json))
        .route(
            "/tenants",
            post(crate::tenants::create_tenant).get(crate::tenants::list_tenants),
        )
        .route(
            "/tenants/{id}",
            get(crate::tenants::get_tenant).patch(crate::tenants::update_tenant),
        )
        .route(
            "/tenants/{id}/users",
            post(crate::tenants::create_tenant_user),
        )
        .route("/usage", get(crate::tenants::own_usage))
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
            crate::idempotency::layer,
        ))
        .layer(middleware::from_fn_with_state(
            core.clone(),
            request_meta_layer,
        ))
        .with_state(core)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
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

async fn openapi_json() -> Json<Value> {
    static DOC: std::sync::LazyLock<Value> = std::sync::LazyLock::new(crate::openapi::document);
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

#[utoipa::path(get, path = "/readyz", tag = "health", summary = "Readiness: the database answers", responses((status = 200, description = "Ready"), (status = 503, body = crate::openapi::ErrorBody)))]
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

pub(crate) fn require_admin(p: &Principal) -> ApiResult<()> {
    require_admin_to(p, "make changes")
}

/// Refuses all but admins, saying what the caller tried (`read the audit log`).
pub(crate) fn require_admin_to(p: &Principal, what: &str) -> ApiResult<()> {
    if matches!(p.role.as_str(), "enterprise_admin" | "platform_admin") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the `{}` role cannot {what}: that needs the enterprise_admin role",
                p.role
            ),
        ))
    }
}

pub(crate) fn require_operator(p: &Principal) -> ApiResult<()> {
    if p.role == "viewer" {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the `viewer` role cannot make calls",
        ))
    } else {
        Ok(())
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    pub(crate) limit: Option<i64>,
    pub(crate) cursor: Option<String>,
    pub(crate) group_id: Option<String>,
}

impl Page {
    /// The cursor, checked to be an id of the listed kind (`prefix`, e.g. `grp_`).
    pub(crate) fn cursor_of(&self, prefix: &str) -> ApiResult<Option<&str>> {
        match self.cursor.as_deref() {
            Some(c)
                if !c.starts_with(prefix)
                    || c.len() > 64
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                Err(ApiError::invalid(format!(
                    "cursor `{}` is not a cursor of this list: use the `Link` header of the previous page",
                    c.chars().take(64).collect::<String>()
                )))
            }
            c => Ok(c),
        }
    }
}

pub(crate) fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=500).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::invalid(format!("limit = {l} must be 1..=500"))),
    }
}

pub(crate) fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// Returns the page as a JSON array with a `Link` header when more remain.
pub(crate) fn paged<T: Serialize>(
    mut items: Vec<T>,
    limit: i64,
    path: &str,
    id_of: impl Fn(&T) -> String,
) -> Response {
    let mut headers = HeaderMap::new();
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        if let Some(last) = items.last()
            && let Ok(v) = HeaderValue::from_str(&format!(
                "</api/v1{path}?limit={limit}&cursor={}>; rel=\"next\"",
                id_of(last)
            ))
        {
            headers.insert(header::LINK, v);
        }
    }
    (headers, Json(items)).into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct GroupView {
    id: String,
    tenant_id: String,
    name: String,
    description: String,
    created_at: String,
    agents_online: usize,
}

fn group_view(core: &Core, g: AgentGroup) -> GroupView {
    GroupView {
        agents_online: core.registry.online_in_group(&g.id),
        id: g.id,
        tenant_id: g.tenant_id,
        name: g.name,
        description: g.description,
        created_at: rfc3339(g.created_at),
    }
}

#[utoipa::path(post, path = "/api/v1/agent-groups", tag = "agents", summary = "Create an agent group", request_body = NewGroup, responses((status = 201, body = GroupView), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create_group(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(body): ApiJson<NewGroup>,
) -> ApiResult<Response> {
    require_admin(&p)?;
    let name = body.name.trim();
    let mut problems = Vec::new();
    if let Some(problem) = name_problem(name) {
        problems.push(json!({"field": "name", "problem": problem}));
    }
    if body.description.len() > 1000 {
        problems
            .push(json!({"field": "description", "problem": "must be at most 1000 characters"}));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the agent group is invalid").with_details(json!(problems)));
    }
    let group = AgentGroup {
        id: crate::ids::new_id("grp"),
        tenant_id: p.tenant_id.clone(),
        name: name.to_owned(),
        description: body.description,
        created_at: now_unix(),
    };
    core.store.create_group(&group).await?;
    crate::access::record(
        &core.store,
        Some(&group.tenant_id),
        &p.actor(),
        "agent_group.create",
        ("agent_group", &group.id),
        json!({"name": group.name}),
    )
    .await;
    Ok((StatusCode::CREATED, Json(group_view(&core, group))).into_response())
}

#[utoipa::path(get, path = "/api/v1/agent-groups", tag = "agents", summary = "List agent groups", responses((status = 200, body = [GroupView]), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list_groups(
    State(core): State<Arc<Core>>,
    p: Principal,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let page = query(q)?;
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_groups(&p.tenant_id, page.cursor_of("grp_")?, limit + 1)
        .await?;
    let views: Vec<GroupView> = rows.into_iter().map(|g| group_view(&core, g)).collect();
    Ok(paged(views, limit, "/agent-groups", |g| g.id.clone()))
}

async fn load_group(core: &Core, p: &Principal, id: &str) -> ApiResult<AgentGroup> {
    core.store
        .group(&p.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent group", id))
}

#[utoipa::path(get, path = "/api/v1/agent-groups/{id}", tag = "agents", summary = "Get an agent group", params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = GroupView), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn get_group(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<GroupView>> {
    let group = load_group(&core, &p, &id).await?;
    Ok(Json(group_view(&core, group)))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEnrollmentToken {
    /// Lifetime in seconds (default 24 h, at most 30 days).
    ttl_secs: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/agent-groups/{id}/enrollment-tokens", tag = "agents", summary = "Create a single-use enrollment token", request_body = Option<NewEnrollmentToken>, params(("id" = String, Path, description = "The resource id")), responses((status = 201, body = crate::openapi::EnrollmentTokenView), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn create_enrollment_token(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    require_admin(&p)?;
    let group = load_group(&core, &p, &id).await?;
    // The body is optional: no body means the defaults.
    let options: NewEnrollmentToken = optional_json_body(&body)?.unwrap_or_default();
    let ttl = options.ttl_secs.unwrap_or(24 * 3600);
    if !(1..=30 * 24 * 3600).contains(&ttl) {
        return Err(ApiError::invalid(format!(
            "ttl_secs = {ttl} must be between 1 and 2592000 (30 days)"
        )));
    }
    let secret = crate::ids::new_secret("");
    let token_id = crate::ids::new_id("enr");
    let expires_at = now_unix() + ttl as i64;
    core.store
        .create_enrollment_token(
            &token_id,
            &p.tenant_id,
            &group.id,
            &crate::ids::hash_secret(&secret),
            expires_at,
        )
        .await?;
    crate::access::record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "enrollment_token.create",
        ("enrollment_token", &token_id),
        json!({"group_id": group.id, "expires_at": rfc3339(expires_at)}),
    )
    .await;
    let token = EnrollmentToken {
        address: core.settings.public_tunnel_addr.clone(),
        secret,
        ca_sha256: core.ca.fingerprint(),
        expires_at_unix: expires_at,
    }
    .encode();
    let body = json!({
        "id": token_id,
        "group_id": group.id,
        "token": token,
        "expires_at": rfc3339(expires_at),
        "install_command": format!("dibop-agent enroll '{token}' && dibop-agent run --config /etc/dibop-agent/agent.toml"),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AgentView {
    id: String,
    name: String,
    group_id: String,
    status: &'static str,
    version: String,
    hostname: String,
    last_seen: Option<String>,
    enrolled_at: String,
    certificate_expires_at: String,
    revoked_at: Option<String>,
    in_flight: u32,
}

fn agent_view(core: &Core, a: AgentRow) -> AgentView {
    let live = core.registry.get(&a.id);
    let (status, last_seen, in_flight, version, hostname) = match (&live, a.revoked_at) {
        (_, Some(_)) => ("revoked", a.last_seen, 0, a.version, a.hostname),
        (Some(l), None) => (
            "online",
            Some(l.last_seen.load(std::sync::atomic::Ordering::Relaxed)),
            l.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            l.version.clone(),
            l.hostname.clone(),
        ),
        (None, None) => ("offline", a.last_seen, 0, a.version, a.hostname),
    };
    AgentView {
        id: a.id,
        name: a.name,
        group_id: a.group_id,
        status,
        version,
        hostname,
        last_seen: last_seen.map(rfc3339),
        enrolled_at: rfc3339(a.enrolled_at),
        certificate_expires_at: rfc3339(a.cert_not_after),
        revoked_at: a.revoked_at.map(rfc3339),
        in_flight,
    }
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", summary = "List agents", responses((status = 200, body = [AgentView]), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list_agents(
    State(core): State<Arc<Core>>,
    p: Principal,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let page = query(q)?;
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_agents(
            &p.tenant_id,
            page.group_id.as_deref(),
            page.cursor_of("agt_")?,
            limit + 1,
        )
        .await?;
    let views: Vec<AgentView> = rows.into_iter().map(|a| agent_view(&core, a)).collect();
    Ok(paged(views, limit, "/agents", |a| a.id.clone()))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", summary = "Get an agent", params(("id" = String, Path, description = "The resource id")), responses((status = 200, body = AgentView), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn get_agent(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AgentView>> {
    let row = core
        .store
        .agent(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("agent", &id))?;
    Ok(Json(agent_view(&core, row)))
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", summary = "Revoke an agent", params(("id" = String, Path, description = "The resource id")), responses((status = 204, description = "Revoked; its tunnel is closed"), (status = 409, description = "Already revoked", body = crate::openapi::ErrorBody), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn revoke_agent(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    require_admin(&p)?;
    match core.store.agent(&p.tenant_id, &id).await? {
        None => return Err(ApiError::not_found("agent", &id)),
        Some(a) if a.revoked_at.is_some() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_revoked",
                format!(
                    "agent {id} was already revoked at {}",
                    rfc3339(a.revoked_at.unwrap_or_default())
                ),
            ));
        }
        Some(_) => {}
    }
    if !core
        .store
        .revoke_agent(&p.tenant_id, &id, now_unix())
        .await?
    {
        return Err(ApiError::not_found("agent", &id));
    }
    core.registry.disconnect(
        &id,
        dibop_protocol::codes::CLOSE_REVOKED,
        "this agent was revoked by an administrator",
    );
    tracing::info!(agent_id = %id, tenant_id = %p.tenant_id, "agent revoked");
    crate::access::record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "agent.revoke",
        ("agent", &id),
        Value::Null,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /agent-groups/{id}/calls`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallBody {
    #[serde(default = "default_method")]
    method: String,
    url: String,
    #[serde(default)]
    headers: HashMap<String, String>,
    /// A string is sent as is; any other JSON value is sent as JSON.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    body: Option<Value>,
    timeout_ms: Option<u32>,
}

fn default_method() -> String {
    "GET".into()
}

/// Largest timeout a caller may ask for.
const MAX_CALL_TIMEOUT_MS: u32 = 120_000;
/// Default when the caller gives none.
const DEFAULT_CALL_TIMEOUT_MS: u32 = 30_000;

#[utoipa::path(post, path = "/api/v1/agent-groups/{id}/calls", tag = "calls", summary = "Perform an HTTP call through an agent of the group", request_body = CallBody, params(("id" = String, Path, description = "The resource id")), responses((status = 200, description = "The normalized result, whatever happened to the call", body = NormalizedResult), (status = 404, description = "No such resource in your tenant", body = crate::openapi::ErrorBody), (status = 422, description = "Invalid: every problem in `details`", body = crate::openapi::ErrorBody), (status = 401, description = "Missing, invalid, revoked or expired token", body = crate::openapi::ErrorBody), (status = 429, description = "A tenant limit was reached", body = crate::openapi::ErrorBody), (status = 403, description = "The role may not do this", body = crate::openapi::ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn group_call(
    State(core): State<Arc<Core>>,
    p: Principal,
    tenant: Option<axum::Extension<crate::store::Tenant>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CallBody>,
) -> ApiResult<Response> {
    require_operator(&p)?;
    // Groups are never reassigned, so an online agent of the group is proof
    // enough; the database is asked only when none is online.
    if !core.registry.group_owned_by(&id, &p.tenant_id) {
        load_group(&core, &p, &id).await?;
    }
    if let Some(tenant) = &tenant {
        core.quotas.take_call(&core.store, &tenant.0).await?;
    }
    let mut problems = Vec::new();
    let method = body.method.to_ascii_uppercase();
    if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&method.as_str()) {
        problems.push(json!({"field": "method", "problem": format!(
            "`{}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", body.method)}));
    }
    if !crate::connector::is_http_url(&body.url) {
        problems.push(json!({"field": "url", "problem":
            "must be an absolute http(s) URL: a host name or IPv4 address, an optional port, then a path without spaces"}));
    }
    let timeout_ms = body.timeout_ms.unwrap_or(DEFAULT_CALL_TIMEOUT_MS);
    if timeout_ms == 0 || timeout_ms > MAX_CALL_TIMEOUT_MS {
        problems.push(
            json!({"field": "timeout_ms", "problem": format!("must be 1..={MAX_CALL_TIMEOUT_MS}")}),
        );
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the call is invalid").with_details(json!(problems)));
    }
    let mut headers: Vec<(String, String)> = body.headers.into_iter().collect();
    let payload = match body.body {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.into_bytes(),
        Some(v) => {
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                headers.push(("content-type".into(), "application/json".into()));
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
    };
    let request = CallRequest {
        call_id: 0,
        method,
        url: body.url,
        headers,
        body: payload,
        timeout_ms,
    };
    let started = Instant::now();
    let result = core.registry.call(&id, request).await;
    core.metrics.call(
        "diagnostic",
        result.error.as_ref().map(|e| e.class.as_str()),
        started.elapsed().as_secs_f64(),
    );
    Ok(Json(NormalizedResult::from_result(result, started.elapsed())).into_response())
}

/// The normalized call result as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedResult {
    ok: bool,
    method: String,
    url: String,
    status: Option<u16>,
    status_text: Option<String>,
    #[schema(value_type = Object)]
    headers: serde_json::Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    body: Option<Box<RawValue>>,
    text: Option<String>,
    parse_error: Option<String>,
    timing: TimingView,
    attempts: u32,
    agent_id: Option<String>,
    error: Option<ErrorView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimingView {
    total_ms: f64,
    agent_ms: f64,
    upstream_headers_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorView {
    class: &'static str,
    message: String,
}

impl NormalizedResult {
    /// Converts the wire result; `total` is the time at the control plane.
    pub fn from_result(r: CallResult, total: Duration) -> Self {
        let mut headers = serde_json::Map::new();
        for (k, v) in r.headers {
            match headers.get_mut(&k) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&v);
                }
                _ => {
                    headers.insert(k, Value::String(v));
                }
            }
        }
        let (body, text) = match r.body {
            ResponseBody::Empty => (None, None),
            ResponseBody::Json(t) => (RawValue::from_string(t.clone()).ok(), Some(t)),
            ResponseBody::Text(t) => (None, Some(t)),
            ResponseBody::Binary(b) => (None, Some(String::from_utf8_lossy(&b).into_owned())),
        };
        NormalizedResult {
            ok: r.ok,
            method: r.method,
            url: r.url,
            status: r.status,
            status_text: r.status_text,
            headers,
            body,
            text,
            parse_error: r.parse_error,
            timing: TimingView {
                total_ms: total.as_secs_f64() * 1000.0,
                agent_ms: r.timing.total_us as f64 / 1000.0,
                upstream_headers_ms: r.timing.headers_us as f64 / 1000.0,
            },
            attempts: r.attempts,
            agent_id: (!r.agent_id.is_empty()).then_some(r.agent_id),
            error: r.error.map(|e| ErrorView {
                class: e.class.as_str(),
                message: e.message,
            }),
        }
    }
}
