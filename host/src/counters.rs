//! Counters the service keeps where the work happens: a few atomic adds on
//! the data path, read by [`crate::metrics`] at scrape time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Open connections per client address, so one host cannot take a
/// listener's whole connection budget.
#[derive(Clone, Default)]
pub struct AddressCounts(Arc<Mutex<HashMap<IpAddr, usize>>>);

impl AddressCounts {
    /// Counts a connection from `address` until the guard drops; `None`
    /// when the address already has `max` open.
    pub fn acquire(&self, address: IpAddr, max: usize) -> Option<AddressGuard> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= max {
            if *count == 0 {
                counts.remove(&address);
            }
            return None;
        }
        *count += 1;
        Some(AddressGuard {
            counts: self.clone(),
            address,
        })
    }
}

/// One counted connection; dropping it uncounts it.
pub struct AddressGuard {
    counts: AddressCounts,
    address: IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Upper bounds of the ack-latency buckets, in milliseconds.
const LATENCY_BOUNDS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
];

/// A fixed-bucket latency histogram.
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The mean observation, if any.
    pub fn mean(&self) -> Option<Duration> {
        let count = self.count();
        (count > 0).then(|| Duration::from_micros(self.sum_us.load(Ordering::Relaxed) / count))
    }

    pub fn observe(&self, elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        if let Some(bucket) = LATENCY_BOUNDS_MS.iter().position(|bound| ms <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Writes the histogram in Prometheus text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BOUNDS_MS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                bound / 1000.0
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Where the storage writer's group commits spend their time: with
/// [`ServiceMetrics::request_read`] and `put_ack`, what an ack waits for.
#[derive(Default)]
pub struct CommitMetrics {
    /// Writing a commit's chunks to their segment files and syncing them.
    pub segment_write: Histogram,
    /// Committing the fjall batch that refers to them (summaries, shard
    /// states, dedup windows, cursors), its journal synced when durable.
    pub journal_commit: Histogram,
}

/// Counters the service keeps.
#[derive(Default)]
pub struct ServiceMetrics {
    /// Time from a PutRecords request's arrival to its durable ack.
    pub put_ack: Histogram,
    /// Time from a request stream's first bytes to the whole request read
    /// (a large batch crossing the network).
    pub request_read: Histogram,
    pub subscribers: AtomicI64,
    /// Open QUIC connections.
    pub connections: AtomicUsize,
    pub requests: AtomicU64,
    pub request_errors: AtomicU64,
    /// New clients sent a QUIC Retry (past a quarter of `handshakes_max`).
    pub handshake_retries: AtomicU64,
    /// New clients refused at `handshakes_max`.
    pub handshakes_refused: AtomicU64,
    /// Connections closed for not authenticating (timeout or eviction).
    pub unauthenticated_closed: AtomicU64,
}
