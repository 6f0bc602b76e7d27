//! Requests (client → server) and responses (server → client), with their
//! encodings. The layout of every message is documented in docs/PROTOCOL.md.

use bytes::{BufMut, Bytes, BytesMut};

use crate::admin::{AdminRequest, AdminResponse};
use crate::frame::{Frame, encode_frame};
use crate::wire::{Reader, put_blob, put_option, put_string};
use crate::{DecodeError, ErrorCode};

/// Where a read starts in a shard. Written as text (`trim-horizon`,
/// `latest`, `at:SEQ`, `after:SEQ`, `time:MS`) on the command line and in
/// admin messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Position {
    /// The oldest record still stored.
    TrimHorizon,
    /// Just after the newest record: only records appended from now on.
    Latest,
    /// The record with this sequence number.
    AtSequence(u64),
    /// The record after this sequence number.
    AfterSequence(u64),
    /// The first record whose arrival time is at or after this many
    /// milliseconds since the Unix epoch.
    AtTimestamp(u64),
}

impl std::str::FromStr for Position {
    type Err = String;

    /// `trim-horizon` (or `oldest`), `latest`, `at:SEQ`, `after:SEQ`,
    /// `time:MS` (milliseconds since the Unix epoch), or a bare sequence
    /// number (= `at:SEQ`).
    fn from_str(text: &str) -> Result<Self, String> {
        let number = |value: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{value:?} in position {text:?} is not a number"))
        };
        match text {
            "trim-horizon" | "oldest" => Ok(Self::TrimHorizon),
            "latest" => Ok(Self::Latest),
            _ => match text.split_once(':') {
                Some(("at", seq)) => Ok(Self::AtSequence(number(seq)?)),
                Some(("after", seq)) => Ok(Self::AfterSequence(number(seq)?)),
                Some(("time", ms)) => Ok(Self::AtTimestamp(number(ms)?)),
                None if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() => {
                    Ok(Self::AtSequence(number(text)?))
                }
                _ => Err(format!(
                    "invalid position {text:?}: use trim-horizon, latest, at:SEQ, after:SEQ or time:MILLIS"
                )),
            },
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TrimHorizon => f.write_str("trim-horizon"),
            Self::Latest => f.write_str("latest"),
            Self::AtSequence(seq) => write!(f, "at:{seq}"),
            Self::AfterSequence(seq) => write!(f, "after:{seq}"),
            Self::AtTimestamp(ms) => write!(f, "time:{ms}"),
        }
    }
}

impl TryFrom<String> for Position {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Position> for String {
    fn from(position: Position) -> Self {
        position.to_string()
    }
}

impl Position {
    fn put(self, buf: &mut BytesMut) {
        match self {
            Self::TrimHorizon => buf.put_u8(0),
            Self::Latest => buf.put_u8(1),
            Self::AtSequence(seq) => {
                buf.put_u8(2);
                buf.put_u64_le(seq);
            }
            Self::AfterSequence(seq) => {
                buf.put_u8(3);
                buf.put_u64_le(seq);
            }
            Self::AtTimestamp(ms) => {
                buf.put_u8(4);
                buf.put_u64_le(ms);
            }
        }
    }

    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8("position")? {
            0 => Self::TrimHorizon,
            1 => Self::Latest,
            2 => Self::AtSequence(r.u64("position sequence")?),
            3 => Self::AfterSequence(r.u64("position sequence")?),
            4 => Self::AtTimestamp(r.u64("position timestamp")?),
            tag => {
                return Err(DecodeError::InvalidTag {
                    field: "position",
                    tag,
                });
            }
        })
    }
}

/// Marks a batch from an idempotent producer: a retry carries the same stamp,
/// and the server answers it from its dedup state instead of appending again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Chosen by the producer, unique among the server's producers.
    pub producer_id: u64,
    /// Strictly increasing per producer, one per batch.
    pub batch_sequence: u64,
}

/// One record as sent by a producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecord {
    pub partition_key: String,
    /// Routes the record instead of MD5(partition key) when set.
    pub explicit_hash_key: Option<u128>,
    pub data: Bytes,
}

