//! How Weir's data is laid out in fjall: keyspace names, keys and values.
//!
//! - `meta`: `stream/{name}` → [`StreamMeta`]; `shard/{stream id}/{shard}` →
//!   [`ShardState`] (rewritten in every commit that touches the shard).
//! - `s{stream id}_{shard}`: one keyspace per shard holding its records in
//!   chunks (see [`super::chunk`]); a shard given the emptied keyspace of a
//!   deleted one has `shard-keyspace/{stream id}/{shard}` → its name in
//!   `meta`.
//! - `meta`: `layout_version` → the data directory's layout (see
//!   [`LAYOUT_VERSION`]).
//! - `meta`: `segment/{stream id}/{segment}` → how many chunks the
//!   stream's segment file holds (see [`super::segments`]).
//! - `producers`: `{stream id}{shard}{producer id}` → [`DedupWindow`].
//! - `checkpoints`: `{stream name}\0{shard}\0{consumer}` → sequence number.
//!
//! Every value starts with a format byte so the layout can evolve.

use bytes::{Buf, BufMut, BytesMut};
use weir_proto::Retention;

use super::StorageError;

const FORMAT_V1: u8 = 1;

/// The data directory's layout: 1 stored one key per record, 2 stored
/// records in chunks in segment files per shard, 3 stored them in segment
/// files per stream, 4 may give a shard a deleted shard's keyspace and
/// writes chunk summaries with a checksum of their chunk (a layout 3
/// directory is stamped 4 as it is: it has no such shards yet, and its
/// summaries without checksums are still read).
/// A directory of another layout is refused at open.
pub const LAYOUT_VERSION: u32 = 4;
/// The layout [`LAYOUT_VERSION`] reads as it is.
pub const LAYOUT_VERSION_UPGRADABLE: u32 = 3;
pub const LAYOUT_VERSION_KEY: &str = "layout_version";

pub const META_KEYSPACE: &str = "meta";
pub const PRODUCERS_KEYSPACE: &str = "producers";
pub const CHECKPOINTS_KEYSPACE: &str = "checkpoints";

pub const PLUGINS_KEYSPACE: &str = "plugins";
pub const CURSORS_KEYSPACE: &str = "cursors";
pub const STATE_KEYSPACE: &str = "state";
pub const FAILURES_KEYSPACE: &str = "failures";

/// Scopes a processor's cursor, state and failures to one source shard.
pub fn processor_shard_prefix(processor_id: u64, shard: u32) -> [u8; 12] {
    let mut key = [0u8; 12];
    key[..8].copy_from_slice(&processor_id.to_be_bytes());
    key[8..].copy_from_slice(&shard.to_be_bytes());
    key
}

pub fn shard_keyspace_name(stream_id: u64, shard: u32) -> String {
    format!("s{stream_id}_{shard}")
}

/// Whether a keyspace holds a shard (named by [`shard_keyspace_name`]).
pub fn is_shard_keyspace_name(name: &str) -> bool {
    name.strip_prefix('s')
        .and_then(|rest| rest.split_once('_'))
        .is_some_and(|(stream, shard)| {
            stream.parse::<u64>().is_ok() && shard.parse::<u32>().is_ok()
        })
}

/// The keyspace a shard uses when it is not the one named after it.
pub fn shard_keyspace_key(stream_id: u64, shard: u32) -> String {
    format!("shard-keyspace/{stream_id}/{shard}")
}

pub fn stream_meta_key(name: &str) -> String {
    format!("stream/{name}")
}

pub const STREAM_META_PREFIX: &str = "stream/";

pub fn shard_state_key(stream_id: u64, shard: u32) -> String {
    format!("shard/{stream_id}/{shard}")
}

pub fn segment_chunks_prefix(stream_id: u64) -> String {
    format!("segment/{stream_id}/")
}

/// Zero-padded, so a stream's segments sort in order.
pub fn segment_chunks_key(stream_id: u64, segment: u64) -> String {
    format!("segment/{stream_id}/{segment:020}")
}

pub fn encode_chunk_count(count: u64) -> [u8; 9] {
    let mut value = [FORMAT_V1; 9];
    value[1..].copy_from_slice(&count.to_le_bytes());
    value
}

