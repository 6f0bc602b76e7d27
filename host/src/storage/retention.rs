//! Retention: removes a stream's oldest records once they are older than its
//! age limit or its shards hold more than its byte limit.
//!
//! Runs on the storage background thread every
//! `retention_check_interval_ms`. It works out what to remove from the
//! chunk summaries and removes whole chunks: a chunk goes once its newest
//! record is older than the age limit, or when the shard would still hold
//! its byte limit without it: a record outlives its limit until the rest of
//! its chunk does, so a shard holds up to one chunk (`chunk_bytes_max`)
//! more than its share of the byte limit. It
//! hands the writer about `trim_commit_records_max` records at a time, so
//! appends queued behind a trim wait for one small commit, not for all of
//! it. The byte limit applies to each shard's share (limit / shard count),
//! counting partition keys and data; disk use exceeds it by the LSM's
//! overhead and the journal (see the operator docs).

use std::sync::Arc;

use super::chunk::{self, ChunkSummary};
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
    let cutoff_ms = age_ms.map(|age_ms| now_ms().saturating_sub(age_ms));
    let mut excess_bytes = bytes_max.map_or(0, |max| state.bytes.saturating_sub(max));
    let expired =
        |summary: &ChunkSummary| cutoff_ms.is_some_and(|cutoff| summary.last_timestamp_ms < cutoff);

    let records_max = storage.config.trim_commit_records_max.max(1) as u64;
    let keyspace = storage.engine()?.shard(shard)?;
    let (mut chunks, mut until, mut removed_bytes) = (Vec::new(), state.first_sequence, 0);
    let mut trimmed_to = state.first_sequence;
    for summary in chunk::summaries_from(&keyspace, state.first_sequence) {
        let summary = summary?;
        let over_budget = excess_bytes > 0 && excess_bytes >= summary.record_bytes;
        if summary.first_sequence >= state.next_sequence || !(expired(&summary) || over_budget) {
            break;
        }
        chunks.push(summary.first_sequence);
        until = summary.end();
        removed_bytes += summary.record_bytes;
        excess_bytes = excess_bytes.saturating_sub(summary.record_bytes);
        if until - trimmed_to >= records_max {
            trim(
                storage,
                shard,
                std::mem::take(&mut chunks),
                until,
                removed_bytes,
            )?;
            (trimmed_to, removed_bytes) = (until, 0);
        }
    }
    if !chunks.is_empty() {
        trim(storage, shard, chunks, until, removed_bytes)?;
    }
    Ok(())
}

fn trim(
    storage: &Storage,
    shard: &Arc<Shard>,
    chunks: Vec<u64>,
    until: u64,
    removed_bytes: u64,
) -> Result<()> {
    storage.trim_blocking(shard.clone(), chunks, until, removed_bytes)?;
    tracing::debug!(stream = %shard.stream_name, shard = shard.index, until, "retention trimmed records");
    Ok(())
}
