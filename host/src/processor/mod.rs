//! Processors: a plugin attached to a source stream, run by one in-order
//! worker per source shard ([`worker`]) through the processing core
//! ([`step`]). This module keeps the registry of processors and their
//! lifecycle (create, start, pause, resume, update, delete); what is stored
//! of each is in [`definition`], what describe and metrics show in
//! [`report`], the uploaded plugins in the [`plugins`] catalog.

mod definition;
mod error;
mod fuel;
mod plugins;
mod report;
pub mod step;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use weir_proto::Retention;
use weir_proto::admin::{
    FailurePolicy, PluginInfo, ProcessorInfo, ProcessorLimits, ProcessorSettings, StateEntry,
};
use weir_proto::message::Position;

use crate::config::{Limits, ProcessingConfig};
use crate::flows::{self, Flow};
use crate::plugin::{InstanceLimits, PluginError, PluginLog, PluginRuntime, sha256_hex};
use crate::storage::{CursorState, Storage, StorageError};
use definition::{Definition, check_limits, check_no_loop, decode, encode};
pub use error::ProcessorError;
use plugins::{PluginCatalog, PluginRecord};
use report::Snapshot;
use step::Rules;
use worker::{InstanceMaker, Progress, ReadFailure, Worker};

struct WorkerHandle {
    stop: watch::Sender<bool>,
    progress: Arc<Mutex<Progress>>,
    /// The processor's log, shared by its workers.
    log: PluginLog,
    task: tokio::task::JoinHandle<()>,
}

struct Running {
    definition: Definition,
    workers: Vec<WorkerHandle>,
}

pub struct Processors {
    storage: Arc<Storage>,
    plugins: PluginCatalog,
    runtime: Arc<PluginRuntime>,
    config: ProcessingConfig,
    record_bytes_max: usize,
    stream_shards_max: u32,
    streams_max: usize,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
}

fn validate_name(kind: &str, name: &str) -> Result<(), ProcessorError> {
    crate::names::validate(kind, name).map_err(ProcessorError::InvalidSettings)
}

impl Processors {
    /// Linear memory all plugin instances hold now.
    pub fn plugin_memory_bytes(&self) -> u64 {
        self.runtime.memory_budget().reserved_bytes()
    }

    /// The largest component `plugin add` accepts.
    pub fn plugin_bytes_max(&self) -> usize {
        self.plugins.plugin_bytes_max()
    }

    /// Loads every processor definition and starts the workers of those not
    /// paused, each from its committed cursor.
    pub async fn start(
        storage: Arc<Storage>,
        runtime: Arc<PluginRuntime>,
        config: ProcessingConfig,
        limits: &Limits,
    ) -> Result<Arc<Self>, ProcessorError> {
        let processors = Arc::new(Self {
            plugins: PluginCatalog::new(storage.clone(), runtime.clone(), &config),
            storage,
            runtime,
            config,
            record_bytes_max: limits.record_bytes_max,
            stream_shards_max: limits.stream_shards_max,
            streams_max: limits.streams_max,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
        });
        let mut definitions = (processors.storage.processing().processor_definitions()?)
            .iter()
            .map(|bytes| decode::<Definition>(bytes, "processor definition"))
            .collect::<Result<Vec<_>, _>>()?;
        // In the order they were created, so that of processors forming a
        // loop (possible before Weir refused loops) the one that closed it
        // is the one paused.
        definitions.sort_by_key(|definition| definition.id);
        let mut flowing = Vec::new();
        let mut running = processors.running.lock().await;
        for mut definition in definitions {
            if !definition.paused {
                let own = definition.flows();
                match flows::closed_loop(&own, &flowing) {
                    None => flowing.extend(own),
                    Some(path) => {
                        tracing::error!(processor = %definition.settings.name, %path, "processor paused: it feeds its own source, so records would go round for ever; delete it or write elsewhere");
                        definition.paused = true;
                        processors
                            .storage
                            .processing()
                            .put_processor(&definition.settings.name, &encode(&definition))?;
                    }
                }
            }
            let workers = if definition.paused {
                Vec::new()
            } else {
                match processors.spawn_workers(&definition) {
                    Ok(workers) => workers,
                    Err(error) => {
                        tracing::error!(processor = %definition.settings.name, %error, "processor not started");
                        Vec::new()
                    }
                }
            };
            running.insert(
                definition.settings.name.clone(),
                Running {
                    definition,
                    workers,
                },
            );
        }
        drop(running);
        Ok(processors)
    }

