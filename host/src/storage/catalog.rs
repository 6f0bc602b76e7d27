//! Small catalog records kept in the meta keyspace as opaque bytes under
//! a kind's prefix — access tokens (the auth module chooses their encoding
//! and keeps only hashes of secrets), the Kinesis API's stream consumers
//! and tags, sinks and their cursors.
//! Each write is synced before it returns: these change rarely and must
//! survive a crash once answered. Reached through [`Storage::catalog`].

use fjall::PersistMode;

use super::{Result, Storage, StorageError};

/// The kinds of catalog record, each its own key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    Token,
    /// Named `{stream_id}/{consumer}`: removed with the stream.
    KinesisConsumer,
    /// Named `{stream_id}/`: removed with the stream.
    KinesisTags,
    /// A sink's definition, named by the sink.
    Sink,
    /// Named `{sink_id}/{shard}`: removed with the sink.
    SinkCursor,
}

/// The key prefixes of every record that belongs to stream `stream_id`,
/// removed in the same batch that drops the stream.
pub(super) fn stream_record_prefixes(stream_id: u64) -> [String; 2] {
    [CatalogKind::KinesisConsumer, CatalogKind::KinesisTags]
        .map(|kind| kind.key(&format!("{stream_id}/")))
}

impl CatalogKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Token => "token/",
            Self::KinesisConsumer => "kinesis-consumer/",
            Self::KinesisTags => "kinesis-tags/",
            Self::Sink => "sink/",
            Self::SinkCursor => "sink-cursor/",
        }
    }

    fn key(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }
}

/// The catalog of a [`Storage`].
pub struct Catalog<'a>(pub(super) &'a Storage);

impl Catalog<'_> {
    pub fn put(&self, kind: CatalogKind, name: &str, record: &[u8]) -> Result<()> {
        let engine = self.0.engine()?;
        engine.meta.insert(kind.key(name), record)?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    pub fn remove(&self, kind: CatalogKind, name: &str) -> Result<()> {
        let engine = self.0.engine()?;
        engine.meta.remove(kind.key(name))?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Removes, in one synced batch, the record `name` of `kind` and every
    /// record of `children_kind` whose name starts with `children_prefix`.
    pub fn remove_with(
        &self,
        kind: CatalogKind,
        name: &str,
        children_kind: CatalogKind,
        children_prefix: &str,
    ) -> Result<()> {
        let engine = self.0.engine()?;
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(&engine.meta, kind.key(name));
        for entry in engine.meta.prefix(children_kind.key(children_prefix)) {
            batch.remove(&engine.meta, entry.key()?);
        }
        batch.commit()?;
        Ok(())
    }

    /// The record `name` of `kind`, if there is one.
    pub fn get(&self, kind: CatalogKind, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .engine()?
            .meta
            .get(kind.key(name))?
            .map(|v| v.to_vec()))
    }

    /// Every record of `kind` whose name starts with `name_prefix`.
    pub fn list(&self, kind: CatalogKind, name_prefix: &str) -> Result<Vec<Vec<u8>>> {
        let engine = self.0.engine()?;
        engine
            .meta
            .prefix(kind.key(name_prefix))
            .map(|entry| Ok(entry.value()?.to_vec()))
            .collect()
    }

    /// The next value of a persistent id counter.
    pub fn next_id(&self, counter: &str) -> Result<u64> {
        let engine = self.0.engine()?;
        let _admin = self.0.admin.lock().unwrap_or_else(|p| p.into_inner());
        let key = format!("counter/{counter}");
        let next = match engine.meta.get(&key)? {
            Some(value) => u64::from_le_bytes(
                value[..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt { what: "id counter" })?,
            ),
            None => 1,
        };
        engine.meta.insert(&key, (next + 1).to_le_bytes())?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(next)
    }
}
