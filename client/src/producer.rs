//! A batching, idempotent producer that keeps each shard's records in the
//! order they were sent.
//!
//! Records are routed to their shard here, as the server routes them (the
//! stream's shard count is learnt once, from DescribeStream), and collected
//! into one batch per shard until it is full or `linger` has passed since
//! its first record. Each batch is stamped with this producer's id and the
//! next batch sequence number and encoded once. Each shard has at most one
//! batch in flight, and up to `in_flight_batches_max` shards send at once:
//! so a shard's batches are stored in the order they were sent, and a
//! batch that fails in a retryable way (connection lost, no server
//! answering a reconnect, server shutting down, storage hiccup) is sent
//! again with the same stamp — stored once — before the shard's next batch
//! goes out. Per-key order holds, as Kinesis and Kafka users expect.
//!
//! What a [`PendingAck`] resolves to: an [`Ack`] with the record's
//! position (and whether an earlier attempt had already stored it); a per-record refusal
//! (invalid record, unknown stream, permission denied: never stored); or,
//! once `retries_max` retries are spent, the last retryable error — then
//! the record may or may not be stored, and re-sending it through a new
//! producer can store it twice.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use weir_proto::routing::shard_for;
use weir_proto::{ProducerStamp, PutRecord, PutResult, Request};

use crate::connection::{encode, expect_put_results};
use crate::{Client, ClientError};

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first.
    pub linger: Duration,
    /// Records per batch (the server's `batch_records_max` is the ceiling).
    pub batch_records_max: usize,
    /// Key and data bytes per batch (the server's `request_bytes_max` is the ceiling).
    pub batch_bytes_max: usize,
    /// Batches sent and not yet answered (at most one per shard, so a
    /// shard's records stay in order).
    pub in_flight_batches_max: usize,
    /// Records accepted by `send` and not yet batched, before `send` waits.
    pub queue_records_max: usize,
    /// Attempts per batch after the first, for retryable failures.
    pub retries_max: u32,
    pub retry_backoff: Duration,
    /// Fixed producer id; a random one is chosen when `None`. Keep it fixed
    /// (and the batch sequence persisted) only if retries must survive a
    /// restart of the producing process.
    pub producer_id: Option<u64>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_records_max: weir_proto::defaults::BATCH_RECORDS_MAX,
            batch_bytes_max: weir_proto::defaults::REQUEST_BYTES_MAX / 2,
            in_flight_batches_max: 8,
            queue_records_max: 10_000,
            retries_max: 20,
            retry_backoff: Duration::from_millis(100),
            producer_id: None,
        }
    }
}

type AckSender = oneshot::Sender<Result<Ack, ClientError>>;

enum Item {
    Record(PutRecord, AckSender),
    Flush(oneshot::Sender<()>),
}

/// Sends records in stamped batches; see the module docs. Clones share
/// one producer (one id, one set of batches).
#[derive(Clone)]
pub struct Producer {
    items: mpsc::Sender<Item>,
    producer_id: u64,
}

/// Where a record was stored, once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub shard: u32,
    pub sequence: u64,
    /// The batch was retried (its first answer was lost) and the server
    /// answered from its dedup window: an earlier attempt stored the
    /// record, this one did not store it again.
    pub duplicate: bool,
}

/// Resolves to the record's [`Ack`] once it is durable, or to why it
/// failed for good.
pub struct PendingAck(oneshot::Receiver<Result<Ack, ClientError>>);

impl Future for PendingAck {
    type Output = Result<Ack, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(Err(ClientError::Closed)))
    }
}

impl Producer {
    pub(crate) fn new(client: Client, stream: &str, config: ProducerConfig) -> Self {
        let producer_id = config.producer_id.unwrap_or_else(rand::random);
        let (items, receiver) = mpsc::channel(config.queue_records_max.max(1));
        let (done, finished) = mpsc::unbounded_channel();
        let batcher = Batcher {
            client,
            stream: stream.to_owned(),
            producer_id,
            next_batch_sequence: 0,
            config,
            lanes: Vec::new(),
            sending: 0,
            done,
            flushes: Vec::new(),
        };
        tokio::spawn(batcher.run(receiver, finished));
        Self { items, producer_id }
    }

    pub fn producer_id(&self) -> u64 {
        self.producer_id
    }

