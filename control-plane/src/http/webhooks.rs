//! Webhook triggers: an inbound URL per orchestration,
//! `POST /api/v1/hooks/{orchestration id}`, authenticated by the
//! orchestration's secret, created (and shown once) with
//! `POST /orchestrations/{id}/webhook-secret` and sealed by the vault.
//!
//! - `auth: hmac` (recommended): the sender signs `<timestamp>.<raw body>`
//!   with HMAC-SHA256 and sends `X-Webhook-Timestamp: <unix seconds>` and
//!   `X-Webhook-Signature: sha256=<hex>`. A timestamp more than
//!   [`TOLERANCE_SECS`] away from the control plane's clock is refused, and
//!   so is a signature already received inside that window (on any
//!   replica: deliveries are remembered in the database), so a captured
//!   request cannot be replayed.
//! - `auth: secret`: the secret itself as `X-Webhook-Secret`. It cannot tell
//!   a replay from a new request unless the sender names each delivery
//!   (`X-Webhook-Id`), which is then accepted once in [`DELIVERY_ID_TTL_SECS`].
//!
//! The JSON body (an object) becomes the execution's parameters.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Core;
use crate::http::{ApiError, ApiPath, Principal, require_admin};
use crate::identity::audit::record_by;
use crate::store::{ExecutionRow, now_unix};
use crate::vault::Secret;

const FIELD: &str = "webhook.secret";

/// How far a signed request's timestamp may be from the control plane's clock.
pub const TOLERANCE_SECS: i64 = 300;
/// How long a sender's `X-Webhook-Id` is remembered (`auth: secret`).
pub const DELIVERY_ID_TTL_SECS: i64 = 24 * 3600;

/// A new webhook secret (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookSecretView {
    /// `POST` here to trigger the orchestration.
    url_path: String,
    /// The secret: with `auth: hmac`, sign `<unix seconds>.<raw body>` with it (HMAC-SHA256)
    /// and send `X-Webhook-Timestamp: <unix seconds>` and `X-Webhook-Signature: sha256=<hex>`;
    /// with `auth: secret`, send it as `X-Webhook-Secret`.
    secret: String,
}

/// `POST /api/v1/orchestrations/{id}/webhook-secret`
#[utoipa::path(post, path = "/api/v1/orchestrations/{id}/webhook-secret", tag = "orchestrations",
    summary = "Create (or replace) the orchestration's webhook secret; shown once",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 201, body = WebhookSecretView)),
    security(("bearer" = [])))]
pub(crate) async fn create_secret(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let o = core
        .store
        .orchestration(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("orchestration", &id))?;
    let secret = crate::support::ids::new_secret("whsec_");
    let sealed = core
        .vault
        .seal(
            &core.store,
            &o.tenant_id,
            &o.id,
            FIELD,
            &Secret::new(secret.clone()),
        )
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "vault_error",
                "the secret could not be sealed",
            )
        })?;
    let tx = core.store.begin().await?;
    tx.set_webhook_secret(&o.id, &o.tenant_id, &sealed, now_unix())
        .await?;
    record_by(
        &tx,
        &p,
        "orchestration.webhook_secret",
        ("orchestration", &o.id),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookSecretView {
            url_path: format!("/api/v1/hooks/{}", o.id),
            secret,
        }),
    )
        .into_response())
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "the webhook secret or signature is missing or wrong",
    )
}

/// Constant-time equality.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /api/v1/hooks/{id}`
#[utoipa::path(post, path = "/api/v1/hooks/{id}", tag = "orchestrations",
    summary = "Trigger an orchestration from another system (webhook): the JSON body becomes its parameters",
    params(("id" = String, Path, description = "The orchestration id")),
    request_body(content = Object, description = "A JSON object", content_type = "application/json"),
    responses((status = 202, description = "Queued: `{execution_id}`"), (status = 401, body = crate::http::openapi::ErrorBody), (status = 409, description = "Not an active webhook orchestration, or a delivery already received (`replayed`)", body = crate::http::openapi::ErrorBody)))]