    /// Stops every worker (each finishes or abandons its current batch; only
    /// committed progress counts).
    pub async fn shutdown(&self) {
        let mut running = self.running.lock().await;
        for processor in running.values_mut() {
            stop_workers(std::mem::take(&mut processor.workers)).await;
        }
    }

    fn plugin_info(&self, record: PluginRecord, running: &BTreeMap<String, Running>) -> PluginInfo {
        let used_by = running
            .values()
            .filter(|r| r.definition.settings.plugin == record.name)
            .map(|r| r.definition.settings.name.clone())
            .collect();
        PluginInfo {
            name: record.name,
            sha256: record.sha256,
            bytes: record.bytes,
            wit: record.wit,
            created_ms: record.created_ms,
            used_by,
        }
    }

    /// Validates, stores (content-addressed) and precompiles a component.
    /// Adding the same component under the same name again is a no-op.
    pub async fn add_plugin(
        &self,
        name: &str,
        component: &[u8],
    ) -> Result<PluginInfo, ProcessorError> {
        validate_name("plugin", name)?;
        let sha256 = sha256_hex(component);
        let running = self.running.lock().await;
        if let Ok(existing) = self.plugins.get(name) {
            if existing.sha256 == sha256 {
                return Ok(self.plugin_info(existing, &running));
            }
            return Err(ProcessorError::PluginExists {
                name: name.to_owned(),
                sha256: existing.sha256,
            });
        }
        let record = self.plugins.add(name, sha256, component).await?;
        Ok(self.plugin_info(record, &running))
    }

    pub async fn list_plugins(&self) -> Result<Vec<PluginInfo>, ProcessorError> {
        let running = self.running.lock().await;
        Ok(self
            .plugins
            .all()?
            .into_iter()
            .map(|record| self.plugin_info(record, &running))
            .collect())
    }

    pub async fn describe_plugin(&self, name: &str) -> Result<PluginInfo, ProcessorError> {
        let running = self.running.lock().await;
        Ok(self.plugin_info(self.plugins.get(name)?, &running))
    }

    pub async fn remove_plugin(&self, name: &str) -> Result<(), ProcessorError> {
        let running = self.running.lock().await;
        let record = self.plugins.get(name)?;
        let used_by = self.plugin_info(record.clone(), &running).used_by;
        if !used_by.is_empty() {
            return Err(ProcessorError::PluginInUse {
                name: name.to_owned(),
                processors: used_by.join(", "),
            });
        }
        self.plugins.remove(&record)
    }

    /// The processor's own state budget, or the server's default.
    fn state_bytes_max(&self, definition: &Definition) -> u64 {
        definition
            .settings
            .state_bytes_max
            .unwrap_or(self.config.processor_state_bytes_max)
    }

    fn plugin_log(&self, processor: &str) -> PluginLog {
        PluginLog::new(processor, self.config.plugin_log_lines_per_sec)
    }

    fn instance_limits(&self, definition: &Definition) -> InstanceLimits {
        InstanceLimits {
            fuel_per_call_max: definition.fuel_per_batch_max,
            memory_bytes_max: definition.memory_bytes_max,
            call_timeout_ms: self.config.plugin_call_timeout_ms,
            state_key_bytes_max: self.config.state_key_bytes_max,
            state_value_bytes_max: self.config.state_value_bytes_max,
        }
    }

