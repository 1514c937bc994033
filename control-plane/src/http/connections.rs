//! Connections through the API: one enterprise's configured link to one
//! external system, made from a published connector version.
//!
//! Credentials are write-only: each field is sealed by the vault with the
//! tenant, the connection and the field as associated data; the API shows
//! non-secret fields (a user name, a client id) and only whether a secret
//! one is set. A connection is created inactive unless `activate` is true;
//! only active connections take calls and are health-checked.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Core;
use crate::connections::execute::{self, ConnectionSettings, Resolved, TestOutcome};
use crate::http::{
    ApiError, ApiJson, ApiPath, ApiQuery, Page, Principal, page_limit, paged, require_admin,
    require_operator,
};
use crate::identity::audit::record_by;
use crate::store::{ApiCallFilter, ConnectionRow, now_unix};
use crate::vault::Secret;

const MODES: [&str; 3] = ["cloud", "agent_group", "proxy"];
const LOG_LEVELS: [&str; 4] = ["error", "warn", "info", "debug"];

/// The body of `POST /connections` and `POST /connections/test`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// A connector of the catalogue (global or your enterprise's).
    connector_id: String,
    /// Its version; default: the newest.
    #[serde(default)]
    version: Option<String>,
    /// Default: the connector's name.
    #[serde(default)]
    name: Option<String>,
    /// One of the connector's auth scheme types; default: its first.
    #[serde(default)]
    auth_type: Option<String>,
    /// Credential fields of the scheme (`{"api_key": "…"}`); write-only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    credentials: Option<Map<String, Value>>,
    /// Overrides the connector's base URL (sandbox, production, region).
    #[serde(default)]
    base_url: Option<String>,
    /// Timeout, retries, log level, TLS.
    #[serde(default)]
    settings: Option<ConnectionSettings>,
    /// `cloud` (default), `agent_group` or `proxy`.
    #[serde(default)]
    execution_mode: Option<String>,
    /// For `agent_group`.
    #[serde(default)]
    agent_group_id: Option<String>,
    /// For `proxy`.
    #[serde(default)]
    proxy: Option<ProxyInput>,
    /// Save & Activate.
    #[serde(default)]
    activate: bool,
}

/// An HTTP proxy for `proxy` mode.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyInput {
    /// `http://proxy.example:3128`.
    url: String,
    /// Proxy user (optional).
    #[serde(default)]
    username: Option<String>,
    /// Proxy password (write-only).
    #[serde(default)]
    password: Option<String>,
}

/// The body of `PATCH /connections/{id}`: what to change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    #[serde(default)]
    name: Option<String>,
    /// `null` clears the override.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    base_url: Option<Option<String>>,
    #[serde(default)]
    settings: Option<ConnectionSettings>,
    #[serde(default)]
    execution_mode: Option<String>,
    #[serde(default)]
    agent_group_id: Option<String>,
    #[serde(default)]
    proxy: Option<ProxyInput>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// The body of `PUT /connections/{id}/credentials`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// Every credential field of the scheme (write-only).
    #[schema(value_type = Object)]
    credentials: Map<String, Value>,
}

/// The body of an invocation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    /// Parameter values by name.
    #[serde(default, deserialize_with = "crate::http::null_as_default")]
    #[schema(value_type = Option<Object>)]
    parameters: Map<String, Value>,
    /// Follow the operation's pagination, up to this many pages (1-100).
    #[serde(default)]
    max_pages: Option<u32>,
}

/// A credential field as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// Whether it is a secret (never shown).
    secret: bool,
    /// Whether a value is stored.
    set: bool,
    /// The value of a non-secret field.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

/// A connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    id: String,
    name: String,
    connector_id: String,
    connector_slug: String,
    connector_version: String,
    auth_type: String,
    base_url: Option<String>,
    /// The URL calls go to (the override or the connector's).
    effective_base_url: String,
    #[schema(value_type = Object)]
    settings: Value,
    execution_mode: String,
    agent_group_id: Option<String>,
    proxy_url: Option<String>,
    /// `inactive` or `active`.
    status: String,
    /// `unchecked`, `healthy`, `degraded` or `offline`.
    health: String,
    health_checked_at: Option<String>,
    credentials: HashMap<String, CredentialView>,
    /// The connector's circuit breaker for this connection (absent when the
    /// connector declares none).
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<crate::connections::guard::BreakerView>,
    created_by: String,
    created_at: String,
    updated_at: String,
    /// Present when the connector version is deprecated.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

