//! Notifications: what an enterprise should know without asking (a new
//! major version of a connector its connections use, ...). Newest first;
//! marked read one by one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Core;
use crate::http::{ApiError, ApiPath, ApiQuery, Principal, page_limit, paged};
use crate::store::now_unix;

/// `?unread=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotificationQuery {
    unread: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// One notification.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NotificationView {
    id: String,
    /// e.g. `connector.major_version`.
    kind: String,
    message: String,
    #[schema(value_type = Object)]
    details: Value,
    created_at: String,
    read_at: Option<String>,
}

/// `GET /api/v1/notifications`
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", summary = "Your enterprise's notifications, newest first",
    params(("unread" = Option<bool>, Query, description = "Only unread ones"),
        ("limit" = Option<i64>, Query, description = "1..=500, default 100"),
        ("cursor" = Option<String>, Query, description = "From the previous page's Link header")),
    responses((status = 200, body = [NotificationView])),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<NotificationQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(q.limit)?;
    let page = crate::http::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        group_id: None,
    };
    let rows = core
        .store
        .notifications(
            &p.tenant_id,
            q.unread.unwrap_or(false),
            page.cursor_of("ntf_")?,
            limit + 1,
        )
        .await?;
    let views: Vec<NotificationView> = rows
        .into_iter()
        .map(
            |(id, kind, message, details, created_at, read_at)| NotificationView {
                id,
                kind,
                message,
                details: serde_json::from_str(&details).unwrap_or(Value::Null),
                created_at: rfc3339(created_at),
                read_at: read_at.map(rfc3339),
            },
        )
        .collect();
    Ok(paged(views, limit, "/notifications", |n| n.id.clone()))
}

/// `POST /api/v1/notifications/{id}/read`
#[utoipa::path(post, path = "/api/v1/notifications/{id}/read", tag = "notifications", summary = "Mark a notification read",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 204, description = "Marked")),
    security(("bearer" = [])))]
pub(crate) async fn read(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if core.store.mark_read(&p.tenant_id, &id, now_unix()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("notification", &id))
    }
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(list))
        .routes(utoipa_axum::routes!(read))
}
