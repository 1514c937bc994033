//! The messages of both directions and the types they carry.
//!
//! Append-only: new variants go at the end of an enum, never in between.

use serde::{Deserialize, Serialize};

/// Everything an agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentToControl {
    /// First message on every connection: which protocol versions the agent speaks.
    Hello(Hello),
    /// Enrollment: redeem a token for a client certificate.
    Enroll(EnrollRequest),
    /// Liveness and load report on the control stream.
    Heartbeat(Heartbeat),
    /// Ask for a fresh client certificate for the same key.
    RenewCertificate(RenewCertificate),
    /// The outcome of a call, on that call's stream.
    CallResult(CallResult),
    /// The outcome of an [`InvokeRequest`] (protocol version 2).
    InvokeResult(Box<InvokeResult>),
    /// The call of this stream was received and is about to be performed:
    /// the first frame on a call stream, before its result (protocol version 3).
    Accepted(CallAccepted),
    /// The answer to a [`ControlToAgent::Ping`], on its stream (protocol version 3).
    Pong(u64),
}

/// A call taken on by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallAccepted {
    /// The call's id.
    pub call_id: u64,
}

/// Everything the control plane sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlToAgent {
    /// The handshake is accepted.
    Welcome(Welcome),
    /// The handshake, enrollment or renewal is refused; the connection closes.
    Rejected(Rejection),
    /// Enrollment succeeded.
    Enrolled(Enrolled),
    /// Answer to a heartbeat.
    HeartbeatAck(HeartbeatAck),
    /// A fresh client certificate.
    CertificateRenewed(CertificateRenewed),
    /// Perform this call (first and only message on a call stream).
    Call(CallRequest),
    /// Perform a connector call with auth, TLS, proxy and retry settings
    /// (first and only message on a call stream; protocol version 2).
    Invoke(Box<InvokeRequest>),
    /// A liveness probe on a stream of its own, answered by `Pong` with the
    /// same number (protocol version 3).
    Ping(u64),
}

/// The agent's opening message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Oldest protocol version the agent speaks.
    pub min_version: u16,
    /// Newest protocol version the agent speaks.
    pub max_version: u16,
    /// The agent's release, e.g. `0.1.0`.
    pub agent_version: String,
    /// The host the agent runs on, for the console.
    pub hostname: String,
}

/// The control plane's acceptance of a handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated protocol version.
    pub version: u16,
    /// The agent's id as the control plane knows it (empty on enrollment connections).
    pub agent_id: String,
    /// How often the agent should send heartbeats.
    pub heartbeat_interval_ms: u32,
}

/// Why a handshake, enrollment or renewal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectCode {
    /// No protocol version in common.
    UnsupportedVersion,
    /// No or an unknown client certificate.
    Unauthenticated,
    /// The agent has been revoked by an admin.
    Revoked,
    /// The enrollment token is not known.
    TokenUnknown,
    /// The enrollment token was already used.
    TokenUsed,
    /// The enrollment token has expired.
    TokenExpired,
    /// The certificate signing request is not acceptable.
    InvalidCsr,
    /// The message was not the one expected at this point.
    UnexpectedMessage,
    /// The control plane failed; try again later.
    Internal,
}

/// A refusal with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// What happened and what to do about it.
    pub message: String,
}

/// Redeems an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The single-use secret from the enrollment token.
    pub token_secret: String,
    /// DER-encoded PKCS#10 certificate signing request for the agent's own key.
    pub csr_der: Vec<u8>,
    /// A display name for the agent (defaults to its hostname).
    pub name: String,
}

/// A successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The agent's id.
    pub agent_id: String,
    /// The tenant that owns the agent group.
    pub tenant_id: String,
    /// The agent group the agent joined.
    pub group_id: String,
    /// DER-encoded client certificate.
    pub certificate_der: Vec<u8>,
    /// DER-encoded CA certificate of the control plane.
    pub ca_certificate_der: Vec<u8>,
    /// Expiry of the client certificate (seconds since the Unix epoch).
    pub not_after_unix: i64,
}

/// Asks for a fresh certificate for the key the agent already holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewCertificate {
    /// DER-encoded CSR signed with the agent's current key.
    pub csr_der: Vec<u8>,
}

/// A renewed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRenewed {
    /// DER-encoded client certificate.
    pub certificate_der: Vec<u8>,
    /// Expiry (seconds since the Unix epoch).
    pub not_after_unix: i64,
}

/// Liveness and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Increases by one per heartbeat.
    pub seq: u64,
    /// Calls the agent is performing right now.
    pub in_flight: u32,
}

/// Answer to a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The sequence number being answered.
    pub seq: u64,
}

/// One HTTP call for the agent to perform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// Identifies the call in logs on both sides.
    pub call_id: u64,
    /// HTTP method, upper case.
    pub method: String,
    /// Absolute `http` or `https` URL.
    pub url: String,
    /// Request headers, in order; names may repeat.
    pub headers: Vec<(String, String)>,
    /// Request body (empty for none).
    pub body: Vec<u8>,
    /// Deadline for the whole call, in milliseconds.
    pub timeout_ms: u32,
}