/// One record as stored and read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    /// Arrival time at the server, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub partition_key: String,
    pub data: Bytes,
}

/// The outcome for one record of a put: where it landed, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    /// Stored at `sequence`; `duplicate` when this request was a retry of
    /// a producer batch stored earlier, answered from the dedup window (the
    /// records were not stored again).
    Stored {
        shard: u32,
        sequence: u64,
        duplicate: bool,
    },
    Failed {
        code: ErrorCode,
        message: String,
    },
}

/// What `DescribeStream` reports for one shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShardDescription {
    pub shard: u32,
    /// Inclusive start of the shard's hash-key range.
    pub hash_key_start: u128,
    /// Inclusive end of the shard's hash-key range.
    pub hash_key_end: u128,
    /// The oldest stored sequence number, if any record is stored.
    pub first_sequence: Option<u64>,
    /// The newest stored sequence number, if any record is stored.
    pub last_sequence: Option<u64>,
    pub records: u64,
    /// Stored record bytes (partition keys and data).
    pub bytes: u64,
}

/// Retention limits of a stream; `None` keeps records forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Retention {
    pub age_ms: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamDescription {
    pub name: String,
    pub retention: Retention,
    /// When the stream was created, in ms since the epoch (0: before
    /// Weir recorded it).
    pub created_ms: u64,
    pub shards: Vec<ShardDescription>,
}

/// A page of records from one shard, from `GetRecords` or a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub records: Vec<Record>,
    /// Where to continue reading: `AtSequence(next_sequence)`.
    pub next_sequence: u64,
    /// Records committed after the last one returned.
    pub records_behind_tip: u64,
    /// Arrival-time difference between the tip and the last record returned.
    pub millis_behind_tip: u64,
}

impl RecordBatch {
    /// The bytes of this batch's frame body.
    pub fn encoded_len(&self) -> usize {
        8 + 8
            + 8
            + 4
            + self
                .records
                .iter()
                .map(|r| RECORD_BYTES_MIN + r.partition_key.len() + r.data.len())
                .sum::<usize>()
    }
}

/// A request, the first (and, except for subscriptions, only) frame a client
/// sends on a bidirectional QUIC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Presents a token; sent once per connection, before anything else.
    /// Later requests on the connection act with the token's roles.
    Authenticate {
        token: String,
    },
    CreateStream {
        name: String,
        shards: u32,
        retention: Retention,
    },
    DeleteStream {
        name: String,
    },
    ListStreams,
    DescribeStream {
        name: String,
    },
    PutRecords {
        stream: String,
        producer: Option<ProducerStamp>,
        records: Vec<PutRecord>,
    },
    GetRecords {
        stream: String,
        shard: u32,
        from: Position,
        limit: u32,
    },
    /// Answered by a stream of `Records` frames that continues live.
    Subscribe {
        stream: String,
        shard: u32,
        from: Position,
    },
    CommitCheckpoint {
        consumer: String,
        stream: String,
        shard: u32,
        sequence: u64,
    },
    GetCheckpoint {
        consumer: String,
        stream: String,
        shard: u32,
    },
    /// Uploads a Wasm component as plugin `name`.
    AddPlugin {
        name: String,
        component: Bytes,
    },
    /// A control-plane request, JSON-encoded.
    Admin(AdminRequest),
}

/// A response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Ok,
    Streams(Vec<String>),
    Stream(StreamDescription),
    PutResults(Vec<PutResult>),
    Records(RecordBatch),
    Checkpoint(Option<u64>),
    Admin(AdminResponse),
    Error { code: ErrorCode, message: String },
}

/// Message kinds: the first byte of a frame's body.
pub mod kind {
    pub const AUTHENTICATE: u8 = 0x05;
    pub const CREATE_STREAM: u8 = 0x01;
    pub const DELETE_STREAM: u8 = 0x02;
    pub const LIST_STREAMS: u8 = 0x03;
    pub const DESCRIBE_STREAM: u8 = 0x04;
    pub const PUT_RECORDS: u8 = 0x10;
    pub const GET_RECORDS: u8 = 0x20;
    pub const SUBSCRIBE: u8 = 0x21;
    pub const COMMIT_CHECKPOINT: u8 = 0x30;
    pub const GET_CHECKPOINT: u8 = 0x31;
    pub const ADD_PLUGIN: u8 = 0x40;
    pub const ADMIN: u8 = 0x41;

