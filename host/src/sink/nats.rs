//! The NATS JetStream upstream: shard N of the source goes to subject
//! `PREFIX.N`, exactly once and in order. The only module that imports
//! async-nats.
//!
//! Exactly once rests on JetStream, not on Weir's cursor:
//! - Before sending (at start and after any failure) the publisher reads
//!   the last message on its subject from the stream leader. Its
//!   `Weir-Source` and `Weir-Sequence` headers say which record of this
//!   shard JetStream stored last, so forwarding resumes right after it,
//!   whatever Weir's cursor says (a crash between the upstream's ack and
//!   the cursor commit loses nothing and repeats nothing).
//! - Every batch is conditional on that message's stream sequence
//!   (`Nats-Expected-Last-Subject-Sequence`): a batch sent twice, or sent
//!   after another one landed, is refused instead of stored again — also
//!   outside the deduplication window.
//! - With atomic publish allowed on the stream (`allow_atomic`, NATS
//!   2.12+), a batch is one atomic batch (ADR-50): stored whole or not at
//!   all, so a failure leaves no gap to be filled out of order. Without
//!   it, records go one at a time, each conditional on the one before
//!   (correct, but one round trip per record).
//! - Each message also carries a `Nats-Msg-Id` of (box, stream, shard,
//!   sequence), for the stream's deduplication window.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, context::GetStreamByNameErrorKind};
use async_nats::{Client, HeaderMap, Subscriber};
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use weir_proto::Record;
use weir_proto::admin::SinkSettings;

use super::upstream::{TlsFiles, UpstreamError};
use crate::storage::Shard;

/// Headers every forwarded message carries.
const SOURCE_HEADER: &str = "Weir-Source";
const STREAM_HEADER: &str = "Weir-Stream";
const SHARD_HEADER: &str = "Weir-Shard";
const SEQUENCE_HEADER: &str = "Weir-Sequence";
const PARTITION_KEY_HEADER: &str = "Weir-Partition-Key";
const TIMESTAMP_HEADER: &str = "Weir-Timestamp-Ms";

/// JetStream's error code for a header an atomic batch may not carry
/// (servers before 2.14 refuse `Nats-Msg-Id` there).
const UNSUPPORTED_BATCH_HEADER: u64 = 10177;

/// What the sink's workers share: one client, connected on first use and
/// reconnecting by itself.
struct Shared {
    servers: Vec<String>,
    tls: bool,
    credentials_file: Option<String>,
    tls_files: TlsFiles,
    name: String,
    request_timeout: Duration,
    client: OnceCell<Client>,
}

impl Shared {
    async fn client(&self) -> Result<Client, UpstreamError> {
        self.client
            .get_or_try_init(|| async {
                let mut options = async_nats::ConnectOptions::new()
                    .name(&self.name)
                    .request_timeout(Some(self.request_timeout))
                    .connection_timeout(self.request_timeout)
                    // Returns at once; the client keeps trying to connect
                    // (and to reconnect) in the background.
                    .retry_on_initial_connect()
                    .require_tls(self.tls);
                // Without a CA file the client trusts the system's store.
                if let Some(path) = &self.tls_files.ca_file {
                    options = options.add_root_certificates(path.into());
                }
                if let Some((cert, key)) = &self.tls_files.client_cert {
                    options = options.add_client_certificate(cert.into(), key.into());
                }
                if let Some(path) = &self.credentials_file {
                    options = options.credentials_file(path).await.map_err(|error| {
                        UpstreamError(format!("reading the credentials file {path:?}: {error}"))
                    })?;
                }
                options
                    .connect(self.servers.as_slice())
                    .await
                    .map_err(|error| UpstreamError(format!("connecting to NATS: {error}")))
            })
            .await
            .cloned()
    }
}

pub(in crate::sink) struct Connection {
    shared: Arc<Shared>,
    subject_prefix: String,
}

