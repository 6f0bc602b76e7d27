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
//! - How records travel depends on what the JetStream stream allows:
//!   - fast-ingest batches (`allow_batched`, NATS 2.14+; ADR-50) in "gap:
//!     fail" mode: one open batch per shard, its first message conditional
//!     as above, the rest streamed under JetStream's flow control. JetStream
//!     persists a batch in order and stops it at the first message it
//!     misses or refuses, so a failure leaves no gap; its flow acks say
//!     through which record everything is stored. The batch is ended
//!     (commit without a message) whenever the worker runs out of records.
//!   - atomic batches (`allow_atomic`, NATS 2.12+): each worker batch is
//!     one atomic batch, stored whole or not at all, one in flight.
//!   - neither: one record at a time, each conditional on the one before
//!     (correct, but one round trip per record).
//! - Each message also carries a `Nats-Msg-Id` of (box, stream, shard,
//!   sequence), for the stream's deduplication window. It is what catches
//!   a message of a batch given up on that reaches the stream late (after
//!   the next batch began); JetStream drops a fast batch no message reached
//!   for its batch timeout, far inside that window.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, context::GetStreamByNameErrorKind};
use async_nats::{Client, HeaderMap, Subscriber};
use futures_util::{FutureExt, StreamExt};
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

/// The most messages a fast batch asks JetStream to let pass between two
/// flow acks (JetStream chooses fewer when several batches share a stream).
const FAST_FLOW_MAX: u16 = 500;
/// How many flow acks' worth of messages a fast batch keeps in flight:
/// two lets JetStream persist one window while the next arrives (ADR-50).
const FAST_WINDOWS_IN_FLIGHT: u64 = 2;
/// A fast batch's operations, the last but one token of a reply subject.
const FAST_START: u8 = 0;
const FAST_APPEND: u8 = 1;
const FAST_END_WITHOUT_MESSAGE: u8 = 3;

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

    /// `what` failed; when the client has no connection to NATS, says so
    /// first: a request to an unreachable server only times out.
    fn request_failed(&self, client: &Client, what: String) -> UpstreamError {
        match client.connection_state() {
            async_nats::connection::State::Connected => UpstreamError(what),
            _ => UpstreamError(format!(
                "not connected to NATS at {} (reconnecting in the background): {what}",
                self.servers.join(", ")
            )),
        }
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
            origin: Origin::new(box_id, shard.stream_id, &shard.stream_name, shard.index),
            synced: None,
            replies: None,
            fast: None,
            batches_sent: 0,
            msg_ids_in_batches: true,
        }
    }
}

/// Where a shard's records come from, as every message says in its
/// headers.
pub struct Origin {
    /// `{box}/{stream id}`: which box and stream a message came from.
    source: String,
    msg_id_prefix: String,
    stream_name: String,
    shard: u32,
}

impl Origin {
    pub fn new(box_id: &str, stream_id: u64, stream_name: &str, shard: u32) -> Self {
        Self {
            source: format!("{box_id}/{stream_id}"),
            msg_id_prefix: format!("weir:{box_id}:{stream_id}:{shard}:"),
            stream_name: stream_name.to_owned(),
            shard,
        }
    }

    pub fn headers(&self, record: &Record, with_msg_id: bool) -> HeaderMap {
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
}

/// How records travel to the JetStream stream: what it allows, fastest
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fast,
    Atomic,
    OneByOne,
}

/// What the last sync learned about the JetStream stream.
struct Synced {
    mode: Mode,
    /// The stream sequence of the last message on the subject (0: none).
    last_subject_sequence: u64,
}