/// (name, secret, required) of every credential field of a scheme.
pub fn fields_of(scheme: &Value) -> Vec<(String, bool, bool)> {
    if let Some(fields) = scheme["fields"].as_array() {
        return fields
            .iter()
            .filter_map(|f| {
                let name = f["name"].as_str()?.to_owned();
                let secret = f["secret"].as_bool().unwrap_or(false);
                Some((name, secret, f["required"].as_bool().unwrap_or(true)))
            })
            .collect();
    }
    let kind = scheme["type"].as_str().unwrap_or_default();
    crate::catalogue::connector::AUTH_TYPES
        .iter()
        .find(|(t, _)| *t == kind)
        .map(|(_, fields)| {
            fields
                .iter()
                .map(|(name, secret)| {
                    let optional = matches!(*name, "session_token")
                        || (kind == "openid_connect" && *name == "client_secret");
                    ((*name).to_owned(), *secret, !optional)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks credentials against a scheme's fields; every problem at once.
fn check_credentials(
    scheme: &Value,
    given: &Map<String, Value>,
    problems: &mut Vec<Value>,
) -> Vec<(String, String)> {
    let fields = fields_of(scheme);
    let mut out = Vec::new();
    for (name, value) in given {
        if !fields.iter().any(|(f, _, _)| f == name) {
            problems.push(
                json!({"field": format!("credentials.{name}"), "problem": format!(
                    "not a field of `{}` auth (fields: {})",
                    scheme["type"].as_str().unwrap_or_default(),
                    fields.iter().map(|(f, _, _)| f.as_str()).collect::<Vec<_>>().join(", ")
                )}),
            );
            continue;
        }
        match value.as_str() {
            Some(v) if v.len() <= 64 * 1024 => out.push((name.clone(), v.to_owned())),
            Some(_) => problems.push(
                json!({"field": format!("credentials.{name}"), "problem": "longer than 64 KiB"}),
            ),
            None => problems.push(
                json!({"field": format!("credentials.{name}"), "problem": "must be a string"}),
            ),
        }
    }
    for (name, _, required) in fields {
        if required && !given.contains_key(&name) {
            problems
                .push(json!({"field": format!("credentials.{name}"), "problem": "is required"}));
        }
    }
    out
}

fn check_settings(s: &ConnectionSettings, problems: &mut Vec<Value>) {
    if s.timeout_ms.is_some_and(|t| !(1..=300_000).contains(&t)) {
        problems.push(json!({"field": "settings.timeout_ms", "problem": "must be 1..=300000"}));
    }
    if s.max_retries.is_some_and(|r| r > 10) {
        problems.push(json!({"field": "settings.max_retries", "problem": "must be 0..=10"}));
    }
    if !["failures", "all", "none"].contains(&s.log_payloads.as_str()) {
        problems.push(
            json!({"field": "settings.log_payloads", "problem": "must be failures, all or none"}),
        );
    }
    if !LOG_LEVELS.contains(&s.log_level.as_str()) {
        problems.push(
            json!({"field": "settings.log_level", "problem": "must be error, warn, info or debug"}),
        );
    }
    if let Some(pem) = &s.tls.extra_ca_pem
        && !pem.contains("-----BEGIN CERTIFICATE-----")
    {
        problems.push(
            json!({"field": "settings.tls.extra_ca_pem", "problem": "must hold PEM certificates"}),
        );
    }
}

/// Checks the execution mode and its group or proxy.
async fn check_mode(
    core: &Core,
    tenant_id: &str,
    mode: &str,
    group: Option<&str>,
    proxy: Option<&ProxyInput>,
    problems: &mut Vec<Value>,
) -> Result<(), ApiError> {
    if !MODES.contains(&mode) {
        problems.push(
            json!({"field": "execution_mode", "problem": "must be cloud, agent_group or proxy"}),
        );
    }
    let group_problem = match (mode, group) {
        ("agent_group", None) => Some("is required in agent_group mode".to_owned()),
        ("agent_group", Some(g)) => core
            .store
            .group(tenant_id, g)
            .await?
            .is_none()
            .then(|| format!("no agent group `{g}` in your enterprise")),
        (_, Some(_)) => Some("only for agent_group mode".to_owned()),
        _ => None,
    };
    if let Some(problem) = group_problem {
        problems.push(json!({"field": "agent_group_id", "problem": problem}));
    }
    let proxy_problem = match (mode, proxy) {
        ("proxy", None) => Some(("proxy", "is required in proxy mode")),
        ("proxy", Some(p)) => (!crate::catalogue::connector::is_http_url(&p.url))
            .then_some(("proxy.url", "must be an http(s) URL")),
        (_, Some(_)) => Some(("proxy", "only for proxy mode")),
        _ => None,
    };
    if let Some((field, problem)) = proxy_problem {
        problems.push(json!({"field": field, "problem": problem}));
    }
    Ok(())
}

async fn seal_all(
    core: &Core,
    tenant_id: &str,
    id: &str,
    creds: &[(String, String)],
    proxy: Option<&ProxyInput>,
) -> Result<Vec<(String, String)>, ApiError> {
    let mut sealed = Vec::new();
    let mut fields: Vec<(String, &str)> = creds
        .iter()
        .map(|(k, v)| (format!("cred.{k}"), v.as_str()))
        .collect();
    if let Some(p) = proxy {
        if let Some(u) = &p.username {
            fields.push(("proxy.username".into(), u));
        }
        if let Some(pw) = &p.password {
            fields.push(("proxy.password".into(), pw));
        }
    }
    for (field, value) in fields {
        let s = core
            .vault
            .seal(&core.store, tenant_id, id, &field, &Secret::new(value))
            .await
            .map_err(|e| {
                tracing::error!("cannot seal a credential: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "vault_error",
                    "the credentials could not be sealed",
                )
            })?;
        sealed.push((field, s));
    }
    Ok(sealed)
}

/// Seals `creds` as the connection's credentials, replacing the stored ones
/// (proxy credentials are not part of them: they are kept).
/// New credentials sealed, with the stored proxy credentials kept: what
/// replaces a connection's secrets.
async fn sealed_credentials(
    core: &Core,
    tenant_id: &str,
    id: &str,
    creds: &[(String, String)],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut sealed = seal_all(core, tenant_id, id, creds, None).await?;
    for (field, s) in core.store.secrets(id).await? {
        if field.starts_with("proxy.") {
            sealed.push((field, s));
        }
    }
    Ok(sealed)
}

/// A connection checked and ready to store or test (nothing stored yet).
struct Checked {
    row: ConnectionRow,
    definition: Value,
    credentials: Vec<(String, String)>,
    proxy: Option<ProxyInput>,
    warning: Option<String>,
}

async fn check_request(
    core: &Core,
    p: &Principal,
    req: ConnectionRequest,
) -> Result<Checked, ApiError> {
    let entry = core
        .store
        .catalogue_entry(&p.tenant_id, false, &req.connector_id)
        .await?;
    let Some(entry) = entry else {
        // A draft of your own, or an unpublished connector: not usable.
        if core
            .store
            .connector(&p.tenant_id, &req.connector_id)
            .await?
            .is_some()
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "connector_not_published",
                "connections are made from published connectors: publish this one first",
            ));
        }
        return Err(ApiError::not_found("connector", &req.connector_id));
    };
    let version = req
        .version
        .clone()
        .unwrap_or_else(|| entry.latest_version.clone());
    let Some(v) = core.store.version(&entry.id, &version).await? else {
        return Err(ApiError::invalid(format!(
            "connector {} has no version {version}",
            entry.slug
        )));
    };
    let definition: Value = serde_json::from_str(&v.definition).unwrap_or(Value::Null);
    let schemes = definition["auth"]["schemes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut problems = Vec::new();
    let auth_type = req
        .auth_type
        .clone()
        .or_else(|| {
            schemes
                .first()
                .and_then(|s| s["type"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "none".into());
    let scheme = schemes
        .iter()
        .find(|s| s["type"] == auth_type.as_str())
        .cloned();
    let credentials = match &scheme {
        Some(s) => check_credentials(
            s,
            &req.credentials.clone().unwrap_or_default(),
            &mut problems,
        ),
        None => {
            problems.push(json!({"field": "auth_type", "problem": format!(
                "`{auth_type}` is not an auth scheme of {} (it has {})",
                entry.slug,
                schemes.iter().filter_map(|s| s["type"].as_str()).collect::<Vec<_>>().join(", ")
            )}));
            Vec::new()
        }
    };
    if let Some(url) = &req.base_url
        && !crate::catalogue::connector::is_http_url(url)
    {
        problems.push(json!({"field": "base_url", "problem": "must be an http(s) URL"}));
    }
    let settings = req.settings.clone().unwrap_or_default();
    check_settings(&settings, &mut problems);
    let mode = req.execution_mode.clone().unwrap_or_else(|| "cloud".into());
    check_mode(
        core,
        &p.tenant_id,
        &mode,
        req.agent_group_id.as_deref(),
        req.proxy.as_ref(),
        &mut problems,
    )
    .await?;
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| v.name.clone())
        .trim()
        .to_owned();
    if let Some(problem) = crate::http::name_problem(&name) {
        problems.push(json!({"field": "name", "problem": problem}));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the connection is invalid").with_details(json!(problems)));
    }
    let now = now_unix();
    Ok(Checked {
        row: ConnectionRow {
            id: crate::support::ids::new_id("con"),
            tenant_id: p.tenant_id.clone(),
            connector_id: entry.id.clone(),
            connector_version: version,
            connector_slug: entry.slug.clone(),
            name,
            auth_type,
            base_url: req.base_url.clone(),
            settings: serde_json::to_string(&settings).unwrap_or_default(),
            execution_mode: mode,
            agent_group_id: req.agent_group_id.clone(),
            proxy_url: req.proxy.as_ref().map(|p| p.url.clone()),
            status: if req.activate { "active" } else { "inactive" }.into(),
            health: "unchecked".into(),
            health_checked_at: None,
            credentials_version: 1,
            created_by: p.actor(),
            created_at: now,
            updated_at: now,
        },
        definition,
        credentials,
        proxy: req.proxy,
        warning: (entry.status == "deprecated").then(|| {
            format!(
                "{} is deprecated and leaves the catalogue on {}: {}",
                entry.slug,
                entry.deprecated_until.map(rfc3339).unwrap_or_default(),
                entry.deprecation_message.unwrap_or_default()
            )
        }),
    })
}

async fn view(
    core: &Core,
    c: ConnectionRow,
    warning: Option<String>,
) -> Result<ConnectionView, ApiError> {
    let version = core
        .store
        .version(&c.connector_id, &c.connector_version)
        .await?;
    let definition: Value = version
        .as_ref()
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or(Value::Null);
    let scheme = execute::scheme_of(&definition, &c.auth_type)
        .cloned()
        .unwrap_or(Value::Null);
    let stored: HashMap<String, String> = core.store.secrets(&c.id).await?.into_iter().collect();
    let mut credentials = HashMap::new();
    for (name, secret, _) in fields_of(&scheme) {
        let sealed = stored.get(&format!("cred.{name}"));
        let value = match (secret, sealed) {
            (false, Some(s)) => core
                .vault
                .open(&core.store, &c.tenant_id, &c.id, &format!("cred.{name}"), s)
                .await
                .ok()
                .map(|v| v.expose().to_owned()),
            _ => None,
        };
        credentials.insert(
            name,
            CredentialView {
                secret,
                set: sealed.is_some(),
                value,
            },
        );
    }
    Ok(ConnectionView {
        circuit_breaker: core
            .guards
            .view(&c.id, crate::connections::guard::policies(&definition).0),
        effective_base_url: c
            .base_url
            .clone()
            .or_else(|| definition["base_url"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        settings: serde_json::from_str(&c.settings).unwrap_or(Value::Null),
        id: c.id,
        name: c.name,
        connector_id: c.connector_id,
        connector_slug: c.connector_slug,
        connector_version: c.connector_version,
        auth_type: c.auth_type,
        base_url: c.base_url,
        execution_mode: c.execution_mode,
        agent_group_id: c.agent_group_id,
        proxy_url: c.proxy_url,
        status: c.status,
        health: c.health,
        health_checked_at: c.health_checked_at.map(rfc3339),
        credentials,
        created_by: c.created_by,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
        warning,
    })
}

async fn own(core: &Core, p: &Principal, id: &str) -> Result<ConnectionRow, ApiError> {
    core.store
        .connection(&p.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connection", id))
}

fn is_tenant_admin(p: &Principal) -> bool {
    p.role.is_admin()
}

/// Checks the caller's role on a connection: enterprise admins hold every
/// role; others need a grant of `role` (an HTTP verb, or `admin`), and the
/// `admin` grant holds every verb.
async fn authorize(
    core: &Core,
    p: &Principal,
    c: &ConnectionRow,
    role: &str,
) -> Result<(), ApiError> {
    if is_tenant_admin(p) {
        return Ok(());
    }
    if p.role.writes() && core.store.has_grant(&c.id, &p.subject(), role).await? {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        if role == "admin" {
            format!(
                "managing connection {} needs its `admin` role: an enterprise admin grants it",
                c.name
            )
        } else {
            format!(
                "{role} operations of connection {} need its `{role}` role: an enterprise admin grants it \
                 (PUT /api/v1/connections/{}/grants)",
                c.name, c.id
            )
        },
    ))
}

/// The roles a connection has: `admin` and one per HTTP verb of its operations.
fn roles_of(definition: &Value) -> Vec<String> {
    let mut roles = vec!["admin".to_owned()];
    for op in definition["operations"].as_array().into_iter().flatten() {
        if let Some(m) = op["method"].as_str()
            && !roles.iter().any(|r| r == m)
        {
            roles.push(m.to_owned());
        }
    }
    roles
}

/// `POST /api/v1/connections`
#[utoipa::path(post, path = "/api/v1/connections", tag = "connections",
    summary = "Create a connection from a published connector version (inactive unless `activate`)",
    request_body = ConnectionRequest,
    responses((status = 201, body = ConnectionView),
        (status = 422, description = "Every problem in `details`", body = crate::http::openapi::ErrorBody),
        (status = 404, body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(req): ApiJson<ConnectionRequest>,
) -> Result<Response, ApiError> {
    require_admin(&p)?;
    let checked = check_request(&core, &p, req).await?;
    let sealed = seal_all(
        &core,
        &p.tenant_id,
        &checked.row.id,
        &checked.credentials,
        checked.proxy.as_ref(),
    )
    .await?;
    let tx = core.store.begin().await?;
    tx.create_connection(&checked.row, &sealed).await?;
    record_by(
        &tx,
        &p,
        "connection.create",
        ("connection", &checked.row.id),
        json!({"name": checked.row.name, "connector": checked.row.connector_slug,
               "version": checked.row.connector_version, "mode": checked.row.execution_mode,
               "status": checked.row.status}),
    )
    .await?;
    tx.commit().await?;
    let v = view(&core, checked.row, checked.warning).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /api/v1/connections`
#[utoipa::path(get, path = "/api/v1/connections", tag = "connections", summary = "The enterprise's connections",
    responses((status = 200, body = [ConnectionView])), security(("bearer" = [])))]
pub(crate) async fn list(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Response, ApiError> {
    let limit = page_limit(page.limit)?;
    let rows = core
        .store
        .list_connections(&p.tenant_id, page.cursor_of("con_")?, limit + 1)
        .await?;
    let mut views = Vec::new();
    for r in rows {
        views.push(view(&core, r, None).await?);
    }
    Ok(paged(views, limit, "/connections", |v| v.id.clone()))
}

/// `GET /api/v1/connections/{id}`
#[utoipa::path(get, path = "/api/v1/connections/{id}", tag = "connections", summary = "One connection (secrets never shown)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
pub(crate) async fn get(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let c = own(&core, &p, &id).await?;
    Ok(Json(view(&core, c, None).await?))
}

/// `PATCH /api/v1/connections/{id}`
#[utoipa::path(patch, path = "/api/v1/connections/{id}", tag = "connections",
    summary = "Change a connection's name, base URL, settings (log level at run time) or execution mode",
    params(("id" = String, Path, description = "The resource id")), request_body = ConnectionPatch,
    responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
pub(crate) async fn update(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(patch): ApiJson<ConnectionPatch>,
) -> Result<Json<ConnectionView>, ApiError> {
    let mut c = own(&core, &p, &id).await?;
    authorize(&core, &p, &c, "admin").await?;
    let mut problems = Vec::new();
    if let Some(name) = &patch.name {
        let name = name.trim();
        if let Some(problem) = crate::http::name_problem(name) {
            problems.push(json!({"field": "name", "problem": problem}));
        }
        c.name = name.to_owned();
    }
    if let Some(base) = patch.base_url.clone() {
        if base
            .as_deref()
            .is_some_and(|u| !crate::catalogue::connector::is_http_url(u))
        {
            problems.push(json!({"field": "base_url", "problem": "must be an http(s) URL"}));
        }
        c.base_url = base;
    }
    if let Some(s) = &patch.settings {
        check_settings(s, &mut problems);
        c.settings = serde_json::to_string(s).unwrap_or_default();
    }
    let mode_changed =
        patch.execution_mode.is_some() || patch.agent_group_id.is_some() || patch.proxy.is_some();
    if mode_changed {
        let mode = patch
            .execution_mode
            .clone()
            .unwrap_or(c.execution_mode.clone());
        let group = patch.agent_group_id.clone().or(if mode == "agent_group" {
            c.agent_group_id.clone()
        } else {
            None
        });
        check_mode(
            &core,
            &p.tenant_id,
            &mode,
            group.as_deref(),
            patch.proxy.as_ref(),
            &mut problems,
        )
        .await?;
        if mode == "proxy" && patch.proxy.is_none() && c.proxy_url.is_some() {
            problems.retain(|p| p["field"] != "proxy");
        }
        c.execution_mode = mode.clone();
        c.agent_group_id = group.filter(|_| mode == "agent_group");
        if mode != "proxy" {
            c.proxy_url = None;
        } else if let Some(px) = &patch.proxy {
            c.proxy_url = Some(px.url.clone());
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the change is invalid").with_details(json!(problems)));
    }
    c.updated_at = now_unix();
    let proxy_secrets = match &patch.proxy {
        Some(px) if px.username.is_some() || px.password.is_some() => {
            seal_all(&core, &p.tenant_id, &c.id, &[], Some(px)).await?
        }
        _ => Vec::new(),
    };
    let tx = core.store.begin().await?;
    tx.update_connection(&c).await?;
    for (field, sealed) in proxy_secrets {
        tx.set_secret(&c.id, &field, &sealed).await?;
    }
    record_by(
        &tx,
        &p,
        "connection.update",
        ("connection", &c.id),
        json!({"name": c.name, "mode": c.execution_mode, "settings": serde_json::from_str::<Value>(&c.settings).unwrap_or_default()}),
    )
    .await?;
    tx.commit().await?;
    execute::forget(&core, &c.id);
    Ok(Json(view(&core, c, None).await?))
}

/// The body of `POST /connections/{id}/move`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    /// The connector version to move to (e.g. `2.0.0`).
    version: String,
    /// Only say what would change and what stands in the way.
    #[serde(default)]
    dry_run: bool,
    /// Credentials for the new version's scheme, when it needs fields the
    /// connection has not stored (write-only; every field of the scheme).
    #[schema(value_type = Option<Object>)]
    credentials: Option<Map<String, Value>>,
}

/// What a move to another connector version changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MoveView {
    from: String,
    to: String,
    /// The computed changes between the two versions.
    changes: Vec<crate::catalogue::lifecycle::Change>,
    /// Why the move would break this connection or the orchestrations using it
    /// (empty: it is safe).
    problems: Vec<String>,
    /// Whether the connection now uses `to`.
    moved: bool,
    /// The connection after the move.
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<ConnectionView>,
}

/// What moving connection `c` to `target` (a definition) would break.
async fn move_problems(
    core: &Core,
    c: &ConnectionRow,
    target: &Value,
    version: &str,
    credentials: Option<&Map<String, Value>>,
) -> Result<Vec<String>, ApiError> {
    let mut problems = Vec::new();
    let schemes: Vec<&str> = target["auth"]["schemes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["type"].as_str())
        .collect();
    match execute::scheme_of(target, &c.auth_type) {
        None => problems.push(format!(
            "the connection authenticates with `{}`, which {version} no longer offers (it offers: {})",
            c.auth_type,
            schemes.join(", ")
        )),
        Some(scheme) if credentials.is_none() => {
            let stored: Vec<String> = core
                .store
                .secrets(&c.id)
                .await?
                .into_iter()
                .filter_map(|(f, _)| f.strip_prefix("cred.").map(str::to_owned))
                .collect();
            for (name, _, required) in fields_of(scheme) {
                if required && !stored.contains(&name) {
                    problems.push(format!(
                        "{version} needs the credential `{name}`, which the connection has not stored: \
                         send it with the move (`credentials`)"
                    ));
                }
            }
        }
        Some(scheme) => {
            let mut given = Vec::new();
            check_credentials(scheme, credentials.unwrap_or(&Map::new()), &mut given);
            problems.extend(given.iter().map(|p| {
                format!(
                    "{}: {}",
                    p["field"].as_str().unwrap_or_default(),
                    p["problem"].as_str().unwrap_or_default()
                )
            }));
        }
    }
    // The steps of this tenant's orchestrations that use the connection.
    let operations: Vec<&Value> = target["operations"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for (o, d) in core
        .store
        .orchestrations_with_definitions(&c.tenant_id, None, 10_000)
        .await?
    {
        if o.status == "archived" {
            continue;
        }
        let d: Value = serde_json::from_str(&d).unwrap_or_default();
        let mut steps = Vec::new();
        crate::http::orchestrations::steps_where(&d["steps"], "$.steps", &mut steps, &|s| {
            s["connection"] == c.name.as_str() || s["connection"] == c.id.as_str()
        });
        for (path, step) in steps {
            let op_id = step["operation"].as_str().unwrap_or_default();
            let Some(op) = operations.iter().find(|op| op["id"] == op_id) else {
                problems.push(format!(
                    "orchestration `{}` ({path}) uses operation `{op_id}`, which {version} removes",
                    o.name
                ));
                continue;
            };
            let kind = step["type"].as_str().unwrap_or_default();
            if kind.starts_with("map_") && target["mappings"].get(op_id).is_none() {
                problems.push(format!(
                    "orchestration `{}` ({path}) maps `{op_id}` onto the CDM, and {version} has no mapping for it",
                    o.name
                ));
            }
            if kind == "call" {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default();
                    if p["required"] == true
                        && p.get("default").is_none()
                        && step["parameters"].get(name).is_none()
                    {
                        problems.push(format!(
                            "orchestration `{}` ({path}) calls `{op_id}` without `{name}`, which {version} requires",
                            o.name
                        ));
                    }
                }
            }
        }
    }
    Ok(problems)
}

/// `POST /api/v1/connections/{id}/move`
#[utoipa::path(post, path = "/api/v1/connections/{id}/move", tag = "connections",
    summary = "Move a connection to another version of its connector (after a major version notice)",
    description = "Answers the computed changes between the versions and what the move would break: an auth \
        scheme the new version dropped, credentials it needs, operations, mappings or parameters that the \
        tenant's orchestrations use. A move that would break something is refused (409 with the problems); \
        `dry_run` only reports.",
    params(("id" = String, Path, description = "The resource id")), request_body = MoveRequest,
    responses((status = 200, body = MoveView), (status = 409, description = "Same version, or the move would break the connection (`incompatible_version`, problems in `details`)", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such connection or version", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn move_version(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> Result<Json<MoveView>, ApiError> {
    let c = own(&core, &p, &id).await?;
    authorize(&core, &p, &c, "admin").await?;
    let to = req.version.trim().to_owned();
    if crate::catalogue::lifecycle::Version::parse(&to).is_none() {
        return Err(ApiError::invalid(format!(
            "version `{to}` is not a version like 2.0.0"
        )));
    }
    if to == c.connector_version {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "same_version",
            format!("the connection already uses {to}"),
        ));
    }
    let target = core
        .store
        .version(&c.connector_id, &to)
        .await?
        .ok_or_else(|| ApiError::not_found("connector version", &to))?;
    let current = core
        .store
        .version(&c.connector_id, &c.connector_version)
        .await?;
    let old: Value = current
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or_default();
    let new: Value = serde_json::from_str(&target.definition).unwrap_or_default();
    let changes = crate::catalogue::lifecycle::diff(&old, &new);
    let problems = move_problems(&core, &c, &new, &to, req.credentials.as_ref()).await?;
    let mut answer = MoveView {
        from: c.connector_version.clone(),
        to: to.clone(),
        changes,
        problems,
        moved: false,
        connection: None,
    };
    if req.dry_run {
        return Ok(Json(answer));
    }
    if !answer.problems.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "incompatible_version",
            format!(
                "moving to {to} would break the connection: {}",
                answer.problems.join("; ")
            ),
        )
        .with_details(json!({"problems": answer.problems, "changes": answer.changes})));
    }
    let sealed = if let Some(given) = &req.credentials {
        let scheme = execute::scheme_of(&new, &c.auth_type)
            .cloned()
            .unwrap_or_default();
        let creds = check_credentials(&scheme, given, &mut Vec::new());
        Some(sealed_credentials(&core, &p.tenant_id, &id, &creds).await?)
    } else {
        None
    };
    let tx = core.store.begin().await?;
    if let Some(sealed) = &sealed {
        tx.replace_secrets(&p.tenant_id, &id, sealed, now_unix())
            .await?;
    }
    tx.set_connection_version(&p.tenant_id, &id, &to, now_unix())
        .await?;
    record_by(
        &tx,
        &p,
        "connection.move_version",
        ("connection", &id),
        json!({"from": answer.from, "to": to, "credentials_replaced": req.credentials.is_some()}),
    )
    .await?;
    tx.commit().await?;
    execute::forget(&core, &id);
    let c = own(&core, &p, &id).await?;
    answer.moved = true;
    answer.connection = Some(view(&core, c, None).await?);
    Ok(Json(answer))
}

/// `DELETE /api/v1/connections/{id}`
#[utoipa::path(delete, path = "/api/v1/connections/{id}", tag = "connections",
    summary = "Delete a connection with its credentials and health history (the call log keeps its name)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = [])))]
pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let c = own(&core, &p, &id).await?;
    authorize(&core, &p, &c, "admin").await?;
    execute::forget(&core, &id);
    let tx = core.store.begin().await?;
    if !tx.delete_connection(&p.tenant_id, &id).await? {
        return Err(ApiError::not_found("connection", &id));
    }
    record_by(
        &tx,
        &p,
        "connection.delete",
        ("connection", &id),
        Value::Null,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The answer of activate and deactivate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateChange {
    connection: ConnectionView,
    /// Active orchestrations that use this connection (they cannot run it while inactive).
    active_orchestrations: Vec<String>,
}

async fn set_status(
    core: &Core,
    p: &Principal,
    id: &str,
    status: &str,
) -> Result<Json<StateChange>, ApiError> {
    require_admin(p)?;
    let mut c = own(core, p, id).await?;
    c.status = status.into();
    c.updated_at = now_unix();
    let action = if status == "active" {
        "connection.activate"
    } else {
        "connection.deactivate"
    };
    let tx = core.store.begin().await?;
    tx.update_connection(&c).await?;
    record_by(&tx, p, action, ("connection", id), Value::Null).await?;
    tx.commit().await?;
    execute::forget(core, id);
    let c_for_use = c.clone();
    Ok(Json(StateChange {
        connection: view(core, c, None).await?,
        active_orchestrations: crate::http::orchestrations::using_connection(
            core,
            &p.tenant_id,
            &c_for_use,
        )
        .await?,
    }))
}

/// `POST /api/v1/connections/{id}/activate`
#[utoipa::path(post, path = "/api/v1/connections/{id}/activate", tag = "connections", summary = "Activate: calls allowed, health monitored",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = StateChange)),
    security(("bearer" = [])))]
pub(crate) async fn activate(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StateChange>, ApiError> {
    set_status(&core, &p, &id, "active").await
}

/// `POST /api/v1/connections/{id}/deactivate`
#[utoipa::path(post, path = "/api/v1/connections/{id}/deactivate", tag = "connections",
    summary = "Deactivate: no new calls, no health checks; credentials kept",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = StateChange)),
    security(("bearer" = [])))]
pub(crate) async fn deactivate(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StateChange>, ApiError> {
    set_status(&core, &p, &id, "inactive").await
}

/// `PUT /api/v1/connections/{id}/credentials`
#[utoipa::path(put, path = "/api/v1/connections/{id}/credentials", tag = "connections",
    summary = "Rotate credentials: replaces every field (audited; cached tokens are dropped)",
    params(("id" = String, Path, description = "The resource id")), request_body = CredentialsRequest,
    responses((status = 200, body = ConnectionView)),
    security(("bearer" = [])))]
pub(crate) async fn rotate_credentials(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CredentialsRequest>,
) -> Result<Json<ConnectionView>, ApiError> {
    let c = own(&core, &p, &id).await?;
    authorize(&core, &p, &c, "admin").await?;
    // The stored credentials are not opened: rotation must also repair ones
    // that no longer decrypt.
    let resolved = execute::resolve_definition(&core, c.clone()).await?;
    let mut problems = Vec::new();
    let creds = check_credentials(&resolved.scheme(), &req.credentials, &mut problems);
    if !problems.is_empty() {
        return Err(ApiError::invalid("the credentials are invalid").with_details(json!(problems)));
    }
    let sealed = sealed_credentials(&core, &p.tenant_id, &id, &creds).await?;
    let tx = core.store.begin().await?;
    tx.replace_secrets(&p.tenant_id, &id, &sealed, now_unix())
        .await?;
    record_by(
        &tx,
        &p,
        "connection.rotate_credentials",
        ("connection", &id),
        json!({"fields": creds.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()}),
    )
    .await?;
    tx.commit().await?;
    execute::forget(&core, &id);
    let c = own(&core, &p, &id).await?;
    Ok(Json(view(&core, c, None).await?))
}

/// `POST /api/v1/connections/{id}/test`
#[utoipa::path(post, path = "/api/v1/connections/{id}/test", tag = "connections",
    summary = "Test Connection with the saved credentials: authenticate and run the health check",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = TestOutcome)),
    security(("bearer" = [])))]
pub(crate) async fn test_saved(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TestOutcome>, ApiError> {
    require_operator(&p)?;
    let c = own(&core, &p, &id).await?;
    let resolved = execute::resolve(&core, c).await?;
    authorize(&core, &p, &resolved.row, &health_method(&resolved)).await?;
    Ok(Json(
        execute::test(&core, &resolved, &p.actor(), true).await,
    ))
}

/// `POST /api/v1/connections/test`
#[utoipa::path(post, path = "/api/v1/connections/test", tag = "connections",
    summary = "Test Connection with credentials typed into the form, before saving (nothing is stored)",
    request_body = ConnectionRequest,
    responses((status = 200, body = TestOutcome), (status = 404, body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn test_unsaved(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiJson(req): ApiJson<ConnectionRequest>,
) -> Result<Json<TestOutcome>, ApiError> {
    require_admin(&p)?;
    let checked = check_request(&core, &p, req).await?;
    let resolved = Resolved {
        // A throwaway id: its token cache entry is never reused.
        row: ConnectionRow {
            id: crate::support::ids::new_id("contest"),
            ..checked.row
        },
        definition: checked.definition,
        credentials: checked
            .credentials
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect(),
        proxy: checked.proxy.and_then(|px| {
            px.username
                .map(|u| (u, Secret::new(px.password.unwrap_or_default())))
        }),
    };
    Ok(Json(
        execute::test(&core, &resolved, &p.actor(), false).await,
    ))
}

fn health_method(c: &Resolved) -> String {
    let id = c.definition["health_check"].as_str().unwrap_or_default();
    c.operation(id)
        .and_then(|o| o["method"].as_str())
        .unwrap_or("GET")
        .to_owned()
}

/// One grant of a role on a connection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `user:usr_…` or `token:tok_…`.
    subject: String,
    /// `admin` or an HTTP verb of the connector's operations.
    role: String,
}

/// A connection's roles and who holds them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantsView {
    /// `admin` plus one role per HTTP verb the operations use.
    roles: Vec<String>,
    grants: Vec<Grant>,
}

/// The body of `PUT /connections/{id}/grants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsRequest {
    /// Every grant (replaces the list).
    grants: Vec<Grant>,
}

/// `GET /api/v1/connections/{id}/grants`
#[utoipa::path(get, path = "/api/v1/connections/{id}/grants", tag = "connections",
    summary = "A connection's roles (admin, one per HTTP verb) and who holds them",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = GrantsView)),
    security(("bearer" = [])))]
pub(crate) async fn grants(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<GrantsView>, ApiError> {
    let c = own(&core, &p, &id).await?;
    let resolved = execute::resolve(&core, c).await?;
    let grants = core.store.grants(&id).await?;
    Ok(Json(GrantsView {
        roles: roles_of(&resolved.definition),
        grants: grants
            .into_iter()
            .map(|(subject, role)| Grant { subject, role })
            .collect(),
    }))
}

/// `PUT /api/v1/connections/{id}/grants`
#[utoipa::path(put, path = "/api/v1/connections/{id}/grants", tag = "connections",
    summary = "Set who holds the connection's roles (enterprise admins and the connection's admins)",
    description = "Enterprise admins hold every role on every connection. Others need the HTTP verb's role to invoke \
        operations of that verb, and `admin` to manage the connection (it includes every verb); viewers never invoke.",
    params(("id" = String, Path, description = "The resource id")), request_body = GrantsRequest,
    responses((status = 200, body = GrantsView)),
    security(("bearer" = [])))]
pub(crate) async fn set_grants(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<GrantsRequest>,
) -> Result<Json<GrantsView>, ApiError> {
    let c = own(&core, &p, &id).await?;
    authorize(&core, &p, &c, "admin").await?;
    let resolved = execute::resolve(&core, c).await?;
    let roles = roles_of(&resolved.definition);
    let mut problems = Vec::new();
    let mut grants: Vec<(String, String)> = Vec::new();
    for (i, g) in req.grants.iter().enumerate() {
        if !roles.contains(&g.role) {
            problems.push(json!({"field": format!("grants[{i}].role"), "problem": format!("`{}` is not one of {}", g.role, roles.join(", "))}));
        }
        if !core.store.subject_exists(&p.tenant_id, &g.subject).await? {
            problems.push(json!({"field": format!("grants[{i}].subject"), "problem": format!("`{}` is no user (user:usr_…) or API token (token:tok_…) of your enterprise", g.subject)}));
        }
        let pair = (g.subject.clone(), g.role.clone());
        if !grants.contains(&pair) {
            grants.push(pair);
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid("the grants are invalid").with_details(json!(problems)));
    }
    let tx = core.store.begin().await?;
    tx.replace_grants(&id, &grants).await?;
    record_by(
        &tx,
        &p,
        "connection.grants",
        ("connection", &id),
        json!({"grants": grants.iter().map(|(s, r)| json!({"subject": s, "role": r})).collect::<Vec<_>>()}),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(GrantsView {
        roles,
        grants: grants
            .into_iter()
            .map(|(subject, role)| Grant { subject, role })
            .collect(),
    }))
}

/// One health check as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthView {
    at: String,
    status: String,
    outcome: String,
    detail: String,
    duration_ms: i64,
}

/// `GET /api/v1/connections/{id}/health`
#[utoipa::path(get, path = "/api/v1/connections/{id}/health", tag = "connections", summary = "Health history, newest first (up to 500)",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = [HealthView])),
    security(("bearer" = [])))]
pub(crate) async fn health(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Vec<HealthView>>, ApiError> {
    own(&core, &p, &id).await?;
    let rows = core.store.health_history(&id, 500).await?;
    Ok(Json(
        rows.into_iter()
            .map(|h| HealthView {
                at: rfc3339(h.at),
                status: h.status,
                outcome: h.outcome,
                detail: h.detail,
                duration_ms: h.duration_ms,
            })
            .collect(),
    ))
}

/// `POST /api/v1/connections/{id}/health/check`
#[utoipa::path(post, path = "/api/v1/connections/{id}/health/check", tag = "connections", summary = "Run a health check now and record it",
    params(("id" = String, Path, description = "The resource id")),
    responses((status = 200, body = HealthView)),
    security(("bearer" = [])))]
