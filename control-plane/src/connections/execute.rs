//! Running a connection's operations: the one call path.
//!
//! A call is rendered here (operation + parameters → request), its
//! credentials are decrypted only now into the call's [`CallAuth`], and it
//! goes to the built-in cloud agent (`cloud`, `proxy`) or to the
//! least-loaded agent of the connection's group (`agent_group`), which
//! authenticates, performs and retries it. The result is recorded in the
//! API-call log (never the credentials) and returned.
//!
//! Test Connection runs the connector's health-check operation the same way
//! and reduces the result to one outcome a person can act on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dibop_protocol::{
    CallAuth, CallRequest, CallResult, ClientAuth, DynamicApiKey, ErrorClass, InvokeRequest,
    InvokeResult, KeyPlacement, OAuth2, OAuth2Grant, ProxyOptions, RetryPolicy, TlsOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ConnectionError;
use crate::Core;
use crate::catalogue::definition::{AuthScheme, AuthType, ClientAuthStyle, Definition, Operation};
use crate::store::{ApiCallRow, CallPayloadRow, ConnectionRow, HealthRow, now_unix};
use crate::vault::Secret;

/// Settings of a connection (stored as JSON).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Per-call timeout; default: the connector's.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Try failed calls again where that is safe. Default true.
    #[serde(default = "yes")]
    pub retry_on_failure: bool,
    /// Retries after the first try (0-10); default: the connector's.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// `error`, `warn`, `info` or `debug`; changeable at run time.
    #[serde(default = "info")]
    pub log_level: String,
    /// Which calls keep their request and response bodies in the call log:
    /// `failures` (default), `all` (also with `log_level: debug`), or `none`.
    #[serde(default = "failures")]
    pub log_payloads: String,
    /// TLS towards the system.
    #[serde(default)]
    pub tls: TlsSettings,
}

fn failures() -> String {
    "failures".into()
}

fn yes() -> bool {
    true
}

fn info() -> String {
    "info".into()
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings {
            timeout_ms: None,
            retry_on_failure: true,
            max_retries: None,
            log_level: info(),
            log_payloads: failures(),
            tls: TlsSettings::default(),
        }
    }
}

/// TLS settings of a connection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Extra trusted CA certificates (PEM), e.g. the dealer's own CA.
    #[serde(default)]
    pub extra_ca_pem: Option<String>,
    /// Refuse certificates that do not verify. Default true; turn off for test systems only.
    #[serde(default = "yes")]
    pub reject_unauthorized: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            extra_ca_pem: None,
            reject_unauthorized: true,
        }
    }
}

/// A connection ready to run: its row, its connector version's definition,
/// and its opened credentials.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The connection (for unsaved tests, a row that is not stored).
    pub row: ConnectionRow,
    /// The connector version's definition.
    pub definition: Definition,
    /// Credential fields, opened.
    pub credentials: HashMap<String, Secret>,
    /// Proxy credentials, opened.
    pub proxy: Option<(String, Secret)>,
}

impl Resolved {
    /// The connection's settings.
    pub fn settings(&self) -> ConnectionSettings {
        serde_json::from_str(&self.row.settings).unwrap_or_default()
    }

    /// The auth scheme in use (none when the connector no longer offers it).
    pub fn scheme(&self) -> Option<&AuthScheme> {
        self.definition.scheme(&self.row.auth_type)
    }

    /// The base URL calls go to.
    pub fn base_url(&self) -> String {
        self.row
            .base_url
            .clone()
            .or_else(|| self.definition.base_url.clone())
            .unwrap_or_default()
    }

    fn credential(&self, name: &str) -> String {
        self.credentials
            .get(name)
            .map(|s| s.expose().to_owned())
            .unwrap_or_default()
    }

    /// The header the target reads idempotency keys from, if the connector
    /// declares one (`resilience.idempotency_header`).
    pub fn idempotency_header(&self) -> Option<&str> {
        self.definition
            .resilience
            .idempotency_header
            .as_deref()
            .filter(|h| !h.is_empty())
    }

    /// The operation with this id.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.definition.operation(id)
    }

    /// Each try's deadline: the connection's setting, else the connector's.
    pub fn timeout_ms(&self) -> u32 {
        self.settings()
            .timeout_ms
            .unwrap_or(self.definition.resilience.timeout_ms)
    }
}

/// `url` made absolute against `base` (for relative token and login URLs).
fn absolute(url: &str, base: &str) -> String {
    if crate::catalogue::connector::is_http_url(url) {
        return url.to_owned();
    }
    match reqwest::Url::parse(base) {
        Ok(b) => {
            let mut root = b.clone();
            root.set_path("");
            root.set_query(None);
            format!("{}{}", root.as_str().trim_end_matches('/'), url)
        }
        Err(_) => url.to_owned(),
    }
}

