//! The DIBOP relay agent: a small program a dealer installs inside its
//! network. It dials out to the control plane (no inbound port is ever
//! opened), proves who it is with a client certificate, and performs HTTP
//! calls against on-premise systems on the control plane's behalf, within
//! the dealer's own allow-list.
//!
//! - [`enroll`]: redeem an enrollment token for a key pair and certificate;
//! - [`tunnel`]: the QUIC connection, heartbeats, reconnects, call streams;
//! - [`runtime`]: performs one HTTP call and normalizes its result;
//! - [`policy`]: the local allow-list;
//! - [`identity`]: key, certificate and metadata files;
//! - [`config`]: the config file;
//! - [`tls`], [`wire`]: TLS settings and frame I/O, shared with the control plane.

pub mod config;
pub mod enroll;
pub mod identity;
pub mod policy;
pub mod runtime;
pub mod tls;
pub mod tunnel;
pub mod wire;

pub use config::{AgentConfig, ConfigFile};
pub use runtime::Runtime;
pub use tls::install_crypto_provider;

/// Current time in seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Formats Unix seconds as RFC 3339 (UTC); out-of-range values print as numbers.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Sets up logging: `RUST_LOG` overrides `default_filter`.
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
