//! How a shard's records are stored: in chunks, not one key each.
//!
//! A chunk holds consecutive records of one shard, written by one group
//! commit (a group's records for a shard are split into chunks of about
//! `chunk_bytes_max`). The chunk itself goes to its stream's segment files
//! ([`super::segments`]); the shard's fjall keyspace holds one small
//! [`ChunkSummary`] per chunk, keyed by its first sequence (big-endian, so
//! keys sort in sequence order): count, bytes, first and last arrival time
//! and where the chunk is. Retention and `AT_TIMESTAMP` read only
//! summaries; fjall's per-key costs are paid once per chunk.
//!
//! A chunk: format, base arrival time, record count, then per record its
//! arrival time (ms after the base), partition key and data lengths, the
//! partition key and the data. A shard's `first_sequence` is always a
//! chunk's first sequence (retention removes whole chunks), or its
//! `next_sequence` when it holds no records.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fjall::Keyspace;
use weir_proto::Record;

use super::StorageError;
use super::layout::corrupt;

const FORMAT_CHUNK: u8 = 1;
/// Summaries of format 1 (layout 3) carry no checksum of their chunk.
const FORMAT_SUMMARY_UNCHECKED: u8 = 1;
const FORMAT_SUMMARY: u8 = 2;
const SUMMARY_UNCHECKED_BYTES: usize = 1 + 4 + 8 + 8 + 8 + 8 + 8 + 4;
const SUMMARY_BYTES: usize = SUMMARY_UNCHECKED_BYTES + 4;

/// Format byte, base arrival time, record count.
const CHUNK_HEADER_BYTES: usize = 1 + 8 + 4;
/// Arrival time after the base, partition key length, data length.
const RECORD_HEADER_BYTES: usize = 4 + 2 + 4;

/// Key of the summary of the chunk whose first record has `first_sequence`.
pub fn summary_key(first_sequence: u64) -> [u8; 8] {
    first_sequence.to_be_bytes()
}

/// Where a chunk is stored: which segment file of its stream, and where in
/// it. Ordered as the stream's log is: the newest chunk is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ChunkLocation {
    /// The segment's number in its stream's log (its name).
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// What retention and time searches need to know about a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSummary {
    pub first_sequence: u64,
    pub count: u32,
    /// Partition key and data bytes of its records.
    pub record_bytes: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    pub location: ChunkLocation,
    /// CRC-32 of the chunk's bytes as written, checked when it is read:
    /// segment files have no checksums of their own. `None` for chunks
    /// written before summaries carried it.
    pub checksum: Option<u32>,
}

impl ChunkSummary {
    /// The sequence number after the chunk's last record.
    pub fn end(&self) -> u64 {
        self.first_sequence + u64::from(self.count)
    }

    pub fn encode(&self) -> [u8; SUMMARY_BYTES] {
        let mut out = [0u8; SUMMARY_BYTES];
        let mut buf = &mut out[..];
        buf.put_u8(FORMAT_SUMMARY);
        buf.put_u32_le(self.count);
        buf.put_u64_le(self.record_bytes);
        buf.put_u64_le(self.first_timestamp_ms);
        buf.put_u64_le(self.last_timestamp_ms);
        buf.put_u64_le(self.location.segment);
        buf.put_u64_le(self.location.offset);
        buf.put_u32_le(self.location.len);
        buf.put_u32_le(self.checksum.unwrap_or_default());
        out
    }

    pub fn decode(key: &[u8], mut value: &[u8]) -> Result<Self, StorageError> {
        let checked = match (value.len(), value.first()) {
            (SUMMARY_BYTES, Some(&FORMAT_SUMMARY)) => true,
            (SUMMARY_UNCHECKED_BYTES, Some(&FORMAT_SUMMARY_UNCHECKED)) => false,
            _ => return Err(corrupt("chunk summary")),
        };
        value.advance(1);
        let first_sequence = key
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| corrupt("chunk key"))?;
        Ok(Self {
            first_sequence,
            count: value.get_u32_le(),
            record_bytes: value.get_u64_le(),
            first_timestamp_ms: value.get_u64_le(),
            last_timestamp_ms: value.get_u64_le(),
            location: ChunkLocation {
                segment: value.get_u64_le(),
                offset: value.get_u64_le(),
                len: value.get_u32_le(),
            },
            checksum: checked.then(|| value.get_u32_le()),
        })
    }

    /// Whether `chunk` is the chunk this summary was written for, as far as
    /// its checksum can tell (always, for chunks written without one).
    pub fn matches(&self, chunk: &[u8]) -> bool {
        self.checksum
            .is_none_or(|checksum| crc32fast::hash(chunk) == checksum)
    }
}

