//! Streams and their shards as readers and the writer share them: each
//! shard's published state, its tip to wait on and its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use weir_proto::Retention;
use weir_proto::routing::shard_hash_range;

use super::engine::Engine;
use super::layout::{self, ShardState, StreamMeta};
use super::{Result, StorageError, chunk};

/// One shard: its published state and a tip to wait on (its keyspace is
/// the engine's, see [`engine`]).
pub struct Shard {
    pub stream_id: u64,
    pub stream_name: String,
    pub index: u32,
    pub hash_key_range: (u128, u128),
    /// Shared with the owning [`Stream`]: set when the stream is deleted.
    pub(super) stream_deleted: Arc<AtomicBool>,
    /// Published by the writer after each commit; readers copy it.
    pub(super) state: Mutex<ShardState>,
    /// `next_sequence` after the latest commit, for subscribers to wait on.
    pub(super) tip: watch::Sender<u64>,
    /// Records and bytes served to readers since start (for metrics).
    pub(super) records_read: AtomicU64,
    pub(super) bytes_read: AtomicU64,
    /// Open subscriptions (kept by the service's subscription guard).
    pub subscribers: AtomicUsize,
}

/// A shard's counters and sizes, for metrics and status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    pub records_appended: u64,
    pub bytes_appended: u64,
    pub records_read: u64,
    pub bytes_read: u64,
    pub records_stored: u64,
    pub bytes_stored: u64,
}

impl Shard {
    pub(super) fn state(&self) -> ShardState {
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn stats(&self) -> ShardStats {
        let state = self.state();
        ShardStats {
            records_appended: state.next_sequence,
            bytes_appended: state.bytes_appended,
            records_read: self.records_read.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            records_stored: state.records,
            bytes_stored: state.bytes,
        }
    }

    /// Changes whenever records are committed to this shard.
    pub fn watch_tip(&self) -> watch::Receiver<u64> {
        self.tip.subscribe()
    }

    pub fn stream_is_deleted(&self) -> bool {
        self.stream_deleted.load(Ordering::Acquire)
    }

    /// Makes a committed state visible to readers and wakes the waiters.
    pub(super) fn publish(&self, state: ShardState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        self.tip.send_replace(state.next_sequence);
    }
}

/// A stream and its shards, shared by everyone holding it.
pub struct Stream {
    pub id: u64,
    pub name: String,
    pub(super) retention: Mutex<Retention>,
    /// ms since the epoch; 0 if created before Weir recorded it.
    pub created_ms: u64,
    pub shards: Vec<Arc<Shard>>,
    pub(super) deleted: Arc<AtomicBool>,
}

impl Stream {
    /// What the stream keeps now (it can be changed while it runs).
    pub fn retention(&self) -> Retention {
        *self.retention.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn shard(&self, index: u32) -> Result<&Arc<Shard>> {
        self.shards
            .get(index as usize)
            .ok_or_else(|| StorageError::ShardNotFound {
                stream: self.name.clone(),
                shard: index,
                shard_count: self.shards.len() as u32,
            })
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}

pub(super) fn open_stream(engine: &Engine, name: &str, stream_meta: &StreamMeta) -> Result<Stream> {
    let deleted = Arc::new(AtomicBool::new(false));
    let mut shards = Vec::with_capacity(stream_meta.shard_count as usize);
    for index in 0..stream_meta.shard_count {
        let state = open_shard(engine, stream_meta.id, index)?;
        let (tip, _) = watch::channel(state.next_sequence);
        shards.push(Arc::new(Shard {
            stream_id: stream_meta.id,
            stream_name: name.to_owned(),
            index,
            hash_key_range: shard_hash_range(index, stream_meta.shard_count),
            stream_deleted: deleted.clone(),
            state: Mutex::new(state),
            tip,
            records_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            subscribers: AtomicUsize::new(0),
        }));
    }
    Ok(Stream {
        id: stream_meta.id,
        name: name.to_owned(),
        retention: Mutex::new(stream_meta.retention),
        created_ms: stream_meta.created_ms,
        shards,
        deleted,
    })
}

/// Opens a shard's keyspace and reads its committed state.
pub(super) fn open_shard(engine: &Engine, stream_id: u64, index: u32) -> Result<ShardState> {
    let keyspace = engine.open_shard(stream_id, index)?;
    let mut state = match engine.meta.get(layout::shard_state_key(stream_id, index))? {
        Some(value) => ShardState::decode(&value)?,
        None => ShardState::default(),
    };
    // The state is committed with the records, so they agree; the check
    // costs one seek and guards the never-reuse-a-sequence invariant.
    if let Some(last) = chunk::last_summary(&keyspace)?
        && last.end() > state.next_sequence
    {
        return Err(StorageError::Corrupt {
            what: "shard state (behind its records)",
        });
    }
    state.first_sequence = state.first_sequence.min(state.next_sequence);
    Ok(state)
}
