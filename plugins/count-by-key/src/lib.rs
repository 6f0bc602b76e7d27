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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_plugin::testing::{Emitted, Harness, Input};

    use super::CountByKey;

    const CONFIG: [(&str, &str); 3] = [
        ("window-ms", "1000"),
        ("key-field", "campaign"),
        ("sum-field", "price"),
    ];

    fn click(campaign: &str, price: u64) -> Vec<u8> {
        json!({ "campaign": campaign, "price": price })
            .to_string()
            .into_bytes()
    }

    /// The closed windows' records, as JSON, in the order they were emitted.
    fn windows(emitted: &[Emitted]) -> Vec<Value> {
        emitted
            .iter()
            .map(|e| {
                let record: Value = serde_json::from_slice(&e.data).expect("JSON");
                assert_eq!(record["key"], e.partition_key.as_str(), "keyed by its key");
                record
            })
            .collect()
    }

    fn window(start: u64, key: &str, count: u64, sum: f64) -> Value {
        json!({
            "window_start": start,
            "window_end": start + 1000,
            "key": key,
            "count": count,
            "sum": sum,
        })
    }

    #[test]
    fn a_window_closes_when_a_later_record_arrives_with_each_keys_totals() {
        let mut plugin = Harness::<CountByKey>::new(&CONFIG).expect("init");
        let (a2, a3, b5, a1) = (click("a", 2), click("a", 3), click("b", 5), click("a", 1));
        let open = plugin
            .process(&[
                Input::at(100, "user-1", &a2),
                Input::at(200, "user-2", &a3),
                Input::at(900, "user-3", &b5),
            ])
            .expect("calls");
        assert!(
            open.emitted.is_empty() && open.errors.is_empty(),
            "{open:?}"
        );
        assert!(
            plugin.state().contains_key(b"count/0/a".as_slice()),
            "the open window's totals are state, readable live"
        );

        let closed = plugin
            .process(&[Input::at(1500, "user-1", &a1)])
            .expect("call");
        assert_eq!(
            windows(&closed.emitted),
            [window(0, "a", 2, 5.0), window(0, "b", 1, 5.0)]
        );
        let keys: Vec<_> = plugin.state().into_keys().collect();
        assert!(
            keys.iter().all(|k| !k.starts_with(b"count/0/")),
            "a closed window's state is removed: {keys:?}"
        );
    }

    #[test]
    fn an_idle_shard_tick_closes_windows_that_ended() {
        let mut plugin = Harness::<CountByKey>::new(&CONFIG).expect("init");
        plugin
            .process(&[Input::at(1200, "u", &click("a", 7))])
            .expect("call");
        assert!(
            plugin.tick(1999).expect("tick").emitted.is_empty(),
            "still open"
        );
        let closed = plugin.tick(2000).expect("tick");
        assert_eq!(windows(&closed.emitted), [window(1000, "a", 1, 7.0)]);
        assert!(
            plugin.tick(5000).expect("tick").emitted.is_empty(),
            "closed once"
        );
    }

    #[test]
    fn a_failed_record_loses_no_update_and_closes_nothing() {
        let mut plugin = Harness::<CountByKey>::new(&CONFIG).expect("init");
        let (a2, no_campaign, a4) = (click("a", 2), br#"{"price":9}"#.to_vec(), click("a", 4));
        let outcome = plugin
            .process(&[
                Input::at(100, "u", &a2),
                // Would close window 0 before failing: as on the server,
                // its state writes and outputs are dropped with it.
                Input::at(1100, "u", b"not json"),
                Input::at(1200, "u", &no_campaign),
                Input::at(300, "u", &a2),
            ])
            .expect("calls");
        assert!(outcome.emitted.is_empty(), "{outcome:?}");
        let failed: Vec<u64> = outcome
            .errors
            .iter()
            .map(|(sequence, _)| *sequence)
            .collect();
        assert_eq!(failed, [1, 2]);
        assert!(
            outcome.errors[0].1.contains("not JSON"),
            "{:?}",
            outcome.errors
        );
        assert!(
            outcome.errors[1].1.contains("`campaign`"),
            "{:?}",
            outcome.errors
        );

        let closed = plugin.process(&[Input::at(1300, "u", &a4)]).expect("call");
        assert_eq!(
            windows(&closed.emitted),
            [window(0, "a", 2, 4.0)],
            "both good records of window 0 counted, none of the failed"
        );
    }

    #[test]
    fn init_names_a_bad_window() {
        for (window_ms, expected) in [("0", "greater than zero"), ("soon", "whole number")] {
            let error = Harness::<CountByKey>::new(&[("window-ms", window_ms)])
                .err()
                .expect("refused");
            assert!(error.message().contains(expected), "{error:?}");
        }
        assert!(
            Harness::<CountByKey>::new(&[]).is_err(),
            "window-ms is required"
        );
    }
}
