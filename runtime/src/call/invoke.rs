//! Connector calls ([`InvokeRequest`]): authentication, the token cache,
//! TLS and proxy settings, and retries, around the plain call of the
//! runtime.
//!
//! - Static credentials (API key, Basic, Bearer) go into the request.
//! - OAuth2 tokens and dynamic API keys are fetched with the same HTTP
//!   client and allow-list as the call itself (a token endpoint on premises
//!   works like any target), cached per `auth_cache_key`, refreshed before
//!   they expire, and fetched afresh once when the target answers 401.
//!   A refresh token the endpoint rotates is handed back to the control
//!   plane in the result.
//! - A failed call is tried again only when it is safe (an idempotent method
//!   or an operation marked safe), for network errors, timeouts, 429 and
//!   502/503/504, with jittered exponential pauses; a `Retry-After` is
//!   honoured up to the longest pause.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use dibop_protocol::{
    CallAuth, CallRequest, CallResult, ClientAuth, ErrorClass, InvokeRequest, InvokeResult,
    KeyPlacement, OAuth2, OAuth2Grant, ProxyOptions, ResponseBody, TlsOptions,
};

use super::{Runtime, elapsed_us};

/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// Most cached tokens and clients.
const CACHE_LIMIT: usize = 4096;
const CLIENT_LIMIT: usize = 64;

/// Cached credentials of one connection.
#[derive(Clone)]
struct Cached {
    /// `Authorization` (or the dynamic key's header) value.
    header: (String, String),
    expires: Instant,
    refresh_token: Option<String>,
}

/// Tokens and per-settings HTTP clients.
#[derive(Default)]
pub(super) struct InvokeState {
    tokens: Mutex<HashMap<String, Cached>>,
    clients: Mutex<HashMap<u64, reqwest::Client>>,
}

impl std::fmt::Debug for InvokeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvokeState").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether repeating `method` cannot do harm twice.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method.to_ascii_uppercase().as_str(),
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
    )
}

fn retryable(result: &CallResult) -> bool {
    match result.error.as_ref().map(|e| e.class) {
        Some(ErrorClass::NetworkError | ErrorClass::Timeout | ErrorClass::RateLimited) => true,
        Some(ErrorClass::UpstreamError) => matches!(result.status, Some(502..=504)),
        _ => false,
    }
}

