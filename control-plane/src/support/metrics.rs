//! Prometheus metrics at `GET /metrics` (text exposition format 0.0.4).
//!
//! Counters and histograms over small, fixed label sets, lock-free on the
//! hot path (one atomic add per counter). Labels are low-cardinality on
//! purpose: no tenant, connection or agent ids.
//!
//! - `dibop_calls_total{mode, outcome, error_class}` and
//!   `dibop_call_duration_seconds{mode}`: every connector call, by where it
//!   ran (`diagnostic` raw calls through an agent group, `agent_group`,
//!   `cloud`, `proxy`), `ok` or `failed`, and the error class;
//! - `dibop_executions_started_total{trigger}`,
//!   `dibop_executions_finished_total{status}`,
//!   `dibop_execution_duration_seconds`;
//! - `dibop_steps_finished_total{type, status}`,
//!   `dibop_step_duration_seconds{type}`;
//! - `dibop_http_responses_total{class}`, `dibop_quota_rejections_total`,
//!   `dibop_agents_online`.

use std::fmt::Write as _;

use crate::domain::StepKind;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of call latency.
const CALL_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Upper bounds (seconds) of execution and step durations.
const RUN_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Where a call ran.
const MODES: &[&str] = &["diagnostic", "agent_group", "cloud", "proxy"];
/// Error classes (`""` for a call that succeeded).
const ERROR_CLASSES: &[&str] = &[
    "",
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
    "circuit_open",
    "throttled",
    "internal",
];
/// HTTP status classes.
const HTTP_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];
/// How executions start.
const TRIGGERS: &[&str] = &[
    "api",
    "schedule",
    "webhook",
    "rerun",
    "orchestration",
    "other",
];
/// How executions end.
const EXECUTION_STATUSES: &[&str] = &["succeeded", "partially_succeeded", "failed", "cancelled"];
/// Step types: every kind of step, by its name.
fn step_types() -> Vec<&'static str> {
    StepKind::ALL.iter().map(|k| k.as_str()).collect()
}
/// How steps end.
const STEP_STATUSES: &[&str] = &["succeeded", "failed"];

fn index(values: &[&str], value: &str) -> usize {
    values
        .iter()
        .position(|v| *v == value)
        .unwrap_or(values.len() - 1)
}

fn atomics(n: usize) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// A histogram per value of one label (or one, unlabelled).
#[derive(Debug)]
struct Histogram {
    buckets: &'static [f64],
    /// Per label value: one count per bucket (not cumulative).
    counts: Vec<AtomicU64>,
    sums_micros: Vec<AtomicU64>,
    totals: Vec<AtomicU64>,
}

impl Histogram {
    fn new(buckets: &'static [f64], labels: usize) -> Histogram {
        Histogram {
            buckets,
            counts: atomics(buckets.len() * labels),
            sums_micros: atomics(labels),
            totals: atomics(labels),
        }
    }