/// The response body as the agent understood it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// No response, or an empty body.
    Empty,
    /// A body that parsed as JSON; the text is valid JSON.
    Json(String),
    /// A UTF-8 body that is not JSON (or JSON that failed to parse, see `parse_error`).
    Text(String),
    /// A body that is not UTF-8.
    Binary(Vec<u8>),
}

/// Where a failed call failed. Retry decisions read this, never messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// The target refused the credentials (401/403).
    AuthFailure,
    /// The call did not complete within its deadline.
    Timeout,
    /// Connection refused, reset, DNS failure and the like.
    NetworkError,
    /// The TLS handshake with the target failed.
    TlsError,
    /// The agent's local allow-list forbids the target.
    PolicyDenied,
    /// No agent could take the call.
    AgentUnavailable,
    /// The target answered 429.
    RateLimited,
    /// The target answered with another error status (5xx, 4xx).
    UpstreamError,
    /// The request itself is invalid (bad URL, method or header).
    InvalidRequest,
    /// The response exceeded the agent's size limit.
    ResponseTooLarge,
    /// The call was cancelled by its caller.
    Cancelled,
    /// Something failed inside DIBOP.
    Internal,
    /// The connection's circuit breaker is open after repeated failures of
    /// the system: the call was not sent (decided by the control plane).
    CircuitOpen,
    /// The connector's own rate limit would have delayed the call past its
    /// timeout: the call was not sent (decided by the control plane).
    Throttled,
}

impl ErrorClass {
    /// The stable snake_case name used in the API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::AuthFailure => "auth_failure",
            ErrorClass::Timeout => "timeout",
            ErrorClass::NetworkError => "network_error",
            ErrorClass::TlsError => "tls_error",
            ErrorClass::PolicyDenied => "policy_denied",
            ErrorClass::AgentUnavailable => "agent_unavailable",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::UpstreamError => "upstream_error",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::ResponseTooLarge => "response_too_large",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::Internal => "internal",
            ErrorClass::CircuitOpen => "circuit_open",
            ErrorClass::Throttled => "throttled",
        }
    }

    /// Whether the request may have reached the target. A call that never
    /// left (policy, invalid request, no agent) can be sent elsewhere safely.
    pub fn request_may_have_been_sent(self) -> bool {
        !matches!(
            self,
            ErrorClass::PolicyDenied
                | ErrorClass::AgentUnavailable
                | ErrorClass::InvalidRequest
                | ErrorClass::CircuitOpen
                | ErrorClass::Throttled
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    /// Where it failed.
    pub class: ErrorClass,
    /// What happened, for a person.
    pub message: String,
}

/// Time spent on a call, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From the agent receiving the call to the result being ready.
    pub total_us: u64,
    /// From sending the request to the response headers.
    pub headers_us: u64,
}

/// The normalized outcome of a call, whatever happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// The call this answers.
    pub call_id: u64,
    /// True for a 2xx response.
    pub ok: bool,
    /// The method performed.
    pub method: String,
    /// The URL called.
    pub url: String,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// The reason phrase of the status.
    pub status_text: Option<String>,
    /// Response headers, in order.
    pub headers: Vec<(String, String)>,
    /// The response body.
    pub body: ResponseBody,
    /// Why a body that claimed to be JSON did not parse.
    pub parse_error: Option<String>,
    /// Time spent.
    pub timing: Timing,
    /// How many attempts were made (1 unless retried).
    pub attempts: u32,
    /// The agent that performed the call.
    pub agent_id: String,
    /// Set when `ok` is false.
    pub error: Option<CallError>,
}

impl CallResult {
    /// A result for a call that failed before any response arrived.
    pub fn failure(
        request: &CallRequest,
        agent_id: &str,
        class: ErrorClass,
        message: impl Into<String>,
    ) -> Self {
        CallResult {
            call_id: request.call_id,
            ok: false,
            method: request.method.clone(),
            url: request.url.clone(),
            status: None,
            status_text: None,
            headers: Vec::new(),
            body: ResponseBody::Empty,
            parse_error: None,
            timing: Timing::default(),
            attempts: 0,
            agent_id: agent_id.to_owned(),
            error: Some(CallError {
                class,
                message: message.into(),
            }),
        }
    }
}

/// A connector call: the rendered request plus everything the agent needs
/// to authenticate and perform it where it runs. Its secrets travel only
/// inside the mutually authenticated tunnel; `Debug` never prints them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeRequest {
    /// The request, without credentials.
    pub call: CallRequest,
    /// How to authenticate.
    pub auth: CallAuth,
    /// Names the credentials for the agent's token cache (connection id and
    /// credentials version: never secret). A new key starts a new cache entry.
    pub auth_cache_key: String,
    /// TLS towards the target.
    pub tls: TlsOptions,
    /// An HTTP proxy to go through, if any.
    pub proxy: Option<ProxyOptions>,
    /// When and how often to try again.
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for InvokeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvokeRequest")
            .field("call", &self.call)
            .field("auth", &self.auth.kind())
            .field("auth_cache_key", &self.auth_cache_key)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// How the agent authenticates a connector call.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallAuth {
    /// No credentials.
    None,
    /// A static key in a header (`name: prefix+key`) or query parameter.
    ApiKey {
        /// Where the key goes.
        placement: KeyPlacement,
        /// Put before the key, e.g. `ApiKey `.
        prefix: String,
        /// The key.
        key: String,
    },
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// An OAuth2 access token, fetched and cached by the agent.
    OAuth2(OAuth2),
    /// A key fetched from a login endpoint, cached by the agent.
    DynamicApiKey(DynamicApiKey),
    /// AWS Signature Version 4, computed by the agent for each try.
    AwsSigV4(AwsSigV4),
}

