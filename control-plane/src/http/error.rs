//! The API's one error shape, `{"error":{"code","message","details",
//! "request_id"}}`, and how each context's errors map onto status codes:
//! the only place that knows both.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::identity::tokens::AuthError;
use crate::identity::{IdentityError, request_meta};
use crate::quotas::QuotaError;
use crate::store::StoreError;

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

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} `{id}` does not exist"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
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

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<QuotaError> for ApiError {
    fn from(e: QuotaError) -> Self {
        match e {
            QuotaError::Exceeded {
                code,
                message,
                retry_after,
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
                .with_retry_after(retry_after),
            QuotaError::Store(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let message = e.to_string();
        match e {
            AuthError::Quota(e) => e.into(),
            AuthError::Store(e) => e.into(),
            AuthError::TenantSuspended(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "tenant_suspended", message)
            }
            AuthError::RoleNotInTenant { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            AuthError::Invalid
            | AuthError::Revoked { .. }
            | AuthError::Expired { .. }
            | AuthError::TenantGone => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            }
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid { message, problems } => {
                ApiError::invalid(message).with_details(Value::Array(problems))
            }
            IdentityError::NotFound { what, id } => ApiError::not_found(what, &id),
            IdentityError::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            IdentityError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, code, message)
            }
            IdentityError::Store(e) => e.into(),
            IdentityError::Internal(message) => {
                tracing::error!("{message}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the control plane failed to complete the request",
                )
            }
        }
    }
}

impl From<crate::agents::enroll::EnrollError> for ApiError {
    fn from(e: crate::agents::enroll::EnrollError) -> Self {
        use crate::agents::enroll::EnrollError;
        match e {
            EnrollError::NoGroup(id) => ApiError::not_found("agent group", &id),
            EnrollError::Ttl(_) => ApiError::invalid(e.to_string()),
            EnrollError::Store(e) => e.into(),
        }
    }
}

impl From<crate::agents::enroll::RevokeError> for ApiError {
    fn from(e: crate::agents::enroll::RevokeError) -> Self {
        use crate::agents::enroll::RevokeError;
        match e {
            RevokeError::NoAgent(id) => ApiError::not_found("agent", &id),
            RevokeError::AlreadyRevoked { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_revoked", e.to_string())
            }
            RevokeError::Store(e) => e.into(),
        }
    }
}

impl From<crate::connections::ConnectionError> for ApiError {
    fn from(e: crate::connections::ConnectionError) -> Self {
        use crate::connections::ConnectionError;
        let message = e.to_string();
        match e {
            ConnectionError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            ConnectionError::CredentialsUnreadable { .. } => {
                ApiError::new(StatusCode::CONFLICT, "credentials_unreadable", message)
            }
            ConnectionError::Invalid { details, .. } => {
                ApiError::invalid(message).with_details(details)
            }
            ConnectionError::Conflict { code, details, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message).with_details(details)
            }
            ConnectionError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            ConnectionError::Vault => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "vault_error", message)
            }
            ConnectionError::Internal(_) => {
                tracing::error!("{message}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the control plane failed to complete the request",
                )
            }
            ConnectionError::Store(e) => e.into(),
        }
    }
}

impl From<crate::catalogue::CatalogueError> for ApiError {
    fn from(e: crate::catalogue::CatalogueError) -> Self {
        use crate::catalogue::CatalogueError;
        let message = e.to_string();
        match e {
            CatalogueError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            CatalogueError::Invalid(_) => ApiError::invalid(message),
            CatalogueError::Conflict { code, details, .. } => {
                ApiError::new(StatusCode::CONFLICT, code, message).with_details(details)
            }
            CatalogueError::Forbidden { code, .. } => {
                ApiError::new(StatusCode::FORBIDDEN, code, message)
            }
            CatalogueError::ChecklistFailed { failed, .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "checklist_failed",
                message,
            )
            .with_details(failed),
            CatalogueError::Store(e) => e.into(),
        }
    }
}
