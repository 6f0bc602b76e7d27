//! What the demo shows once a second: gathered from the server as any
//! client would ([`Snapshot::take`]), drawn as a screen of at most 80×24
//! ([`Snapshot::screen`]) or as one plain line ([`Snapshot::line`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use weir_client::Client;
use weir_client::admin::{AdminRequest, AdminResponse};

use super::{PIPELINE, WINDOW_MS};
use crate::show;

/// Seconds of ingest history the sparkline shows.
pub const HISTORY_SECONDS: usize = 50;
/// Closed windows listed on the screen.
const CLOSED_WINDOWS_SHOWN: usize = 5;
/// Campaigns listed for the open window.
const CAMPAIGNS_SHOWN: usize = 5;
/// Width of the open window's column; the closed windows' follows.
const LEFT_COLUMN: usize = 38;

/// Purchases and revenue of one window, per campaign.
#[derive(Debug, Default, Clone)]
pub struct Window {
    pub start_ms: u64,
    /// campaign → (purchases, cents)
    pub campaigns: HashMap<String, (u64, f64)>,
}

impl Window {
    fn add(&mut self, campaign: &str, purchases: u64, cents: f64) {
        let totals = self.campaigns.entry(campaign.to_owned()).or_default();
        totals.0 += purchases;
        totals.1 += cents;
    }

    fn purchases(&self) -> u64 {
        self.campaigns.values().map(|(count, _)| count).sum()
    }

    fn cents(&self) -> f64 {
        self.campaigns.values().map(|(_, cents)| cents).sum()
    }

    /// Campaigns by revenue, highest first.
    fn ranked(&self) -> Vec<(&str, u64, f64)> {
        let mut ranked: Vec<_> = self
            .campaigns
            .iter()
            .map(|(name, (count, cents))| (name.as_str(), *count, *cents))
            .collect();
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(b.0)));
        ranked
    }
}

/// The window starting at `start_ms`, made empty if it is not there yet.
fn window_at(windows: &mut BTreeMap<u64, Window>, start_ms: u64) -> &mut Window {
    windows.entry(start_ms).or_insert_with(|| Window {
        start_ms,
        ..Default::default()
    })
}

/// Windows that `revenue` closed, by start time, filled from its output
/// stream (each source shard's worker emits its own totals).
#[derive(Default)]
pub struct ClosedWindows(Mutex<BTreeMap<u64, Window>>);

impl ClosedWindows {
    /// Adds one emitted total: `{"window_start":…,"key":…,"count":…,"sum":…}`.
    pub fn add(&self, data: &[u8]) {
        let Ok(total) = serde_json::from_slice::<serde_json::Value>(data) else {
            return;
        };
        let (Some(start_ms), Some(campaign)) =
            (total["window_start"].as_u64(), total["key"].as_str())
        else {
            return;
        };
        let count = total["count"].as_u64().unwrap_or(0);
        let cents = total["sum"].as_f64().unwrap_or(0.0);
        let mut windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        window_at(&mut windows, start_ms).add(campaign, count, cents);
        while windows.len() > CLOSED_WINDOWS_SHOWN {
            windows.pop_first();
        }
    }

    /// Newest first.
    fn latest(&self) -> Vec<Window> {
        let windows = self.0.lock().unwrap_or_else(|e| e.into_inner());
        windows.values().rev().cloned().collect()
    }
}

/// One pipeline stage as `processor describe` reports it, summed over shards.
#[derive(Debug)]
struct Stage {
    name: &'static str,
    plugin: &'static str,
    status: String,
    lag_records: u64,
    lag_ms: u64,
    fuel_per_record: u64,
    records_out: u64,
}

pub struct Snapshot {
    pub appended: u64,
    stored: u64,
    stages: Vec<Stage>,
    open_window: Option<Window>,
    closed_windows: Vec<Window>,
    disk_bytes: u64,
    resident_bytes: u64,
}

