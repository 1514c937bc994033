//! `dibop serve` settings: a TOML file (`--config`), environment variables
//! and flags. Precedence: flag, then environment (`DIBOP_*`), then the file,
//! then the defaults below. Unknown keys are refused; every problem is
//! reported at once. `deploy/dibop.example.toml` documents every key and is
//! parsed by a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Settings;

/// One layer of settings: the file as written, or the flags and the
/// environment ([`Overrides`]); every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    /// Default `/var/lib/dibop`.
    pub data_dir: Option<PathBuf>,
    /// Default: SQLite in the data directory.
    pub database_url: Option<String>,
    /// Default `127.0.0.1:8080`.
    pub http_addr: Option<String>,
    /// Default `0.0.0.0:4433`.
    pub tunnel_addr: Option<String>,
    /// Default: the tunnel address.
    pub public_tunnel_addr: Option<String>,
    /// Default 15000 (600 to 600000).
    pub agent_idle_timeout_ms: Option<u64>,
    /// Default 2592000, 30 days (at least 5).
    pub agent_cert_ttl_secs: Option<u64>,
    /// Default `["public"]`.
    pub cloud_agent_allow: Option<Vec<String>>,
    /// Default 60 (5 to 86400).
    pub health_check_interval_secs: Option<u64>,
    /// Default 60 (1 to 86400).
    pub storage_interval_secs: Option<u64>,
    /// Default 600 (0 to 86400).
    pub agent_wait_secs: Option<u64>,
}

/// Values from flags and the environment (`--data-dir` / `DIBOP_DATA_DIR`,
/// …, `--cloud-agent-allow` / `DIBOP_CLOUD_AGENT_ALLOW` comma-separated):
/// the same keys as the file, `None` when not given, merged over it.
pub type Overrides = ServeFile;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
pub struct ConfigError {
    /// The file (or "flags").
    pub origin: String,
    /// Every problem.
    pub problems: Vec<String>,
}

/// Reads a config file.
pub fn load(path: &Path) -> Result<ServeFile, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        problems: vec![format!("cannot read: {e}")],
    })?;
    parse(&text, &origin)
}

/// Parses config text.
pub fn parse(text: &str, origin: &str) -> Result<ServeFile, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError {
        origin: origin.to_owned(),
        problems: vec![e.to_string()],
    })
}

