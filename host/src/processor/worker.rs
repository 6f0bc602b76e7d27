//! One processor worker: reads one source shard in sequence order, calls
//! the plugin with batches, and commits outputs, state and cursor together.
//!
//! The happy path is one call per batch. When a batch fails in any way (a
//! trap, fuel or time running out, the memory limit, an error returned for
//! the batch or for some records, an oversized or malformed output), the
//! batch is replayed one record per call to find the records at fault, and
//! the failure policy applies to each of those alone: `halt` stops the
//! worker at that record (committing the records before it), `skip` records
//! its sequence number, `dead-letter` writes it to the dead-letter stream.
//! Input is never lost: the cursor only moves past a record in the same
//! atomic commit as its outputs, its failure record or its dead letter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use weir_proto::admin::FailurePolicy;
use weir_proto::batch::{BatchRecord, InputWriter, NO_INPUT, OutputEntry, OutputReader};
use weir_proto::routing::shard_for_hash_key;
use weir_proto::{Record, defaults};

use super::fuel::FuelBucket;
use crate::config::ProcessingConfig;
use crate::plugin::instance::StateWrites;
use crate::plugin::{
    InstanceLimits, LoadedPlugin, PluginError, PluginInstance, PluginLog, PluginRuntime,
    StateBacking,
};
use crate::storage::{
    AppendRecord, CursorState, ProcessingCommit, Shard, StateSize, Storage, StorageError, Stream,
    now_ms,
};

/// How often a worker waiting for storage space looks again.
const STORAGE_FULL_RECHECK: Duration = Duration::from_millis(500);

/// What `processor describe` shows about a worker besides its cursor.
#[derive(Debug, Clone)]
pub struct Progress {
    pub status: &'static str,
    pub last_error: Option<String>,
}

impl Progress {
    pub fn new(status: &'static str) -> Self {
        Self {
            status,
            last_error: None,
        }
    }
}

pub(super) struct Worker {
    pub storage: Arc<Storage>,
    pub maker: Arc<InstanceMaker>,
    pub processor: String,
    pub processor_id: u64,
    pub on_error: FailurePolicy,
    pub source: Arc<Shard>,
    pub output: Arc<Stream>,
    pub dead_letter: Option<Arc<Stream>>,
    pub fuel_per_sec: u64,
    pub processing: ProcessingConfig,
    pub record_bytes_max: usize,
    pub cursor: CursorState,
    pub progress: Arc<Mutex<Progress>>,
    /// This shard's share of the processor's state budget.
    pub state_bytes_max: u64,
    /// That budget, named for messages: "processor_state_bytes_max (N)".
    pub state_limit: String,
    /// Shared with the plugin instance's state backing.
    pub state_read_failure: ReadFailure,
}

/// Makes the worker's plugin instances: instantiate, state backing, `init`.
/// Used on a blocking thread, since `init` is guest code.
pub(super) struct InstanceMaker {
    pub runtime: Arc<PluginRuntime>,
    pub plugin: LoadedPlugin,
    pub limits: InstanceLimits,
    pub log: PluginLog,
    pub config: Vec<(String, String)>,
    pub storage: Arc<Storage>,
    pub processor_id: u64,
    pub shard: u32,
    pub state_read_failure: ReadFailure,
}

impl InstanceMaker {
    fn make(&self) -> Result<PluginInstance, PluginError> {
        let mut instance = self
            .runtime
            .instantiate(&self.plugin, self.limits, self.log.clone())?;
        instance.set_state_backing(Box::new(StorageState {
            storage: self.storage.clone(),
            processor_id: self.processor_id,
            shard: self.shard,
            read_failure: self.state_read_failure.clone(),
        }));
        instance.init(&self.config)?;
        Ok(instance)
    }
}

/// Committed state reads for the worker's (processor, shard).
struct StorageState {
    storage: Arc<Storage>,
    processor_id: u64,
    shard: u32,
    read_failure: ReadFailure,
}

/// A state read storage could not answer (it is being reopened, say) since
/// the last commit: the calls since then are void and must be redone.
pub(super) type ReadFailure = Arc<Mutex<Option<String>>>;

