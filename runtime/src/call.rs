//! Performs calls: one HTTP request per [`CallRequest`], answered with one
//! normalized [`CallResult`] whatever happens. The allow-list is checked
//! before anything leaves the machine, again in DNS resolution, and on every
//! redirect.
//!
//! Dropping the future returned by [`Runtime::perform`] aborts the HTTP
//! request; that is how a cancelled call stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dibop_protocol::{CallError, CallRequest, CallResult, ErrorClass, ResponseBody, Timing};
use reqwest::{Method, Url};

use crate::policy::{AllowList, PolicyDenied, PolicyResolver};

mod invoke;
pub mod secrets;
mod sigv4;
pub use invoke::is_idempotent;

/// Most redirects followed for one call.
const MAX_REDIRECTS: usize = 10;

/// The HTTP side of the agent.
#[derive(Debug, Clone)]
pub struct Runtime {
    client: reqwest::Client,
    policy: Arc<AllowList>,
    agent_id: Arc<str>,
    max_response_bytes: u64,
    max_timeout: Duration,
    invoke: Arc<invoke::InvokeState>,
    /// The agent's local secrets (none in the control plane's cloud runtime).
    secrets: secrets::LocalSecrets,
}

/// An HTTP client builder that obeys `policy` on every connection and redirect.
fn client_builder(policy: &Arc<AllowList>) -> reqwest::ClientBuilder {
    let redirect_policy = {
        let policy = policy.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match policy.check(attempt.url()) {
                Ok(_) => attempt.follow(),
                Err(denied) => attempt.error(denied),
            }
        })
    };
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .redirect(redirect_policy)
        .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("dibop-agent/", env!("CARGO_PKG_VERSION")))
}

impl Runtime {
    /// Builds the HTTP client. `agent_id` is stamped on every result.
    pub fn new(
        policy: Arc<AllowList>,
        agent_id: &str,
        max_response_bytes: u64,
        max_timeout: Duration,
    ) -> anyhow::Result<Runtime> {
        let client = client_builder(&policy).build()?;
        Ok(Runtime {
            client,
            policy,
            agent_id: agent_id.into(),
            max_response_bytes,
            max_timeout,
            invoke: Arc::default(),
            secrets: secrets::LocalSecrets::default(),
        })
    }

    /// Lets calls use the secrets kept in `data_dir` (`agent-secret:NAME`
    /// credentials); see [`secrets`].
    pub fn with_local_secrets(mut self, data_dir: &std::path::Path) -> Runtime {
        self.secrets = secrets::LocalSecrets::in_data_dir(data_dir);
        self
    }

    /// A builder for a client that obeys this runtime's allow-list.
    fn builder(&self) -> reqwest::ClientBuilder {
        client_builder(&self.policy)
    }

    /// The id stamped on results.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// Performs one call. Never fails: every failure is a classified result.
    pub async fn perform(&self, request: &CallRequest) -> CallResult {
        let started = Instant::now();
        let mut result = self.perform_with(&self.client, request, started).await;
        result.timing.total_us = elapsed_us(started);
        result
    }