/// Where OpenID Connect discovery documents' token endpoints are kept.
pub type DiscoveryCache = crate::support::cache::TtlCache<String>;

/// A new discovery cache (one hour).
pub fn discovery_cache() -> DiscoveryCache {
    crate::support::cache::TtlCache::new(Duration::from_secs(3600), 1024)
}

/// The call's auth, TLS and proxy from the connection's credentials.
async fn auth_of(core: &Core, c: &Resolved) -> Result<(CallAuth, TlsOptions), Unprepared> {
    let Some(scheme) = c.scheme() else {
        return Err(Unprepared::Invalid(vec![format!(
            "the connector no longer offers `{}` auth: choose another scheme for the connection",
            c.row.auth_type
        )]));
    };
    let base = c.base_url();
    let settings = c.settings();
    let mut tls = TlsOptions {
        extra_ca_pem: settings.tls.extra_ca_pem.clone().unwrap_or_default(),
        accept_invalid_certs: !settings.tls.reject_unauthorized,
        ..TlsOptions::default()
    };
    let client_auth = match scheme.client_auth {
        ClientAuthStyle::ClientSecretPost => ClientAuth::Post,
        ClientAuthStyle::ClientSecretBasic => ClientAuth::Basic,
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let oauth = |grant| OAuth2 {
        grant,
        token_url: absolute(&text(&scheme.token_url), &base),
        client_id: c.credential("client_id"),
        client_secret: c.credential("client_secret"),
        scopes: scheme.scopes.to_vec(),
        client_auth,
        username: c.credential("username"),
        password: c.credential("password"),
        refresh_token: c.credential("refresh_token"),
    };
    let auth = match scheme.kind {
        AuthType::None => CallAuth::None,
        AuthType::ApiKey => CallAuth::ApiKey {
            placement: match (&scheme.header, &scheme.query) {
                (Some(h), _) => KeyPlacement::Header(h.clone()),
                (None, Some(q)) => KeyPlacement::Query(q.clone()),
                (None, None) => KeyPlacement::Header("X-API-Key".into()),
            },
            prefix: text(&scheme.prefix),
            key: c.credential("api_key"),
        },
        AuthType::Basic => CallAuth::Basic {
            username: c.credential("username"),
            password: c.credential("password"),
        },
        AuthType::Bearer => CallAuth::Bearer {
            token: c.credential("token"),
        },
        AuthType::Oauth2ClientCredentials => {
            CallAuth::OAuth2(oauth(OAuth2Grant::ClientCredentials))
        }
        AuthType::Oauth2Password => CallAuth::OAuth2(oauth(OAuth2Grant::Password)),
        AuthType::Oauth2AuthorizationCode => CallAuth::OAuth2(oauth(OAuth2Grant::RefreshToken)),
        AuthType::OpenidConnect => {
            let discovery = absolute(&text(&scheme.discovery_url), &base);
            let token_url = match core.discovery.get(&discovery) {
                Some(t) => t,
                None => {
                    let t = discover(core, c, &discovery)
                        .await
                        .map_err(|r| Unprepared::Failed(Box::new(r)))?;
                    core.discovery.insert(discovery.clone(), t.clone());
                    t
                }
            };
            let mut o = oauth(OAuth2Grant::ClientCredentials);
            o.token_url = token_url;
            if o.scopes.is_empty() {
                o.scopes = vec!["openid".into()];
            }
            CallAuth::OAuth2(o)
        }
        AuthType::DynamicApiKey => {
            let header = scheme
                .header
                .clone()
                .unwrap_or_else(|| "Authorization".into());
            let prefix = scheme.prefix.clone().unwrap_or_else(|| {
                if header.eq_ignore_ascii_case("authorization") {
                    "Bearer ".into()
                } else {
                    String::new()
                }
            });
            let body: Map<String, Value> = c
                .credentials
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned())))
                .collect();
            CallAuth::DynamicApiKey(DynamicApiKey {
                method: scheme.method.clone().unwrap_or_else(|| "POST".into()),
                url: absolute(&text(&scheme.url), &base),
                body: Value::Object(body).to_string(),
                pointer: scheme.pointer.clone().unwrap_or_else(|| "/token".into()),
                header,
                prefix,
                ttl_secs: 600,
            })
        }
        AuthType::AwsSigv4 => CallAuth::AwsSigV4(dibop_protocol::AwsSigV4 {
            access_key_id: c.credential("access_key_id"),
            secret_access_key: c.credential("secret_access_key"),
            session_token: c.credential("session_token"),
            region: text(&scheme.region),
            service: text(&scheme.service),
        }),
        AuthType::MutualTls => {
            tls.client_cert_pem = c.credential("client_certificate");
            tls.client_key_pem = c.credential("client_key");
            CallAuth::None
        }
    };
    Ok((auth, tls))
}

