//! The agent's config file (TOML) and its validated runtime form.
//!
//! Precedence: command-line flags, then environment (`DIBOP_AGENT_*`), then
//! this file, then the defaults documented on each field. `deploy/agent.example.toml` is a
//! commented example that a test parses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use dibop_runtime::policy::AllowList;

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Display name of this agent. Default: the host name.
    pub name: Option<String>,
    /// What the agent may call.
    #[serde(default)]
    pub policy: PolicySection,
    /// Bounds on work.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Tunnel behaviour.
    #[serde(default)]
    pub tunnel: TunnelSection,
    /// `[metrics]`: Prometheus metrics on a local address (off by default).
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[policy]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Hosts, ports and networks this agent may call (see `policy` module
    /// docs for the syntax). Default: empty, so nothing may be called.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Calls performed at once; further calls wait. Default 64.
    pub max_concurrent_calls: u32,
    /// Largest response body accepted, in bytes. Default 8 MiB; at most 15 MiB.
    pub max_response_bytes: u64,
    /// Upper bound on any call's timeout, in milliseconds. Default 120000.
    pub max_timeout_ms: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_concurrent_calls: 64,
            max_response_bytes: 8 * 1024 * 1024,
            max_timeout_ms: 120_000,
        }
    }
}

/// `[tunnel]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelSection {
    /// Overrides the control plane address stored at enrollment (`host:port`).
    pub control_plane: Option<String>,
    /// `auto` (the default: QUIC, and TLS and WebSocket over TCP raced
    /// against it when QUIC does not answer at once; the winner is
    /// remembered), `quic`, or `wss`.
    pub transport: String,
    /// An HTTP proxy the TCP transport goes through
    /// (`http://user:password@host:port`). Default: `HTTPS_PROXY` from the
    /// environment, with `NO_PROXY`.
    pub proxy: Option<String>,
    /// The control plane's TCP tunnel address (`host:port`) for `wss`.
    /// Default: the QUIC address (the control plane listens on TCP on the
    /// same port unless its operator set `tunnel_tcp_addr`).
    pub wss: Option<String>,
    /// QUIC keep-alive interval in seconds; below common NAT UDP timeouts (30 s). Default 10.
    pub keep_alive_secs: u64,
    /// The longest the agent tolerates silence before redialling, seconds. Default 30.
    pub idle_timeout_secs: u64,
    /// First reconnect delay ceiling, milliseconds. Default 500.
    pub reconnect_initial_ms: u64,
    /// Largest reconnect delay ceiling, milliseconds. Default 30000.
    pub reconnect_max_ms: u64,
}

impl Default for TunnelSection {
    fn default() -> Self {
        TunnelSection {
            control_plane: None,
            transport: "auto".into(),
            proxy: None,
            wss: None,
            keep_alive_secs: 10,
            idle_timeout_secs: 30,
            reconnect_initial_ms: 500,
            reconnect_max_ms: 30_000,
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where to serve `GET /metrics` (Prometheus text), e.g. `127.0.0.1:9464`.
    /// Off when absent.
    pub listen: Option<String>,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Display name, if set.
    pub name: Option<String>,
    /// The parsed allow-list.
    pub allow: Arc<AllowList>,
    /// Concurrent calls.
    pub max_concurrent_calls: u32,
    /// Response size cap.
    pub max_response_bytes: u64,
    /// Timeout cap.
    pub max_timeout: Duration,
    /// Address override.
    pub control_plane: Option<String>,
    /// The transport to dial.
    pub transport: Transport,
    /// The TCP tunnel address, when not the QUIC one.
    pub wss: Option<String>,
    /// The proxy the TCP transport goes through, if any.
    pub proxy: Option<crate::proxy::Proxy>,
    /// QUIC keep-alive.
    pub keep_alive: Duration,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Backoff base.
    pub reconnect_initial: Duration,
    /// Backoff cap.
    pub reconnect_max: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Exit (status 4) when the tunnel has been down this long
    /// (`--exit-on-unhealthy`, for supervisors that prefer a restart).
    pub exit_on_unhealthy: Option<Duration>,
}

/// How the agent reaches the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// QUIC first, TCP raced against it; the winner remembered.
    Auto,
    /// QUIC over UDP.
    Quic,
    /// TLS and WebSocket over TCP.
    Wss,
}

impl Transport {
    /// Its name in the config and in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Quic => "quic",
            Transport::Wss => "wss",
        }
    }
}

/// A config that could not be loaded; lists every problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// Values are out of range.
    #[error("config file {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// Upper bound for `max_response_bytes`: the frame limit minus room for headers.
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 15 * 1024 * 1024;

