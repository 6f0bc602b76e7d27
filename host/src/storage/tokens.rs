//! Access tokens, stored in the meta keyspace as opaque bytes (the auth
//! module chooses their encoding and keeps only hashes of secrets).

use fjall::PersistMode;

use super::{Result, Storage};

fn token_key(name: &str) -> String {
    format!("token/{name}")
}

impl Storage {
    pub fn put_token(&self, name: &str, record: &[u8]) -> Result<()> {
        let engine = self.engine()?;
        engine.meta.insert(token_key(name), record)?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    pub fn remove_token(&self, name: &str) -> Result<()> {
        let engine = self.engine()?;
        engine.meta.remove(token_key(name))?;
        engine.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    pub fn token_records(&self) -> Result<Vec<Vec<u8>>> {
        let engine = self.engine()?;
        engine
            .meta
            .prefix("token/")
            .map(|entry| Ok(entry.value()?.to_vec()))
            .collect()
    }
}