/// A chunk being filled by the writer.
pub struct ChunkBuilder {
    summary: ChunkSummary,
    buf: BytesMut,
}

impl ChunkBuilder {
    pub fn new(first_sequence: u64, timestamp_ms: u64) -> Self {
        let mut buf = BytesMut::new();
        buf.put_u8(FORMAT_CHUNK);
        buf.put_u64_le(timestamp_ms);
        buf.put_u32_le(0); // the count, written by `finish`
        Self {
            summary: ChunkSummary {
                first_sequence,
                count: 0,
                record_bytes: 0,
                first_timestamp_ms: timestamp_ms,
                last_timestamp_ms: timestamp_ms,
                location: ChunkLocation::default(),
                checksum: None,
            },
            buf,
        }
    }

    /// Adds the next record; arrival times never go backwards, and a group
    /// commit spans far less than the 49 days a `u32` of ms covers.
    pub fn push(&mut self, timestamp_ms: u64, partition_key: &str, data: &[u8]) {
        let offset = timestamp_ms.saturating_sub(self.summary.first_timestamp_ms);
        self.buf
            .reserve(RECORD_HEADER_BYTES + partition_key.len() + data.len());
        self.buf
            .put_u32_le(u32::try_from(offset).unwrap_or(u32::MAX));
        self.buf.put_u16_le(partition_key.len() as u16);
        self.buf.put_u32_le(data.len() as u32);
        self.buf.put_slice(partition_key.as_bytes());
        self.buf.put_slice(data);
        self.summary.count += 1;
        self.summary.record_bytes += (partition_key.len() + data.len()) as u64;
        self.summary.last_timestamp_ms = timestamp_ms;
    }

    /// Encoded bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The chunk and its summary, whose location the caller fills in.
    pub fn finish(mut self) -> (ChunkSummary, Bytes) {
        self.buf[9..13].copy_from_slice(&self.summary.count.to_le_bytes());
        self.summary.checksum = Some(crc32fast::hash(&self.buf));
        (self.summary, self.buf.freeze())
    }
}

/// Reads a stored chunk's records in order, without copying their data.
pub struct ChunkReader {
    value: Bytes,
    /// Offset of the next record in `value`.
    offset: usize,
    next_sequence: u64,
    remaining: u32,
    base_timestamp_ms: u64,
}

impl ChunkReader {
    pub fn new(first_sequence: u64, value: Bytes) -> Result<Self, StorageError> {
        let mut header = &value[..];
        if header.len() < CHUNK_HEADER_BYTES || header.get_u8() != FORMAT_CHUNK {
            return Err(corrupt("chunk header"));
        }
        let base_timestamp_ms = header.get_u64_le();
        let remaining = header.get_u32_le();
        Ok(Self {
            next_sequence: first_sequence,
            value,
            offset: CHUNK_HEADER_BYTES,
            remaining,
            base_timestamp_ms,
        })
    }