impl CallAuth {
    /// The scheme's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CallAuth::None => "none",
            CallAuth::ApiKey { .. } => "api_key",
            CallAuth::Basic { .. } => "basic",
            CallAuth::Bearer { .. } => "bearer",
            CallAuth::OAuth2(_) => "oauth2",
            CallAuth::DynamicApiKey(_) => "dynamic_api_key",
            CallAuth::AwsSigV4(_) => "aws_sigv4",
        }
    }
}

impl std::fmt::Debug for CallAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallAuth::{}(..)", self.kind())
    }
}

/// Where an API key goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyPlacement {
    /// In this request header.
    Header(String),
    /// In this query parameter.
    Query(String),
}

/// An OAuth2 token grant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuth2 {
    /// Which grant.
    pub grant: OAuth2Grant,
    /// The token endpoint (absolute URL).
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret (may be empty for public clients).
    pub client_secret: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// Resource owner (password grant).
    pub username: String,
    /// Resource owner's password (password grant).
    pub password: String,
    /// Refresh token (refresh grant; authorization code connections).
    pub refresh_token: String,
}

/// OAuth2 grants the agent performs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OAuth2Grant {
    /// `client_credentials`.
    ClientCredentials,
    /// `password`.
    Password,
    /// `refresh_token` (an authorization-code connection's stored refresh token).
    RefreshToken,
}

/// AWS credentials and where they apply.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsSigV4 {
    /// `AKIA…`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials (empty for none).
    pub session_token: String,
    /// e.g. `eu-central-1`.
    pub region: String,
    /// e.g. `execute-api`.
    pub service: String,
}

impl std::fmt::Debug for AwsSigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSigV4")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// Client authentication at a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the client id and secret.
    Basic,
    /// `client_secret_post`: in the form body.
    Post,
}

/// Fetch a key from a login endpoint and use it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicApiKey {
    /// Login method, e.g. `POST`.
    pub method: String,
    /// Login URL (absolute).
    pub url: String,
    /// JSON body sent to the login URL (credentials inside).
    pub body: String,
    /// JSON Pointer to the key in the login response, e.g. `/token`.
    pub pointer: String,
    /// Header the key goes into.
    pub header: String,
    /// Put before the key, e.g. `Bearer `.
    pub prefix: String,
    /// How long a fetched key is used before fetching another.
    pub ttl_secs: u32,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("grant", &self.grant)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DynamicApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicApiKey")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// TLS towards the target.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsOptions {
    /// Extra trusted CA certificates (PEM), e.g. a dealer's own CA.
    pub extra_ca_pem: String,
    /// Accept any certificate (`reject unauthorized` off): for test systems only.
    pub accept_invalid_certs: bool,
    /// Client certificate chain (PEM) for mutual TLS; empty for none.
    pub client_cert_pem: String,
    /// The client certificate's private key (PEM).
    pub client_key_pem: String,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_ca", &!self.extra_ca_pem.is_empty())
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("client_cert", &!self.client_cert_pem.is_empty())
            .finish()
    }
}

/// An HTTP proxy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyOptions {
    /// `http://proxy.example:3128`.
    pub url: String,
    /// Proxy user name (empty for none).
    pub username: String,
    /// Proxy password.
    pub password: String,
}

impl std::fmt::Debug for ProxyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOptions")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// When a failed call is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Tries in all (1 = no retry).
    pub max_attempts: u32,
    /// First pause; doubles each time, with jitter.
    pub initial_backoff_ms: u32,
    /// Longest pause (also caps a `Retry-After`).
    pub max_backoff_ms: u32,
    /// Whether the operation is safe to repeat even if its method is not.
    pub safe_to_retry: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: 200,
            max_backoff_ms: 5_000,
            safe_to_retry: false,
        }
    }
}

/// The outcome of an [`InvokeRequest`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeResult {
    /// The normalized result.
    pub result: CallResult,
    /// A refresh token the token endpoint rotated: the control plane stores
    /// it in place of the old one.
    pub rotated_refresh_token: Option<String>,
    /// Token or key fetches this call needed (0 when the cache served it).
    pub token_fetches: u32,
}

impl std::fmt::Debug for InvokeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvokeResult")
            .field("result", &self.result)
            .field(
                "rotated_refresh_token",
                &self.rotated_refresh_token.is_some(),
            )
            .field("token_fetches", &self.token_fetches)
            .finish()
    }
}
