//! Tumbling-window counts and sums per key over any key-value store: the
//! plugin runs it over Weir's state, the native baseline of `weir bench
//! plugin` over a `HashMap` (this file is compiled into both, so the bench
//! compares targets, not implementations).
//!
//! State layout (text, so `weir state get` is readable):
//! - `count/{window_start}/{key}` → `{count} {sum}`;
//! - `keys/{window_start}` → the window's keys, one per line;
//! - `windows` → open window starts, one per line.

use serde_json::Value;

/// Where the totals live.
pub trait Store {
    fn get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn set(&mut self, key: &str, value: &[u8]);
    fn delete(&mut self, key: &str);
}

/// Receives closed windows: (partition key, JSON record).
pub trait Emit {
    fn emit(&mut self, key: &str, data: &[u8]);
}

pub struct Windows {
    pub window_ms: u64,
    pub key_field: Option<String>,
    pub sum_field: Option<String>,
}

fn lines(store: &mut impl Store, key: &str) -> Vec<String> {
    store
        .get(key)
        .map(|v| {
            String::from_utf8_lossy(&v)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn set_lines(store: &mut impl Store, key: &str, lines: &[String]) {
    if lines.is_empty() {
        store.delete(key);
    } else {
        store.set(key, lines.join("\n").as_bytes());
    }
}

fn totals(value: Option<Vec<u8>>) -> (u64, f64) {
    let text = value
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let mut parts = text.split(' ');
    let count = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let sum = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (count, sum)
}

impl Windows {
    pub fn new(
        window_ms: &str,
        key_field: Option<&str>,
        sum_field: Option<&str>,
    ) -> Result<Self, String> {
        let window_ms: u64 = window_ms
            .parse()
            .map_err(|_| "window-ms must be a whole number of milliseconds".to_owned())?;
        if window_ms == 0 {
            return Err("window-ms must be greater than zero".into());
        }
        Ok(Self {
            window_ms,
            key_field: key_field.map(str::to_owned),
            sum_field: sum_field.map(str::to_owned),
        })
    }

    /// Adds one record at `time_ms` to its window, after closing every
    /// window that ended at or before that time.
    pub fn add(
        &self,
        store: &mut impl Store,
        out: &mut impl Emit,
        time_ms: u64,
        partition_key: &str,
        data: &[u8],
    ) -> Result<(), String> {
        self.close(store, out, time_ms);
        let document: Option<Value> = if self.key_field.is_some() || self.sum_field.is_some() {
            Some(serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?)
        } else {
            None
        };
        let key = match (&self.key_field, &document) {
            (Some(field), Some(document)) => match document.get(field) {
                Some(Value::String(text)) => text.clone(),
                Some(value) if !value.is_null() => value.to_string(),
                _ => return Err(format!("record has no `{field}` field to group by")),
            },
            _ => partition_key.to_owned(),
        };
        let amount = match (&self.sum_field, &document) {
            (Some(field), Some(document)) => {
                document.get(field).and_then(Value::as_f64).unwrap_or(0.0)
            }
            _ => 0.0,
        };

        let start = time_ms - time_ms % self.window_ms;
        let count_key = format!("count/{start}/{key}");
        let previous = store.get(&count_key);
        if previous.is_none() {
            // A new key in this window: index it (and the window).
            let keys_key = format!("keys/{start}");
            let mut keys = lines(store, &keys_key);
            if keys.is_empty() {
                let mut open = lines(store, "windows");
                open.push(start.to_string());
                set_lines(store, "windows", &open);
            }
            keys.push(key);
            set_lines(store, &keys_key, &keys);
        }
        let (count, sum) = totals(previous);
        store.set(
            &count_key,
            format!("{} {}", count + 1, sum + amount).as_bytes(),
        );
        Ok(())
    }

    /// Emits and forgets every open window that ends at or before `time_ms`.
    pub fn close(&self, store: &mut impl Store, out: &mut impl Emit, time_ms: u64) {
        let mut open = lines(store, "windows");
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
            for key in lines(store, &keys_key) {
                let count_key = format!("count/{start}/{key}");
                let (count, sum) = totals(store.get(&count_key));
                let record = serde_json::json!({
                    "window_start": start,
                    "window_end": end,
                    "key": key,
                    "count": count,
                    "sum": sum,
                });
                out.emit(&key, record.to_string().as_bytes());
                store.delete(&count_key);
            }
            store.delete(&keys_key);
            false
        });
        if open.len() != before {
            set_lines(store, "windows", &open);
        }
    }
}
