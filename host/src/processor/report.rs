//! What describe, list, status and `/metrics` show of a processor: its
//! settings and per-shard progress, and its aggregate state, read from
//! storage (callers run these on the blocking pool).

use std::sync::{Arc, Mutex};

use weir_proto::admin::{ProcessorInfo, ShardProgress, StateEntry};

use super::definition::Definition;
use super::worker::Progress;
use super::{ProcessorError, WorkerHandle};
use crate::storage::Storage;

/// What reporting needs of a processor, taken under the registry's lock —
/// clones and shared handles, cheap — so the storage reads run after the
/// lock is let go.
pub(super) struct Snapshot {
    definition: Definition,
    progress: Vec<Arc<Mutex<Progress>>>,
    log_lines_dropped: u64,
}

impl Snapshot {
    pub(super) fn of(definition: &Definition, workers: &[WorkerHandle]) -> Self {
        Self {
            definition: definition.clone(),
            progress: workers.iter().map(|w| w.progress.clone()).collect(),
            log_lines_dropped: workers.first().map_or(0, |w| w.log.dropped_lines()),
        }
    }

    pub(super) fn definition(&self) -> &Definition {
        &self.definition
    }
}

pub(super) fn processor_info(
    storage: &Storage,
    snapshot: &Snapshot,
    with_shards: bool,
    state_bytes_max: u64,
) -> Result<ProcessorInfo, ProcessorError> {
    let definition = &snapshot.definition;
    let mut shards = Vec::new();
    if with_shards {
        let source = storage.stream(&definition.settings.source)?;
        for shard in &source.shards {
            let cursor = storage
                .processing()
                .cursor(definition.id, shard.index)?
                .unwrap_or_default();
            let progress = snapshot
                .progress
                .get(shard.index as usize)
                .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).clone());
            let status = match (&progress, definition.paused) {
                (_, true) => "paused".to_owned(),
                (Some(progress), false) => progress.status.to_owned(),
                (None, false) => "stopped".to_owned(),
            };
            let backlog = storage.backlog(shard, cursor.next_sequence)?;
            let (lag_records, lag_ms) = (backlog.records, backlog.age_ms());
            shards.push(ShardProgress {
                shard: shard.index,
                status,
                cursor: cursor.next_sequence,
                lag_records,
                lag_ms,
                records_in: cursor.records_in,
                records_out: cursor.records_out,
                fuel_used: cursor.fuel_used,
                records_failed: cursor.records_failed,
                state_keys: cursor.state.keys,
                state_bytes: cursor.state.bytes,
                last_error: progress.and_then(|p| p.last_error),
                failed_sequences: storage.processing().recent_failures(
                    definition.id,
                    shard.index,
                    10,
                )?,
            });
        }
    }
    Ok(ProcessorInfo {
        settings: definition.settings.clone(),
        plugin_sha256: definition.plugin_sha256.clone(),
        paused: definition.paused,
        dead_letter_stream: definition.dead_letter_stream.clone(),
        fuel_per_sec: definition.fuel_per_sec,
        fuel_per_batch_max: definition.fuel_per_batch_max,
        memory_bytes_max: definition.memory_bytes_max,
        state_bytes_max,
        log_lines_dropped: snapshot.log_lines_dropped,
        shards,
    })
}

/// State entries of processor `id` over its source stream's shards: `key`
/// in every shard, or every key starting with `prefix` (all keys if
/// neither), at most `limit` entries.
pub(super) fn state_entries(
    storage: &Storage,
    id: u64,
    source: &str,
    key: Option<&str>,
    prefix: Option<&str>,
    limit: usize,
) -> Result<Vec<StateEntry>, ProcessorError> {
    let source = storage.stream(source)?;
    let mut entries = Vec::new();
    for shard in &source.shards {
        let found = match key {
            Some(key) => storage
                .processing()
                .state_get(id, shard.index, key.as_bytes())?
                .map(|value| vec![(key.as_bytes().to_vec(), value)])
                .unwrap_or_default(),
            None => storage.processing().state_scan(
                id,
                shard.index,
                prefix.unwrap_or_default().as_bytes(),
                limit.saturating_sub(entries.len()),
            )?,
        };
        for (key, value) in found {
            let text = std::str::from_utf8(&value).ok();
            entries.push(StateEntry {
                shard: shard.index,
                key: String::from_utf8_lossy(&key).into_owned(),
                value: String::from_utf8_lossy(&value).into_owned(),
                value_hex: text
                    .is_none()
                    .then(|| value.iter().map(|b| format!("{b:02x}")).collect()),
            });
        }
        if entries.len() >= limit {
            break;
        }
    }
    Ok(entries)
}
