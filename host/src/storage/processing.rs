//! What processors and plugins keep in storage: plugin components and
//! metadata, processor definitions, and per (processor, shard) cursors,
//! state and failure records.
//!
//! Definitions are opaque bytes here (the plugin and processor modules
//! choose their encoding); the cursor, state writes, failures and outputs
//! of a batch are committed together by the writer ([`ProcessingCommit`]).
//! Reached through [`Storage::processing`].

use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::commands::Command;
use super::layout::{self, CursorState, StateSize};
use super::{AppendRecord, Result, Shard, Storage, StorageError};

pub(super) struct ProcessingKeyspaces {
    pub plugins: Keyspace,
    pub cursors: Keyspace,
    pub state: Keyspace,
    pub failures: Keyspace,
}

impl ProcessingKeyspaces {
    pub fn open(db: &Database) -> Result<Self> {
        Ok(Self {
            plugins: db.keyspace(layout::PLUGINS_KEYSPACE, KeyspaceCreateOptions::default)?,
            cursors: db.keyspace(layout::CURSORS_KEYSPACE, KeyspaceCreateOptions::default)?,
            state: db.keyspace(layout::STATE_KEYSPACE, KeyspaceCreateOptions::default)?,
            failures: db.keyspace(layout::FAILURES_KEYSPACE, KeyspaceCreateOptions::default)?,
        })
    }

    pub fn all(&self) -> [&Keyspace; 4] {
        [&self.plugins, &self.cursors, &self.state, &self.failures]
    }
}

/// One processor step in one shard: everything it changed, committed in one
/// atomic batch (and one group commit) with the new cursor.
pub struct ProcessingCommit {
    pub processor_id: u64,
    pub shard: u32,
    /// Records for the output stream, grouped by output shard.
    pub outputs: Vec<(Arc<Shard>, Vec<AppendRecord>)>,
    /// State keys (without the processor/shard scope) and their new values;
    /// `None` removes the key.
    pub state_writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Source sequence numbers skipped or dead-lettered, with the reason.
    pub failures: Vec<(u64, String)>,
    pub cursor: CursorState,
}

fn meta_key(kind: &str, name: &str) -> String {
    format!("{kind}/{name}")
}

/// What processors and plugins keep in a [`Storage`]; from
/// [`Storage::processing`].
pub struct Processing<'a>(pub(super) &'a Storage);