/// A `segment/{stream id}/{segment}` entry: the segment and its chunk count.
pub fn decode_segment_chunks(key: &[u8], mut value: &[u8]) -> Result<(u64, u64), StorageError> {
    check_format(&mut value, "segment chunk count")?;
    let segment = key
        .rsplit(|byte| *byte == b'/')
        .next()
        .and_then(|segment| std::str::from_utf8(segment).ok()?.parse().ok())
        .ok_or_else(|| corrupt("segment chunk count key"))?;
    let count = value
        .try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| corrupt("segment chunk count"))?;
    Ok((segment, count))
}

pub fn producer_key(stream_id: u64, shard: u32, producer_id: u64) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..8].copy_from_slice(&stream_id.to_be_bytes());
    key[8..12].copy_from_slice(&shard.to_be_bytes());
    key[12..].copy_from_slice(&producer_id.to_be_bytes());
    key
}

pub fn checkpoint_key(stream: &str, shard: u32, consumer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + consumer.len() + 6);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&shard.to_be_bytes());
    key.push(0);
    key.extend_from_slice(consumer.as_bytes());
    key
}

pub(super) fn corrupt(what: &'static str) -> StorageError {
    StorageError::Corrupt { what }
}

fn check_format(value: &mut &[u8], what: &'static str) -> Result<(), StorageError> {
    if value.remaining() < 1 || value.get_u8() != FORMAT_V1 {
        return Err(corrupt(what));
    }
    Ok(())
}

/// What a stream is, as stored under `stream/{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    /// Unique for the life of the data directory, so a re-created stream of
    /// the same name never sees its predecessor's keyspaces.
    pub id: u64,
    pub shard_count: u32,
    pub retention: Retention,
    /// When the stream was created, in ms since the epoch; 0 for streams
    /// created before Weir recorded it.
    pub created_ms: u64,
}

fn put_optional_u64(buf: &mut BytesMut, value: Option<u64>) {
    buf.put_u64_le(value.map_or(u64::MAX, |v| v));
}

fn get_optional_u64(value: &mut &[u8]) -> Option<u64> {
    Some(value.get_u64_le()).filter(|v| *v != u64::MAX)
}

impl StreamMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(37);
        buf.put_u8(FORMAT_V1);
        buf.put_u64_le(self.id);
        buf.put_u32_le(self.shard_count);
        put_optional_u64(&mut buf, self.retention.age_ms);
        put_optional_u64(&mut buf, self.retention.bytes);
        buf.put_u64_le(self.created_ms);
        buf.to_vec()
    }

    pub fn decode(mut value: &[u8]) -> Result<Self, StorageError> {
        check_format(&mut value, "stream metadata")?;
        // 28 bytes before the creation time was recorded, 36 since.
        if !matches!(value.remaining(), 28 | 36) {
            return Err(corrupt("stream metadata"));
        }
        Ok(Self {
            id: value.get_u64_le(),
            shard_count: value.get_u32_le(),
            retention: Retention {
                age_ms: get_optional_u64(&mut value),
                bytes: get_optional_u64(&mut value),
            },
            created_ms: if value.has_remaining() {
                value.get_u64_le()
            } else {
                0
            },
        })
    }
}

/// A shard's bookkeeping, committed atomically with every change to it, so
/// a restart needs no scan of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardState {
    /// The oldest sequence number not removed by retention.
    pub first_sequence: u64,
    /// The sequence number the next appended record gets.
    pub next_sequence: u64,
    /// Records stored (between first and next).
    pub records: u64,
    /// Stored record bytes (partition keys and data).
    pub bytes: u64,
    /// Arrival time of the newest record; timestamps never go backwards.
    pub last_timestamp_ms: u64,
    /// Bytes ever appended (a counter: retention does not lower it).
    pub bytes_appended: u64,
}

impl ShardState {
    pub fn encode(&self) -> [u8; 49] {
        let mut buf = [0u8; 49];
        let mut out = &mut buf[..];
        out.put_u8(FORMAT_V1);
        out.put_u64_le(self.first_sequence);
        out.put_u64_le(self.next_sequence);
        out.put_u64_le(self.records);
        out.put_u64_le(self.bytes);
        out.put_u64_le(self.last_timestamp_ms);
        out.put_u64_le(self.bytes_appended);
        buf
    }

