//! Durable, ordered shards on fjall. The only module that imports fjall.
//!
//! - Reads (`read`, `describe_stream`, checkpoints) go straight to fjall from
//!   the caller's thread; callers on async tasks use `spawn_blocking`.
//! - Every mutation goes through the single writer thread ([`writer`]), as
//!   one of its [`commands`]; it assigns sequence numbers and
//!   group-commits everything queued while the previous commit ran: chunks
//!   to [`segments`], then one fjall batch.
//! - [`stream`] holds what readers and the writer share of a stream and its
//!   shards (the published state, the tip subscribers wait on).
//! - [`retention`] trims old records in the background, in bounded chunks
//!   that the writer interleaves with appends.
//! - fjall handles live only in the [`engine`], which the background thread
//!   reopens after a failed write (fjall takes no more writes after one).
//!
//! Invariants: a shard's sequence numbers are dense between `first_sequence`
//! and `next_sequence` and never reused, even after retention removes every
//! record; records, dedup state and shard state change in one atomic batch;
//! records are stored in [`chunk`]s and `first_sequence` is a chunk's first.

mod catalog;
mod chunk;
mod commands;
mod engine;
mod error;
mod layout;
mod processing;
mod recovery;
mod retention;
mod segments;
mod space;
mod stream;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjall::PersistMode;
use tokio::sync::{mpsc, oneshot};
use weir_proto::{
    Position, ProducerStamp, RecordBatch, Retention, ShardDescription, StreamDescription,
};

use crate::config::{Durability, StorageConfig};
use crate::counters::CommitMetrics;
use commands::Command;
use engine::{Engine, EngineSlot};
use layout::{ShardState, StreamMeta};
use stream::open_stream;

pub use catalog::{Catalog, CatalogKind};
pub use commands::{AppendOutcome, AppendRecord};
pub use error::{ChunkDamage, Result, StorageError};
pub use layout::{CursorState, StateSize};
pub use processing::{Processing, ProcessingCommit};
pub use stream::{Shard, ShardStats, Stream};

/// The records a reader at some position has yet to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    /// Their partition key and data bytes.
    pub bytes: u64,
    /// The oldest one's arrival time.
    pub oldest_timestamp_ms: Option<u64>,
}

impl Backlog {
    /// How long ago the oldest record arrived (0 with none).
    pub fn age_ms(&self) -> u64 {
        self.oldest_timestamp_ms
            .map_or(0, |oldest| now_ms().saturating_sub(oldest))
    }
}

/// What [`Storage::read_in_order`] read for a reader at a position.
#[derive(Debug)]
pub struct InOrderRead {
    /// From the position, or from the first record left when retention
    /// removed the position.
    pub records: Vec<weir_proto::Record>,
    /// Records retention removed before the reader got to them: the
    /// reader's position moves on by this many (0 almost always).
    pub lost: u64,
    /// Records after those that the disk damaged (see
    /// [`StorageError::ChunkDamaged`]): the position moves on by these too.
    pub damaged: u64,
}

/// The durable store: streams, shards, producer dedup state, checkpoints.
pub struct Storage {
    dir: PathBuf,
    engine: EngineSlot,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serialises stream creation and deletion.
    admin: Mutex<()>,
    writer: mpsc::Sender<Command>,
    background: Mutex<Vec<JoinHandle<()>>>,
    stop_background: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    space: Arc<space::SpaceGauge>,
    /// How many times the engine was reopened (its generation).
    reopenings: AtomicU64,
    /// Held for writing by the writer from a processing commit until the
    /// output shards' states are published, and for reading by cursor and
    /// state readers: a committed cursor is never seen ahead of its outputs.
    visibility: Arc<RwLock<()>>,
    /// Where the records' chunks are (fjall holds their summaries).
    segments: Arc<segments::Segments>,
    commit_metrics: Arc<CommitMetrics>,
    config: StorageConfig,
}