pub(crate) async fn check_now(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<HealthView>, ApiError> {
    require_operator(&p)?;
    let c = own(&core, &p, &id).await?;
    let resolved = execute::resolve_definition(&core, c.clone()).await?;
    authorize(&core, &p, &c, &health_method(&resolved)).await?;
    if c.status != "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "connection_inactive",
            "only active connections are health-checked: activate it first",
        ));
    }
    let h = execute::check_health(&core, c).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the health check could not run",
        )
    })?;
    Ok(Json(HealthView {
        at: rfc3339(h.at),
        status: h.status,
        outcome: h.outcome,
        detail: h.detail,
        duration_ms: h.duration_ms,
    }))
}

/// `POST /api/v1/connections/{id}/operations/{operation}/invoke`
#[utoipa::path(post, path = "/api/v1/connections/{id}/operations/{operation}/invoke", tag = "connections",
    summary = "Invoke an operation: the normalized result, with where it ran",
    description = "The answer is 200 with the normalized result (`ok`, `method`, `url`, `status`, `statusText`, `headers`, `body`, \
        `text`, `parseError`, `timing`, `attempts`, `agentId`, `error`, `ranOn`) whatever the system answered; \
        with `max_pages`, the operation's pagination is followed and `pages` holds every page's body.",
    params(("id" = String, Path, description = "The connection id"), ("operation" = String, Path, description = "The operation id")),
    request_body = InvokeBody,
    responses((status = 200, body = Object), (status = 409, description = "The connection is inactive", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Bad parameters: every problem in `details`", body = crate::http::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn invoke(
    State(core): State<Arc<Core>>,
    p: Principal,
    tenant: Option<axum::Extension<crate::store::Tenant>>,
    ApiPath((id, operation)): ApiPath<(String, String)>,
    raw: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    require_operator(&p)?;
    // The body is optional: an operation without parameters needs none.
    let body: InvokeBody = crate::http::optional_json_body(&raw)?.unwrap_or_default();
    let resolved = execute::resolve_cached(&core, &p.tenant_id, &id).await?;
    if resolved.row.status != "active" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "connection_inactive",
            format!(
                "connection {} is inactive: activate it to make calls",
                resolved.row.name
            ),
        ));
    }
    let Some(op) = resolved.operation(&operation).cloned() else {
        return Err(ApiError::not_found("operation", &operation));
    };
    authorize(
        &core,
        &p,
        &resolved.row,
        op["method"].as_str().unwrap_or("GET"),
    )
    .await?;
    if let Some(pages) = body.max_pages
        && !(1..=100).contains(&pages)
    {
        return Err(ApiError::invalid("max_pages must be 1..=100"));
    }
    if let Some(tenant) = &tenant {
        core.quotas.check_storage(&tenant.0)?;
        core.quotas.take_call(&core.store, &tenant.0).await?;
    }
    let request = match execute::prepare(&core, &resolved, &op, &body.parameters).await {
        Ok(r) => r,
        Err(execute::Unprepared::Invalid(problems)) => {
            return Err(
                ApiError::invalid(format!("the call of `{operation}` is invalid")).with_details(
                    json!(
                        problems
                            .iter()
                            .map(|p| json!({"problem": p}))
                            .collect::<Vec<_>>()
                    ),
                ),
            );
        }
        // A call needed first (OpenID Connect discovery) failed: the
        // normalized result says how.
        Err(execute::Unprepared::Failed(result)) => {
            let out = dibop_protocol::InvokeResult {
                result: *result,
                rotated_refresh_token: None,
                token_fetches: 0,
            };
            return Ok(Json(execute::result_json(
                out,
                "",
                std::time::Duration::ZERO,
            )));
        }
    };
    let max_pages = body.max_pages.unwrap_or(1);
    let (out, ran_on, elapsed) =
        execute::run(&core, &resolved, &operation, request, &p.actor(), true).await;
    if max_pages <= 1 {
        return Ok(Json(execute::result_json(out, &ran_on, elapsed)));
    }
    let pages = crate::connections::paginate::follow(
        &core,
        &resolved,
        &op,
        &operation,
        &body.parameters,
        out,
        max_pages,
        &p.actor(),
    )
    .await;
    Ok(Json(pages))
}