pub(crate) async fn trigger(
    State(core): State<Arc<Core>>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let o = core
        .store
        .orchestration_any(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", &id))?;
    let definition: Value = core
        .store
        .orchestration_version(&o.id, o.latest_version)
        .await?
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or(Value::Null);
    let trigger = &definition["trigger"];
    if trigger["type"] != "webhook" {
        return Err(ApiError::not_found("webhook", &id));
    }
    let Some(sealed) = core.store.webhook_secret(&o.id).await? else {
        return Err(unauthorized());
    };
    let secret = core
        .vault
        .open(&core.store, &o.tenant_id, &o.id, FIELD, &sealed)
        .await
        .map_err(|_| unauthorized())?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    // What identifies this delivery, to refuse it a second time: the
    // signature (it covers the timestamp), or the sender's delivery id.
    let now = now_unix();
    let delivery = match trigger["auth"].as_str().unwrap_or("secret") {
        "hmac" => {
            let stamp = header("x-webhook-timestamp");
            let Ok(sent_at) = stamp.trim().parse::<i64>() else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "X-Webhook-Timestamp is missing or not unix seconds: sign `<timestamp>.<body>` \
                     and send the timestamp with the signature",
                ));
            };
            let key =
                aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.expose().as_bytes());
            let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
            ctx.update(stamp.trim().as_bytes());
            ctx.update(b".");
            ctx.update(&body);
            let expected = format!("sha256={}", hex::encode(ctx.sign().as_ref()));
            let given = header("x-webhook-signature");
            if !same(given.as_bytes(), expected.as_bytes()) {
                return Err(unauthorized());
            }
            let age = now - sent_at;
            if age.abs() > TOLERANCE_SECS {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "stale_signature",
                    format!(
                        "the signed timestamp is {} s {} the control plane's clock; at most {TOLERANCE_SECS} s \
                         are accepted (a replayed request, or the sender's clock is wrong)",
                        age.abs(),
                        if age > 0 { "behind" } else { "ahead of" }
                    ),
                ));
            }
            Some((expected, sent_at + TOLERANCE_SECS + 1))
        }
        _ => {
            if !same(
                header("x-webhook-secret").as_bytes(),
                secret.expose().as_bytes(),
            ) {
                return Err(unauthorized());
            }
            let id = header("x-webhook-id").trim();
            if id.len() > 200 {
                return Err(ApiError::invalid(
                    "X-Webhook-Id must be at most 200 characters",
                ));
            }
            (!id.is_empty()).then(|| (format!("id:{id}"), now + DELIVERY_ID_TTL_SECS))
        }
    };
    if o.status != "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_runnable",
            format!("orchestration {} is {}", o.name, o.status),
        ));
    }
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("the body is not JSON: {e}")))?
    };
    let Value::Object(given) = input else {
        return Err(ApiError::invalid(
            "the body must be a JSON object (its keys are the parameters)",
        ));
    };
    // External systems send more than asked for: only declared parameters are taken.
    let declared: Vec<String> = definition["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let given = given
        .into_iter()
        .filter(|(k, _)| declared.contains(k))
        .collect();
    let params = crate::http::executions::check_parameters(&definition, given)?;
    core.quotas
        .ensure_storage(&core.store, &o.tenant_id)
        .await?;
    if let Some((identity, keep_until)) = delivery {
        let digest = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            identity.as_bytes(),
        ));
        if let Some(first) = core
            .store
            .remember_webhook_delivery(&o.id, &digest, now, keep_until)
            .await?
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replayed",
                format!(
                    "this delivery was already received at {}: it does not run twice",
                    dibop_runtime::support::rfc3339(first)
                ),
            ));
        }
    }
    let row = ExecutionRow::queued(&o, params.to_string(), "webhook", "webhook".into());
    core.store.create_execution(&row).await?;
    core.engine.submit(&row.id);
    Ok((StatusCode::ACCEPTED, Json(json!({"execution_id": row.id}))).into_response())
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(create_secret))
        .routes(utoipa_axum::routes!(trigger))
}
