//! An async Rust client for Weir, small enough for an edge device: QUIC
//! (quinn + rustls) and the wire codec, no storage engine, no Wasm runtime.
//!
//! - [`Client`]: one QUIC connection; every call is its own QUIC stream, so
//!   calls run concurrently without blocking one another.
//! - [`Producer`]: batching with linger, idempotent retries (every batch is
//!   stamped; a retry after a lost ack is not stored twice).
//! - [`Subscription`]: a live feed of one shard; [`StreamSubscription`]:
//!   every shard of a stream merged. Both are `futures` streams of batches.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir_client::ClientError> {
//! use weir_client::{Client, ClientConfig, Position};
//! let mut config = ClientConfig::local("weir-data/tls/cert.pem");
//! // The local server's first admin token; give producers their own.
//! config.token = weir_client::read_token_file("weir-data/admin.token".as_ref()).ok();
//! let client = Client::connect(config).await?;
//! client.create_stream("clicks", 4, Default::default()).await?;
//! let producer = client.producer("clicks", Default::default());
//! let pending = producer.send("user-1", &b"{\"page\":\"/\"}"[..]).await?;
//! let ack = pending.await?; // once the record is durable
//! let batch = client.get_records("clicks", ack.shard, Position::AtSequence(ack.sequence), 10).await?;
//! # Ok(()) }
//! ```

mod connection;
mod producer;
mod subscription;

pub use connection::{Client, ClientConfig};
pub use producer::{Ack, PendingAck, Producer, ProducerConfig};
pub use subscription::{ShardBatch, StreamSubscription, Subscription};
pub use weir_proto::admin;
pub use weir_proto::io::{
    CA_FILE_BYTES_MAX, TOKEN_FILE_BYTES_MAX, UDP_SOCKET_BUFFER_BYTES, read_capped, read_token_file,
    udp_socket,
};
pub use weir_proto::{
    ErrorCode, Position, ProducerStamp, PutRecord, PutResult, Record, RecordBatch, Retention,
    ShardDescription, StreamDescription,
};

use std::path::PathBuf;

/// Everything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The CA certificate file could not be read or parsed.
    #[error("reading CA certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    /// The TLS or QUIC configuration was rejected.
    #[error("client configuration: {0}")]
    Config(String),
    /// The server could not be reached or the handshake failed.
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection or stream broke mid-request; the request may or may
    /// not have been applied (producers retry with the same stamp).
    #[error("connection lost: {0}")]
    Connection(String),
    /// The server's answer did not decode.
    #[error("bad response from server: {0}")]
    Protocol(String),
    /// The server refused the request.
    #[error("{code:?}: {message}")]
    Server { code: ErrorCode, message: String },
    /// The producer was closed before the record was sent.
    #[error("the producer was closed")]
    Closed,
}

impl ClientError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connection(_) => true,
            Self::Server { code, .. } => code.is_retryable(),
            _ => false,
        }
    }

    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}