impl StateBacking for StorageState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.storage
            .state_get(self.processor_id, self.shard, key)
            .map_err(|error| {
                let reason = error.to_string();
                let mut failure = self.read_failure.lock().unwrap_or_else(|p| p.into_inner());
                failure.get_or_insert_with(|| reason.clone());
                reason
            })
    }
}

/// Outputs of records processed so far in this step, not yet committed.
#[derive(Default)]
struct Pending {
    outputs: Vec<(String, Bytes)>,
    failures: Vec<(u64, String)>,
    dead_letters: Vec<(String, Bytes)>,
    records_in: u64,
    fuel_used: u64,
}

/// Why a record (or a batch) could not be processed.
struct CallFailure {
    reason: String,
}

/// What became of one call into the plugin.
struct Called<T> {
    /// The instance, unless the call poisoned it or none could be made.
    instance: Option<PluginInstance>,
    /// State writes of earlier calls that a poisoned instance held (or
    /// that could not be given to a new one): carried to the next instance.
    orphaned_writes: StateWrites,
    result: Result<T, CallError>,
    /// Fuel the call burned, whether it succeeded or not.
    fuel_used: u64,
}

enum CallError {
    /// The call failed: the input's fault, or the plugin's.
    Call(PluginError),
    /// No instance could be made (`init` failed): no record's fault.
    Instance(PluginError),
}

enum Step {
    Continue,
    Halt(String),
    /// Start again from what is stored, after waiting: storage refused or
    /// failed the commit for a reason that passes (full, being reopened),
    /// or the server's plugin memory is taken.
    Retry {
        status: &'static str,
        reason: String,
    },
}

impl Step {
    fn retry_storage(reason: String) -> Self {
        Self::Retry {
            status: "waiting for storage",
            reason,
        }
    }
}

type Outcome<T> = Result<T, CallFailure>;

