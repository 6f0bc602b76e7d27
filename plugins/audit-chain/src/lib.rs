//! Turns each record into `HASH DATA`: 64 hex digits, a space, then the
//! original bytes, where `HASH = SHA-256(previous HASH's 32 bytes || DATA)`
//! and the first record's previous hash is 32 zero bytes. The chain runs per
//! source shard, in sequence order; a reader that recomputes it detects any
//! record altered, removed, inserted or reordered. (Give the output stream
//! as many shards as the source so each shard's chain stays in one shard.)
//!
//! No config. The chain head is kept in state under `head`.

use sha2::{Digest, Sha256};
use weir_plugin::{Config, Error, Map, Record, state};

pub struct AuditChain;

const HEAD_KEY: &[u8] = b"head";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Map for AuditChain {
    fn init(config: &Config) -> Result<Self, Error> {
        match config.pairs().first() {
            Some((key, _)) => Err(format!("audit-chain takes no config (got `{key}`)").into()),
            None => Ok(AuditChain),
        }
    }

    fn map(&mut self, record: &Record<'_>) -> Result<Vec<u8>, Error> {
        let previous = state::get(HEAD_KEY).unwrap_or_else(|| vec![0; 32]);
        let hash = Sha256::new()
            .chain_update(&previous)
            .chain_update(record.data)
            .finalize();
        state::set(HEAD_KEY, &hash);
        let mut out = hex(&hash).into_bytes();
        out.push(b' ');
        out.extend_from_slice(record.data);
        Ok(out)
    }
}

weir_plugin::export_map!(AuditChain);
