//! What both ends of DIBOP run: the relay agent on premises and the control
//! plane's built-in cloud agent perform connector calls through the same code.
//!
//! - [`call`]: performs one HTTP call (auth schemes, OAuth2 token cache,
//!   retries where safe, size limits) and normalizes its result;
//! - [`policy`]: the allow-list of hosts and ports an agent may call;
//! - [`tls`], [`wire`]: the tunnel's TLS and QUIC settings and frame I/O;
//! - [`mux`], [`link`]: streams over one WebSocket for the TCP transport,
//!   and one tunnel connection whichever transport carries it;
//! - [`support`]: time, shutdown and logging helpers of both binaries.

pub mod call;
pub mod link;
pub mod mux;
pub mod policy;
pub mod support;
pub mod tls;
pub mod wire;

pub use call::Runtime;
pub use tls::install_crypto_provider;