    /// Queues a record; waits only while the queue is full. The returned
    /// [`PendingAck`] resolves when the record is stored (or has failed for good).
    pub async fn send(
        &self,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Result<PendingAck, ClientError> {
        self.send_record(PutRecord {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        })
        .await
    }

    pub async fn send_record(&self, record: PutRecord) -> Result<PendingAck, ClientError> {
        let (ack, receiver) = oneshot::channel();
        self.items
            .send(Item::Record(record, ack))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(PendingAck(receiver))
    }

    /// Sends the current batches now and waits until every record queued
    /// before this call is answered.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, receiver) = oneshot::channel();
        self.items
            .send(Item::Flush(done))
            .await
            .map_err(|_| ClientError::Closed)?;
        receiver.await.map_err(|_| ClientError::Closed)
    }

    /// Sends what is queued, waits for every answer, and closes this
    /// handle (other clones keep the producer open).
    pub async fn close(self) -> Result<(), ClientError> {
        self.flush().await
    }
}

/// Records of one shard collected for one request.
#[derive(Default)]
struct Batch {
    records: Vec<PutRecord>,
    acks: Vec<AckSender>,
    bytes: usize,
}

/// One shard's batches: the one being filled, those waiting their turn,
/// and whether one is in flight.
#[derive(Default)]
struct Lane {
    open: Batch,
    /// When `open` goes out: its first record plus `linger`.
    deadline: Option<Instant>,
    ready: VecDeque<Batch>,
    sending: bool,
}

impl Lane {
    fn close_open(&mut self) {
        self.deadline = None;
        if !self.open.records.is_empty() {
            self.ready.push_back(std::mem::take(&mut self.open));
        }
    }

    fn idle(&self) -> bool {
        !self.sending && self.ready.is_empty() && self.open.records.is_empty()
    }

    fn buffered_records(&self) -> usize {
        self.open.records.len() + self.ready.iter().map(|b| b.records.len()).sum::<usize>()
    }
}

struct Batcher {
    client: Client,
    stream: String,
    producer_id: u64,
    next_batch_sequence: u64,
    config: ProducerConfig,
    /// One per shard of the stream, once its shard count is known.
    lanes: Vec<Lane>,
    /// Lanes with a batch in flight.
    sending: usize,
    /// Told by a lane's send task when its batch is answered.
    done: mpsc::UnboundedSender<usize>,
    /// Flushes waiting for every lane to be idle.
    flushes: Vec<oneshot::Sender<()>>,
}

impl Batcher {
    async fn run(
        mut self,
        mut items: mpsc::Receiver<Item>,
        mut finished: mpsc::UnboundedReceiver<usize>,
    ) {
        let mut closed = false;
        loop {
            let deadline = self.lanes.iter().filter_map(|lane| lane.deadline).min();
            let room = self.buffered_records() < self.config.queue_records_max.max(1);
            tokio::select! {
                item = items.recv(), if room && !closed => match item {
                    Some(Item::Record(record, ack)) => self.add(record, ack).await,
                    Some(Item::Flush(done)) => {
                        self.lanes.iter_mut().for_each(Lane::close_open);
                        self.flushes.push(done);
                    }
                    None => {
                        closed = true;
                        self.lanes.iter_mut().for_each(Lane::close_open);
                    }
                },
                Some(shard) = finished.recv() => {
                    if let Some(lane) = self.lanes.get_mut(shard) {
                        lane.sending = false;
                    }
                    self.sending -= 1;
                }
                () = sleep_until(deadline), if deadline.is_some() => {
                    let now = Instant::now();
                    for lane in &mut self.lanes {
                        if lane.deadline.is_some_and(|at| at <= now) {
                            lane.close_open();
                        }
                    }
                }
            }
            self.send_ready();
            if self.lanes.iter().all(Lane::idle) {
                for done in self.flushes.drain(..) {
                    let _ = done.send(());
                }
                if closed {
                    return;
                }
            }
        }
    }

    fn buffered_records(&self) -> usize {
        self.lanes.iter().map(Lane::buffered_records).sum()
    }

