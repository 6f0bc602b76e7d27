//! The batch encoding that crosses the plugin boundary (documented in
//! `wit/plugin.wit`): the host encodes input batches and decodes outputs,
//! the guest SDK does the reverse. Decoding borrows from the buffer.

use crate::DecodeError;

/// `key-len` value meaning "keep the input record's partition key".
pub const KEEP_KEY: u16 = u16::MAX;
/// `input-index` of an output not caused by one input record (a tick).
pub const NO_INPUT: u32 = u32::MAX;

const TAG_EMIT: u8 = 0;
const TAG_ERROR: u8 = 1;
const TAG_KEEP: u8 = 2;

/// One input record, borrowed from the batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRecord<'a> {
    pub sequence: u64,
    pub timestamp_ms: u64,
    pub partition_key: &'a str,
    pub data: &'a [u8],
}

/// One output entry, borrowed from the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputEntry<'a> {
    /// A record to write; `partition_key` is `None` to keep the input's.
    Emit {
        input_index: u32,
        partition_key: Option<&'a str>,
        data: &'a [u8],
    },
    /// The input record at `input_index` failed with this message.
    Error { input_index: u32, message: &'a str },
    /// Write the input record at `input_index` unchanged: a filter keeps a
    /// record without copying its bytes back across the boundary.
    Keep { input_index: u32 },
}

/// Appends records to an input batch; call [`InputWriter::finish`] last.
pub struct InputWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for InputWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl InputWriter {
    pub fn new() -> Self {
        Self::with_buffer(Vec::new())
    }

    /// Reuses `buf`'s allocation (its contents are discarded).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&0u32.to_le_bytes());
        Self { buf, count: 0 }
    }

    pub fn push(&mut self, record: &BatchRecord<'_>) {
        let key = truncated(record.partition_key, usize::from(u16::MAX));
        self.buf.extend_from_slice(&record.sequence.to_le_bytes());
        self.buf
            .extend_from_slice(&record.timestamp_ms.to_le_bytes());
        self.buf
            .extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key.as_bytes());
        self.buf
            .extend_from_slice(&(record.data.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(record.data);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Partition keys are at most 256 characters (1 KiB of UTF-8), far below
/// the `u16` length fields; the cut (at a character boundary) keeps the
/// encoding valid regardless.
fn truncated(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Output lengths stop below [`KEEP_KEY`], which is a sentinel there.
fn truncated_key(key: &str) -> &str {
    truncated(key, usize::from(KEEP_KEY) - 1)
}

/// Writes output entries.
#[derive(Debug, Default)]
pub struct OutputWriter {
    buf: Vec<u8>,
}

impl OutputWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn emit(&mut self, input_index: u32, partition_key: Option<&str>, data: &[u8]) {
        self.buf.push(TAG_EMIT);
        self.buf.extend_from_slice(&input_index.to_le_bytes());
        match partition_key {
            Some(key) => {
                let key = truncated_key(key);
                self.buf
                    .extend_from_slice(&(key.len() as u16).to_le_bytes());
                self.buf.extend_from_slice(key.as_bytes());
            }
            None => self.buf.extend_from_slice(&KEEP_KEY.to_le_bytes()),
        }
        self.buf
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(data);
    }

    pub fn keep(&mut self, input_index: u32) {
        self.buf.push(TAG_KEEP);
        self.buf.extend_from_slice(&input_index.to_le_bytes());
    }

    pub fn error(&mut self, input_index: u32, message: &str) {
        let message = truncated_key(message);
        self.buf.push(TAG_ERROR);
        self.buf.extend_from_slice(&input_index.to_le_bytes());
        self.buf
            .extend_from_slice(&(message.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(message.as_bytes());
    }

    pub fn len_bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// A bounds-checked cursor over a borrowed buffer.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < len {
            return Err(DecodeError::Truncated { field });
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    fn str(&mut self, len: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len, field)?).map_err(|_| DecodeError::InvalidUtf8 { field })
    }
}

/// Iterates over the records of an input batch.
pub struct InputReader<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> InputReader<'a> {
    pub fn new(batch: &'a [u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor { buf: batch };
        let remaining = cursor.u32("batch count")?;
        Ok(Self { cursor, remaining })
    }

    /// Records not yet read.
    pub fn remaining(&self) -> usize {
        self.remaining as usize
    }

    fn read(&mut self) -> Result<BatchRecord<'a>, DecodeError> {
        let sequence = self.cursor.u64("record sequence")?;
        let timestamp_ms = self.cursor.u64("record timestamp")?;
        let key_len = usize::from(self.cursor.u16("record key length")?);
        let partition_key = self.cursor.str(key_len, "record key")?;
        let data_len = self.cursor.u32("record data length")? as usize;
        let data = self.cursor.take(data_len, "record data")?;
        Ok(BatchRecord {
            sequence,
            timestamp_ms,
            partition_key,
            data,
        })
    }
}

impl<'a> Iterator for InputReader<'a> {
    type Item = Result<BatchRecord<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.cursor.buf.is_empty() {
                return None;
            }
            let count = self.cursor.buf.len();
            self.cursor.buf = &[];
            return Some(Err(DecodeError::TrailingBytes { count }));
        }
        self.remaining -= 1;
        let record = self.read();
        if record.is_err() {
            self.remaining = 0;
            self.cursor.buf = &[];
        }
        Some(record)
    }
}

/// Iterates over the entries of a plugin's output.
pub struct OutputReader<'a> {
    cursor: Cursor<'a>,
}

impl<'a> OutputReader<'a> {
    pub fn new(output: &'a [u8]) -> Self {
        Self {
            cursor: Cursor { buf: output },
        }
    }