pub(in crate::sink) struct ShardPublisher {
    shared: Arc<Shared>,
    subject: String,
    origin: Origin,
    synced: Option<Synced>,
    /// Answers to this publisher's atomic batch commits.
    replies: Option<(String, Subscriber)>,
    /// The fast batch open now, if any.
    fast: Option<FastBatch>,
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

/// What JetStream sends on a fast batch's reply subjects: a flow ack
/// (`"type": "ack"`), a gap or an error report, or the batch's final
/// publish acknowledgement (no type).
#[derive(serde::Deserialize)]
struct FastReply {
    #[serde(default, rename = "type")]
    kind: String,
    /// A flow ack's batch sequence; a publish ack's stream sequence.
    #[serde(default)]
    seq: u64,
    /// A flow ack: how many messages until the next one.
    #[serde(default)]
    msgs: u16,
    /// A gap report: the first batch sequence missed.
    #[serde(default)]
    last_seq: u64,
    /// A publish ack: how many of the batch's messages are stored.
    #[serde(default)]
    count: u64,
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
        // Whatever batch was open is given up; JetStream drops it.
        self.fast = None;
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
                _ => self.shared.request_failed(
                    &client,
                    format!(
                        "looking up the JetStream stream of {}: {error}",
                        self.subject
                    ),
                ),
            })?;
        let stream = context.get_stream(&stream_name).await.map_err(|error| {
            self.shared
                .request_failed(&client, format!("reading stream {stream_name}: {error}"))
        })?;
        let config = &stream.cached_info().config;
        let mode = if config.allow_batch_publish {
            Mode::Fast
        } else if config.allow_atomic_publish {
            Mode::Atomic
        } else {
            Mode::OneByOne
        };
        let (last_subject_sequence, resume) =
            match stream.get_last_raw_message_by_subject(&self.subject).await {
                Ok(message) => {
                    let ours = header(&message.headers, SOURCE_HEADER) == Some(&self.origin.source);
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
        tracing::info!(subject = %self.subject, ?mode, last_subject_sequence, "in step with JetStream");
        self.synced = Some(Synced {
            mode,
            last_subject_sequence,
        });
        Ok(resume)
    }

    /// Sends `records`; the source sequence through which JetStream has
    /// now stored everything sent, if that moved.
    pub async fn send(&mut self, records: &[Record]) -> Result<Option<u64>, UpstreamError> {
        let last = records.last().map(|record| record.sequence);
        let result = match self.synced.as_ref().map(|synced| synced.mode) {
            None => Err(not_synced()),
            Some(Mode::Fast) => self.send_fast(records).await,
            Some(Mode::Atomic) => self.send_atomic(records).await.map(|()| last),
            Some(Mode::OneByOne) => self.send_one_by_one(records).await.map(|()| last),
        };
        self.forget_position_unless(result.is_ok());
        result
    }

    /// Ends the open fast batch, if any, once JetStream stored all of it:
    /// the source sequence of its last record.
    pub async fn flush(&mut self) -> Result<Option<u64>, UpstreamError> {
        let Some(batch) = self.fast.take() else {
            return Ok(None);
        };
        let result = self.end_fast(batch).await.map(Some);
        self.forget_position_unless(result.is_ok());
        result
    }

    fn forget_position_unless(&mut self, succeeded: bool) {
        if !succeeded {
            // Where JetStream stands is unknown until the next sync.
            self.synced = None;
            self.fast = None;
        }
    }

    /// Streams `records` into the open fast batch (opening one first if
    /// none is), keeping at most two flow windows in flight.
    async fn send_fast(&mut self, records: &[Record]) -> Result<Option<u64>, UpstreamError> {
        let client = self.shared.client().await?;
        let timeout = self.shared.request_timeout;
        let mut acked = None;
        for record in records {
            let headers = self.origin.headers(record, true);
            let Some(batch) = self.fast.as_mut() else {
                self.fast = Some(self.start_fast(&client, record, headers).await?);
                continue;
            };
            while batch.progress.window_full() {
                let event = batch.next_reply(timeout).await?;
                batch.progress.mid_batch(event, &mut acked)?;
            }
            let batch_sequence = batch.progress.sent(record.sequence);
            client
                .publish_with_reply_and_headers(
                    self.subject.clone(),
                    batch.reply_subject(batch_sequence, FAST_APPEND),
                    headers,
                    record.data.clone(),
                )
                .await
                .map_err(|error| UpstreamError(format!("publishing: {error}")))?;
        }
        if let Some(batch) = self.fast.as_mut() {
            // Take the acks already here, without waiting for more.
            while let Some(Some(message)) = batch.replies.next().now_or_never() {
                let event = batch.handle(&message)?;
                batch.progress.mid_batch(event, &mut acked)?;
            }
        }
        Ok(acked)
    }

    /// Opens a fast batch with `record` as its first message, conditional
    /// on the subject's last stream sequence, and waits for JetStream's
    /// answer: the flow it allows, or why not.
    async fn start_fast(
        &mut self,
        client: &Client,
        record: &Record,
        mut headers: HeaderMap,
    ) -> Result<FastBatch, UpstreamError> {
        let id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let reply_prefix = format!("{}.{id}", client.new_inbox());
        let replies = client
            .subscribe(format!("{reply_prefix}.>"))
            .await
            .map_err(|error| UpstreamError(format!("subscribing for replies: {error}")))?;
        let mut batch = FastBatch {
            reply_prefix,
            replies,
            progress: FastProgress::new(record.sequence),
        };
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            self.last_subject_sequence().to_string(),
        );
        client
            .publish_with_reply_and_headers(
                self.subject.clone(),
                batch.reply_subject(1, FAST_START),
                headers,
                record.data.clone(),
            )
            .await
            .map_err(|error| UpstreamError(format!("publishing: {error}")))?;
        match batch.next_reply(self.shared.request_timeout).await? {
            FastEvent::Acked(_) => Ok(batch),
            FastEvent::Ended { .. } => Err(batch.progress.ended_early()),
        }
    }

    /// Ends `batch` without a message of its own and waits until JetStream
    /// stored all of it: the source sequence of its last record.
    async fn end_fast(&mut self, mut batch: FastBatch) -> Result<u64, UpstreamError> {
        let client = self.shared.client().await?;
        client
            .publish_with_reply(
                self.subject.clone(),
                batch.reply_subject(batch.progress.sent + 1, FAST_END_WITHOUT_MESSAGE),
                bytes::Bytes::new(),
            )
            .await
            .map_err(|error| UpstreamError(format!("publishing: {error}")))?;
        loop {
            match batch.next_reply(self.shared.request_timeout).await? {
                FastEvent::Acked(_) => {}
                FastEvent::Ended {
                    stream_sequence,
                    last,
                } => {
                    let progress = &batch.progress;
                    let last = last.filter(|_| progress.all_acknowledged());
                    let last = last.ok_or_else(|| progress.ended_early())?;
                    self.set_last_subject_sequence(stream_sequence);
                    return Ok(last);
                }
            }
        }
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
            let mut headers = self.origin.headers(record, self.msg_ids_in_batches);
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
            let mut headers = self.origin.headers(record, true);
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
                return serde_json::from_slice::<PubAck>(answer(&message)?).map_err(|error| {
                    UpstreamError(format!("JetStream answered something unexpected: {error}"))
                });
            }
            Err(UpstreamError("the NATS connection closed".into()))
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| unacknowledged(timeout))?
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