/// `?connection_id=&operation=&outcome=&error_class=&since=&until=&limit=&cursor=` of the call log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CallQuery {
    connection_id: Option<String>,
    operation: Option<String>,
    outcome: Option<String>,
    error_class: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// One call with its bodies (`GET /api-calls/{id}`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiCallDetailView {
    #[serde(flatten)]
    call: ApiCallView,
    /// What was sent (JSON when it was JSON), capped at 16 KiB; absent for
    /// calls without a body and once the payload retention has passed.
    #[schema(value_type = Option<Object>)]
    request_body: Option<Value>,
    /// What came back, the same way.
    #[schema(value_type = Option<Object>)]
    response_body: Option<Value>,
    /// Whether a body was cut at the cap.
    request_truncated: bool,
    response_truncated: bool,
    /// Whether the bodies were kept: they are removed after a shorter time
    /// than the call record (at most 7 days).
    payload_kept: bool,
}

fn call_view(
    c: crate::store::ApiCallRow,
    keys: Option<&std::collections::BTreeSet<String>>,
) -> ApiCallView {
    ApiCallView {
        at: rfc3339(c.at),
        duration_ms: c.duration_us as f64 / 1000.0,
        ok: c.ok != 0,
        id: c.id,
        connection_id: c.connection_id,
        connection_name: c.connection_name,
        connector_slug: c.connector_slug,
        operation: c.operation,
        method: c.method,
        url: match keys {
            Some(k) => crate::cdm::pii::redact_url(&c.url, k),
            None => c.url,
        },
        status: c.status,
        error_class: c.error_class,
        response_bytes: c.response_bytes,
        attempts: c.attempts,
        ran_on: c.ran_on,
        actor: c.actor,
    }
}

