//! One sink worker: forwards one source shard in sequence order. Sync with
//! the upstream → read a batch → send → move the cursor past what the
//! upstream acknowledged → repeat; when caught up, wait until everything
//! sent is acknowledged. On any failure, back off (capped, jittered) and
//! sync again. The cursor moves only past acknowledged records, so a crash
//! repeats at most what was in flight (and the NATS upstream's sync does
//! not repeat even that).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use weir_proto::Record;

use super::upstream::Upstream;
use super::{SinkCursor, put_cursor};
use crate::storage::{Shard, Storage, StorageError, now_ms};

/// The first wait after a failure; it doubles up to the configured cap.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// How often a worker whose upstream knows where to resume saves its
/// cursor while it forwards.
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// What `sink describe` shows of a running worker.
#[derive(Debug, Clone)]
pub struct Progress {
    pub status: &'static str,
    pub cursor: SinkCursor,
    pub last_error: Option<String>,
}

impl Progress {
    pub fn new(cursor: SinkCursor) -> Self {
        Self {
            status: "forwarding",
            cursor,
            last_error: None,
        }
    }
}

/// `--bytes-per-sec`: a token bucket shared by the sink's workers, holding
/// at most one second of bytes.
pub struct ByteBucket {
    rate: u64,
    available: f64,
    refilled: Instant,
}

impl ByteBucket {
    pub fn new(rate: u64) -> Self {
        Self {
            rate,
            available: rate as f64,
            refilled: Instant::now(),
        }
    }

    /// Takes `bytes` (which may leave the bucket in debt) and says how long
    /// to wait before sending them.
    fn take(&mut self, bytes: u64) -> Duration {
        let now = Instant::now();
        let rate = self.rate as f64;
        self.available =
            (self.available + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        self.available -= bytes as f64;
        if self.available >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.available / rate)
        }
    }
}

pub(super) struct Worker {
    pub storage: Arc<Storage>,
    pub sink_id: u64,
    pub sink: String,
    pub shard: Arc<Shard>,
    pub upstream: Upstream,
    pub cursor: SinkCursor,
    pub batch_records: usize,
    pub batch_bytes_max: usize,
    pub linger: Duration,
    pub backoff_max: Duration,
    pub bucket: Option<Arc<tokio::sync::Mutex<ByteBucket>>>,
    pub progress: Arc<Mutex<Progress>>,
    /// Whether a batch went through since the last sync.
    pub acked_since_sync: bool,
    /// When the cursor was last saved, and whether it moved since.
    pub saved_at: Instant,
    pub cursor_unsaved: bool,
}

/// Where a worker's sending stands ahead of its cursor.
struct Pipeline {
    /// The source sequence to read and send next.
    next_to_send: u64,
    /// Sent but not yet acknowledged: (source sequence, data bytes),
    /// oldest first.
    in_flight: VecDeque<(u64, u64)>,
}

/// Why the worker stopped forwarding for now.
enum Stop {
    /// Told to stop (pause, removal, shutdown).
    Asked,
    /// A failure: back off, sync, go on.
    Failed(String),
}

