//! Relay agents: the QUIC server end of their tunnels and enrollment
//! ([`tunnel`]), the registry of online agents and the dispatcher of calls
//! ([`dispatch`]), and the control plane's own certificate authority ([`ca`]).

pub mod ca;
pub mod dispatch;
pub mod enroll;
pub mod tunnel;
