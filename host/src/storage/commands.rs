//! What the storage layer asks of its writer thread: appends, trims,
//! checkpoints, processing commits, stream drops, syncs — each with the
//! reply the writer sends once the commit that carries it is durable.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;
use weir_proto::ProducerStamp;

use super::chunk::ChunkSummary;
use super::processing::ProcessingCommit;
use super::{Result, Shard, StorageError, Stream};

/// A record on its way into a shard.
#[derive(Debug, Clone)]
pub struct AppendRecord {
    pub partition_key: String,
    pub data: Bytes,
}

/// Where an append's records landed: `count` consecutive sequence numbers
/// from `first_sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub first_sequence: u64,
    pub count: u32,
    /// The batch had been stored before; nothing was appended this time.
    pub duplicate: bool,
}

pub(super) struct AppendJob {
    pub shard: Arc<Shard>,
    pub producer: Option<ProducerStamp>,
    pub records: Vec<AppendRecord>,
    pub reply: oneshot::Sender<Result<AppendOutcome>>,
}

pub(super) enum Command {
    Append(AppendJob),
    /// Removes whole chunks (the summaries retention read) from the
    /// shard's start up to `until`, the first sequence of the chunk after
    /// them.
    Trim {
        shard: Arc<Shard>,
        chunks: Vec<ChunkSummary>,
        until: u64,
        removed_bytes: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    Checkpoint {
        key: Vec<u8>,
        sequence: u64,
        reply: oneshot::Sender<Result<()>>,
    },
    DropStream {
        stream: Arc<Stream>,
        reply: oneshot::Sender<Result<()>>,
    },
    Processing {
        commit: ProcessingCommit,
        reply: oneshot::Sender<Result<()>>,
    },
    /// In buffered mode, every `buffered_sync_interval_ms`: takes what
    /// was written to the disk, segments before the journal that refers
    /// to them.
    Sync,
    Stop,
}

impl Command {
    pub fn payload_bytes(&self) -> usize {
        match self {
            Self::Append(job) => job
                .records
                .iter()
                .map(|r| r.data.len() + r.partition_key.len())
                .sum(),
            Self::Processing { commit, .. } => commit
                .outputs
                .iter()
                .flat_map(|(_, records)| records)
                .map(|r| r.data.len() + r.partition_key.len())
                .sum(),
            _ => 0,
        }
    }

    /// Answers the command with `refusal` (writes are refused until the
    /// engine is reopened); true for `Stop`.
    pub fn refuse(self, refusal: &StorageError) -> bool {
        let error = || match refusal {
            StorageError::StorageFull { reason } => StorageError::StorageFull {
                reason: reason.clone(),
            },
            _ => StorageError::Recovering,
        };
        match self {
            Self::Append(job) => {
                let _ = job.reply.send(Err(error()));
            }
            Self::Trim { reply, .. }
            | Self::Checkpoint { reply, .. }
            | Self::DropStream { reply, .. }
            | Self::Processing { reply, .. } => {
                let _ = reply.send(Err(error()));
            }
            Self::Sync => {}
            Self::Stop => return true,
        }
        false
    }
}
