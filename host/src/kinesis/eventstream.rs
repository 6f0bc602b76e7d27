//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the
//! body of a `SubscribeToShard` answer: each message is a prelude (total
//! and header lengths, CRC32 of the two), string headers, a payload and a
//! CRC32 of everything before it.

use bytes::{BufMut, Bytes, BytesMut};

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// Header value type 7: a string with a 16-bit length.
const STRING_HEADER: u8 = 7;
const PRELUDE_BYTES: usize = 12;
const CRC_BYTES: usize = 4;

/// An event named `event_type` carrying `payload` of `content_type`.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":message-type", "event"),
            (":event-type", event_type),
            (":content-type", content_type),
        ],
        payload,
    )
}

/// An exception that ends the stream, as AWS sends one mid-stream.
pub fn exception(code: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":message-type", "exception"),
            (":exception-type", code),
            (":content-type", content_type),
        ],
        payload,
    )
}

fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded_headers = BytesMut::new();
    for (name, value) in headers {
        encoded_headers.put_u8(name.len() as u8);
        encoded_headers.put_slice(name.as_bytes());
        encoded_headers.put_u8(STRING_HEADER);
        encoded_headers.put_u16(value.len() as u16);
        encoded_headers.put_slice(value.as_bytes());
    }
    let total = PRELUDE_BYTES + encoded_headers.len() + payload.len() + CRC_BYTES;
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(encoded_headers.len() as u32);
    let prelude_crc = crc32fast::hash(&out);
    out.put_u32(prelude_crc);
    out.put_slice(&encoded_headers);
    out.put_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.put_u32(message_crc);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_lengths_and_checksums() {
        let bytes = event("initial-response", "application/x-amz-json-1.1", b"{}");
        let total = u32::from_be_bytes(bytes[0..4].try_into().expect("4")) as usize;
        let headers = u32::from_be_bytes(bytes[4..8].try_into().expect("4")) as usize;
        assert_eq!(total, bytes.len());
        assert_eq!(
            u32::from_be_bytes(bytes[8..12].try_into().expect("4")),
            crc32fast::hash(&bytes[..8])
        );
        assert_eq!(
            u32::from_be_bytes(bytes[total - 4..].try_into().expect("4")),
            crc32fast::hash(&bytes[..total - 4])
        );
        assert_eq!(&bytes[12 + headers..total - 4], b"{}");
        let first = &bytes[12..12 + headers];
        assert_eq!(first[0] as usize, ":message-type".len());
        assert_eq!(&first[1..14], b":message-type");
    }
}