/// Why a call could not be prepared.
#[derive(Debug)]
pub enum Unprepared {
    /// The parameters or the connection's settings are wrong: the caller's to fix.
    Invalid(Vec<String>),
    /// A call needed first failed (OpenID Connect discovery): its
    /// normalized result, answered like the call's own.
    Failed(Box<CallResult>),
}

impl Unprepared {
    /// One line for a person.
    pub fn describe(&self) -> String {
        match self {
            Unprepared::Invalid(problems) => problems.join("; "),
            Unprepared::Failed(r) => r
                .error
                .as_ref()
                .map_or_else(|| "the call failed".to_owned(), |e| e.message.clone()),
        }
    }

    /// The error class a step or a page fetch fails with.
    pub fn class(&self) -> crate::domain::ErrorClass {
        match self {
            Unprepared::Invalid(_) => crate::domain::ErrorClass::InvalidRequest,
            Unprepared::Failed(r) => r
                .error
                .as_ref()
                .map_or(crate::domain::ErrorClass::UpstreamError, |e| e.class.into()),
        }
    }
}

impl From<Vec<String>> for Unprepared {
    fn from(problems: Vec<String>) -> Self {
        Unprepared::Invalid(problems)
    }
}

/// Reads an OpenID Connect discovery document (through the connection's
/// own path) and returns its token endpoint; a failed read is a normalized
/// failure (`network_error`, `tls_error`, `timeout`, … as the read failed).
async fn discover(core: &Core, c: &Resolved, url: &str) -> Result<String, CallResult> {
    let request = InvokeRequest {
        call: CallRequest {
            call_id: 0,
            method: "GET".into(),
            url: url.to_owned(),
            headers: vec![("Accept".into(), "application/json".into())],
            body: Vec::new(),
            timeout_ms: 10_000,
        },
        auth: CallAuth::None,
        auth_cache_key: String::new(),
        tls: TlsOptions {
            extra_ca_pem: c.settings().tls.extra_ca_pem.unwrap_or_default(),
            accept_invalid_certs: !c.settings().tls.reject_unauthorized,
            ..TlsOptions::default()
        },
        proxy: proxy_of(c),
        retry: RetryPolicy::default(),
    };
    let (out, _) = send(core, c, request.clone()).await;
    let mut r = out.result;
    let body = match &r.body {
        dibop_protocol::ResponseBody::Json(t) => t.clone(),
        _ => String::new(),
    };
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    if r.ok
        && let Some(t) = v["token_endpoint"].as_str()
    {
        return Ok(t.to_owned());
    }
    let (class, why) = match r.error.take() {
        Some(e) => (e.class, e.message),
        None if r.ok => (
            ErrorClass::UpstreamError,
            "the document has no token_endpoint".to_owned(),
        ),
        None => (
            ErrorClass::UpstreamError,
            format!(
                "it answered HTTP {}",
                r.status.map_or("?".to_owned(), |s| s.to_string())
            ),
        ),
    };
    let mut failure = CallResult::failure(
        &request.call,
        &r.agent_id,
        class,
        format!("OpenID Connect discovery at {url} failed: {why}"),
    );
    failure.status = r.status;
    failure.attempts = r.attempts;
    Err(failure)
}

fn proxy_of(c: &Resolved) -> Option<ProxyOptions> {
    if c.row.execution_mode != "proxy" {
        return None;
    }
    Some(ProxyOptions {
        url: c.row.proxy_url.clone().unwrap_or_default(),
        username: c.proxy.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
        password: c
            .proxy
            .as_ref()
            .map(|p| p.1.expose().to_owned())
            .unwrap_or_default(),
    })
}