impl Connection {
    pub fn new(
        servers: Vec<String>,
        subject_prefix: String,
        tls: bool,
        settings: &SinkSettings,
        request_timeout: Duration,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                servers,
                tls,
                credentials_file: settings.credentials_file.clone(),
                tls_files: TlsFiles::of(settings),
                name: format!("weir sink {}", settings.name),
                request_timeout,
                client: OnceCell::new(),
            }),
            subject_prefix,
        }
    }

    pub fn for_shard(&self, box_id: &str, shard: &Shard) -> ShardPublisher {
        ShardPublisher {
            shared: self.shared.clone(),
            subject: format!("{}.{}", self.subject_prefix, shard.index),
            source: format!("{box_id}/{}", shard.stream_id),
            msg_id_prefix: format!("weir:{box_id}:{}:{}:", shard.stream_id, shard.index),
            stream_name: shard.stream_name.clone(),
            shard: shard.index,
            synced: None,
            replies: None,
            batches_sent: 0,
            msg_ids_in_batches: true,
        }
    }
}

/// What the last sync learned about the JetStream stream.
struct Synced {
    atomic: bool,
    /// The stream sequence of the last message on the subject (0: none).
    last_subject_sequence: u64,
}

pub(in crate::sink) struct ShardPublisher {
    shared: Arc<Shared>,
    subject: String,
    /// `{box}/{stream id}`: which box and stream a message came from.
    source: String,
    msg_id_prefix: String,
    stream_name: String,
    shard: u32,
    synced: Option<Synced>,
    /// Answers to this publisher's batch commits.
    replies: Option<(String, Subscriber)>,
    batches_sent: u64,
    msg_ids_in_batches: bool,
}