    async fn perform_with(
        &self,
        client: &reqwest::Client,
        request: &CallRequest,
        started: Instant,
    ) -> CallResult {
        let fail =
            |class, message: String| CallResult::failure(request, &self.agent_id, class, message);
        let Ok(method) = Method::from_bytes(request.method.as_bytes()) else {
            return fail(
                ErrorClass::InvalidRequest,
                format!("`{}` is not an HTTP method", request.method),
            );
        };
        let url = match Url::parse(&request.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => {
                return fail(
                    ErrorClass::InvalidRequest,
                    format!("scheme `{}` is not http or https", u.scheme()),
                );
            }
            Err(e) => {
                return fail(
                    ErrorClass::InvalidRequest,
                    format!("`{}` is not a URL: {e}", request.url),
                );
            }
        };
        if let Err(denied) = self.policy.check(&url) {
            return fail(ErrorClass::PolicyDenied, denied.0);
        }
        let timeout =
            Duration::from_millis(u64::from(request.timeout_ms.max(1))).min(self.max_timeout);
        let mut builder = client.request(method, url).timeout(timeout);
        for (name, value) in &request.headers {
            let name = match reqwest::header::HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    return fail(
                        ErrorClass::InvalidRequest,
                        format!("`{name}` is not a valid header name"),
                    );
                }
            };
            let value = match reqwest::header::HeaderValue::from_str(value) {
                Ok(v) => v,
                Err(_) => {
                    return fail(
                        ErrorClass::InvalidRequest,
                        format!("the value of header `{name}` is not valid"),
                    );
                }
            };
            builder = builder.header(name, value);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let deadline = started + timeout;
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let (class, message) = classify(&e, timeout);
                let mut r = fail(class, message);
                r.attempts = 1;
                return r;
            }
        };
        let headers_us = elapsed_us(started);
        let status = response.status();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let mut result = CallResult {
            call_id: request.call_id,
            ok: status.is_success(),
            method: request.method.clone(),
            url: request.url.clone(),
            status: Some(status.as_u16()),
            status_text: status.canonical_reason().map(str::to_owned),
            headers,
            body: ResponseBody::Empty,
            parse_error: None,
            timing: Timing {
                total_us: 0,
                headers_us,
            },
            attempts: 1,
            agent_id: self.agent_id.to_string(),
            error: None,
        };
        let bytes = match read_limited(response, self.max_response_bytes, deadline).await {
            Ok(b) => b,
            Err((class, message)) => {
                result.ok = false;
                result.error = Some(CallError { class, message });
                return result;
            }
        };
        let (body, parse_error) = interpret_body(bytes, content_type.as_deref());
        result.body = body;
        result.parse_error = parse_error;
        if !status.is_success() {
            let class = match status.as_u16() {
                401 | 403 => ErrorClass::AuthFailure,
                429 => ErrorClass::RateLimited,
                _ => ErrorClass::UpstreamError,
            };
            result.error = Some(CallError {
                class,
                message: format!("the target answered {status}"),
            });
        }
        result
    }
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: u64,
    deadline: Instant,
) -> Result<Vec<u8>, (ErrorClass, String)> {
    if let Some(len) = response.content_length()
        && len > limit
    {
        return Err((
            ErrorClass::ResponseTooLarge,
            format!("response body of {len} bytes exceeds the agent's limit of {limit} bytes"),
        ));
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    loop {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk()).await;
        match chunk {
            Err(_) => {
                return Err((
                    ErrorClass::Timeout,
                    "timed out reading the response body".into(),
                ));
            }
            Ok(Err(e)) => {
                let (class, message) = classify(&e, Duration::ZERO);
                return Err((
                    class,
                    format!("reading the response body failed: {message}"),
                ));
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(bytes))) => {
                if body.len() as u64 + bytes.len() as u64 > limit {
                    return Err((
                        ErrorClass::ResponseTooLarge,
                        format!("response body exceeds the agent's limit of {limit} bytes"),
                    ));
                }
                body.extend_from_slice(&bytes);
            }
        }
    }
}

/// Turns the raw body into the normalized body: JSON where it is JSON.
pub fn interpret_body(
    bytes: Vec<u8>,
    content_type: Option<&str>,
) -> (ResponseBody, Option<String>) {
    if bytes.is_empty() {
        return (ResponseBody::Empty, None);
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => return (ResponseBody::Binary(e.into_bytes()), None),
    };
    let declared_json = content_type.is_some_and(|ct| ct.contains("json"));
    let looks_json =
        content_type.is_none() && matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['));
    if declared_json || looks_json {
        match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            Ok(_) => return (ResponseBody::Json(text), None),
            Err(e) if declared_json => return (ResponseBody::Text(text), Some(e.to_string())),
            Err(_) => {}
        }
    }
    (ResponseBody::Text(text), None)
}