    /// The sequence number of the record `next` returns.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The next record's arrival time and where its parts are.
    fn next_header(&self) -> Result<Option<(u64, usize, usize)>, StorageError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut header = self
            .value
            .get(self.offset..self.offset + RECORD_HEADER_BYTES)
            .ok_or_else(|| corrupt("chunk record header"))?;
        let timestamp_ms = self.base_timestamp_ms + u64::from(header.get_u32_le());
        let key_len = usize::from(header.get_u16_le());
        let data_len = header.get_u32_le() as usize;
        if self.value.len() < self.offset + RECORD_HEADER_BYTES + key_len + data_len {
            return Err(corrupt("chunk record"));
        }
        Ok(Some((timestamp_ms, key_len, data_len)))
    }

    fn advance(&mut self, key_len: usize, data_len: usize) {
        self.offset += RECORD_HEADER_BYTES + key_len + data_len;
        self.next_sequence += 1;
        self.remaining -= 1;
    }

    /// Passes over records while `skip(sequence, arrival time)` says so,
    /// decoding only their headers.
    fn skip_while(&mut self, skip: impl Fn(u64, u64) -> bool) -> Result<(), StorageError> {
        while let Some((timestamp_ms, key_len, data_len)) = self.next_header()? {
            if !skip(self.next_sequence, timestamp_ms) {
                break;
            }
            self.advance(key_len, data_len);
        }
        Ok(())
    }

    /// Passes over the records before `sequence`.
    pub fn skip_to(&mut self, sequence: u64) -> Result<(), StorageError> {
        self.skip_while(|next, _| next < sequence)
    }

    /// Passes over the records that arrived before `ms`.
    pub fn skip_older_than(&mut self, ms: u64) -> Result<(), StorageError> {
        self.skip_while(|_, timestamp_ms| timestamp_ms < ms)
    }

    /// The next record's arrival time, if there is a next record.
    pub fn next_timestamp_ms(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.next_header()?.map(|(timestamp_ms, ..)| timestamp_ms))
    }

    /// Passes over the rest of the chunk, decoding only headers: the
    /// partition key and data bytes of the records passed.
    pub fn skip_rest(&mut self) -> Result<u64, StorageError> {
        let mut bytes = 0;
        while let Some((_, key_len, data_len)) = self.next_header()? {
            bytes += (key_len + data_len) as u64;
            self.advance(key_len, data_len);
        }
        Ok(bytes)
    }

    pub fn next_record(&mut self) -> Result<Option<Record>, StorageError> {
        let Some((timestamp_ms, key_len, data_len)) = self.next_header()? else {
            return Ok(None);
        };
        let key_start = self.offset + RECORD_HEADER_BYTES;
        let partition_key = std::str::from_utf8(&self.value[key_start..key_start + key_len])
            .map_err(|_| corrupt("record partition key"))?
            .to_owned();
        let data_start = key_start + key_len;
        let record = Record {
            sequence: self.next_sequence,
            timestamp_ms,
            partition_key,
            data: self.value.slice(data_start..data_start + data_len),
        };
        self.advance(key_len, data_len);
        Ok(Some(record))
    }
}

/// The summary of the last chunk starting at or before `sequence`.
fn summary_at_or_before(
    keyspace: &Keyspace,
    sequence: u64,
) -> Result<Option<ChunkSummary>, StorageError> {
    let Some(entry) = keyspace
        .range(summary_key(0)..=summary_key(sequence))
        .next_back()
    else {
        return Ok(None);
    };
    let (key, value) = entry.into_inner()?;
    ChunkSummary::decode(&key, &value).map(Some)
}

/// The summary of the chunk holding `sequence`, if it is stored.
pub fn summary_at(
    keyspace: &Keyspace,
    sequence: u64,
) -> Result<Option<ChunkSummary>, StorageError> {
    Ok(summary_at_or_before(keyspace, sequence)?.filter(|summary| sequence < summary.end()))
}

/// Summaries of the chunks from the one starting at `first_sequence` on.
pub fn summaries_from(
    keyspace: &Keyspace,
    first_sequence: u64,
) -> impl Iterator<Item = Result<ChunkSummary, StorageError>> {
    keyspace
        .range(summary_key(first_sequence)..=summary_key(u64::MAX))
        .map(|entry| {
            let (key, value) = entry.into_inner()?;
            ChunkSummary::decode(&key, &value)
        })
}

/// Readers of the stored chunks from the one holding `start` to the one
/// holding `end - 1`, the first positioned at `start`; `load` fetches a
/// chunk's bytes.
pub fn read_from<'a>(
    keyspace: &Keyspace,
    start: u64,
    end: u64,
    load: impl Fn(&ChunkSummary) -> Result<Bytes, StorageError> + 'a,
) -> Result<impl Iterator<Item = Result<ChunkReader, StorageError>> + 'a, StorageError> {
    let first = summary_at(keyspace, start)?.map_or(start, |summary| summary.first_sequence);
    let summaries = keyspace.range(summary_key(first)..summary_key(end));
    Ok(summaries.map(move |entry| {
        let (key, value) = entry.into_inner()?;
        let summary = ChunkSummary::decode(&key, &value)?;
        let mut reader = ChunkReader::new(summary.first_sequence, load(&summary)?)?;
        reader.skip_to(start)?;
        Ok(reader)
    }))
}