/// A JetStream publish acknowledgement, or its error.
#[derive(serde::Deserialize)]
struct PubAck {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(serde::Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

impl ShardPublisher {
    pub async fn sync(&mut self) -> Result<Option<u64>, UpstreamError> {
        self.synced = None;
        let client = self.shared.client().await?;
        let context = jetstream::new(client.clone());
        let stream_name = context
            .stream_by_subject(self.subject.clone())
            .await
            .map_err(|error| match error.kind() {
                GetStreamByNameErrorKind::NotFound => UpstreamError(format!(
                    "no JetStream stream stores subject {}: add one whose subjects include it, \
                     with allow_atomic for batches (e.g. subjects {:?})",
                    self.subject,
                    self.subject_wildcard()
                )),
                _ => UpstreamError(format!(
                    "looking up the JetStream stream of {}: {error}",
                    self.subject
                )),
            })?;
        let stream = context
            .get_stream(&stream_name)
            .await
            .map_err(|error| UpstreamError(format!("reading stream {stream_name}: {error}")))?;
        let atomic = stream.cached_info().config.allow_atomic_publish;
        let (last_subject_sequence, resume) =
            match stream.get_last_raw_message_by_subject(&self.subject).await {
                Ok(message) => {
                    let ours = header(&message.headers, SOURCE_HEADER) == Some(&self.source);
                    let forwarded = header(&message.headers, SEQUENCE_HEADER)
                        .and_then(|sequence| sequence.parse::<u64>().ok());
                    let resume = forwarded
                        .filter(|_| ours)
                        .and_then(|last| last.checked_add(1));
                    (message.sequence, resume)
                }
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => (0, None),
                Err(error) => {
                    return Err(UpstreamError(format!(
                        "reading the last message of {}: {error}",
                        self.subject
                    )));
                }
            };
        if self.replies.is_none() {
            let inbox = client.new_inbox();
            let subscriber = client
                .subscribe(format!("{inbox}.*"))
                .await
                .map_err(|error| UpstreamError(format!("subscribing for replies: {error}")))?;
            self.replies = Some((inbox, subscriber));
        }
        self.synced = Some(Synced {
            atomic,
            last_subject_sequence,
        });
        Ok(resume)
    }

    pub async fn send(&mut self, records: &[Record]) -> Result<(), UpstreamError> {
        let result = match &self.synced {
            None => Err(UpstreamError("not in step with JetStream yet".into())),
            Some(synced) if synced.atomic => self.send_atomic(records).await,
            Some(_) => self.send_one_by_one(records).await,
        };
        if result.is_err() {
            // Where JetStream stands is unknown until the next sync.
            self.synced = None;
        }
        result
    }

    /// One atomic batch: the first message is conditional on the subject's
    /// last sequence, the last one commits; only that one is answered.
    async fn send_atomic(&mut self, records: &[Record]) -> Result<(), UpstreamError> {
        let client = self.shared.client().await?;
        let last = self.last_subject_sequence();
        self.batches_sent += 1;
        let batch_id = format!("{:016x}{:016x}", rand::random::<u64>(), self.batches_sent);
        let (inbox, _) = self.replies.as_ref().ok_or_else(not_synced)?;
        let reply = format!("{inbox}.{}", self.batches_sent);
        for (index, record) in records.iter().enumerate() {
            let mut headers = self.headers(record, self.msg_ids_in_batches);
            headers.insert("Nats-Batch-Id", batch_id.as_str());
            headers.insert("Nats-Batch-Sequence", (index + 1).to_string());
            if index == 0 {
                headers.insert("Nats-Expected-Last-Subject-Sequence", last.to_string());
            }
            let published = if index + 1 == records.len() {
                headers.insert("Nats-Batch-Commit", "1");
                client
                    .publish_with_reply_and_headers(
                        self.subject.clone(),
                        reply.clone(),
                        headers,
                        record.data.clone(),
                    )
                    .await
            } else {
                client
                    .publish_with_headers(self.subject.clone(), headers, record.data.clone())
                    .await
            };
            published.map_err(|error| UpstreamError(format!("publishing: {error}")))?;
        }
        let answer = self.reply(&reply).await?;
        match answer {
            PubAck {
                error: Some(error), ..
            } if error.err_code == UNSUPPORTED_BATCH_HEADER && self.msg_ids_in_batches => {
                // An older server: the conditional batch alone keeps it
                // exactly once.
                tracing::info!(subject = %self.subject, "this JetStream takes no Nats-Msg-Id in atomic batches; sending batches without");
                self.msg_ids_in_batches = false;
                Err(UpstreamError(format!(
                    "JetStream refused the batch: {}",
                    error.description
                )))
            }
            PubAck {
                error: Some(error), ..
            } => Err(UpstreamError(format!(
                "JetStream refused the batch: {} (error {})",
                error.description, error.err_code
            ))),
            PubAck { seq, .. } => {
                self.set_last_subject_sequence(seq);
                Ok(())
            }
        }
    }

    /// Without atomic batches: one record at a time, each conditional on
    /// the one before, so a failure can leave no gap.
    async fn send_one_by_one(&mut self, records: &[Record]) -> Result<(), UpstreamError> {
        let client = self.shared.client().await?;
        let context = jetstream::new(client);
        for record in records {
            let mut headers = self.headers(record, true);
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                self.last_subject_sequence().to_string(),
            );
            let ack = context
                .publish_with_headers(self.subject.clone(), headers, record.data.clone())
                .await
                .map_err(|error| UpstreamError(format!("publishing: {error}")))?
                .await
                .map_err(|error| UpstreamError(format!("JetStream refused a record: {error}")))?;
            self.set_last_subject_sequence(ack.sequence);
        }
        Ok(())
    }

    /// Waits for the answer on `reply`, skipping late answers to batches
    /// given up on before.
    async fn reply(&mut self, reply: &str) -> Result<PubAck, UpstreamError> {
        let timeout = self.shared.request_timeout;
        let (_, replies) = self.replies.as_mut().ok_or_else(not_synced)?;
        let wait = async {
            while let Some(message) = replies.next().await {
                if message.subject.as_str() != reply {
                    continue;
                }
                if message
                    .status
                    .is_some_and(|status| status.is_server_error())
                    || message.payload.is_empty()
                {
                    return Err(UpstreamError(format!(
                        "no JetStream answered for the batch ({})",
                        message.description.as_deref().unwrap_or("no responders")
                    )));
                }
                return serde_json::from_slice::<PubAck>(&message.payload).map_err(|error| {
                    UpstreamError(format!("JetStream answered something unexpected: {error}"))
                });
            }
            Err(UpstreamError("the NATS connection closed".into()))
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            UpstreamError(format!(
                "JetStream did not acknowledge the batch within {} ms (sinks.sink_request_timeout_ms)",
                timeout.as_millis()
            ))
        })?
    }