/// `since`/`until` of the call log: an RFC 3339 time or a date.
fn time_bound(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            crate::catalogue::publishing::parse_date(v.trim()).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{name} `{v}` is not a time: use RFC 3339 (2026-12-01T09:00:00Z) or a date (2026-12-01)"
                ))
            })
        })
        .transpose()
}

/// `GET /api/v1/api-calls/{id}`
#[utoipa::path(get, path = "/api/v1/api-calls/{id}", tag = "connections", summary = "One call of the API-call log, with its request and response bodies",
    params(("id" = String, Path, description = "The call id")),
    responses((status = 200, body = ApiCallDetailView)),
    security(("bearer" = [])))]
pub(crate) async fn get_call(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ApiCallDetailView>, ApiError> {
    core.calls.flush(&core.store).await;
    let (call, payload) = core
        .store
        .call(&p.tenant_id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("call", &id))?;
    let keys = if crate::cdm::pii::can_view(&p) {
        None
    } else {
        Some(crate::cdm::pii::keys_for(&core, &p.tenant_id).await)
    };
    let body = |text: Option<String>| {
        text.map(|t| {
            let mut v = serde_json::from_str::<Value>(&t).unwrap_or(Value::String(t));
            if let Some(k) = &keys {
                crate::cdm::pii::redact(&mut v, k);
            }
            v
        })
    };
    let payload = payload.unwrap_or_default();
    let kept = !payload.call_id.is_empty();
    Ok(Json(ApiCallDetailView {
        call: call_view(call, keys.as_deref()),
        request_truncated: payload.request_truncated != 0,
        response_truncated: payload.response_truncated != 0,
        request_body: body(payload.request_body),
        response_body: body(payload.response_body),
        payload_kept: kept,
    }))
}

/// One entry of the API-call log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiCallView {
    id: String,
    at: String,
    connection_id: String,
    connection_name: String,
    connector_slug: String,
    operation: String,
    method: String,
    /// Without credentials.
    url: String,
    status: Option<i64>,
    ok: bool,
    error_class: Option<String>,
    duration_ms: f64,
    response_bytes: i64,
    attempts: i64,
    /// `cloud` or the agent id.
    ran_on: String,
    actor: String,
}

