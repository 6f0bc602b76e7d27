//! Tumbling-window counts (and sums of a numeric field) per key, by record
//! time — real-time ad metrics without a database.
//!
//! Config:
//! - `window-ms`: window length in milliseconds (required).
//! - `key-field`: JSON field to group by (default: the partition key).
//! - `sum-field`: numeric JSON field to sum (optional).
//!
//! A window `[start, start + window-ms)` closes when a record at or after
//! its end arrives in the shard, or when an idle-shard tick's clock passes
//! its end. Then one record per key is emitted (per source shard: each
//! shard's worker aggregates its own records; add them up downstream):
//! `{"window_start":…,"window_end":…,"key":…,"count":…,"sum":…}` with the
//! key as partition key, and the window's state is removed. The open
//! window's totals are state (`count/{window_start}/{key}` → `count sum`),
//! so `weir state get PROCESSOR --prefix count/` shows them live.

pub mod window;

use weir_plugin::{Config, Error, Output, Processor, Record, state};
use window::{Emit, Store, Windows};

pub struct CountByKey(Windows);

/// Weir's state as the windows' store.
struct PluginState;

impl Store for PluginState {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        state::get(key.as_bytes())
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        state::set(key.as_bytes(), value);
    }

    fn delete(&mut self, key: &str) {
        state::delete(key.as_bytes());
    }
}

impl Emit for Output {
    fn emit(&mut self, key: &str, data: &[u8]) {
        self.emit_keyed(key, data);
    }
}

impl Processor for CountByKey {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(Self(Windows::new(
            config.require("window-ms")?,
            config.get("key-field"),
            config.get("sum-field"),
        )?))
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
        Ok(self.0.add(
            &mut PluginState,
            out,
            record.timestamp_ms,
            record.partition_key,
            record.data,
        )?)
    }

    fn tick(&mut self, now_ms: u64, out: &mut Output) -> Result<(), Error> {
        self.0.close(&mut PluginState, out, now_ms);
        Ok(())
    }
}

weir_plugin::export_processor!(CountByKey);