impl Worker {
    fn set_status(&self, status: &'static str, error: Option<String>) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.status = status;
        if error.is_some() {
            progress.last_error = error;
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let _failed_if_panicking = MarkFailedOnPanic(self.progress.clone());
        let mut instance: Option<PluginInstance> = None;
        let mut bucket = FuelBucket::new(self.fuel_per_sec);
        let mut tip = self.source.watch_tip();
        let idle_tick = Duration::from_millis(self.processing.processor_idle_tick_ms);
        loop {
            if *stop.borrow() {
                return;
            }
            tip.borrow_and_update();
            let wait = bucket.wait_time();
            if !wait.is_zero() {
                self.set_status("waiting for fuel", None);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => return,
                }
            }
            if let Err(full) = self.storage.space_check() {
                // Outputs and state would be refused or push the disk
                // further; the cursor waits, so nothing is skipped.
                self.set_status("waiting for storage", Some(full.to_string()));
                tokio::select! {
                    () = tokio::time::sleep(STORAGE_FULL_RECHECK) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            let limit = self.batch_limit(bucket.available());
            let records = match self.read_batch(limit).await {
                Ok(records) => records,
                Err(error) => {
                    self.set_status("retrying", Some(format!("reading the source: {error}")));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };

            if records.is_empty() {
                self.set_status("running", None);
                tokio::select! {
                    _ = tip.changed() => {}
                    () = tokio::time::sleep(idle_tick) => {
                        let (back, step, fuel) = self.tick(instance.take()).await;
                        instance = back;
                        bucket.spend(fuel);
                        match step {
                            Step::Continue => {}
                            Step::Halt(reason) => {
                                self.halt(reason, &mut stop).await;
                                return;
                            }
                            Step::Retry { status, reason } => {
                                instance = None;
                                if !self.start_over(status, reason, &mut stop).await {
                                    return;
                                }
                            }
                        }
                    }
                    _ = stop.changed() => return,
                }
                continue;
            }

            self.set_status("running", None);
            let (back, step, fuel) = self.step(instance.take(), records).await;
            instance = back;
            bucket.spend(fuel);
            match step {
                Step::Continue => {}
                Step::Halt(reason) => {
                    self.halt(reason, &mut stop).await;
                    return;
                }
                Step::Retry { status, reason } => {
                    instance = None;
                    if !self.start_over(status, reason, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Stays halted (and visible) until resumed, paused or removed.
    async fn halt(&self, reason: String, stop: &mut watch::Receiver<bool>) {
        tracing::error!(processor = %self.processor, shard = self.source.index, %reason, "processor halted");
        self.set_status("halted", Some(reason));
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// After a commit storage refused or failed, or a call that found the
    /// plugin memory taken: waits until the stored cursor and state size
    /// can be read again and continues from them. A failed write may still
    /// have reached the disk, so only storage knows where the worker
    /// stands; the plugin instance was dropped, so its in-memory state
    /// starts from the stored state too. False if stopped while waiting.
    async fn start_over(
        &mut self,
        status: &'static str,
        reason: String,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        tracing::warn!(processor = %self.processor, shard = self.source.index, %reason, "starting again from the stored cursor");
        self.set_status(status, Some(reason));
        *self
            .state_read_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(STORAGE_FULL_RECHECK) => {}
                _ = stop.changed() => return false,
            }
            if let Ok(stored) = self.storage.cursor(self.processor_id, self.source.index) {
                if let Some(cursor) = stored {
                    self.cursor = cursor;
                }
                return true;
            }
        }
    }

    /// Records to take in the next call: as many as the available fuel
    /// pays for at the fuel per record seen so far (a few to start with),
    /// so the fuel rate throttles smoothly rather than batch by batch.
    fn batch_limit(&self, fuel_available: u64) -> usize {
        const CALIBRATION_RECORDS: usize = 16;
        let batch_max = self.processing.processor_batch_records_max.max(1);
        match self.cursor.fuel_used.checked_div(self.cursor.records_in) {
            Some(per_record) if per_record > 0 => usize::try_from(fuel_available / per_record)
                .unwrap_or(usize::MAX)
                .clamp(1, batch_max),
            _ => CALIBRATION_RECORDS.min(batch_max),
        }
    }

    async fn read_batch(&mut self, limit: usize) -> Result<Vec<Record>, StorageError> {
        let storage = self.storage.clone();
        let shard = self.source.clone();
        let start = self.cursor.next_sequence;
        let bytes_max = self.processing.processor_batch_bytes_max;
        let read =
            tokio::task::spawn_blocking(move || storage.read(&shard, start, limit, bytes_max))
                .await
                .map_err(|_| StorageError::WriterStopped)?;
        match read {
            Ok(batch) => Ok(batch.records),
            Err(StorageError::PositionTrimmed { first_sequence, .. }) => {
                // Retention removed records before they were processed: say
                // so loudly, and go on from what is left.
                let lost = first_sequence - start;
                tracing::warn!(processor = %self.processor, shard = self.source.index, lost, "retention removed unprocessed records");
                self.set_status(
                    "running",
                    Some(format!(
                        "retention removed {lost} records before they were processed"
                    )),
                );
                self.cursor.next_sequence = first_sequence;
                Ok(Vec::new())
            }
            Err(error) => Err(error),
        }
    }

    /// Calls the plugin on a blocking thread (it may run for up to its
    /// deadline), first making an instance (and running its `init`) there
    /// if there is none, with `carried` writes restored into it.
    async fn call<T: Send + 'static>(
        &self,
        instance: Option<PluginInstance>,
        carried: StateWrites,
        call: impl FnOnce(&mut PluginInstance) -> Result<T, PluginError> + Send + 'static,
    ) -> Called<T> {
        let maker = self.maker.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let (mut instance, fuel_before) = match instance {
                Some(instance) => {
                    let fuel = instance.fuel_used();
                    (instance, fuel)
                }
                None => match maker.make() {
                    Ok(mut fresh) => {
                        fresh.restore_state_writes(carried);
                        // A fresh instance's `init` is paid by this call.
                        (fresh, 0)
                    }
                    Err(error) => {
                        return Called {
                            instance: None,
                            orphaned_writes: carried,
                            result: Err(CallError::Instance(error)),
                            fuel_used: 0,
                        };
                    }
                },
            };
            let result = call(&mut instance);
            let fuel_used = instance.fuel_used() - fuel_before;
            match result {
                Ok(value) => Called {
                    instance: Some(instance),
                    orphaned_writes: StateWrites::new(),
                    result: Ok(value),
                    fuel_used,
                },
                // After a trap wasmtime refuses further calls: replace it.
                Err(error) if error.poisons_instance() => Called {
                    orphaned_writes: instance.take_state_writes(),
                    instance: None,
                    result: Err(CallError::Call(error)),
                    fuel_used,
                },
                Err(error) => Called {
                    instance: Some(instance),
                    orphaned_writes: StateWrites::new(),
                    result: Err(CallError::Call(error)),
                    fuel_used,
                },
            }
        })
        .await;
        joined.unwrap_or_else(|join| Called {
            instance: None,
            orphaned_writes: StateWrites::new(),
            result: Err(CallError::Call(PluginError::Host(format!(
                "plugin call panicked: {join}"
            )))),
            fuel_used: 0,
        })
    }

    /// What a call error means for the worker, if it is not the input's
    /// fault: an instance that cannot be made halts it (`init` is the
    /// plugin's, and no record should be skipped for it); full plugin
    /// memory makes it wait.
    fn not_the_inputs_fault(&self, error: &CallError) -> Option<Step> {
        match error {
            CallError::Call(PluginError::ServerMemoryFull { .. })
            | CallError::Instance(PluginError::ServerMemoryFull { .. }) => Some(Step::Retry {
                status: "waiting for plugin memory",
                reason: match error {
                    CallError::Call(error) | CallError::Instance(error) => error.to_string(),
                },
            }),
            CallError::Instance(error) => Some(Step::Halt(format!(
                "making a plugin instance failed (its init): {error}; fix the plugin or its \
                 config, then `weir processor resume {}`",
                self.processor
            ))),
            CallError::Call(_) => None,
        }
    }

    /// Checks a call's output and sorts it into the step's pending outputs.
    fn accept_output(
        &self,
        output: &[u8],
        inputs: &[Record],
        pending: &mut Pending,
    ) -> Outcome<()> {
        let bytes_max = self.processing.processor_output_bytes_per_call_max;
        if output.len() > bytes_max {
            return Err(CallFailure {
                reason: format!(
                    "the call returned {} bytes of output, over \
                     processor_output_bytes_per_call_max ({bytes_max} bytes)",
                    output.len()
                ),
            });
        }
        let entries_max = self.processing.processor_output_records_per_call_max;
        let mut accepted = Vec::new();
        for (index, entry) in OutputReader::new(output).enumerate() {
            if index >= entries_max {
                return Err(CallFailure {
                    reason: format!(
                        "the call returned more than processor_output_records_per_call_max \
                         ({entries_max}) output entries"
                    ),
                });
            }
            match entry.map_err(|e| CallFailure {
                reason: format!("malformed plugin output: {e}"),
            })? {
                OutputEntry::Error {
                    input_index,
                    message,
                } => {
                    let sequence = inputs.get(input_index as usize).map_or(0, |r| r.sequence);
                    return Err(CallFailure {
                        reason: format!("record {sequence}: {message}"),
                    });
                }
                OutputEntry::Keep { input_index } => {
                    let input = inputs
                        .get(input_index as usize)
                        .ok_or_else(|| CallFailure {
                            reason: format!(
                                "output keeps input {input_index}, but the batch has {}",
                                inputs.len()
                            ),
                        })?;
                    accepted.push((input.partition_key.clone(), input.data.clone()));
                }
                OutputEntry::Emit {
                    input_index,
                    partition_key,
                    data,
                } => {
                    let input = inputs.get(input_index as usize);
                    if input.is_none() && input_index != NO_INPUT {
                        return Err(CallFailure {
                            reason: format!(
                                "output names input {input_index}, but the batch has {}",
                                inputs.len()
                            ),
                        });
                    }
                    let key = match (partition_key, input) {
                        (Some(key), _) => key.to_owned(),
                        (None, Some(input)) => input.partition_key.clone(),
                        (None, None) => self.processor.clone(),
                    };
                    let key_chars = key.chars().count();
                    if key_chars == 0 || key_chars > defaults::PARTITION_KEY_CHARS_MAX {
                        return Err(CallFailure {
                            reason: format!(
                                "output partition key has {key_chars} characters (1 to 256 allowed)"
                            ),
                        });
                    }
                    if data.len() > self.record_bytes_max {
                        return Err(CallFailure {
                            reason: format!(
                                "oversized output: {} bytes, over record_bytes_max ({} bytes)",
                                data.len(),
                                self.record_bytes_max
                            ),
                        });
                    }
                    accepted.push((key, Bytes::copy_from_slice(data)));
                }
            }
        }
        pending.outputs.extend(accepted);
        Ok(())
    }

    /// Processes one batch: one call if it succeeds, else record by record.
    async fn step(
        &mut self,
        instance: Option<PluginInstance>,
        records: Vec<Record>,
    ) -> (Option<PluginInstance>, Step, u64) {
        let input = encode_batch(&records);
        let fuel_max = self.maker.limits.fuel_per_call_max;
        let called = self
            .call(instance, StateWrites::new(), move |i| {
                i.process(&input, fuel_max)
            })
            .await;
        let (mut instance, fuel) = (called.instance, called.fuel_used);
        let mut pending = Pending::default();
        let whole = match called.result {
            Ok(outcome) => self.accept_output(&outcome.output, &records, &mut pending),
            Err(error) => match self.not_the_inputs_fault(&error) {
                Some(step) => return (None, step, fuel),
                None => Err(CallFailure {
                    reason: call_error_text(&error),
                }),
            },
        };
        match whole {
            Ok(()) => {
                pending.records_in = records.len() as u64;
                pending.fuel_used = fuel;
                let next = records
                    .last()
                    .map_or(self.cursor.next_sequence, |r| r.sequence + 1);
                let state = instance
                    .as_mut()
                    .map(PluginInstance::take_state_writes)
                    .unwrap_or_default();
                let step = self.commit(pending, state, next).await;
                (instance, step, fuel)
            }
            Err(failure) => {
                tracing::debug!(processor = %self.processor, reason = %failure.reason, "batch failed; retrying record by record");
                if let Some(instance) = instance.as_mut() {
                    instance.discard_state_writes();
                }
                self.isolate(instance, records, fuel).await
            }
        }
    }

    /// Replays a failed batch one record per call and applies the failure
    /// policy to the records that fail alone. Each record's state writes
    /// stay visible to the records after it (carried into a new instance
    /// when a trap replaces it); a failed record's are dropped.
    async fn isolate(
        &mut self,
        mut instance: Option<PluginInstance>,
        records: Vec<Record>,
        fuel_so_far: u64,
    ) -> (Option<PluginInstance>, Step, u64) {
        let mut pending = Pending {
            fuel_used: fuel_so_far,
            ..Pending::default()
        };
        let mut carried = StateWrites::new();
        for record in &records {
            let input = encode_batch(std::slice::from_ref(record));
            let fuel_max = self.maker.limits.fuel_per_call_max;
            let called = self
                .call(instance, std::mem::take(&mut carried), move |i| {
                    i.process(&input, fuel_max)
                })
                .await;
            instance = called.instance;
            carried = called.orphaned_writes;
            pending.fuel_used += called.fuel_used;
            let outcome = match called.result {
                Ok(outcome) => {
                    self.accept_output(&outcome.output, std::slice::from_ref(record), &mut pending)
                }
                Err(error) => match self.not_the_inputs_fault(&error) {
                    Some(stop) => {
                        // Commit the records before this one, then stop here.
                        let fuel = pending.fuel_used;
                        let state = kept_writes(instance.as_mut(), carried);
                        let step = match self.commit(pending, state, record.sequence).await {
                            Step::Continue => stop,
                            failed => failed,
                        };
                        return (None, step, fuel);
                    }
                    None => Err(CallFailure {
                        reason: call_error_text(&error),
                    }),
                },
            };
            match outcome {
                Ok(()) => pending.records_in += 1,
                Err(failure) => {
                    if let Some(live) = instance.as_mut() {
                        live.reject_last_call();
                    }
                    let reason = format!("record {}: {}", record.sequence, failure.reason);
                    // One log line per batch, not per record: a plugin that
                    // fails every record must not flood the log.
                    if pending.failures.is_empty() {
                        tracing::warn!(processor = %self.processor, shard = self.source.index, policy = ?self.on_error, %reason, "record failed");
                    }
                    match self.on_error {
                        FailurePolicy::Halt => {
                            let fuel = pending.fuel_used;
                            let state = kept_writes(instance.as_mut(), carried);
                            let step = match self.commit(pending, state, record.sequence).await {
                                Step::Continue => Step::Halt(reason),
                                halted => halted,
                            };
                            return (instance, step, fuel);
                        }
                        FailurePolicy::Skip => {
                            pending.records_in += 1;
                            pending.failures.push((record.sequence, reason));
                        }
                        FailurePolicy::DeadLetter => {
                            pending.records_in += 1;
                            pending.dead_letters.push((
                                record.partition_key.clone(),
                                self.dead_letter_body(record, &reason).into(),
                            ));
                            pending.failures.push((record.sequence, reason));
                        }
                    }
                    self.set_status(
                        "running",
                        pending.failures.last().map(|failure| failure.1.clone()),
                    );
                }
            }
        }
        if pending.failures.len() > 1 {
            tracing::warn!(
                processor = %self.processor,
                shard = self.source.index,
                failed = pending.failures.len(),
                "records failed in one batch (see processor describe)"
            );
        }
        let next = records
            .last()
            .map_or(self.cursor.next_sequence, |r| r.sequence + 1);
        let fuel = pending.fuel_used;
        let state = kept_writes(instance.as_mut(), carried);
        let step = self.commit(pending, state, next).await;
        (instance, step, fuel)
    }

    fn dead_letter_body(&self, record: &Record, reason: &str) -> Vec<u8> {
        let data = match std::str::from_utf8(&record.data) {
            Ok(text) => serde_json::json!({ "data": text }),
            Err(_) => serde_json::json!({
                "data_hex": record.data.iter().map(|b| format!("{b:02x}")).collect::<String>()
            }),
        };
        let mut body = serde_json::json!({
            "processor": self.processor,
            "source_stream": self.source.stream_name,
            "shard": self.source.index,
            "sequence": record.sequence,
            "timestamp_ms": record.timestamp_ms,
            "partition_key": record.partition_key,
            "error": reason,
        });
        if let (Some(body), serde_json::Value::Object(data)) = (body.as_object_mut(), data) {
            body.extend(data);
        }
        body.to_string().into_bytes()
    }

    /// Gives an idle shard's plugin the clock, committing whatever it emits
    /// or changes (the cursor does not move).
    async fn tick(
        &mut self,
        instance: Option<PluginInstance>,
    ) -> (Option<PluginInstance>, Step, u64) {
        let now = now_ms();
        let fuel_max = self.maker.limits.fuel_per_call_max;
        let called = self
            .call(instance, StateWrites::new(), move |i| i.tick(now, fuel_max))
            .await;
        let (mut instance, fuel) = (called.instance, called.fuel_used);
        let mut pending = Pending::default();
        match called.result {
            Ok(outcome) => {
                if let Err(failure) = self.accept_output(&outcome.output, &[], &mut pending) {
                    self.set_status("running", Some(format!("tick: {}", failure.reason)));
                    pending = Pending::default();
                    if let Some(live) = instance.as_mut() {
                        live.reject_last_call();
                    }
                }
            }
            Err(error) => {
                if let Some(step) = self.not_the_inputs_fault(&error) {
                    return (None, step, fuel);
                }
                self.set_status(
                    "running",
                    Some(format!("tick: {}", call_error_text(&error))),
                );
            }
        }
        let state = instance
            .as_mut()
            .map(PluginInstance::take_state_writes)
            .unwrap_or_default();
        if !pending.outputs.is_empty() || !state.is_empty() {
            pending.fuel_used = fuel;
            match self.commit(pending, state, self.cursor.next_sequence).await {
                Step::Halt(reason) => self.set_status("running", Some(reason)),
                retry @ Step::Retry { .. } => return (instance, retry, fuel),
                Step::Continue => {}
            }
        }
        (instance, Step::Continue, fuel)
    }

    /// Commits a step: outputs, dead letters, failures, state and the
    /// cursor, in one atomic write. Only then does the cursor move.
    async fn commit(&mut self, pending: Pending, state: StateWrites, next: u64) -> Step {
        let read_failure = self
            .state_read_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reason) = read_failure {
            return Step::retry_storage(format!("reading state: {reason}"));
        }
        let mut cursor = self.cursor;
        cursor.next_sequence = next;
        cursor.records_in += pending.records_in;
        cursor.records_out += pending.outputs.len() as u64;
        cursor.fuel_used += pending.fuel_used;
        cursor.records_failed += pending.failures.len() as u64;

        let mut outputs = route(&self.output, pending.outputs);
        if let Some(dead_letter) = &self.dead_letter {
            outputs.extend(route(dead_letter, pending.dead_letters));
        }
        cursor.state = match self.state_after(&state) {
            Ok(size) => size,
            Err(error) if error.is_transient() => {
                return Step::retry_storage(format!("reading state: {error}"));
            }
            Err(error) => return Step::Halt(format!("reading state: {error}")),
        };
        // A step that shrinks state is always allowed, even over the limit.
        let state_bytes = cursor.state.bytes;
        if state_bytes > self.state_bytes_max && state_bytes > self.cursor.state.bytes {
            return Step::Halt(format!(
                "state would grow to {state_bytes} bytes, over this shard's share ({} bytes) \
                 of {}; raise it with `weir processor update {} --state-max SIZE`",
                self.state_bytes_max, self.state_limit, self.processor
            ));
        }
        let commit = ProcessingCommit {
            processor_id: self.processor_id,
            shard: self.source.index,
            outputs,
            state_writes: state.into_iter().collect(),
            failures: pending.failures,
            cursor,
        };
        match self.storage.commit_processing(commit).await {
            Ok(()) => {
                self.cursor = cursor;
                Step::Continue
            }
            Err(error) if error.is_transient() => Step::retry_storage(format!("commit: {error}")),
            Err(error) => Step::Halt(format!("commit failed: {error}")),
        }
    }

    /// The shard's state size once `writes` are committed.
    fn state_after(&self, writes: &StateWrites) -> Result<StateSize, StorageError> {
        let mut state = self.cursor.state;
        for (key, value) in writes {
            let old = self
                .storage
                .state_get(self.processor_id, self.source.index, key)?;
            let size = |value: &[u8]| (key.len() + value.len()) as u64;
            if let Some(old) = &old {
                state.keys = state.keys.saturating_sub(1);
                state.bytes = state.bytes.saturating_sub(size(old));
            }
            if let Some(value) = value {
                state.keys += 1;
                state.bytes += size(value);
            }
        }
        Ok(state)
    }
}

/// The writes to commit: a live instance's kept writes (which include any
/// it was given when made), else those carried from a replaced one.
fn kept_writes(instance: Option<&mut PluginInstance>, carried: StateWrites) -> StateWrites {
    match instance {
        Some(live) => live.take_state_writes(),
        None => carried,
    }
}

fn call_error_text(error: &CallError) -> String {
    match error {
        CallError::Call(error) | CallError::Instance(error) => error.to_string(),
    }
}

/// Shows a worker that panicked as failed, so `processor describe` does
/// not keep saying `running` (the panic itself is in the server log).
struct MarkFailedOnPanic(Arc<Mutex<Progress>>);

impl Drop for MarkFailedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut progress = self.0.lock().unwrap_or_else(|p| p.into_inner());
            progress.status = "failed";
            progress.last_error =
                Some("the worker stopped on an internal error (see the server log); `weir processor resume` restarts it".into());
        }
    }
}

fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut writer = InputWriter::new();
    for record in records {
        writer.push(&BatchRecord {
            sequence: record.sequence,
            timestamp_ms: record.timestamp_ms,
            partition_key: &record.partition_key,
            data: &record.data,
        });
    }
    writer.finish()
}

/// Groups records by the shard of `stream` their partition key routes to.
fn route(stream: &Stream, records: Vec<(String, Bytes)>) -> Vec<(Arc<Shard>, Vec<AppendRecord>)> {
    let shard_count = stream.shards.len() as u32;
    let mut per_shard: Vec<Vec<AppendRecord>> = vec![Vec::new(); stream.shards.len()];
    for (partition_key, data) in records {
        let shard = shard_for_hash_key(crate::service::hash_key(&partition_key), shard_count);
        per_shard[shard as usize].push(AppendRecord {
            partition_key,
            data,
        });
    }
    stream
        .shards
        .iter()
        .zip(per_shard)
        .filter(|(_, records)| !records.is_empty())
        .map(|(shard, records)| (shard.clone(), records))
        .collect()
}