impl Snapshot {
    pub async fn take(client: &Client, pipeline: bool, closed: &ClosedWindows) -> Self {
        let (appended, stored) = match client.describe_stream("clicks").await {
            Ok(description) => (
                description
                    .shards
                    .iter()
                    .map(|s| s.last_sequence.map_or(0, |last| last + 1))
                    .sum(),
                description.shards.iter().map(|s| s.records).sum(),
            ),
            Err(_) => (0, 0),
        };
        let mut stages = Vec::new();
        if pipeline {
            for (name, plugin) in PIPELINE {
                stages.push(stage(client, name, plugin).await);
            }
        }
        let (disk_bytes, resident_bytes) = match client.admin(AdminRequest::ServerInfo).await {
            Ok(AdminResponse::Server(info)) => (info.disk_bytes, info.resident_bytes),
            _ => (0, 0),
        };
        Self {
            appended,
            stored,
            stages,
            open_window: if pipeline {
                open_window(client).await
            } else {
                None
            },
            closed_windows: closed.latest(),
            disk_bytes,
            resident_bytes,
        }
    }

    /// The live screen: at most 80 columns and 18 lines.
    pub fn screen(&self, header: &str, rates: &VecDeque<u64>, target_rate: u64) -> Vec<String> {
        let rate = rates.back().copied().unwrap_or(0);
        let peak = rates.iter().copied().max().unwrap_or(0);
        let mut lines = vec![
            header.to_owned(),
            String::new(),
            format!(
                "ingest {:>9} clicks/s   target {}/s   stored {} clicks in 4 shards",
                grouped(rate),
                grouped(target_rate),
                grouped(self.stored)
            ),
            format!(
                "{:<width$}  last {HISTORY_SECONDS} s, peak {}/s",
                sparkline(rates),
                grouped(peak),
                width = HISTORY_SECONDS
            ),
            String::new(),
        ];
        if self.stages.is_empty() {
            lines.push("(no plugin pipeline: the example plugins did not build)".into());
        } else {
            lines.push(format!(
                "{:<10} {:<13} {:<17} {:>8} {:>8} {:>9} {:>8}",
                "stage", "plugin", "status", "lag", "lag age", "fuel/rec", "out"
            ));
            for stage in &self.stages {
                lines.push(format!(
                    "{:<10} {:<13} {:<17} {:>8} {:>8} {:>9} {:>8}",
                    stage.name,
                    stage.plugin,
                    stage.status,
                    grouped(stage.lag_records),
                    show::duration_ms(stage.lag_ms),
                    grouped(stage.fuel_per_record),
                    grouped(stage.records_out)
                ));
            }
        }
        lines.push(String::new());
        lines.extend(self.windows_columns());
        lines.push(String::new());
        lines.push(format!(
            "storage {}   memory {} (server and demo, one process)",
            show::bytes(self.disk_bytes),
            show::bytes(self.resident_bytes)
        ));
        lines
    }

    /// Two columns: the open window's top campaigns, and the totals of
    /// the windows closed last (so a new window does not look like
    /// revenue collapsing).
    fn windows_columns(&self) -> Vec<String> {
        let mut left = vec![match &self.open_window {
            Some(window) => format!(
                "open window {}-{} UTC",
                clock(window.start_ms),
                clock(window.start_ms + WINDOW_MS)
            ),
            None => "open window: waiting for purchases".into(),
        }];
        if let Some(window) = &self.open_window {
            for (campaign, count, cents) in window.ranked().into_iter().take(CAMPAIGNS_SHOWN) {
                left.push(format!(
                    "  {campaign:<13} {:>13} {count:>6}",
                    dollars(cents)
                ));
            }
        }
        let mut right = vec!["closed windows (purchases)".to_owned()];
        for window in &self.closed_windows {
            let top = window
                .ranked()
                .first()
                .map_or("", |(name, ..)| *name)
                .to_owned();
            right.push(format!(
                "{} {:>13} {:>6} {top}",
                clock(window.start_ms),
                dollars(window.cents()),
                window.purchases()
            ));
        }
        let rows = left.len().max(right.len());
        (0..rows)
            .map(|row| {
                let left = left.get(row).map_or("", String::as_str);
                let right = right.get(row).map_or("", String::as_str);
                format!("{left:<LEFT_COLUMN$}{right}")
            })
            .collect()
    }

    /// One line for a log or a pipe, under 80 columns: the ingest rate,
    /// each stage's lag in pipeline order, the last closed window's revenue.
    pub fn line(&self, elapsed_s: u64, rate: u64) -> String {
        let mut line = format!("{elapsed_s:>4}s {:>9} clicks/s", grouped(rate));
        if !self.stages.is_empty() {
            let lags: Vec<String> = self
                .stages
                .iter()
                .map(|stage| grouped(stage.lag_records))
                .collect();
            line.push_str(&format!("  lag {}", lags.join(" -> ")));
        }
        if let Some(window) = self.closed_windows.first() {
            line.push_str(&format!("  last window {}", dollars(window.cents())));
        }
        line
    }
}

