//! Sinks: durable, ordered, resumable forwarding of a Weir stream to an
//! engine users already run: NATS JetStream, Kafka, Kinesis APIs.
//!
//! A sink is like a processor without a plugin: one worker per source
//! shard reads in sequence order, hands a batch to the upstream, and moves
//! its cursor (a catalog record, synced) only after the upstream
//! acknowledged the batch. While the upstream is unreachable or refusing,
//! records stay in Weir and the worker backs off and tries again; nothing
//! is skipped (unless retention removes it first, which is reported).
//!
//! Each upstream module ([`nats`], [`kafka`], [`kinesis`]) is the only place that
//! imports its client library; the worker sees it through
//! [`upstream::Upstream`].

mod kafka;
mod kinesis;
mod nats;
mod target;
mod upstream;
mod worker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_proto::admin::{SinkInfo, SinkSettings, SinkShardProgress, StartPosition};
use weir_proto::message::Position;

use crate::config::SinkConfig;
use crate::flows::{self, Flow};
use crate::storage::{CatalogKind, Storage, StorageError, now_ms};

pub use nats::bench as nats_bench;
pub use target::Target;
use worker::{ByteBucket, Progress, Worker};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no sink named {name:?}")]
    NotFound { name: String },
    #[error("a sink named {name:?} already exists")]
    Exists { name: String },
    #[error("{0}")]
    InvalidSettings(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("starting the sinks' thread: {0}")]
    Thread(std::io::Error),
}

/// A sink as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Definition {
    /// Scopes the sink's cursors: a sink created again under the same name
    /// starts afresh.
    id: u64,
    settings: SinkSettings,
    paused: bool,
    created_ms: u64,
}

/// Where one shard of a sink stands, as the catalog keeps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SinkCursor {
    /// The next source sequence number to forward.
    pub next_sequence: u64,
    pub records_forwarded: u64,
    pub bytes_forwarded: u64,
    pub last_ack_ms: Option<u64>,
    /// Records below this sequence are counted in `records_forwarded`
    /// already: set when `seek` moves the cursor back, so an upstream's
    /// skip past what it holds does not count them again.
    #[serde(default)]
    pub counted_below: u64,
}

fn cursor_name(sink_id: u64, shard: u32) -> String {
    format!("{sink_id}/{shard}")
}

struct Running {
    definition: Definition,
    /// One per source shard; empty while paused.
    workers: Vec<Arc<Mutex<Progress>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Every sink on this server and its workers.
pub struct Sinks {
    storage: Arc<Storage>,
    config: SinkConfig,
    /// This box's name in message ids, so records from two boxes never
    /// collide upstream.
    box_id: String,
    /// This box's own Kinesis listener: a sink into it moves records
    /// between this box's streams, and must not close a loop.
    own_kinesis: Option<SocketAddr>,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    thread: SinkThread,
}

/// The sinks' own thread and runtime: forwarding (reading batches,
/// encoding them for the upstream, the clients' connections) never takes
/// the server's async thread from its acks.
struct SinkThread {
    handle: tokio::runtime::Handle,
    /// Dropped with the registry: the thread's runtime ends, and with it
    /// any task still on it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// How much lower than the server's own threads the sinks' threads run (a
/// nice value): forwarding a backlog is background work, and on a small
/// box the acks of new puts must not wait behind it for a core.
const SINK_THREAD_NICE: i32 = 10;

/// Lowers the calling thread's priority (Linux gives each thread its own
/// nice value); best effort.
fn lower_thread_priority() {
    if let Err(error) = rustix::process::setpriority_process(None, SINK_THREAD_NICE) {
        tracing::debug!(%error, "the sink thread runs at normal priority");
    }
}

impl SinkThread {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // The blocking pool: the sinks' storage reads and cursor saves.
            .on_thread_start(lower_thread_priority)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("weir-sinks".into())
            .spawn(move || {
                lower_thread_priority();
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }
}

impl Sinks {
    /// Loads the catalog's sinks and starts the ones not paused.
    pub async fn start(
        storage: Arc<Storage>,
        config: SinkConfig,
        box_id: String,
        own_kinesis: Option<SocketAddr>,
    ) -> Result<Arc<Self>, SinkError> {
        let sinks = Arc::new(Self {
            storage,
            config,
            box_id,
            own_kinesis,
            running: Default::default(),
            thread: SinkThread::start().map_err(SinkError::Thread)?,
        });
        let stored = sinks.storage.catalog().list(CatalogKind::Sink, "")?;
        let mut running = sinks.running.lock().await;
        for bytes in stored {
            let definition: Definition =
                serde_json::from_slice(&bytes).map_err(|_| StorageError::Corrupt {
                    what: "a sink definition",
                })?;
            let name = definition.settings.name.clone();
            let sink = match sinks.launch(definition.clone()) {
                Ok(sink) => sink,
                Err(error) => {
                    // One broken sink must not keep the server from
                    // starting: it stays listed, without workers, for
                    // `weir sink delete`.
                    tracing::error!(sink = %name, %error, "sink not started");
                    Running {
                        definition,
                        workers: Vec::new(),
                        stop: watch::channel(false).0,
                        tasks: Vec::new(),
                    }
                }
            };
            running.insert(name, sink);
        }
        drop(running);
        Ok(sinks)
    }

