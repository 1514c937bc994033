//! Frames over QUIC streams: the I/O half of the protocol crate's codec,
//! shared by the agent and the control plane.

use dibop_protocol::{FRAME_HEADER_LEN, FrameError, decode_payload, encode_frame, frame_len};
use quinn::{RecvStream, SendStream};
use serde::{Serialize, de::DeserializeOwned};

/// Largest frame on a control stream (handshake, heartbeats, certificates).
pub const MAX_CONTROL_FRAME_LEN: usize = 64 * 1024;

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream or connection failed.
    #[error("tunnel stream failed: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing failed.
    #[error("tunnel stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The peer sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer finished the stream in the middle of a frame.
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
}

/// Reads one frame. `Ok(None)` when the peer finished the stream cleanly
/// between frames. The length is checked against `max` before allocating.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<T>, WireError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(WireError::Truncated),
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(header, max)?;
    let mut payload = vec![0u8; len];
    match recv.read_exact(&mut payload).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(WireError::Truncated),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(decode_payload(&payload)?))
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    message: &T,
) -> Result<(), WireError> {
    let frame = encode_frame(message)?;
    send.write_all(&frame).await?;
    Ok(())
}
