//! Length-prefixed postcard frames.

use serde::{Serialize, de::DeserializeOwned};

/// Size of the length prefix in front of every frame.
pub const FRAME_HEADER_LEN: usize = 4;

/// Hard maximum payload length of one frame: 16 MiB. It bounds the largest
/// call body (see the agent's `max_response_bytes`, which stays below this)
/// and is checked before anything is allocated.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {frame_len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced payload length.
        frame_len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The payload is not a valid message of the expected direction.
    #[error("malformed frame payload: {0}")]
    Malformed(String),
    /// A message could not be serialized (should not happen for our types).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// The result of trying to decode one frame from the front of a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded<T> {
    /// A whole message, and how many bytes of the buffer it used.
    Frame {
        /// The decoded message.
        message: T,
        /// Bytes consumed from the front of the buffer (header included).
        consumed: usize,
    },
    /// The buffer holds only part of a frame; at least this many more bytes
    /// are needed before trying again. Not an error.
    NeedMore(usize),
}

/// Encodes `message` as one frame (length prefix + postcard payload).
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(message, vec![0u8; FRAME_HEADER_LEN])
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = out.len() - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            frame_len: len,
            max: MAX_FRAME_LEN,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        frame_len: len,
        max: MAX_FRAME_LEN,
    })?;
    out[..FRAME_HEADER_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Reads the payload length announced by a frame header, refusing lengths
/// above `max` (use [`MAX_FRAME_LEN`] unless the caller has a tighter bound).
pub fn frame_len(header: [u8; FRAME_HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            frame_len: len,
            max,
        });
    }
    Ok(len)
}

/// Decodes one payload (without its header).
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (message, rest) =
        postcard::take_from_bytes(payload).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

/// Tries to decode one frame from the front of `buf`.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Decoded<T>, FrameError> {
    let Some(header) = buf.get(..FRAME_HEADER_LEN) else {
        return Ok(Decoded::NeedMore(FRAME_HEADER_LEN - buf.len()));
    };
    let header: [u8; FRAME_HEADER_LEN] = header
        .try_into()
        .map_err(|_| FrameError::Malformed("short header".into()))?;
    let len = frame_len(header, MAX_FRAME_LEN)?;
    let total = FRAME_HEADER_LEN + len;
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total - buf.len()));
    }
    let message = decode_payload(&buf[FRAME_HEADER_LEN..total])?;
    Ok(Decoded::Frame {
        message,
        consumed: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AgentToControl, Heartbeat};

    #[test]
    fn partial_frames_ask_for_more() {
        let frame = encode_frame(&AgentToControl::Heartbeat(Heartbeat {
            seq: 7,
            in_flight: 2,
        }))
        .unwrap();
        for cut in 0..frame.len() {
            match decode_frame::<AgentToControl>(&frame[..cut]).unwrap() {
                Decoded::NeedMore(n) => assert!(n > 0 && n <= frame.len() - cut),
                Decoded::Frame { .. } => {
                    panic!("decoded a frame from {cut} of {} bytes", frame.len())
                }
            }
        }
        let Decoded::Frame { consumed, .. } = decode_frame::<AgentToControl>(&frame).unwrap()
        else {
            panic!("whole frame must decode")
        };
        assert_eq!(consumed, frame.len());
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let buf = [0xff, 0xff, 0xff, 0xff, 0x00];
        assert_eq!(
            decode_frame::<AgentToControl>(&buf),
            Err(FrameError::TooLarge {
                frame_len: u32::MAX as usize,
                max: MAX_FRAME_LEN
            })
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let buf = [0, 0, 0, 3, 0xee, 0xee, 0xee];
        assert!(matches!(
            decode_frame::<AgentToControl>(&buf),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode_frame(&AgentToControl::Heartbeat(Heartbeat {
            seq: 1,
            in_flight: 0,
        }))
        .unwrap();
        frame.push(0);
        let len = (frame.len() - FRAME_HEADER_LEN) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            decode_frame::<AgentToControl>(&frame),
            Err(FrameError::Malformed(_))
        ));
    }
}
