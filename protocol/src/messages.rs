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
        }
    }

    /// Whether the request may have reached the target. A call that never
    /// left (policy, invalid request, no agent) can be sent elsewhere safely.
    pub fn request_may_have_been_sent(self) -> bool {
        !matches!(
            self,
            ErrorClass::PolicyDenied | ErrorClass::AgentUnavailable | ErrorClass::InvalidRequest
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
