//! Shard iterators: opaque, tamper-proof, expiring tokens naming where the
//! next `GetRecords` starts.
//!
//! An iterator carries the stream's id (so a stream deleted and created
//! again under the same name does not accept its predecessor's
//! iterators), the shard, the position and when it was issued, sealed
//! with an HMAC under a key derived from the data directory's stable
//! secret (`tls/reset.key`), so iterators survive a restart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, BufMut, BytesMut};
use ring::hmac;

use super::error::KinesisError;

const VERSION: u8 = 1;
const MAC_BYTES: usize = 16;

/// Where an iterator points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IteratorPosition {
    /// The next record to read is this sequence number.
    Sequence(u64),
    /// The first record that arrived at or after this time (epoch ms),
    /// resolved at each read until records are found: a time in the
    /// future reads nothing yet, without skipping what arrives before it.
    Timestamp(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator {
    pub stream: String,
    pub stream_id: u64,
    pub shard: u32,
    pub position: IteratorPosition,
    pub issued_ms: u64,
}

/// Seals and opens iterators.
pub struct IteratorKeys {
    key: hmac::Key,
    ttl_ms: u64,
}

impl IteratorKeys {
    /// `secret` is the data directory's stable secret; `ttl_ms` how long
    /// an iterator is valid (Kinesis: 5 minutes).
    pub fn new(secret: &[u8], ttl_ms: u64) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            b"weir kinesis shard iterator v1",
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            ttl_ms,
        }
    }

    pub fn seal(&self, iterator: &ShardIterator) -> String {
        let mut body = BytesMut::new();
        body.put_u8(VERSION);
        body.put_u64(iterator.stream_id);
        body.put_u32(iterator.shard);
        match iterator.position {
            IteratorPosition::Sequence(sequence) => {
                body.put_u8(0);
                body.put_u64(sequence);
            }
            IteratorPosition::Timestamp(ms) => {
                body.put_u8(1);
                body.put_u64(ms);
            }
        }
        body.put_u64(iterator.issued_ms);
        body.put_slice(iterator.stream.as_bytes());
        let mac = hmac::sign(&self.key, &body);
        body.put_slice(&mac.as_ref()[..MAC_BYTES]);
        BASE64.encode(&body)
    }

    /// Opens an iterator; a forged, damaged or expired one is an error.
    pub fn open(&self, text: &str, now_ms: u64) -> Result<ShardIterator, KinesisError> {
        let invalid = || KinesisError::invalid_argument(format!("Invalid ShardIterator: {text}"));
        let bytes = BASE64.decode(text).map_err(|_| invalid())?;
        const FIXED: usize = 1 + 8 + 4 + 1 + 8 + 8;
        if bytes.len() < FIXED + MAC_BYTES || bytes[0] != VERSION {
            return Err(invalid());
        }
        let (body, mac) = bytes.split_at(bytes.len() - MAC_BYTES);
        let expected = hmac::sign(&self.key, body);
        // A 16-byte MAC compared without early exit.
        if expected.as_ref()[..MAC_BYTES]
            .iter()
            .zip(mac)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            != 0
        {
            return Err(invalid());
        }
        let mut reader = &body[1..];
        let stream_id = reader.get_u64();
        let shard = reader.get_u32();
        let position = match reader.get_u8() {
            0 => IteratorPosition::Sequence(reader.get_u64()),
            1 => IteratorPosition::Timestamp(reader.get_u64()),
            _ => return Err(invalid()),
        };
        let issued_ms = reader.get_u64();
        let stream = String::from_utf8(reader.to_vec()).map_err(|_| invalid())?;
        let iterator = ShardIterator {
            stream,
            stream_id,
            shard,
            position,
            issued_ms,
        };
        if now_ms.saturating_sub(issued_ms) > self.ttl_ms {
            return Err(KinesisError::new(
                "ExpiredIteratorException",
                format!(
                    "Iterator expired. The iterator was created at time {} while right now it is {} \
                     and this is more than {} ms (kinesis.shard_iterator_ttl_ms) later.",
                    crate::aws::sigv4::format_amz_date(issued_ms),
                    crate::aws::sigv4::format_amz_date(now_ms),
                    self.ttl_ms
                ),
            ));
        }
        Ok(iterator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShardIterator {
        ShardIterator {
            stream: "clicks".into(),
            stream_id: 7,
            shard: 3,
            position: IteratorPosition::Sequence(42),
            issued_ms: 1_000_000,
        }
    }

    #[test]
    fn iterators_round_trip_and_expire() {
        let keys = IteratorKeys::new(b"secret", 300_000);
        let text = keys.seal(&sample());
        assert_eq!(
            keys.open(&text, 1_000_000 + 300_000).expect("valid"),
            sample()
        );
        let expired = keys.open(&text, 1_000_000 + 300_001).expect_err("expired");
        assert_eq!(expired.code, "ExpiredIteratorException");
        let mut timed = sample();
        timed.position = IteratorPosition::Timestamp(99);
        assert_eq!(
            keys.open(&keys.seal(&timed), 1_000_000).expect("valid"),
            timed
        );
    }

    #[test]
    fn forged_damaged_and_foreign_iterators_are_refused() {
        let keys = IteratorKeys::new(b"secret", 300_000);
        let text = keys.seal(&sample());
        let mut bytes = BASE64.decode(&text).expect("base64");
        bytes[12] ^= 1; // the shard number
        let forged = BASE64.encode(&bytes);
        let other = IteratorKeys::new(b"other secret", 300_000);
        for bad in [
            forged.as_str(),
            "",
            "not base64!",
            "AAAA",
            &other.seal(&sample()),
        ] {
            let error = keys.open(bad, 1_000_000).expect_err(bad);
            assert_eq!(error.code, "InvalidArgumentException", "{bad}");
        }
    }
}