/// The last stored chunk's summary.
pub fn last_summary(keyspace: &Keyspace) -> Result<Option<ChunkSummary>, StorageError> {
    summary_at_or_before(keyspace, u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(first_sequence: u64) -> (ChunkSummary, Bytes) {
        let mut builder = ChunkBuilder::new(first_sequence, 1_000);
        builder.push(1_000, "user-7", b"first");
        builder.push(1_005, "", b"");
        builder.push(1_009, "k", b"third");
        let (mut summary, value) = builder.finish();
        summary.location = ChunkLocation {
            segment: 7,
            offset: 1 << 40,
            len: value.len() as u32,
        };
        (summary, value)
    }

    #[test]
    fn chunks_round_trip_from_any_record() {
        let (summary, value) = chunk(40);
        assert_eq!(
            (summary.count, summary.record_bytes, summary.end()),
            (3, 17, 43)
        );
        assert_eq!(
            (summary.first_timestamp_ms, summary.last_timestamp_ms),
            (1_000, 1_009)
        );
        let encoded = summary.encode();
        assert_eq!(
            ChunkSummary::decode(&summary_key(40), &encoded).expect("valid"),
            summary
        );

        let mut reader = ChunkReader::new(40, value.clone()).expect("valid");
        let first = reader.next_record().expect("valid").expect("a record");
        assert_eq!(
            (
                first.sequence,
                first.timestamp_ms,
                first.partition_key.as_str()
            ),
            (40, 1_000, "user-7")
        );
        assert_eq!(&first.data[..], b"first");

        let mut reader = ChunkReader::new(40, value).expect("valid");
        reader.skip_older_than(1_006).expect("valid");
        assert_eq!(reader.next_sequence(), 42);
        reader.skip_to(42).expect("valid");
        let third = reader.next_record().expect("valid").expect("a record");
        assert_eq!((third.sequence, &third.data[..]), (42, &b"third"[..]));
        assert!(reader.next_record().expect("valid").is_none());
    }

    #[test]
    fn keys_sort_in_sequence_order() {
        assert!(summary_key(255) < summary_key(256));
        assert!(ChunkSummary::decode(b"short", &[0; SUMMARY_BYTES]).is_err());
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let (_, value) = chunk(0);
        for cut in [0, 5, CHUNK_HEADER_BYTES + 3, value.len() - 1] {
            let truncated = value.slice(..cut);
            let result = ChunkReader::new(0, truncated).and_then(|mut reader| {
                while reader.next_record()?.is_some() {}
                Ok(())
            });
            assert!(result.is_err(), "a chunk cut at {cut} bytes decoded");
        }
        assert!(ChunkSummary::decode(&summary_key(0), &[1, 2, 3]).is_err());
    }

    /// A chunk's summary carries a checksum of it that tells a damaged
    /// copy from the one written; summaries from before it (format 1)
    /// still decode, and check nothing.
    #[test]
    fn summaries_carry_a_checksum_of_their_chunk() {
        let (summary, value) = chunk(0);
        assert!(summary.checksum.is_some() && summary.matches(&value));
        let mut flipped = value.to_vec();
        let last = flipped.len() - 1;
        flipped[last] ^= 1; // a bit of the last record's data
        assert!(!summary.matches(&flipped));

        let unchecked = &summary.encode()[..SUMMARY_UNCHECKED_BYTES];
        let mut older = unchecked.to_vec();
        older[0] = FORMAT_SUMMARY_UNCHECKED;
        let decoded = ChunkSummary::decode(&summary_key(0), &older).expect("format 1");
        assert_eq!(decoded.checksum, None);
        assert_eq!(decoded.location, summary.location);
        assert!(decoded.matches(&flipped));
    }
}
