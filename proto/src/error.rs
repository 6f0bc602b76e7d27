//! Errors: what the codec reports about bytes, and the error codes the
//! server puts on the wire.

/// Why a frame could not be decoded. The codec never panics on input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame ended before the named field was complete.
    #[error("frame truncated while reading {field}")]
    Truncated { field: &'static str },
    /// A frame's declared body length exceeds the configured maximum.
    #[error("frame of {bytes} bytes exceeds frame_bytes_max ({frame_bytes_max} bytes)")]
    FrameTooLarge {
        bytes: usize,
        frame_bytes_max: usize,
    },
    /// A frame declared a zero-length body (it must at least hold its kind).
    #[error("empty frame (a frame must carry at least its kind byte)")]
    EmptyFrame,
    /// The kind byte names no message this side understands.
    #[error("unknown message kind 0x{kind:02x}")]
    UnknownKind { kind: u8 },
    /// A tag (option, enum) had a value outside its range.
    #[error("invalid tag {tag} for {field}")]
    InvalidTag { field: &'static str, tag: u8 },
    /// A string field was not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    /// A JSON body did not parse as the expected message.
    #[error("{field} is not valid: {reason}")]
    InvalidJson { field: &'static str, reason: String },
    /// The body had bytes left over after the last field.
    #[error("{count} unexpected trailing bytes after the message")]
    TrailingBytes { count: usize },
}

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $value:literal, retryable = $retry:literal; )*) => {
        /// Error codes on the wire: stable numbers, one per thing that can go
        /// wrong, so clients can act on them without parsing messages.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $name = $value, )*
        }

        impl ErrorCode {
            /// The code for a wire value; unknown values (from a newer server)
            /// map to [`ErrorCode::Unknown`].
            pub fn from_u16(value: u16) -> Self {
                match value {
                    $( $value => Self::$name, )*
                    _ => Self::Unknown,
                }
            }

            /// Whether the same request may succeed if retried later.
            pub fn is_retryable(self) -> bool {
                match self {
                    $( Self::$name => $retry, )*
                }
            }

            /// The code's name as documented in docs/PROTOCOL.md.
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$name => stringify!($name), )*
                }
            }
        }
    };
}

error_codes! {
    /// A code this client does not know (sent by a newer server).
    Unknown = 0, retryable = false;
    /// The frame could not be decoded; the message says which field.
    MalformedFrame = 1, retryable = false;
    /// The frame exceeds `frame_bytes_max`.
    FrameTooLarge = 2, retryable = false;
    /// The first frame on a stream was not a request.
    UnexpectedMessage = 3, retryable = false;
    /// No stream with that name exists.
    StreamNotFound = 10, retryable = false;
    /// A stream with that name already exists.
    StreamExists = 11, retryable = false;
    /// Stream names are 1–128 characters of `[A-Za-z0-9_.-]`.
    InvalidStreamName = 12, retryable = false;
    /// Shard count outside 1..=`stream_shards_max`.
    InvalidShardCount = 13, retryable = false;
    /// The stream has no shard with that id.
    ShardNotFound = 14, retryable = false;
    /// The stream is a processor's source or output, or a sink's source;
    /// remove those first.
    StreamInUse = 15, retryable = false;
    /// A record's data exceeds `record_bytes_max`.
    RecordTooLarge = 20, retryable = false;
    /// A partition key must be 1–256 characters.
    InvalidPartitionKey = 21, retryable = false;
    /// A batch holds more than `batch_records_max` records, or none.
    InvalidBatchSize = 22, retryable = false;
    /// A request's records add up to more than `request_bytes_max`.
    RequestTooLarge = 23, retryable = false;
    /// A read position is malformed or beyond the tip.
    InvalidPosition = 30, retryable = false;
    /// Retention removed the requested records; the message names the first
    /// sequence number still stored.
    PositionTrimmed = 31, retryable = false;
    /// A consumer name must be 1–128 characters.
    InvalidConsumerName = 32, retryable = false;
    /// A request argument is invalid; the message says which.
    InvalidArgument = 33, retryable = false;
    /// The client opened a stream but sent no complete request within
    /// `request_read_timeout_ms`.
    RequestTimeout = 34, retryable = false;
    /// A producer retried a batch older than the server's dedup window.
    StaleProducerBatch = 24, retryable = false;
    /// A configured count limit (named in the message, with its value) is
    /// reached: streams, subscribers, processors, plugins.
    LimitExceeded = 25, retryable = false;
    /// No plugin with that name exists.
    PluginNotFound = 60, retryable = false;
    /// The uploaded bytes are not a usable plugin; the message says why.
    InvalidPlugin = 61, retryable = false;
    /// A plugin or processor with that name already exists.
    AlreadyExists = 62, retryable = false;
    /// The plugin is used by a processor and cannot be removed.
    PluginInUse = 63, retryable = false;
    /// No processor with that name exists.
    ProcessorNotFound = 64, retryable = false;
    /// The plugin's init rejected the processor's config; the message is the plugin's.
    InvalidConfig = 65, retryable = false;
    /// No sink with that name exists.
    SinkNotFound = 66, retryable = false;
    /// The connection has not authenticated, or its token is unknown or was
    /// revoked.
    Unauthenticated = 70, retryable = false;
    /// The connection's token has no role that allows this request on this
    /// stream (the message does not say whether the stream exists).
    PermissionDenied = 71, retryable = false;
    /// No token with that name exists.
    TokenNotFound = 72, retryable = false;
    /// The data directory reached `storage_bytes_max` or the disk is full;
    /// retry once retention (or an operator) frees space. Reads still work.
    StorageFull = 43, retryable = true;
    /// The storage layer failed; the request may be retried.
    StorageFailure = 40, retryable = true;
    /// The server is shutting down; retry against it once it is back.
    ShuttingDown = 41, retryable = true;
    /// The server is over a limit (in-flight requests, memory); retry later.
    Overloaded = 42, retryable = true;
    /// A bug in the server; the message has details for a report.
    Internal = 50, retryable = false;
}
