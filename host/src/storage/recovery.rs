//! Getting storage back after fjall stopped taking writes (a full disk, an
//! I/O error): once the disk has room, the engine is dropped when nobody
//! uses it and opened again ([`super::engine`] explains why it must be
//! whole).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::stream::open_shard;
use super::{Result, Storage, StorageError};

/// How long recovery waits for operations still using the failed engine
/// before it gives up until the next attempt.
const REOPEN_WAIT_MAX: Duration = Duration::from_secs(10);
/// How often recovery checks whether the failed engine is let go of.
const REOPEN_POLL_STEP: Duration = Duration::from_millis(1);

/// Reopens the engine if fjall stopped taking writes and the disk has
/// room again. Runs on the background thread after each disk sample.
pub(super) fn recover(storage: &Storage) {
    if storage.space.engine_failure().is_none() {
        // Control-plane writes (tokens, plugins) go to fjall directly,
        // so a failure can come from them too: ask fjall itself.
        let Err(error) = storage.engine().and_then(|engine| engine.check_writable()) else {
            return;
        };
        storage.space.engine_failed(&error.to_string());
    }
    if !storage.space.disk_has_room() {
        return;
    }
    let _admin = storage.admin.lock().unwrap_or_else(|p| p.into_inner());
    match reopen(storage) {
        Ok(()) => {
            storage.space.engine_recovered();
            tracing::info!("storage reopened after a failed write; writes resume");
        }
        Err(error) => {
            tracing::warn!(%error, "reopening storage failed; trying again in a moment");
        }
    }
}

/// Drops the engine once nobody uses it, opens the database again
/// (fjall replays its journal) and re-reads every shard's state, which
/// may include the write that failed: fjall retries buffered journal
/// bytes when it closes.
fn reopen(storage: &Storage) -> Result<()> {
    if let Some(failed) = storage.engine.take() {
        let deadline = Instant::now() + REOPEN_WAIT_MAX;
        while Arc::strong_count(&failed) > 1 {
            if Instant::now() >= deadline {
                storage.engine.put(failed);
                return Err(StorageError::Recovering);
            }
            std::thread::sleep(REOPEN_POLL_STEP);
        }
    }
    // Only the background thread reopens, so load-then-store is safe.
    let generation = storage.reopenings.load(Ordering::Relaxed) + 1;
    let engine = Engine::open(&storage.dir, &storage.config, generation)?;
    let mut stored_bytes = 0;
    for stream in storage.all_streams() {
        for shard in &stream.shards {
            let state = open_shard(&engine, stream.id, shard.index)?;
            stored_bytes += state.bytes;
            shard.publish(state);
        }
    }
    engine.collect_spare_shards()?;
    storage.space.reset_stored_bytes(stored_bytes);
    storage.engine.put(Arc::new(engine));
    storage.reopenings.store(generation, Ordering::Relaxed);
    Ok(())
}
