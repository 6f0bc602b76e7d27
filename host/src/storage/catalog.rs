//! Small catalog records kept in the meta keyspace as opaque bytes under
//! a kind's prefix — access tokens (the auth module chooses their encoding
//! and keeps only hashes of secrets), the Kinesis API's stream consumers
//! and tags.
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
