//! Retention: removes a stream's oldest records once they are older than its
//! age limit or the stream holds more than its byte limit.
//!
//! Runs on the storage background thread every
//! `retention_check_interval_ms`. It works out what to remove from the
//! chunk summaries and removes whole chunks: a chunk goes once its newest
//! record is older than the age limit, or when the stream would still hold
//! its byte limit without it. The byte limit counts the partition keys and
//! data of all the stream's shards and removes the stream's oldest chunks
//! first, in the order they were written to its log, whichever shard they
//! belong to — so the segment files empty in order and the disk holds
//! about the limit (plus the segment being emptied). A record outlives its
//! limit until the rest of its chunk does: a stream holds up to one chunk
//! (`chunk_bytes_max`) more than its byte limit. Retention hands the writer
//! about `trim_commit_records_max` records of a shard at a time, so appends
//! queued behind a trim wait for one small commit, not for all of it.

use std::iter::Peekable;
use std::sync::Arc;

use super::chunk::{self, ChunkSummary};
use super::{Result, Shard, Storage, Stream, now_ms};

pub(super) fn enforce(storage: &Storage) {
    for stream in storage.all_streams() {
        let retention = stream.retention();
        if let Some(age_ms) = retention.age_ms {
            for shard in &stream.shards {
                if stream.is_deleted() {
                    break;
                }
                if let Err(error) = enforce_age(storage, shard, age_ms) {
                    tracing::warn!(stream = %stream.name, shard = shard.index, %error, "retention by age failed; will retry");
                }
            }
        }
        if let Some(bytes_max) = retention.bytes
            && !stream.is_deleted()
            && let Err(error) = enforce_bytes(storage, &stream, bytes_max)
        {
            tracing::warn!(stream = %stream.name, %error, "retention by bytes failed; will retry");
        }
    }
}

/// Removes the shard's chunks whose newest record is older than `age_ms`.
fn enforce_age(storage: &Storage, shard: &Arc<Shard>, age_ms: u64) -> Result<()> {
    let state = shard.state();
    let cutoff_ms = now_ms().saturating_sub(age_ms);
    let keyspace = storage.engine()?.shard(shard)?;
    let mut trim = Trim::new(shard.clone());
    for summary in chunk::summaries_from(&keyspace, state.first_sequence) {
        let summary = summary?;
        if summary.first_sequence >= state.next_sequence || summary.last_timestamp_ms >= cutoff_ms {
            break;
        }
        trim.push(storage, summary)?;
    }
    trim.finish(storage)
}

/// Removes the stream's oldest chunks, in log order, while it would still
/// hold `bytes_max` without them.
fn enforce_bytes(storage: &Storage, stream: &Stream, bytes_max: u64) -> Result<()> {
    let states: Vec<_> = stream.shards.iter().map(|shard| shard.state()).collect();
    let stored: u64 = states.iter().map(|state| state.bytes).sum();
    let mut excess_bytes = stored.saturating_sub(bytes_max);
    if excess_bytes == 0 {
        return Ok(());
    }
    let engine = storage.engine()?;
    let keyspaces = stream
        .shards
        .iter()
        .map(|shard| engine.shard(shard))
        .collect::<Result<Vec<_>>>()?;
    drop(engine);
    // Each shard's chunks in order, and what is being removed of it.
    let mut shards: Vec<(Peekable<_>, Trim)> = keyspaces
        .iter()
        .zip(&states)
        .zip(&stream.shards)
        .map(|((keyspace, state), shard)| {
            let next_sequence = state.next_sequence;
            let summaries = chunk::summaries_from(keyspace, state.first_sequence)
                .take_while(move |summary| {
                    summary
                        .as_ref()
                        .map_or(true, |summary| summary.first_sequence < next_sequence)
                })
                .peekable();
            (summaries, Trim::new(shard.clone()))
        })
        .collect();
    loop {
        // The shard whose next chunk was written first (an error first,
        // to be reported).
        let mut oldest = None;
        for (index, (summaries, _)) in shards.iter_mut().enumerate() {
            let order = match summaries.peek() {
                None => continue,
                Some(Err(_)) => None,
                Some(Ok(summary)) => Some(summary.location),
            };
            if oldest.is_none_or(|(_, oldest_order)| order < oldest_order) {
                oldest = Some((index, order));
            }
        }
        let Some((index, _)) = oldest else { break };
        let (summaries, trim) = &mut shards[index];
        let Some(summary) = summaries.next().transpose()? else {
            break;
        };
        if excess_bytes < summary.record_bytes {
            break;
        }
        excess_bytes -= summary.record_bytes;
        trim.push(storage, summary)?;
    }
    for (_, trim) in shards {
        trim.finish(storage)?;
    }
    Ok(())
}

/// A shard's chunks being removed, handed to the writer
/// `trim_commit_records_max` records at a time.
struct Trim {
    shard: Arc<Shard>,
    chunks: Vec<ChunkSummary>,
    /// The first sequence after the chunks handed over so far.
    trimmed_to: u64,
    /// The first sequence after `chunks`.
    until: u64,
    removed_bytes: u64,
}

impl Trim {
    fn new(shard: Arc<Shard>) -> Self {
        let first_sequence = shard.state().first_sequence;
        Self {
            shard,
            chunks: Vec::new(),
            trimmed_to: first_sequence,
            until: first_sequence,
            removed_bytes: 0,
        }
    }

    fn push(&mut self, storage: &Storage, summary: ChunkSummary) -> Result<()> {
        self.until = summary.end();
        self.removed_bytes += summary.record_bytes;
        self.chunks.push(summary);
        let records_max = storage.config.trim_commit_records_max.max(1) as u64;
        if self.until - self.trimmed_to >= records_max {
            self.hand_over(storage)?;
        }
        Ok(())
    }

    fn hand_over(&mut self, storage: &Storage) -> Result<()> {
        let chunks = std::mem::take(&mut self.chunks);
        let removed_bytes = std::mem::take(&mut self.removed_bytes);
        storage.trim_blocking(self.shard.clone(), chunks, self.until, removed_bytes)?;
        self.trimmed_to = self.until;
        tracing::debug!(stream = %self.shard.stream_name, shard = self.shard.index, until = self.until, "retention trimmed records");
        Ok(())
    }

    fn finish(mut self, storage: &Storage) -> Result<()> {
        if self.chunks.is_empty() {
            return Ok(());
        }
        self.hand_over(storage)
    }
}