/// Sends to the cloud agent or the connection's agent group; returns the
/// result and where it ran.
async fn send(core: &Core, c: &Resolved, request: InvokeRequest) -> (InvokeResult, String) {
    match (c.row.execution_mode.as_str(), &c.row.agent_group_id) {
        ("agent_group", Some(group)) => {
            // Just after a start, agents are still reconnecting: wait for one
            // (within the call's own timeout) rather than fail at once.
            let grace = core
                .settings
                .agent_grace
                .saturating_sub(core.registry.uptime())
                .min(Duration::from_millis(u64::from(request.call.timeout_ms)));
            if !grace.is_zero() && core.registry.online_in_group(group) == 0 {
                core.registry
                    .wait_for_group(group, Instant::now() + grace)
                    .await;
            }
            let out = core.registry.invoke(group, request).await;
            let ran_on = if out.result.agent_id.is_empty() {
                format!("agent_group:{group}")
            } else {
                out.result.agent_id.clone()
            };
            (out, ran_on)
        }
        _ => (core.cloud.invoke(&request).await, "cloud".into()),
    }
}

/// Sends through the connection's rate limit and circuit breaker (see
/// [`crate::connections::guard`]): a call they hold back fails without reaching the system.
async fn guarded_send(core: &Core, c: &Resolved, request: InvokeRequest) -> (InvokeResult, String) {
    use crate::connections::guard::{Refused, is_system_failure, policies};
    let (breaker, rate) = policies(&c.definition);
    let system = c.definition.name.as_str();
    let refused = |class, message: String| {
        let mut result = CallResult::failure(&request.call, "", class, message);
        result.attempts = 0;
        (
            InvokeResult {
                result,
                rotated_refresh_token: None,
                token_fetches: 0,
            },
            String::new(),
        )
    };
    if let Some(rate) = rate {
        let max_wait = Duration::from_millis(u64::from(request.call.timeout_ms));
        if let Err(Refused::Throttled(wait)) = core
            .guards
            .pace(&core.store, &c.row.id, rate, max_wait)
            .await
        {
            return refused(
                ErrorClass::Throttled,
                format!(
                    "{system} allows {} calls per second (resilience.rate_limit): this call would wait \
                     {} ms for its turn, longer than its {} ms timeout; it was not sent",
                    rate.per_second,
                    wait.as_millis(),
                    request.call.timeout_ms
                ),
            );
        }
    }
    if let Some(policy) = breaker
        && let Err(Refused::Open(until)) = core.guards.admit(&c.row.id, policy)
    {
        return refused(
            ErrorClass::CircuitOpen,
            format!(
                "the circuit breaker of connection `{}` is open after {} failures in a row of {system} \
                 (resilience.circuit_breaker): calls are not sent until {}, then one trial call decides",
                c.row.name,
                policy.threshold,
                dibop_runtime::support::rfc3339(until / 1000)
            ),
        );
    }
    let (out, ran_on) = send(core, c, request).await;
    if let Some(policy) = breaker {
        let r = &out.result;
        // A call that never reached the system says nothing about it.
        let outcome = if is_system_failure(r) {
            Some(true)
        } else if r.ok || r.status.is_some() {
            Some(false)
        } else {
            None
        };
        core.guards.record(&c.row.id, policy, outcome);
    }
    (out, ran_on)
}

/// The auth scheme of type `auth_type` a connector definition offers.
pub fn scheme_of<'a>(definition: &'a Value, auth_type: &str) -> Option<&'a Value> {
    definition["auth"]["schemes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["type"] == auth_type)
}

/// A rendered, authenticated call of `operation` with `parameters`.
pub async fn prepare(
    core: &Core,
    c: &Resolved,
    operation: &Operation,
    parameters: &Map<String, Value>,
) -> Result<InvokeRequest, Unprepared> {
    let prepared = crate::catalogue::render::prepare(operation, &c.base_url(), parameters)?;
    let settings = c.settings();
    let retries = c.definition.resilience.retries;
    let timeout_ms = settings
        .timeout_ms
        .unwrap_or(c.definition.resilience.timeout_ms);
    let connector_attempts = retries.max_attempts;
    let max_attempts = if settings.retry_on_failure {
        settings
            .max_retries
            .map_or(connector_attempts, |r| r + 1)
            .clamp(1, 11)
    } else {
        1
    };
    let mut headers = prepared.headers;
    let body = match &prepared.body {
        Some(b) => {
            headers.push(("Content-Type".into(), "application/json".into()));
            serde_json::to_vec(b).unwrap_or_default()
        }
        None => Vec::new(),
    };
    headers.push(("Accept".into(), "application/json".into()));
    // A target that dedupes on an idempotency key gets one with every
    // non-idempotent call: one key for all the tries of this call, which
    // makes retrying it safe. (Orchestration steps replace it with a key
    // derived from the execution and step, stable across restarts.)
    let keyed = match c.idempotency_header() {
        Some(header) if !dibop_runtime::call::is_idempotent(&prepared.method) => {
            headers.push((header.to_owned(), crate::support::ids::new_id("idem")));
            true
        }
        _ => false,
    };
    let (auth, tls) = auth_of(core, c).await?;
    Ok(InvokeRequest {
        call: CallRequest {
            call_id: 0,
            method: prepared.method,
            url: prepared.url.into(),
            headers,
            body,
            timeout_ms,
        },
        auth,
        auth_cache_key: format!("{}:{}", c.row.id, c.row.credentials_version),
        tls,
        proxy: proxy_of(c),
        retry: RetryPolicy {
            max_attempts,
            initial_backoff_ms: retries.initial_backoff_ms,
            max_backoff_ms: retries.max_backoff_ms,
            safe_to_retry: keyed || operation.safe_to_retry,
        },
    })
}

