//! Retention: removes a stream's oldest records once they are older than its
//! age limit or its shards hold more than its byte limit.
//!
//! Runs on the storage background thread every
//! `retention_check_interval_ms`. It works out what to remove by reading,
//! then hands the writer chunks of at most `trim_chunk_records_max` records,
//! so appends queued behind a trim wait for one small commit, not for all of
//! it. The byte limit applies to each shard's share (limit / shard count),
//! counting partition keys and data; disk use exceeds it by the LSM's
//! overhead and the journal (see the operator docs).

use std::sync::Arc;

use super::layout::{self, RECORD_HEADER_BYTES};
use super::{Result, Shard, Storage, now_ms};

pub(super) fn enforce(storage: &Storage) {
    for stream in storage.all_streams() {
        let retention = stream.retention();
        if retention.age_ms.is_none() && retention.bytes.is_none() {
            continue;
        }
        let shard_bytes_max = retention.bytes.map(|b| b / stream.shards.len() as u64);
        for shard in &stream.shards {
            if stream.is_deleted() {
                break;
            }
            if let Err(error) = enforce_shard(storage, shard, retention.age_ms, shard_bytes_max) {
                tracing::warn!(stream = %stream.name, shard = shard.index, %error, "retention pass failed; will retry");
            }
        }
    }
}

fn enforce_shard(
    storage: &Storage,
    shard: &Arc<Shard>,
    age_ms: Option<u64>,
    bytes_max: Option<u64>,
) -> Result<()> {
    let state = shard.state();
    let mut until = state.first_sequence;
    if let Some(age_ms) = age_ms {
        let cutoff = now_ms().saturating_sub(age_ms);
        until = until.max(storage.sequence_at_time(shard, &state, cutoff)?);
    }
    let mut excess_bytes = bytes_max.map_or(0, |max| state.bytes.saturating_sub(max));

    let chunk_max = storage.config.trim_chunk_records_max.max(1) as u64;
    let mut first = state.first_sequence;
    loop {
        let mut chunk_end = first;
        let mut chunk_bytes = 0u64;
        let range = layout::sequence_key(first)..layout::sequence_key(state.next_sequence);
        for entry in storage.engine()?.shard(shard)?.range(range) {
            if chunk_end >= until && excess_bytes == 0 || chunk_end - first >= chunk_max {
                break;
            }
            let size = u64::from(entry.size()?).saturating_sub(RECORD_HEADER_BYTES as u64);
            chunk_bytes += size;
            excess_bytes = excess_bytes.saturating_sub(size);
            chunk_end += 1;
        }
        if chunk_end == first {
            return Ok(());
        }
        storage.trim_blocking(shard.clone(), chunk_end, chunk_bytes)?;
        tracing::debug!(stream = %shard.stream_name, shard = shard.index, until = chunk_end, "retention trimmed records");
        first = chunk_end;
    }
}