impl Processing<'_> {
    /// Commits a processor step atomically, durably, with the group.
    pub async fn commit(&self, commit: ProcessingCommit) -> Result<()> {
        self.0
            .send(|reply| Command::Processing { commit, reply })
            .await
    }

    /// Commits a cursor alone: where a processor starts, or where an
    /// operator moved it.
    pub async fn commit_cursor(
        &self,
        processor_id: u64,
        shard: u32,
        cursor: CursorState,
    ) -> Result<()> {
        self.commit(ProcessingCommit {
            processor_id,
            shard,
            outputs: Vec::new(),
            state_writes: Vec::new(),
            failures: Vec::new(),
            cursor,
        })
        .await
    }

    /// A processor's committed cursor in one shard, with its state size
    /// (counted once for a cursor written before Weir kept it there).
    pub fn cursor(&self, processor_id: u64, shard: u32) -> Result<Option<CursorState>> {
        let key = layout::processor_shard_prefix(processor_id, shard);
        let stored = {
            let _visible = self.0.visibility.read().unwrap_or_else(|p| p.into_inner());
            self.0.engine()?.processing.cursors.get(key)?
        };
        let Some(value) = stored else {
            return Ok(None);
        };
        let (mut cursor, with_state) = CursorState::decode(&value)?;
        if !with_state {
            cursor.state = self.count_state(processor_id, shard)?;
        }
        Ok(Some(cursor))
    }

    pub fn state_get(&self, processor_id: u64, shard: u32, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let engine = self.0.engine()?;
        let mut full_key = layout::processor_shard_prefix(processor_id, shard).to_vec();
        full_key.extend_from_slice(key);
        Ok(engine.processing.state.get(full_key)?.map(|v| v.to_vec()))
    }

    /// Up to `limit` state entries of one shard whose keys start with `prefix`.
    pub fn state_scan(
        &self,
        processor_id: u64,
        shard: u32,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let scope = layout::processor_shard_prefix(processor_id, shard);
        let mut full_prefix = scope.to_vec();
        full_prefix.extend_from_slice(prefix);
        let engine = self.0.engine()?;
        // Like cursors, state is never seen ahead of the outputs it came with.
        let _visible = self.0.visibility.read().unwrap_or_else(|p| p.into_inner());
        let mut entries = Vec::new();
        for entry in engine.processing.state.prefix(full_prefix).take(limit) {
            let (key, value) = entry.into_inner()?;
            entries.push((key[scope.len()..].to_vec(), value.to_vec()));
        }
        Ok(entries)
    }

    /// Counts one shard's state by scanning it.
    fn count_state(&self, processor_id: u64, shard: u32) -> Result<StateSize> {
        let engine = self.0.engine()?;
        let scope = layout::processor_shard_prefix(processor_id, shard);
        let mut size = StateSize::default();
        for entry in engine.processing.state.prefix(scope) {
            let (key, value) = entry.into_inner()?;
            size.keys += 1;
            size.bytes += (key.len() - scope.len() + value.len()) as u64;
        }
        Ok(size)
    }

    /// The most recent `limit` failed (skipped or dead-lettered) sequence
    /// numbers of one shard, newest first.
    pub fn recent_failures(&self, processor_id: u64, shard: u32, limit: usize) -> Result<Vec<u64>> {
        let engine = self.0.engine()?;
        let scope = layout::processor_shard_prefix(processor_id, shard);
        let mut sequences = Vec::new();
        for entry in engine.processing.failures.prefix(scope).rev().take(limit) {
            let key = entry.key()?;
            let sequence = key[scope.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    what: "failure key",
                })?;
            sequences.push(sequence);
        }
        Ok(sequences)
    }

    /// Stores a plugin's metadata and component (content-addressed).
    pub fn put_plugin(
        &self,
        name: &str,
        info: &[u8],
        sha256: &str,
        component: &[u8],
    ) -> Result<()> {
        let engine = self.0.engine()?;
        let plugins = &engine.processing.plugins;
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(plugins, meta_key("blob", sha256), component);
        batch.insert(plugins, meta_key("plugin", name), info);
        batch.commit()?;
        Ok(())
    }

    pub fn plugin_info(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .engine()?
            .processing
            .plugins
            .get(meta_key("plugin", name))?
            .map(|v| v.to_vec()))
    }

    pub fn plugin_infos(&self) -> Result<Vec<Vec<u8>>> {
        let engine = self.0.engine()?;
        engine
            .processing
            .plugins
            .prefix("plugin/")
            .map(|entry| Ok(entry.value()?.to_vec()))
            .collect()
    }

    pub fn plugin_component(&self, sha256: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .engine()?
            .processing
            .plugins
            .get(meta_key("blob", sha256))?
            .map(|v| v.to_vec()))
    }

    /// Removes a plugin's name; its component goes too unless another name
    /// shares it.
    pub fn remove_plugin(&self, name: &str, sha256: &str, component_shared: bool) -> Result<()> {
        let engine = self.0.engine()?;
        let plugins = &engine.processing.plugins;
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(plugins, meta_key("plugin", name));
        if !component_shared {
            batch.remove(plugins, meta_key("blob", sha256));
        }
        batch.commit()?;
        Ok(())
    }

    pub fn put_processor(&self, name: &str, definition: &[u8]) -> Result<()> {
        let engine = self.0.engine()?;
        engine
            .meta
            .insert(meta_key("processor", name), definition)?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    pub fn processor_definitions(&self) -> Result<Vec<Vec<u8>>> {
        let engine = self.0.engine()?;
        engine
            .meta
            .prefix("processor/")
            .map(|entry| Ok(entry.value()?.to_vec()))
            .collect()
    }

    /// Removes a processor's definition, cursors, state and failure records.
    pub fn remove_processor(&self, name: &str, processor_id: u64) -> Result<()> {
        let engine = self.0.engine()?;
        let scope = processor_id.to_be_bytes();
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(&engine.meta, meta_key("processor", name));
        for keyspace in [
            &engine.processing.cursors,
            &engine.processing.state,
            &engine.processing.failures,
        ] {
            for entry in keyspace.prefix(scope) {
                batch.remove(keyspace, entry.key()?);
            }
        }
        batch.commit()?;
        Ok(())
    }
}