/// Runs a prepared call, stores a rotated refresh token, and records the
/// call (saved connections only).
pub async fn run(
    core: &Core,
    c: &Resolved,
    operation: &str,
    request: InvokeRequest,
    actor: &str,
    saved: bool,
) -> (InvokeResult, String, Duration) {
    let started = Instant::now();
    // Bodies for the call log, as the connection's settings ask.
    let settings = c.settings();
    let payloads = match settings.log_payloads.as_str() {
        _ if !saved => None,
        "none" => None,
        _ if settings.log_level == "debug" => Some(true),
        "all" => Some(true),
        _ => Some(false),
    };
    let sent = (payloads.is_some() && !request.call.body.is_empty())
        .then(|| payload_of_bytes(&request.call.body))
        .flatten();
    let (out, ran_on) = if saved {
        guarded_send(core, c, request).await
    } else {
        send(core, c, request).await
    };
    let elapsed = started.elapsed();
    core.metrics.call(
        &c.row.execution_mode,
        out.result.error.as_ref().map(|e| e.class.as_str()),
        elapsed.as_secs_f64(),
    );
    if saved {
        if let Some(token) = &out.rotated_refresh_token {
            match core
                .vault
                .seal(
                    &core.store,
                    &c.row.tenant_id,
                    &c.row.id,
                    "cred.refresh_token",
                    &Secret::new(token.clone()),
                )
                .await
            {
                Ok(sealed) => {
                    forget(core, &c.row.id);
                    if let Err(e) = core
                        .store
                        .set_secret(&c.row.id, "cred.refresh_token", &sealed)
                        .await
                    {
                        tracing::error!(connection = %c.row.id, "cannot store the rotated refresh token: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!(connection = %c.row.id, "cannot seal the rotated refresh token: {e}")
                }
            }
        }
        let r = &out.result;
        let bytes = match &r.body {
            dibop_protocol::ResponseBody::Json(t) | dibop_protocol::ResponseBody::Text(t) => {
                t.len()
            }
            dibop_protocol::ResponseBody::Binary(b) => b.len(),
            dibop_protocol::ResponseBody::Empty => 0,
        };
        let row = ApiCallRow {
            id: crate::support::ids::time_ordered_id("call"),
            tenant_id: c.row.tenant_id.clone(),
            connection_id: c.row.id.clone(),
            connector_id: c.row.connector_id.clone(),
            connection_name: c.row.name.clone(),
            connector_slug: c.row.connector_slug.clone(),
            operation: operation.to_owned(),
            method: r.method.clone(),
            // Sensitive personal values (CDM `sensitive_pii`) never reach the stored log.
            url: crate::cdm::pii::redact_url(&r.url, crate::cdm::pii::sensitive_keys()),
            status: r.status.map(i64::from),
            ok: i64::from(r.ok),
            error_class: r.error.as_ref().map(|e| e.class.as_str().to_owned()),
            duration_us: i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX),
            response_bytes: bytes as i64,
            attempts: i64::from(r.attempts),
            ran_on: ran_on.clone(),
            actor: actor.to_owned(),
            at: now_unix(),
        };
        // `Some(all)`: kept for every call, else for failures only.
        let keep = payloads.is_some_and(|all| all || !r.ok);
        let received = match &r.body {
            _ if !keep => None,
            dibop_protocol::ResponseBody::Json(t) | dibop_protocol::ResponseBody::Text(t) => {
                payload_of_text(t)
            }
            dibop_protocol::ResponseBody::Binary(b) => {
                Some((format!("({} bytes of binary data)", b.len()), false))
            }
            dibop_protocol::ResponseBody::Empty => None,
        };
        let sent = sent.filter(|_| keep);
        let payload = (sent.is_some() || received.is_some()).then(|| CallPayloadRow {
            call_id: row.id.clone(),
            tenant_id: row.tenant_id.clone(),
            request_truncated: i64::from(sent.as_ref().is_some_and(|s| s.1)),
            response_truncated: i64::from(received.as_ref().is_some_and(|r| r.1)),
            request_body: sent.map(|s| s.0),
            response_body: received.map(|r| r.0),
            at: row.at,
        });
        core.calls.push_with(row, payload);
        if settings.log_level == "debug" || (!r.ok && settings.log_level != "error") {
            tracing::info!(
                connection = %c.row.id, operation, status = ?r.status, ok = r.ok,
                class = ?r.error.as_ref().map(|e| e.class.as_str()), attempts = r.attempts, %ran_on,
                "connector call"
            );
        }
    }
    (out, ran_on, elapsed)
}

/// Most bytes of a request or response body kept in the call log.
pub const PAYLOAD_CAP: usize = 16 * 1024;
/// Bodies larger than this are not parsed to mask personal values: only
/// their size is kept.
const PAYLOAD_PARSE_LIMIT: usize = 256 * 1024;

/// A body for the call log: JSON with sensitive personal values masked (as
/// in stored URLs), cut at [`PAYLOAD_CAP`]; (text, truncated).
fn payload_of_text(text: &str) -> Option<(String, bool)> {
    if text.is_empty() {
        return None;
    }
    if text.len() > PAYLOAD_PARSE_LIMIT {
        return Some((
            format!(
                "(a body of {} bytes: larger than {} KiB, not kept)",
                text.len(),
                PAYLOAD_PARSE_LIMIT / 1024
            ),
            true,
        ));
    }
    // Most bodies name no sensitive key: kept as they are, without parsing.
    let masked = if !crate::cdm::pii::mentions_sensitive_key(text) {
        text.to_owned()
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(mut v) => {
                crate::cdm::pii::redact(&mut v, crate::cdm::pii::sensitive_keys());
                v.to_string()
            }
            Err(_) => text.to_owned(),
        }
    };
    Some(cap(masked))
}

