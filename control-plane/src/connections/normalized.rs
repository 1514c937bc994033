//! The normalized result of a connector call as the API and execution
//! traces show it: `ok, method, url, status, statusText, headers, body,
//! text, parseError, timing, attempts, agentId, error`.

use std::time::Duration;

use dibop_protocol::{CallResult, ResponseBody};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// The normalized call result as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NormalizedResult {
    ok: bool,
    method: String,
    url: String,
    status: Option<u16>,
    status_text: Option<String>,
    #[schema(value_type = Object)]
    headers: serde_json::Map<String, Value>,
    #[schema(value_type = Option<Object>)]
    body: Option<Box<RawValue>>,
    text: Option<String>,
    parse_error: Option<String>,
    timing: TimingView,
    attempts: u32,
    agent_id: Option<String>,
    error: Option<ErrorView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimingView {
    total_ms: f64,
    agent_ms: f64,
    upstream_headers_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    class: &'static str,
    message: String,
}

impl NormalizedResult {
    /// Converts the wire result; `total` is the time at the control plane.
    pub fn from_result(r: CallResult, total: Duration) -> Self {
        let mut headers = serde_json::Map::new();
        for (k, v) in r.headers {
            match headers.get_mut(&k) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&v);
                }
                _ => {
                    headers.insert(k, Value::String(v));
                }
            }
        }
        let (body, text) = match r.body {
            ResponseBody::Empty => (None, None),
            ResponseBody::Json(t) => (RawValue::from_string(t.clone()).ok(), Some(t)),
            ResponseBody::Text(t) => (None, Some(t)),
            ResponseBody::Binary(b) => (None, Some(String::from_utf8_lossy(&b).into_owned())),
        };
        NormalizedResult {
            ok: r.ok,
            method: r.method,
            url: r.url,
            status: r.status,
            status_text: r.status_text,
            headers,
            body,
            text,
            parse_error: r.parse_error,
            timing: TimingView {
                total_ms: total.as_secs_f64() * 1000.0,
                agent_ms: r.timing.total_us as f64 / 1000.0,
                upstream_headers_ms: r.timing.headers_us as f64 / 1000.0,
            },
            attempts: r.attempts,
            agent_id: (!r.agent_id.is_empty()).then_some(r.agent_id),
            error: r.error.map(|e| ErrorView {
                class: e.class.as_str(),
                message: e.message,
            }),
        }
    }
}
