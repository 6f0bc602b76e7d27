//! The Kafka upstream (any Kafka-protocol broker): shard N of the source
//! goes to partition N mod the topic's partition count, the partition key
//! becomes the Kafka key, and headers carry the Weir coordinates. The only
//! module that imports rskafka.
//!
//! At least once, no loss: the cursor moves only after the broker
//! acknowledged a produce. Without an idempotent producer (rskafka has
//! none), duplicates are avoided the way the NATS sink does it: before it
//! sends, the worker reads the partition's last record, and if this shard
//! wrote it, forwarding resumes right after its `weir-sequence`. That
//! covers a lost ack and a Weir crash; a produce that reaches the broker
//! only after its timeout was given up on can still be stored twice. With
//! fewer partitions than shards, partitions are shared and the tail may
//! be another shard's: forwarding then goes by Weir's cursor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record as KafkaRecord;
use tokio::sync::OnceCell;
use weir_proto::Record;

use super::upstream::{TlsFiles, UpstreamError};
use crate::storage::Shard;

const SOURCE_HEADER: &str = "weir-source";
const STREAM_HEADER: &str = "weir-stream";
const SHARD_HEADER: &str = "weir-shard";
const SEQUENCE_HEADER: &str = "weir-sequence";
/// Record data in one produce request at most: under the 1 MB a broker
/// takes by default (`message.max.bytes`).
const PRODUCE_BYTES_MAX: usize = 900 * 1024;
/// Bytes one tail read asks for: enough for the last record.
const TAIL_FETCH_BYTES: i32 = 2 * 1024 * 1024;

struct Shared {
    brokers: Vec<String>,
    topic: String,
    /// Over TLS: the files to read.
    tls: Option<TlsFiles>,
    sink: String,
    request_timeout: Duration,
    client: OnceCell<Client>,
}

impl Shared {
    async fn client(&self) -> Result<&Client, UpstreamError> {
        self.client
            .get_or_try_init(|| async {
                let mut builder = ClientBuilder::new(self.brokers.clone())
                    .client_id(format!("weir sink {}", self.sink))
                    .backoff_config(self.backoff());
                if let Some(tls) = &self.tls {
                    builder = builder.tls_config(Arc::new(tls.client_config(&[]).await?));
                }
                tokio::time::timeout(self.request_timeout, builder.build())
                    .await
                    .map_err(|_| {
                        UpstreamError(format!(
                            "no Kafka broker answered at {}",
                            self.brokers.join(",")
                        ))
                    })?
                    .map_err(|error| UpstreamError(format!("connecting to Kafka: {error}")))
            })
            .await
    }

    /// rskafka retries by itself; bounded by the request timeout so the
    /// worker sees failures and backs off in its own way.
    fn backoff(&self) -> BackoffConfig {
        BackoffConfig {
            init_backoff: CLIENT_RETRY_BACKOFF_MIN,
            max_backoff: CLIENT_RETRY_BACKOFF_MAX,
            base: 2.0,
            deadline: Some(self.request_timeout),
        }
    }
}

/// rskafka's own retries within one request: first wait and longest wait.
const CLIENT_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(100);
const CLIENT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(in crate::sink) struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    pub fn new(
        brokers: Vec<String>,
        topic: String,
        tls: Option<TlsFiles>,
        sink: &str,
        request_timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                brokers,
                topic,
                tls,
                sink: sink.to_owned(),
                request_timeout,
                client: OnceCell::new(),
            }),
        }
    }

    pub fn for_shard(&self, box_id: &str, shard: &Shard) -> ShardPublisher {
        ShardPublisher {
            shared: self.shared.clone(),
            source: format!("{box_id}/{}", shard.stream_id),
            stream_name: shard.stream_name.clone(),
            shard: shard.index,
            partition: None,
        }
    }
}

pub(in crate::sink) struct ShardPublisher {
    shared: Arc<Shared>,
    /// `{box}/{stream id}`: which box and stream a record came from.
    source: String,
    stream_name: String,
    shard: u32,
    partition: Option<PartitionClient>,
}

