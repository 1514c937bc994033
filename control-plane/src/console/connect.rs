//! CONNECT in the console: Connect a System (the set-up form of a catalogue
//! entry, Test Connection, Save & Activate), a connection's page and the
//! actions of My Connections (test, edit settings, rotate credentials,
//! deactivate and reactivate, delete).
//!
//! Every rule is [`crate::connections::manage`]'s, the same the JSON API
//! applies; this module turns form fields into its requests and its errors
//! into inline messages. Secret fields are write-only: they are never
//! rendered back, so a page re-rendered without the script asks for them
//! again; with the script, Test Connection posts the form in the
//! background and only its result region changes, keeping what was typed.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Map, Value};

use super::form::{CsrfForm, Fields};
use super::pages::{Chrome, Done, failed, html, problem, query, refused_admin_form, tone};
use super::session::Visitor;
use crate::Core;
use crate::connections::ConnectionError;
use crate::connections::execute::{ConnectionSettings, TestOutcome};
use crate::connections::manage::{self, ConnectionPatch, ConnectionRequest, ProxyInput};
use dibop_runtime::support::rfc3339;

/// The header the console's script sends when it wants only a page's
/// result region (Test Connection) instead of the whole page.
const PARTIAL: &str = "x-console-partial";

/// The guide's defaults for a new connection.
const DEFAULT_TIMEOUT_S: &str = "30";
const DEFAULT_MAX_RETRIES: &str = "3";

/// One credential input of the form.
pub(crate) struct CredentialInput {
    name: String,
    label: String,
    secret: bool,
    required: bool,
    /// What was typed (non-secret fields only).
    value: String,
    /// For rotation: whether a value is stored.
    stored: bool,
    /// Its inline error.
    error: Option<String>,
}

/// Puts each credential's inline error (`cred.NAME`) beside its input.
fn mark_credentials(inputs: &mut [CredentialInput], errors: &HashMap<String, String>) {
    for input in inputs {
        input.error = errors.get(&format!("cred.{}", input.name)).cloned();
    }
}

/// Test Connection's outcome as the page shows it.
pub(crate) struct Outcome {
    success: bool,
    label: &'static str,
    detail: String,
    http_status: Option<u16>,
    duration_ms: u64,
    ran_on: String,
}

impl From<TestOutcome> for Outcome {
    fn from(t: TestOutcome) -> Self {
        Outcome {
            success: t.success,
            label: match t.outcome {
                "success" => "Success",
                "auth_failure" => "Auth Failure",
                "timeout" => "Timeout",
                "network_error" => "Network Error",
                "tls_error" => "TLS Error",
                "policy_denied" => "Blocked by the relay agent's policy",
                "agent_unavailable" => "Relay agent unavailable",
                _ => "Invalid request",
            },
            detail: t.detail,
            http_status: t.http_status,
            duration_ms: t.duration_ms,
            ran_on: t.ran_on,
        }
    }
}

/// The result region of a form: Test Connection's outcome, or the
/// problems that kept it from running.
#[derive(Template)]
#[template(path = "console/test_result.html")]
struct TestResult {
    outcome: Option<Outcome>,
    problems: Vec<String>,
}

/// A relay group to pick in the form.
struct GroupChoice {
    id: String,
    name: String,
    online: usize,
}

/// The values of the set-up form, as typed (secrets left out).
#[derive(Default)]
struct SetupValues {
    name: String,
    base_url: String,
    timeout_s: String,
    retry: bool,
    max_retries: String,
    log_level: String,
    log_payloads: String,
    mode: String,
    group_id: String,
    proxy_url: String,
    proxy_username: String,
}

#[derive(Template)]
#[template(path = "console/connect.html")]
struct Connect {
    chrome: Chrome,
    connector_id: String,
    connector: String,
    initials: String,
    category: String,
    version: String,
    description: String,
    default_base_url: String,
    auth: String,
    auth_choices: Vec<(String, String)>,
    scheme_note: String,
    credentials: Vec<CredentialInput>,
    form: SetupValues,
    groups: Vec<GroupChoice>,
    errors: HashMap<String, String>,
    form_error: Option<String>,
    outcome: Option<Outcome>,
    problems: Vec<String>,
    deprecation: Option<String>,
}

