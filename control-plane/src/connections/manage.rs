//! Managing connections: one enterprise's configured link to one external
//! system, made from a published connector version. The rules the API and
//! the console share: what a valid connection is, who may change it,
//! sealing its credentials, Test Connection, activation, rotation, moving
//! to another connector version, grants and health history.
//!
//! Credentials are write-only: each field is sealed by the vault with the
//! tenant, the connection and the field as associated data; views show
//! non-secret fields (a user name, a client id) and only whether a secret
//! one is set. A connection is created inactive unless `activate` is true;
//! only active connections take calls and are health-checked.

use std::collections::HashMap;

use dibop_runtime::support::rfc3339;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ConnectionError;
use super::execute::{self, ConnectionSettings, Resolved, TestOutcome};
use crate::Core;
use crate::catalogue::definition::{AuthScheme, CredentialField, Definition};
use crate::identity::Principal;
use crate::identity::audit::record_by;
use crate::store::{ConnectionRow, StoreError, now_unix};
use crate::vault::Secret;

const MODES: [&str; 3] = ["cloud", "agent_group", "proxy"];
const LOG_LEVELS: [&str; 4] = ["error", "warn", "info", "debug"];

/// The body of `POST /connections` and `POST /connections/test`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// A connector of the catalogue (global or your enterprise's).
    pub connector_id: String,
    /// Its version; default: the newest.
    #[serde(default)]
    pub version: Option<String>,
    /// Default: the connector's name.
    #[serde(default)]
    pub name: Option<String>,
    /// One of the connector's auth scheme types; default: its first.
    #[serde(default)]
    pub auth_type: Option<String>,
    /// Credential fields of the scheme (`{"api_key": "…"}`); write-only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
    /// Overrides the connector's base URL (sandbox, production, region).
    #[serde(default)]
    pub base_url: Option<String>,
    /// Timeout, retries, log level, TLS.
    #[serde(default)]
    pub settings: Option<ConnectionSettings>,
    /// `cloud` (default), `agent_group` or `proxy`.
    #[serde(default)]
    pub execution_mode: Option<String>,
    /// For `agent_group`.
    #[serde(default)]
    pub agent_group_id: Option<String>,
    /// For `proxy`.
    #[serde(default)]
    pub proxy: Option<ProxyInput>,
    /// Save & Activate.
    #[serde(default)]
    pub activate: bool,
}

/// An HTTP proxy for `proxy` mode.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyInput {
    /// `http://proxy.example:3128`.
    pub url: String,
    /// Proxy user (optional).
    #[serde(default)]
    pub username: Option<String>,
    /// Proxy password (write-only).
    #[serde(default)]
    pub password: Option<String>,
}

/// The body of `PATCH /connections/{id}`: what to change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPatch {
    #[serde(default)]
    pub name: Option<String>,
    /// `null` clears the override.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Option<String>>,
    #[serde(default)]
    pub settings: Option<ConnectionSettings>,
    #[serde(default)]
    pub execution_mode: Option<String>,
    #[serde(default)]
    pub agent_group_id: Option<String>,
    #[serde(default)]
    pub proxy: Option<ProxyInput>,
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
    pub credentials: Map<String, Value>,
}

/// A credential field as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    /// Whether it is a secret (never shown).
    pub secret: bool,
    /// Whether a value is stored.
    pub set: bool,
    /// The value of a non-secret field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A connection.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub name: String,
    pub connector_id: String,
    pub connector_slug: String,
    pub connector_version: String,
    pub auth_type: String,
    pub base_url: Option<String>,
    /// The URL calls go to (the override or the connector's).
    pub effective_base_url: String,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub execution_mode: String,
    pub agent_group_id: Option<String>,
    pub proxy_url: Option<String>,
    /// `inactive` or `active`.
    pub status: String,
    /// `unchecked`, `healthy`, `degraded` or `offline`.
    pub health: String,
    pub health_checked_at: Option<String>,
    pub credentials: HashMap<String, CredentialView>,
    /// The connector's circuit breaker for this connection (absent when the
    /// connector declares none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<crate::connections::guard::BreakerView>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    /// Present when the connector version is deprecated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// (name, secret, required) of every credential field of a scheme.