/// A fast batch in flight: its reply subjects and what JetStream
/// acknowledged of it.
struct FastBatch {
    /// `{inbox}.{batch id}`: every reply subject of the batch starts so.
    reply_prefix: String,
    replies: Subscriber,
    progress: FastProgress,
}

impl FastBatch {
    /// `{prefix}.{id}.{flow}.fail.{sequence}.{operation}.$FI` (ADR-50).
    fn reply_subject(&self, sequence: u64, operation: u8) -> String {
        format!(
            "{}.{FAST_FLOW_MAX}.fail.{sequence}.{operation}.$FI",
            self.reply_prefix
        )
    }

    async fn next_reply(&mut self, timeout: Duration) -> Result<FastEvent, UpstreamError> {
        let message = tokio::time::timeout(timeout, self.replies.next())
            .await
            .map_err(|_| unacknowledged(timeout))?
            .ok_or_else(|| UpstreamError("the NATS connection closed".into()))?;
        self.handle(&message)
    }

    fn handle(&mut self, message: &async_nats::Message) -> Result<FastEvent, UpstreamError> {
        self.progress.on_reply(answer(message)?)
    }
}

/// What a reply to a fast batch meant.
#[derive(Debug, PartialEq, Eq)]
enum FastEvent {
    /// Stored through this source sequence (None: nothing new).
    Acked(Option<u64>),
    /// JetStream ended the batch: the stream sequence of its last stored
    /// message and the source sequence of its last acknowledged record.
    Ended {
        stream_sequence: u64,
        last: Option<u64>,
    },
}

/// Which of a fast batch's messages JetStream has stored, from its
/// replies; batch sequences count from 1, one per message sent.
#[derive(Debug)]
struct FastProgress {
    /// Messages between two flow acks, as JetStream last set it.
    flow: u64,
    /// The batch sequence of the last message sent.
    sent: u64,
    /// The batch sequence through which JetStream stored everything.
    acked: u64,
    /// The source sequences of the messages sent but not acknowledged.
    unacked: VecDeque<u64>,
    /// The source sequence of the last message acknowledged.
    last_acknowledged: Option<u64>,
}

impl FastProgress {
    /// A batch whose first message carries source sequence `first`.
    fn new(first: u64) -> Self {
        Self {
            flow: 1,
            sent: 1,
            acked: 0,
            unacked: VecDeque::from([first]),
            last_acknowledged: None,
        }
    }

    /// Counts one more message sent, carrying source sequence `sequence`:
    /// its batch sequence.
    fn sent(&mut self, sequence: u64) -> u64 {
        self.sent += 1;
        self.unacked.push_back(sequence);
        self.sent
    }

    /// Whether two flow windows are in flight (wait for an ack first).
    fn window_full(&self) -> bool {
        self.sent - self.acked >= self.flow * FAST_WINDOWS_IN_FLIGHT
    }