    /// Creates a processor: checks the settings, runs the plugin's `init`
    /// on the config (its error is the user's answer), creates the output
    /// and dead-letter streams if missing, and starts the workers.
    /// `other_flows` are the box's flows besides processors (sinks into its
    /// own Kinesis API), for the loop check.
    pub async fn create(
        &self,
        settings: ProcessorSettings,
        other_flows: &[Flow],
    ) -> Result<ProcessorInfo, ProcessorError> {
        validate_name("processor", &settings.name)?;
        let mut running = self.running.lock().await;
        let processors_max = self.config.processors_max;
        if running.len() >= processors_max {
            return Err(ProcessorError::LimitExceeded(format!(
                "the server runs processors_max ({processors_max}) processors; remove one or raise the limit"
            )));
        }
        if running.contains_key(&settings.name) {
            return Err(ProcessorError::Exists {
                name: settings.name,
            });
        }
        let plugin = self.plugins.get(&settings.plugin)?;
        let source = self.storage.stream(&settings.source)?;
        let output = settings
            .output
            .clone()
            .unwrap_or_else(|| format!("{}.out", settings.name));
        validate_name("output stream", &output)?;
        let mut definition = Definition {
            id: 0,
            plugin_sha256: plugin.sha256.clone(),
            output: output.clone(),
            dead_letter_stream: (settings.on_error == FailurePolicy::DeadLetter)
                .then(|| format!("{}.dead-letter", settings.name)),
            fuel_per_sec: settings
                .fuel_per_sec
                .unwrap_or(self.config.processor_fuel_per_sec),
            fuel_per_batch_max: settings
                .fuel_per_batch_max
                .unwrap_or(self.config.processor_fuel_per_batch_max),
            memory_bytes_max: settings
                .memory_bytes_max
                .unwrap_or(self.config.plugin_memory_bytes_max),
            paused: false,
            settings,
        };
        check_no_loop(
            &definition,
            running.values().map(|r| &r.definition),
            other_flows,
        )?;
        check_limits(
            &ProcessorLimits {
                fuel_per_sec: Some(definition.fuel_per_sec),
                fuel_per_batch_max: Some(definition.fuel_per_batch_max),
                memory_bytes_max: Some(definition.memory_bytes_max),
                state_bytes_max: definition.settings.state_bytes_max,
            },
            &self.config,
        )?;

        // The plugin's init is the judge of the config. It is guest code:
        // run it on a blocking thread, like every call.
        let loaded = self.plugins.load(&plugin.sha256)?;
        let (runtime, limits) = (self.runtime.clone(), self.instance_limits(&definition));
        let log = self.plugin_log(&definition.settings.name);
        let config = definition.settings.config.clone();
        tokio::task::spawn_blocking(move || {
            runtime.instantiate(&loaded, limits, log)?.init(&config)
        })
        .await
        .map_err(|e| PluginError::Host(format!("plugin init panicked: {e}")))?
        .map_err(|error| match error {
            PluginError::InitRejected(message) => ProcessorError::InvalidConfig(message),
            other => ProcessorError::Plugin(other),
        })?;

        let shard_count = source.shards.len() as u32;
        self.ensure_stream(&output, shard_count)?;
        if let Some(dead_letter) = &definition.dead_letter_stream {
            self.ensure_stream(dead_letter, 1)?;
        }
        definition.id = self.storage.catalog().next_id("processor")?;
        self.storage
            .processing()
            .put_processor(&definition.settings.name, &encode(&definition))?;
        // Each shard's starting cursor is committed now: a processor that
        // has processed nothing yet (paused, or behind a slow first call)
        // must still resume from where it started, so that records
        // retention removes meanwhile are reported, not skipped unseen.
        for shard in &source.shards {
            let cursor = CursorState {
                next_sequence: self.storage.resolve(shard, definition.start_position())?,
                ..Default::default()
            };
            self.storage
                .processing()
                .commit_cursor(definition.id, shard.index, cursor)
                .await?;
        }
        let workers = self.spawn_workers(&definition)?;
        tracing::info!(processor = %definition.settings.name, plugin = %definition.settings.plugin, source = %definition.settings.source, %output, "processor created");
        let info = self.info(&Snapshot::of(&definition, &workers), true)?;
        running.insert(
            definition.settings.name.clone(),
            Running {
                definition,
                workers,
            },
        );
        Ok(info)
    }

