//! `Idempotency-Key` on creating POSTs.
//!
//! A client that retries a create with the same key gets the first
//! response again (with `Idempotent-Replayed: true`) instead of a second
//! resource. Keys are scoped to the API token, kept 24 hours, and bound to the
//! request: the same key with another path or body is refused (422); a key
//! whose first request is still running answers 409. Responses are stored
//! sealed by the vault, since some show a secret once. Server errors are not
//! stored, so a retry after one runs again. Diagnostic calls and sign-in are
//! not creations and ignore the header.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::Core;
use crate::http::{ApiError, MAX_BODY_BYTES};
use crate::vault::Secret;

/// The request header.
pub const HEADER: &str = "idempotency-key";

fn applies(method: &Method, path: &str) -> bool {
    method == Method::POST
        && path.starts_with("/api/v1/")
        && !path.ends_with("/calls")
        && !path.starts_with("/api/v1/auth/")
}

/// The middleware.
pub async fn layer(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_owned();
    if !applies(req.method(), &path) {
        return next.run(req).await;
    }
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    // The scope is the token; without a valid one, authentication answers.
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let Some(token) = token else {
        return next.run(req).await;
    };
    let Ok(Some(row)) = core.tokens.lookup(&core, &token).await else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
            .into_response();
        }
    };
    let mut material = path.clone().into_bytes();
    material.push(0);
    material.extend_from_slice(&bytes);
    let fingerprint = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &material,
    ));
    let scope = row.id.clone();
    let owner = format!("idempotency:{scope}:{key}");
    let now = crate::store::now_unix();
    match core
        .store
        .claim_idempotency_key(&scope, &key, &row.tenant_id, &fingerprint, now)
        .await
    {
        Ok(None) => {}
        Ok(Some((stored_fp, _, _))) if stored_fp != fingerprint => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request; use a new key for a new request",
            )
            .into_response();
        }
        Ok(Some((_, 0, _))) => {
            return ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_in_progress",
                "the first request with this Idempotency-Key is still running; retry shortly",
            )
            .into_response();
        }
        Ok(Some((_, status, sealed))) => {
            return match core
                .vault
                .open(&core.store, &row.tenant_id, &owner, "response", &sealed)
                .await
            {
                Ok(body) => replay(status, body.expose()),
                Err(e) => {
                    tracing::error!(%path, "stored idempotent response unreadable: {e}");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the stored response could not be read",
                    )
                    .into_response()
                }
            };
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() {
        let _ = core.store.release_idempotency_key(&scope, &key).await;
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        let _ = core.store.release_idempotency_key(&scope, &key).await;
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the response could not be recorded",
        )
        .into_response();
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let stored = match core
        .vault
        .seal(
            &core.store,
            &row.tenant_id,
            &owner,
            "response",
            &Secret::new(text),
        )
        .await
    {
        Ok(sealed) => core
            .store
            .complete_idempotency_key(&scope, &key, i64::from(status.as_u16()), &sealed)
            .await
            .is_ok(),
        Err(_) => false,
    };
    if !stored {
        tracing::error!(%path, "cannot record an idempotent response; a retry will run again");
        let _ = core.store.release_idempotency_key(&scope, &key).await;
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(status: i64, body: &str) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, body.to_owned()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