    fn on_reply(&mut self, payload: &[u8]) -> Result<FastEvent, UpstreamError> {
        let reply: FastReply = serde_json::from_slice(payload).map_err(|error| {
            UpstreamError(format!("JetStream answered something unexpected: {error}"))
        })?;
        if let Some(error) = reply.error {
            return Err(UpstreamError(format!(
                "JetStream refused the batch: {} (error {})",
                error.description, error.err_code
            )));
        }
        match reply.kind.as_str() {
            "ack" => {
                self.flow = u64::from(reply.msgs.max(1));
                Ok(FastEvent::Acked(self.acknowledge(reply.seq)))
            }
            "" => {
                let last = self.acknowledge(reply.count);
                Ok(FastEvent::Ended {
                    stream_sequence: reply.seq,
                    last: last.or(self.last_acknowledged),
                })
            }
            "gap" => Err(UpstreamError(format!(
                "JetStream missed messages {}..{} of the batch in flight",
                reply.last_seq, reply.seq
            ))),
            other => Err(UpstreamError(format!(
                "JetStream reported {other:?} for message {} of the batch in flight",
                reply.seq
            ))),
        }
    }

    /// Counts messages through batch sequence `through` as stored: the
    /// source sequence of the last of them, if that moved.
    fn acknowledge(&mut self, through: u64) -> Option<u64> {
        let newly = through.min(self.sent).saturating_sub(self.acked);
        self.acked += newly;
        let mut last = None;
        for _ in 0..newly {
            last = self.unacked.pop_front();
        }
        if last.is_some() {
            self.last_acknowledged = last;
        }
        last
    }

    /// Takes a reply that came while the batch is still being sent: an
    /// ack moves `acked`; JetStream ending the batch now is a failure.
    fn mid_batch(&self, event: FastEvent, acked: &mut Option<u64>) -> Result<(), UpstreamError> {
        match event {
            FastEvent::Acked(sequence) => {
                *acked = sequence.or(*acked);
                Ok(())
            }
            FastEvent::Ended { .. } => Err(self.ended_early()),
        }
    }

    fn all_acknowledged(&self) -> bool {
        self.acked == self.sent
    }

    fn ended_early(&self) -> UpstreamError {
        UpstreamError(format!(
            "JetStream ended the batch after {} of its {} messages",
            self.acked, self.sent
        ))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.as_str())
}

/// The payload of a JetStream answer, or why no JetStream answered.
fn answer(message: &async_nats::Message) -> Result<&[u8], UpstreamError> {
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
    Ok(&message.payload)
}

fn unacknowledged(timeout: Duration) -> UpstreamError {
    UpstreamError(format!(
        "JetStream did not acknowledge the batch within {} ms (sinks.sink_request_timeout_ms)",
        timeout.as_millis()
    ))
}