fn payload_of_bytes(body: &[u8]) -> Option<(String, bool)> {
    match std::str::from_utf8(body) {
        Ok(text) => payload_of_text(text),
        Err(_) => Some((format!("({} bytes of binary data)", body.len()), false)),
    }
}

fn cap(mut text: String) -> (String, bool) {
    if text.len() <= PAYLOAD_CAP {
        return (text, false);
    }
    let mut end = PAYLOAD_CAP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

/// The outcome of Test Connection.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestOutcome {
    /// `success`, `auth_failure`, `timeout`, `network_error`, `tls_error`,
    /// `policy_denied`, `agent_unavailable`, or `invalid_request` (the
    /// health-check call cannot be made from the connection's settings).
    pub outcome: &'static str,
    /// Whether the connection works.
    pub success: bool,
    /// What happened and what to do about it.
    pub detail: String,
    /// The health check's HTTP status, if it got one.
    pub http_status: Option<u16>,
    /// The operation run.
    pub operation: String,
    /// How long it took.
    pub duration_ms: u64,
    /// `cloud` or the agent that ran it.
    pub ran_on: String,
}

/// Runs the health-check operation and classifies the outcome.
pub async fn test(core: &Core, c: &Resolved, actor: &str, saved: bool) -> TestOutcome {
    let op_id = c.definition.health_check.clone().unwrap_or_default();
    let Some(op) = c.operation(&op_id).cloned() else {
        return TestOutcome {
            outcome: "network_error",
            success: false,
            detail: format!("the connector has no health-check operation `{op_id}`"),
            http_status: None,
            operation: op_id,
            duration_ms: 0,
            ran_on: String::new(),
        };
    };
    let (out, ran_on, elapsed, timeout) = match prepare(core, c, &op, &Map::new()).await {
        Ok(request) => {
            let timeout = request.call.timeout_ms;
            let (out, ran_on, elapsed) = run(core, c, &op_id, request, actor, saved).await;
            (out, ran_on, elapsed, timeout)
        }
        // Discovery failed: judged like the call's own failure.
        Err(Unprepared::Failed(result)) => (
            InvokeResult {
                result: *result,
                rotated_refresh_token: None,
                token_fetches: 0,
            },
            String::new(),
            Duration::ZERO,
            10_000,
        ),
        Err(Unprepared::Invalid(problems)) => {
            return TestOutcome {
                outcome: "invalid_request",
                success: false,
                detail: problems.join("; "),
                http_status: None,
                operation: op_id,
                duration_ms: 0,
                ran_on: String::new(),
            };
        }
    };
    let r = out.result;
    let status = r.status;
    let (outcome, detail) = match (&r.error, r.ok) {
        (None, true) => (
            "success",
            format!(
                "authenticated and `{op_id}` answered {} in {} ms",
                status.map_or("OK".to_owned(), |s| s.to_string()),
                elapsed.as_millis()
            ),
        ),
        (Some(e), _) => match e.class {
            ErrorClass::AuthFailure => (
                "auth_failure",
                format!(
                    "{}: check the credentials (and, for OAuth2, the client's grants and scopes)",
                    e.message
                ),
            ),
            ErrorClass::Timeout => (
                "timeout",
                format!(
                    "no answer within {timeout} ms: is the base URL right, and is the system up? ({})",
                    e.message
                ),
            ),
            ErrorClass::TlsError => (
                "tls_error",
                format!(
                    "{}: add the system's CA under settings.tls.extra_ca_pem, or check the host name",
                    e.message
                ),
            ),
            // The message names who can widen the list (the dealer, or for
            // the cloud agent the platform operator).
            ErrorClass::PolicyDenied => ("policy_denied", e.message.clone()),
            ErrorClass::AgentUnavailable => ("agent_unavailable", e.message.clone()),
            ErrorClass::InvalidRequest
                if e.message.contains("PEM") || e.message.contains("certificate") =>
            {
                (
                    "tls_error",
                    format!(
                        "{}: fix the connection's TLS settings or client certificate",
                        e.message
                    ),
                )
            }
            ErrorClass::RateLimited | ErrorClass::UpstreamError => (
                "network_error",
                format!(
                    "the system is reachable but `{op_id}` failed: {}",
                    e.message
                ),
            ),
            _ => (
                "network_error",
                format!(
                    "{}: check the base URL, the port and that the system runs",
                    e.message
                ),
            ),
        },
        (None, false) => ("network_error", "the call failed".to_owned()),
    };
    TestOutcome {
        outcome,
        success: outcome == "success",
        detail,
        http_status: status,
        operation: op_id,
        duration_ms: elapsed.as_millis() as u64,
        ran_on,
    }
}