    fn read(&mut self) -> Result<OutputEntry<'a>, DecodeError> {
        let tag = self.cursor.take(1, "output tag")?[0];
        let input_index = self.cursor.u32("output input index")?;
        match tag {
            TAG_EMIT => {
                let key_len = self.cursor.u16("output key length")?;
                let partition_key = match key_len {
                    KEEP_KEY => None,
                    len => Some(self.cursor.str(usize::from(len), "output key")?),
                };
                let data_len = self.cursor.u32("output data length")? as usize;
                let data = self.cursor.take(data_len, "output data")?;
                Ok(OutputEntry::Emit {
                    input_index,
                    partition_key,
                    data,
                })
            }
            TAG_KEEP => Ok(OutputEntry::Keep { input_index }),
            TAG_ERROR => {
                let len = usize::from(self.cursor.u16("error message length")?);
                let message = self.cursor.str(len, "error message")?;
                Ok(OutputEntry::Error {
                    input_index,
                    message,
                })
            }
            tag => Err(DecodeError::InvalidTag {
                field: "output tag",
                tag,
            }),
        }
    }
}

impl<'a> Iterator for OutputReader<'a> {
    type Item = Result<OutputEntry<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.cursor.buf.is_empty() {
            return None;
        }
        let entry = self.read();
        if entry.is_err() {
            self.cursor.buf = &[];
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_batches_round_trip() {
        let records = [
            BatchRecord {
                sequence: 1,
                timestamp_ms: 10,
                partition_key: "k",
                data: b"abc",
            },
            BatchRecord {
                sequence: 2,
                timestamp_ms: 11,
                partition_key: "ünï",
                data: b"",
            },
        ];
        let mut writer = InputWriter::new();
        for record in &records {
            writer.push(record);
        }
        let batch = writer.finish();
        let decoded: Vec<_> = InputReader::new(&batch)
            .expect("header")
            .collect::<Result<_, _>>()
            .expect("valid");
        assert_eq!(decoded, records);
    }

    #[test]
    fn outputs_round_trip() {
        let mut writer = OutputWriter::new();
        writer.emit(0, None, b"kept");
        writer.emit(1, Some("new-key"), b"");
        writer.error(2, "bad record");
        writer.keep(3);
        writer.emit(NO_INPUT, Some("window"), b"42");
        let output = writer.finish();
        let entries: Vec<_> = OutputReader::new(&output)
            .collect::<Result<_, _>>()
            .expect("valid");
        assert_eq!(
            entries,
            vec![
                OutputEntry::Emit {
                    input_index: 0,
                    partition_key: None,
                    data: b"kept"
                },
                OutputEntry::Emit {
                    input_index: 1,
                    partition_key: Some("new-key"),
                    data: b""
                },
                OutputEntry::Error {
                    input_index: 2,
                    message: "bad record"
                },
                OutputEntry::Keep { input_index: 3 },
                OutputEntry::Emit {
                    input_index: NO_INPUT,
                    partition_key: Some("window"),
                    data: b"42"
                },
            ]
        );
    }

    #[test]
    fn truncated_and_garbage_buffers_are_errors() {
        let mut writer = InputWriter::new();
        writer.push(&BatchRecord {
            sequence: 1,
            timestamp_ms: 1,
            partition_key: "key",
            data: b"data",
        });
        let batch = writer.finish();
        for cut in 4..batch.len() {
            let results: Vec<_> = InputReader::new(&batch[..cut]).expect("header").collect();
            assert!(results.iter().any(Result::is_err), "cut at {cut} decoded");
        }
        let mut trailing = batch.clone();
        trailing.push(0);
        assert!(
            InputReader::new(&trailing)
                .expect("header")
                .any(|r| r.is_err())
        );
        assert!(OutputReader::new(&[7, 0, 0, 0, 0]).any(|r| r.is_err()));
        assert!(OutputReader::new(&[0, 1]).any(|r| r.is_err()));
    }
}

/// Seeded random round trips of the plugin batch encoding.
#[cfg(test)]
mod properties {
    use super::*;

    #[test]
    fn random_batches_round_trip() {
        let mut state = 0x1234_5678_9ABC_DEF1u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in 0..200 {
            let keys: Vec<String> = (0..next() % 30)
                .map(|i| format!("key-{i}-{}", next() % 1000))
                .collect();
            let datas: Vec<Vec<u8>> = keys
                .iter()
                .map(|_| (0..next() % 500).map(|_| next() as u8).collect())
                .collect();
            let records: Vec<BatchRecord<'_>> = keys
                .iter()
                .zip(&datas)
                .map(|(key, data)| BatchRecord {
                    sequence: next(),
                    timestamp_ms: next(),
                    partition_key: key,
                    data,
                })
                .collect();
            let mut writer = InputWriter::new();
            records.iter().for_each(|r| writer.push(r));
            let batch = writer.finish();
            let decoded: Vec<_> = InputReader::new(&batch)
                .expect("header")
                .collect::<Result<_, _>>()
                .expect("valid");
            assert_eq!(decoded, records, "seed {seed}");

            let mut output = OutputWriter::new();
            for (index, record) in records.iter().enumerate() {
                match next() % 3 {
                    0 => output.keep(index as u32),
                    1 => output.emit(index as u32, Some(record.partition_key), record.data),
                    _ => output.error(index as u32, "nope"),
                }
            }
            let output = output.finish();
            let entries: Vec<_> = OutputReader::new(&output)
                .collect::<Result<_, _>>()
                .expect("valid");
            assert_eq!(entries.len(), records.len(), "seed {seed}");
        }
    }
}
