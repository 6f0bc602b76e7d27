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

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

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
    /// Keyspaces of deleted shards, emptied and kept for the next shards
    /// created. fjall (3.1) keeps every version of its own list of
    /// keyspaces on disk until the database closes, so each keyspace it
    /// creates or deletes leaves a copy of that list behind: a create and
    /// a delete ~1.1 KiB per keyspace it holds (4.5 MiB with 4 096; see
    /// BENCHMARKS.md). Reused keyspaces make deleting a stream and
    /// creating another cost nothing there; `shards_max` bounds what
    /// creating them can leave.
    spare_shards: Mutex<Vec<Keyspace>>,
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
            spare_shards: Mutex::default(),
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
    /// or is of the layout this one reads as it is with this one.
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
            None => layout::LAYOUT_VERSION_UPGRADABLE,
        };
        if found == expected {
            return Ok(());
        }
        if found == layout::LAYOUT_VERSION_UPGRADABLE {
            self.meta
                .insert(layout::LAYOUT_VERSION_KEY, expected.to_le_bytes())?;
            self.db.persist(PersistMode::SyncAll)?;
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

    /// Opens (or creates) a shard's keyspace and remembers it: the one
    /// recorded for the shard when it was given a spare, else the one
    /// named after it.
    pub fn open_shard(&self, stream_id: u64, index: u32) -> Result<Keyspace> {
        let name = match self
            .meta
            .get(layout::shard_keyspace_key(stream_id, index))?
        {
            Some(name) => String::from_utf8(name.to_vec()).map_err(|_| StorageError::Corrupt {
                what: "shard keyspace name",
            })?,
            None => layout::shard_keyspace_name(stream_id, index),
        };
        let keyspace = self.db.keyspace(&name, || {
            KeyspaceCreateOptions::default().max_memtable_size(self.memtable_bytes_max)
        })?;
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((stream_id, index), keyspace.clone());
        Ok(keyspace)
    }

    /// Up to `count` empty keyspaces of deleted shards, for a stream being
    /// created; [`Engine::keep_spare_shards`] takes back those not used.
    pub fn take_spare_shards(&self, count: usize) -> Vec<Keyspace> {
        let mut spares = self.spare_shards.lock().unwrap_or_else(|p| p.into_inner());
        let keep = spares.len().saturating_sub(count);
        spares.split_off(keep)
    }

    pub fn keep_spare_shards(&self, keyspaces: Vec<Keyspace>) {
        self.spare_shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(keyspaces);
    }

    /// Makes every shard keyspace no shard uses a spare, emptied: those
    /// of streams deleted just before a crash, or before this engine was
    /// opened. Called once the streams' shards are open.
    pub fn collect_spare_shards(&self) -> Result<()> {
        let used: HashSet<String> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|keyspace| keyspace.name().to_string())
            .collect();
        let mut spares = Vec::new();
        for name in self.db.list_keyspace_names() {
            if !layout::is_shard_keyspace_name(&name) || used.contains(&*name) {
                continue;
            }
            let keyspace = self.db.keyspace(&name, KeyspaceCreateOptions::default)?;
            if !keyspace.is_empty()? {
                let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
                empty_shard(&mut batch, &keyspace)?;
                batch.commit()?;
            }
            spares.push(keyspace);
        }
        *self.spare_shards.lock().unwrap_or_else(|p| p.into_inner()) = spares;
        Ok(())
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

    /// Keeps a deleted shard's keyspace, emptied in the deleting commit,
    /// as a spare.
    pub fn retire_shard(&self, shard: &Shard) {
        let removed = self
            .shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(shard.stream_id, shard.index));
        if let Some(keyspace) = removed {
            self.keep_spare_shards(vec![keyspace]);
        }
    }

    /// Seals every non-empty memtable so fjall flushes it (sealing an empty
    /// one does nothing).
    pub fn seal_memtables(&self) -> Result<()> {
        let mut shards: Vec<Keyspace> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        // Spares hold the removals that emptied them.
        shards.extend(
            self.spare_shards
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
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

/// Adds the removal of everything in a shard's keyspace to `batch`. (Not
/// `Keyspace::clear`: a cleared keyspace has no tables, and fjall then
/// keeps every journal that held its writes, for good.)
pub(super) fn empty_shard(batch: &mut fjall::OwnedWriteBatch, keyspace: &Keyspace) -> Result<()> {
    for entry in keyspace.iter() {
        batch.remove(keyspace, entry.key()?);
    }
    Ok(())
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

    /// A data directory holding one stream, closed.
    fn with_a_stream(data: &Path, config: &StorageConfig) {
        let storage = Storage::open(data, config.clone()).expect("open");
        storage
            .create_stream("clicks", 1, Retention::default())
            .expect("create");
        storage.shutdown().expect("shutdown");
    }

    #[test]
    fn a_data_directory_of_another_layout_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("dir");
        let (data, config) = (dir.path().join("data"), StorageConfig::default());
        with_a_stream(&data, &config);
        assert!(Storage::open(&data, config.clone()).is_ok(), "reopens");

        // Layout 1 did not stamp itself; a newer Weir stamps a higher one.
        for (stamp, expected_found) in [(None, 1), (Some(2), 2), (Some(5u32), 5)] {
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

    /// A layout 3 directory (before shards could reuse keyspaces) is read
    /// as it is and stamped 4, so an older Weir refuses it from then on.
    #[test]
    fn a_layout_3_directory_opens_and_is_stamped_4() {
        let dir = tempfile::tempdir().expect("dir");
        let (data, config) = (dir.path().join("data"), StorageConfig::default());
        with_a_stream(&data, &config);
        let stamp = |version: Option<u32>| {
            let engine = Engine::open(&data, &config, 0).expect("engine");
            if let Some(version) = version {
                engine
                    .meta
                    .insert(layout::LAYOUT_VERSION_KEY, version.to_le_bytes())
                    .expect("stamp");
                engine.db.persist(PersistMode::SyncAll).expect("persist");
            }
            engine
                .meta
                .get(layout::LAYOUT_VERSION_KEY)
                .expect("read")
                .map(|value| u32::from_le_bytes(value[..].try_into().expect("u32")))
        };
        stamp(Some(3));
        let storage = Storage::open(&data, config.clone()).expect("a layout 3 directory opens");
        assert!(storage.stream("clicks").is_ok());
        storage.shutdown().expect("shutdown");
        drop(storage);
        assert_eq!(stamp(None), Some(layout::LAYOUT_VERSION));
    }
}