    /// Stops every worker (cursors are already durable).
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        for sink in running.values_mut() {
            stop(sink).await;
        }
    }

    /// Creates a sink and starts its workers. `other_flows` are the box's
    /// flows besides sinks (processors), for the loop check.
    pub async fn create(
        &self,
        settings: SinkSettings,
        other_flows: &[Flow],
    ) -> Result<SinkInfo, SinkError> {
        crate::names::validate("sink", &settings.name).map_err(SinkError::InvalidSettings)?;
        let target = Target::parse(&settings.to).map_err(SinkError::InvalidSettings)?;
        let tls_only = |flag: &str| {
            if target.uses_tls() {
                Ok(())
            } else {
                Err(SinkError::InvalidSettings(format!(
                    "{flag} is for TLS upstreams (nats+tls://, kafka+tls://, kinesis+https://), and {} is not one",
                    Target::redacted(&settings.to)
                )))
            }
        };
        if let Some(path) = &settings.ca_file {
            tls_only("--ca-file")?;
            crate::tls::read_certificates(Path::new(path)).map_err(|error| {
                SinkError::InvalidSettings(format!("--ca-file on the server: {error}"))
            })?;
        }
        match (&settings.client_cert_file, &settings.client_key_file) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                tls_only("--client-cert")?;
                crate::tls::ClientIdentity::read(Path::new(cert), Path::new(key)).map_err(
                    |error| {
                        SinkError::InvalidSettings(format!(
                            "--client-cert / --client-key on the server: {error}"
                        ))
                    },
                )?;
            }
            _ => {
                return Err(SinkError::InvalidSettings(
                    "--client-cert and --client-key go together".into(),
                ));
            }
        }
        if let Some(path) = &settings.credentials_file {
            std::fs::metadata(path).map_err(|error| {
                SinkError::InvalidSettings(format!(
                    "cannot read the credentials file {path:?} on the server: {error}"
                ))
            })?;
        }
        let batch_max = self.config.sink_batch_records_max;
        if let Some(batch) = settings.batch_records
            && !(1..=batch_max).contains(&batch)
        {
            return Err(SinkError::InvalidSettings(format!(
                "--batch-records must be 1 to {batch_max} (sinks.sink_batch_records_max), not {batch}"
            )));
        }
        if settings.bytes_per_sec == Some(0) {
            return Err(SinkError::InvalidSettings(
                "--bytes-per-sec must be at least 1 (omit it for no cap)".into(),
            ));
        }
        let source = self.storage.stream(&settings.source)?;
        let mut running = self.running.lock().await;
        if running.contains_key(&settings.name) {
            return Err(SinkError::Exists {
                name: settings.name,
            });
        }
        if let Some(new) = self.flow(&settings) {
            let mut existing = self.flows_of(&running);
            existing.extend_from_slice(other_flows);
            if let Some(path) = flows::closed_loop(&[new], &existing) {
                return Err(SinkError::InvalidSettings(format!(
                    "sink {} forwards into this box's own Kinesis API and would feed its own source: {path}; records would go round for ever. Forward to a stream that does not lead back to {}",
                    settings.name, settings.source
                )));
            }
        }
        if running.len() >= self.config.sinks_max {
            return Err(SinkError::LimitExceeded(format!(
                "this server keeps at most {} sinks (sinks.sinks_max)",
                self.config.sinks_max
            )));
        }
        let definition = Definition {
            id: rand::random::<u64>() >> 1,
            settings,
            paused: false,
            created_ms: now_ms(),
        };
        let storage = self.storage.clone();
        let (stored, start) = (definition.clone(), definition.settings.start);
        let shards = source.shards.clone();
        blocking(move || {
            for shard in &shards {
                let next_sequence = match start {
                    StartPosition::TrimHorizon => 0,
                    StartPosition::Latest => shard.stats().records_appended,
                };
                let cursor = SinkCursor {
                    next_sequence,
                    ..SinkCursor::default()
                };
                put_cursor(&storage, stored.id, shard.index, &cursor)?;
            }
            put_definition(&storage, &stored)
        })
        .await?;
        let source_now = self.storage.stream(&definition.settings.source).ok();
        if source_now.map(|stream| stream.id) != Some(source.id) {
            // Deleted while the sink was being created: undo.
            self.forget(&definition).await?;
            return Err(StorageError::StreamNotFound {
                name: definition.settings.source,
            }
            .into());
        }
        let name = definition.settings.name.clone();
        let sink = self.launch(definition)?;
        let info = self.info(&sink.definition, &sink.workers, true)?;
        running.insert(name, sink);
        Ok(info)
    }

