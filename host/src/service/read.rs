//! GetRecords and Subscribe.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;
use weir_proto::{ErrorCode, Position, RecordBatch, Response};

use super::{RequestError, Service, blocking};
use crate::storage::{Shard, StorageError};

/// How long a subscription waits before reading again while storage is
/// being reopened.
const REOPEN_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

pub async fn get_records(
    service: &Arc<Service>,
    stream: &str,
    shard: u32,
    from: Position,
    limit: u32,
) -> Result<Response, RequestError> {
    let limit_max = service.limits.get_records_max;
    if limit == 0 || limit > limit_max {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            format!("limit must be 1 to {limit_max} records (get_records_max), not {limit}"),
        ));
    }
    let shard = service.storage.stream(stream)?.shard(shard)?.clone();
    let storage = service.storage.clone();
    let bytes_max = service.limits.read_batch_bytes_max;
    let batch = blocking(move || {
        let start = storage.resolve(&shard, from)?;
        Ok(storage.read(&shard, start, limit as usize, bytes_max)?)
    })
    .await?;
    Ok(Response::Records(batch))
}

/// A live read of one shard: yields batches of committed records and, once
/// caught up, waits for the writer to commit more. It holds at most one batch,
/// and the transport awaits each send, so a subscriber that stops reading
/// stalls only itself (QUIC flow control), never producers.
pub struct Subscription {
    service: Arc<Service>,
    shard: Arc<Shard>,
    next_sequence: u64,
    tip: watch::Receiver<u64>,
}

pub async fn subscribe(
    service: &Arc<Service>,
    stream: &str,
    shard: u32,
    from: Position,
) -> Result<Subscription, RequestError> {
    let shard = service.storage.stream(stream)?.shard(shard)?.clone();
    let subscribers_max = service.limits.subscribers_per_shard_max;
    if shard.subscribers.fetch_add(1, Ordering::AcqRel) >= subscribers_max {
        shard.subscribers.fetch_sub(1, Ordering::AcqRel);
        return Err(RequestError::new(
            ErrorCode::LimitExceeded,
            format!(
                "shard {} of {stream:?} has subscribers_per_shard_max ({subscribers_max}) subscribers",
                shard.index
            ),
        ));
    }
    let tip = shard.watch_tip();
    let storage = service.storage.clone();
    let resolve_shard = shard.clone();
    let next_sequence = match blocking(move || Ok(storage.resolve(&resolve_shard, from)?)).await {
        Ok(next_sequence) => next_sequence,
        Err(error) => {
            shard.subscribers.fetch_sub(1, Ordering::AcqRel);
            return Err(error);
        }
    };
    service.metrics.subscribers.fetch_add(1, Ordering::Relaxed);
    Ok(Subscription {
        service: service.clone(),
        shard,
        next_sequence,
        tip,
    })
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.service
            .metrics
            .subscribers
            .fetch_sub(1, Ordering::Relaxed);
        self.shard.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Subscription {
    /// The empty batch that confirms the subscription: it names the
    /// sequence number the feed starts at and how far behind the tip it is.
    pub fn confirmation(&self) -> RecordBatch {
        let tip = *self.tip.borrow();
        RecordBatch {
            records: Vec::new(),
            next_sequence: self.next_sequence,
            records_behind_tip: tip.saturating_sub(self.next_sequence),
            millis_behind_tip: 0,
        }
    }

    /// The stream this subscription reads.
    pub fn stream(&self) -> &str {
        &self.shard.stream_name
    }

    /// The next batch of records; waits while there are none.
    pub async fn next_batch(&mut self) -> Result<RecordBatch, RequestError> {
        loop {
            // Mark the current tip seen before reading, so a commit racing
            // with the read still wakes the wait below.
            self.tip.borrow_and_update();
            let storage = self.service.storage.clone();
            let shard = self.shard.clone();
            let start = self.next_sequence;
            let limit = self.service.limits.subscribe_batch_records_max;
            let bytes_max = self.service.limits.read_batch_bytes_max;
            let read = blocking(move || Ok(storage.read(&shard, start, limit, bytes_max))).await?;
            let batch = match read {
                // Storage is being reopened after a failed write (for
                // milliseconds, once the disk has room): wait it out
                // rather than end the subscription.
                Err(StorageError::Recovering) => {
                    tokio::time::sleep(REOPEN_RETRY).await;
                    continue;
                }
                read => read?,
            };
            self.next_sequence = batch.next_sequence;
            if !batch.records.is_empty() {
                return Ok(batch);
            }
            if self.shard.stream_is_deleted() || self.tip.changed().await.is_err() {
                return Err(StorageError::StreamNotFound {
                    name: self.shard.stream_name.clone(),
                }
                .into());
            }
        }
    }
}
