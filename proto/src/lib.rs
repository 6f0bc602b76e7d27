//! Weir's wire protocol (`weir/1`): frames and messages, with no I/O.
//!
//! Bytes in, messages out — the transport (quinn) lives in the server and the
//! client, so this crate can be unit-tested and fuzzed in isolation.
//!
//! - [`frame`]: length-prefixed framing ([`decode_frame`]).
//! - [`message`]: [`Request`] and [`Response`] and their encodings.
//! - [`error`]: [`DecodeError`] for bad bytes, [`ErrorCode`] for the wire.
//! - [`routing`]: how the 128-bit hash-key space is split into shards.
//! - [`admin`]: control-plane messages (plugins, processors, state), JSON.
//! - [`batch`]: the record-batch encoding that crosses the Wasm plugin
//!   boundary, shared by the host and the guest SDK.
//! - `io` (feature `io`, the one part with I/O): the UDP socket and capped
//!   file reads both ends of a connection use.
//!
//! The full layout is documented in `docs/PROTOCOL.md`.

pub mod admin;
pub mod batch;
pub mod error;
pub mod frame;
#[cfg(feature = "io")]
pub mod io;
pub mod message;
pub mod routing;
mod wire;

pub use error::{DecodeError, ErrorCode};
pub use frame::{FRAME_HEADER_BYTES, Frame, body_len, decode_frame};
pub use message::{
    Position, ProducerStamp, PutRecord, PutResult, Record, RecordBatch, Request, Response,
    Retention, ShardDescription, StreamDescription,
};

/// The ALPN protocol id; a future incompatible protocol gets a new one.
pub const ALPN: &[u8] = b"weir/1";

/// Where `weir serve` listens when not told otherwise (loopback only).
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:7720";

/// The TLS server name clients use when none is given; the self-signed
/// certificate Weir generates is valid for it.
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// Kinesis-compatible defaults for the limits a server enforces; servers
/// may be configured otherwise, clients use these to size their batches.
pub mod defaults {
    /// Records in one `PutRecords` request.
    pub const BATCH_RECORDS_MAX: usize = 500;
    /// Data bytes of one record.
    pub const RECORD_BYTES_MAX: usize = 1024 * 1024;
    /// Data and partition-key bytes of one `PutRecords` request.
    pub const REQUEST_BYTES_MAX: usize = 5 * 1024 * 1024;
    /// Characters in a partition key.
    pub const PARTITION_KEY_CHARS_MAX: usize = 256;
    /// Characters in a stream or consumer name.
    pub const NAME_CHARS_MAX: usize = 128;
    /// Bytes of one frame: a full request plus per-record framing overhead.
    pub const FRAME_BYTES_MAX: usize = REQUEST_BYTES_MAX + BATCH_RECORDS_MAX * 512 + 64 * 1024;
}