    /// Routes a record to its shard's open batch, closing the batch when
    /// it is full.
    async fn add(&mut self, record: PutRecord, ack: AckSender) {
        if self.lanes.is_empty() {
            let (retries_max, backoff) = (self.config.retries_max, self.config.retry_backoff);
            let describe = retrying(retries_max, backoff, || async {
                let outcome = self.client.describe_stream(&self.stream).await;
                let retry = outcome.as_ref().err().is_some_and(may_pass);
                (outcome, retry)
            });
            match describe.await {
                Ok(description) => {
                    self.lanes = (0..description.shards.len().max(1))
                        .map(|_| Lane::default())
                        .collect();
                }
                Err(error) => {
                    let _ = ack.send(Err(error));
                    return;
                }
            }
        }
        let shard_count = self.lanes.len() as u32;
        let shard = shard_for(&record.partition_key, record.explicit_hash_key, shard_count);
        let lane = &mut self.lanes[shard as usize];
        let record_bytes = record.partition_key.len() + record.data.len();
        if !lane.open.records.is_empty()
            && lane.open.bytes + record_bytes > self.config.batch_bytes_max
        {
            lane.close_open();
        }
        lane.open.bytes += record_bytes;
        lane.open.records.push(record);
        lane.open.acks.push(ack);
        if lane.open.records.len() >= self.config.batch_records_max {
            lane.close_open();
        } else if lane.deadline.is_none() {
            lane.deadline = Some(Instant::now() + self.config.linger);
        }
    }

    /// Starts the next batch of every lane with none in flight, while
    /// fewer than `in_flight_batches_max` lanes are sending.
    fn send_ready(&mut self) {
        let in_flight_max = self.config.in_flight_batches_max.max(1);
        for shard in 0..self.lanes.len() {
            if self.sending >= in_flight_max {
                return;
            }
            let lane = &mut self.lanes[shard];
            if lane.sending {
                continue;
            }
            let Some(batch) = lane.ready.pop_front() else {
                continue;
            };
            lane.sending = true;
            self.sending += 1;
            let stamp = ProducerStamp {
                producer_id: self.producer_id,
                batch_sequence: self.next_batch_sequence,
            };
            self.next_batch_sequence += 1;
            let frame = encode(&Request::PutRecords {
                stream: self.stream.clone(),
                producer: Some(stamp),
                records: batch.records,
            });
            let (client, done) = (self.client.clone(), self.done.clone());
            let (retries_max, backoff) = (self.config.retries_max, self.config.retry_backoff);
            let acks = batch.acks;
            tokio::spawn(async move {
                let outcome =
                    send_with_retries(&client, &frame, acks.len(), retries_max, backoff).await;
                answer(acks, outcome);
                let _ = done.send(shard);
            });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves each record's [`PendingAck`] from its batch's outcome.
fn answer(acks: Vec<AckSender>, outcome: Result<Vec<PutResult>, ClientError>) {
    match outcome {
        Ok(results) => {
            for (ack, result) in acks.into_iter().zip(results) {
                let _ = ack.send(match result {
                    PutResult::Stored {
                        shard,
                        sequence,
                        duplicate,
                    } => Ok(Ack {
                        shard,
                        sequence,
                        duplicate,
                    }),
                    PutResult::Failed { code, message } => {
                        Err(ClientError::Server { code, message })
                    }
                });
            }
        }
        Err(error) => {
            for ack in acks {
                let _ = ack.send(Err(error.clone()));
            }
        }
    }
}

/// Sends one stamped batch until every record has a final answer.
async fn send_with_retries(
    client: &Client,
    frame: &Bytes,
    records: usize,
    retries_max: u32,
    backoff: Duration,
) -> Result<Vec<PutResult>, ClientError> {
    retrying(retries_max, backoff, || async {
        let outcome = client.call_frame(frame).await.and_then(expect_put_results);
        let retry = match &outcome {
            Ok(results) if results.len() != records => {
                return (
                    Err(ClientError::Protocol(format!(
                        "{} results for {records} records",
                        results.len()
                    ))),
                    false,
                );
            }
            // Records that failed retryably are retried with the whole
            // batch: the server answers the stored ones from its dedup state.
            Ok(results) => results
                .iter()
                .any(|r| matches!(r, PutResult::Failed { code, .. } if code.is_retryable())),
            Err(error) => may_pass(error),
        };
        (outcome, retry)
    })
    .await
}

/// Whether a failed call may succeed if made again. The stamp makes a
/// retried batch safe, so this includes reconnect failures: the attempt
/// that lost its connection may have been stored.
fn may_pass(error: &ClientError) -> bool {
    error.is_retryable() || matches!(error, ClientError::Connect { .. })
}

/// Makes `attempt` (which answers its outcome and whether to retry it) up
/// to `retries_max` more times, backing off a little longer each time.
async fn retrying<T, F, Fut>(retries_max: u32, backoff: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = (T, bool)>,
{
    let mut retries = 0;
    loop {
        let (outcome, retry) = attempt().await;
        if !retry || retries >= retries_max {
            return outcome;
        }
        retries += 1;
        tracing::debug!(retries, "retrying with the same producer stamp");
        tokio::time::sleep(backoff.min(Duration::from_secs(2)) * retries.min(10)).await;
    }
}
