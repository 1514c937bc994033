//! Helpers every context uses: ids and secrets ([`ids`]), a time-bounded
//! cache ([`cache`]), clocks ([`clock`]), the problem-collecting checker of
//! definitions ([`checker`]) and the Prometheus metrics ([`metrics`]).

pub mod cache;
pub mod checker;
pub mod clock;
pub mod ids;
pub mod metrics;