impl ConfigFile {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Validates every field, reporting all problems at once.
    pub fn validate(self, origin: &str) -> Result<AgentConfig, ConfigError> {
        let mut problems = Vec::new();
        let allow = match AllowList::parse(&self.policy.allow) {
            Ok(list) => list,
            Err(errors) => {
                problems.extend(errors.iter().map(|e| format!("policy.allow: {e}")));
                AllowList::default()
            }
        };
        let l = &self.limits;
        if l.max_concurrent_calls == 0 || l.max_concurrent_calls > 10_000 {
            problems.push(format!(
                "limits.max_concurrent_calls = {} must be 1..=10000",
                l.max_concurrent_calls
            ));
        }
        if l.max_response_bytes == 0 || l.max_response_bytes > MAX_RESPONSE_BYTES_LIMIT {
            problems.push(format!(
                "limits.max_response_bytes = {} must be 1..={MAX_RESPONSE_BYTES_LIMIT}",
                l.max_response_bytes
            ));
        }
        if l.max_timeout_ms == 0 {
            problems.push("limits.max_timeout_ms must be above 0".into());
        }
        let t = &self.tunnel;
        if t.keep_alive_secs == 0 || t.keep_alive_secs >= t.idle_timeout_secs {
            problems.push(format!(
                "tunnel.keep_alive_secs = {} must be above 0 and below tunnel.idle_timeout_secs = {}",
                t.keep_alive_secs, t.idle_timeout_secs
            ));
        }
        if t.reconnect_initial_ms == 0 || t.reconnect_initial_ms > t.reconnect_max_ms {
            problems.push(format!(
                "tunnel.reconnect_initial_ms = {} must be above 0 and at most tunnel.reconnect_max_ms = {}",
                t.reconnect_initial_ms, t.reconnect_max_ms
            ));
        }
        if let Some(addr) = &t.control_plane
            && !addr.contains(':')
        {
            problems.push(format!("tunnel.control_plane = `{addr}` must be host:port"));
        }
        if let Some(addr) = &t.wss
            && !addr.contains(':')
        {
            problems.push(format!("tunnel.wss = `{addr}` must be host:port"));
        }
        let proxy = match &t.proxy {
            Some(url) => match crate::proxy::Proxy::parse(url) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.push(format!("tunnel.proxy {e}"));
                    None
                }
            },
            None => match crate::proxy::Proxy::from_env() {
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    problems.push(format!("HTTPS_PROXY in the environment {e}"));
                    None
                }
                None => None,
            },
        };
        let transport = match t.transport.as_str() {
            "auto" => Transport::Auto,
            "quic" => Transport::Quic,
            "wss" => Transport::Wss,
            other => {
                problems.push(format!(
                    "tunnel.transport = `{other}` must be `auto`, `quic` or `wss`"
                ));
                Transport::Auto
            }
        };
        let metrics_listen = match &self.metrics.listen {
            None => None,
            Some(text) => match text.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    problems.push(format!(
                        "metrics.listen = `{text}` must be an address like 127.0.0.1:9464"
                    ));
                    None
                }
            },
        };
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: origin.to_owned(),
                problems,
            });
        }
        Ok(AgentConfig {
            name: self.name,
            allow: Arc::new(allow),
            max_concurrent_calls: l.max_concurrent_calls,
            max_response_bytes: l.max_response_bytes,
            max_timeout: Duration::from_millis(u64::from(l.max_timeout_ms)),
            control_plane: t.control_plane.clone(),
            transport,
            wss: t.wss.clone(),
            proxy,
            keep_alive: Duration::from_secs(t.keep_alive_secs),
            idle_timeout: Duration::from_secs(t.idle_timeout_secs),
            reconnect_initial: Duration::from_millis(t.reconnect_initial_ms),
            reconnect_max: Duration::from_millis(t.reconnect_max_ms),
            metrics_listen,
            exit_on_unhealthy: None,
        })
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        // The defaults are valid by construction.
        match ConfigFile::default().validate("defaults") {
            Ok(c) => c,
            Err(e) => unreachable!("default config is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../deploy/agent.example.toml");
        let config = ConfigFile::parse(text, "agent.example.toml")
            .unwrap()
            .validate("agent.example.toml")
            .unwrap();
        assert!(!config.allow.is_empty());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = ConfigFile::parse("[policy]\nallwo = []\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allwo"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[policy]\nallow = ['bad host']\n[limits]\nmax_concurrent_calls = 0\n[tunnel]\nkeep_alive_secs = 40\n";
        let err = ConfigFile::parse(text, "x.toml")
            .unwrap()
            .validate("x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 problem(s)"), "{err}");
        assert!(
            err.contains("bad host")
                && err.contains("max_concurrent_calls")
                && err.contains("keep_alive_secs")
        );
    }
}