    pub async fn list(&self) -> Result<Vec<SinkInfo>, SinkError> {
        self.infos(false).await
    }

    /// Every sink with its shards (for metrics).
    pub async fn list_detailed(&self) -> Result<Vec<SinkInfo>, SinkError> {
        self.infos(true).await
    }

    async fn infos(&self, with_shards: bool) -> Result<Vec<SinkInfo>, SinkError> {
        // The storage reads come after the registry's lock is let go.
        let snapshots: Vec<_> = self.running.lock().await.values().map(snapshot).collect();
        snapshots
            .iter()
            .map(|(definition, workers)| self.info(definition, workers, with_shards))
            .collect()
    }

    pub async fn describe(&self, name: &str) -> Result<SinkInfo, SinkError> {
        let (definition, workers) = snapshot(find(&*self.running.lock().await, name)?);
        self.info(&definition, &workers, true)
    }

    pub async fn pause(&self, name: &str) -> Result<(), SinkError> {
        self.set_paused(name, true).await
    }

    pub async fn resume(&self, name: &str) -> Result<(), SinkError> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<(), SinkError> {
        let mut running = self.running.lock().await;
        let sink = running
            .get_mut(name)
            .ok_or_else(|| SinkError::NotFound { name: name.into() })?;
        // A resume restarts the workers even if they were running: it is
        // also how an operator retries at once instead of after a backoff.
        stop(sink).await;
        let mut definition = sink.definition.clone();
        definition.paused = paused;
        let (storage, stored) = (self.storage.clone(), definition.clone());
        blocking(move || put_definition(&storage, &stored)).await?;
        *sink = self.launch(definition)?;
        Ok(())
    }

    /// Moves a sink's cursor in one shard (or all) to `to`. Its workers
    /// stop first and start again unless it is paused. An upstream that
    /// says where it stands (JetStream, Kafka) still moves a worker past
    /// what it already holds, so moving back re-sends only to Kinesis.
    pub async fn seek(
        &self,
        name: &str,
        only: Option<u32>,
        to: Position,
    ) -> Result<SinkInfo, SinkError> {
        let mut running = self.running.lock().await;
        let sink = running
            .get_mut(name)
            .ok_or_else(|| SinkError::NotFound { name: name.into() })?;
        stop(sink).await;
        let moved = self.move_cursors(&sink.definition, only, to).await;
        *sink = self.launch(sink.definition.clone())?;
        moved?;
        tracing::info!(sink = name, shard = ?only, %to, "sink cursor moved");
        self.info(&sink.definition, &sink.workers, true)
    }