impl Worker {
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_START;
        loop {
            let Stop::Failed(reason) = self.forward(&mut stop).await else {
                return;
            };
            if self.acked_since_sync {
                // It forwarded for a while before this failure: a new
                // outage starts with short waits again.
                backoff = BACKOFF_START;
            }
            tracing::warn!(sink = %self.sink, shard = self.shard.index, %reason, "sink backing off");
            self.report("backing off", Some(reason));
            let wait = jittered(backoff);
            backoff = (backoff * 2).min(self.backoff_max);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Syncs with the upstream, then forwards until a failure or a stop.
    async fn forward(&mut self, stop: &mut watch::Receiver<bool>) -> Stop {
        self.acked_since_sync = false;
        let resume = tokio::select! {
            synced = self.upstream.sync() => synced,
            _ = stop.changed() => return Stop::Asked,
        };
        match resume {
            Ok(Some(next)) if next > self.cursor.next_sequence => {
                // The upstream holds records the cursor had not counted (a
                // crash before the cursor commit): they are not sent again.
                tracing::info!(sink = %self.sink, shard = self.shard.index, from = self.cursor.next_sequence, to = next, "upstream is ahead of the sink's cursor; skipping what it already has");
                let cursor = SinkCursor {
                    next_sequence: next,
                    // Forwarded by this sink before its cursor was saved
                    // (their bytes are not known here), unless counted
                    // before a seek moved the cursor back.
                    records_forwarded: self.cursor.records_forwarded
                        + next.saturating_sub(
                            self.cursor.next_sequence.max(self.cursor.counted_below),
                        ),
                    ..self.cursor
                };
                if let Err(error) = self.commit(cursor).await {
                    return Stop::Failed(format!("saving the cursor: {error}"));
                }
            }
            Ok(_) => {}
            Err(error) => return Stop::Failed(error.to_string()),
        }
        self.report("forwarding", None);
        let mut pipeline = Pipeline {
            next_to_send: self.cursor.next_sequence,
            in_flight: VecDeque::new(),
        };
        let mut tip = self.shard.watch_tip();
        loop {
            if *stop.borrow() {
                return Stop::Asked;
            }
            tip.borrow_and_update();
            let records = match self.read_batch(&mut pipeline).await {
                Ok(records) => records,
                Err(error) => return Stop::Failed(format!("reading the source: {error}")),
            };
            if records.is_empty() {
                if self.shard_deleted() {
                    return Stop::Asked;
                }
                // Caught up: what is in flight must be acknowledged (and
                // the cursor saved) before waiting for more.
                if let Err(stopped) = self.flush(&mut pipeline, stop).await {
                    return stopped;
                }
                if self.cursor_unsaved
                    && let Err(error) = self.commit(self.cursor).await
                {
                    return Stop::Failed(format!("saving the cursor: {error}"));
                }
                tokio::select! {
                    _ = tip.changed() => continue,
                    _ = stop.changed() => return Stop::Asked,
                }
            }
            let records = if records.len() < self.batch_records && !self.linger.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(self.linger) => {}
                    _ = stop.changed() => return Stop::Asked,
                }
                match self.read_batch(&mut pipeline).await {
                    Ok(more) => more,
                    Err(error) => return Stop::Failed(format!("reading the source: {error}")),
                }
            } else {
                records
            };
            let bytes: u64 = records.iter().map(|r| r.data.len() as u64).sum();
            if let Some(bucket) = &self.bucket {
                let wait = bucket.lock().await.take(bytes);
                if !wait.is_zero() {
                    // Nothing stays in flight through a wait that may
                    // outlast the upstream's patience with an open batch.
                    if let Err(stopped) = self.flush(&mut pipeline, stop).await {
                        return stopped;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return Stop::Asked,
                    }
                }
            }
            let sent = tokio::select! {
                sent = self.upstream.send(&records) => sent,
                _ = stop.changed() => return Stop::Asked,
            };
            if let Some(last) = records.last() {
                pipeline.next_to_send = last.sequence + 1;
            }
            pipeline.in_flight.extend(
                records
                    .iter()
                    .map(|record| (record.sequence, record.data.len() as u64)),
            );
            match sent {
                Ok(acked) => {
                    if let Err(error) = self.acknowledged(acked, &mut pipeline).await {
                        return Stop::Failed(format!("saving the cursor: {error}"));
                    }
                }
                Err(error) => return Stop::Failed(error.to_string()),
            }
        }
    }

    /// Waits until the upstream acknowledged everything in flight.
    async fn flush(
        &mut self,
        pipeline: &mut Pipeline,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        let flushed = tokio::select! {
            flushed = self.upstream.flush() => flushed,
            _ = stop.changed() => return Err(Stop::Asked),
        };
        let acked = flushed.map_err(|error| Stop::Failed(error.to_string()))?;
        self.acknowledged(acked, pipeline)
            .await
            .map_err(|error| Stop::Failed(format!("saving the cursor: {error}")))
    }

    /// Moves the cursor past the records the upstream acknowledged (through
    /// source sequence `acked`).
    async fn acknowledged(
        &mut self,
        acked: Option<u64>,
        pipeline: &mut Pipeline,
    ) -> Result<(), StorageError> {
        let Some(acked) = acked else {
            return Ok(());
        };
        let (mut records, mut bytes) = (0, 0);
        while let Some(&(sequence, size)) = pipeline.in_flight.front()
            && sequence <= acked
        {
            pipeline.in_flight.pop_front();
            records += 1;
            bytes += size;
        }
        let cursor = SinkCursor {
            // With nothing in flight, past records retention removed too.
            next_sequence: if pipeline.in_flight.is_empty() {
                pipeline.next_to_send
            } else {
                acked + 1
            },
            records_forwarded: self.cursor.records_forwarded + records,
            bytes_forwarded: self.cursor.bytes_forwarded + bytes,
            last_ack_ms: Some(now_ms()),
            ..self.cursor
        };
        self.acked_since_sync = true;
        if self.upstream.knows_position() && self.saved_at.elapsed() < CURSOR_SAVE_INTERVAL {
            // The upstream says where to resume: the cursor is only a
            // record of progress, saved at most once a second (and when
            // the shard is caught up) instead of an fsync a batch.
            self.cursor = cursor;
            self.cursor_unsaved = true;
            self.lock_progress().cursor = cursor;
            Ok(())
        } else {
            self.commit(cursor).await
        }
    }

    /// The next records to send; records retention removed before they
    /// were forwarded are reported and moved past.
    async fn read_batch(&mut self, pipeline: &mut Pipeline) -> Result<Vec<Record>, StorageError> {
        let read = self
            .storage
            .read_in_order(
                &self.shard,
                pipeline.next_to_send,
                self.batch_records,
                self.batch_bytes_max,
            )
            .await?;
        let lost = read.lost;
        if lost > 0 {
            tracing::warn!(sink = %self.sink, shard = self.shard.index, lost, "retention removed records before they were forwarded");
            self.report(
                "forwarding",
                Some(format!(
                    "retention removed {lost} records before they were forwarded"
                )),
            );
            pipeline.next_to_send += lost;
        }
        let damaged = read.damaged;
        if damaged > 0 {
            let (first, last) = (pipeline.next_to_send, pipeline.next_to_send + damaged - 1);
            tracing::error!(sink = %self.sink, shard = self.shard.index, first, last, "records damaged on disk skipped");
            self.report(
                "forwarding",
                Some(format!(
                    "records {first} to {last} were damaged on disk and skipped unforwarded"
                )),
            );
            pipeline.next_to_send += damaged;
        }
        if (lost > 0 || damaged > 0) && pipeline.in_flight.is_empty() {
            self.cursor.next_sequence = pipeline.next_to_send;
            self.cursor_unsaved = true;
        }
        Ok(read.records)
    }

    /// Saves the cursor durably, then makes it the worker's.
    async fn commit(&mut self, cursor: SinkCursor) -> Result<(), StorageError> {
        let (storage, sink_id, shard) = (self.storage.clone(), self.sink_id, self.shard.index);
        tokio::task::spawn_blocking(move || put_cursor(&storage, sink_id, shard, &cursor))
            .await
            .map_err(|_| StorageError::WriterStopped)??;
        self.cursor = cursor;
        self.cursor_unsaved = false;
        self.saved_at = Instant::now();
        self.lock_progress().cursor = cursor;
        Ok(())
    }

    fn shard_deleted(&self) -> bool {
        self.storage
            .stream(&self.shard.stream_name)
            .map_or(true, |stream| stream.id != self.shard.stream_id)
    }

    fn report(&self, status: &'static str, error: Option<String>) {
        let mut progress = self.lock_progress();
        progress.status = status;
        if error.is_some() {
            progress.last_error = error;
        }
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `wait` ± 50 %, so workers that failed together do not retry together.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(rand::random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bucket_holds_one_second_and_makes_debts_wait() {
        let mut bucket = ByteBucket::new(1_000);
        assert_eq!(bucket.take(600), Duration::ZERO);
        assert_eq!(bucket.take(400), Duration::ZERO);
        let wait = bucket.take(500);
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn jitter_stays_within_half_either_way() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_millis(1_000));
            assert!((500..=1_500).contains(&wait.as_millis()), "{wait:?}");
        }
    }
}
