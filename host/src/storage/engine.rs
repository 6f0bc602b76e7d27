//! The fjall database and every keyspace handle, kept in one place so they
//! can all be let go of together.
//!
//! fjall stops accepting writes for good after a failed journal write (it
//! "poisons" itself: the disk filled up, an I/O error). The way back is to
//! drop the database and open it again, and that needs every handle gone:
//! fjall holds a lock file until the last one drops. So the handles live
//! here and nowhere else; users borrow the engine for one operation
//! ([`EngineSlot::get`]) and recovery ([`super::recovery`]) swaps
//! it for a freshly opened one once they have let go.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::processing::ProcessingKeyspaces;
use super::{Result, Shard, StorageError, layout};
use crate::config::StorageConfig;

pub(super) struct Engine {
    pub db: Database,
    pub meta: Keyspace,
    pub producers: Keyspace,
    pub checkpoints: Keyspace,
    pub processing: ProcessingKeyspaces,
    /// One keyspace per shard, by (stream id, shard index).
    shards: RwLock<HashMap<(u64, u32), Keyspace>>,
    memtable_bytes_max: u64,
    /// Counts reopenings, so caches of what the engine held (the writer's
    /// dedup windows) can tell they are stale.
    pub generation: u64,
}

impl Engine {
    /// Opens the database and the fixed keyspaces; shards are opened with
    /// [`Engine::open_shard`].
    pub fn open(dir: &Path, config: &StorageConfig, generation: u64) -> Result<Self> {
        let db = Database::builder(dir)
            .cache_size(config.block_cache_bytes)
            .max_journaling_size(config.journal_bytes_max)
            .open()?;
        let keyspace = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Self {
            meta: keyspace(layout::META_KEYSPACE)?,
            producers: keyspace(layout::PRODUCERS_KEYSPACE)?,
            checkpoints: keyspace(layout::CHECKPOINTS_KEYSPACE)?,
            processing: ProcessingKeyspaces::open(&db)?,
            shards: RwLock::default(),
            memtable_bytes_max: config.memtable_bytes_max,
            generation,
            db,
        })
    }

    /// Creates a new database in `dir` so that a crash at any moment leaves
    /// either no `dir` or a complete one: it is made in a temporary
    /// directory next to `dir` (any leftover of an earlier attempt is
    /// removed first), synced, closed and renamed into place.
    pub fn create(dir: &Path, config: &StorageConfig) -> Result<()> {
        let partial = dir.with_extension("partial");
        let io = |error: std::io::Error| StorageError::Engine(error.into());
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io)?;
        }
        Self::open(&partial, config, 0)?
            .db
            .persist(PersistMode::SyncAll)?;
        std::fs::rename(&partial, dir).map_err(io)?;
        crate::files::sync_parent(dir).map_err(io)
    }

    /// Refuses a data directory written in another layout; stamps one
    /// that holds no streams yet (new, or made before layouts were stamped)
    /// with this one.
    pub fn check_layout(&self, dir: &Path) -> Result<()> {
        let expected = layout::LAYOUT_VERSION;
        let found = match self.meta.get(layout::LAYOUT_VERSION_KEY)? {
            Some(value) => {
                u32::from_le_bytes(value[..].try_into().map_err(|_| StorageError::Corrupt {
                    what: "layout version",
                })?)
            }
            // Layout 1 did not stamp itself.
            None if self
                .meta
                .prefix(layout::STREAM_META_PREFIX)
                .next()
                .is_some() =>
            {
                1
            }
            None => {
                self.meta
                    .insert(layout::LAYOUT_VERSION_KEY, expected.to_le_bytes())?;
                self.db.persist(PersistMode::SyncAll)?;
                expected
            }
        };
        if found == expected {
            return Ok(());
        }
        Err(StorageError::UnsupportedLayout {
            dir: dir.to_owned(),
            found,
            expected,
            hint: match found {
                1 => "it was written by an older Weir that stored one key per record",
                2 => "it was written by an older Weir that kept segment files per shard",
                _ => "it was written by a newer Weir",
            },
        })
    }

    /// Opens (or creates) a shard's keyspace and remembers it.
    pub fn open_shard(&self, stream_id: u64, index: u32) -> Result<Keyspace> {
        let keyspace = self
            .db
            .keyspace(&layout::shard_keyspace_name(stream_id, index), || {
                KeyspaceCreateOptions::default().max_memtable_size(self.memtable_bytes_max)
            })?;
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((stream_id, index), keyspace.clone());
        Ok(keyspace)
    }

    /// The shard's keyspace; gone once its stream is deleted.
    pub fn shard(&self, shard: &Shard) -> Result<Keyspace> {
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(shard.stream_id, shard.index))
            .cloned()
            .ok_or_else(|| StorageError::StreamNotFound {
                name: shard.stream_name.clone(),
            })
    }

    /// The keyspaces of a stream's shards.
    pub fn stream_shards(&self, stream_id: u64) -> Vec<Keyspace> {
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((id, _), _)| *id == stream_id)
            .map(|(_, keyspace)| keyspace.clone())
            .collect()
    }

    /// Deletes a shard's keyspace and everything in it.
    pub fn delete_shard(&self, shard: &Shard) -> Result<()> {
        let removed = self
            .shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(shard.stream_id, shard.index));
        if let Some(keyspace) = removed {
            self.db.delete_keyspace(keyspace)?;
        }
        Ok(())
    }

    /// Seals every non-empty memtable so fjall flushes it (sealing an empty
    /// one does nothing).
    pub fn seal_memtables(&self) -> Result<()> {
        let shards: Vec<Keyspace> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let fixed = [&self.meta, &self.producers, &self.checkpoints];
        for keyspace in fixed
            .into_iter()
            .chain(self.processing.all())
            .chain(&shards)
        {
            keyspace.rotate_memtable()?;
        }
        Ok(())
    }

    /// Fails once fjall has stopped accepting writes (it checks its poison
    /// flag first, and has nothing buffered to write when healthy).
    pub fn check_writable(&self) -> Result<()> {
        self.db.persist(PersistMode::Buffer)?;
        Ok(())
    }
}

