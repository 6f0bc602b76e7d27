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
pub use weir_proto::{
    ErrorCode, Position, ProducerStamp, PutRecord, PutResult, Record, RecordBatch, Retention,
    ShardDescription, StreamDescription,
};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Socket buffers for QUIC's UDP socket: the OS default (~208 KiB) drops
/// packets at a few hundred MB/s on loopback, and every drop costs a
/// congestion-window cut. Linux caps the size at `net.core.rmem_max`.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// A UDP socket bound to `addr` with `buffer_bytes` send and receive buffers
/// (best effort: a smaller OS limit is not an error), for `quinn::Endpoint::new`.
pub fn udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Largest CA certificate file read: a bundle of many certificates fits;
/// a wrong path such as `/dev/zero` fails at once instead of filling memory.
pub const CA_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Largest token file read (a secret is 69 bytes).
pub const TOKEN_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Reads a whole file of at most `bytes_max` bytes; a larger one (or an
/// endless one) is an `InvalidData` error naming the limit.
pub fn read_capped(path: &std::path::Path, bytes_max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut contents = Vec::new();
    std::fs::File::open(path)?
        .take(bytes_max + 1)
        .read_to_end(&mut contents)?;
    if contents.len() as u64 > bytes_max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {bytes_max} bytes; is it the right file?",
                path.display()
            ),
        ));
    }
    Ok(contents)
}

/// Reads a token secret from a file (such as the server's
/// `DATA/admin.token`), without surrounding whitespace.
pub fn read_token_file(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = read_capped(path, TOKEN_FILE_BYTES_MAX)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not text; is it a token file?", path.display()),
        )
    })?;
    Ok(text.trim().to_owned())
}

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
