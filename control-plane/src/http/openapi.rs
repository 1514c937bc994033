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
    pub user: crate::http::users::UserView,
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

/// The document's frame: information, shared schemas and the bearer scheme;
/// the operations come from the routes (see [`super::api`]).
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
    components(schemas(ErrorBody, ErrorDetail, EnrollmentTokenView, CreatedTokenView, SessionView)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as served: the operations of [`super::api`]'s routes, with
/// what every operation shares filled in (see [`complete`]).
pub fn document() -> serde_json::Value {
    let mut v = serde_json::to_value(super::api().into_openapi()).unwrap_or_default();
    complete(&mut v);
    v
}

/// Names people give things: 1 to 100 characters, no control characters.
const NAME: &str = r#"{"minLength": 1, "maxLength": 100, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"}"#;
const ROLE: &str = r#"{"enum": ["enterprise_admin", "operator", "viewer"]}"#;
const EMAIL: &str = r#"{"maxLength": 254, "pattern": "^[^@\\s\\u0000-\\u001f\\u007f-\\u009f]+@[^@\\s.\\u0000-\\u001f\\u007f-\\u009f]+(\\.[^@\\s.\\u0000-\\u001f\\u007f-\\u009f]+)+$"}"#;
const PASSWORD: &str = r#"{"minLength": 12, "maxLength": 1024}"#;
/// Stands for [`crate::catalogue::connector::HTTP_URL_PATTERN`] (filled in by [`constrain`]).
const HTTP_URL: &str = "http-url";
const AUTH_TYPE: &str = r#"{"enum": ["none", "api_key", "basic", "bearer", "oauth2_client_credentials", "oauth2_password", "oauth2_authorization_code", "openid_connect", "dynamic_api_key", "aws_sigv4", "mutual_tls"]}"#;
const AT_LEAST_ONE: &str = r#"{"minimum": 1}"#;

/// What the handlers check and the annotations cannot say: the constraints
/// of request fields, by (schema, property). Kept here, next to the
/// document, and asserted by the API fuzzer (schemathesis) in the tests.
const CONSTRAINTS: &[(&str, &str, &str)] = &[
    ("NewGroup", "name", NAME),
    ("NewGroup", "description", r#"{"maxLength": 1000}"#),
    (
        "NewEnrollmentToken",
        "ttl_secs",
        r#"{"minimum": 1, "maximum": 2592000}"#,
    ),
    ("NewToken", "name", NAME),
    ("NewToken", "role", ROLE),
    (
        "NewToken",
        "ttl_secs",
        r#"{"minimum": 60, "maximum": 315360000}"#,
    ),
    ("NewUser", "email", EMAIL),
    ("NewUser", "password", PASSWORD),
    ("NewUser", "role", ROLE),
    ("NewTenantUser", "email", EMAIL),
    ("NewTenantUser", "password", PASSWORD),
    ("NewTenantUser", "role", ROLE),
    ("UserPatch", "role", ROLE),
    ("TenantPlan", "name", NAME),
    (
        "TenantPlan",
        "status",
        r#"{"enum": ["active", "suspended"]}"#,
    ),
    (
        "TenantPlan",
        "tier",
        r#"{"enum": ["free", "standard", "premium"]}"#,
    ),
    ("TenantPlan", "calls_per_month", AT_LEAST_ONE),
    ("TenantPlan", "requests_per_minute", AT_LEAST_ONE),
    ("TenantPlan", "concurrent_executions", AT_LEAST_ONE),
    ("TenantPlan", "storage_bytes", AT_LEAST_ONE),
    ("TenantPlan", "retention_days", AT_LEAST_ONE),
    (
        "CallBody",
        "method",
        r#"{"enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "head", "post", "put", "patch", "delete", "options"]}"#,
    ),
    ("CallBody", "url", HTTP_URL),
    (
        "CallBody",
        "timeout_ms",
        r#"{"minimum": 1, "maximum": 120000}"#,
    ),
    ("ConnectionRequest", "name", NAME),
    ("ConnectionRequest", "auth_type", AUTH_TYPE),
    ("ConnectionRequest", "base_url", HTTP_URL),
    (
        "ConnectionRequest",
        "execution_mode",
        r#"{"enum": ["cloud", "agent_group", "proxy"]}"#,
    ),
    ("ConnectionPatch", "name", NAME),
    ("ConnectionPatch", "base_url", HTTP_URL),
    (
        "ConnectionPatch",
        "execution_mode",
        r#"{"enum": ["cloud", "agent_group", "proxy"]}"#,
    ),
    (
        "ConnectionSettings",
        "timeout_ms",
        r#"{"minimum": 1, "maximum": 300000}"#,
    ),
    (
        "ConnectionSettings",
        "max_retries",
        r#"{"minimum": 0, "maximum": 10}"#,
    ),
    (
        "ConnectionSettings",
        "log_level",
        r#"{"enum": ["error", "warn", "info", "debug"]}"#,
    ),
    (
        "TlsSettings",
        "extra_ca_pem",
        r#"{"pattern": "-----BEGIN CERTIFICATE-----"}"#,
    ),
    ("ProxyInput", "url", HTTP_URL),
    (
        "InvokeBody",
        "max_pages",
        r#"{"minimum": 1, "maximum": 100}"#,
    ),
    (
        "ExecuteRequest",
        "wait_ms",
        r#"{"minimum": 0, "maximum": 60000}"#,
    ),
    (
        "MoveRequest",
        "version",
        r#"{"pattern": "^[0-9]{1,9}\\.[0-9]{1,9}\\.[0-9]{1,9}$"}"#,
    ),
    (
        "PublishRequest",
        "scope",
        r#"{"enum": ["global", "enterprise"]}"#,
    ),
    (
        "UpdateRequest",
        "bump",
        r#"{"enum": ["major", "minor", "patch"]}"#,
    ),
    (
        "UpdateRequest",
        "release_notes",
        r#"{"minLength": 1, "maxLength": 2000, "pattern": "\\S"}"#,
    ),
    (
        "RejectRequest",
        "reason",
        r#"{"minLength": 1, "maxLength": 2000, "pattern": "\\S"}"#,
    ),
];

/// Query parameters' constraints, by name, wherever they appear (string
/// parameters are never empty: the API refuses `?name=`).
const QUERY_CONSTRAINTS: &[(&str, &str)] = &[
    ("limit", r#"{"minimum": 1, "maximum": 500}"#),
    ("outcome", r#"{"enum": ["ok", "failed"]}"#),
    ("auth_type", AUTH_TYPE),
    ("since", r#"{"format": "date-time"}"#),
    ("until", r#"{"format": "date-time"}"#),
];

const EXECUTION_STATUS: &str =
    r#"{"enum": ["queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled"]}"#;

/// Query parameters whose constraints depend on the operation: (path, name, constraint).
const OPERATION_QUERY_CONSTRAINTS: &[(&str, &str, &str)] = &[
    ("/api/v1/executions", "status", EXECUTION_STATUS),
    ("/api/v1/executions/export", "status", EXECUTION_STATUS),
    (
        "/api/v1/executions/export",
        "limit",
        r#"{"minimum": 1, "maximum": 1000}"#,
    ),
    (
        "/api/v1/dead-letters/items",
        "status",
        r#"{"enum": ["open", "discarded", "all"]}"#,
    ),
    (
        "/api/v1/catalogue",
        "scope",
        r#"{"enum": ["global", "enterprise"]}"#,
    ),
];

/// Each list's cursor: the id prefix of its items (a cursor is the last id
/// of the previous page).
const CURSORS: &[(&str, &str)] = &[
    ("/api/v1/agent-groups", "grp_"),
    ("/api/v1/agents", "agt_"),
    ("/api/v1/api-tokens", "tok_"),
    ("/api/v1/users", "usr_"),
    ("/api/v1/audit", "aud_"),
    ("/api/v1/connectors", "cnr_"),
    ("/api/v1/catalogue", "cnr_"),
    ("/api/v1/reviews", "cnr_"),
    ("/api/v1/connections", "con_"),
    ("/api/v1/api-calls", "call_"),
    ("/api/v1/notifications", "ntf_"),
    ("/api/v1/orchestrations", "orc_"),
    ("/api/v1/executions", "exe_"),
    ("/api/v1/dead-letters", "exe_"),
    ("/api/v1/dead-letters/items", "dli_"),
    ("/api/v1/tenants", "ten_"),
];

/// Merges `extra` into a property's schema; an `enum` of an optional value
/// keeps `null` allowed.
fn constrain(schema: &mut serde_json::Value, extra: &str) {
    let extra = if extra == HTTP_URL {
        serde_json::json!({"maxLength": 2048, "pattern": crate::catalogue::connector::HTTP_URL_PATTERN})
    } else {
        serde_json::from_str::<serde_json::Value>(extra).unwrap_or_default()
    };
    let serde_json::Value::Object(extra) = extra else {
        return;
    };
    let nullable = schema["type"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "null"));
    for (k, mut v) in extra {
        if k == "enum"
            && nullable
            && let Some(values) = v.as_array_mut()
        {
            values.push(serde_json::Value::Null);
        }
        schema[k] = v;
    }
}

fn error_answer(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Adds what the annotations cannot say: the [`CONSTRAINTS`] of request
/// fields and of query parameters, and what every operation can answer:
/// `400` (a malformed query string or path), `415`, `422` and `409` where it
/// takes a body, `422` where it reads query parameters, `404` where its path
/// names a resource, `401`, `403` and `429` where it needs a token. The
/// handlers' annotations list only the answers particular to them.
pub fn complete(doc: &mut serde_json::Value) {
    for (schema, property, extra) in CONSTRAINTS {
        let target = &mut doc["components"]["schemas"][*schema]["properties"][*property];
        debug_assert!(
            !target.is_null(),
            "{schema}.{property} is not in the document"
        );
        if target.is_object() {
            constrain(target, extra);
        }
    }
    // Validation answers every JSON document, whatever its shape.
    for path in [
        "/api/v1/connectors/validate",
        "/api/v1/orchestrations/validate",
    ] {
        if let Some(content) = doc["paths"][path]["post"]["requestBody"]["content"].as_object_mut()
        {
            for media in content.values_mut() {
                media["schema"] = serde_json::json!({});
            }
        }
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
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
            let mut has_query = false;
            if let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                for p in params.iter_mut().filter(|p| p["in"] == "query") {
                    has_query = true;
                    constrain_query(path, p);
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
            if method != "get" {
                add(
                    "409",
                    "Conflicts with what exists or its state, e.g. a name already taken",
                );
            }
            if has_query {
                add("422", "A query parameter is invalid");
            }
            if path.contains('{') {
                add("404", "No such resource in your tenant");
            }
            if secured {
                add("401", "Missing, invalid, revoked or expired token");
                add("403", "The role may not do this");
                add("429", "A tenant limit was reached");
            }
        }
    }
}

/// A query parameter's constraints: never empty, then by name and by operation.
fn constrain_query(path: &str, p: &mut serde_json::Value) {
    let name = p["name"].as_str().unwrap_or_default().to_owned();
    // A query string has no `null`: an optional parameter is one left out.
    if let Some(types) = p["schema"]["type"].as_array() {
        let kept: Vec<serde_json::Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        if kept.len() == 1 {
            p["schema"]["type"] = kept[0].clone();
        }
    }
    let types = &p["schema"]["type"];
    if types == "string"
        || types
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "string"))
    {
        constrain(&mut p["schema"], r#"{"minLength": 1}"#);
    }
    if let Some((_, extra)) = QUERY_CONSTRAINTS.iter().find(|(n, _)| name == *n) {
        constrain(&mut p["schema"], extra);
    }
    if let Some((_, _, extra)) = OPERATION_QUERY_CONSTRAINTS
        .iter()
        .find(|(at, n, _)| *at == path && name == *n)
    {
        constrain(&mut p["schema"], extra);
    }
    if name == "cursor"
        && let Some((_, prefix)) = CURSORS.iter().find(|(at, _)| *at == path)
    {
        let rest = 64 - prefix.len();
        let pattern = format!(r#"{{"pattern": "^{prefix}[A-Za-z0-9_]{{0,{rest}}}$"}}"#);
        constrain(&mut p["schema"], &pattern);
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
