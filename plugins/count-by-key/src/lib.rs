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
//! its end. Then one record per key is emitted:
//! `{"window_start":…,"window_end":…,"key":…,"count":…,"sum":…}` with the
//! key as partition key, and the window's state is removed.
//!
//! State (queryable with `weir state get`), all JSON or text:
//! - `count/{window_start}/{key}` → `{"count":…,"sum":…}` for open windows;
//! - `keys/{window_start}` → the window's keys, one per line;
//! - `windows` → open window starts, one per line.

use serde_json::{Value, json};
use weir_plugin::{Config, Output, Processor, Record, state};

pub struct CountByKey {
    window_ms: u64,
    key_field: Option<String>,
    sum_field: Option<String>,
}

fn lines(key: &str) -> Vec<String> {
    state::get(key.as_bytes())
        .map(|v| {
            String::from_utf8_lossy(&v)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn set_lines(key: &str, lines: &[String]) {
    if lines.is_empty() {
        state::delete(key.as_bytes());
    } else {
        state::set(key.as_bytes(), lines.join("\n").as_bytes());
    }
}

impl CountByKey {
    fn group_key(&self, record: &Record<'_>, document: Option<&Value>) -> Result<String, String> {
        let Some(field) = &self.key_field else {
            return Ok(record.partition_key.to_owned());
        };
        match document.and_then(|d| d.get(field)) {
            Some(Value::String(text)) => Ok(text.clone()),
            Some(value) if !value.is_null() => Ok(value.to_string()),
            _ => Err(format!("record has no `{field}` field to group by")),
        }
    }

    /// Emits and forgets every open window that ends at or before `time_ms`.
    fn close_windows(&self, time_ms: u64, out: &mut Output) {
        let mut open = lines("windows");
        let before = open.len();
        open.retain(|start_text| {
            let Ok(start) = start_text.parse::<u64>() else {
                return false;
            };
            let end = start + self.window_ms;
            if end > time_ms {
                return true;
            }
            let keys_key = format!("keys/{start}");
            for key in lines(&keys_key) {
                let count_key = format!("count/{start}/{key}");
                let totals = state::get(count_key.as_bytes())
                    .and_then(|v| serde_json::from_slice::<Value>(&v).ok())
                    .unwrap_or(json!({"count": 0, "sum": 0.0}));
                let emitted = json!({
                    "window_start": start,
                    "window_end": end,
                    "key": key,
                    "count": totals["count"],
                    "sum": totals["sum"],
                });
                out.emit_keyed(&key, emitted.to_string().as_bytes());
                state::delete(count_key.as_bytes());
            }
            state::delete(keys_key.as_bytes());
            false
        });
        if open.len() != before {
            set_lines("windows", &open);
        }
    }
}

impl Processor for CountByKey {
    fn init(config: &Config) -> Result<Self, String> {
        let window_ms: u64 = config
            .require("window-ms")?
            .parse()
            .map_err(|_| "window-ms must be a whole number of milliseconds".to_owned())?;
        if window_ms == 0 {
            return Err("window-ms must be greater than zero".into());
        }
        Ok(Self {
            window_ms,
            key_field: config.get("key-field").map(str::to_owned),
            sum_field: config.get("sum-field").map(str::to_owned),
        })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        // Records close the windows that end at or before their own time.
        self.close_windows(record.timestamp_ms, out);

        let needs_json = self.key_field.is_some() || self.sum_field.is_some();
        let document = if needs_json {
            Some(
                serde_json::from_slice::<Value>(record.data)
                    .map_err(|e| format!("not JSON: {e}"))?,
            )
        } else {
            None
        };
        let key = self.group_key(record, document.as_ref())?;
        let amount = match (&self.sum_field, &document) {
            (Some(field), Some(document)) => {
                document.get(field).and_then(Value::as_f64).unwrap_or(0.0)
            }
            _ => 0.0,
        };

        let start = record.timestamp_ms - record.timestamp_ms % self.window_ms;
        let count_key = format!("count/{start}/{key}");
        let (count, sum) = match state::get(count_key.as_bytes()) {
            Some(value) => {
                let totals: Value = serde_json::from_slice(&value).unwrap_or_default();
                (
                    totals["count"].as_u64().unwrap_or(0),
                    totals["sum"].as_f64().unwrap_or(0.0),
                )
            }
            None => {
                // A new key in this window: index it (and the window).
                let keys_key = format!("keys/{start}");
                let mut keys = lines(&keys_key);
                if keys.is_empty() {
                    let mut open = lines("windows");
                    open.push(start.to_string());
                    set_lines("windows", &open);
                }
                keys.push(key.clone());
                set_lines(&keys_key, &keys);
                (0, 0.0)
            }
        };
        let totals = json!({"count": count + 1, "sum": sum + amount});
        state::set(count_key.as_bytes(), totals.to_string().as_bytes());
        Ok(())
    }

    fn tick(&mut self, now_ms: u64, out: &mut Output) -> Result<(), String> {
        self.close_windows(now_ms, out);
        Ok(())
    }
}

weir_plugin::export_processor!(CountByKey);