/// `GET /api/v1/api-calls`
#[utoipa::path(get, path = "/api/v1/api-calls", tag = "connections", summary = "The API-call log, newest first",
    params(("connection_id" = Option<String>, Query, description = "One connection"),
        ("operation" = Option<String>, Query, description = "One operation id"),
        ("outcome" = Option<String>, Query, description = "ok or failed"),
        ("error_class" = Option<String>, Query, description = "e.g. timeout, auth_failure"),
        ("since" = Option<String>, Query, description = "Calls at or after this time (RFC 3339 or a date)"),
        ("until" = Option<String>, Query, description = "Calls before this time (RFC 3339 or a date)"),
        ("limit" = Option<i64>, Query, description = "1..=500, default 100"),
        ("cursor" = Option<String>, Query, description = "From the previous page's Link header")),
    responses((status = 200, body = [ApiCallView])),
    security(("bearer" = [])))]
pub(crate) async fn list_calls(
    State(core): State<Arc<Core>>,
    p: Principal,
    ApiQuery(q): ApiQuery<CallQuery>,
) -> Result<Response, ApiError> {
    // This node's buffered calls first, so a caller sees its own calls.
    core.calls.flush(&core.store).await;
    let limit = page_limit(q.limit)?;
    if let Some(o) = &q.outcome
        && !matches!(o.as_str(), "ok" | "failed")
    {
        return Err(ApiError::invalid("outcome must be ok or failed"));
    }
    let page = crate::http::Page {
        limit: q.limit,
        cursor: q.cursor.clone(),
        group_id: None,
    };
    let since = time_bound("since", q.since.as_deref())?;
    let until = time_bound("until", q.until.as_deref())?;
    let filter = ApiCallFilter {
        connection_id: q.connection_id,
        operation: q.operation,
        outcome: q.outcome,
        error_class: q.error_class,
        before: page.cursor_of("call_")?.map(str::to_owned),
        since,
        until,
    };
    let rows = core
        .store
        .list_calls(&p.tenant_id, &filter, limit + 1)
        .await?;
    let keys = if crate::cdm::pii::can_view(&p) {
        None
    } else {
        Some(crate::cdm::pii::keys_for(&core, &p.tenant_id).await)
    };
    let views: Vec<ApiCallView> = rows
        .into_iter()
        .map(|c| call_view(c, keys.as_deref()))
        .collect();
    Ok(paged(views, limit, "/api-calls", |c| c.id.clone()))
}