fn classify(error: &reqwest::Error, timeout: Duration) -> (ErrorClass, String) {
    use std::error::Error as _;
    let mut source = error.source();
    let mut chain = error.to_string();
    while let Some(s) = source {
        if let Some(denied) = s.downcast_ref::<PolicyDenied>() {
            return (ErrorClass::PolicyDenied, denied.0.clone());
        }
        // An I/O error's `source()` skips the error it wraps: look inside.
        let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
            s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            let hint = match tls {
                rustls::Error::InvalidMessage(_) => {
                    " (the target does not speak TLS on this port: is it plain http://?)"
                }
                _ => "",
            };
            return (
                ErrorClass::TlsError,
                format!("TLS with the target failed: {tls}{hint}"),
            );
        }
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    if error.is_timeout() {
        return (
            ErrorClass::Timeout,
            format!("no complete answer within {} ms", timeout.as_millis()),
        );
    }
    if error.is_redirect() {
        return (ErrorClass::UpstreamError, chain);
    }
    if error.is_builder() || error.is_request() && !error.is_connect() && chain.contains("invalid")
    {
        return (ErrorClass::InvalidRequest, chain);
    }
    let lower = chain.to_ascii_lowercase();
    if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        return (
            ErrorClass::TlsError,
            format!(
                "TLS with the target failed: {chain} (the target does not speak TLS on this port: is it plain http://?)"
            ),
        );
    }
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        return (ErrorClass::TlsError, chain);
    }
    (ErrorClass::NetworkError, chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-trick HTTP server: answers every connection with `response`
    /// after `delay`. Returns its address.
    async fn serve_raw(response: String, delay: Duration) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        addr
    }

    fn runtime(allow: &[String], max_response_bytes: u64) -> Runtime {
        let policy = Arc::new(AllowList::parse(allow).unwrap());
        Runtime::new(
            policy,
            "agt_test",
            max_response_bytes,
            Duration::from_secs(5),
        )
        .unwrap()
    }

    fn get(url: String, timeout_ms: u32) -> CallRequest {
        CallRequest {
            call_id: 1,
            method: "GET".into(),
            url,
            headers: vec![],
            body: vec![],
            timeout_ms,
        }
    }

    fn class(result: &CallResult) -> Option<ErrorClass> {
        result.error.as_ref().map(|e| e.class)
    }

    #[tokio::test]
    async fn oversized_responses_are_refused() {
        let body = "x".repeat(2048);
        let addr = serve_raw(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
            Duration::ZERO,
        )
        .await;
        let rt = runtime(&[addr.to_string()], 1024);
        let result = rt.perform(&get(format!("http://{addr}/"), 2000)).await;
        assert_eq!(
            class(&result),
            Some(ErrorClass::ResponseTooLarge),
            "{result:?}"
        );
        assert!(!result.ok);
    }

    /// `https://` to a port that speaks plain HTTP is a TLS failure that
    /// says so, not a network error.
    #[tokio::test]
    async fn https_to_a_plain_http_port_is_a_tls_error() {
        let addr = serve_raw(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".into(),
            Duration::ZERO,
        )
        .await;
        let rt = runtime(&[addr.to_string()], 1024);
        let result = rt.perform(&get(format!("https://{addr}/"), 2000)).await;
        assert_eq!(class(&result), Some(ErrorClass::TlsError), "{result:?}");
        let message = result.error.map(|e| e.message).unwrap_or_default();
        assert!(message.contains("plain http"), "{message}");
    }

    #[tokio::test]
    async fn slow_targets_time_out() {
        let addr = serve_raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into(),
            Duration::from_secs(3),
        )
        .await;
        let rt = runtime(&[addr.to_string()], 1024);
        let result = rt.perform(&get(format!("http://{addr}/"), 200)).await;
        assert_eq!(class(&result), Some(ErrorClass::Timeout), "{result:?}");
    }

    #[tokio::test]
    async fn refused_connections_are_network_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let rt = runtime(&[addr.to_string()], 1024);
        let result = rt.perform(&get(format!("http://{addr}/"), 2000)).await;
        assert_eq!(class(&result), Some(ErrorClass::NetworkError), "{result:?}");
    }

    #[tokio::test]
    async fn redirects_cannot_leave_the_allow_list() {
        let outside = serve_raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi".into(),
            Duration::ZERO,
        )
        .await;
        let inside = serve_raw(
            format!("HTTP/1.1 302 Found\r\nlocation: http://{outside}/secret\r\ncontent-length: 0\r\n\r\n"),
            Duration::ZERO,
        )
        .await;
        let rt = runtime(&[inside.to_string()], 1024);
        let result = rt.perform(&get(format!("http://{inside}/"), 2000)).await;
        assert_eq!(class(&result), Some(ErrorClass::PolicyDenied), "{result:?}");
        // Allowed on both ends, the redirect is followed.
        let rt = runtime(&[inside.to_string(), outside.to_string()], 1024);
        let result = rt.perform(&get(format!("http://{inside}/"), 2000)).await;
        assert!(result.ok, "{result:?}");
        assert_eq!(result.body, ResponseBody::Text("hi".into()));
    }

    #[tokio::test]
    async fn invalid_requests_never_leave_the_agent() {
        let rt = runtime(&["127.0.0.1".to_owned()], 1024);
        let mut bad_method = get("http://127.0.0.1:1/".into(), 100);
        bad_method.method = "GE T".into();
        assert_eq!(
            class(&rt.perform(&bad_method).await),
            Some(ErrorClass::InvalidRequest)
        );
        let mut bad_header = get("http://127.0.0.1:1/".into(), 100);
        bad_header
            .headers
            .push(("x-bad".into(), "line\nbreak".into()));
        assert_eq!(
            class(&rt.perform(&bad_header).await),
            Some(ErrorClass::InvalidRequest)
        );
        assert_eq!(
            class(&rt.perform(&get("file:///etc/passwd".into(), 100)).await),
            Some(ErrorClass::InvalidRequest)
        );
    }

    #[test]
    fn bodies_are_interpreted() {
        assert_eq!(
            interpret_body(Vec::new(), None),
            (ResponseBody::Empty, None)
        );
        assert_eq!(
            interpret_body(
                br#"{"a":1}"#.to_vec(),
                Some("application/json; charset=utf-8")
            ),
            (ResponseBody::Json(r#"{"a":1}"#.into()), None)
        );
        assert_eq!(
            interpret_body(b"[1,2]".to_vec(), None),
            (ResponseBody::Json("[1,2]".into()), None)
        );
        let (body, err) = interpret_body(b"{broken".to_vec(), Some("application/json"));
        assert_eq!(body, ResponseBody::Text("{broken".into()));
        assert!(err.is_some());
        assert_eq!(
            interpret_body(b"hello".to_vec(), Some("text/plain")),
            (ResponseBody::Text("hello".into()), None)
        );
        assert_eq!(
            interpret_body(vec![0xff, 0xfe], None),
            (ResponseBody::Binary(vec![0xff, 0xfe]), None)
        );
    }
}