    pub fn decode(mut value: &[u8]) -> Result<Self, StorageError> {
        check_format(&mut value, "shard state")?;
        if value.remaining() != 48 {
            return Err(corrupt("shard state"));
        }
        Ok(Self {
            first_sequence: value.get_u64_le(),
            next_sequence: value.get_u64_le(),
            records: value.get_u64_le(),
            bytes: value.get_u64_le(),
            last_timestamp_ms: value.get_u64_le(),
            bytes_appended: value.get_u64_le(),
        })
    }
}

/// A processor's progress in one source shard, committed with its outputs
/// and state writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorState {
    /// The next source sequence number to process.
    pub next_sequence: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub fuel_used: u64,
    pub records_failed: u64,
    /// The shard's state once this commit is applied: kept here, exact,
    /// so neither the state budget nor `processor describe` scans it.
    pub state: StateSize,
}

/// Keys in a processor's state in one shard, and their bytes (keys plus
/// values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSize {
    pub keys: u64,
    pub bytes: u64,
}

/// A cursor without the state size: written before Weir kept it.
const CURSOR_BYTES_WITHOUT_STATE: usize = 40;
const CURSOR_BYTES: usize = 56;

impl CursorState {
    pub fn encode(&self) -> [u8; 1 + CURSOR_BYTES] {
        let mut buf = [0u8; 1 + CURSOR_BYTES];
        let mut out = &mut buf[..];
        out.put_u8(FORMAT_V1);
        for value in [
            self.next_sequence,
            self.records_in,
            self.records_out,
            self.fuel_used,
            self.records_failed,
            self.state.keys,
            self.state.bytes,
        ] {
            out.put_u64_le(value);
        }
        buf
    }

    /// The cursor, and whether it carries the state size (older ones do
    /// not; the caller counts it then).
    pub fn decode(mut value: &[u8]) -> Result<(Self, bool), StorageError> {
        check_format(&mut value, "processor cursor")?;
        let with_state = match value.remaining() {
            CURSOR_BYTES => true,
            CURSOR_BYTES_WITHOUT_STATE => false,
            _ => return Err(corrupt("processor cursor")),
        };
        let mut cursor = Self {
            next_sequence: value.get_u64_le(),
            records_in: value.get_u64_le(),
            records_out: value.get_u64_le(),
            fuel_used: value.get_u64_le(),
            records_failed: value.get_u64_le(),
            state: StateSize::default(),
        };
        if with_state {
            cursor.state = StateSize {
                keys: value.get_u64_le(),
                bytes: value.get_u64_le(),
            };
        }
        Ok((cursor, with_state))
    }
}

/// One producer batch's slice in one shard: which sequence numbers it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupEntry {
    pub batch_sequence: u64,
    pub first_sequence: u64,
    pub count: u32,
}

/// The most recent batches of one producer in one shard, so a retry of any
/// of them is answered with the sequence numbers it was first given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupWindow {
    pub entries: Vec<DedupEntry>,
}

impl DedupWindow {
    pub fn find(&self, batch_sequence: u64) -> Option<DedupEntry> {
        self.entries
            .iter()
            .find(|e| e.batch_sequence == batch_sequence)
            .copied()
    }

    /// Whether `batch_sequence` is older than everything a full window
    /// remembers: such a batch can be neither answered nor safely appended.
    pub fn is_too_old(&self, batch_sequence: u64, window_batches_max: usize) -> bool {
        self.entries.len() >= window_batches_max
            && self
                .entries
                .iter()
                .all(|e| e.batch_sequence > batch_sequence)
    }