    async fn move_cursors(
        &self,
        definition: &Definition,
        only: Option<u32>,
        to: Position,
    ) -> Result<(), StorageError> {
        let (storage, id, source) = (
            self.storage.clone(),
            definition.id,
            definition.settings.source.clone(),
        );
        blocking(move || {
            let source = storage.stream(&source)?;
            for (shard, next_sequence) in storage.resolve_in_shards(&source, only, to)? {
                let cursor = stored_cursor(&storage, id, shard.index)?;
                put_cursor(
                    &storage,
                    id,
                    shard.index,
                    &SinkCursor {
                        next_sequence,
                        counted_below: cursor.counted_below.max(cursor.next_sequence),
                        ..cursor
                    },
                )?;
            }
            Ok(())
        })
        .await
    }

    pub async fn delete(&self, name: &str) -> Result<(), SinkError> {
        let mut running = self.running.lock().await;
        let sink = running
            .get_mut(name)
            .ok_or_else(|| SinkError::NotFound { name: name.into() })?;
        stop(sink).await;
        self.forget(&sink.definition).await?;
        running.remove(name);
        Ok(())
    }

    /// Removes a sink's definition and cursors from the catalog.
    async fn forget(&self, definition: &Definition) -> Result<(), StorageError> {
        let (storage, id, name) = (
            self.storage.clone(),
            definition.id,
            definition.settings.name.clone(),
        );
        blocking(move || {
            storage.catalog().remove_with(
                CatalogKind::Sink,
                &name,
                CatalogKind::SinkCursor,
                &format!("{id}/"),
            )
        })
        .await
    }

    /// How the sinks into this box's own Kinesis API move records.
    pub async fn flows(&self) -> Vec<Flow> {
        self.flows_of(&*self.running.lock().await)
    }

    fn flows_of(&self, running: &BTreeMap<String, Running>) -> Vec<Flow> {
        running
            .values()
            .filter_map(|sink| self.flow(&sink.definition.settings))
            .collect()
    }

    /// The flow a sink makes on this box: into the stream it forwards to,
    /// when its upstream is this box's own Kinesis API.
    fn flow(&self, settings: &SinkSettings) -> Option<Flow> {
        let Ok(Target::Kinesis(kinesis)) = Target::parse(&settings.to) else {
            return None;
        };
        kinesis.is_listener(self.own_kinesis?).then(|| Flow {
            from: settings.source.clone(),
            to: kinesis.stream,
            by: format!("sink {}", settings.name),
        })
    }

    /// Sinks reading `stream` (a stream in use cannot be deleted).
    pub async fn users_of_stream(&self, stream: &str) -> Vec<String> {
        let running = self.running.lock().await;
        running
            .values()
            .filter(|sink| sink.definition.settings.source == stream)
            .map(|sink| sink.definition.settings.name.clone())
            .collect()
    }

    /// Starts the workers of a sink that is not paused.
    fn launch(&self, definition: Definition) -> Result<Running, SinkError> {
        let (stop, stop_rx) = watch::channel(false);
        let mut sink = Running {
            definition,
            workers: Vec::new(),
            stop,
            tasks: Vec::new(),
        };
        if sink.definition.paused {
            return Ok(sink);
        }
        let settings = &sink.definition.settings;
        let source = self.storage.stream(&settings.source)?;
        let target = Target::parse(&settings.to).map_err(SinkError::InvalidSettings)?;
        let connection = upstream::Connection::open(
            &target,
            settings,
            std::time::Duration::from_millis(self.config.sink_request_timeout_ms),
        );
        let bucket = settings
            .bytes_per_sec
            .map(|rate| Arc::new(tokio::sync::Mutex::new(ByteBucket::new(rate))));
        for shard in &source.shards {
            let cursor = stored_cursor(&self.storage, sink.definition.id, shard.index)?;
            let progress = Arc::new(Mutex::new(Progress::new(cursor)));
            let worker = Worker {
                storage: self.storage.clone(),
                sink_id: sink.definition.id,
                sink: settings.name.clone(),
                shard: shard.clone(),
                upstream: connection.for_shard(&self.box_id, shard),
                cursor,
                batch_records: settings
                    .batch_records
                    .unwrap_or(self.config.sink_batch_records_max)
                    as usize,
                batch_bytes_max: self.config.sink_batch_bytes_max,
                linger: std::time::Duration::from_millis(settings.linger_ms.unwrap_or(0)),
                backoff_max: std::time::Duration::from_millis(
                    self.config.sink_retry_backoff_ms_max,
                ),
                bucket: bucket.clone(),
                progress: progress.clone(),
                acked_since_sync: false,
                saved_at: std::time::Instant::now(),
                cursor_unsaved: false,
            };
            sink.workers.push(progress);
            sink.tasks
                .push(self.thread.handle.spawn(worker.run(stop_rx.clone())));
        }
        Ok(sink)
    }