    fn headers(&self, record: &Record, with_msg_id: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if with_msg_id {
            headers.insert(
                "Nats-Msg-Id",
                format!("{}{}", self.msg_id_prefix, record.sequence),
            );
        }
        headers.insert(SOURCE_HEADER, self.source.as_str());
        headers.insert(STREAM_HEADER, self.stream_name.as_str());
        headers.insert(SHARD_HEADER, self.shard.to_string());
        headers.insert(SEQUENCE_HEADER, record.sequence.to_string());
        headers.insert(PARTITION_KEY_HEADER, record.partition_key.as_str());
        headers.insert(TIMESTAMP_HEADER, record.timestamp_ms.to_string());
        headers
    }

    fn last_subject_sequence(&self) -> u64 {
        self.synced.as_ref().map_or(0, |s| s.last_subject_sequence)
    }

    fn set_last_subject_sequence(&mut self, sequence: u64) {
        if let Some(synced) = &mut self.synced {
            synced.last_subject_sequence = sequence;
        }
    }

    /// The subjects a JetStream stream needs for this sink: `PREFIX.>`.
    fn subject_wildcard(&self) -> String {
        let prefix = self
            .subject
            .rsplit_once('.')
            .map_or(self.subject.as_str(), |(prefix, _)| prefix);
        format!("{prefix}.>")
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.as_str())
}

fn not_synced() -> UpstreamError {
    UpstreamError("not in step with JetStream yet".into())
}

/// For `weir bench sink`: the same client library used directly, as the
/// yardstick the sink is measured against.
pub mod bench {
    use std::time::{Duration, Instant};

    use async_nats::jetstream::{self, stream};
    use bytes::Bytes;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    async fn context(servers: &[String]) -> Result<jetstream::Context, Error> {
        let client = async_nats::ConnectOptions::new().connect(servers).await?;
        Ok(jetstream::new(client))
    }

    /// (Re)creates JetStream stream `name` over `subjects`, with atomic
    /// batches allowed.
    pub async fn recreate_stream(
        servers: &[String],
        name: &str,
        subjects: &str,
        replicas: usize,
    ) -> Result<(), Error> {
        let js = context(servers).await?;
        let _ = js.delete_stream(name).await;
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: replicas,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    pub async fn delete_stream(servers: &[String], name: &str) -> Result<(), Error> {
        context(servers).await?.delete_stream(name).await?;
        Ok(())
    }

    /// Publishes `per_subject[i]` to `{prefix}.{i}`, one task per subject,
    /// each keeping `window` acks outstanding (JetStream's usual fast
    /// path): how long until every record was acknowledged.
    pub async fn publish_direct(
        servers: &[String],
        prefix: &str,
        per_subject: Vec<Vec<Bytes>>,
        window: usize,
    ) -> Result<Duration, Error> {
        let js = context(servers).await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (index, records) in per_subject.into_iter().enumerate() {
            let (js, subject) = (js.clone(), format!("{prefix}.{index}"));
            tasks.push(tokio::spawn(async move {
                let mut pending = std::collections::VecDeque::new();
                for data in records {
                    if pending.len() >= window {
                        let ack: jetstream::context::PublishAckFuture =
                            pending.pop_front().ok_or("empty window")?;
                        ack.await?;
                    }
                    pending.push_back(js.publish(subject.clone(), data).await?);
                }
                for ack in pending {
                    ack.await?;
                }
                Ok::<(), Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(started.elapsed())
    }
}