impl ShardPublisher {
    pub async fn sync(&mut self) -> Result<Option<u64>, UpstreamError> {
        self.partition = None;
        let shared = self.shared.clone();
        let timeout = shared.request_timeout;
        let within = |what: &'static str| {
            move |_| {
                UpstreamError(format!(
                    "Kafka did not answer {what} within {} ms (sinks.sink_request_timeout_ms)",
                    timeout.as_millis()
                ))
            }
        };
        let client = shared.client().await?;
        let topics = tokio::time::timeout(timeout, client.list_topics())
            .await
            .map_err(within("listing topics"))?
            .map_err(|error| UpstreamError(format!("listing Kafka topics: {error}")))?;
        let partitions = topics
            .iter()
            .find(|topic| topic.name == shared.topic)
            .map(|topic| topic.partitions.len())
            .filter(|count| *count > 0)
            .ok_or_else(|| {
                UpstreamError(format!(
                    "no Kafka topic {}: create it, with at least as many partitions as the stream has shards",
                    shared.topic
                ))
            })?;
        let partition = (self.shard as usize % partitions) as i32;
        let client = tokio::time::timeout(
            timeout,
            client.partition_client(shared.topic.clone(), partition, UnknownTopicHandling::Error),
        )
        .await
        .map_err(within("for its partition leader"))?
        .map_err(|error| {
            UpstreamError(format!(
                "reaching partition {partition} of {}: {error}",
                shared.topic
            ))
        })?;
        let resume = self.resume_point(&client).await?;
        self.partition = Some(client);
        Ok(resume)
    }

    /// The sequence after the last record this shard wrote to the
    /// partition, if the partition's last record is one.
    async fn resume_point(&self, client: &PartitionClient) -> Result<Option<u64>, UpstreamError> {
        let timeout = self.shared.request_timeout;
        let tail = async {
            let high_watermark = client.get_offset(OffsetAt::Latest).await?;
            let earliest = client.get_offset(OffsetAt::Earliest).await?;
            if high_watermark <= earliest {
                return Ok(None);
            }
            let (records, _) = client
                .fetch_records(high_watermark - 1, 1..TAIL_FETCH_BYTES, 100)
                .await?;
            Ok(records.into_iter().last())
        };
        let last = tokio::time::timeout(timeout, tail)
            .await
            .map_err(|_| UpstreamError("Kafka did not answer the tail read in time".into()))?
            .map_err(|error: rskafka::client::error::Error| {
                UpstreamError(format!("reading the partition's last record: {error}"))
            })?;
        let Some(last) = last else {
            return Ok(None);
        };
        let header = |name: &str| {
            last.record
                .headers
                .get(name)
                .and_then(|value| std::str::from_utf8(value).ok())
        };
        let ours = header(SOURCE_HEADER) == Some(&self.source)
            && header(SHARD_HEADER) == Some(&self.shard.to_string());
        Ok(header(SEQUENCE_HEADER)
            .filter(|_| ours)
            .and_then(|sequence| sequence.parse::<u64>().ok())
            .and_then(|sequence| sequence.checked_add(1)))
    }

    pub async fn send(&mut self, records: &[Record]) -> Result<(), UpstreamError> {
        let Some(client) = &self.partition else {
            return Err(UpstreamError("not in step with Kafka yet".into()));
        };
        let mut start = 0;
        while start < records.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < records.len()
                && (end == start || bytes + records[end].data.len() <= PRODUCE_BYTES_MAX)
            {
                bytes += records[end].data.len();
                end += 1;
            }
            let batch = records[start..end]
                .iter()
                .map(|r| self.kafka_record(r))
                .collect();
            let produced = tokio::time::timeout(
                self.shared.request_timeout,
                client.produce(batch, Compression::NoCompression),
            )
            .await;
            let failed = match produced {
                Ok(Ok(_offsets)) => None,
                Ok(Err(error)) => Some(format!("Kafka refused the batch: {error}")),
                Err(_) => Some(format!(
                    "Kafka did not acknowledge the batch within {} ms (sinks.sink_request_timeout_ms)",
                    self.shared.request_timeout.as_millis()
                )),
            };
            if let Some(reason) = failed {
                // Where the partition stands is unknown until the next sync.
                self.partition = None;
                return Err(UpstreamError(reason));
            }
            start = end;
        }
        Ok(())
    }

    fn kafka_record(&self, record: &Record) -> KafkaRecord {
        let headers = BTreeMap::from([
            (SOURCE_HEADER.to_owned(), self.source.clone().into_bytes()),
            (
                STREAM_HEADER.to_owned(),
                self.stream_name.clone().into_bytes(),
            ),
            (SHARD_HEADER.to_owned(), self.shard.to_string().into_bytes()),
            (
                SEQUENCE_HEADER.to_owned(),
                record.sequence.to_string().into_bytes(),
            ),
        ]);
        KafkaRecord {
            key: Some(record.partition_key.clone().into_bytes()),
            value: Some(record.data.to_vec()),
            headers,
            timestamp: DateTime::<Utc>::from_timestamp_millis(record.timestamp_ms as i64)
                .unwrap_or_default(),
        }
    }
}