/// Health from a test outcome: healthy, degraded (answers, but wrongly or
/// slowly) or offline (no answer).
pub fn health_of(t: &TestOutcome, timeout_ms: u32) -> &'static str {
    match t.outcome {
        "success" if t.duration_ms > u64::from(timeout_ms) / 2 => "degraded",
        "success" => "healthy",
        _ if t.http_status.is_some() => "degraded",
        _ => "offline",
    }
}

/// Drops a connection from the cache of opened connections (after any change).
pub fn forget(core: &Core, id: &str) {
    core.connections.remove_where(|r| r.row.id == id);
}

/// An opened connection of `tenant_id`, from the cache (a few seconds old
/// at most, and dropped on every change made on this node) or the store.
pub async fn resolve_cached(
    core: &Core,
    tenant_id: &str,
    id: &str,
) -> Result<Arc<Resolved>, ConnectionError> {
    let key = format!("{tenant_id}/{id}");
    if let Some(r) = core.connections.get(&key) {
        return Ok(r);
    }
    let row =
        core.store
            .connection(tenant_id, id)
            .await?
            .ok_or_else(|| ConnectionError::NotFound {
                what: "connection",
                id: id.to_owned(),
            })?;
    let resolved = Arc::new(resolve(core, row).await?);
    core.connections.insert(key, resolved.clone());
    Ok(resolved)
}

/// Opens a stored connection: its connector version and credentials.
pub async fn resolve(core: &Core, row: ConnectionRow) -> Result<Resolved, ConnectionError> {
    let mut resolved = resolve_definition(core, row).await?;
    open_credentials(core, &mut resolved).await?;
    Ok(resolved)
}

