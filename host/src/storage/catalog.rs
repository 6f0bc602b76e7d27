//! Small catalog records kept in the meta keyspace as opaque bytes under
//! a kind's prefix — access tokens (the auth module chooses their encoding
//! and keeps only hashes of secrets), the Kinesis API's stream consumers
//! and tags, sinks and their cursors.
//! Each write is synced before it returns: these change rarely and must
//! survive a crash once answered.

use fjall::PersistMode;

use super::{Result, Storage};

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

impl Storage {
    pub fn put_catalog_record(&self, kind: CatalogKind, name: &str, record: &[u8]) -> Result<()> {
        let engine = self.engine()?;
        engine.meta.insert(kind.key(name), record)?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    pub fn remove_catalog_record(&self, kind: CatalogKind, name: &str) -> Result<()> {
        let engine = self.engine()?;
        engine.meta.remove(kind.key(name))?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// Removes, in one synced batch, the record `name` of `kind` and every
    /// record of `children_kind` whose name starts with `children_prefix`.
    pub fn remove_catalog_record_with(
        &self,
        kind: CatalogKind,
        name: &str,
        children_kind: CatalogKind,
        children_prefix: &str,
    ) -> Result<()> {
        let engine = self.engine()?;
        let mut batch = engine.db.batch().durability(Some(PersistMode::SyncData));
        batch.remove(&engine.meta, kind.key(name));
        for entry in engine.meta.prefix(children_kind.key(children_prefix)) {
            batch.remove(&engine.meta, entry.key()?);
        }
        batch.commit()?;
        Ok(())
    }

    /// The record `name` of `kind`, if there is one.
    pub fn catalog_record(&self, kind: CatalogKind, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.engine()?.meta.get(kind.key(name))?.map(|v| v.to_vec()))
    }

    /// Every record of `kind` whose name starts with `name_prefix`.
    pub fn catalog_records(&self, kind: CatalogKind, name_prefix: &str) -> Result<Vec<Vec<u8>>> {
        let engine = self.engine()?;
        engine
            .meta
            .prefix(kind.key(name_prefix))
            .map(|entry| Ok(entry.value()?.to_vec()))
            .collect()
    }
}