    pub const OK: u8 = 0x80;
    pub const STREAMS: u8 = 0x81;
    pub const STREAM: u8 = 0x82;
    pub const PUT_RESULTS: u8 = 0x90;
    pub const RECORDS: u8 = 0xA0;
    pub const CHECKPOINT: u8 = 0xB0;
    pub const ADMIN_RESPONSE: u8 = 0xC0;
    pub const ERROR: u8 = 0xFF;
}

/// The tag of one result in a PutResults answer.
mod put_result {
    pub const STORED: u8 = 0;
    pub const FAILED: u8 = 1;
    /// Stored by an earlier request with the same producer stamp.
    pub const STORED_BEFORE: u8 = 2;
}

/// Smallest encoding of a `PutRecord` (empty key, no hash key, empty data),
/// used to reject impossible element counts before allocating.
const PUT_RECORD_BYTES_MIN: usize = 2 + 1 + 4;
const RECORD_BYTES_MIN: usize = 8 + 8 + 2 + 4;

fn put_retention(buf: &mut BytesMut, retention: Retention) {
    put_option(buf, retention.age_ms, |b, v| b.put_u64_le(v));
    put_option(buf, retention.bytes, |b, v| b.put_u64_le(v));
}

fn read_retention(r: &mut Reader) -> Result<Retention, DecodeError> {
    Ok(Retention {
        age_ms: r.option("retention age", |r| r.u64("retention age"))?,
        bytes: r.option("retention bytes", |r| r.u64("retention bytes"))?,
    })
}

