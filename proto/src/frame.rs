//! Framing: `u32` little-endian body length, then the body, whose first byte
//! is the message kind.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// Bytes before the body: the `u32` length.
pub const FRAME_HEADER_BYTES: usize = 4;

/// One undecoded message: its kind byte and the rest of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub body: Bytes,
}

/// Takes one complete frame off the front of `buf`, if there is one.
///
/// Returns `Ok(None)` when more bytes are needed. A frame whose declared body
/// is larger than `frame_bytes_max` is rejected before any of it is buffered.
pub fn decode_frame(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Frame>, DecodeError> {
    let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Ok(None);
    };
    let len = body_len(*header, frame_bytes_max)?;
    if buf.len() < FRAME_HEADER_BYTES + len {
        buf.reserve(FRAME_HEADER_BYTES + len - buf.len());
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_BYTES);
    let mut body = buf.split_to(len).freeze();
    let kind = body.get_u8();
    Ok(Some(Frame { kind, body }))
}

/// The body length a frame header declares, checked against
/// `frame_bytes_max`, so a reader can budget for the body before reading it.
pub fn body_len(
    header: [u8; FRAME_HEADER_BYTES],
    frame_bytes_max: usize,
) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(header) as usize;
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    if len > frame_bytes_max {
        return Err(DecodeError::FrameTooLarge {
            bytes: len,
            frame_bytes_max,
        });
    }
    Ok(len)
}

/// Writes a frame of `kind` whose body is produced by `write_body`, filling
/// in the length afterwards.
pub(crate) fn encode_frame(buf: &mut BytesMut, kind: u8, write_body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32_le(0);
    buf.put_u8(kind);
    write_body(buf);
    let body_len = (buf.len() - start - FRAME_HEADER_BYTES) as u32;
    buf[start..start + FRAME_HEADER_BYTES].copy_from_slice(&body_len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut full = BytesMut::new();
        encode_frame(&mut full, 7, |b| b.put_slice(b"hello"));
        for cut in 0..full.len() {
            let mut partial = BytesMut::from(&full[..cut]);
            assert_eq!(decode_frame(&mut partial, 1024), Ok(None), "cut at {cut}");
        }
        let frame = decode_frame(&mut full, 1024)
            .expect("valid")
            .expect("complete");
        assert_eq!(frame.kind, 7);
        assert_eq!(&frame.body[..], b"hello");
        assert!(full.is_empty());
    }

    #[test]
    fn oversized_and_empty_frames_are_rejected() {
        let mut buf = BytesMut::from(&2048u32.to_le_bytes()[..]);
        assert_eq!(
            decode_frame(&mut buf, 1024),
            Err(DecodeError::FrameTooLarge {
                bytes: 2048,
                frame_bytes_max: 1024
            })
        );
        let mut empty = BytesMut::from(&0u32.to_le_bytes()[..]);
        assert_eq!(decode_frame(&mut empty, 1024), Err(DecodeError::EmptyFrame));
    }
}