    pub fn remember(&mut self, entry: DedupEntry, window_batches_max: usize) {
        let oldest = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.batch_sequence)
            .map(|(i, _)| i);
        if let Some(oldest) = oldest.filter(|_| self.entries.len() >= window_batches_max) {
            self.entries.swap_remove(oldest);
        }
        self.entries.push(entry);
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = BytesMut::with_capacity(1 + self.entries.len() * 20);
        buf.put_u8(FORMAT_V1);
        for entry in &self.entries {
            buf.put_u64_le(entry.batch_sequence);
            buf.put_u64_le(entry.first_sequence);
            buf.put_u32_le(entry.count);
        }
        buf.to_vec()
    }

    pub fn decode(mut value: &[u8]) -> Result<Self, StorageError> {
        check_format(&mut value, "producer dedup window")?;
        if !value.remaining().is_multiple_of(20) {
            return Err(corrupt("producer dedup window"));
        }
        let mut entries = Vec::with_capacity(value.remaining() / 20);
        while value.has_remaining() {
            entries.push(DedupEntry {
                batch_sequence: value.get_u64_le(),
                first_sequence: value.get_u64_le(),
                count: value.get_u32_le(),
            });
        }
        Ok(Self { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let meta = StreamMeta {
            id: 3,
            shard_count: 4,
            retention: Retention {
                age_ms: Some(60_000),
                bytes: None,
            },
            created_ms: 1_764_000_000_000,
        };
        assert_eq!(StreamMeta::decode(&meta.encode()).expect("valid"), meta);
        // Written before the creation time was recorded: read as 0.
        let old = &meta.encode()[..29];
        let old = StreamMeta::decode(old).expect("valid");
        assert_eq!((old.id, old.created_ms), (3, 0));

        let state = ShardState {
            first_sequence: 1,
            next_sequence: 10,
            records: 9,
            bytes: 900,
            last_timestamp_ms: 77,
            bytes_appended: 1000,
        };
        assert_eq!(ShardState::decode(&state.encode()).expect("valid"), state);
    }

    #[test]
    fn cursors_round_trip_and_older_ones_lack_the_state_size() {
        let cursor = CursorState {
            next_sequence: 5,
            records_in: 4,
            records_out: 3,
            fuel_used: 2,
            records_failed: 1,
            state: StateSize { keys: 7, bytes: 70 },
        };
        let encoded = cursor.encode();
        assert_eq!(
            CursorState::decode(&encoded).expect("valid"),
            (cursor, true)
        );
        let (older, with_state) = CursorState::decode(&encoded[..41]).expect("valid");
        assert!(!with_state);
        assert_eq!(older.next_sequence, 5);
        assert_eq!(older.records_failed, 1);
        assert!(CursorState::decode(&encoded[..50]).is_err());
    }

    #[test]
    fn corrupt_values_are_errors() {
        assert!(StreamMeta::decode(&[1, 2, 3]).is_err());
        assert!(DedupWindow::decode(&[1, 0, 0]).is_err());
        let key = segment_chunks_key(7, 12);
        assert!(decode_segment_chunks(key.as_bytes(), &[1, 0, 0]).is_err());
        assert!(decode_segment_chunks(key.as_bytes(), &[9; 9]).is_err());
        let count = encode_chunk_count(3);
        assert!(decode_segment_chunks(b"segment/7/twelve", &count).is_err());
    }

    #[test]
    fn segment_chunk_counts_round_trip_and_sort_by_segment() {
        let key = segment_chunks_key(7, 12);
        assert!(key.starts_with(&segment_chunks_prefix(7)));
        let decoded = decode_segment_chunks(key.as_bytes(), &encode_chunk_count(3));
        assert_eq!(decoded.expect("valid"), (12, 3));
        // Zero-padded, so a prefix scan yields a stream's segments in order.
        assert!(segment_chunks_key(7, 9) < segment_chunks_key(7, 10));
    }

    #[test]
    fn dedup_window_keeps_the_newest_batches() {
        let mut window = DedupWindow::default();
        for batch in 0..5 {
            window.remember(
                DedupEntry {
                    batch_sequence: batch,
                    first_sequence: batch * 10,
                    count: 10,
                },
                3,
            );
        }
        assert_eq!(window.entries.len(), 3);
        assert!(window.find(1).is_none());
        assert_eq!(window.find(4).map(|e| e.first_sequence), Some(40));
        assert!(window.is_too_old(1, 3));
        assert!(!window.is_too_old(5, 3));
        assert_eq!(
            DedupWindow::decode(&window.encode()).expect("valid"),
            window
        );
    }
}
