//! The single writer thread: sequence numbers and group commit.
//!
//! It takes the first queued command, then everything else already queued
//! (up to `group_commit_bytes_max`), applies it all to one fjall batch and
//! commits it with one sync. Only after the commit does it publish the new
//! shard states to readers and answer the waiting requests — so an ack, a
//! subscriber's wake-up and a reader's view never run ahead of the disk.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Keyspace, PersistMode};
use tokio::sync::{mpsc, oneshot};
use weir_proto::ProducerStamp;

use super::chunk::{self, ChunkBuilder};
use super::commands::{AppendOutcome, AppendRecord, Command};
use super::engine::{Engine, EngineSlot};
use super::layout::{self, DedupEntry, DedupWindow, ShardState};
use super::processing::ProcessingCommit;
use super::segments::SegmentWriter;
use super::space::SpaceGauge;
use super::{Result, Shard, StorageError, Stream, now_ms};
use crate::config::{Durability, StorageConfig};
use crate::counters::CommitMetrics;

/// A reply to send once the batch it depends on has committed.
enum Reply {
    Append(oneshot::Sender<Result<AppendOutcome>>, AppendOutcome),
    Unit(oneshot::Sender<Result<()>>),
}

pub(super) struct Writer {
    pub engine: EngineSlot,
    /// See `Storage::visibility`: taken for writing around a commit that
    /// carries processor cursors, until its outputs are published.
    pub visibility: Arc<RwLock<()>>,
    /// The engine generation `dedup` was filled from.
    pub generation: u64,
    /// Told of every change to a shard's stored bytes.
    pub space: Arc<SpaceGauge>,
    pub durability: Option<PersistMode>,
    pub config: StorageConfig,
    /// Dedup windows read so far, keyed by (stream id, shard, producer id).
    pub dedup: HashMap<(u64, u32, u64), DedupWindow>,
    /// Appends chunks to the streams' segment files.
    pub segments: SegmentWriter,
    /// When the buffered mode's periodic sync last ran.
    pub last_sync: Instant,
    pub metrics: Arc<CommitMetrics>,
}

/// How long the writer waits for flushes before it writes anyway (and
/// warns): back-pressure must not turn into a stopped server.
const MEMTABLE_WAIT_MAX: Duration = Duration::from_secs(10);
/// How often a write waiting for flushes checks the write buffer again.
const MEMTABLE_POLL_STEP: Duration = Duration::from_millis(1);

/// What one group commit is building.
struct Group {
    engine: Arc<Engine>,
    batch: fjall::OwnedWriteBatch,
    /// New state per touched shard, published after the commit.
    shards: HashMap<(u64, u32), (Arc<Shard>, ShardState)>,
    replies: Vec<Reply>,
    /// The chunk being filled per shard (with the shard's keyspace, for
    /// its summary), written to its segment at commit.
    chunks: HashMap<(u64, u32), (Keyspace, ChunkBuilder)>,
    /// Chunks that reached `chunk_bytes_max`, written at commit too.
    full_chunks: Vec<((u64, u32), Keyspace, ChunkBuilder)>,
    /// Carries a processor cursor (see `Writer::visibility`).
    moves_cursors: bool,
    /// Chunks added to (+) and trimmed from (−) segments, by (stream id,
    /// segment): the counts that decide when a segment file can go.
    chunk_count_changes: HashMap<(u64, u64), i64>,
}

impl Writer {
    pub fn spawn(self, commands: mpsc::Receiver<Command>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("weir-writer".into())
            .spawn(move || self.run(commands))
    }

    fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let engine = match self.usable_engine() {
                Ok(engine) => engine,
                Err(refusal) => {
                    // fjall takes no writes until it is reopened: answer
                    // everything queued now rather than fail one by one.
                    let mut next = Some(first);
                    while let Some(command) = next.take() {
                        if command.refuse(&refusal) {
                            return;
                        }
                        next = commands.try_recv().ok();
                    }
                    continue;
                }
            };
            self.wait_for_memtables(&engine);
            let mut group = self.new_group(engine.clone());
            let mut queued_bytes = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                queued_bytes += command.payload_bytes();
                match command {
                    Command::Stop => {
                        self.commit(group);
                        if let Err(error) = self.segments.sync() {
                            tracing::error!(%error, "syncing segments at shutdown failed");
                        }
                        return;
                    }
                    Command::Sync => {
                        self.commit(group);
                        group = self.new_group(engine.clone());
                        self.sync(&engine);
                    }
                    Command::DropStream { stream, reply } => {
                        // Commit what came before, so the drop is ordered
                        // after every append already accepted.
                        self.commit(group);
                        group = self.new_group(engine.clone());
                        let _ = reply.send(self.drop_stream(&engine, &stream));
                    }
                    command => self.apply(&mut group, command),
                }
                if queued_bytes < self.config.group_commit_bytes_max {
                    next = commands.try_recv().ok();
                }
            }
            self.commit(group);
            // Under steady load the storage thread's `Sync` may find the
            // queue full: the writer keeps the interval itself.
            if self.config.durability == Durability::Buffered
                && self.last_sync.elapsed()
                    >= Duration::from_millis(self.config.buffered_sync_interval_ms)
            {
                self.sync(&engine);
            }
        }
    }

    /// The engine to write to, unless writes are refused until it has been
    /// reopened. Caches filled from an earlier engine are dropped.
    fn usable_engine(&mut self) -> Result<Arc<Engine>, StorageError> {
        self.space.check_engine()?;
        let engine = self.engine.get()?;
        if engine.generation != self.generation {
            self.generation = engine.generation;
            self.dedup.clear();
            self.segments.forget_all();
        }
        Ok(engine)
    }

    /// Waits while the memtables (active and waiting for flush) hold more
    /// than `write_buffer_bytes_max`, so ingest slows to what flushes write
    /// instead of memory growing with the backlog. If nothing is being
    /// flushed (every memtable active and under its own limit, as with many
    /// shards, or just after a restart replayed a long journal into them),
    /// every memtable is sealed so flushes start.
    fn wait_for_memtables(&mut self, engine: &Engine) {
        let max = self.config.write_buffer_bytes_max;
        let started = Instant::now();
        while engine.db.write_buffer_size() > max {
            if engine.db.outstanding_flushes() == 0
                && let Err(error) = engine.seal_memtables()
            {
                tracing::warn!(%error, "sealing memtables failed");
            }
            if started.elapsed() > MEMTABLE_WAIT_MAX {
                tracing::warn!(
                    write_buffer_bytes = engine.db.write_buffer_size(),
                    write_buffer_bytes_max = max,
                    "flushes are not keeping up; writing anyway"
                );
                return;
            }
            std::thread::sleep(MEMTABLE_POLL_STEP);
        }
    }

    fn new_group(&self, engine: Arc<Engine>) -> Group {
        Group {
            batch: engine.db.batch().durability(self.durability),
            engine,
            shards: HashMap::new(),
            replies: Vec::new(),
            chunks: HashMap::new(),
            full_chunks: Vec::new(),
            moves_cursors: false,
            chunk_count_changes: HashMap::new(),
        }
    }

    fn staged_state<'a>(
        shards: &'a mut HashMap<(u64, u32), (Arc<Shard>, ShardState)>,
        shard: &Arc<Shard>,
    ) -> &'a mut ShardState {
        &mut shards
            .entry((shard.stream_id, shard.index))
            .or_insert_with(|| (shard.clone(), shard.state()))
            .1
    }

    fn apply(&mut self, group: &mut Group, command: Command) {
        match command {
            Command::Append(job) => {
                match self.append(group, &job.shard, job.producer, &job.records) {
                    Ok(outcome) => group.replies.push(Reply::Append(job.reply, outcome)),
                    Err(error) => {
                        let _ = job.reply.send(Err(error));
                    }
                }
            }
            Command::Trim {
                shard,
                chunks,
                until,
                removed_bytes,
                reply,
            } => {
                let keyspace = group.engine.shard(&shard).and_then(|keyspace| {
                    self.load_chunk_counts(&group.engine, shard.stream_id)?;
                    Ok(keyspace)
                });
                let keyspace = match keyspace {
                    Ok(keyspace) => keyspace,
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        return;
                    }
                };
                let state = Self::staged_state(&mut group.shards, &shard);
                let until = until.min(state.next_sequence);
                for summary in chunks {
                    // Each key was written once, so a weak tombstone suffices
                    // and vanishes with the value at compaction.
                    group
                        .batch
                        .remove_weak(&keyspace, chunk::summary_key(summary.first_sequence));
                    *group
                        .chunk_count_changes
                        .entry((shard.stream_id, summary.location.segment))
                        .or_default() -= 1;
                }
                let removed_records = until.saturating_sub(state.first_sequence);
                state.records = state.records.saturating_sub(removed_records);
                state.bytes = state.bytes.saturating_sub(removed_bytes);
                state.first_sequence = state.first_sequence.max(until);
                group.replies.push(Reply::Unit(reply));
            }
            Command::Checkpoint {
                key,
                sequence,
                reply,
            } => {
                group
                    .batch
                    .insert(&group.engine.checkpoints, key, sequence.to_le_bytes());
                group.replies.push(Reply::Unit(reply));
            }
            Command::Processing { commit, reply } => match self.apply_processing(group, commit) {
                Ok(()) => {
                    group.moves_cursors = true;
                    group.replies.push(Reply::Unit(reply));
                }
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
            },
            Command::DropStream { .. } | Command::Sync | Command::Stop => {
                unreachable!("handled by run")
            }
        }
    }

    fn append(
        &mut self,
        group: &mut Group,
        shard: &Arc<Shard>,
        producer: Option<ProducerStamp>,
        records: &[AppendRecord],
    ) -> Result<AppendOutcome> {
        if shard.stream_is_deleted() {
            return Err(StorageError::StreamNotFound {
                name: shard.stream_name.clone(),
            });
        }
        let keyspace = group.engine.shard(shard)?;
        let count = records.len() as u32;
        let window_max = self.config.producer_dedup_batches_max;
        if let Some(stamp) = producer {
            let window = self.dedup_window(&group.engine, shard, stamp.producer_id)?;
            if let Some(entry) = window.find(stamp.batch_sequence) {
                return Ok(AppendOutcome {
                    first_sequence: entry.first_sequence,
                    count: entry.count,
                    duplicate: true,
                });
            }
            if window.is_too_old(stamp.batch_sequence, window_max) {
                return Err(StorageError::StaleProducerBatch {
                    producer_id: stamp.producer_id,
                    batch_sequence: stamp.batch_sequence,
                    window: window_max,
                });
            }
        }

        let state = Self::staged_state(&mut group.shards, shard);
        let first_sequence = state.next_sequence;
        let timestamp_ms = now_ms().max(state.last_timestamp_ms);
        let chunk_bytes_max = self.config.chunk_bytes_max;
        for record in records {
            let (_, chunk) = group
                .chunks
                .entry((shard.stream_id, shard.index))
                .or_insert_with(|| {
                    let builder = ChunkBuilder::new(state.next_sequence, timestamp_ms);
                    (keyspace.clone(), builder)
                });
            chunk.push(timestamp_ms, &record.partition_key, &record.data);
            if chunk.len() >= chunk_bytes_max {
                let key = (shard.stream_id, shard.index);
                if let Some((keyspace, chunk)) = group.chunks.remove(&key) {
                    group.full_chunks.push((key, keyspace, chunk));
                }
            }
            let record_bytes = (record.partition_key.len() + record.data.len()) as u64;
            state.bytes += record_bytes;
            state.bytes_appended += record_bytes;
            state.next_sequence += 1;
        }
        state.records += u64::from(count);
        state.last_timestamp_ms = timestamp_ms;

        if let Some(stamp) = producer {
            let entry = DedupEntry {
                batch_sequence: stamp.batch_sequence,
                first_sequence,
                count,
            };
            let window = self.dedup_window(&group.engine, shard, stamp.producer_id)?;
            window.remember(entry, window_max);
            let encoded = window.encode();
            group.batch.insert(
                &group.engine.producers,
                layout::producer_key(shard.stream_id, shard.index, stamp.producer_id),
                encoded,
            );
        }
        Ok(AppendOutcome {
            first_sequence,
            count,
            duplicate: false,
        })
    }

    /// A processor's outputs, state changes, failures and cursor, all into
    /// the group's one batch: exactly once, whatever crashes when.
    fn apply_processing(&mut self, group: &mut Group, commit: ProcessingCommit) -> Result<()> {
        if let Some((deleted, _)) = commit
            .outputs
            .iter()
            .find(|(shard, _)| shard.stream_is_deleted())
        {
            return Err(StorageError::StreamNotFound {
                name: deleted.stream_name.clone(),
            });
        }
        for (shard, records) in &commit.outputs {
            self.append(group, shard, None, records)?;
        }
        let scope = layout::processor_shard_prefix(commit.processor_id, commit.shard);
        let processing = &group.engine.processing;
        for (key, value) in commit.state_writes {
            let mut full_key = scope.to_vec();
            full_key.extend_from_slice(&key);
            match value {
                Some(value) => group.batch.insert(&processing.state, full_key, value),
                None => group.batch.remove(&processing.state, full_key),
            }
        }
        for (sequence, reason) in commit.failures {
            let mut key = scope.to_vec();
            key.extend_from_slice(&sequence.to_be_bytes());
            group
                .batch
                .insert(&processing.failures, key, reason.into_bytes());
        }
        group
            .batch
            .insert(&processing.cursors, scope, commit.cursor.encode());
        Ok(())
    }

    fn dedup_window(
        &mut self,
        engine: &Engine,
        shard: &Shard,
        producer_id: u64,
    ) -> Result<&mut DedupWindow> {
        let cache_key = (shard.stream_id, shard.index, producer_id);
        let slot = match self.dedup.entry(cache_key) {
            Entry::Occupied(cached) => return Ok(cached.into_mut()),
            Entry::Vacant(slot) => slot,
        };
        let stored = engine.producers.get(layout::producer_key(
            shard.stream_id,
            shard.index,
            producer_id,
        ))?;
        let window = match stored {
            Some(value) => DedupWindow::decode(&value)?,
            None => DedupWindow::default(),
        };
        Ok(slot.insert(window))
    }

    /// Reads a stream's segment chunk counts, once.
    fn load_chunk_counts(&mut self, engine: &Engine, stream_id: u64) -> Result<()> {
        if self.segments.has_chunk_counts(stream_id) {
            return Ok(());
        }
        let mut counts = std::collections::BTreeMap::new();
        for entry in engine.meta.prefix(layout::segment_chunks_prefix(stream_id)) {
            let (key, value) = entry.into_inner()?;
            let (segment, count) = layout::decode_segment_chunks(&key, &value)?;
            counts.insert(segment, count);
        }
        self.segments
            .load_chunk_counts(stream_id, counts)
            .map_err(StorageError::Segment)
    }

    /// Writes the group's chunks to their streams' segments (synced, when
    /// every commit is) and puts their summaries and the segments' new
    /// chunk counts in the batch; returns those counts.
    fn store_chunks(&mut self, group: &mut Group) -> Result<Vec<((u64, u64), u64)>> {
        let open = std::mem::take(&mut group.chunks)
            .into_iter()
            .map(|(key, (keyspace, chunk))| (key, keyspace, chunk));
        let mut chunks: Vec<_> = std::mem::take(&mut group.full_chunks);
        chunks.extend(open);
        for ((stream_id, _), keyspace, chunk) in chunks {
            // Before the first append: reading them removes segments
            // without a count, which this group's would be until it commits.
            self.load_chunk_counts(&group.engine, stream_id)?;
            let (mut summary, value) = chunk.finish();
            let newest = || newest_chunk(&group.engine, stream_id);
            summary.location = self
                .segments
                .append(stream_id, &value, newest)
                .map_err(StorageError::Segment)?;
            group.batch.insert(
                &keyspace,
                chunk::summary_key(summary.first_sequence),
                summary.encode(),
            );
            *group
                .chunk_count_changes
                .entry((stream_id, summary.location.segment))
                .or_default() += 1;
        }
        if self.durability == Some(PersistMode::SyncData) {
            self.segments.sync().map_err(StorageError::Segment)?;
        }
        let mut counts = Vec::with_capacity(group.chunk_count_changes.len());
        for (&(stream_id, segment), &change) in &group.chunk_count_changes {
            let count = self
                .segments
                .chunk_count(stream_id, segment)
                .saturating_add_signed(change);
            let key = layout::segment_chunks_key(stream_id, segment);
            if count == 0 {
                group.batch.remove(&group.engine.meta, key);
            } else {
                let value = layout::encode_chunk_count(count);
                group.batch.insert(&group.engine.meta, key, value);
            }
            counts.push(((stream_id, segment), count));
        }
        Ok(counts)
    }

    fn commit(&mut self, mut group: Group) {
        if group.replies.is_empty() {
            return;
        }
        let started = Instant::now();
        let stored = self.store_chunks(&mut group);
        self.metrics.segment_write.observe(started.elapsed());
        let chunk_counts = match stored {
            Ok(chunk_counts) => chunk_counts,
            Err(error) => {
                // fjall is untouched; the next group's chunks overwrite
                // these. Writes are refused until the background thread
                // finds room and reopens storage, as after a failed journal
                // write (which also re-reads the cached dedup windows, some
                // of which claim batches of this group).
                self.segments.abandoned();
                let (message, disk_full) = match &error {
                    StorageError::Segment(io) => describe_io_failure(io),
                    StorageError::Engine(engine) => describe_failure(engine),
                    other => (other.to_string(), false),
                };
                tracing::error!(%message, "writing records to a segment failed; the batch's requests get an error");
                self.space.engine_failed(&message);
                fail_replies(group.replies, &message, disk_full);
                return;
            }
        };
        for (shard, state) in group.shards.values() {
            group.batch.insert(
                &group.engine.meta,
                layout::shard_state_key(shard.stream_id, shard.index),
                state.encode(),
            );
        }
        // The cursors become readable in fjall as the batch commits, the
        // outputs only once their shards' states are published below.
        let visibility = group
            .moves_cursors
            .then(|| self.visibility.write().unwrap_or_else(|p| p.into_inner()));
        let started = Instant::now();
        let committed = group.batch.commit();
        self.metrics.journal_commit.observe(started.elapsed());
        match committed {
            Ok(()) => {
                self.segments.committed(&chunk_counts);
                for (shard, state) in group.shards.into_values() {
                    self.space.changed(shard.state().bytes, state.bytes);
                    shard.publish(state);
                }
                drop(visibility);
                for reply in group.replies {
                    match reply {
                        Reply::Append(reply, outcome) => {
                            let _ = reply.send(Ok(outcome));
                        }
                        Reply::Unit(reply) => {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                self.segments.remove_emptied();
            }
            Err(error) => {
                tracing::error!(%error, "group commit failed; the batch's requests get an error");
                // fjall takes no more writes; writes are refused until the
                // background thread reopens it, and the cached dedup windows
                // (which may claim batches that never reached the disk) are
                // re-read from the reopened engine.
                let (message, disk_full) = describe_failure(&error);
                self.space.engine_failed(&message);
                self.segments.abandoned();
                fail_replies(group.replies, &message, disk_full);
            }
        }
    }

    fn sync(&mut self, engine: &Engine) {
        self.last_sync = Instant::now();
        let synced = self
            .segments
            .sync()
            .map_err(|error| error.to_string())
            .and_then(|()| {
                (engine.db.persist(PersistMode::SyncData)).map_err(|error| error.to_string())
            });
        if let Err(error) = synced {
            tracing::error!(%error, "periodic sync failed");
        }
    }

    fn drop_stream(&mut self, engine: &Engine, stream: &Stream) -> Result<()> {
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(&engine.meta, layout::stream_meta_key(&stream.name));
        for shard in &stream.shards {
            batch.remove(
                &engine.meta,
                layout::shard_state_key(stream.id, shard.index),
            );
            batch.remove(
                &engine.meta,
                layout::shard_keyspace_key(stream.id, shard.index),
            );
            super::engine::empty_shard(&mut batch, &engine.shard(shard)?)?;
            let prefix = layout::producer_key(stream.id, shard.index, 0);
            for entry in engine.producers.prefix(&prefix[..12]) {
                batch.remove(&engine.producers, entry.key()?);
            }
        }
        let mut checkpoint_prefix = stream.name.as_bytes().to_vec();
        checkpoint_prefix.push(0);
        for entry in engine.checkpoints.prefix(&checkpoint_prefix) {
            batch.remove(&engine.checkpoints, entry.key()?);
        }
        let prefixes = super::catalog::stream_record_prefixes(stream.id);
        let segment_prefix = layout::segment_chunks_prefix(stream.id);
        for prefix in prefixes.iter().chain([&segment_prefix]) {
            for entry in engine.meta.prefix(prefix) {
                batch.remove(&engine.meta, entry.key()?);
            }
        }
        batch.commit()?;
        self.dedup
            .retain(|(stream_id, _, _), _| *stream_id != stream.id);
        if let Err(error) = self.segments.remove_stream(stream.id) {
            tracing::warn!(%error, stream = %stream.name, "removing a deleted stream's segments failed; removed at the next start");
        }
        for shard in &stream.shards {
            self.space.changed(shard.state().bytes, 0);
            engine.retire_shard(shard);
            // Wake subscribers and workers waiting on the tip: they find
            // the stream deleted and stop.
            shard.tip.send_modify(|_| ());
        }
        Ok(())
    }
}

/// Where the stream's newest committed chunk is: the end of its log.
fn newest_chunk(engine: &Engine, stream_id: u64) -> std::io::Result<Option<chunk::ChunkLocation>> {
    let mut newest = None;
    for keyspace in engine.stream_shards(stream_id) {
        let last = chunk::last_summary(&keyspace).map_err(std::io::Error::other)?;
        newest = newest.max(last.map(|summary| summary.location));
    }
    Ok(newest)
}

/// Answers a failed group's requests.
fn fail_replies(replies: Vec<Reply>, message: &str, disk_full: bool) {
    let error = || {
        if disk_full {
            StorageError::StorageFull {
                reason: format!(
                    "the disk is full ({message}); the request may or may not \
                     have been stored, so retry it with the same producer stamp"
                ),
            }
        } else {
            StorageError::CommitFailed {
                message: message.to_owned(),
            }
        }
    };
    for reply in replies {
        match reply {
            Reply::Append(reply, _) => {
                let _ = reply.send(Err(error()));
            }
            Reply::Unit(reply) => {
                let _ = reply.send(Err(error()));
            }
        }
    }
}

/// What a failed write says, and whether it failed for lack of space
/// (rather than, say, a failing disk): the difference between
/// `StorageFull` and `CommitFailed`.
fn describe_failure(error: &fjall::Error) -> (String, bool) {
    match error {
        fjall::Error::Io(io) | fjall::Error::Storage(fjall::LsmError::Io(io)) => {
            describe_io_failure(io)
        }
        other => (other.to_string(), false),
    }
}

fn describe_io_failure(error: &std::io::Error) -> (String, bool) {
    use std::io::ErrorKind;
    let disk_full = matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    );
    (error.to_string(), disk_full)
}