/// Creates a connection from a request body as `dibop dev` (or another
/// trusted caller) does; one of that name is pointed at the body's base URL
/// and agent group and activated instead. Returns its id.
pub async fn ensure(core: &Core, tenant_id: &str, body: Value) -> anyhow::Result<String> {
    let req: ConnectionRequest = serde_json::from_value(body)?;
    let name = req.name.clone().unwrap_or_default();
    if let Some(mut existing) = core
        .store
        .list_connections(tenant_id, None, 500)
        .await?
        .into_iter()
        .find(|c| c.name == name)
    {
        existing.base_url = req.base_url.clone();
        existing.agent_group_id = req.agent_group_id.clone();
        existing.status = "active".into();
        existing.updated_at = now_unix();
        core.store.update_connection(&existing).await?;
        return Ok(existing.id);
    }
    let p = Principal {
        tenant_id: tenant_id.to_owned(),
        role: crate::identity::Role::EnterpriseAdmin,
        token_id: "dibop-dev".into(),
        user_id: None,
        view_pii: None,
    };
    let checked = check_request(core, &p, req)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the connection: {e:?}"))?;
    let sealed = seal_all(core, tenant_id, &checked.row.id, &checked.credentials, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot seal the credentials: {e:?}"))?;
    core.store.create_connection(&checked.row, &sealed).await?;
    Ok(checked.row.id)
}

/// This area's routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> super::Routes {
    super::Routes::new()
        .routes(utoipa_axum::routes!(create, list))
        .routes(utoipa_axum::routes!(get, update, delete))
        .routes(utoipa_axum::routes!(move_version))
        .routes(utoipa_axum::routes!(activate))
        .routes(utoipa_axum::routes!(deactivate))
        .routes(utoipa_axum::routes!(rotate_credentials))
        .routes(utoipa_axum::routes!(test_saved))
        .routes(utoipa_axum::routes!(test_unsaved))
        .routes(utoipa_axum::routes!(grants, set_grants))
        .routes(utoipa_axum::routes!(health))
        .routes(utoipa_axum::routes!(check_now))
        .routes(utoipa_axum::routes!(invoke))
        .routes(utoipa_axum::routes!(get_call))
        .routes(utoipa_axum::routes!(list_calls))
}
