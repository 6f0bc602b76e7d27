//! A batching, idempotent producer.
//!
//! Records are collected into a batch until it is full or `linger` has
//! passed since its first record; each batch is stamped with this producer's
//! id and the next batch sequence number, encoded once, and sent with up to
//! `in_flight_batches_max` batches outstanding. A batch that fails in a
//! retryable way (connection lost, no server answering a reconnect, server
//! shutting down, storage hiccup) is sent again with the same stamp, so the
//! server stores each record once.
//!
//! What reaches an [`Ack`]: the record's position; a per-record refusal
//! (invalid record, unknown stream, permission denied: never stored); or,
//! once `retries_max` retries are spent, the last retryable error — then
//! the record may or may not be stored, and re-sending it through a new
//! producer can store it twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
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
    /// Batches sent and not yet answered.
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

type AckSender = oneshot::Sender<Result<(u32, u64), ClientError>>;

enum Item {
    Record(PutRecord, AckSender),
    Flush(oneshot::Sender<()>),
}

/// Sends records in stamped batches; see the module docs.
pub struct Producer {
    items: mpsc::Sender<Item>,
    producer_id: u64,
}

/// Resolves to the record's (shard, sequence number) once it is durable.
pub struct Ack(oneshot::Receiver<Result<(u32, u64), ClientError>>);

impl Future for Ack {
    type Output = Result<(u32, u64), ClientError>;

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
        let batcher = Batcher {
            client,
            stream: stream.to_owned(),
            producer_id,
            next_batch_sequence: 0,
            in_flight: Arc::new(Semaphore::new(config.in_flight_batches_max.max(1))),
            config,
            records: Vec::new(),
            acks: Vec::new(),
            bytes: 0,
        };
        tokio::spawn(batcher.run(receiver));
        Self { items, producer_id }
    }

    pub fn producer_id(&self) -> u64 {
        self.producer_id
    }

    /// Queues a record; waits only while the queue is full. The returned
    /// [`Ack`] resolves when the record is stored (or has failed for good).
    pub async fn send(
        &self,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Result<Ack, ClientError> {
        self.send_record(PutRecord {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        })
        .await
    }

    pub async fn send_record(&self, record: PutRecord) -> Result<Ack, ClientError> {
        let (ack, receiver) = oneshot::channel();
        self.items
            .send(Item::Record(record, ack))
            .await
            .map_err(|_| ClientError::Closed)?;
        Ok(Ack(receiver))
    }

    /// Sends the current batch now and waits until every record queued
    /// before this call is answered.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let (done, receiver) = oneshot::channel();
        self.items
            .send(Item::Flush(done))
            .await
            .map_err(|_| ClientError::Closed)?;
        receiver.await.map_err(|_| ClientError::Closed)
    }
}

struct Batcher {
    client: Client,
    stream: String,
    producer_id: u64,
    next_batch_sequence: u64,
    in_flight: Arc<Semaphore>,
    config: ProducerConfig,
    records: Vec<PutRecord>,
    acks: Vec<AckSender>,
    bytes: usize,
}

impl Batcher {
    async fn run(mut self, mut items: mpsc::Receiver<Item>) {
        let mut deadline: Option<Instant> = None;
        loop {
            let item = match deadline {
                Some(at) => tokio::select! {
                    item = items.recv() => item,
                    _ = tokio::time::sleep_until(at) => {
                        self.dispatch().await;
                        deadline = None;
                        continue;
                    }
                },
                None => items.recv().await,
            };
            match item {
                Some(Item::Record(record, ack)) => {
                    let record_bytes = record.partition_key.len() + record.data.len();
                    if !self.records.is_empty()
                        && self.bytes + record_bytes > self.config.batch_bytes_max
                    {
                        self.dispatch().await;
                    }
                    self.bytes += record_bytes;
                    self.records.push(record);
                    self.acks.push(ack);
                    if self.records.len() >= self.config.batch_records_max {
                        self.dispatch().await;
                        deadline = None;
                    } else if deadline.is_none() {
                        deadline = Some(Instant::now() + self.config.linger);
                    }
                }
                Some(Item::Flush(done)) => {
                    self.dispatch().await;
                    deadline = None;
                    self.wait_idle().await;
                    let _ = done.send(());
                }
                None => {
                    self.dispatch().await;
                    self.wait_idle().await;
                    return;
                }
            }
        }
    }

    async fn wait_idle(&self) {
        let all = self.config.in_flight_batches_max.max(1) as u32;
        if let Ok(permits) = self.in_flight.acquire_many(all).await {
            drop(permits);
        }
    }

    async fn dispatch(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return;
        };
        let stamp = ProducerStamp {
            producer_id: self.producer_id,
            batch_sequence: self.next_batch_sequence,
        };
        self.next_batch_sequence += 1;
        self.bytes = 0;
        let request = Request::PutRecords {
            stream: self.stream.clone(),
            producer: Some(stamp),
            records: std::mem::take(&mut self.records),
        };
        let frame = encode(&request);
        let acks = std::mem::take(&mut self.acks);
        let client = self.client.clone();
        let (retries_max, backoff) = (self.config.retries_max, self.config.retry_backoff);
        tokio::spawn(async move {
            let outcome =
                send_with_retries(&client, &frame, acks.len(), retries_max, backoff).await;
            drop(permit);
            match outcome {
                Ok(results) => {
                    for (ack, result) in acks.into_iter().zip(results) {
                        let _ = ack.send(match result {
                            PutResult::Stored { shard, sequence } => Ok((shard, sequence)),
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
        });
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
    let mut attempt = 0;
    loop {
        let outcome = client.call_frame(frame).await.and_then(expect_put_results);
        let retry = match &outcome {
            Ok(results) if results.len() != records => {
                return Err(ClientError::Protocol(format!(
                    "{} results for {records} records",
                    results.len()
                )));
            }
            // Records that failed retryably are retried with the whole
            // batch: the server answers the stored ones from its dedup state.
            Ok(results) => results
                .iter()
                .any(|r| matches!(r, PutResult::Failed { code, .. } if code.is_retryable())),
            // The stamp makes any retry safe, so a batch is retried after
            // every failure that may pass — reconnecting included: the
            // attempt that lost its connection may have been stored.
            Err(error) => error.is_retryable() || matches!(error, ClientError::Connect { .. }),
        };
        if !retry || attempt >= retries_max {
            return outcome;
        }
        attempt += 1;
        tracing::debug!(attempt, "retrying batch with the same producer stamp");
        tokio::time::sleep(backoff.min(Duration::from_secs(2)) * attempt.min(10)).await;
    }
}