    fn info(
        &self,
        definition: &Definition,
        workers: &[Arc<Mutex<Progress>>],
        with_shards: bool,
    ) -> Result<SinkInfo, SinkError> {
        let mut settings = definition.settings.clone();
        settings.to = Target::redacted(&settings.to);
        let mut shards = Vec::new();
        if with_shards {
            let source = self.storage.stream(&settings.source)?;
            for shard in &source.shards {
                let progress = workers
                    .get(shard.index as usize)
                    .map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).clone());
                let (status, cursor, last_error) = match progress {
                    _ if definition.paused => (
                        "paused".to_owned(),
                        stored_cursor(&self.storage, definition.id, shard.index)?,
                        None,
                    ),
                    Some(progress) => (
                        progress.status.to_owned(),
                        progress.cursor,
                        progress.last_error,
                    ),
                    None => (
                        "stopped".to_owned(),
                        stored_cursor(&self.storage, definition.id, shard.index)?,
                        None,
                    ),
                };
                let backlog = self.storage.backlog(shard, cursor.next_sequence)?;
                shards.push(SinkShardProgress {
                    shard: shard.index,
                    status,
                    cursor: cursor.next_sequence,
                    lag_records: backlog.records,
                    lag_bytes: backlog.bytes,
                    lag_ms: backlog.age_ms(),
                    records_forwarded: cursor.records_forwarded,
                    bytes_forwarded: cursor.bytes_forwarded,
                    last_ack_ms: cursor.last_ack_ms,
                    last_error,
                });
            }
        }
        Ok(SinkInfo {
            settings,
            paused: definition.paused,
            created_ms: definition.created_ms,
            shards,
        })
    }
}

/// What reporting needs of a sink, cheap to take under the registry's lock.
fn snapshot(sink: &Running) -> (Definition, Vec<Arc<Mutex<Progress>>>) {
    (sink.definition.clone(), sink.workers.clone())
}

fn find<'a>(running: &'a BTreeMap<String, Running>, name: &str) -> Result<&'a Running, SinkError> {
    running
        .get(name)
        .ok_or_else(|| SinkError::NotFound { name: name.into() })
}

async fn stop(sink: &mut Running) {
    let _ = sink.stop.send(true);
    for task in sink.tasks.drain(..) {
        let _ = task.await;
    }
    sink.workers.clear();
}

fn put_definition(storage: &Storage, definition: &Definition) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(definition).expect("a sink definition encodes as JSON");
    storage
        .catalog()
        .put(CatalogKind::Sink, &definition.settings.name, &bytes)
}

pub(crate) fn put_cursor(
    storage: &Storage,
    sink_id: u64,
    shard: u32,
    cursor: &SinkCursor,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(cursor).expect("a sink cursor encodes as JSON");
    storage.catalog().put(
        CatalogKind::SinkCursor,
        &cursor_name(sink_id, shard),
        &bytes,
    )
}

fn stored_cursor(storage: &Storage, sink_id: u64, shard: u32) -> Result<SinkCursor, StorageError> {
    let Some(bytes) = storage
        .catalog()
        .get(CatalogKind::SinkCursor, &cursor_name(sink_id, shard))?
    else {
        return Ok(SinkCursor::default());
    };
    serde_json::from_slice(&bytes).map_err(|_| StorageError::Corrupt {
        what: "a sink cursor",
    })
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| StorageError::WriterStopped)?
}