/// Where the current engine lives; empty while it is being reopened.
#[derive(Clone, Default)]
pub(super) struct EngineSlot(Arc<RwLock<Option<Arc<Engine>>>>);

impl EngineSlot {
    /// The engine, to use for one operation and then let go of: recovery
    /// waits for every borrower before it reopens.
    pub fn get(&self) -> Result<Arc<Engine>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(StorageError::Recovering)
    }

    pub fn take(&self) -> Option<Arc<Engine>> {
        self.0.write().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn put(&self, engine: Arc<Engine>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(engine);
    }
}

#[cfg(test)]
mod tests {
    use weir_proto::Retention;

    use super::*;
    use crate::storage::Storage;

    #[test]
    fn a_data_directory_of_another_layout_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let config = StorageConfig::default();
        let storage = Storage::open(&data, config.clone()).expect("open");
        storage
            .create_stream("clicks", 1, Retention::default())
            .expect("create");
        storage.shutdown().expect("shutdown");
        drop(storage);
        assert!(Storage::open(&data, config.clone()).is_ok(), "reopens");

        // Layout 1 did not stamp itself; a newer Weir stamps a higher one.
        for (stamp, expected_found) in [(None, 1), (Some(2), 2), (Some(4u32), 4)] {
            let engine = Engine::open(&data, &config, 0).expect("engine");
            match stamp {
                Some(version) => engine
                    .meta
                    .insert(layout::LAYOUT_VERSION_KEY, version.to_le_bytes()),
                None => engine.meta.remove(layout::LAYOUT_VERSION_KEY),
            }
            .expect("restamp");
            engine.db.persist(PersistMode::SyncAll).expect("persist");
            drop(engine);

            let error = Storage::open(&data, config.clone()).err().expect("refused");
            assert!(
                matches!(error, StorageError::UnsupportedLayout { found, .. } if found == expected_found),
                "{error}"
            );
            assert!(error.to_string().contains("move it aside"), "{error}");
        }
    }
}
