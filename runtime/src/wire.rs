//! Frames over tunnel streams (QUIC streams, or the TCP transport's
//! multiplexed streams): the I/O half of the protocol crate's codec, shared
//! by the agent and the control plane.

use dibop_protocol::{FRAME_HEADER_LEN, FrameError, decode_payload, encode_frame, frame_len};
use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Largest frame on a control stream (handshake, heartbeats, certificates).
pub const MAX_CONTROL_FRAME_LEN: usize = 64 * 1024;

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The stream or connection failed.
    #[error("tunnel stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer finished the stream in the middle of a frame.
    #[error("the peer closed the stream in the middle of a frame")]
    Truncated,
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` when the stream ended
/// before the first byte, `Truncated` when it ended after it.
async fn fill<R: AsyncRead + Unpin + ?Sized>(
    recv: &mut R,
    buf: &mut [u8],
) -> Result<bool, WireError> {
    let mut at = 0;
    while at < buf.len() {
        match recv.read(&mut buf[at..]).await? {
            0 if at == 0 => return Ok(false),
            0 => return Err(WireError::Truncated),
            n => at += n,
        }
    }
    Ok(true)
}

/// Reads one frame. `Ok(None)` when the peer finished the stream cleanly
/// between frames. The length is checked against `max` before allocating.
pub async fn read_frame<T: DeserializeOwned, R: AsyncRead + Unpin + ?Sized>(
    recv: &mut R,
    max: usize,
) -> Result<Option<T>, WireError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    if !fill(recv, &mut header).await? {
        return Ok(None);
    }
    let len = frame_len(header, max)?;
    let mut payload = vec![0u8; len];
    if !fill(recv, &mut payload).await? && len > 0 {
        return Err(WireError::Truncated);
    }
    Ok(Some(decode_payload(&payload)?))
}

/// Writes one frame and flushes it.
pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin + ?Sized>(
    send: &mut W,
    message: &T,
) -> Result<(), WireError> {
    let frame = encode_frame(message)?;
    send.write_all(&frame).await?;
    send.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dibop_protocol::{AgentToControl, Heartbeat};

    #[tokio::test]
    async fn frames_cross_and_a_clean_end_is_not_an_error() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let beat = AgentToControl::Heartbeat(Heartbeat {
            seq: 7,
            in_flight: 2,
        });
        write_frame(&mut a, &beat).await.unwrap();
        drop(a);
        let got: Option<AgentToControl> = read_frame(&mut b, 1024).await.unwrap();
        assert!(matches!(got, Some(AgentToControl::Heartbeat(h)) if h.seq == 7));
        let end: Option<AgentToControl> = read_frame(&mut b, 1024).await.unwrap();
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_truncated() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(&[0, 0, 0, 9, 1, 2]).await.unwrap();
        drop(a);
        let r: Result<Option<AgentToControl>, _> = read_frame(&mut b, 1024).await;
        assert!(matches!(r, Err(WireError::Truncated)), "{r:?}");
    }
}
