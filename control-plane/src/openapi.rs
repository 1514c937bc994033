//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! annotations, served at `/api/v1/openapi.json`, with interactive docs at
//! `/api/v1/docs` (Swagger UI, assets built into the binary: no CDN).

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The one error shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`.
    pub code: String,
    /// What happened and what to do, for a person.
    pub message: String,
    /// Extra facts: a list such as `[{"field","problem"}]` for validation
    /// errors, an object for some conflicts, or `null`.
    pub details: serde_json::Value,
    /// The request id, also in the `x-request-id` header and the logs.
    pub request_id: String,
}

/// A new enrollment token.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// Token id.
    pub id: String,
    /// Its agent group.
    pub group_id: String,
    /// The pasteable token (`dibop-enroll-v1.…`), shown once.
    pub token: String,
    /// Expiry (RFC 3339).
    pub expires_at: String,
    /// A command to paste on the dealer's machine.
    pub install_command: String,
}

/// A new API token, with its secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTokenView {
    /// Token id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Role.
    pub role: String,
    /// First 12 characters.
    pub prefix: String,
    /// The secret: `Authorization: Bearer <token>`.
    pub token: String,
    /// Creation time.
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
}

/// A new session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// The session token.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Expiry (12 hours).
    pub expires_at: String,
    /// The user's tenant.
    pub tenant_id: String,
    /// Who signed in.
    pub user: crate::users::UserView,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "DIBOP control plane API",
        description = "Agents, agent groups and relayed calls; tenants, users, API tokens and the audit log; \
                       the connector catalogue (drafts, OpenAPI import, publishing, versions, reviews); \
                       connections, their operations and the API-call log. \
                       Every error has the shape of `ErrorBody`; lists are JSON arrays with a `Link: rel=\"next\"` \
                       header; creating POSTs honour `Idempotency-Key`."
    ),
    paths(
        crate::api::healthz,
        crate::api::readyz,
        crate::api::metrics,
        crate::api::create_group,
        crate::api::list_groups,
        crate::api::get_group,
        crate::api::create_enrollment_token,
        crate::api::list_agents,
        crate::api::get_agent,
        crate::api::revoke_agent,
        crate::api::group_call,
        crate::access::create_token,
        crate::access::list_tokens,
        crate::access::revoke_token,
        crate::access::list_audit,
        crate::users::login_handler,
        crate::users::logout_handler,
        crate::users::create_user_handler,
        crate::users::list_users_handler,
        crate::users::update_user_handler,
        crate::tenants::create_tenant,
        crate::tenants::list_tenants,
        crate::tenants::get_tenant,
        crate::tenants::own_usage,
        crate::tenants::update_tenant,
        crate::tenants::create_tenant_user,
        crate::catalogue::validate,
        crate::catalogue::create,
        crate::catalogue::list,
        crate::catalogue::get,
        crate::catalogue::replace,
        crate::catalogue::delete,
        crate::catalogue::import,
        crate::catalogue::browse,
        crate::catalogue::catalogue_detail,
        crate::catalogue::catalogue_version,
        crate::publishing::publish,
        crate::publishing::publish_update,
        crate::publishing::list_versions,
        crate::publishing::get_version,
        crate::publishing::checklist,
        crate::publishing::unpublish,
        crate::publishing::deprecate,
        crate::publishing::submit_review,
        crate::publishing::usage,
        crate::publishing::list_reviews,
        crate::publishing::approve_review,
        crate::publishing::reject_review,
        crate::publishing::promote,
        crate::connections::create,
        crate::connections::list,
        crate::connections::get,
        crate::connections::update,
        crate::connections::delete,
        crate::connections::activate,
        crate::connections::deactivate,
        crate::connections::rotate_credentials,
        crate::connections::move_version,
        crate::connections::test_saved,
        crate::connections::test_unsaved,
        crate::connections::health,
        crate::connections::check_now,
        crate::connections::invoke,
        crate::connections::list_calls,
        crate::connections::get_call,
        crate::connections::grants,
        crate::connections::set_grants,
        crate::notifications::list,
        crate::notifications::read,
        crate::orchestrations::validate,
        crate::orchestrations::create,
        crate::orchestrations::list,
        crate::orchestrations::get,
        crate::orchestrations::replace,
        crate::orchestrations::versions,
        crate::orchestrations::activate,
        crate::orchestrations::pause,
        crate::orchestrations::archive,
        crate::orchestrations::restore,
        crate::orchestrations::delete,
        crate::executions::execute,
        crate::executions::list,
        crate::executions::get,
        crate::executions::cancel,
        crate::executions::rerun,
        crate::webhooks::create_secret,
        crate::webhooks::trigger,
        crate::executions::dead_letters,
        crate::executions::replay,
        crate::executions::discard,
        crate::executions::export,
        crate::cdm_api::list_domains,
        crate::cdm_api::get_domain,
        crate::cdm_api::validate,
        crate::cdm_api::suggest,
        crate::cdm_api::suggest_into_draft,
        crate::cdm_api::suggest_from_call,
        crate::cdm_api::confirm,
        crate::cdm_api::list_items,
        crate::cdm_api::get_item,
        crate::cdm_api::discard_item,
    ),
    components(schemas(ErrorBody, ErrorDetail, EnrollmentTokenView, CreatedTokenView, SessionView)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as served, with what every operation shares filled in
/// (see [`complete`]).
pub fn document() -> serde_json::Value {
    let mut v = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete(&mut v);
    v
}

fn error_answer(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds what every operation of this API can answer but its annotation may
/// not say: `400` (a malformed query string or path), `415` (a body of an
/// unsupported type) where it takes a body, `422` where it reads a body or
/// query parameters, `401`, `403` and `429` where it needs a token; and
/// bounds on every `limit` (1 to 500).
pub fn complete(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let secured = op
                .get("security")
                .is_some_and(|s| s.as_array().is_some_and(|a| !a.is_empty()));
            let has_body = op.get("requestBody").is_some();
            let has_query = op["parameters"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            if let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                for p in params.iter_mut() {
                    if p["name"] == "limit" {
                        p["schema"]["minimum"] = serde_json::json!(1);
                        p["schema"]["maximum"] = serde_json::json!(500);
                    }
                }
            }
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            let mut add = |code: &str, description: &str| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error_answer(description));
            };
            add(
                "400",
                "Malformed request: a query string, path or header that cannot be read",
            );
            if has_body {
                add(
                    "415",
                    "The body's content type is not one this operation reads",
                );
                add("422", "Invalid: every problem in `details`");
            }
            if has_query {
                add("422", "A query parameter is invalid");
            }
            if secured {
                add("401", "Missing, invalid, revoked or expired token");
                add("403", "The role may not do this");
                add("429", "A tenant limit was reached");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_the_shared_answers() {
        let doc = document();
        let post = &doc["paths"]["/api/v1/agent-groups"]["post"]["responses"];
        for code in ["400", "401", "403", "415", "422", "429"] {
            assert!(post.get(code).is_some(), "{code} missing: {post}");
        }
        let items = &doc["paths"]["/api/v1/dead-letters/items"]["get"]["parameters"];
        for p in items.as_array().unwrap() {
            assert_eq!(p["in"], "query", "{p}");
            if p["name"] == "limit" {
                assert_eq!(
                    (
                        p["schema"]["minimum"].as_i64(),
                        p["schema"]["maximum"].as_i64()
                    ),
                    (Some(1), Some(500))
                );
            }
        }
    }
}