impl Connect {
    /// The inline error of a field, if any.
    fn err(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }
}

/// A person's label for an auth scheme type.
fn auth_label(kind: &str) -> String {
    match kind {
        "none" => "No authentication".into(),
        "api_key" => "API key".into(),
        "basic" => "Basic (user name and password)".into(),
        "bearer" => "Bearer token".into(),
        "oauth2_client_credentials" => "OAuth2 client credentials".into(),
        "oauth2_password" => "OAuth2 password".into(),
        "oauth2_authorization_code" => "OAuth2 authorization code".into(),
        "openid_connect" => "OpenID Connect".into(),
        "dynamic_api_key" => "Session key (signed in with user name and password)".into(),
        "aws_sigv4" => "AWS Signature V4".into(),
        "mtls" => "Client certificate (mutual TLS)".into(),
        other => other.replace('_', " "),
    }
}

/// A person's label for a credential field: its label in the connector,
/// else its name in words (`client_id` → `Client ID`).
fn field_label(scheme: &Value, name: &str) -> String {
    let declared = scheme["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == name)
        .and_then(|f| f["label"].as_str());
    if let Some(label) = declared {
        return label.to_owned();
    }
    let words: Vec<String> = name
        .split('_')
        .map(|w| match w {
            "id" => "ID".to_owned(),
            "url" => "URL".to_owned(),
            "api" => "API".to_owned(),
            "pem" => "PEM".to_owned(),
            w => w.to_owned(),
        })
        .collect();
    let text = words.join(" ");
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// What the connector does with the credentials, in one sentence.
fn scheme_note(scheme: &Value) -> String {
    let s = |k: &str| scheme[k].as_str().unwrap_or_default();
    match s("type") {
        "none" => "This system needs no credentials: calls are sent as they are.".into(),
        "api_key" if !s("query").is_empty() => {
            format!("The key is sent in the {} query parameter.", s("query"))
        }
        "api_key" => {
            let header = if s("header").is_empty() {
                "X-API-Key"
            } else {
                s("header")
            };
            if s("prefix").is_empty() {
                format!("The key is sent in the {header} header.")
            } else {
                format!(
                    "The key is sent in the {header} header after {}.",
                    s("prefix")
                )
            }
        }
        "basic" => "Sent as HTTP Basic authentication.".into(),
        "bearer" => "Sent in the Authorization header as a bearer token.".into(),
        kind if kind.starts_with("oauth2") => {
            let scopes = match &scheme["scopes"] {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                Value::String(s) => s.clone(),
                _ => String::new(),
            };
            let grant = kind.trim_start_matches("oauth2_").replace('_', " ");
            format!(
                "Tokens come from {} ({grant} grant{}); they are cached and renewed before they expire.",
                s("token_url"),
                if scopes.is_empty() {
                    String::new()
                } else {
                    format!(", scopes {scopes}")
                }
            )
        }
        "dynamic_api_key" => format!(
            "A session key is fetched from {} with these credentials and sent in {}.",
            s("url"),
            s("header")
        ),
        _ => String::new(),
    }
}

/// The credential inputs of a scheme.
fn credential_inputs(scheme: &Value, typed: Option<&Fields>) -> Vec<CredentialInput> {
    manage::fields_of(scheme)
        .into_iter()
        .map(|(name, secret, required)| CredentialInput {
            label: field_label(scheme, &name),
            value: if secret {
                String::new()
            } else {
                typed
                    .map(|f| f.get(&format!("cred.{name}")))
                    .unwrap_or_default()
            },
            stored: false,
            error: None,
            name,
            secret,
            required,
        })
        .collect()
}

/// The form field a domain problem is about (`settings.timeout_ms` →
/// `timeout_s`), or `None` for the form as a whole.
fn form_field(field: &str) -> Option<String> {
    Some(match field {
        "name" | "base_url" => field.to_owned(),
        "settings.timeout_ms" => "timeout_s".into(),
        "settings.max_retries" => "max_retries".into(),
        "settings.log_level" => "log_level".into(),
        "settings.log_payloads" => "log_payloads".into(),
        "execution_mode" => "mode".into(),
        "agent_group_id" => "group_id".into(),
        "proxy" | "proxy.url" => "proxy_url".into(),
        f if f.starts_with("credentials.") => format!("cred.{}", &f["credentials.".len()..]),
        _ => return None,
    })
}

/// Inline errors by form field, and the problems no field shows.
fn sort_problems(e: &ConnectionError) -> (HashMap<String, String>, Vec<String>) {
    let mut inline = HashMap::new();
    let mut general = Vec::new();
    for p in e.problems() {
        let field = p["field"].as_str().unwrap_or_default();
        let text = p["problem"].as_str().unwrap_or_default().to_owned();
        match form_field(field) {
            Some(f) => {
                inline.entry(f).or_insert(text);
            }
            None => general.push(format!("{field}: {text}")),
        }
    }
    // An invalid request with a (possibly empty) list of problems says
    // everything through them; any other error in its own words.
    if !matches!(
        e,
        ConnectionError::Invalid {
            details: Value::Array(_),
            ..
        }
    ) {
        general.push(e.to_string());
    }
    (inline, general)
}

/// Settings from the form: what cannot be read is an inline error.
fn settings_of(f: &Fields, errors: &mut HashMap<String, String>) -> ConnectionSettings {
    let mut settings = ConnectionSettings::default();
    match f.get("timeout_s").parse::<u32>() {
        Ok(s) if (1..=300).contains(&s) => settings.timeout_ms = Some(s * 1000),
        _ => {
            errors.insert(
                "timeout_s".into(),
                "must be a whole number of seconds, 1 to 300".into(),
            );
        }
    }
    match f.get("max_retries").parse::<u32>() {
        Ok(r) if r <= 10 => settings.max_retries = Some(r),
        _ => {
            errors.insert(
                "max_retries".into(),
                "must be a whole number, 0 to 10".into(),
            );
        }
    }
    settings.retry_on_failure = f.checked("retry");
    let level = f.get("log_level");
    if !level.is_empty() {
        settings.log_level = level;
    }
    let payloads = f.get("log_payloads");
    if !payloads.is_empty() {
        settings.log_payloads = payloads;
    }
    settings
}

/// The execution mode part of a form: mode, group and proxy.
fn mode_of(f: &Fields) -> (String, Option<String>, Option<ProxyInput>) {
    let mode = match f.get("mode").as_str() {
        "" => "cloud".to_owned(),
        m => m.to_owned(),
    };
    let group = (mode == "agent_group")
        .then(|| f.get("group_id"))
        .filter(|g| !g.is_empty());
    let proxy = (mode == "proxy" && !f.get("proxy_url").is_empty()).then(|| ProxyInput {
        url: f.get("proxy_url"),
        username: Some(f.get("proxy_username")).filter(|u| !u.is_empty()),
        password: f
            .raw("proxy_password")
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
    });
    (mode, group, proxy)
}

/// The credentials typed into a form (empty secret fields are left out, so
/// that the domain names each missing one).
fn credentials_of(f: &Fields, scheme: &Value) -> Map<String, Value> {
    manage::fields_of(scheme)
        .into_iter()
        .filter_map(|(name, secret, _)| {
            let key = format!("cred.{name}");
            let value = if secret {
                f.raw(&key).unwrap_or_default().to_owned()
            } else {
                f.get(&key)
            };
            (!value.is_empty()).then_some((name, Value::String(value)))
        })
        .collect()
}

fn values_of(f: &Fields) -> SetupValues {
    SetupValues {
        name: f.get("name"),
        base_url: f.get("base_url"),
        timeout_s: f.get("timeout_s"),
        retry: f.checked("retry"),
        max_retries: f.get("max_retries"),
        log_level: f.get("log_level"),
        log_payloads: f.get("log_payloads"),
        mode: match f.get("mode").as_str() {
            "" => "cloud".into(),
            m => m.to_owned(),
        },
        group_id: f.get("group_id"),
        proxy_url: f.get("proxy_url"),
        proxy_username: f.get("proxy_username"),
    }
}

/// The tenant's relay groups with their online agents.
async fn group_choices(core: &Core, tenant: &str) -> Vec<GroupChoice> {
    let groups = core
        .store
        .list_groups(tenant, None, 200)
        .await
        .unwrap_or_default();
    let agents = core
        .store
        .list_agents(tenant, None, None, 1000)
        .await
        .unwrap_or_default();
    groups
        .into_iter()
        .map(|g| GroupChoice {
            online: agents
                .iter()
                .filter(|a| {
                    a.group_id == g.id
                        && crate::agents::enroll::state_of(core, a).status == "online"
                })
                .count(),
            id: g.id,
            name: g.name,
        })
        .collect()
}

#[derive(Debug, serde::Deserialize, Default)]
pub(crate) struct ConnectQuery {
    auth: Option<String>,
}

/// A catalogue entry ready for the form.
struct Entry {
    row: crate::store::CatalogueRow,
    definition: Value,
}

impl Entry {
    fn schemes(&self) -> Vec<Value> {
        self.definition["auth"]["schemes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The scheme picked (`auth`), else the connector's first.
    fn scheme(&self, auth: Option<&str>) -> Value {
        let schemes = self.schemes();
        auth.and_then(|a| schemes.iter().find(|s| s["type"] == a).cloned())
            .or_else(|| schemes.first().cloned())
            .unwrap_or_else(|| serde_json::json!({"type": "none"}))
    }
}

async fn entry(core: &Core, v: &Visitor, id: &str) -> Result<Entry, Response> {
    let platform = v.principal.is_platform_admin();
    match crate::catalogue::entry_detail(&core.store, &v.principal.tenant_id, platform, id).await {
        Ok(Some(d)) => Ok(Entry {
            row: d.row,
            definition: d.definition,
        }),
        Ok(None) => Err(problem(
            StatusCode::NOT_FOUND,
            "There is no such integration in your catalogue.",
        )),
        Err(e) => Err(failed(e)),
    }
}

/// The set-up form of `entry` with `scheme`, as first shown or as posted.
async fn connect_page(
    core: &Core,
    v: &Visitor,
    entry: &Entry,
    scheme: &Value,
    typed: Option<&Fields>,
) -> Connect {
    let row = &entry.row;
    let form = match typed {
        Some(f) => values_of(f),
        None => SetupValues {
            name: row.name.clone(),
            timeout_s: DEFAULT_TIMEOUT_S.into(),
            retry: true,
            max_retries: DEFAULT_MAX_RETRIES.into(),
            log_level: "info".into(),
            log_payloads: "failures".into(),
            mode: "cloud".into(),
            ..SetupValues::default()
        },
    };
    let auth = scheme["type"].as_str().unwrap_or("none").to_owned();
    Connect {
        chrome: Chrome::new(v, "integrations", None),
        connector_id: row.id.clone(),
        connector: row.name.clone(),
        initials: row
            .name
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .take(2)
            .collect::<String>()
            .to_uppercase(),
        category: row.category.clone(),
        version: row.latest_version.clone(),
        description: row.description.clone(),
        default_base_url: entry.definition["base_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        auth_choices: entry
            .schemes()
            .iter()
            .filter_map(|s| s["type"].as_str())
            .map(|t| (t.to_owned(), auth_label(t)))
            .collect(),
        scheme_note: scheme_note(scheme),
        credentials: credential_inputs(scheme, typed),
        auth,
        form,
        groups: group_choices(core, &v.principal.tenant_id).await,
        errors: HashMap::new(),
        form_error: None,
        outcome: None,
        problems: Vec::new(),
        deprecation: (row.status == "deprecated").then(|| {
            row.deprecation_message
                .clone()
                .unwrap_or_else(|| "This connector is deprecated.".into())
        }),
    }
}

/// Who may not connect systems: all but enterprise admins (platform admins
/// run the catalogue and never hold a tenant's connections).
fn not_for_connecting(v: &Visitor) -> Option<Response> {
    if v.principal.is_platform_admin() {
        Some(problem(
            StatusCode::FORBIDDEN,
            "Platform admins run the catalogue; enterprises connect their systems.",
        ))
    } else if !v.principal.role.is_admin() {
        Some(problem(
            StatusCode::FORBIDDEN,
            "Connecting a system needs the enterprise_admin role.",
        ))
    } else {
        None
    }
}

/// `GET /integrations/{id}/connect`: Connect a System.
pub(crate) async fn connect_form(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(refused) = not_for_connecting(&v) {
        return refused;
    }
    let entry = match entry(&core, &v, &id).await {
        Ok(e) => e,
        Err(page) => return page,
    };
    let q: ConnectQuery = query(raw.as_deref());
    let scheme = entry.scheme(q.auth.as_deref());
    html(
        StatusCode::OK,
        &connect_page(&core, &v, &entry, &scheme, None).await,
    )
}

/// `POST /integrations/{id}/connect`: Test Connection (`intent=test`),
/// Save as inactive (`intent=inactive`) or Save & Activate.
pub(crate) async fn connect(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    let partial = headers.contains_key(PARTIAL);
    let refused = refused_admin_form(&v, &f.get("csrf"), "Connecting a system")
        .or_else(|| not_for_connecting(&v));
    if let Some(refused) = refused {
        return if partial {
            result_fragment(
                StatusCode::FORBIDDEN,
                None,
                vec![
                    "This form has expired or you may not connect systems: reload the page.".into(),
                ],
            )
        } else {
            refused
        };
    }
    let entry = match entry(&core, &v, &id).await {
        Ok(e) => e,
        Err(page) => return page,
    };
    let auth = f.get("auth_type");
    let scheme = entry.scheme(Some(&auth));
    let mut errors = HashMap::new();
    let settings = settings_of(&f, &mut errors);
    let (mode, group, proxy) = mode_of(&f);
    let intent = f.get("intent");
    let base_url = f.get("base_url");
    let request = ConnectionRequest {
        connector_id: entry.row.id.clone(),
        version: None,
        name: Some(f.get("name")),
        auth_type: scheme["type"].as_str().map(str::to_owned),
        credentials: Some(credentials_of(&f, &scheme)),
        base_url: (!base_url.is_empty()).then_some(base_url),
        settings: Some(settings),
        execution_mode: Some(mode),
        agent_group_id: group,
        proxy,
        activate: intent == "activate",
    };
    let result = if !errors.is_empty() {
        // Named with whatever else the platform finds wrong, nothing run.
        Err(manage::validate(&core, &v.principal, request)
            .await
            .err()
            .unwrap_or_else(|| {
                ConnectionError::invalid("the connection is invalid")
                    .with_details(Value::Array(Vec::new()))
            }))
    } else if intent == "test" {
        manage::test_unsaved(&core, &v.principal, request)
            .await
            .map(|t| (None, Some(t)))
    } else {
        manage::create(&core, &v.principal, request)
            .await
            .map(|c| (Some(c), None))
    };
    match result {
        Ok((_, Some(outcome))) if partial => {
            result_fragment(StatusCode::OK, Some(outcome.into()), Vec::new())
        }
        Ok((_, Some(outcome))) => {
            let mut page = connect_page(&core, &v, &entry, &scheme, Some(&f)).await;
            if outcome.success {
                page.chrome.toast = Some("Connection test succeeded.");
            }
            page.outcome = Some(outcome.into());
            html(StatusCode::OK, &page)
        }
        Ok((Some(created), None)) => {
            if created.status == "active" {
                // Land on My Connections with its health known, not "unchecked".
                let _ = manage::check_now(&core, &v.principal, &created.id).await;
                Redirect::to("/connections?done=connection_activated").into_response()
            } else {
                Redirect::to("/connections?done=connection_saved").into_response()
            }
        }
        Ok((None, None)) => failed("nothing was done"),
        Err(e) => {
            let status = match &e {
                ConnectionError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ConnectionError::Conflict { .. } => StatusCode::CONFLICT,
                ConnectionError::Forbidden(_) => StatusCode::FORBIDDEN,
                ConnectionError::NotFound { .. } => StatusCode::NOT_FOUND,
                _ => return failed(e),
            };
            let (mut inline, general) = sort_problems(&e);
            for (k, v) in errors {
                inline.entry(k).or_insert(v);
            }
            if partial {
                let mut all: Vec<String> = inline
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", k.trim_start_matches("cred.")))
                    .collect();
                all.sort();
                all.extend(general);
                return result_fragment(status, None, all);
            }
            let mut page = connect_page(&core, &v, &entry, &scheme, Some(&f)).await;
            mark_credentials(&mut page.credentials, &inline);
            page.errors = inline;
            page.form_error = Some(if general.is_empty() {
                "The connection was not saved: fix the fields marked in red.".into()
            } else {
                format!("The connection was not saved: {}", general.join("; "))
            });
            html(status, &page)
        }
    }
}

/// Only the result region (for the script's background Test Connection).
fn result_fragment(
    status: StatusCode,
    outcome: Option<Outcome>,
    problems: Vec<String>,
) -> Response {
    html(status, &TestResult { outcome, problems })
}

// ------------------------------------------------------- a connection's page

struct HealthLine {
    at: String,
    status: String,
    class: &'static str,
    outcome: String,
    detail: String,
    duration_ms: i64,
}

struct CallLine {
    at: String,
    operation: String,
    method: String,
    status: String,
    ok: bool,
    error_class: String,
    duration_ms: String,
}

#[derive(Template)]
#[template(path = "console/connection.html")]
struct ConnectionPage {
    chrome: Chrome,
    c: manage::ConnectionView,
    status_class: &'static str,
    health_class: &'static str,
    mode_label: String,
    auth: String,
    scheme_note: String,
    credentials: Vec<CredentialInput>,
    timeout_s: String,
    retry: bool,
    max_retries: String,
    log_level: String,
    log_payloads: String,
    used_by: Vec<String>,
    health: Vec<HealthLine>,
    calls: Vec<CallLine>,
    errors: HashMap<String, String>,
    form_error: Option<String>,
    outcome: Option<Outcome>,
    problems: Vec<String>,
    delete_text: String,
    deactivate_text: String,
}

impl ConnectionPage {
    fn err(&self, field: &str) -> Option<&str> {
        self.errors.get(field).map(String::as_str)
    }
}

/// What the confirm dialogs of Deactivate and Delete say of connection
/// `name`, used by the active orchestrations `used_by`.
pub(crate) fn confirm_texts(name: &str, used_by: &[String]) -> (String, String) {
    let uses = if used_by.is_empty() {
        "No active orchestration uses it.".to_owned()
    } else {
        format!(
            "{} active orchestration(s) use it and will fail their calls while it is inactive: {}.",
            used_by.len(),
            used_by.join(", ")
        )
    };
    (
        format!(
            "Deactivate {name}? It takes no calls and is not health-checked until reactivated; its credentials are kept. {uses}"
        ),
        format!(
            "Delete {name}? This removes {}. {uses}",
            manage::DELETE_REMOVES
        ),
    )
}

/// Renders a connection's page (`None`: it does not exist in the tenant).
async fn connection_page(
    core: &Core,
    v: &Visitor,
    id: &str,
    done: Option<&str>,
) -> Result<ConnectionPage, Response> {
    let p = &v.principal;
    let row = match manage::own(core, p, id).await {
        Ok(r) => r,
        Err(ConnectionError::NotFound { .. }) => {
            return Err(problem(
                StatusCode::NOT_FOUND,
                "There is no such connection in your enterprise.",
            ));
        }
        Err(e) => return Err(failed(e)),
    };
    let used_by = manage::using_connection(core, &p.tenant_id, &row)
        .await
        .map_err(failed)?;
    let group_name = match &row.agent_group_id {
        Some(g) => core
            .store
            .group(&p.tenant_id, g)
            .await
            .ok()
            .flatten()
            .map_or_else(|| g.clone(), |g| g.name),
        None => String::new(),
    };
    let definition: Value = core
        .store
        .version(&row.connector_id, &row.connector_version)
        .await
        .ok()
        .flatten()
        .and_then(|v| serde_json::from_str(&v.definition).ok())
        .unwrap_or(Value::Null);
    let scheme = crate::connections::execute::scheme_of(&definition, &row.auth_type)
        .cloned()
        .unwrap_or(Value::Null);
    let view = manage::view(core, row, None).await.map_err(failed)?;
    let mut credentials = credential_inputs(&scheme, None);
    for input in &mut credentials {
        if let Some(stored) = view.credentials.get(&input.name) {
            input.stored = stored.set;
            input.value = stored.value.clone().unwrap_or_default();
        }
    }
    let health = core
        .store
        .health_history(id, 20)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|h| HealthLine {
            at: rfc3339(h.at),
            class: tone(&h.status),
            status: h.status,
            outcome: h.outcome,
            detail: h.detail,
            duration_ms: h.duration_ms,
        })
        .collect();
    let filter = crate::store::ApiCallFilter {
        connection_id: Some(id.to_owned()),
        ..Default::default()
    };
    let calls = core
        .store
        .list_calls(&p.tenant_id, &filter, 20)
        .await
        .map_err(failed)?
        .into_iter()
        .map(|c| CallLine {
            at: rfc3339(c.at),
            operation: c.operation,
            method: c.method,
            status: c.status.map_or_else(|| "–".into(), |s| s.to_string()),
            ok: c.ok != 0,
            error_class: c.error_class.unwrap_or_default(),
            duration_ms: format!("{:.1}", c.duration_us as f64 / 1000.0),
        })
        .collect();
    let settings: ConnectionSettings =
        serde_json::from_value(view.settings.clone()).unwrap_or_default();
    let (deactivate_text, delete_text) = confirm_texts(&view.name, &used_by);
    Ok(ConnectionPage {
        chrome: Chrome::new(v, "connections", done),
        status_class: tone(&view.status),
        health_class: tone(&view.health),
        mode_label: match view.execution_mode.as_str() {
            "agent_group" => format!("Relay group {group_name}"),
            "proxy" => format!(
                "Cloud through the proxy {}",
                view.proxy_url.clone().unwrap_or_default()
            ),
            _ => "Cloud".into(),
        },
        auth: auth_label(&view.auth_type),
        scheme_note: scheme_note(&scheme),
        credentials,
        timeout_s: settings
            .timeout_ms
            .map(|t| (t / 1000).max(1).to_string())
            .unwrap_or_default(),
        retry: settings.retry_on_failure,
        max_retries: settings
            .max_retries
            .map(|r| r.to_string())
            .unwrap_or_default(),
        log_level: settings.log_level,
        log_payloads: settings.log_payloads,
        delete_text,
        deactivate_text,
        used_by,
        health,
        calls,
        errors: HashMap::new(),
        form_error: None,
        outcome: None,
        problems: Vec::new(),
        c: view,
    })
}

/// `GET /connections/{id}`: a connection with its settings, credentials,
/// health history and recent calls.
pub(crate) async fn connection(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let done: Done = query(raw.as_deref());
    match connection_page(&core, &v, &id, done.done.as_deref()).await {
        Ok(page) => html(StatusCode::OK, &page),
        Err(page) => page,
    }
}

/// A connection action's answer when it failed: the page with the reason.
async fn refused_action(core: &Core, v: &Visitor, id: &str, e: ConnectionError) -> Response {
    let status = match &e {
        ConnectionError::NotFound { .. } => {
            return problem(
                StatusCode::NOT_FOUND,
                "There is no such connection in your enterprise.",
            );
        }
        ConnectionError::Forbidden(m) => return problem(StatusCode::FORBIDDEN, m),
        ConnectionError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ConnectionError::Conflict { .. } | ConnectionError::CredentialsUnreadable { .. } => {
            StatusCode::CONFLICT
        }
        _ => return failed(e),
    };
    let (inline, general) = sort_problems(&e);
    match connection_page(core, v, id, None).await {
        Ok(mut page) => {
            mark_credentials(&mut page.credentials, &inline);
            page.errors = inline;
            page.form_error = Some(if general.is_empty() {
                "Nothing was changed: fix the fields marked in red.".into()
            } else {
                format!("Nothing was changed: {}", general.join("; "))
            });
            html(status, &page)
        }
        Err(page) => page,
    }
}

/// `POST /connections/{id}/test`: Test Connection with the saved credentials.
pub(crate) async fn test(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    let partial = headers.contains_key(PARTIAL);
    if let Some(refused) = v.forged(&f.get("csrf")) {
        return refused;
    }
    match manage::test_saved(&core, &v.principal, &id).await {
        Ok(outcome) if partial => result_fragment(StatusCode::OK, Some(outcome.into()), Vec::new()),
        Ok(outcome) => match connection_page(&core, &v, &id, None).await {
            Ok(mut page) => {
                if outcome.success {
                    page.chrome.toast = Some("Connection test succeeded.");
                }
                page.outcome = Some(outcome.into());
                html(StatusCode::OK, &page)
            }
            Err(page) => page,
        },
        Err(e) if partial => {
            let (_, general) = sort_problems(&e);
            result_fragment(StatusCode::CONFLICT, None, general)
        }
        Err(e) => refused_action(&core, &v, &id, e).await,
    }
}

/// `POST /connections/{id}/activate` and `/deactivate`.
async fn set_active(core: &Core, v: &Visitor, id: &str, csrf: &str, active: bool) -> Response {
    let what = if active {
        "Activating a connection"
    } else {
        "Deactivating a connection"
    };
    if let Some(refused) = refused_admin_form(v, csrf, what) {
        return refused;
    }
    match manage::set_active(core, &v.principal, id, active).await {
        Ok(_) => Redirect::to(&format!(
            "/connections/{id}?done={}",
            if active {
                "connection_activated"
            } else {
                "connection_deactivated"
            }
        ))
        .into_response(),
        Err(e) => refused_action(core, v, id, e).await,
    }
}

pub(crate) async fn activate(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_active(&core, &v, &id, &form.csrf, true).await
}

pub(crate) async fn deactivate(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    set_active(&core, &v, &id, &form.csrf, false).await
}

/// `POST /connections/{id}/delete`.
pub(crate) async fn delete(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = v.forged(&form.csrf) {
        return refused;
    }
    match manage::delete(&core, &v.principal, &id).await {
        Ok(_) => Redirect::to("/connections?done=connection_deleted").into_response(),
        Err(e) => refused_action(&core, &v, &id, e).await,
    }
}

/// `POST /connections/{id}/settings`: Edit settings.
pub(crate) async fn settings(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    if let Some(refused) = v.forged(&f.get("csrf")) {
        return refused;
    }
    let mut errors = HashMap::new();
    let settings = settings_of(&f, &mut errors);
    if !errors.is_empty() {
        return refused_action(
            &core,
            &v,
            &id,
            ConnectionError::invalid("the change is invalid").with_details(
                errors
                    .into_iter()
                    .map(|(field, problem)| {
                        let field = match field.as_str() {
                            "timeout_s" => "settings.timeout_ms",
                            _ => "settings.max_retries",
                        };
                        serde_json::json!({"field": field, "problem": problem})
                    })
                    .collect::<Vec<_>>()
                    .into(),
            ),
        )
        .await;
    }
    let base = f.get("base_url");
    let (mode, group, proxy) = mode_of(&f);
    let patch = ConnectionPatch {
        name: Some(f.get("name")),
        base_url: Some((!base.is_empty()).then_some(base)),
        settings: Some(settings),
        execution_mode: Some(mode),
        agent_group_id: group,
        proxy,
    };
    match manage::update(&core, &v.principal, &id, patch).await {
        Ok(_) => Redirect::to(&format!("/connections/{id}?done=settings_saved")).into_response(),
        Err(e) => refused_action(&core, &v, &id, e).await,
    }
}

/// `POST /connections/{id}/credentials`: Rotate credentials.
pub(crate) async fn rotate(
    State(core): State<Arc<Core>>,
    v: Visitor,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let f = Fields::of(pairs);
    if let Some(refused) = v.forged(&f.get("csrf")) {
        return refused;
    }
    let scheme = match manage::own(&core, &v.principal, &id).await {
        Ok(row) => core
            .store
            .version(&row.connector_id, &row.connector_version)
            .await
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str::<Value>(&v.definition).ok())
            .and_then(|d| crate::connections::execute::scheme_of(&d, &row.auth_type).cloned())
            .unwrap_or(Value::Null),
        Err(e) => return refused_action(&core, &v, &id, e).await,
    };
    let given = credentials_of(&f, &scheme);
    match manage::rotate_credentials(&core, &v.principal, &id, &given).await {
        Ok(_) => {
            Redirect::to(&format!("/connections/{id}?done=credentials_rotated")).into_response()
        }
        Err(e) => refused_action(&core, &v, &id, e).await,
    }
}