    /// Creates an output or dead-letter stream unless it exists, within
    /// `streams_max` as a stream created by hand is.
    fn ensure_stream(&self, name: &str, shards: u32) -> Result<(), ProcessorError> {
        if self.storage.stream(name).is_ok() {
            return Ok(());
        }
        let streams_max = self.streams_max;
        if self.storage.list_streams().len() >= streams_max {
            return Err(ProcessorError::LimitExceeded(format!(
                "the server holds streams_max ({streams_max}) streams, so stream {name:?} cannot be created for the processor; delete a stream or raise the limit"
            )));
        }
        match self.storage.create_stream(
            name,
            shards.min(self.stream_shards_max),
            Retention::default(),
        ) {
            Ok(()) | Err(StorageError::StreamExists { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn spawn_workers(&self, definition: &Definition) -> Result<Vec<WorkerHandle>, ProcessorError> {
        let source = self.storage.stream(&definition.settings.source)?;
        let output = self.storage.stream(&definition.output)?;
        let dead_letter = definition
            .dead_letter_stream
            .as_deref()
            .map(|name| self.storage.stream(name))
            .transpose()?;
        let loaded = self.plugins.load(&definition.plugin_sha256)?;
        let log = self.plugin_log(&definition.settings.name);
        let mut workers = Vec::with_capacity(source.shards.len());
        for shard in &source.shards {
            let start = match self
                .storage
                .processing()
                .cursor(definition.id, shard.index)?
            {
                Some(cursor) => cursor,
                // Created before starting cursors were committed at once.
                None => CursorState {
                    next_sequence: self.storage.resolve(shard, definition.start_position())?,
                    ..Default::default()
                },
            };
            let progress = Arc::new(Mutex::new(Progress::new("running")));
            let (stop, stop_rx) = watch::channel(false);
            let state_bytes_max =
                self.state_bytes_max(definition) / source.shards.len().max(1) as u64;
            let state_limit = match definition.settings.state_bytes_max {
                Some(max) => format!("its state-max ({max})"),
                None => format!(
                    "processor_state_bytes_max ({})",
                    self.config.processor_state_bytes_max
                ),
            };
            let state_read_failure = ReadFailure::default();
            let maker = Arc::new(InstanceMaker {
                runtime: self.runtime.clone(),
                plugin: loaded.clone(),
                limits: self.instance_limits(definition),
                log: log.clone(),
                config: definition.settings.config.clone(),
                storage: self.storage.clone(),
                processor_id: definition.id,
                shard: shard.index,
                state_read_failure: state_read_failure.clone(),
            });
            let rules = Arc::new(Rules {
                processor: definition.settings.name.clone(),
                source_stream: definition.settings.source.clone(),
                shard: shard.index,
                on_error: definition.settings.on_error,
                record_bytes_max: self.record_bytes_max,
                output_records_max: self.config.processor_output_records_per_call_max,
                output_bytes_max: self.config.processor_output_bytes_per_call_max,
            });
            let worker = Worker {
                storage: self.storage.clone(),
                maker,
                rules,
                processor_id: definition.id,
                source: shard.clone(),
                output: output.clone(),
                dead_letter: dead_letter.clone(),
                fuel_per_sec: definition.fuel_per_sec,
                processing: self.config.clone(),
                cursor: start,
                progress: progress.clone(),
                state_bytes_max,
                state_limit,
                state_read_failure,
            };
            let task = tokio::spawn(worker.run(stop_rx));
            workers.push(WorkerHandle {
                stop,
                progress,
                log: log.clone(),
                task,
            });
        }
        Ok(workers)
    }

    async fn with_processor<T>(
        &self,
        name: &str,
        change: impl FnOnce(&Self, &mut Running) -> Result<T, ProcessorError>,
    ) -> Result<T, ProcessorError> {
        change(self, find_mut(&mut *self.running.lock().await, name)?)
    }

    pub async fn pause(&self, name: &str) -> Result<(), ProcessorError> {
        let workers = self
            .with_processor(name, |this, processor| {
                processor.definition.paused = true;
                this.storage
                    .processing()
                    .put_processor(name, &encode(&processor.definition))?;
                Ok(std::mem::take(&mut processor.workers))
            })
            .await?;
        stop_workers(workers).await;
        tracing::info!(processor = name, "processor paused");
        Ok(())
    }

    /// Restarts a paused or halted processor. One that closes a loop
    /// (paused at start for it) is refused, as `create` would; `other_flows`
    /// as for `create`.
    pub async fn resume(&self, name: &str, other_flows: &[Flow]) -> Result<(), ProcessorError> {
        {
            let running = self.running.lock().await;
            let resumed = &find(&running, name)?.definition;
            let others = running
                .values()
                .map(|r| &r.definition)
                .filter(|definition| definition.id != resumed.id);
            check_no_loop(resumed, others, other_flows)?;
        }
        // A halted worker resumes too: it retries from its cursor.
        let workers = self
            .with_processor(name, |_, processor| {
                processor.definition.paused = false;
                Ok(std::mem::take(&mut processor.workers))
            })
            .await?;
        stop_workers(workers).await;
        self.with_processor(name, |this, processor| {
            this.storage
                .processing()
                .put_processor(name, &encode(&processor.definition))?;
            processor.workers = this.spawn_workers(&processor.definition)?;
            Ok(())
        })
        .await?;
        tracing::info!(processor = name, "processor resumed");
        Ok(())
    }

    /// Changes a processor's limits. Its workers restart with them from
    /// their cursors, so a shard halted on a limit runs again.
    pub async fn update(
        &self,
        name: &str,
        limits: ProcessorLimits,
    ) -> Result<ProcessorInfo, ProcessorError> {
        check_limits(&limits, &self.config)?;
        let workers = self
            .with_processor(name, |this, processor| {
                let definition = &mut processor.definition;
                if let Some(fuel_per_sec) = limits.fuel_per_sec {
                    definition.fuel_per_sec = fuel_per_sec;
                }
                if let Some(fuel_per_batch_max) = limits.fuel_per_batch_max {
                    definition.fuel_per_batch_max = fuel_per_batch_max;
                }
                if let Some(memory_bytes_max) = limits.memory_bytes_max {
                    definition.memory_bytes_max = memory_bytes_max;
                }
                if let Some(state_bytes_max) = limits.state_bytes_max {
                    definition.settings.state_bytes_max = Some(state_bytes_max);
                }
                this.storage
                    .processing()
                    .put_processor(name, &encode(definition))?;
                Ok(std::mem::take(&mut processor.workers))
            })
            .await?;
        stop_workers(workers).await;
        let info = self
            .with_processor(name, |this, processor| {
                if !processor.definition.paused {
                    processor.workers = this.spawn_workers(&processor.definition)?;
                }
                this.info(
                    &Snapshot::of(&processor.definition, &processor.workers),
                    true,
                )
            })
            .await?;
        tracing::info!(
            processor = name,
            fuel_per_sec = info.fuel_per_sec,
            fuel_per_batch_max = info.fuel_per_batch_max,
            memory_bytes_max = info.memory_bytes_max,
            state_bytes_max = info.state_bytes_max,
            "processor limits changed"
        );
        Ok(info)
    }

    /// Moves a processor's cursor in one shard (or all) to `to`, to skip
    /// records or process them again. Its workers stop first, so none
    /// commits over the new cursor, and start again unless it is paused (a
    /// halted shard runs again). Counters and state stay as they are.
    pub async fn seek(
        &self,
        name: &str,
        only: Option<u32>,
        to: Position,
    ) -> Result<ProcessorInfo, ProcessorError> {
        let mut running = self.running.lock().await;
        let processor = find_mut(&mut running, name)?;
        stop_workers(std::mem::take(&mut processor.workers)).await;
        let moved = self.move_cursors(&processor.definition, only, to).await;
        if !processor.definition.paused {
            processor.workers = self.spawn_workers(&processor.definition)?;
        }
        moved?;
        tracing::info!(processor = name, shard = ?only, %to, "processor cursor moved");
        self.info(
            &Snapshot::of(&processor.definition, &processor.workers),
            true,
        )
    }

    async fn move_cursors(
        &self,
        definition: &Definition,
        only: Option<u32>,
        to: Position,
    ) -> Result<(), ProcessorError> {
        let (storage, id, source) = (
            self.storage.clone(),
            definition.id,
            definition.settings.source.clone(),
        );
        // Finding a time reads chunks from disk: off the async threads.
        let moved = tokio::task::spawn_blocking(move || {
            let source = storage.stream(&source)?;
            (storage.resolve_in_shards(&source, only, to)?)
                .into_iter()
                .map(|(shard, next_sequence)| {
                    let cursor = storage.processing().cursor(id, shard.index)?;
                    let moved = CursorState {
                        next_sequence,
                        ..cursor.unwrap_or_default()
                    };
                    Ok((shard.index, moved))
                })
                .collect::<Result<Vec<_>, StorageError>>()
        })
        .await
        .map_err(|_| StorageError::WriterStopped)??;
        for (shard, cursor) in moved {
            self.storage
                .processing()
                .commit_cursor(id, shard, cursor)
                .await?;
        }
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), ProcessorError> {
        let removed =
            self.running
                .lock()
                .await
                .remove(name)
                .ok_or_else(|| ProcessorError::NotFound {
                    name: name.to_owned(),
                })?;
        // Persisted first, so a worker slow to stop cannot bring the
        // processor back at the next start; removed again once the workers
        // have stopped, for anything they committed meanwhile.
        self.storage
            .processing()
            .remove_processor(name, removed.definition.id)?;
        stop_workers(removed.workers).await;
        self.storage
            .processing()
            .remove_processor(name, removed.definition.id)?;
        tracing::info!(
            processor = name,
            "processor removed (its output stream is kept)"
        );
        Ok(())
    }

    /// How the processors move records between streams.
    pub async fn flows(&self) -> Vec<Flow> {
        let running = self.running.lock().await;
        running
            .values()
            .flat_map(|r| r.definition.flows())
            .collect()
    }

    /// Processors that read or write `stream` (source, output, dead letters).
    pub async fn users_of_stream(&self, stream: &str) -> Vec<String> {
        let running = self.running.lock().await;
        running
            .values()
            .filter(|r| {
                let definition = &r.definition;
                definition.settings.source == stream
                    || definition.output == stream
                    || definition.dead_letter_stream.as_deref() == Some(stream)
            })
            .map(|r| r.definition.settings.name.clone())
            .collect()
    }

    pub async fn list(&self) -> Result<Vec<ProcessorInfo>, ProcessorError> {
        self.infos(false).await
    }

    /// Every processor with its per-shard progress (for metrics and status).
    pub async fn list_detailed(&self) -> Result<Vec<ProcessorInfo>, ProcessorError> {
        self.infos(true).await
    }

    async fn infos(&self, with_shards: bool) -> Result<Vec<ProcessorInfo>, ProcessorError> {
        // The storage reads come after the registry's lock is let go.
        let snapshots: Vec<Snapshot> = (self.running.lock().await.values())
            .map(|r| Snapshot::of(&r.definition, &r.workers))
            .collect();
        snapshots
            .iter()
            .map(|snapshot| self.info(snapshot, with_shards))
            .collect()
    }

    fn info(
        &self,
        snapshot: &Snapshot,
        with_shards: bool,
    ) -> Result<ProcessorInfo, ProcessorError> {
        let state_bytes_max = self.state_bytes_max(snapshot.definition());
        report::processor_info(&self.storage, snapshot, with_shards, state_bytes_max)
    }

    pub async fn describe(&self, name: &str) -> Result<ProcessorInfo, ProcessorError> {
        let running = self.running.lock().await;
        let processor = running.get(name).ok_or_else(|| ProcessorError::NotFound {
            name: name.to_owned(),
        })?;
        let snapshot = Snapshot::of(&processor.definition, &processor.workers);
        drop(running);
        self.info(&snapshot, true)
    }

    /// A processor's state: `key` in every shard, or every key starting with
    /// `prefix` (all keys if neither), at most `limit` entries.
    pub async fn state(
        &self,
        name: &str,
        key: Option<&str>,
        prefix: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StateEntry>, ProcessorError> {
        let (id, source) = {
            let running = self.running.lock().await;
            let processor = running.get(name).ok_or_else(|| ProcessorError::NotFound {
                name: name.to_owned(),
            })?;
            (
                processor.definition.id,
                processor.definition.settings.source.clone(),
            )
        };
        report::state_entries(&self.storage, id, &source, key, prefix, limit)
    }

    /// The source stream of processor `name`, if it exists.
    pub async fn source_of(&self, name: &str) -> Option<String> {
        let running = self.running.lock().await;
        running
            .get(name)
            .map(|processor| processor.definition.settings.source.clone())
    }
}

fn find<'a>(
    running: &'a BTreeMap<String, Running>,
    name: &str,
) -> Result<&'a Running, ProcessorError> {
    running.get(name).ok_or_else(|| ProcessorError::NotFound {
        name: name.to_owned(),
    })
}

fn find_mut<'a>(
    running: &'a mut BTreeMap<String, Running>,
    name: &str,
) -> Result<&'a mut Running, ProcessorError> {
    running
        .get_mut(name)
        .ok_or_else(|| ProcessorError::NotFound {
            name: name.to_owned(),
        })
}

async fn stop_workers(workers: Vec<WorkerHandle>) {
    for worker in &workers {
        let _ = worker.stop.send(true);
    }
    for worker in workers {
        let _ = worker.task.await;
    }
}