/// A JSON document as the rest of the frame body.
fn put_json<T: serde::Serialize>(buf: &mut BytesMut, value: &T) {
    // Serializing plain data structures to a Vec cannot fail.
    if let Ok(json) = serde_json::to_vec(value) {
        buf.put_slice(&json);
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    r: &mut Reader,
    field: &'static str,
) -> Result<T, DecodeError> {
    let body = r.rest();
    serde_json::from_slice(&body).map_err(|e| DecodeError::InvalidJson {
        field,
        reason: e.to_string(),
    })
}

fn put_record(buf: &mut BytesMut, record: &Record) {
    buf.put_u64_le(record.sequence);
    buf.put_u64_le(record.timestamp_ms);
    put_string(buf, &record.partition_key);
    put_blob(buf, &record.data);
}

fn read_record(r: &mut Reader) -> Result<Record, DecodeError> {
    Ok(Record {
        sequence: r.u64("record sequence")?,
        timestamp_ms: r.u64("record timestamp")?,
        partition_key: r.string("record partition key")?,
        data: r.blob("record data")?,
    })
}

impl Request {
    /// Appends this request as one frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Self::Authenticate { token } => {
                encode_frame(buf, kind::AUTHENTICATE, |b| put_string(b, token))
            }
            Self::CreateStream {
                name,
                shards,
                retention,
            } => encode_frame(buf, kind::CREATE_STREAM, |b| {
                put_string(b, name);
                b.put_u32_le(*shards);
                put_retention(b, *retention);
            }),
            Self::DeleteStream { name } => {
                encode_frame(buf, kind::DELETE_STREAM, |b| put_string(b, name))
            }
            Self::ListStreams => encode_frame(buf, kind::LIST_STREAMS, |_| {}),
            Self::DescribeStream { name } => {
                encode_frame(buf, kind::DESCRIBE_STREAM, |b| put_string(b, name))
            }
            Self::PutRecords {
                stream,
                producer,
                records,
            } => encode_frame(buf, kind::PUT_RECORDS, |b| {
                put_string(b, stream);
                put_option(b, *producer, |b, p| {
                    b.put_u64_le(p.producer_id);
                    b.put_u64_le(p.batch_sequence);
                });
                b.put_u32_le(records.len() as u32);
                for record in records {
                    put_string(b, &record.partition_key);
                    put_option(b, record.explicit_hash_key, |b, h| b.put_u128_le(h));
                    put_blob(b, &record.data);
                }
            }),
            Self::GetRecords {
                stream,
                shard,
                from,
                limit,
            } => encode_frame(buf, kind::GET_RECORDS, |b| {
                put_string(b, stream);
                b.put_u32_le(*shard);
                from.put(b);
                b.put_u32_le(*limit);
            }),
            Self::Subscribe {
                stream,
                shard,
                from,
            } => encode_frame(buf, kind::SUBSCRIBE, |b| {
                put_string(b, stream);
                b.put_u32_le(*shard);
                from.put(b);
            }),
            Self::CommitCheckpoint {
                consumer,
                stream,
                shard,
                sequence,
            } => encode_frame(buf, kind::COMMIT_CHECKPOINT, |b| {
                put_string(b, consumer);
                put_string(b, stream);
                b.put_u32_le(*shard);
                b.put_u64_le(*sequence);
            }),
            Self::GetCheckpoint {
                consumer,
                stream,
                shard,
            } => encode_frame(buf, kind::GET_CHECKPOINT, |b| {
                put_string(b, consumer);
                put_string(b, stream);
                b.put_u32_le(*shard);
            }),
            Self::AddPlugin { name, component } => encode_frame(buf, kind::ADD_PLUGIN, |b| {
                put_string(b, name);
                put_blob(b, component);
            }),
            Self::Admin(request) => encode_frame(buf, kind::ADMIN, |b| put_json(b, request)),
        }
    }

    /// Decodes a request frame. Record data is sliced from the frame, not copied.
    pub fn decode(frame: Frame) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame.body);
        let request = match frame.kind {
            kind::AUTHENTICATE => Self::Authenticate {
                token: r.string("token")?,
            },
            kind::CREATE_STREAM => Self::CreateStream {
                name: r.string("stream name")?,
                shards: r.u32("shard count")?,
                retention: read_retention(&mut r)?,
            },
            kind::DELETE_STREAM => Self::DeleteStream {
                name: r.string("stream name")?,
            },
            kind::LIST_STREAMS => Self::ListStreams,
            kind::DESCRIBE_STREAM => Self::DescribeStream {
                name: r.string("stream name")?,
            },
            kind::PUT_RECORDS => {
                let stream = r.string("stream name")?;
                let producer = r.option("producer stamp", |r| {
                    Ok(ProducerStamp {
                        producer_id: r.u64("producer id")?,
                        batch_sequence: r.u64("batch sequence")?,
                    })
                })?;
                let count = r.count("record count", PUT_RECORD_BYTES_MIN)?;
                let mut records = Vec::with_capacity(count);
                for _ in 0..count {
                    records.push(PutRecord {
                        partition_key: r.string("partition key")?,
                        explicit_hash_key: r
                            .option("explicit hash key", |r| r.u128("explicit hash key"))?,
                        data: r.blob("record data")?,
                    });
                }
                Self::PutRecords {
                    stream,
                    producer,
                    records,
                }
            }
            kind::GET_RECORDS => Self::GetRecords {
                stream: r.string("stream name")?,
                shard: r.u32("shard")?,
                from: Position::read(&mut r)?,
                limit: r.u32("limit")?,
            },
            kind::SUBSCRIBE => Self::Subscribe {
                stream: r.string("stream name")?,
                shard: r.u32("shard")?,
                from: Position::read(&mut r)?,
            },
            kind::COMMIT_CHECKPOINT => Self::CommitCheckpoint {
                consumer: r.string("consumer name")?,
                stream: r.string("stream name")?,
                shard: r.u32("shard")?,
                sequence: r.u64("sequence")?,
            },
            kind::GET_CHECKPOINT => Self::GetCheckpoint {
                consumer: r.string("consumer name")?,
                stream: r.string("stream name")?,
                shard: r.u32("shard")?,
            },
            kind::ADD_PLUGIN => Self::AddPlugin {
                name: r.string("plugin name")?,
                component: r.blob("component")?,
            },
            kind::ADMIN => Self::Admin(read_json(&mut r, "admin request")?),
            kind => return Err(DecodeError::UnknownKind { kind }),
        };
        r.finish()?;
        Ok(request)
    }
}

