//! Webhook triggers: an inbound URL per orchestration,
//! `POST /api/v1/hooks/{orchestration id}`, authenticated by the
//! orchestration's secret (`auth: secret`, header `X-Webhook-Secret`) or an
//! HMAC-SHA256 signature of the body with it (`auth: hmac`, header
//! `X-Webhook-Signature: sha256=<hex>`). The JSON body (an object) becomes
//! the execution's parameters. The secret is created (and shown once) with
//! `POST /orchestrations/{id}/webhook-secret`, sealed by the vault.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Core;
use crate::access::record;
use crate::api::{ApiError, ApiPath, Principal, require_admin};
use crate::store::{ExecutionRow, now_unix};
use crate::vault::Secret;

const FIELD: &str = "webhook.secret";

/// A new webhook secret (shown once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookSecretView {
    /// `POST` here to trigger the orchestration.
    url_path: String,
    /// The secret: send it as `X-Webhook-Secret`, or sign the body with it (HMAC-SHA256) as
    /// `X-Webhook-Signature: sha256=<hex>`.
    secret: String,
}

/// `POST /api/v1/orchestrations/{id}/webhook-secret`
#[utoipa::path(post, path = "/api/v1/orchestrations/{id}/webhook-secret", tag = "orchestrations",
    summary = "Create (or replace) the orchestration's webhook secret; shown once",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 201, body = WebhookSecretView), (status = 404, body = crate::openapi::ErrorBody),
        (status = 403, body = crate::openapi::ErrorBody), (status = 401, body = crate::openapi::ErrorBody)),
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
    let secret = crate::ids::new_secret("whsec_");
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
    core.store
        .set_webhook_secret(&o.id, &o.tenant_id, &sealed, now_unix())
        .await?;
    record(
        &core.store,
        Some(&p.tenant_id),
        &p.actor(),
        "orchestration.webhook_secret",
        ("orchestration", &o.id),
        Value::Null,
    )
    .await;
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
    responses((status = 202, description = "Queued: `{execution_id}`"), (status = 401, body = crate::openapi::ErrorBody),
        (status = 404, body = crate::openapi::ErrorBody), (status = 409, description = "Not an active webhook orchestration", body = crate::openapi::ErrorBody),
        (status = 422, body = crate::openapi::ErrorBody)))]
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
    let ok = match trigger["auth"].as_str().unwrap_or("secret") {
        "hmac" => {
            let key =
                aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.expose().as_bytes());
            let expected = format!(
                "sha256={}",
                hex::encode(aws_lc_rs::hmac::sign(&key, &body).as_ref())
            );
            same(
                header("x-webhook-signature").as_bytes(),
                expected.as_bytes(),
            )
        }
        _ => same(
            header("x-webhook-secret").as_bytes(),
            secret.expose().as_bytes(),
        ),
    };
    if !ok {
        return Err(unauthorized());
    }
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
    let params = crate::executions::check_parameters(&definition, given)?;
    core.quotas
        .ensure_storage(&core.store, &o.tenant_id)
        .await?;
    let row = ExecutionRow::queued(&o, params.to_string(), "webhook", "webhook".into());
    core.store.create_execution(&row).await?;
    core.engine.submit(&row.id);
    Ok((StatusCode::ACCEPTED, Json(json!({"execution_id": row.id}))).into_response())
}
