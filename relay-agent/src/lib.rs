//! The DIBOP relay agent: a small program a dealer installs inside its
//! network. It dials out to the control plane (no inbound port is ever
//! opened), proves who it is with a client certificate, and performs HTTP
//! calls against on-premise systems on the control plane's behalf, within
//! the dealer's own allow-list.
//!
//! - [`enroll`]: redeem an enrollment token for a key pair and certificate;
//! - [`tunnel`]: the QUIC connection, heartbeats, reconnects, call streams;
//! - [`identity`]: key, certificate and metadata files;
//! - [`status`]: the running agent's state for `dibop-agent status`;
//! - [`config`]: the config file;
//! - [`doctor`]: the checks of `dibop-agent doctor`;
//!
//! The call runtime, the allow-list policy and the tunnel's TLS settings and
//! frame I/O are in `dibop-runtime`, shared with the control plane.

pub mod config;
pub mod doctor;
pub mod enroll;
pub mod identity;
pub mod proxy;
pub mod status;
pub mod tunnel;

pub use config::{AgentConfig, ConfigFile};
pub use dibop_runtime::{Runtime, install_crypto_provider};