/// A stored connection with its connector version, credentials left sealed
/// (for what needs only the definition: rotating credentials that may no
/// longer open, for one).
pub async fn resolve_definition(
    core: &Core,
    row: ConnectionRow,
) -> Result<Resolved, ConnectionError> {
    let version = core
        .store
        .version(&row.connector_id, &row.connector_version)
        .await?
        .ok_or_else(|| ConnectionError::NotFound {
            what: "connector version",
            id: row.connector_version.clone(),
        })?;
    let definition = Definition::stored(&version.definition).map_err(|problems| {
        ConnectionError::Internal(format!(
            "connector {} version {} does not read: {}",
            row.connector_id,
            row.connector_version,
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.problem))
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    Ok(Resolved {
        row,
        definition,
        credentials: HashMap::new(),
        proxy: None,
    })
}

/// Opens a connection's sealed credentials into `resolved`.
async fn open_credentials(core: &Core, resolved: &mut Resolved) -> Result<(), ConnectionError> {
    let row = &resolved.row;
    let mut proxy_user = None;
    let mut proxy_password = None;
    for (field, sealed) in core.store.secrets(&row.id).await? {
        let secret = core
            .vault
            .open(&core.store, &row.tenant_id, &row.id, &field, &sealed)
            .await
            .map_err(|e| {
                tracing::error!(connection = %row.id, %field, "cannot open a credential: {e}");
                ConnectionError::CredentialsUnreadable {
                    field: field.trim_start_matches("cred.").to_owned(),
                    connection: row.id.clone(),
                }
            })?;
        if let Some(name) = field.strip_prefix("cred.") {
            resolved.credentials.insert(name.to_owned(), secret);
        } else if field == "proxy.username" {
            proxy_user = Some(secret.expose().to_owned());
        } else if field == "proxy.password" {
            proxy_password = Some(secret);
        }
    }
    resolved.proxy = match (proxy_user, proxy_password) {
        (Some(u), Some(p)) => Some((u, p)),
        (Some(u), None) => Some((u, Secret::new(""))),
        _ => None,
    };
    Ok(())
}

/// Checks every active connection's health every `interval` (jittered),
/// four at a time, until shutdown.
pub async fn monitor_health(core: Arc<Core>, shutdown: tokio_util::sync::CancellationToken) {
    let interval = core.settings.health_check_interval;
    let limit = Arc::new(tokio::sync::Semaphore::new(4));
    loop {
        let jitter = Duration::from_millis(fastrand::u64(0..=interval.as_millis() as u64 / 10));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval + jitter) => {}
        }
        let active = match core.store.active_connections().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("health monitoring cannot list connections: {e}");
                continue;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();
        for row in active {
            let (core, limit) = (core.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                check_health(&core, row).await;
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Runs one health check and records it.
pub async fn check_health(core: &Core, row: ConnectionRow) -> Option<HealthRow> {
    let id = row.id.clone();
    let resolved = match resolve(core, row).await {
        Ok(r) => r,
        Err(e) => {
            // A connection that cannot even be opened is down, and says why.
            tracing::warn!(connection = %id, code = e.code(), "health check failed before the call: {e}");
            let h = HealthRow {
                connection_id: id,
                at: now_unix(),
                status: "offline".into(),
                outcome: e.code().to_owned(),
                detail: e.to_string(),
                duration_ms: 0,
            };
            if let Err(e) = core.store.record_health(&h).await {
                tracing::warn!(connection = %h.connection_id, "cannot record health: {e}");
            }
            return Some(h);
        }
    };
    let timeout = resolved.timeout_ms();
    let t = test(core, &resolved, "system:health", true).await;
    let h = HealthRow {
        connection_id: id,
        at: now_unix(),
        status: health_of(&t, timeout).to_owned(),
        outcome: t.outcome.to_owned(),
        detail: t.detail,
        duration_ms: t.duration_ms as i64,
    };
    if let Err(e) = core.store.record_health(&h).await {
        tracing::warn!(connection = %h.connection_id, "cannot record health: {e}");
    }
    Some(h)
}

/// The normalized result and where it ran, for the invoke endpoint.
pub fn result_json(out: InvokeResult, ran_on: &str, elapsed: Duration) -> Value {
    let mut v = serde_json::to_value(super::normalized::NormalizedResult::from_result(
        out.result, elapsed,
    ))
    .unwrap_or(Value::Null);
    v["ranOn"] = json!(ran_on);
    v["tokenFetches"] = json!(out.token_fetches);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_join_the_base_host() {
        assert_eq!(
            absolute("/oauth/token", "http://127.0.0.1:9100/api"),
            "http://127.0.0.1:9100/oauth/token"
        );
        assert_eq!(
            absolute("https://idp.example/token", "http://x"),
            "https://idp.example/token"
        );
    }

    #[test]
    fn health_follows_the_outcome() {
        let t = |outcome, status, ms| TestOutcome {
            outcome,
            success: outcome == "success",
            detail: String::new(),
            http_status: status,
            operation: "health".into(),
            duration_ms: ms,
            ran_on: "cloud".into(),
        };
        assert_eq!(health_of(&t("success", Some(200), 10), 1000), "healthy");
        assert_eq!(health_of(&t("success", Some(200), 900), 1000), "degraded");
        assert_eq!(
            health_of(&t("auth_failure", Some(401), 10), 1000),
            "degraded"
        );
        assert_eq!(health_of(&t("timeout", None, 1000), 1000), "offline");
    }
}
