//! The wire contract between the DIBOP control plane and its relay agents.
//!
//! This crate is sans-IO: it holds the message types and the frame codec, and
//! nothing that touches a socket or a clock. Both halves link it, so a change
//! here is a change of the contract.
//!
//! # Framing
//!
//! Every message travels as one frame: a 4-byte big-endian payload length
//! followed by a [postcard] payload. The length is checked against
//! [`MAX_FRAME_LEN`] before any buffer is allocated, so a peer cannot make the
//! other side reserve more than that. postcard is not self-describing and
//! encodes enum variants by position: **variants are append-only**, never
//! reordered or removed, and a field is never added to an existing struct
//! (add a new variant instead). `tests/wire.rs` pins the bytes.
//!
//! # Message flow (over one QUIC connection)
//!
//! ```text
//! agent                                   control plane
//!   |-- open bidi stream "control" ------------->|
//!   |-- Hello{min..=max version} --------------->|
//!   |<------------- Welcome{version} | Rejected -|
//!   |-- Enroll{token, csr} (no client cert) ---->|   enrollment only
//!   |<----------------- Enrolled | Rejected -----|
//!   |-- Heartbeat{seq} ------------------------->|   every interval
//!   |<------------------------ HeartbeatAck -----|
//!   |-- RenewCertificate{csr} ------------------>|   past half its lifetime
//!   |<-------------- CertificateRenewed ---------|
//!   |                                            |
//!   |<== control plane opens one bidi stream per call ==|
//!   |<---------------------------- Call ---------|
//!   |-- CallResult ----------------------------->|
//! ```
//!
//! Cancelling a call is done at the transport level: the control plane
//! resets its half of the call's stream, and the agent abandons the call.

mod codec;
mod messages;
mod token;

pub use codec::{
    Decoded, FRAME_HEADER_LEN, FrameError, MAX_FRAME_LEN, decode_frame, decode_payload,
    encode_frame, frame_len,
};
pub use messages::*;
pub use token::{EnrollmentToken, TokenError};

/// The protocol version this build speaks best. Version 2 adds connector
/// calls (`Invoke` / `InvokeResult`); version 1 agents still take plain calls.
/// Version 3 adds liveness: the agent acknowledges each call
/// (`Accepted`) before it performs it, and answers the control plane's
/// `Ping` with `Pong`, so a dead agent is noticed in about a second and the
/// calls it never took move to another agent.
pub const PROTOCOL_VERSION: u16 = 3;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// QUIC application close and stream error codes used by both sides.
pub mod codes {
    /// Normal close.
    pub const CLOSE_NORMAL: u32 = 0;
    /// The agent has been revoked; it must not reconnect.
    pub const CLOSE_REVOKED: u32 = 0x10;
    /// The peer broke the protocol (bad frame, unexpected message).
    pub const CLOSE_PROTOCOL_ERROR: u32 = 0x11;
    /// The sender is shutting down; reconnect later.
    pub const CLOSE_SHUTDOWN: u32 = 0x12;
    /// A newer connection of the same agent replaced this one.
    pub const CLOSE_REPLACED: u32 = 0x13;
    /// The handshake was refused (see the `Rejected` message).
    pub const CLOSE_REJECTED: u32 = 0x14;
    /// The agent did not answer liveness probes: the control plane gave up on it.
    pub const CLOSE_UNRESPONSIVE: u32 = 0x15;
    /// Stream error code: the caller cancelled the call.
    pub const STREAM_CANCELLED: u32 = 0x20;
}

/// Picks the highest version both sides speak, or `None` when the ranges do
/// not overlap. `ours` and `theirs` are inclusive ranges.
pub fn negotiate_version(ours: (u16, u16), theirs: (u16, u16)) -> Option<u16> {
    let low = ours.0.max(theirs.0);
    let high = ours.1.min(theirs.1);
    (low <= high && theirs.0 <= theirs.1).then_some(high)
}

/// Human-readable explanation for a version mismatch, telling the reader what
/// to upgrade.
pub fn version_mismatch_reason(ours: (u16, u16), theirs: (u16, u16)) -> String {
    if theirs.1 < ours.0 {
        format!(
            "protocol versions {}..={} offered by this dibop-agent are too old for this control plane \
             (supports {}..={}): upgrade dibop-agent",
            theirs.0, theirs.1, ours.0, ours.1
        )
    } else {
        format!(
            "protocol versions {}..={} offered by this dibop-agent are newer than this control plane \
             supports ({}..={}): upgrade the control plane or install a dibop-agent release that speaks {}",
            theirs.0, theirs.1, ours.0, ours.1, ours.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate_version((1, 3), (2, 5)), Some(3));
        assert_eq!(negotiate_version((1, 1), (1, 1)), Some(1));
        assert_eq!(negotiate_version((2, 3), (1, 1)), None);
        assert_eq!(negotiate_version((1, 1), (2, 4)), None);
        assert_eq!(
            negotiate_version((1, 4), (3, 2)),
            None,
            "an empty offered range never matches"
        );
    }

    #[test]
    fn mismatch_reason_says_what_to_upgrade() {
        assert!(version_mismatch_reason((2, 3), (1, 1)).contains("upgrade dibop-agent"));
        assert!(version_mismatch_reason((1, 1), (2, 4)).contains("upgrade the control plane"));
    }
}