impl Response {
    /// A typed error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// Appends this response as one frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Self::Ok => encode_frame(buf, kind::OK, |_| {}),
            Self::Streams(names) => encode_frame(buf, kind::STREAMS, |b| {
                b.put_u32_le(names.len() as u32);
                for name in names {
                    put_string(b, name);
                }
            }),
            Self::Stream(description) => encode_frame(buf, kind::STREAM, |b| {
                put_string(b, &description.name);
                put_retention(b, description.retention);
                b.put_u64_le(description.created_ms);
                b.put_u32_le(description.shards.len() as u32);
                for shard in &description.shards {
                    b.put_u32_le(shard.shard);
                    b.put_u128_le(shard.hash_key_start);
                    b.put_u128_le(shard.hash_key_end);
                    put_option(b, shard.first_sequence, |b, v| b.put_u64_le(v));
                    put_option(b, shard.last_sequence, |b, v| b.put_u64_le(v));
                    b.put_u64_le(shard.records);
                    b.put_u64_le(shard.bytes);
                }
            }),
            Self::PutResults(results) => encode_frame(buf, kind::PUT_RESULTS, |b| {
                b.put_u32_le(results.len() as u32);
                for result in results {
                    match result {
                        PutResult::Stored {
                            shard,
                            sequence,
                            duplicate,
                        } => {
                            b.put_u8(if *duplicate {
                                put_result::STORED_BEFORE
                            } else {
                                put_result::STORED
                            });
                            b.put_u32_le(*shard);
                            b.put_u64_le(*sequence);
                        }
                        PutResult::Failed { code, message } => {
                            b.put_u8(put_result::FAILED);
                            b.put_u16_le(*code as u16);
                            put_string(b, message);
                        }
                    }
                }
            }),
            Self::Records(batch) => encode_frame(buf, kind::RECORDS, |b| {
                // One allocation for a page of up to megabytes, not a
                // doubling series of copies.
                b.reserve(batch.encoded_len());
                b.put_u64_le(batch.next_sequence);
                b.put_u64_le(batch.records_behind_tip);
                b.put_u64_le(batch.millis_behind_tip);
                b.put_u32_le(batch.records.len() as u32);
                for record in &batch.records {
                    put_record(b, record);
                }
            }),
            Self::Checkpoint(sequence) => encode_frame(buf, kind::CHECKPOINT, |b| {
                put_option(b, *sequence, |b, v| b.put_u64_le(v));
            }),
            Self::Admin(response) => {
                encode_frame(buf, kind::ADMIN_RESPONSE, |b| put_json(b, response))
            }
            Self::Error { code, message } => encode_frame(buf, kind::ERROR, |b| {
                b.put_u16_le(*code as u16);
                put_string(b, message);
            }),
        }
    }

    pub fn decode(frame: Frame) -> Result<Self, DecodeError> {
        let mut r = Reader::new(frame.body);
        let response = match frame.kind {
            kind::OK => Self::Ok,
            kind::STREAMS => {
                let count = r.count("stream count", 2)?;
                let names = (0..count)
                    .map(|_| r.string("stream name"))
                    .collect::<Result<_, _>>()?;
                Self::Streams(names)
            }
            kind::STREAM => {
                let name = r.string("stream name")?;
                let retention = read_retention(&mut r)?;
                let created_ms = r.u64("created ms")?;
                let count = r.count("shard count", 4 + 32 + 2 + 16)?;
                let mut shards = Vec::with_capacity(count);
                for _ in 0..count {
                    shards.push(ShardDescription {
                        shard: r.u32("shard")?,
                        hash_key_start: r.u128("hash key start")?,
                        hash_key_end: r.u128("hash key end")?,
                        first_sequence: r.option("first sequence", |r| r.u64("first sequence"))?,
                        last_sequence: r.option("last sequence", |r| r.u64("last sequence"))?,
                        records: r.u64("records")?,
                        bytes: r.u64("bytes")?,
                    });
                }
                Self::Stream(StreamDescription {
                    name,
                    retention,
                    created_ms,
                    shards,
                })
            }
            kind::PUT_RESULTS => {
                // The smallest result is a failure with an empty message.
                let count = r.count("result count", 1 + 2 + 2)?;
                let mut results = Vec::with_capacity(count);
                for _ in 0..count {
                    results.push(match r.u8("put result")? {
                        tag @ (put_result::STORED | put_result::STORED_BEFORE) => {
                            PutResult::Stored {
                                shard: r.u32("shard")?,
                                sequence: r.u64("sequence")?,
                                duplicate: tag == put_result::STORED_BEFORE,
                            }
                        }
                        put_result::FAILED => PutResult::Failed {
                            code: ErrorCode::from_u16(r.u16("error code")?),
                            message: r.string("error message")?,
                        },
                        tag => {
                            return Err(DecodeError::InvalidTag {
                                field: "put result",
                                tag,
                            });
                        }
                    });
                }
                Self::PutResults(results)
            }
            kind::RECORDS => {
                let next_sequence = r.u64("next sequence")?;
                let records_behind_tip = r.u64("records behind tip")?;
                let millis_behind_tip = r.u64("millis behind tip")?;
                let count = r.count("record count", RECORD_BYTES_MIN)?;
                let records = (0..count)
                    .map(|_| read_record(&mut r))
                    .collect::<Result<_, _>>()?;
                Self::Records(RecordBatch {
                    records,
                    next_sequence,
                    records_behind_tip,
                    millis_behind_tip,
                })
            }
            kind::CHECKPOINT => Self::Checkpoint(r.option("checkpoint", |r| r.u64("checkpoint"))?),
            kind::ADMIN_RESPONSE => Self::Admin(read_json(&mut r, "admin response")?),
            kind::ERROR => Self::Error {
                code: ErrorCode::from_u16(r.u16("error code")?),
                message: r.string("error message")?,
            },
            kind => return Err(DecodeError::UnknownKind { kind }),
        };
        r.finish()?;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode_frame;

    fn round_trip_request(request: Request) {
        let mut buf = BytesMut::new();
        request.encode(&mut buf);
        let frame = decode_frame(&mut buf, usize::MAX)
            .expect("valid")
            .expect("complete");
        assert_eq!(Request::decode(frame), Ok(request));
        assert!(buf.is_empty());
    }

    fn round_trip_response(response: Response) {
        let mut buf = BytesMut::new();
        response.encode(&mut buf);
        let frame = decode_frame(&mut buf, usize::MAX)
            .expect("valid")
            .expect("complete");
        assert_eq!(Response::decode(frame), Ok(response));
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Authenticate {
                token: "weir_0123".into(),
            },
            Request::CreateStream {
                name: "clicks".into(),
                shards: 4,
                retention: Retention {
                    age_ms: Some(86_400_000),
                    bytes: None,
                },
            },
            Request::DeleteStream { name: "a".into() },
            Request::ListStreams,
            Request::DescribeStream { name: "b".into() },
            Request::PutRecords {
                stream: "clicks".into(),
                producer: Some(ProducerStamp {
                    producer_id: 9,
                    batch_sequence: 3,
                }),
                records: vec![
                    PutRecord {
                        partition_key: "user-1".into(),
                        explicit_hash_key: None,
                        data: Bytes::from_static(b"{\"x\":1}"),
                    },
                    PutRecord {
                        partition_key: "ü".into(),
                        explicit_hash_key: Some(u128::MAX),
                        data: Bytes::new(),
                    },
                ],
            },
            Request::GetRecords {
                stream: "s".into(),
                shard: 2,
                from: Position::AtTimestamp(5),
                limit: 100,
            },
            Request::Subscribe {
                stream: "s".into(),
                shard: 0,
                from: Position::AfterSequence(7),
            },
            Request::CommitCheckpoint {
                consumer: "app".into(),
                stream: "s".into(),
                shard: 1,
                sequence: 42,
            },
            Request::GetCheckpoint {
                consumer: "app".into(),
                stream: "s".into(),
                shard: 1,
            },
            Request::AddPlugin {
                name: "json-filter".into(),
                component: Bytes::from_static(b"\0asm\x0d\0\x01\0"),
            },
            Request::Admin(AdminRequest::CreateProcessor(Box::new(
                crate::admin::ProcessorSettings {
                    name: "p".into(),
                    plugin: "json-filter".into(),
                    source: "clicks".into(),
                    config: vec![("field".into(), "event".into())],
                    ..Default::default()
                },
            ))),
            Request::Admin(AdminRequest::GetState {
                processor: "p".into(),
                key: None,
                prefix: Some("count/".into()),
                limit: 10,
            }),
            Request::Admin(AdminRequest::CreateToken {
                name: "sensors".into(),
                roles: vec![crate::admin::Role::Produce],
                streams: Some(vec!["clicks".into()]),
            }),
            Request::Admin(AdminRequest::DeleteToken {
                name: "sensors".into(),
            }),
        ];
        for request in requests {
            round_trip_request(request);
        }
        for position in [
            Position::TrimHorizon,
            Position::Latest,
            Position::AtSequence(1),
        ] {
            round_trip_request(Request::Subscribe {
                stream: "s".into(),
                shard: 0,
                from: position,
            });
        }
    }

    #[test]
    fn every_response_round_trips() {
        let responses = [
            Response::Ok,
            Response::Streams(vec!["a".into(), "b".into()]),
            Response::Stream(StreamDescription {
                name: "a".into(),
                retention: Retention::default(),
                created_ms: 1_764_000_000_000,
                shards: vec![ShardDescription {
                    shard: 0,
                    hash_key_start: 0,
                    hash_key_end: u128::MAX,
                    first_sequence: Some(1),
                    last_sequence: None,
                    records: 3,
                    bytes: 99,
                }],
            }),
            Response::PutResults(vec![
                PutResult::Stored {
                    shard: 1,
                    sequence: 2,
                    duplicate: false,
                },
                PutResult::Stored {
                    shard: 0,
                    sequence: 7,
                    duplicate: true,
                },
                PutResult::Failed {
                    code: ErrorCode::RecordTooLarge,
                    message: "too big".into(),
                },
            ]),
            Response::Records(RecordBatch {
                records: vec![Record {
                    sequence: 1,
                    timestamp_ms: 2,
                    partition_key: "k".into(),
                    data: Bytes::from_static(b"v"),
                }],
                next_sequence: 2,
                records_behind_tip: 0,
                millis_behind_tip: 0,
            }),
            Response::Checkpoint(Some(5)),
            Response::Checkpoint(None),
            Response::Admin(AdminResponse::Done),
            Response::error(ErrorCode::StreamNotFound, "no stream \"x\""),
        ];
        for response in responses {
            round_trip_response(response);
        }
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics() {
        let mut buf = BytesMut::new();
        Request::PutRecords {
            stream: "clicks".into(),
            producer: None,
            records: vec![PutRecord {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: Bytes::from_static(b"data"),
            }],
        }
        .encode(&mut buf);
        let frame = decode_frame(&mut buf, usize::MAX)
            .expect("valid")
            .expect("complete");
        for cut in 0..frame.body.len() {
            let truncated = Frame {
                kind: frame.kind,
                body: frame.body.slice(..cut),
            };
            assert!(Request::decode(truncated).is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn hostile_counts_and_tags_are_rejected() {
        // A record count of u32::MAX in a tiny body must not allocate.
        let mut body = BytesMut::new();
        put_string(&mut body, "s");
        body.put_u8(0);
        body.put_u32_le(u32::MAX);
        let frame = Frame {
            kind: kind::PUT_RECORDS,
            body: body.freeze(),
        };
        assert_eq!(
            Request::decode(frame),
            Err(DecodeError::Truncated {
                field: "record count"
            })
        );
        let bad_position = Frame {
            kind: kind::SUBSCRIBE,
            body: Bytes::from_static(&[1, 0, b's', 0, 0, 0, 0, 9]),
        };
        assert_eq!(
            Request::decode(bad_position),
            Err(DecodeError::InvalidTag {
                field: "position",
                tag: 9
            })
        );
        let unknown = Frame {
            kind: 0x7e,
            body: Bytes::new(),
        };
        assert_eq!(
            Request::decode(unknown),
            Err(DecodeError::UnknownKind { kind: 0x7e })
        );
        let trailing = Frame {
            kind: kind::LIST_STREAMS,
            body: Bytes::from_static(b"x"),
        };
        assert_eq!(
            Request::decode(trailing),
            Err(DecodeError::TrailingBytes { count: 1 })
        );
    }
}

/// Seeded random round trips: encode → decode gives back the message, and
/// every truncation of a valid frame is an error, never a panic.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::frame::{FRAME_HEADER_BYTES, decode_frame};

    /// xorshift64*: deterministic, so a failing seed reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn string(&mut self, max: u64) -> String {
            let chars = ['a', 'Z', '9', '-', 'é', '€', '🦀', ' '];
            (0..self.below(max + 1))
                .map(|_| chars[self.below(chars.len() as u64) as usize])
                .collect()
        }

        fn bytes(&mut self, max: u64) -> Bytes {
            (0..self.below(max + 1))
                .map(|_| self.next() as u8)
                .collect()
        }

        fn position(&mut self) -> Position {
            match self.below(5) {
                0 => Position::TrimHorizon,
                1 => Position::Latest,
                2 => Position::AtSequence(self.next()),
                3 => Position::AfterSequence(self.next()),
                _ => Position::AtTimestamp(self.next()),
            }
        }
    }

    fn random_request(rng: &mut Rng) -> Request {
        match rng.below(4) {
            0 => Request::PutRecords {
                stream: rng.string(20),
                producer: (rng.below(2) == 0).then(|| ProducerStamp {
                    producer_id: rng.next(),
                    batch_sequence: rng.next(),
                }),
                records: (0..rng.below(20))
                    .map(|_| PutRecord {
                        partition_key: rng.string(30),
                        explicit_hash_key: (rng.below(2) == 0)
                            .then(|| u128::from(rng.next()) << 64 | u128::from(rng.next())),
                        data: rng.bytes(300),
                    })
                    .collect(),
            },
            1 => Request::GetRecords {
                stream: rng.string(20),
                shard: rng.next() as u32,
                from: rng.position(),
                limit: rng.next() as u32,
            },
            2 => Request::Subscribe {
                stream: rng.string(20),
                shard: rng.next() as u32,
                from: rng.position(),
            },
            _ => Request::CreateStream {
                name: rng.string(20),
                shards: rng.next() as u32,
                retention: Retention {
                    age_ms: (rng.below(2) == 0).then(|| rng.next()),
                    bytes: (rng.below(2) == 0).then(|| rng.next()),
                },
            },
        }
    }

    fn random_records(rng: &mut Rng) -> Response {
        Response::Records(RecordBatch {
            records: (0..rng.below(20))
                .map(|_| Record {
                    sequence: rng.next(),
                    timestamp_ms: rng.next(),
                    partition_key: rng.string(30),
                    data: rng.bytes(300),
                })
                .collect(),
            next_sequence: rng.next(),
            records_behind_tip: rng.next(),
            millis_behind_tip: rng.next(),
        })
    }

    #[test]
    fn random_messages_round_trip_and_truncations_fail_cleanly() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let request = random_request(&mut rng);
            let mut buf = BytesMut::new();
            request.encode(&mut buf);
            let encoded = buf.clone().freeze();
            let frame = decode_frame(&mut buf, usize::MAX)
                .expect("valid")
                .expect("complete");
            assert_eq!(Request::decode(frame), Ok(request), "seed {seed}");
            let cut = rng.below(encoded.len() as u64) as usize;
            let mut truncated = BytesMut::from(&encoded[..cut]);
            assert_eq!(
                decode_frame(&mut truncated, usize::MAX),
                Ok(None),
                "seed {seed}: cut {cut}"
            );

            let response = random_records(&mut rng);
            let mut buf = BytesMut::new();
            response.encode(&mut buf);
            let Response::Records(batch) = &response else {
                unreachable!("random_records makes a Records response")
            };
            // The size the encoder reserves is the size it writes, kind
            // byte and frame header aside.
            assert_eq!(
                buf.len(),
                FRAME_HEADER_BYTES + 1 + batch.encoded_len(),
                "seed {seed}"
            );
            let frame = decode_frame(&mut buf, usize::MAX)
                .expect("valid")
                .expect("complete");
            assert_eq!(Response::decode(frame), Ok(response), "seed {seed}");
        }
    }
}
