//! The storage boundary's one error type.

use std::path::PathBuf;

/// Everything that can go wrong at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No stream with this name exists.
    #[error("stream {name:?} does not exist")]
    StreamNotFound { name: String },
    /// A stream with this name already exists.
    #[error("stream {name:?} already exists")]
    StreamExists { name: String },
    /// Creating the stream would take the box past `storage.shards_max`.
    #[error(
        "this server holds {held} of its {shards_max} shards (storage.shards_max), so a stream of {requested} does not fit; delete a stream or raise the limit"
    )]
    ShardLimit {
        shards_max: usize,
        held: usize,
        requested: u32,
    },
    /// The stream has fewer shards than the id asked for.
    #[error("stream {stream:?} has no shard {shard} (it has {shard_count})")]
    ShardNotFound {
        stream: String,
        shard: u32,
        shard_count: u32,
    },
    /// Retention removed the records at the requested position.
    #[error(
        "sequence {requested} was removed by retention; shard {shard} now begins at sequence {first_sequence}"
    )]
    PositionTrimmed {
        shard: u32,
        requested: u64,
        first_sequence: u64,
    },
    /// The requested position is past the newest record.
    #[error(
        "sequence {requested} is beyond the tip of shard {shard} (the next record gets {next_sequence})"
    )]
    PositionBeyondTip {
        shard: u32,
        requested: u64,
        next_sequence: u64,
    },
    /// A producer retried a batch older than the dedup window remembers.
    #[error(
        "batch {batch_sequence} of producer {producer_id} is older than the last {window} batches remembered for deduplication; it cannot be retried safely"
    )]
    StaleProducerBatch {
        producer_id: u64,
        batch_sequence: u64,
        window: usize,
    },
    /// A chunk's bytes are not what was written: its checksum differs, or
    /// its segment file ends before it (or is gone).
    #[error(
        "records {first} to {last} of stream {stream:?} shard {shard} are damaged on disk ({cause}). Reads from at:{end} go on past them",
        last = end - 1
    )]
    ChunkDamaged {
        stream: String,
        shard: u32,
        first: u64,
        end: u64,
        cause: ChunkDamage,
    },
    /// A stored value did not decode: the data directory is damaged.
    #[error("stored {what} is corrupt; the data directory may be damaged")]
    Corrupt { what: &'static str },
    /// fjall reported an error (I/O, disk full, poisoned after a failed fsync).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    /// Reading (or tidying) segment files failed.
    #[error("segment files: {0}")]
    Segment(std::io::Error),
    /// Writing the group commit carrying this request failed. fjall may
    /// still complete the write when it is reopened, so the request may or
    /// may not have been stored.
    #[error(
        "writing to disk failed ({message}); the request may or may not have been stored, \
         so retry it with the same producer stamp; writes resume once storage is reopened"
    )]
    CommitFailed { message: String },
    /// An append would exceed the storage budget or the disk's reserve.
    #[error("storage full: {reason} (reads still work)")]
    StorageFull { reason: String },
    /// The storage engine is being reopened after a failed write.
    #[error("storage is being reopened after a failed write to disk; retry in a moment")]
    Recovering,
    /// Another process holds the data directory's lock.
    #[error(
        "another Weir server is using {dir} (only one server may open a data directory; stop it or pick another --data)"
    )]
    InUse { dir: PathBuf },
    /// The data directory was written in a layout this Weir does not read.
    #[error(
        "{dir} holds data in storage layout {found}, and this Weir reads only layout {expected} \
         ({hint}); it does not convert directories: move it aside (or remove it) and start again"
    )]
    UnsupportedLayout {
        dir: PathBuf,
        found: u32,
        expected: u32,
        hint: &'static str,
    },
    /// The writer thread has stopped (shutdown, or a fatal storage error).
    #[error("the storage writer has stopped (server shutting down)")]
    WriterStopped,
    /// One of storage's own threads (or the runtime of the server's thread)
    /// could not be started: the process is out of threads or memory, not
    /// the data directory at fault.
    #[error("could not start the {what}: {source}")]
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
}

impl StorageError {
    /// Errors that pass by themselves (space freed, storage reopened): the
    /// operation may be retried as it is.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::StorageFull { .. } | Self::CommitFailed { .. } | Self::Recovering
        )
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Why a stored chunk cannot be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkDamage {
    /// Its bytes differ from what was written.
    Checksum,
    /// Its segment file ends before it or is gone: in `buffered` mode, what
    /// a power cut leaves of writes not yet synced.
    Missing,
}

impl std::fmt::Display for ChunkDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Checksum => {
                "their checksum does not match what was written; the data directory's disk may be failing"
            }
            Self::Missing => {
                "their segment file ends before them or is gone; the machine may have stopped before they were synced"
            }
        })
    }
}