pub fn fields_of(scheme: &Value) -> Vec<(String, bool, bool)> {
    AuthScheme::deserialize(scheme)
        .map(|s| {
            s.credential_fields()
                .into_iter()
                .map(|f| (f.name, f.secret, f.required))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks credentials against a scheme's fields; every problem at once.
fn check_credentials(
    scheme: &AuthScheme,
    given: &Map<String, Value>,
    problems: &mut Vec<Value>,
) -> Vec<(String, String)> {
    let fields: Vec<(String, bool, bool)> = scheme
        .credential_fields()
        .into_iter()
        .map(|f| (f.name, f.secret, f.required))
        .collect();
    let mut out = Vec::new();
    for (name, value) in given {
        if !fields.iter().any(|(f, _, _)| f == name) {
            problems.push(
                json!({"field": format!("credentials.{name}"), "problem": format!(
                    "not a field of `{}` auth (fields: {})",
                    scheme.kind.as_str(),
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

/// Credentials given as `agent-secret:NAME` (a secret the relay agent keeps,
/// see `dibop_runtime::call::secrets`): a valid name, and only where a
/// relay agent makes the calls.
fn agent_secret_problems(creds: &[(String, String)], mode: &str, problems: &mut Vec<Value>) {
    use dibop_runtime::call::secrets;
    for (field, value) in creds {
        let Some(name) = value.strip_prefix(secrets::PREFIX) else {
            continue;
        };
        let problem = match secrets::name_problem(name) {
            Some(p) => format!("`{}{name}`: the secret's name {p}", secrets::PREFIX),
            None if mode != "agent_group" => format!(
                "`{}{name}` names a secret kept by a relay agent: use the relay group mode \
                 (execution_mode agent_group)",
                secrets::PREFIX
            ),
            None => continue,
        };
        problems.push(json!({"field": format!("credentials.{field}"), "problem": problem}));
    }
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
) -> Result<(), ConnectionError> {
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
) -> Result<Vec<(String, String)>, ConnectionError> {
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
                ConnectionError::Vault
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
) -> Result<Vec<(String, String)>, ConnectionError> {
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
    pub row: ConnectionRow,
    pub definition: Definition,
    pub credentials: Vec<(String, String)>,
    pub proxy: Option<ProxyInput>,
    pub warning: Option<String>,
}

async fn check_request(
    core: &Core,
    p: &Principal,
    req: ConnectionRequest,
) -> Result<Checked, ConnectionError> {
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
            return Err(ConnectionError::conflict(
                "connector_not_published",
                "connections are made from published connectors: publish this one first",
            ));
        }
        return Err(ConnectionError::not_found("connector", &req.connector_id));
    };
    let version = req
        .version
        .clone()
        .unwrap_or_else(|| entry.latest_version.clone());
    let Some(v) = core.store.version(&entry.id, &version).await? else {
        return Err(ConnectionError::invalid(format!(
            "connector {} has no version {version}",
            entry.slug
        )));
    };
    let definition = Definition::stored(&v.definition).map_err(|_| {
        ConnectionError::Internal(format!(
            "connector {} version {version} does not read",
            entry.slug
        ))
    })?;
    let schemes = &definition.auth.schemes;
    let mut problems = Vec::new();
    let auth_type = req
        .auth_type
        .clone()
        .or_else(|| schemes.first().map(|s| s.kind.as_str().to_owned()))
        .unwrap_or_else(|| "none".into());
    let scheme = definition.scheme(&auth_type);
    let credentials = match scheme {
        Some(s) => check_credentials(
            s,
            &req.credentials.clone().unwrap_or_default(),
            &mut problems,
        ),
        None => {
            problems.push(json!({"field": "auth_type", "problem": format!(
                "`{auth_type}` is not an auth scheme of {} (it has {})",
                entry.slug,
                schemes.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>().join(", ")
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
    agent_secret_problems(&credentials, &mode, &mut problems);
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| v.name.clone())
        .trim()
        .to_owned();
    if let Some(problem) = crate::domain::name_problem(&name) {
        problems.push(json!({"field": "name", "problem": problem}));
    }
    if !problems.is_empty() {
        return Err(
            ConnectionError::invalid("the connection is invalid").with_details(json!(problems))
        );
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

pub async fn view(
    core: &Core,
    c: ConnectionRow,
    warning: Option<String>,
) -> Result<ConnectionView, ConnectionError> {
    let version = core
        .store
        .version(&c.connector_id, &c.connector_version)
        .await?;
    let definition = version
        .as_ref()
        .and_then(|v| Definition::stored(&v.definition).ok());
    let fields = definition
        .as_ref()
        .and_then(|d| d.scheme(&c.auth_type))
        .map(AuthScheme::credential_fields)
        .unwrap_or_default();
    let stored: HashMap<String, String> = core.store.secrets(&c.id).await?.into_iter().collect();
    let mut credentials = HashMap::new();
    for CredentialField { name, secret, .. } in fields {
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
        circuit_breaker: core.guards.view(
            &c.id,
            definition
                .as_ref()
                .and_then(|d| crate::connections::guard::policies(d).0),
        ),
        effective_base_url: c
            .base_url
            .clone()
            .or_else(|| definition.as_ref().and_then(|d| d.base_url.clone()))
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

pub async fn own(core: &Core, p: &Principal, id: &str) -> Result<ConnectionRow, ConnectionError> {
    core.store
        .connection(&p.tenant_id, id)
        .await?
        .ok_or_else(|| ConnectionError::not_found("connection", id))
}

fn is_tenant_admin(p: &Principal) -> bool {
    p.role.is_admin()
}

/// Checks the caller's role on a connection: enterprise admins hold every
/// role; others need a grant of `role` (an HTTP verb, or `admin`), and the
/// `admin` grant holds every verb.
pub async fn authorize(
    core: &Core,
    p: &Principal,
    c: &ConnectionRow,
    role: &str,
) -> Result<(), ConnectionError> {
    if is_tenant_admin(p) {
        return Ok(());
    }
    if p.role.writes() && core.store.has_grant(&c.id, &p.subject(), role).await? {
        return Ok(());
    }
    Err(ConnectionError::Forbidden(if role == "admin" {
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
    }))
}

/// The roles a connection has: `admin` and one per HTTP verb of its operations.
/// Refuses all but enterprise admins.
fn require_admin(p: &Principal) -> Result<(), ConnectionError> {
    if p.role.is_admin() {
        Ok(())
    } else {
        Err(ConnectionError::Forbidden(format!(
            "the `{}` role cannot make changes: that needs the enterprise_admin role",
            p.role
        )))
    }
}

/// Refuses viewers: they never make calls.
fn require_operator(p: &Principal) -> Result<(), ConnectionError> {
    if p.role.writes() {
        Ok(())
    } else {
        Err(ConnectionError::Forbidden(
            "the `viewer` role cannot make calls".into(),
        ))
    }
}

/// Creates a connection (inactive unless the request activates it), its
/// credentials sealed, audited in the same transaction.
pub async fn create(
    core: &Core,
    p: &Principal,
    req: ConnectionRequest,
) -> Result<ConnectionView, ConnectionError> {
    require_admin(p)?;
    let checked = check_request(core, p, req).await?;
    let sealed = seal_all(
        core,
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
        p,
        "connection.create",
        ("connection", &checked.row.id),
        json!({"name": checked.row.name, "connector": checked.row.connector_slug,
               "version": checked.row.connector_version, "mode": checked.row.execution_mode,
               "status": checked.row.status}),
    )
    .await?;
    tx.commit().await?;
    view(core, checked.row, checked.warning).await
}

/// Checks a connection request as [`create`] would, storing and calling
/// nothing (a form's other problems shown together with its own).
pub async fn validate(
    core: &Core,
    p: &Principal,
    req: ConnectionRequest,
) -> Result<(), ConnectionError> {
    require_admin(p)?;
    check_request(core, p, req).await.map(|_| ())
}

/// A page of the caller's connections, as views.
pub async fn list(
    core: &Core,
    p: &Principal,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ConnectionView>, ConnectionError> {
    let rows = core
        .store
        .list_connections(&p.tenant_id, after, limit)
        .await?;
    let mut views = Vec::with_capacity(rows.len());
    for r in rows {
        views.push(view(core, r, None).await?);
    }
    Ok(views)
}

/// Changes a connection's name, base URL, settings or execution mode.
pub async fn update(
    core: &Core,
    p: &Principal,
    id: &str,
    patch: ConnectionPatch,
) -> Result<ConnectionView, ConnectionError> {
    let mut c = own(core, p, id).await?;
    authorize(core, p, &c, "admin").await?;
    let mut problems = Vec::new();
    if let Some(name) = &patch.name {
        let name = name.trim();
        if let Some(problem) = crate::domain::name_problem(name) {
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
            core,
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
        return Err(ConnectionError::invalid("the change is invalid").with_details(json!(problems)));
    }
    c.updated_at = now_unix();
    let proxy_secrets = match &patch.proxy {
        Some(px) if px.username.is_some() || px.password.is_some() => {
            seal_all(core, &p.tenant_id, &c.id, &[], Some(px)).await?
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
        p,
        "connection.update",
        ("connection", &c.id),
        json!({"name": c.name, "mode": c.execution_mode, "settings": serde_json::from_str::<Value>(&c.settings).unwrap_or_default()}),
    )
    .await?;
    tx.commit().await?;
    execute::forget(core, &c.id);
    view(core, c, None).await
}

/// The body of `POST /connections/{id}/move`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The connector version to move to (e.g. `2.0.0`).
    pub version: String,
    /// Only say what would change and what stands in the way.
    #[serde(default)]
    pub dry_run: bool,
    /// Credentials for the new version's scheme, when it needs fields the
    /// connection has not stored (write-only; every field of the scheme).
    #[schema(value_type = Option<Object>)]
    pub credentials: Option<Map<String, Value>>,
}

/// What a move to another connector version changes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MoveView {
    pub from: String,
    pub to: String,
    /// The computed changes between the two versions.
    pub changes: Vec<crate::catalogue::lifecycle::Change>,
    /// Why the move would break this connection or the orchestrations using it
    /// (empty: it is safe).
    pub problems: Vec<String>,
    /// Whether the connection now uses `to`.
    pub moved: bool,
    /// The connection after the move.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionView>,
}

/// What moving connection `c` to `target` (a definition) would break.
async fn move_problems(
    core: &Core,
    c: &ConnectionRow,
    target: &Definition,
    version: &str,
    credentials: Option<&Map<String, Value>>,
) -> Result<Vec<String>, ConnectionError> {
    let mut problems = Vec::new();
    let schemes: Vec<&str> = target
        .auth
        .schemes
        .iter()
        .map(|s| s.kind.as_str())
        .collect();
    match target.scheme(&c.auth_type) {
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
            for CredentialField { name, required, .. } in scheme.credential_fields() {
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
        crate::domain::steps_where(&d["steps"], "$.steps", &mut steps, &|s| {
            s["connection"] == c.name.as_str() || s["connection"] == c.id.as_str()
        });
        for (path, step) in steps {
            let op_id = step["operation"].as_str().unwrap_or_default();
            let Some(op) = target.operation(op_id) else {
                problems.push(format!(
                    "orchestration `{}` ({path}) uses operation `{op_id}`, which {version} removes",
                    o.name
                ));
                continue;
            };
            let kind = step["type"].as_str().unwrap_or_default();
            if kind.starts_with("map_") && !target.mappings.contains_key(op_id) {
                problems.push(format!(
                    "orchestration `{}` ({path}) maps `{op_id}` onto the CDM, and {version} has no mapping for it",
                    o.name
                ));
            }
            if kind == "call" {
                for p in &op.parameters {
                    let name = p.name.as_str();
                    if p.required && p.default.is_none() && step["parameters"].get(name).is_none() {
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

/// Moves a connection to another version of its connector, refusing a
/// move that would break it or the orchestrations using it (`dry_run` only
/// reports).
pub async fn move_version(
    core: &Core,
    p: &Principal,
    id: &str,
    req: MoveRequest,
) -> Result<MoveView, ConnectionError> {
    let c = own(core, p, id).await?;
    authorize(core, p, &c, "admin").await?;
    let to = req.version.trim().to_owned();
    if crate::catalogue::lifecycle::Version::parse(&to).is_none() {
        return Err(ConnectionError::invalid(format!(
            "version `{to}` is not a version like 2.0.0"
        )));
    }
    if to == c.connector_version {
        return Err(ConnectionError::conflict(
            "same_version",
            format!("the connection already uses {to}"),
        ));
    }
    let target = core
        .store
        .version(&c.connector_id, &to)
        .await?
        .ok_or_else(|| ConnectionError::not_found("connector version", &to))?;
    let current = core
        .store
        .version(&c.connector_id, &c.connector_version)
        .await?;
    let old: Value = current
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or_default();
    let new: Value = serde_json::from_str(&target.definition).unwrap_or_default();
    let new_definition = Definition::read(&new)
        .map_err(|_| ConnectionError::Internal(format!("connector version {to} does not read")))?;
    let changes = crate::catalogue::lifecycle::diff(&old, &new);
    let problems = move_problems(core, &c, &new_definition, &to, req.credentials.as_ref()).await?;
    let mut answer = MoveView {
        from: c.connector_version.clone(),
        to: to.clone(),
        changes,
        problems,
        moved: false,
        connection: None,
    };
    if req.dry_run {
        return Ok(answer);
    }
    if !answer.problems.is_empty() {
        return Err(ConnectionError::conflict(
            "incompatible_version",
            format!(
                "moving to {to} would break the connection: {}",
                answer.problems.join("; ")
            ),
        )
        .with_details(json!({"problems": answer.problems, "changes": answer.changes})));
    }
    let sealed = if let Some(given) = &req.credentials {
        let Some(scheme) = new_definition.scheme(&c.auth_type) else {
            return Err(ConnectionError::invalid(format!(
                "{to} does not offer `{}` auth",
                c.auth_type
            )));
        };
        let creds = check_credentials(scheme, given, &mut Vec::new());
        Some(sealed_credentials(core, &p.tenant_id, id, &creds).await?)
    } else {
        None
    };
    let tx = core.store.begin().await?;
    if let Some(sealed) = &sealed {
        tx.replace_secrets(&p.tenant_id, id, sealed, now_unix())
            .await?;
    }
    tx.set_connection_version(&p.tenant_id, id, &to, now_unix())
        .await?;
    record_by(
        &tx,
        p,
        "connection.move_version",
        ("connection", id),
        json!({"from": answer.from, "to": to, "credentials_replaced": req.credentials.is_some()}),
    )
    .await?;
    tx.commit().await?;
    execute::forget(core, id);
    let c = own(core, p, id).await?;
    answer.moved = true;
    answer.connection = Some(view(core, c, None).await?);
    Ok(answer)
}

/// What deleting a connection removes, for the confirm dialog.
pub const DELETE_REMOVES: &str =
    "its sealed credentials, grants and health history (the API-call log keeps its name)";

/// Deletes a connection with its credentials and health history.
pub async fn delete(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<ConnectionRow, ConnectionError> {
    let c = own(core, p, id).await?;
    authorize(core, p, &c, "admin").await?;
    execute::forget(core, id);
    let tx = core.store.begin().await?;
    if !tx.delete_connection(&p.tenant_id, id).await? {
        return Err(ConnectionError::not_found("connection", id));
    }
    record_by(
        &tx,
        p,
        "connection.delete",
        ("connection", id),
        json!({"name": c.name}),
    )
    .await?;
    tx.commit().await?;
    Ok(c)
}

/// The answer of activate and deactivate.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateChange {
    pub connection: ConnectionView,
    /// Active orchestrations that use this connection (they cannot run it while inactive).
    pub active_orchestrations: Vec<String>,
}

/// Activates (calls allowed, health monitored) or deactivates (no calls,
/// no health checks, credentials kept) a connection.
pub async fn set_active(
    core: &Core,
    p: &Principal,
    id: &str,
    active: bool,
) -> Result<StateChange, ConnectionError> {
    require_admin(p)?;
    let mut c = own(core, p, id).await?;
    let (status, action) = if active {
        ("active", "connection.activate")
    } else {
        ("inactive", "connection.deactivate")
    };
    c.status = status.into();
    c.updated_at = now_unix();
    let tx = core.store.begin().await?;
    tx.update_connection(&c).await?;
    record_by(&tx, p, action, ("connection", id), Value::Null).await?;
    tx.commit().await?;
    execute::forget(core, id);
    let active_orchestrations = using_connection(core, &p.tenant_id, &c).await?;
    Ok(StateChange {
        connection: view(core, c, None).await?,
        active_orchestrations,
    })
}

/// Replaces every credential field (audited; cached tokens are dropped).
pub async fn rotate_credentials(
    core: &Core,
    p: &Principal,
    id: &str,
    given: &Map<String, Value>,
) -> Result<ConnectionView, ConnectionError> {
    let c = own(core, p, id).await?;
    authorize(core, p, &c, "admin").await?;
    // The stored credentials are not opened: rotation must also repair ones
    // that no longer decrypt.
    let resolved = execute::resolve_definition(core, c.clone()).await?;
    let mut problems = Vec::new();
    let creds = match resolved.scheme() {
        Some(scheme) => check_credentials(scheme, given, &mut problems),
        None => {
            problems.push(json!({"field": "credentials", "problem": format!(
                "the connector no longer offers `{}` auth: move the connection to a version that does",
                c.auth_type
            )}));
            Vec::new()
        }
    };
    agent_secret_problems(&creds, &c.execution_mode, &mut problems);
    if !problems.is_empty() {
        return Err(
            ConnectionError::invalid("the credentials are invalid").with_details(json!(problems))
        );
    }
    let sealed = sealed_credentials(core, &p.tenant_id, id, &creds).await?;
    let tx = core.store.begin().await?;
    tx.replace_secrets(&p.tenant_id, id, &sealed, now_unix())
        .await?;
    record_by(
        &tx,
        p,
        "connection.rotate_credentials",
        ("connection", id),
        json!({"fields": creds.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>()}),
    )
    .await?;
    tx.commit().await?;
    execute::forget(core, id);
    let c = own(core, p, id).await?;
    view(core, c, None).await
}

/// Test Connection with the saved credentials: authenticates and runs the
/// health check.
pub async fn test_saved(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<TestOutcome, ConnectionError> {
    require_operator(p)?;
    let c = own(core, p, id).await?;
    let resolved = execute::resolve(core, c).await?;
    authorize(core, p, &resolved.row, &health_method(&resolved)).await?;
    Ok(execute::test(core, &resolved, &p.actor(), true).await)
}

/// Test Connection with credentials typed into a form, before saving
/// (nothing is stored).
pub async fn test_unsaved(
    core: &Core,
    p: &Principal,
    req: ConnectionRequest,
) -> Result<TestOutcome, ConnectionError> {
    require_admin(p)?;
    let checked = check_request(core, p, req).await?;
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
    Ok(execute::test(core, &resolved, &p.actor(), false).await)
}

/// The HTTP verb of the connector's health-check operation (the role a
/// test needs).
fn health_method(c: &Resolved) -> String {
    let id = c.definition.health_check.as_deref().unwrap_or_default();
    c.operation(id)
        .map_or("GET", |o| o.method.as_str())
        .to_owned()
}

/// One grant of a role on a connection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `user:usr_…` or `token:tok_…`.
    pub subject: String,
    /// `admin` or an HTTP verb of the connector's operations.
    pub role: String,
}

/// A connection's roles and who holds them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantsView {
    /// `admin` plus one role per HTTP verb the operations use.
    pub roles: Vec<String>,
    pub grants: Vec<Grant>,
}

/// The body of `PUT /connections/{id}/grants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsRequest {
    /// Every grant (replaces the list).
    pub grants: Vec<Grant>,
}

/// A connection's roles and who holds them.
pub async fn grants(core: &Core, p: &Principal, id: &str) -> Result<GrantsView, ConnectionError> {
    let c = own(core, p, id).await?;
    let resolved = execute::resolve(core, c).await?;
    let grants = core.store.grants(id).await?;
    Ok(GrantsView {
        roles: resolved.definition.grant_roles(),
        grants: grants
            .into_iter()
            .map(|(subject, role)| Grant { subject, role })
            .collect(),
    })
}

/// Sets who holds the connection's roles (replaces the list).
pub async fn set_grants(
    core: &Core,
    p: &Principal,
    id: &str,
    req: GrantsRequest,
) -> Result<GrantsView, ConnectionError> {
    let c = own(core, p, id).await?;
    authorize(core, p, &c, "admin").await?;
    let resolved = execute::resolve(core, c).await?;
    let roles = resolved.definition.grant_roles();
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
        return Err(
            ConnectionError::invalid("the grants are invalid").with_details(json!(problems))
        );
    }
    let tx = core.store.begin().await?;
    tx.replace_grants(id, &grants).await?;
    record_by(
        &tx,
        p,
        "connection.grants",
        ("connection", id),
        json!({"grants": grants.iter().map(|(s, r)| json!({"subject": s, "role": r})).collect::<Vec<_>>()}),
    )
    .await?;
    tx.commit().await?;
    Ok(GrantsView {
        roles,
        grants: grants
            .into_iter()
            .map(|(subject, role)| Grant { subject, role })
            .collect(),
    })
}

/// One health check as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthView {
    pub at: String,
    pub status: String,
    pub outcome: String,
    pub detail: String,
    pub duration_ms: i64,
}

impl From<crate::store::HealthRow> for HealthView {
    fn from(h: crate::store::HealthRow) -> Self {
        HealthView {
            at: rfc3339(h.at),
            status: h.status,
            outcome: h.outcome,
            detail: h.detail,
            duration_ms: h.duration_ms,
        }
    }
}

/// A connection's health history, newest first.
pub async fn health(
    core: &Core,
    p: &Principal,
    id: &str,
    limit: i64,
) -> Result<Vec<HealthView>, ConnectionError> {
    own(core, p, id).await?;
    let rows = core.store.health_history(id, limit).await?;
    Ok(rows.into_iter().map(HealthView::from).collect())
}

/// Runs a health check now and records it.
pub async fn check_now(
    core: &Core,
    p: &Principal,
    id: &str,
) -> Result<HealthView, ConnectionError> {
    require_operator(p)?;
    let c = own(core, p, id).await?;
    let resolved = execute::resolve_definition(core, c.clone()).await?;
    authorize(core, p, &c, &health_method(&resolved)).await?;
    if c.status != "active" {
        return Err(ConnectionError::conflict(
            "connection_inactive",
            "only active connections are health-checked: activate it first",
        ));
    }
    let h = execute::check_health(core, c)
        .await
        .ok_or_else(|| ConnectionError::Internal("the health check could not run".into()))?;
    Ok(h.into())
}

/// The tenant's active orchestrations that call `connection`, as
/// `id (name)`.
pub async fn using_connection(
    core: &Core,
    tenant_id: &str,
    connection: &ConnectionRow,
) -> Result<Vec<String>, StoreError> {
    let active = active_calls(core, tenant_id).await?;
    Ok(users_of(&active, &connection.id, &connection.name))
}

/// A tenant's active orchestrations, each with what its `call` steps name
/// as their connection (a name or an id): one pass over the definitions
/// for any number of connections.
pub async fn active_calls(
    core: &Core,
    tenant_id: &str,
) -> Result<Vec<(crate::store::OrchestrationRow, Vec<String>)>, StoreError> {
    let mut found = Vec::new();
    for (o, d) in core
        .store
        .orchestrations_with_definitions(tenant_id, None, 10_000)
        .await?
    {
        if o.status != "active" {
            continue;
        }
        let d: Value = serde_json::from_str(&d).unwrap_or(Value::Null);
        let named = crate::domain::called_connections(&d);
        if !named.is_empty() {
            found.push((o, named));
        }
    }
    Ok(found)
}

/// Of `active` (see [`active_calls`]), those that call the connection
/// `id` named `name`, as `id (name)`.
pub fn users_of(
    active: &[(crate::store::OrchestrationRow, Vec<String>)],
    id: &str,
    name: &str,
) -> Vec<String> {
    active
        .iter()
        .filter(|(_, named)| named.iter().any(|n| n == id || n == name))
        .map(|(o, _)| format!("{} ({})", o.id, o.name))
        .collect()
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
        role: crate::domain::Role::EnterpriseAdmin,
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