/// Merges overrides over the file over the defaults and validates it all.
pub fn resolve(file: ServeFile, over: Overrides, origin: &str) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let mut settings = Settings::new(
        over.data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("/var/lib/dibop")),
    );
    // Every default is `Settings::new`'s: written once.
    let mut addr = |name: &str, value: Option<String>, default: SocketAddr| -> SocketAddr {
        let Some(text) = value else {
            return default;
        };
        text.parse().unwrap_or_else(|_| {
            problems.push(format!(
                "{name} = `{text}` is not an address like 0.0.0.0:8080"
            ));
            default
        })
    };
    settings.http_addr = addr(
        "http_addr",
        over.http_addr.or(file.http_addr),
        settings.http_addr,
    );
    settings.tunnel_addr = addr(
        "tunnel_addr",
        over.tunnel_addr.or(file.tunnel_addr),
        settings.tunnel_addr,
    );
    settings.database_url = over.database_url.or(file.database_url);
    if let Some(url) = &settings.database_url
        && !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
    {
        problems.push(format!(
            "database_url `{}` must start with sqlite: or postgres:",
            crate::store::redact_url(url)
        ));
    }
    settings.public_tunnel_addr = over.public_tunnel_addr.or(file.public_tunnel_addr);
    if let Some(p) = &settings.public_tunnel_addr
        && p.rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    {
        problems.push(format!("public_tunnel_addr = `{p}` must be host:port"));
    }
    let idle = over
        .agent_idle_timeout_ms
        .or(file.agent_idle_timeout_ms)
        .unwrap_or(settings.agent_idle_timeout.as_millis() as u64);
    if !(600..=600_000).contains(&idle) {
        problems.push(format!(
            "agent_idle_timeout_ms = {idle} must be 600..=600000"
        ));
    }
    settings.agent_idle_timeout = Duration::from_millis(idle);
    let ttl = over
        .agent_cert_ttl_secs
        .or(file.agent_cert_ttl_secs)
        .unwrap_or(settings.agent_cert_ttl.as_secs());
    if ttl < 5 {
        problems.push(format!("agent_cert_ttl_secs = {ttl} must be at least 5"));
    }
    settings.agent_cert_ttl = Duration::from_secs(ttl);
    if let Some(allow) = over.cloud_agent_allow.or(file.cloud_agent_allow) {
        if let Err(errors) = dibop_runtime::policy::AllowList::parse(&allow) {
            problems.extend(
                errors
                    .into_iter()
                    .map(|e| format!("cloud_agent_allow: {e}")),
            );
        }
        settings.cloud_agent_allow = allow;
    }
    let interval = over
        .health_check_interval_secs
        .or(file.health_check_interval_secs)
        .unwrap_or(settings.health_check_interval.as_secs());
    if !(5..=86_400).contains(&interval) {
        problems.push(format!(
            "health_check_interval_secs = {interval} must be 5..=86400"
        ));
    }
    settings.health_check_interval = Duration::from_secs(interval);
    let storage = over
        .storage_interval_secs
        .or(file.storage_interval_secs)
        .unwrap_or(settings.storage_interval.as_secs());
    if !(1..=86_400).contains(&storage) {
        problems.push(format!(
            "storage_interval_secs = {storage} must be 1..=86400"
        ));
    }
    settings.storage_interval = Duration::from_secs(storage);
    let wait = over
        .agent_wait_secs
        .or(file.agent_wait_secs)
        .unwrap_or(settings.agent_wait.as_secs());
    if wait > 86_400 {
        problems.push(format!("agent_wait_secs = {wait} must be 0..=86400"));
    }
    settings.agent_wait = Duration::from_secs(wait);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError {
            origin: origin.to_owned(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../deploy/dibop.example.toml");
        let file = parse(text, "dibop.example.toml").unwrap();
        let settings = resolve(file, Overrides::default(), "dibop.example.toml").unwrap();
        assert_eq!(settings.http_addr.port(), 8080);
    }

    /// Nothing given: exactly `Settings::new`'s defaults (each written once).
    #[test]
    fn the_defaults_are_the_settings_defaults() {
        let resolved = resolve(ServeFile::default(), Overrides::default(), "nothing").unwrap();
        let defaults = Settings::new(PathBuf::from("/var/lib/dibop"));
        assert_eq!(format!("{resolved:?}"), format!("{defaults:?}"));
        assert_eq!(resolved.tunnel_addr.to_string(), "0.0.0.0:4433");
        assert_eq!(resolved.http_addr.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let file = parse(
            "http_addr = \"0.0.0.0:9000\"\ntunnel_addr = \"0.0.0.0:5000\"\n",
            "f",
        )
        .unwrap();
        let over = Overrides {
            http_addr: Some("127.0.0.1:7000".into()),
            ..Default::default()
        };
        let s = resolve(file, over, "f").unwrap();
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(s.tunnel_addr.to_string(), "0.0.0.0:5000");
        assert_eq!(s.agent_idle_timeout, Duration::from_secs(15));
    }

    #[test]
    fn unknown_keys_and_every_bad_value_are_reported() {
        assert!(
            parse("htp_addr = \"x\"", "f")
                .unwrap_err()
                .to_string()
                .contains("htp_addr")
        );
        let file = parse(
            "http_addr = \"nope\"\nagent_idle_timeout_ms = 5\ndatabase_url = \"mysql://u:pw@h/db\"\npublic_tunnel_addr = \"cp\"\n",
            "f",
        )
        .unwrap();
        let err = resolve(file, Overrides::default(), "f").unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        assert!(
            !err.to_string().contains("pw@"),
            "passwords are redacted: {err}"
        );
    }
}
