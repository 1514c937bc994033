//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4).
//!
//! A handful of process-wide counters and one histogram, lock-free on the
//! hot path. Labels are low-cardinality on purpose: no tenant or agent ids.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the relayed-call latency histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Outcomes counted for relayed calls: `ok` and each error class.
const OUTCOMES: [&str; 13] = [
    "ok",
    "auth_failure",
    "timeout",
    "network_error",
    "tls_error",
    "policy_denied",
    "agent_unavailable",
    "rate_limited",
    "upstream_error",
    "invalid_request",
    "response_too_large",
    "cancelled",
    "internal",
];
/// HTTP status classes.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    http: [AtomicU64; 5],
    calls: [AtomicU64; OUTCOMES.len()],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    quota_rejections: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: Default::default(),
            calls: Default::default(),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            quota_rejections: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn http_response(&self, status: u16) {
        let i = usize::from(status / 100).saturating_sub(1).min(4);
        self.http[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one relayed call and its latency at the control plane.
    pub fn relayed_call(&self, outcome: &str, seconds: f64) {
        let i = OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(OUTCOMES.len() - 1);
        self.calls[i].fetch_add(1, Ordering::Relaxed);
        for (b, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[b].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Counts a request refused by a tenant limit.
    pub fn quota_rejection(&self) {
        self.quota_rejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the exposition text; `agents_online` is sampled by the caller.
    pub fn render(&self, agents_online: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP dibop_http_responses_total HTTP responses of the API, by status class."
        );
        let _ = writeln!(out, "# TYPE dibop_http_responses_total counter");
        for (i, class) in CLASSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "dibop_http_responses_total{{class=\"{class}\"}} {}",
                self.http[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP dibop_relayed_calls_total Calls performed through agents, by outcome."
        );
        let _ = writeln!(out, "# TYPE dibop_relayed_calls_total counter");
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let _ = writeln!(
                out,
                "dibop_relayed_calls_total{{outcome=\"{outcome}\"}} {}",
                self.calls[i].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP dibop_relayed_call_duration_seconds Latency of relayed calls at the control plane."
        );
        let _ = writeln!(out, "# TYPE dibop_relayed_call_duration_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "dibop_relayed_call_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "dibop_relayed_call_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "dibop_relayed_call_duration_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "dibop_relayed_call_duration_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP dibop_quota_rejections_total Requests refused by a tenant's rate or quota."
        );
        let _ = writeln!(out, "# TYPE dibop_quota_rejections_total counter");
        let _ = writeln!(
            out,
            "dibop_quota_rejections_total {}",
            self.quota_rejections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP dibop_agents_online Agents connected to this control plane."
        );
        let _ = writeln!(out, "# TYPE dibop_agents_online gauge");
        let _ = writeln!(out, "dibop_agents_online {agents_online}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.relayed_call("ok", 0.0007);
        m.relayed_call("timeout", 2.0);
        m.http_response(200);
        m.http_response(429);
        let text = m.render(3);
        assert!(text.contains("dibop_relayed_call_duration_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("dibop_relayed_call_duration_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("dibop_relayed_call_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("dibop_relayed_call_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("dibop_relayed_calls_total{outcome=\"timeout\"} 1"));
        assert!(text.contains("dibop_http_responses_total{class=\"4xx\"} 1"));
        assert!(text.contains("dibop_agents_online 3"));
    }
}