const NEXT_STREAM_ID_KEY: &str = "next_stream_id";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Storage {
    /// Small synced records: tokens, sinks and their cursors, Kinesis
    /// consumers and tags, id counters.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog(self)
    }

    /// Plugins, processor definitions, and each processor's cursors, state
    /// and failures per shard.
    pub fn processing(&self) -> Processing<'_> {
        Processing(self)
    }

    /// Opens (or creates) the store in `dir` and starts the writer, the
    /// retention task and, in buffered mode, the periodic sync.
    pub fn open(dir: &Path, config: StorageConfig) -> Result<Arc<Self>> {
        if !dir.exists() {
            Engine::create(dir, &config)?;
        }
        let engine = Engine::open(dir, &config, 0).map_err(|error| match error {
            StorageError::Engine(fjall::Error::Locked) => StorageError::InUse {
                dir: dir.parent().unwrap_or(dir).to_owned(),
            },
            other => other,
        })?;
        engine.check_layout(dir)?;
        let mut streams = BTreeMap::new();
        for entry in engine.meta.prefix(layout::STREAM_META_PREFIX) {
            let (key, value) = entry.into_inner()?;
            let name = std::str::from_utf8(&key[layout::STREAM_META_PREFIX.len()..])
                .map_err(|_| StorageError::Corrupt {
                    what: "stream name",
                })?
                .to_owned();
            let stream_meta = StreamMeta::decode(&value)?;
            let stream = open_stream(&engine, &name, &stream_meta)?;
            streams.insert(name, Arc::new(stream));
        }
        engine.collect_spare_shards()?;

        let segments = Arc::new(segments::Segments::new(dir));
        let live = streams.values().map(|stream| stream.id).collect();
        segments
            .remove_orphans(&live)
            .map_err(StorageError::Segment)?;
        let stored_bytes = streams
            .values()
            .flat_map(|stream| &stream.shards)
            .map(|shard| shard.state().bytes)
            .sum();
        let space = Arc::new(space::SpaceGauge::new(
            dir,
            config.storage_bytes_max,
            config.disk_free_bytes_min,
            stored_bytes,
        ));
        let (writer_tx, writer_rx) = mpsc::channel(config.writer_queue_commands_max);
        let durability = match config.durability {
            Durability::Fsync => Some(PersistMode::SyncData),
            // Each commit reaches the OS before it is acked (a process
            // crash loses nothing); the periodic sync takes it to the disk.
            Durability::Buffered => Some(PersistMode::Buffer),
        };
        let engine_slot = EngineSlot::default();
        engine_slot.put(Arc::new(engine));
        let visibility = Arc::new(RwLock::new(()));
        let commit_metrics = Arc::new(CommitMetrics::default());
        let writer = writer::Writer {
            segments: segments::SegmentWriter::new(segments.clone(), config.segment_bytes_max),
            engine: engine_slot.clone(),
            visibility: visibility.clone(),
            generation: 0,
            space: space.clone(),
            durability,
            config: config.clone(),
            dedup: Default::default(),
            last_sync: std::time::Instant::now(),
            metrics: commit_metrics.clone(),
        };
        let writer_thread = writer
            .spawn(writer_rx)
            .map_err(|source| StorageError::Thread {
                what: "storage writer thread",
                source,
            })?;

        let storage = Arc::new(Self {
            dir: dir.to_owned(),
            engine: engine_slot,
            streams: RwLock::new(streams),
            admin: Mutex::new(()),
            writer: writer_tx,
            background: Mutex::new(vec![writer_thread]),
            stop_background: Mutex::new(None),
            space,
            reopenings: AtomicU64::new(0),
            visibility,
            segments,
            commit_metrics,
            config,
        });
        storage.start_background()?;
        Ok(storage)
    }

    fn start_background(self: &Arc<Self>) -> Result<()> {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let storage = Arc::downgrade(self);
        let interval = Duration::from_millis(self.config.retention_check_interval_ms);
        let sync_interval = match self.config.durability {
            Durability::Buffered => {
                Some(Duration::from_millis(self.config.buffered_sync_interval_ms))
            }
            Durability::Fsync => None,
        };
        let handle = std::thread::Builder::new()
            .name("weir-storage-bg".into())
            .spawn(move || {
                let tick = sync_interval.map_or(interval, |s| s.min(interval));
                let mut last_retention = std::time::Instant::now();
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(tick)
                {
                    let Some(storage) = storage.upgrade() else {
                        return;
                    };
                    if sync_interval.is_some() {
                        // Skipped when the writer is busy: its queue will
                        // reach the disk with the next sync.
                        let _ = storage.writer.try_send(Command::Sync);
                    }
                    if last_retention.elapsed() >= interval {
                        last_retention = std::time::Instant::now();
                        storage.space.sample_disk();
                        recovery::recover(&storage);
                        retention::enforce(&storage);
                    }
                }
            })
            .map_err(|source| StorageError::Thread {
                what: "storage background thread",
                source,
            })?;
        self.background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
        *self
            .stop_background
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(stop_tx);
        Ok(())
    }

    /// Stops the background tasks and the writer (after it commits what is
    /// queued) and syncs the journal.
    pub fn shutdown(&self) -> Result<()> {
        self.stop_background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // Waits for room: with the queue full (a burst of puts, the
        // buffered-sync ticks) a Stop given up on left the writer waiting
        // for commands, and the join below, forever. (Not `blocking_send`,
        // which panics when called from within an async runtime.)
        let mut stop = Command::Stop;
        while let Err(mpsc::error::TrySendError::Full(command)) = self.writer.try_send(stop) {
            stop = command;
            std::thread::sleep(Duration::from_millis(1));
        }
        let handles =
            std::mem::take(&mut *self.background.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
        self.engine()?.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// The storage engine, borrowed for one operation: recovery waits for
    /// every borrower before it reopens it.
    fn engine(&self) -> Result<Arc<Engine>> {
        self.engine.get()
    }

    /// Where group commits spend their time (for `/metrics` and benchmarks).
    pub fn commit_metrics(&self) -> &CommitMetrics {
        &self.commit_metrics
    }

    pub fn config(&self) -> &StorageConfig {
        &self.config
    }

    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::StreamNotFound {
                name: name.to_owned(),
            })
    }

    pub fn all_streams(&self) -> Vec<Arc<Stream>> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn list_streams(&self) -> Vec<String> {
        self.streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Creates a stream with `shard_count` shards splitting the hash-key
    /// space evenly. Validation of names and counts is the caller's job.
    pub fn create_stream(&self, name: &str, shard_count: u32, retention: Retention) -> Result<()> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if self.stream(name).is_ok() {
            return Err(StorageError::StreamExists {
                name: name.to_owned(),
            });
        }
        let held: usize = self.all_streams().iter().map(|s| s.shards.len()).sum();
        let shards_max = self.config.shards_max;
        if held + shard_count as usize > shards_max {
            return Err(StorageError::ShardLimit {
                shards_max,
                held,
                requested: shard_count,
            });
        }
        let engine = self.engine()?;
        let id = match engine.meta.get(NEXT_STREAM_ID_KEY)? {
            Some(value) => {
                u64::from_le_bytes(value[..].try_into().map_err(|_| StorageError::Corrupt {
                    what: "stream id counter",
                })?)
            }
            None => 1,
        };
        let stream_meta = StreamMeta {
            id,
            shard_count,
            retention,
            created_ms: now_ms(),
        };
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(&engine.meta, NEXT_STREAM_ID_KEY, (id + 1).to_le_bytes());
        batch.insert(
            &engine.meta,
            layout::stream_meta_key(name),
            stream_meta.encode(),
        );
        for shard in 0..shard_count {
            let state = ShardState::default();
            batch.insert(
                &engine.meta,
                layout::shard_state_key(id, shard),
                state.encode(),
            );
        }
        let spares = engine.take_spare_shards(shard_count as usize);
        for (shard, spare) in (0..).zip(&spares) {
            batch.insert(
                &engine.meta,
                layout::shard_keyspace_key(id, shard),
                spare.name().as_bytes(),
            );
        }
        if let Err(error) = batch.commit() {
            engine.keep_spare_shards(spares);
            return Err(error.into());
        }
        let stream = open_stream(&engine, name, &stream_meta)?;
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Arc::new(stream));
        Ok(())
    }

    /// Changes a stream's retention, durably; the next retention pass
    /// applies it.
    pub fn set_retention(&self, name: &str, retention: Retention) -> Result<()> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let stream = self.stream(name)?;
        let stream_meta = StreamMeta {
            id: stream.id,
            shard_count: stream.shards.len() as u32,
            retention,
            created_ms: stream.created_ms,
        };
        let engine = self.engine()?;
        engine
            .meta
            .insert(layout::stream_meta_key(name), stream_meta.encode())?;
        engine.db.persist(PersistMode::SyncData)?;
        *stream.retention.lock().unwrap_or_else(|p| p.into_inner()) = retention;
        Ok(())
    }

    /// Deletes a stream, its records, dedup state, checkpoints and the
    /// catalog records that belong to it (Kinesis consumers and tags).
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let stream = {
            let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
            let stream = self
                .streams
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name)
                .ok_or_else(|| StorageError::StreamNotFound {
                    name: name.to_owned(),
                })?;
            stream.deleted.store(true, Ordering::Release);
            stream
        };
        self.send(|reply| Command::DropStream { stream, reply })
            .await
    }

    pub fn describe_stream(&self, name: &str) -> Result<StreamDescription> {
        let stream = self.stream(name)?;
        let shards = stream
            .shards
            .iter()
            .map(|shard| {
                let state = shard.state();
                let has_records = state.first_sequence < state.next_sequence;
                ShardDescription {
                    shard: shard.index,
                    hash_key_start: shard.hash_key_range.0,
                    hash_key_end: shard.hash_key_range.1,
                    first_sequence: has_records.then_some(state.first_sequence),
                    last_sequence: has_records.then(|| state.next_sequence - 1),
                    records: state.records,
                    bytes: state.bytes,
                }
            })
            .collect();
        Ok(StreamDescription {
            name: stream.name.clone(),
            retention: stream.retention(),
            created_ms: stream.created_ms,
            shards,
        })
    }

    async fn send<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (reply, response) = oneshot::channel();
        self.writer
            .send(command(reply))
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        response.await.map_err(|_| StorageError::WriterStopped)?
    }

    /// Appends records to shards, durably (as the durability mode promises)
    /// before returning; one outcome per shard, in order. All shards' records
    /// are queued before any is awaited, so they share a group commit. With a
    /// producer stamp, a batch seen before is not appended again: its outcome
    /// repeats the sequence numbers it got the first time.
    pub async fn append(
        &self,
        producer: Option<ProducerStamp>,
        appends: Vec<(Arc<Shard>, Vec<AppendRecord>)>,
    ) -> Vec<Result<AppendOutcome>> {
        if let Some(reason) = self.space.full_reason() {
            let full = || StorageError::StorageFull {
                reason: reason.clone(),
            };
            return appends.iter().map(|_| Err(full())).collect();
        }
        let mut pending = Vec::with_capacity(appends.len());
        for (shard, records) in appends {
            let (reply, response) = oneshot::channel();
            let job = commands::AppendJob {
                shard,
                producer,
                records,
                reply,
            };
            let queued = self.writer.send(Command::Append(job)).await.is_ok();
            pending.push(queued.then_some(response));
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for response in pending {
            outcomes.push(match response {
                Some(response) => response.await.unwrap_or(Err(StorageError::WriterStopped)),
                None => Err(StorageError::WriterStopped),
            });
        }
        outcomes
    }

    /// Stores a named consumer's checkpoint in a shard.
    pub async fn commit_checkpoint(
        &self,
        consumer: &str,
        shard: &Shard,
        sequence: u64,
    ) -> Result<()> {
        let key = layout::checkpoint_key(&shard.stream_name, shard.index, consumer);
        self.send(|reply| Command::Checkpoint {
            key,
            sequence,
            reply,
        })
        .await
    }

    pub fn checkpoint(&self, consumer: &str, shard: &Shard) -> Result<Option<u64>> {
        let key = layout::checkpoint_key(&shard.stream_name, shard.index, consumer);
        self.engine()?
            .checkpoints
            .get(key)?
            .map(|value| {
                value[..]
                    .try_into()
                    .map(u64::from_le_bytes)
                    .map_err(|_| StorageError::Corrupt { what: "checkpoint" })
            })
            .transpose()
    }

    /// Resolves a position to the first sequence number to read.
    pub fn resolve(&self, shard: &Shard, from: Position) -> Result<u64> {
        let state = shard.state();
        let requested = match from {
            Position::TrimHorizon => return Ok(state.first_sequence),
            Position::Latest => return Ok(state.next_sequence),
            Position::AtTimestamp(ms) => return self.sequence_at_time(shard, &state, ms),
            Position::AtSequence(seq) => seq,
            Position::AfterSequence(seq) => seq.saturating_add(1),
        };
        if requested < state.first_sequence {
            return Err(StorageError::PositionTrimmed {
                shard: shard.index,
                requested,
                first_sequence: state.first_sequence,
            });
        }
        if requested > state.next_sequence {
            return Err(StorageError::PositionBeyondTip {
                shard: shard.index,
                requested,
                next_sequence: state.next_sequence,
            });
        }
        Ok(requested)
    }

    /// `to` resolved in one shard of `stream` (or in each when `only` is
    /// `None`): all of them before a caller moves any cursor, so a position
    /// one shard cannot take moves none.
    pub fn resolve_in_shards(
        &self,
        stream: &Stream,
        only: Option<u32>,
        to: Position,
    ) -> Result<Vec<(Arc<Shard>, u64)>> {
        let shards = match only {
            Some(index) => vec![stream.shard(index)?.clone()],
            None => stream.shards.clone(),
        };
        shards
            .into_iter()
            .map(|shard| {
                let next = self.resolve(&shard, to)?;
                Ok((shard, next))
            })
            .collect()
    }

    /// The first sequence whose arrival time is at least `ms`: a binary
    /// search over chunk summaries (arrival times never decrease within a
    /// shard), then a walk through the one chunk that straddles `ms`.
    fn sequence_at_time(&self, shard: &Shard, state: &ShardState, ms: u64) -> Result<u64> {
        let keyspace = self.engine()?.shard(shard)?;
        let (mut low, mut high) = (state.first_sequence, state.next_sequence);
        while low < high {
            let mid = low + (high - low) / 2;
            let Some(summary) = chunk::summary_at(&keyspace, mid)? else {
                // Trimmed while we searched: it was older than anything left.
                low = mid + 1;
                continue;
            };
            if summary.last_timestamp_ms < ms {
                low = summary.end();
            } else if summary.first_timestamp_ms >= ms {
                high = summary.first_sequence;
            } else {
                return self.sequence_in_chunk(shard, &keyspace, summary.first_sequence, ms);
            }
        }
        Ok(low)
    }

    /// The first sequence at or after `ms` in the chunk starting at `first`,
    /// which holds records from before and from after `ms`. A damaged
    /// chunk's own timestamps cannot be read: its start is the answer, and
    /// a read from there names the damage (and how to move past it).
    fn sequence_in_chunk(
        &self,
        shard: &Shard,
        keyspace: &fjall::Keyspace,
        first: u64,
        ms: u64,
    ) -> Result<u64> {
        let load = |summary: &chunk::ChunkSummary| self.load_chunk(shard, summary);
        let mut chunks = chunk::read_from(keyspace, first, first + 1, load)?;
        let mut reader = match chunks.next() {
            None | Some(Err(StorageError::ChunkDamaged { .. })) => return Ok(first),
            Some(reader) => reader?,
        };
        reader.skip_older_than(ms)?;
        Ok(reader.next_sequence())
    }

    /// [`Storage::read`] for a reader that must not skip records silently
    /// (a processor or sink worker), on the blocking pool. When retention
    /// already removed `start`, it reads from the first record left; when
    /// the disk damaged the chunk at the position, from the record after
    /// it; and says how many were lost or damaged, for the reader to report
    /// and move past. (Records before a damaged chunk are returned first.)
    pub async fn read_in_order(
        self: &Arc<Self>,
        shard: &Arc<Shard>,
        start: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<InOrderRead> {
        let (storage, shard) = (self.clone(), shard.clone());
        tokio::task::spawn_blocking(move || {
            let (mut lost, mut damaged) = (0, 0);
            loop {
                let at = start + lost + damaged;
                match storage.read(&shard, at, limit, bytes_max) {
                    Ok(batch) => {
                        return Ok(InOrderRead {
                            records: batch.records,
                            lost,
                            damaged,
                        });
                    }
                    // Retention may trim again between the two reads.
                    Err(StorageError::PositionTrimmed { first_sequence, .. }) => {
                        lost = first_sequence - start - damaged;
                    }
                    // `read` answers the records before a damaged chunk
                    // itself, so this is the chunk at `at`.
                    Err(StorageError::ChunkDamaged { end, .. }) => damaged += end - at,
                    Err(error) => return Err(error),
                }
            }
        })
        .await
        .map_err(|_| StorageError::WriterStopped)?
    }

    /// Reads up to `limit` records (and about `bytes_max` bytes) starting at
    /// sequence `start`, which [`Storage::resolve`] produced.
    pub fn read(
        &self,
        shard: &Shard,
        start: u64,
        limit: usize,
        bytes_max: usize,
    ) -> Result<RecordBatch> {
        let state = shard.state();
        if start < state.first_sequence {
            return Err(StorageError::PositionTrimmed {
                shard: shard.index,
                requested: start,
                first_sequence: state.first_sequence,
            });
        }
        let end = state.next_sequence;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        if start < end && limit > 0 {
            let keyspace = self.engine()?.shard(shard)?;
            // Chunks are whole commits: none straddles `end`.
            let load = |summary: &chunk::ChunkSummary| self.load_chunk(shard, summary);
            'chunks: for reader in chunk::read_from(&keyspace, start, end, load)? {
                let mut reader = match reader {
                    // The records before it are answered; the next read,
                    // starting at it, names it.
                    Err(StorageError::ChunkDamaged { .. }) if !records.is_empty() => break,
                    reader => reader?,
                };
                while let Some(record) = reader.next_record()? {
                    bytes += record.data.len() + record.partition_key.len();
                    records.push(record);
                    if records.len() >= limit || bytes >= bytes_max {
                        break 'chunks;
                    }
                }
            }
        }
        shard
            .records_read
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        shard.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        let next_sequence = records
            .last()
            .map_or(start.max(state.first_sequence), |r| r.sequence + 1);
        let millis_behind_tip = match records.last() {
            Some(last) if next_sequence < end => {
                state.last_timestamp_ms.saturating_sub(last.timestamp_ms)
            }
            _ => 0,
        };
        Ok(RecordBatch {
            records,
            next_sequence,
            records_behind_tip: end.saturating_sub(next_sequence),
            millis_behind_tip,
        })
    }

    /// The position just past the records damaged on disk at `from` in a
    /// shard, if what is stored there is damaged: for readers that cannot
    /// step past them on their own (Kinesis clients). Reads one chunk.
    pub fn past_damage(&self, stream: &str, shard: u32, from: Position) -> Option<u64> {
        let shard = self.stream(stream).ok()?.shard(shard).ok()?.clone();
        let start = self.resolve(&shard, from).ok()?;
        match self.read(&shard, start, 1, usize::MAX) {
            Err(StorageError::ChunkDamaged { end, .. }) => Some(end),
            _ => None,
        }
    }

    /// What lies between `from` (or the shard's first record, if retention
    /// removed `from`) and the tip, from the chunk summaries and the one
    /// chunk `from` falls in — no record is copied.
    pub fn backlog(&self, shard: &Shard, from: u64) -> Result<Backlog> {
        let state = shard.state();
        let (start, end) = (from.max(state.first_sequence), state.next_sequence);
        let mut backlog = Backlog {
            records: end.saturating_sub(start),
            ..Backlog::default()
        };
        if start >= end {
            return Ok(backlog);
        }
        let keyspace = self.engine()?.shard(shard)?;
        let mut next_chunk = start;
        if let Some(summary) = chunk::summary_at(&keyspace, start)? {
            match self.load_chunk(shard, &summary) {
                Ok(value) => {
                    let mut reader = chunk::ChunkReader::new(summary.first_sequence, value)?;
                    reader.skip_to(start)?;
                    backlog.oldest_timestamp_ms = reader.next_timestamp_ms()?;
                    backlog.bytes = reader.skip_rest()?;
                }
                // The whole chunk's figures stand in: a describe of a
                // reader stopped at damaged records must still answer.
                Err(StorageError::ChunkDamaged { .. }) => {
                    backlog.oldest_timestamp_ms = Some(summary.first_timestamp_ms);
                    backlog.bytes = summary.record_bytes;
                }
                Err(error) => return Err(error),
            }
            next_chunk = summary.end();
        }
        // Chunks are whole commits: none straddles `end`.
        for summary in chunk::summaries_from(&keyspace, next_chunk) {
            let summary = summary?;
            if summary.first_sequence >= end {
                break;
            }
            backlog
                .oldest_timestamp_ms
                .get_or_insert(summary.first_timestamp_ms);
            backlog.bytes += summary.record_bytes;
        }
        Ok(backlog)
    }

    /// A chunk's bytes from its segment. A segment removed since its
    /// summary was read went with its stream, or held only records
    /// retention removed; one missing or short otherwise lost the chunk (a
    /// power cut before a sync).
    fn load_chunk(&self, shard: &Shard, summary: &chunk::ChunkSummary) -> Result<Bytes> {
        let damaged = |cause| StorageError::ChunkDamaged {
            stream: shard.stream_name.clone(),
            shard: shard.index,
            first: summary.first_sequence,
            end: summary.end(),
            cause,
        };
        let chunk = self
            .segments
            .read(shard.stream_id, summary.location)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound if shard.stream_is_deleted() => {
                    StorageError::StreamNotFound {
                        name: shard.stream_name.clone(),
                    }
                }
                std::io::ErrorKind::NotFound => {
                    let first_sequence = shard.state().first_sequence;
                    if summary.end() <= first_sequence {
                        StorageError::PositionTrimmed {
                            shard: shard.index,
                            requested: summary.first_sequence,
                            first_sequence,
                        }
                    } else {
                        damaged(ChunkDamage::Missing)
                    }
                }
                std::io::ErrorKind::UnexpectedEof => damaged(ChunkDamage::Missing),
                _ => StorageError::Segment(error),
            })?;
        if !summary.matches(&chunk) {
            return Err(damaged(ChunkDamage::Checksum));
        }
        Ok(chunk)
    }

    /// Asks the writer to remove `chunks`, the records below `until` in
    /// `shard`.
    fn trim_blocking(
        &self,
        shard: Arc<Shard>,
        chunks: Vec<chunk::ChunkSummary>,
        until: u64,
        removed_bytes: u64,
    ) -> Result<()> {
        let (reply, response) = oneshot::channel();
        self.writer
            .blocking_send(Command::Trim {
                shard,
                chunks,
                until,
                removed_bytes,
                reply,
            })
            .map_err(|_| StorageError::WriterStopped)?;
        response
            .blocking_recv()
            .map_err(|_| StorageError::WriterStopped)?
    }

    /// Fails with `StorageFull` when appends are refused for lack of space.
    pub fn space_check(&self) -> Result<()> {
        self.space.check()
    }

    /// Record bytes stored in all streams (what `storage_bytes_max` bounds).
    pub fn stored_bytes(&self) -> u64 {
        self.space.stored_bytes()
    }

    /// Bytes in memtables, active and waiting to be flushed.
    pub fn write_buffer_bytes(&self) -> u64 {
        self.engine()
            .map_or(0, |engine| engine.db.write_buffer_size())
    }

    /// Times the engine was reopened after a failed write.
    pub fn reopens(&self) -> u64 {
        self.reopenings.load(Ordering::Relaxed)
    }

    /// Free bytes on the data directory's filesystem (sampled).
    pub fn disk_free_bytes(&self) -> u64 {
        self.space.disk_free_bytes()
    }

    /// Bytes the data directory uses on disk: fjall's own accounting plus
    /// the segment files.
    pub fn disk_bytes(&self) -> Result<u64> {
        Ok(self.engine()?.db.disk_space()? + self.segments.disk_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::KeyspaceCreateOptions;

    /// Shutdown stops the writer even when its queue is full at that
    /// moment (it gave up on the Stop, and then waited forever).
    #[test]
    fn shutdown_stops_the_writer_even_with_its_queue_full() {
        let dir = tempfile::tempdir().expect("dir");
        let config = StorageConfig {
            writer_queue_commands_max: 1,
            ..StorageConfig::default()
        };
        let storage = Storage::open(&dir.path().join("data"), config).expect("open");
        storage
            .create_stream("s", 1, Retention::default())
            .expect("create");
        let shard = storage.stream("s").expect("stream").shards[0].clone();
        // Keep the writer busy with 64 MB while the one free place in
        // its queue is taken.
        let records = (0..4096)
            .map(|i| AppendRecord {
                partition_key: format!("key-{i}"),
                data: Bytes::from(vec![b'x'; 16 << 10]),
            })
            .collect();
        let (reply, _stored) = oneshot::channel();
        let job = commands::AppendJob {
            shard,
            producer: None,
            records,
            reply,
        };
        assert!(storage.writer.try_send(Command::Append(job)).is_ok());
        while storage.writer.capacity() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        while storage.writer.try_send(Command::Sync).is_ok() {}
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(storage.shutdown().is_ok());
        });
        let stopped = done.recv_timeout(Duration::from_secs(30));
        assert_eq!(stopped, Ok(true), "shutdown returned");
    }

    /// The backlog from every position — chunk starts, inside chunks, the
    /// tip — equals what reading from there returns.
    #[tokio::test]
    async fn the_backlog_from_any_position_is_what_a_read_from_there_returns() {
        let dir = tempfile::tempdir().expect("dir");
        let config = StorageConfig {
            // A few records per chunk, so positions fall inside chunks.
            chunk_bytes_max: 100,
            ..StorageConfig::default()
        };
        let storage = Storage::open(&dir.path().join("data"), config).expect("open");
        storage
            .create_stream("s", 1, Retention::default())
            .expect("create");
        let shard = storage
            .stream("s")
            .expect("stream")
            .shard(0)
            .expect("shard")
            .clone();
        for commit in 0..3 {
            let records = (0..10)
                .map(|i| AppendRecord {
                    partition_key: format!("key-{commit}-{i}"),
                    data: Bytes::from(vec![b'x'; 7 * i + commit]),
                })
                .collect();
            let outcomes = storage.append(None, vec![(shard.clone(), records)]).await;
            outcomes[0].as_ref().expect("appended");
        }
        let end = shard.state().next_sequence;
        assert_eq!(end, 30);
        for from in 0..=end {
            let batch = storage
                .read(&shard, from, usize::MAX, usize::MAX)
                .expect("read");
            let expected = Backlog {
                records: batch.records.len() as u64,
                bytes: batch
                    .records
                    .iter()
                    .map(|r| (r.partition_key.len() + r.data.len()) as u64)
                    .sum(),
                oldest_timestamp_ms: batch.records.first().map(|r| r.timestamp_ms),
            };
            assert_eq!(
                storage.backlog(&shard, from).expect("backlog"),
                expected,
                "from {from}"
            );
        }
        storage.shutdown().expect("shutdown");
    }

    /// Records put into `stream`'s shard `index`, and what a read of the
    /// whole shard returns.
    async fn put_and_read(storage: &Storage, stream: &str, index: u32, tag: &str) -> Vec<String> {
        let shard = storage
            .stream(stream)
            .expect("stream")
            .shard(index)
            .expect("shard")
            .clone();
        let records = (0..3)
            .map(|i| AppendRecord {
                partition_key: format!("{tag}-{i}"),
                data: Bytes::from(tag.to_owned()),
            })
            .collect();
        let outcomes = storage.append(None, vec![(shard.clone(), records)]).await;
        outcomes[0].as_ref().expect("appended");
        let start = storage
            .resolve(&shard, Position::TrimHorizon)
            .expect("start");
        let batch = storage.read(&shard, start, 100, usize::MAX).expect("read");
        batch
            .records
            .iter()
            .map(|record| record.partition_key.clone())
            .collect()
    }

    /// A deleted stream's shard keyspaces are emptied and given to the
    /// next streams created (fjall leaves a copy of its keyspace list on
    /// disk for each keyspace created or deleted); the new shards hold only
    /// their own records, across a restart.
    #[tokio::test]
    async fn deleted_shards_keyspaces_are_reused_empty() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let storage = Storage::open(&data, StorageConfig::default()).expect("open");
        storage
            .create_stream("old", 2, Retention::default())
            .expect("create");
        put_and_read(&storage, "old", 1, "old").await;
        let keyspaces = storage.engine().expect("engine").db.keyspace_count();
        storage.delete_stream("old").await.expect("delete");
        storage
            .create_stream("new", 3, Retention::default())
            .expect("create");
        // Two reused, one made.
        let engine = storage.engine().expect("engine");
        assert_eq!(engine.db.keyspace_count(), keyspaces + 1);
        drop(engine);
        for index in 0..3 {
            let read = put_and_read(&storage, "new", index, &format!("new{index}")).await;
            assert_eq!(read, [0, 1, 2].map(|i| format!("new{index}-{i}")));
        }
        storage.shutdown().expect("shutdown");
        drop(storage);

        // The shards find their keyspaces again after a restart.
        let storage = Storage::open(&data, StorageConfig::default()).expect("reopen");
        let shard = storage.stream("new").expect("new").shards[1].clone();
        assert_eq!(shard.state().next_sequence, 3);
        let read = put_and_read(&storage, "new", 1, "again").await;
        assert_eq!(read.len(), 6, "{read:?}");
        assert!(read[..3].iter().all(|key| key.starts_with("new1-")));
        storage.delete_stream("new").await.expect("delete");
        storage.shutdown().expect("shutdown");
        drop(storage);

        // A shard keyspace no stream uses that still holds records (left
        // by a crash of an older Weir, say) is emptied before it is reused.
        let engine = Engine::open(&data, &StorageConfig::default(), 0).expect("engine");
        let orphan = engine
            .db
            .keyspace("s999_0", KeyspaceCreateOptions::default)
            .expect("orphan");
        orphan.insert("left", "behind").expect("insert");
        engine.db.persist(PersistMode::SyncAll).expect("persist");
        drop((orphan, engine));
        let storage = Storage::open(&data, StorageConfig::default()).expect("reopen");
        let keyspaces = storage.engine().expect("engine").db.keyspace_count();
        storage
            .create_stream("newest", 4, Retention::default())
            .expect("create");
        assert_eq!(
            storage.engine().expect("engine").db.keyspace_count(),
            keyspaces,
            "three from the deleted stream and the orphan"
        );
        for index in 0..4 {
            let read = put_and_read(&storage, "newest", index, "x").await;
            assert_eq!(read.len(), 3, "shard {index}: {read:?}");
        }
    }

    /// `shards_max` counts the shards of all streams; deleting a stream
    /// makes room again.
    #[test]
    fn streams_past_shards_max_are_refused_until_one_is_deleted() {
        let dir = tempfile::tempdir().expect("dir");
        let config = StorageConfig {
            shards_max: 6,
            ..StorageConfig::default()
        };
        let storage = Storage::open(&dir.path().join("data"), config).expect("open");
        let create = |name: &str, shards| storage.create_stream(name, shards, Retention::default());
        create("a", 4).expect("a");
        create("b", 2).expect("b");
        let error = create("c", 1).expect_err("past the limit");
        assert!(
            matches!(
                error,
                StorageError::ShardLimit {
                    shards_max: 6,
                    held: 6,
                    requested: 1
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("storage.shards_max"), "{error}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(storage.delete_stream("b"))
            .expect("delete");
        create("c", 2).expect("room again");
    }

    /// A bit flipped in a stored chunk is caught by its checksum and named
    /// with the records it holds; plain reads past it go on, and in-order
    /// readers (processors, sinks) get the records before it, then are
    /// told how many it held and get those after.
    #[tokio::test]
    async fn a_chunk_damaged_on_disk_is_named_and_can_be_read_past() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let storage = Storage::open(&data, StorageConfig::default()).expect("open");
        storage
            .create_stream("s", 1, Retention::default())
            .expect("create");
        for tag in ["a", "b", "c"] {
            put_and_read(&storage, "s", 0, tag).await;
        }
        storage.shutdown().expect("shutdown");
        drop(storage);

        // Three commits, three chunks of one size, in the stream's first
        // segment file: flip a bit in the middle one.
        let segment = data
            .join("segments")
            .join("1")
            .join(format!("{:020}.seg", 0));
        let mut bytes = std::fs::read(&segment).expect("segment");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&segment, &bytes).expect("damage");

        let storage = Storage::open(&data, StorageConfig::default()).expect("reopen");
        let shard = storage.stream("s").expect("s").shards[0].clone();
        let before = storage.read(&shard, 0, 100, usize::MAX).expect("before");
        assert_eq!(before.next_sequence, 3, "{before:?}");
        let error = storage
            .read(&shard, 3, 100, usize::MAX)
            .expect_err("damaged");
        assert!(
            matches!(
                error,
                StorageError::ChunkDamaged {
                    shard: 0,
                    first: 3,
                    end: 6,
                    cause: ChunkDamage::Checksum,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .starts_with("records 3 to 5 of stream \"s\" shard 0 are damaged on disk"),
            "{error}"
        );
        let keyspace = storage
            .engine()
            .expect("engine")
            .shard(&shard)
            .expect("keyspace");
        assert_eq!(
            storage
                .sequence_in_chunk(&shard, &keyspace, 3, 0)
                .expect("a time inside the damaged chunk"),
            3,
            "a time inside a damaged chunk finds its start"
        );
        let backlog = storage.backlog(&shard, 3).expect("a backlog at the damage");
        assert_eq!(backlog.records, 6);
        let past = storage.read(&shard, 6, 100, usize::MAX).expect("past it");
        assert_eq!(past.records.len(), 3);

        let keys = |read: &InOrderRead| -> Vec<String> {
            read.records
                .iter()
                .map(|r| r.partition_key.clone())
                .collect()
        };
        let before = storage
            .read_in_order(&shard, 0, 100, usize::MAX)
            .await
            .expect("before");
        assert_eq!(
            (keys(&before), before.lost, before.damaged),
            (
                vec!["a-0".to_owned(), "a-1".to_owned(), "a-2".to_owned()],
                0,
                0
            )
        );
        let after = storage
            .read_in_order(&shard, 3, 100, usize::MAX)
            .await
            .expect("after");
        assert_eq!(
            (keys(&after), after.damaged),
            (
                vec!["c-0".to_owned(), "c-1".to_owned(), "c-2".to_owned()],
                3
            )
        );
    }

    /// A read that found its chunks just before the stream was deleted
    /// says the stream is gone, not that its records are damaged.
    #[tokio::test]
    async fn a_stream_deleted_mid_read_is_not_found_rather_than_damaged() {
        let dir = tempfile::tempdir().expect("dir");
        let storage =
            Storage::open(&dir.path().join("data"), StorageConfig::default()).expect("open");
        storage
            .create_stream("s", 1, Retention::default())
            .expect("create");
        put_and_read(&storage, "s", 0, "a").await;
        let shard = storage.stream("s").expect("s").shards[0].clone();
        let keyspace = storage
            .engine()
            .expect("engine")
            .shard(&shard)
            .expect("keyspace");
        let summary = chunk::last_summary(&keyspace)
            .expect("summary")
            .expect("a chunk");
        storage.delete_stream("s").await.expect("delete");
        let error = storage
            .load_chunk(&shard, &summary)
            .expect_err("its segment is gone");
        assert!(
            matches!(error, StorageError::StreamNotFound { ref name } if name == "s"),
            "{error}"
        );
        storage.shutdown().expect("shutdown");
    }

    /// What a power cut in buffered mode can leave: chunk summaries
    /// committed to the journal whose bytes never reached the segment (cut
    /// short, or not there at all). Those records read as damaged, reads
    /// get the records before them, and the stream takes writes again.
    #[tokio::test]
    async fn chunks_a_power_cut_kept_from_the_disk_read_as_damaged_and_writes_go_on() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let segments = data.join("segments").join("1");
        let config = StorageConfig {
            durability: Durability::Buffered,
            ..StorageConfig::default()
        };
        let storage = Storage::open(&data, config.clone()).expect("open");
        storage
            .create_stream("s", 1, Retention::default())
            .expect("create");
        for tag in ["a", "b"] {
            put_and_read(&storage, "s", 0, tag).await;
        }
        storage.shutdown().expect("shutdown");
        drop(storage);
        let newest_segment = || {
            let mut files: Vec<_> = std::fs::read_dir(&segments)
                .expect("segments")
                .map(|entry| entry.expect("entry").path())
                .collect();
            files.sort();
            files.pop().expect("a segment")
        };
        // The second chunk's last byte never reached the disk.
        let segment = newest_segment();
        let len = std::fs::metadata(&segment).expect("segment").len();
        std::fs::File::options()
            .write(true)
            .open(&segment)
            .expect("open")
            .set_len(len - 1)
            .expect("cut");

        let storage = Storage::open(&data, config.clone()).expect("reopen");
        let shard = storage.stream("s").expect("s").shards[0].clone();
        let keys = |batch: &RecordBatch| -> Vec<String> {
            batch
                .records
                .iter()
                .map(|r| r.partition_key.clone())
                .collect()
        };
        let before = storage.read(&shard, 0, 100, usize::MAX).expect("before");
        assert_eq!(keys(&before), ["a-0", "a-1", "a-2"]);
        let error = storage
            .read(&shard, before.next_sequence, 100, usize::MAX)
            .expect_err("lost");
        assert!(
            matches!(
                error,
                StorageError::ChunkDamaged {
                    first: 3,
                    end: 6,
                    cause: ChunkDamage::Missing,
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error.to_string().contains("ends before them or is gone"),
            "{error}"
        );
        put_and_read(&storage, "s", 0, "c").await;
        let after = storage.read(&shard, 6, 100, usize::MAX).expect("after");
        assert_eq!(keys(&after), ["c-0", "c-1", "c-2"]);
        storage.shutdown().expect("shutdown");
        drop(storage);

        // The segment the newest chunk went to is gone altogether.
        std::fs::remove_file(newest_segment()).expect("remove");
        let storage = Storage::open(&data, config).expect("reopen");
        let shard = storage.stream("s").expect("s").shards[0].clone();
        put_and_read(&storage, "s", 0, "d").await;
        let error = storage.read(&shard, 6, 100, usize::MAX).expect_err("lost");
        assert!(
            matches!(
                error,
                StorageError::ChunkDamaged {
                    first: 6,
                    end: 9,
                    ..
                }
            ),
            "{error}"
        );
        let after = storage.read(&shard, 9, 100, usize::MAX).expect("after");
        assert_eq!(keys(&after), ["d-0", "d-1", "d-2"]);
    }
}