async fn stage(client: &Client, name: &'static str, plugin: &'static str) -> Stage {
    let mut stage = Stage {
        name,
        plugin,
        status: "-".into(),
        lag_records: 0,
        lag_ms: 0,
        fuel_per_record: 0,
        records_out: 0,
    };
    let Ok(AdminResponse::Processor(info)) = client
        .admin(AdminRequest::DescribeProcessor { name: name.into() })
        .await
    else {
        return stage;
    };
    let shards = &info.shards;
    let records_in: u64 = shards.iter().map(|s| s.records_in).sum();
    let fuel: u64 = shards.iter().map(|s| s.fuel_used).sum();
    // The shard furthest from "running" says most about the stage.
    stage.status = if info.paused {
        "paused".into()
    } else {
        shards
            .iter()
            .map(|s| s.status.as_str())
            .find(|status| *status != "running")
            .unwrap_or("running")
            .to_owned()
    };
    stage.lag_records = shards.iter().map(|s| s.lag_records).sum();
    stage.lag_ms = shards.iter().map(|s| s.lag_ms).max().unwrap_or(0);
    stage.fuel_per_record = fuel.checked_div(records_in).unwrap_or(0);
    stage.records_out = shards.iter().map(|s| s.records_out).sum();
    stage
}

/// The newest open window of `revenue`, from its state
/// (`count/{window_start}/{campaign}` → `"{count} {sum}"`, one per shard).
async fn open_window(client: &Client) -> Option<Window> {
    let entries = client
        .state("revenue", None, Some("count/"), 1000)
        .await
        .ok()?;
    let mut windows: BTreeMap<u64, Window> = BTreeMap::new();
    for entry in entries {
        let mut parts = entry.key.splitn(3, '/').skip(1);
        let (Some(start_ms), Some(campaign)) =
            (parts.next().and_then(|s| s.parse().ok()), parts.next())
        else {
            continue;
        };
        let mut values = entry.value.split(' ');
        let count = values.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let cents = values.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        window_at(&mut windows, start_ms).add(campaign, count, cents);
    }
    windows.into_values().next_back()
}

/// `▁▂▃▅▇` scaled to the highest rate shown.
fn sparkline(rates: &VecDeque<u64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let peak = rates.iter().copied().max().unwrap_or(0).max(1);
    rates
        .iter()
        .map(|&rate| BARS[(rate * (BARS.len() as u64 - 1) / peak) as usize])
        .collect()
}

/// `12:00:10`, UTC, from milliseconds since the epoch.
fn clock(ms: u64) -> String {
    let seconds = ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// `1,234,567`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `$1,234.56` from cents.
fn dollars(cents: f64) -> String {
    let cents = cents.max(0.0).round() as u64;
    format!("${}.{:02}", grouped(cents / 100), cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(dollars(123_456.0), "$1,234.56");
        assert_eq!(dollars(5.0), "$0.05");
        assert_eq!(clock(3_600_000 * 25 + 61_000), "01:01:01");
    }

    #[test]
    fn the_sparkline_scales_to_its_peak() {
        let rates: VecDeque<u64> = [0, 50, 100].into_iter().collect();
        assert_eq!(sparkline(&rates), "▁▄█");
        assert_eq!(sparkline(&VecDeque::from([0, 0])), "▁▁");
    }

    #[test]
    fn closed_windows_add_up_their_shards_and_keep_the_latest() {
        let closed = ClosedWindows::default();
        for start in 0..7u64 {
            closed.add(
                format!(r#"{{"window_start":{start},"key":"a","count":2,"sum":300}}"#).as_bytes(),
            );
        }
        closed.add(br#"{"window_start":6,"key":"b","count":1,"sum":1000}"#);
        closed.add(b"not json");
        let latest = closed.latest();
        assert_eq!(latest.len(), CLOSED_WINDOWS_SHOWN);
        assert_eq!(latest[0].start_ms, 6);
        assert_eq!((latest[0].purchases(), latest[0].cents()), (3, 1300.0));
        assert_eq!(latest[0].ranked()[0].0, "b");
    }
}
