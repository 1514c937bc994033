//! The running agent's state, for `dibop-agent status`: written by the
//! agent to `status.json` in its data directory when the tunnel goes up or
//! down and every few seconds while it runs (replaced atomically), read by
//! `status` from another process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use dibop_runtime::support::now_unix;

/// How often a running agent refreshes the file; older than three times
/// this, it is taken as not running.
pub const REFRESH_SECS: u64 = 5;

/// What `status.json` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// `connecting`, `online` or `offline`.
    pub state: String,
    /// The transport of the tunnel (`quic` or `wss`).
    pub transport: String,
    /// `host:port` of the control plane.
    pub control_plane: String,
    /// The agent's id.
    pub agent_id: String,
    /// The agent's release.
    pub version: String,
    /// The running process.
    pub pid: u32,
    /// When the current state began (Unix seconds).
    pub since: i64,
    /// Why the tunnel last went down, if it did.
    pub last_error: Option<String>,
    /// Tunnels opened since the agent started.
    pub connects: u64,
    /// Calls performed since the agent started.
    pub calls_ok: u64,
    /// Calls that failed (any error class) since the agent started.
    pub calls_failed: u64,
    /// Calls running now.
    pub in_flight: u32,
    /// When the file was written (Unix seconds).
    pub updated_at: i64,
}

/// Upper bounds (seconds) of the call latency histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// The running agent's side: its state and counters, written to the file
/// and served as Prometheus metrics.
#[derive(Debug)]
pub struct Reporter {
    path: PathBuf,
    state: Mutex<Status>,
    calls_ok: AtomicU64,
    calls_failed: AtomicU64,
    /// Calls per bucket (not cumulative), then the total of microseconds.
    buckets: [AtomicU64; BUCKETS.len()],
    micros: AtomicU64,
}

impl Reporter {
    /// A reporter for the agent `agent_id` keeping its file in `data_dir`.
    pub fn new(data_dir: &Path, agent_id: &str) -> Reporter {
        Reporter {
            path: data_dir.join("status.json"),
            state: Mutex::new(Status {
                state: "connecting".into(),
                transport: "quic".into(),
                agent_id: agent_id.to_owned(),
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                since: now_unix(),
                ..Status::default()
            }),
            calls_ok: AtomicU64::new(0),
            calls_failed: AtomicU64::new(0),
            buckets: Default::default(),
            micros: AtomicU64::new(0),
        }
    }

    /// Records the transport of the tunnel now up (`quic` or `wss`).
    pub fn transport(&self, transport: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .transport = transport.to_owned();
    }

    /// Counts a finished call and how long it took.
    pub fn call(&self, ok: bool, seconds: f64) {
        let counter = if ok {
            &self.calls_ok
        } else {
            &self.calls_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        self.micros
            .fetch_add((seconds.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self, in_flight: u32) -> String {
        use std::fmt::Write as _;
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ok = self.calls_ok.load(Ordering::Relaxed);
        let failed = self.calls_failed.load(Ordering::Relaxed);
        let mut out = String::new();
        let online = u8::from(s.state == "online");
        let _ = writeln!(
            out,
            "# HELP dibop_agent_tunnel_online Whether the tunnel to the control plane is up.\n\
             # TYPE dibop_agent_tunnel_online gauge\ndibop_agent_tunnel_online {online}\n\
             # HELP dibop_agent_tunnel_info The tunnel's transport and state.\n\
             # TYPE dibop_agent_tunnel_info gauge\n\
             dibop_agent_tunnel_info{{transport=\"{}\",state=\"{}\"}} 1\n\
             # HELP dibop_agent_tunnel_connects_total Tunnels opened since the agent started.\n\
             # TYPE dibop_agent_tunnel_connects_total counter\n\
             dibop_agent_tunnel_connects_total {}\n\
             # HELP dibop_agent_calls_total Calls performed, by outcome.\n\
             # TYPE dibop_agent_calls_total counter\n\
             dibop_agent_calls_total{{outcome=\"ok\"}} {ok}\n\
             dibop_agent_calls_total{{outcome=\"failed\"}} {failed}\n\
             # HELP dibop_agent_calls_in_flight Calls running now.\n\
             # TYPE dibop_agent_calls_in_flight gauge\n\
             dibop_agent_calls_in_flight {in_flight}\n\
             # HELP dibop_agent_call_duration_seconds How long calls took at the agent.\n\
             # TYPE dibop_agent_call_duration_seconds histogram",
            s.transport, s.state, s.connects
        );
        let mut cumulative = 0;
        for (b, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[b].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "dibop_agent_call_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let total = ok + failed;
        let _ = writeln!(
            out,
            "dibop_agent_call_duration_seconds_bucket{{le=\"+Inf\"}} {total}\n\
             dibop_agent_call_duration_seconds_sum {}\n\
             dibop_agent_call_duration_seconds_count {total}",
            self.micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out
    }

    /// Moves to `state` (with the reason it went down, for `offline`) and writes the file.
    pub fn set(&self, state: &str, control_plane: &str, error: Option<String>, in_flight: u32) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if s.state != state {
                s.since = now_unix();
                if state == "online" {
                    s.connects += 1;
                }
            }
            s.state = state.to_owned();
            if !control_plane.is_empty() {
                s.control_plane = control_plane.to_owned();
            }
            if error.is_some() {
                s.last_error = error;
            }
        }
        self.write(in_flight);
    }

    /// Writes the file with the current counters.
    pub fn write(&self, in_flight: u32) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        s.calls_ok = self.calls_ok.load(Ordering::Relaxed);
        s.calls_failed = self.calls_failed.load(Ordering::Relaxed);
        s.in_flight = in_flight;
        s.updated_at = now_unix();
        let temp = self.path.with_extension("json.new");
        let written = serde_json::to_vec_pretty(&s)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temp, bytes))
            .and_then(|()| std::fs::rename(&temp, &self.path));
        if let Err(e) = written {
            tracing::debug!("cannot write {}: {e}", self.path.display());
        }
    }
}

/// What `dibop-agent status` found: the file, and whether the agent that
/// wrote it is still running.
pub fn read(data_dir: &Path) -> Result<(Status, bool), String> {
    let path = data_dir.join("status.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no status in {} ({e}): the agent has not run with this data directory",
            path.display()
        )
    })?;
    let status: Status = serde_json::from_str(&text)
        .map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
    let fresh = now_unix() - status.updated_at <= 3 * REFRESH_SECS as i64;
    let alive = Path::new(&format!("/proc/{}", status.pid)).exists();
    Ok((status, fresh && alive))
}

/// The lines `dibop-agent status` prints.
pub fn describe(s: &Status, running: bool) -> Vec<String> {
    let ago = |t: i64| {
        let secs = (now_unix() - t).max(0);
        match secs {
            0..=119 => format!("{secs} s ago"),
            120..=7199 => format!("{} min ago", secs / 60),
            _ => format!("{} h ago", secs / 3600),
        }
    };
    let mut lines = vec![if running {
        format!(
            "agent {} ({}) is {} over {} to {} since {}",
            s.agent_id,
            s.version,
            s.state,
            s.transport,
            s.control_plane,
            ago(s.since)
        )
    } else {
        format!(
            "agent {} is not running (pid {} last wrote its status {})",
            s.agent_id,
            s.pid,
            ago(s.updated_at)
        )
    }];
    lines.push(format!(
        "calls: {} ok, {} failed, {} in flight; tunnels opened: {}",
        s.calls_ok, s.calls_failed, s.in_flight, s.connects
    ));
    if let Some(e) = &s.last_error {
        lines.push(format!("last tunnel error: {e}"));
    }
    lines
}