/// Seconds from a `Retry-After` header (delta-seconds form).
fn retry_after(result: &CallResult) -> Option<Duration> {
    result
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn backoff(attempt: u32, initial: Duration, cap: Duration) -> Duration {
    let exp = initial.saturating_mul(2u32.saturating_pow(attempt.min(16)));
    let ceiling = exp.min(cap);
    // Full jitter: anywhere from half to the whole ceiling.
    let half = ceiling / 2;
    half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
}

fn body_text(result: &CallResult) -> &str {
    match &result.body {
        ResponseBody::Json(t) | ResponseBody::Text(t) => t,
        _ => "",
    }
}

/// What went wrong getting a token, as the call's result.
fn token_failure(request: &CallRequest, agent: &str, what: &str, r: &CallResult) -> CallResult {
    let (class, detail) = match (&r.error, r.status) {
        (Some(e), None) => (e.class, e.message.clone()),
        (_, Some(status)) => {
            let v: serde_json::Value = serde_json::from_str(body_text(r)).unwrap_or_default();
            let reason = [v["error"].as_str(), v["error_description"].as_str()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let class = if (400..500).contains(&status) {
                ErrorClass::AuthFailure
            } else {
                ErrorClass::UpstreamError
            };
            (
                class,
                if reason.is_empty() {
                    format!("answered HTTP {status}")
                } else {
                    format!("answered HTTP {status} ({reason})")
                },
            )
        }
        (None, None) => (ErrorClass::Internal, "no answer".into()),
    };
    let mut out = CallResult::failure(
        request,
        agent,
        class,
        format!("{what} at {}: {detail}", r.url),
    );
    out.status = r.status;
    out
}

impl Runtime {
    /// The client for a call's TLS and proxy settings (the plain client
    /// when both are defaults).
    fn client_for(
        &self,
        tls: &TlsOptions,
        proxy: Option<&ProxyOptions>,
    ) -> Result<reqwest::Client, String> {
        if *tls == TlsOptions::default() && proxy.is_none() {
            return Ok(self.client.clone());
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tls.extra_ca_pem.hash(&mut hasher);
        tls.accept_invalid_certs.hash(&mut hasher);
        tls.client_cert_pem.hash(&mut hasher);
        tls.client_key_pem.hash(&mut hasher);
        if let Some(p) = proxy {
            (&p.url, &p.username, &p.password).hash(&mut hasher);
        }
        let key = hasher.finish();
        if let Some(c) = lock(&self.invoke.clients).get(&key) {
            return Ok(c.clone());
        }
        let mut builder = self.builder();
        if !tls.extra_ca_pem.trim().is_empty() {
            let certs = reqwest::Certificate::from_pem_bundle(tls.extra_ca_pem.as_bytes())
                .map_err(|e| format!("the extra CA certificate is not valid PEM: {e}"))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if tls.accept_invalid_certs {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if !tls.client_cert_pem.trim().is_empty() {
            let pem = format!(
                "{}\n{}",
                tls.client_cert_pem.trim(),
                tls.client_key_pem.trim()
            );
            let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|_| {
                "the client certificate or its key is not valid PEM (give the certificate chain and a PKCS#8, RSA or EC key)"
                    .to_owned()
            })?;
            builder = builder.identity(identity);
        }
        if let Some(p) = proxy {
            let mut proxy = reqwest::Proxy::all(&p.url)
                .map_err(|e| format!("proxy `{}` is not a URL: {e}", p.url))?;
            if !p.username.is_empty() {
                proxy = proxy.basic_auth(&p.username, &p.password);
            }
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut clients = lock(&self.invoke.clients);
        if clients.len() >= CLIENT_LIMIT {
            clients.clear();
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Performs a connector call. Never fails: every failure is a
    /// classified result.
    pub async fn invoke(&self, request: &InvokeRequest) -> InvokeResult {
        let started = Instant::now();
        let mut out = self.invoke_inner(request).await;
        out.result.timing.total_us = elapsed_us(started);
        out.result.call_id = request.call.call_id;
        out
    }

    async fn invoke_inner(&self, request: &InvokeRequest) -> InvokeResult {
        let mut out = InvokeResult {
            result: CallResult::failure(&request.call, &self.agent_id, ErrorClass::Internal, ""),
            rotated_refresh_token: None,
            token_fetches: 0,
        };
        // Credentials that name a secret kept on this agent get it here, and
        // nowhere before.
        let resolved;
        let request = match self.secrets.resolve(request) {
            Ok(None) => request,
            Ok(Some(r)) => {
                resolved = r;
                &resolved
            }
            Err(message) => {
                out.result = CallResult::failure(
                    &request.call,
                    &self.agent_id,
                    ErrorClass::InvalidRequest,
                    message,
                );
                return out;
            }
        };
        let client = match self.client_for(&request.tls, request.proxy.as_ref()) {
            Ok(c) => c,
            Err(message) => {
                out.result = CallResult::failure(
                    &request.call,
                    &self.agent_id,
                    ErrorClass::InvalidRequest,
                    message,
                );
                return out;
            }
        };
        let retry = &request.retry;
        let may_repeat = retry.safe_to_retry || is_idempotent(&request.call.method);
        let max_attempts = retry.max_attempts.clamp(1, 10);
        let (initial, cap) = (
            Duration::from_millis(u64::from(retry.initial_backoff_ms.max(1))),
            Duration::from_millis(u64::from(retry.max_backoff_ms.max(1))),
        );
        let mut attempts = 0u32;
        let mut refreshed = false;
        loop {
            attempts += 1;
            let call = match self
                .authenticated(&client, request, &mut out, refreshed)
                .await
            {
                Ok(call) => call,
                Err(failure) => {
                    out.result = failure;
                    out.result.attempts = attempts;
                    return out;
                }
            };
            let mut result = self.perform_with(&client, &call, Instant::now()).await;
            // The URL as the caller knows it: never an API key in a query.
            result.url = request.call.url.clone();
            let token_based = matches!(
                request.auth,
                CallAuth::OAuth2(_) | CallAuth::DynamicApiKey(_)
            );
            if result.status == Some(401) && token_based && !refreshed {
                // The token may have been revoked or expired early: once more with a fresh one.
                lock(&self.invoke.tokens).remove(&request.auth_cache_key);
                refreshed = true;
                attempts -= 1;
                continue;
            }
            if attempts < max_attempts && may_repeat && retryable(&result) {
                let pause = retry_after(&result)
                    .map(|d| d.min(cap))
                    .unwrap_or_else(|| backoff(attempts - 1, initial, cap));
                tracing::debug!(call_id = request.call.call_id, attempts, ?pause, "retrying");
                tokio::time::sleep(pause).await;
                continue;
            }
            result.attempts = attempts;
            out.result = result;
            return out;
        }
    }

    /// The call with its credentials applied; fetches a token when needed.
    async fn authenticated(
        &self,
        client: &reqwest::Client,
        request: &InvokeRequest,
        out: &mut InvokeResult,
        force_fetch: bool,
    ) -> Result<CallRequest, CallResult> {
        let mut call = request.call.clone();
        match &request.auth {
            CallAuth::None => {}
            CallAuth::ApiKey {
                placement,
                prefix,
                key,
            } => match placement {
                KeyPlacement::Header(name) => {
                    call.headers.push((name.clone(), format!("{prefix}{key}")))
                }
                KeyPlacement::Query(name) => {
                    let mut url = reqwest::Url::parse(&call.url).map_err(|e| {
                        CallResult::failure(
                            &call,
                            &self.agent_id,
                            ErrorClass::InvalidRequest,
                            format!("`{}` is not a URL: {e}", call.url),
                        )
                    })?;
                    url.query_pairs_mut()
                        .append_pair(name, &format!("{prefix}{key}"));
                    call.url = url.into();
                }
            },
            CallAuth::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                call.headers
                    .push(("Authorization".into(), format!("Basic {encoded}")));
            }
            CallAuth::Bearer { token } => call
                .headers
                .push(("Authorization".into(), format!("Bearer {token}"))),
            CallAuth::OAuth2(oauth) => {
                let header = self
                    .oauth_header(client, request, oauth, out, force_fetch)
                    .await?;
                call.headers.push(header);
            }
            CallAuth::AwsSigV4(aws) => {
                let url = reqwest::Url::parse(&call.url).map_err(|e| {
                    CallResult::failure(
                        &call,
                        &self.agent_id,
                        ErrorClass::InvalidRequest,
                        format!("`{}` is not a URL: {e}", call.url),
                    )
                })?;
                let creds = super::sigv4::Credentials {
                    access_key_id: &aws.access_key_id,
                    secret_access_key: &aws.secret_access_key,
                    session_token: &aws.session_token,
                    region: &aws.region,
                    service: &aws.service,
                };
                let added = super::sigv4::sign(
                    &call.method,
                    &url,
                    &call.headers,
                    &call.body,
                    &creds,
                    &super::sigv4::amz_date_now(),
                    true,
                );
                call.headers.extend(added);
            }
            CallAuth::DynamicApiKey(d) => {
                let cached = lock(&self.invoke.tokens)
                    .get(&request.auth_cache_key)
                    .cloned();
                let header = match cached {
                    Some(c) if !force_fetch && c.expires > Instant::now() => c.header,
                    _ => {
                        out.token_fetches += 1;
                        let login = CallRequest {
                            call_id: request.call.call_id,
                            method: d.method.to_ascii_uppercase(),
                            url: d.url.clone(),
                            headers: vec![("Content-Type".into(), "application/json".into())],
                            body: d.body.clone().into_bytes(),
                            timeout_ms: request.call.timeout_ms,
                        };
                        let r = self.perform_with(client, &login, Instant::now()).await;
                        if !r.ok {
                            return Err(token_failure(
                                &request.call,
                                &self.agent_id,
                                "fetching the API key",
                                &r,
                            ));
                        }
                        let v: serde_json::Value =
                            serde_json::from_str(body_text(&r)).unwrap_or_default();
                        let Some(key) = v.pointer(&d.pointer).and_then(|k| match k {
                            serde_json::Value::String(s) => Some(s.clone()),
                            serde_json::Value::Number(n) => Some(n.to_string()),
                            _ => None,
                        }) else {
                            return Err(CallResult::failure(
                                &request.call,
                                &self.agent_id,
                                ErrorClass::AuthFailure,
                                format!(
                                    "the login answer of {} has no key at {}",
                                    d.url, d.pointer
                                ),
                            ));
                        };
                        let header = (d.header.clone(), format!("{}{key}", d.prefix));
                        self.remember(
                            &request.auth_cache_key,
                            Cached {
                                header: header.clone(),
                                expires: Instant::now()
                                    + Duration::from_secs(u64::from(d.ttl_secs.max(1))),
                                refresh_token: None,
                            },
                        );
                        header
                    }
                };
                call.headers.push(header);
            }
        }
        Ok(call)
    }

    fn remember(&self, key: &str, entry: Cached) {
        let mut tokens = lock(&self.invoke.tokens);
        if tokens.len() >= CACHE_LIMIT {
            let now = Instant::now();
            tokens.retain(|_, c| c.expires > now);
            if tokens.len() >= CACHE_LIMIT {
                tokens.clear();
            }
        }
        tokens.insert(key.to_owned(), entry);
    }

    async fn oauth_header(
        &self,
        client: &reqwest::Client,
        request: &InvokeRequest,
        oauth: &OAuth2,
        out: &mut InvokeResult,
        force_fetch: bool,
    ) -> Result<(String, String), CallResult> {
        let cached = lock(&self.invoke.tokens)
            .get(&request.auth_cache_key)
            .cloned();
        if let Some(c) = &cached
            && !force_fetch
            && c.expires > Instant::now() + RENEW_BEFORE
        {
            return Ok(c.header.clone());
        }
        // A refresh token (rotated or configured) is tried first; the
        // original grant is the fallback.
        let refresh = cached
            .as_ref()
            .and_then(|c| c.refresh_token.clone())
            .or_else(|| (!oauth.refresh_token.is_empty()).then(|| oauth.refresh_token.clone()));
        let mut last = None;
        for use_refresh in [true, false] {
            let mut form: Vec<(&str, String)> = Vec::new();
            match (use_refresh, &refresh, oauth.grant) {
                (true, Some(rt), _) => {
                    form.push(("grant_type", "refresh_token".into()));
                    form.push(("refresh_token", rt.clone()));
                }
                (true, None, _) => continue,
                (false, _, OAuth2Grant::ClientCredentials) => {
                    form.push(("grant_type", "client_credentials".into()))
                }
                (false, _, OAuth2Grant::Password) => {
                    form.push(("grant_type", "password".into()));
                    form.push(("username", oauth.username.clone()));
                    form.push(("password", oauth.password.clone()));
                }
                (false, _, OAuth2Grant::RefreshToken) => break,
            }
            if !oauth.scopes.is_empty() {
                form.push(("scope", oauth.scopes.join(" ")));
            }
            let mut headers = vec![
                (
                    "Content-Type".to_owned(),
                    "application/x-www-form-urlencoded".to_owned(),
                ),
                ("Accept".to_owned(), "application/json".to_owned()),
            ];
            match oauth.client_auth {
                ClientAuth::Basic => {
                    let enc = |s: &str| {
                        url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                    };
                    let pair = format!("{}:{}", enc(&oauth.client_id), enc(&oauth.client_secret));
                    headers.push((
                        "Authorization".into(),
                        format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(pair)
                        ),
                    ));
                }
                ClientAuth::Post => {
                    form.push(("client_id", oauth.client_id.clone()));
                    if !oauth.client_secret.is_empty() {
                        form.push(("client_secret", oauth.client_secret.clone()));
                    }
                }
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            let token_request = CallRequest {
                call_id: request.call.call_id,
                method: "POST".into(),
                url: oauth.token_url.clone(),
                headers,
                body: body.into_bytes(),
                timeout_ms: request.call.timeout_ms,
            };
            out.token_fetches += 1;
            let r = self
                .perform_with(client, &token_request, Instant::now())
                .await;
            let v: serde_json::Value = serde_json::from_str(body_text(&r)).unwrap_or_default();
            match v["access_token"].as_str() {
                Some(token) if r.ok => {
                    let kind = v["token_type"]
                        .as_str()
                        .filter(|t| !t.eq_ignore_ascii_case("bearer"))
                        .unwrap_or("Bearer");
                    let lifetime = v["expires_in"]
                        .as_u64()
                        .or_else(|| v["expires_in"].as_str().and_then(|s| s.parse().ok()))
                        .unwrap_or(3600);
                    let new_refresh = v["refresh_token"].as_str().map(str::to_owned);
                    if let Some(rt) = &new_refresh
                        && Some(rt) != refresh.as_ref()
                    {
                        out.rotated_refresh_token = Some(rt.clone());
                    }
                    let header = ("Authorization".to_owned(), format!("{kind} {token}"));
                    self.remember(
                        &request.auth_cache_key,
                        Cached {
                            header: header.clone(),
                            expires: Instant::now() + Duration::from_secs(lifetime),
                            refresh_token: new_refresh.or(refresh.clone()),
                        },
                    );
                    return Ok(header);
                }
                _ => last = Some(r),
            }
        }
        let r = last.unwrap_or_else(|| {
            CallResult::failure(
                &request.call,
                &self.agent_id,
                ErrorClass::AuthFailure,
                "no refresh token to use",
            )
        });
        Err(token_failure(
            &request.call,
            &self.agent_id,
            "getting an OAuth2 token",
            &r,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_failures_are_retried() {
        let req = CallRequest {
            call_id: 1,
            method: "GET".into(),
            url: "http://x/".into(),
            headers: vec![],
            body: vec![],
            timeout_ms: 1000,
        };
        let mut r = CallResult::failure(&req, "a", ErrorClass::UpstreamError, "x");
        r.status = Some(503);
        assert!(retryable(&r));
        r.status = Some(500);
        assert!(!retryable(&r));
        let r = CallResult::failure(&req, "a", ErrorClass::AuthFailure, "x");
        assert!(!retryable(&r));
        assert!(retryable(&CallResult::failure(
            &req,
            "a",
            ErrorClass::NetworkError,
            "x"
        )));
        assert!(is_idempotent("put") && !is_idempotent("POST"));
    }

    #[test]
    fn pauses_grow_and_stay_under_the_cap() {
        let (initial, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..20 {
            let d = backoff(attempt, initial, cap);
            assert!(d <= cap && d >= initial.min(cap) / 2, "{d:?}");
        }
        assert!(backoff(0, initial, cap) <= initial);
    }
}