fn not_synced() -> UpstreamError {
    UpstreamError("not in step with JetStream yet".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of source sequences 100, 101, … sent so far.
    fn progress_after(messages: u64) -> FastProgress {
        let mut progress = FastProgress::new(100);
        for sequence in 101..100 + messages {
            progress.sent(sequence);
        }
        progress
    }

    #[test]
    fn flow_acks_move_through_the_source_sequences_in_order() {
        let mut progress = progress_after(5);
        // JetStream's first answer: the flow it allows, nothing stored yet.
        let event = progress.on_reply(br#"{"type":"ack","seq":0,"msgs":2}"#);
        assert_eq!(event.ok(), Some(FastEvent::Acked(None)));
        assert!(progress.window_full(), "5 in flight, 2 windows of 2");
        let event = progress.on_reply(br#"{"type":"ack","seq":3,"msgs":2}"#);
        assert_eq!(event.ok(), Some(FastEvent::Acked(Some(102))));
        assert!(!progress.window_full(), "2 in flight");
        // A late or repeated ack moves nothing back.
        let event = progress.on_reply(br#"{"type":"ack","seq":2,"msgs":2}"#);
        assert_eq!(event.ok(), Some(FastEvent::Acked(None)));
        assert_eq!(progress.acked, 3);

        // While sending: an ack without news keeps what the last one said;
        // the batch ending before it was all sent is a failure.
        let mut acked = None;
        let moved = FastEvent::Acked(Some(102));
        progress.mid_batch(moved, &mut acked).expect("an ack");
        progress
            .mid_batch(FastEvent::Acked(None), &mut acked)
            .expect("an ack");
        assert_eq!(acked, Some(102));
        let ended = FastEvent::Ended {
            stream_sequence: 9,
            last: Some(102),
        };
        let error = progress
            .mid_batch(ended, &mut acked)
            .expect_err("ended early");
        assert!(
            error.to_string().contains("after 3 of its 5 messages"),
            "{error}"
        );
    }

    #[test]
    fn the_final_publish_ack_covers_the_rest_of_the_batch() {
        let mut progress = progress_after(4);
        progress.acknowledge(2);
        let event = progress.on_reply(br#"{"stream":"EDGE","seq":842,"batch":"b1","count":4}"#);
        assert_eq!(
            event.ok(),
            Some(FastEvent::Ended {
                stream_sequence: 842,
                last: Some(103)
            })
        );
        assert!(progress.all_acknowledged());

        // Everything already acknowledged by flow acks: the last still counts.
        let mut progress = progress_after(2);
        progress.acknowledge(2);
        let event = progress.on_reply(br#"{"stream":"EDGE","seq":7,"batch":"b2","count":2}"#);
        assert_eq!(
            event.ok(),
            Some(FastEvent::Ended {
                stream_sequence: 7,
                last: Some(101)
            })
        );
    }

    #[test]
    fn a_batch_ended_short_is_not_all_acknowledged() {
        let mut progress = progress_after(5);
        let event = progress.on_reply(br#"{"stream":"EDGE","seq":9,"batch":"b","count":3}"#);
        assert!(matches!(event, Ok(FastEvent::Ended { .. })));
        assert!(!progress.all_acknowledged());
        assert_eq!(progress.unacked, [103, 104]);
        assert!(
            progress
                .ended_early()
                .to_string()
                .contains("after 3 of its 5 messages")
        );
    }

    #[test]
    fn gaps_refusals_and_garbage_are_failures_that_say_what_happened() {
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"type":"gap","last_seq":3,"seq":5}"#,
                "missed messages 3..5",
            ),
            (
                br#"{"type":"err","seq":4,"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 17"}}"#,
                "wrong last sequence: 17 (error 10071)",
            ),
            (
                br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 17"},"stream":"EDGE","seq":0}"#,
                "refused the batch: wrong last sequence: 17",
            ),
            (b"not json", "unexpected"),
        ];
        for (payload, expected) in cases {
            let mut progress = progress_after(5);
            let error = progress.on_reply(payload).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(expected)),
                "{error:?} should mention {expected:?}"
            );
            assert_eq!(progress.acked, 0);
        }
    }
}

/// For `weir bench sink`: the same client library used directly, as the
/// yardstick the sink is measured against.
pub mod bench {
    use std::time::{Duration, Instant};

    use async_nats::jetstream::{self, stream};
    use weir_proto::Record;

    type Error = Box<dyn std::error::Error + Send + Sync>;

    async fn context(servers: &[String]) -> Result<jetstream::Context, Error> {
        let client = async_nats::ConnectOptions::new().connect(servers).await?;
        Ok(jetstream::new(client))
    }

    /// (Re)creates JetStream stream `name` over `subjects`, with atomic
    /// batches allowed, and fast-ingest batches if `fast`.
    pub async fn recreate_stream(
        servers: &[String],
        name: &str,
        subjects: &str,
        replicas: usize,
        fast: bool,
    ) -> Result<(), Error> {
        let js = context(servers).await?;
        let _ = js.delete_stream(name).await;
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: replicas,
            allow_atomic_publish: true,
            allow_batch_publish: fast,
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
    /// path): how long until every record was acknowledged. With
    /// `headers`, each message carries the headers a sink's would (its
    /// `Nats-Msg-Id` among them); without, the bare payload.
    pub async fn publish_direct(
        servers: &[String],
        prefix: &str,
        per_subject: Vec<Vec<Record>>,
        window: usize,
        headers: bool,
    ) -> Result<Duration, Error> {
        let js = context(servers).await?;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (index, records) in per_subject.into_iter().enumerate() {
            let (js, subject) = (js.clone(), format!("{prefix}.{index}"));
            let origin = super::Origin::new("direct", 0, "bench", index as u32);
            tasks.push(tokio::spawn(async move {
                let mut pending = std::collections::VecDeque::new();
                for record in records {
                    if pending.len() >= window {
                        let ack: jetstream::context::PublishAckFuture =
                            pending.pop_front().ok_or("empty window")?;
                        ack.await?;
                    }
                    let ack = if headers {
                        let headers = origin.headers(&record, true);
                        js.publish_with_headers(subject.clone(), headers, record.data)
                            .await?
                    } else {
                        js.publish(subject.clone(), record.data).await?
                    };
                    pending.push_back(ack);
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