    fn observe(&self, label: usize, seconds: f64) {
        // Counted in its own bucket; the exposition adds them up.
        if let Some(b) = self.buckets.iter().position(|bound| seconds <= *bound) {
            self.counts[label * self.buckets.len() + b].fetch_add(1, Ordering::Relaxed);
        }
        self.totals[label].fetch_add(1, Ordering::Relaxed);
        self.sums_micros[label].fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Writes the series; `label` is `Some((name, values))` for a labelled one.
    fn render(&self, out: &mut String, name: &str, help: &str, label: Option<(&str, &[&str])>) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let values: &[&str] = label.map_or(&[""], |(_, v)| v);
        for (l, value) in values.iter().enumerate() {
            let prefix = match label {
                Some((key, _)) => format!("{key}=\"{value}\","),
                None => String::new(),
            };
            let mut cumulative = 0;
            for (b, bound) in self.buckets.iter().enumerate() {
                cumulative += self.counts[l * self.buckets.len() + b].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"{bound}\"}} {cumulative}");
            }
            let total = self.totals[l].load(Ordering::Relaxed);
            let plain = prefix.trim_end_matches(',');
            let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"+Inf\"}} {total}");
            let sum = self.sums_micros[l].load(Ordering::Relaxed) as f64 / 1e6;
            if plain.is_empty() {
                let _ = writeln!(out, "{name}_sum {sum}");
                let _ = writeln!(out, "{name}_count {total}");
            } else {
                let _ = writeln!(out, "{name}_sum{{{plain}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{plain}}} {total}");
            }
        }
    }
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    http: Vec<AtomicU64>,
    /// mode × error class.
    calls: Vec<AtomicU64>,
    call_duration: Histogram,
    quota_rejections: AtomicU64,
    executions_started: Vec<AtomicU64>,
    executions_finished: Vec<AtomicU64>,
    execution_duration: Histogram,
    /// step type × status.
    steps: Vec<AtomicU64>,
    step_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: atomics(HTTP_CLASSES.len()),
            calls: atomics(MODES.len() * ERROR_CLASSES.len()),
            call_duration: Histogram::new(CALL_BUCKETS, MODES.len()),
            quota_rejections: AtomicU64::new(0),
            executions_started: atomics(TRIGGERS.len()),
            executions_finished: atomics(EXECUTION_STATUSES.len()),
            execution_duration: Histogram::new(RUN_BUCKETS, 1),
            steps: atomics(StepKind::ALL.len() * STEP_STATUSES.len()),
            step_duration: Histogram::new(RUN_BUCKETS, StepKind::ALL.len()),
        }
    }
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn http_response(&self, status: u16) {
        let i = usize::from(status / 100).saturating_sub(1).min(4);
        self.http[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connector call: where it ran (`diagnostic`, `agent_group`,
    /// `cloud`, `proxy`), its error class (`None`: it succeeded) and its
    /// latency at the control plane.
    pub fn call(&self, mode: &str, error_class: Option<&str>, seconds: f64) {
        let m = index(MODES, mode);
        let c = error_class.map_or(0, |class| index(ERROR_CLASSES, class));
        self.calls[m * ERROR_CLASSES.len() + c].fetch_add(1, Ordering::Relaxed);
        self.call_duration.observe(m, seconds);
    }

    /// Counts a request refused by a tenant limit.
    pub fn quota_rejection(&self) {
        self.quota_rejections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an execution starting to run.
    pub fn execution_started(&self, trigger: &str) {
        self.executions_started[index(TRIGGERS, trigger)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an execution that ended, with how long it ran.
    pub fn execution_finished(&self, status: &str, seconds: f64) {
        if let Some(i) = EXECUTION_STATUSES.iter().position(|s| *s == status) {
            self.executions_finished[i].fetch_add(1, Ordering::Relaxed);
            self.execution_duration.observe(0, seconds);
        }
    }

    /// Counts a step that ended (`succeeded` or `failed`), with its duration.
    pub fn step_finished(&self, kind: StepKind, succeeded: bool, seconds: f64) {
        let t = StepKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        let s = usize::from(!succeeded);
        self.steps[t * STEP_STATUSES.len() + s].fetch_add(1, Ordering::Relaxed);
        self.step_duration.observe(t, seconds);
    }

    /// Renders the exposition text; `agents_online` is sampled by the caller.
    pub fn render(&self, agents_online: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
        };
        counter(
            &mut out,
            "dibop_http_responses_total",
            "HTTP responses of the API, by status class.",
        );
        for (i, class) in HTTP_CLASSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "dibop_http_responses_total{{class=\"{class}\"}} {}",
                self.http[i].load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "dibop_calls_total",
            "Connector calls, by where they ran, outcome and error class.",
        );
        for (m, mode) in MODES.iter().enumerate() {
            for (c, class) in ERROR_CLASSES.iter().enumerate() {
                let n = self.calls[m * ERROR_CLASSES.len() + c].load(Ordering::Relaxed);
                let outcome = if class.is_empty() { "ok" } else { "failed" };
                let _ = writeln!(
                    out,
                    "dibop_calls_total{{mode=\"{mode}\",outcome=\"{outcome}\",error_class=\"{class}\"}} {n}"
                );
            }
        }
        self.call_duration.render(
            &mut out,
            "dibop_call_duration_seconds",
            "Latency of connector calls at the control plane, by where they ran.",
            Some(("mode", MODES)),
        );
        counter(
            &mut out,
            "dibop_executions_started_total",
            "Executions that started running, by trigger.",
        );
        for (i, trigger) in TRIGGERS.iter().enumerate() {
            let _ = writeln!(
                out,
                "dibop_executions_started_total{{trigger=\"{trigger}\"}} {}",
                self.executions_started[i].load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "dibop_executions_finished_total",
            "Executions that ended, by status.",
        );
        for (i, status) in EXECUTION_STATUSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "dibop_executions_finished_total{{status=\"{status}\"}} {}",
                self.executions_finished[i].load(Ordering::Relaxed)
            );
        }
        self.execution_duration.render(
            &mut out,
            "dibop_execution_duration_seconds",
            "How long executions ran (on this replica).",
            None,
        );
        counter(
            &mut out,
            "dibop_steps_finished_total",
            "Execution steps that ended, by type and status.",
        );
        for (t, step_type) in step_types().iter().enumerate() {
            for (s, status) in STEP_STATUSES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "dibop_steps_finished_total{{type=\"{step_type}\",status=\"{status}\"}} {}",
                    self.steps[t * STEP_STATUSES.len() + s].load(Ordering::Relaxed)
                );
            }
        }
        self.step_duration.render(
            &mut out,
            "dibop_step_duration_seconds",
            "How long execution steps took, by type.",
            Some(("type", &step_types())),
        );
        counter(
            &mut out,
            "dibop_quota_rejections_total",
            "Requests refused by a tenant's rate or quota.",
        );
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
    fn histogram_buckets_are_cumulative_and_labels_fixed() {
        let m = Metrics::default();
        m.call("diagnostic", None, 0.0007);
        m.call("diagnostic", Some("timeout"), 2.0);
        m.call("cloud", Some("circuit_open"), 0.0001);
        m.call("weird", Some("unheard_of"), 0.1);
        m.http_response(200);
        m.http_response(429);
        m.execution_started("api");
        m.execution_finished("partially_succeeded", 1.5);
        m.step_finished(StepKind::MapToCdm, true, 0.02);
        m.step_finished(StepKind::Call, false, 0.3);
        let text = m.render(3);
        for line in [
            "dibop_call_duration_seconds_bucket{mode=\"diagnostic\",le=\"0.0005\"} 0",
            "dibop_call_duration_seconds_bucket{mode=\"diagnostic\",le=\"0.001\"} 1",
            "dibop_call_duration_seconds_bucket{mode=\"diagnostic\",le=\"5\"} 2",
            "dibop_call_duration_seconds_bucket{mode=\"diagnostic\",le=\"+Inf\"} 2",
            "dibop_call_duration_seconds_count{mode=\"diagnostic\"} 2",
            "dibop_calls_total{mode=\"diagnostic\",outcome=\"failed\",error_class=\"timeout\"} 1",
            "dibop_calls_total{mode=\"diagnostic\",outcome=\"ok\",error_class=\"\"} 1",
            "dibop_calls_total{mode=\"cloud\",outcome=\"failed\",error_class=\"circuit_open\"} 1",
            "dibop_calls_total{mode=\"proxy\",outcome=\"failed\",error_class=\"internal\"} 1",
            "dibop_http_responses_total{class=\"4xx\"} 1",
            "dibop_executions_started_total{trigger=\"api\"} 1",
            "dibop_executions_finished_total{status=\"partially_succeeded\"} 1",
            "dibop_execution_duration_seconds_bucket{le=\"2.5\"} 1",
            "dibop_steps_finished_total{type=\"call\",status=\"failed\"} 1",
            "dibop_step_duration_seconds_count{type=\"map_to_cdm\"} 1",
            "dibop_agents_online 3",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
    }
}
