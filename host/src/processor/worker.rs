//! One processor worker: reads one source shard in sequence order, runs
//! each batch through the processing core ([`super::step`]) on a blocking
//! thread — the plugin's calls, the replay of a failed batch and the
//! failure policy all happen there — and commits the outputs, state
//! writes, failures and cursor in one atomic write: read → call → commit
//! → wait. Input is never lost: the cursor only moves past a record in the
//! same commit as its outputs, its failure record or its dead letter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use weir_proto::Record;
use weir_proto::routing::shard_for;

use super::fuel::FuelBucket;
use super::step::{self, InstanceSlot, MakeInstance, Rules, Then};
use crate::config::ProcessingConfig;
use crate::plugin::{
    InstanceLimits, LoadedPlugin, PluginError, PluginInstance, PluginLog, PluginRuntime,
    StateBacking,
};
use crate::storage::{
    AppendRecord, CursorState, ProcessingCommit, Shard, StateSize, Storage, StorageError, Stream,
    now_ms,
};

/// How often a worker waiting for storage space (or plugin memory) looks
/// again.
const STORAGE_FULL_RECHECK: Duration = Duration::from_millis(500);
/// How long a worker waits before reading its source again after a failed
/// read (storage reopening, say).
const READ_RETRY: Duration = Duration::from_secs(1);

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
    /// The processor's rules, for the core.
    pub rules: Arc<Rules>,
    pub processor_id: u64,
    pub source: Arc<Shard>,
    pub output: Arc<Stream>,
    pub dead_letter: Option<Arc<Stream>>,
    pub fuel_per_sec: u64,
    pub processing: ProcessingConfig,
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

impl MakeInstance for Arc<InstanceMaker> {
    fn fuel_per_call_max(&self) -> u64 {
        self.limits.fuel_per_call_max
    }

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

impl StateBacking for StorageState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        self.storage
            .processing()
            .state_get(self.processor_id, self.shard, key)
            .map_err(|error| {
                let reason = error.to_string();
                let mut failure = self.read_failure.lock().unwrap_or_else(|p| p.into_inner());
                failure.get_or_insert_with(|| reason.clone());
                reason
            })
    }
}

/// The plugin as the core sees it: this worker's instance.
type Slot = InstanceSlot<Arc<InstanceMaker>>;

/// What a commit came to, besides success.
enum CommitRefused {
    /// Storage refused or failed it for a reason that passes (full, being
    /// reopened), or a state read failed: start over from what is stored.
    Retry(String),
    /// It can never succeed as it is (the state budget, a damaged store).
    Halt(String),
}

impl CommitRefused {
    /// What the worker does about it.
    fn then(self) -> Then {
        match self {
            Self::Retry(reason) => Then::Wait {
                status: "waiting for storage",
                reason,
            },
            Self::Halt(reason) => Then::Halt(reason),
        }
    }
}

impl Worker {
    fn set_status(&self, status: &'static str, error: Option<String>) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        progress.status = status;
        if error.is_some() {
            progress.last_error = error;
        }
    }

    fn processor(&self) -> &str {
        &self.rules.processor
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let _failed_if_panicking = MarkFailedOnPanic(self.progress.clone());
        let mut slot = Some(InstanceSlot::new(self.maker.clone()));
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
                    tokio::time::sleep(READ_RETRY).await;
                    continue;
                }
            };

            let cursor = self.cursor.next_sequence;
            let then = if records.is_empty() {
                self.set_status("running", None);
                tokio::select! {
                    _ = tip.changed() => continue,
                    () = tokio::time::sleep(idle_tick) => {}
                    _ = stop.changed() => return,
                }
                let now = now_ms();
                let step = self
                    .run_core(&mut slot, move |plugin, rules| {
                        step::tick(plugin, rules, now, cursor)
                    })
                    .await;
                bucket.spend(step.fuel_used);
                self.after_tick(step).await
            } else {
                self.set_status("running", None);
                let step = self
                    .run_core(&mut slot, move |plugin, rules| {
                        step::process(plugin, rules, &records, cursor)
                    })
                    .await;
                bucket.spend(step.fuel_used);
                self.after_batch(step).await
            };
            match then {
                Then::Continue => {}
                Then::Halt(reason) => {
                    self.halt(reason, &mut stop).await;
                    return;
                }
                Then::Wait { status, reason } => {
                    slot = Some(InstanceSlot::new(self.maker.clone()));
                    if !self.start_over(status, reason, &mut stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Runs `work` over the plugin on a blocking thread: guest code may run
    /// until its deadline and must never hold the server's async thread.
    async fn run_core(
        &self,
        slot: &mut Option<Slot>,
        work: impl FnOnce(&mut Slot, &Rules) -> step::Step + Send + 'static,
    ) -> step::Step {
        let mut plugin = slot
            .take()
            .unwrap_or_else(|| InstanceSlot::new(self.maker.clone()));
        let rules = self.rules.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let step = work(&mut plugin, &rules);
            (plugin, step)
        })
        .await;
        match joined {
            Ok((plugin, step)) => {
                *slot = Some(plugin);
                step
            }
            Err(join) => step::Step::halted(
                self.cursor.next_sequence,
                format!("the plugin call panicked: {join}"),
            ),
        }
    }

    /// Commits a processed batch (also one that only burned fuel, so every
    /// call is paid for) and says what next.
    async fn after_batch(&mut self, step: step::Step) -> Then {
        if let Some(error) = &step.last_error {
            if step.failures.len() > 1 {
                tracing::warn!(processor = %self.processor(), shard = self.source.index, failed = step.failures.len(), "records failed in one batch (see processor describe)");
            } else {
                tracing::warn!(processor = %self.processor(), shard = self.source.index, policy = self.rules.on_error.name(), reason = %error, "record failed");
            }
            self.set_status("running", Some(error.clone()));
        }
        if !step.has_changes(self.cursor.next_sequence) && step.fuel_used == 0 {
            return step.then;
        }
        self.commit(step).await.unwrap_or_else(CommitRefused::then)
    }

    /// Commits what an idle tick emitted or changed (the cursor does not
    /// move); a tick that fails or cannot be committed is reported, never
    /// halts the worker.
    async fn after_tick(&mut self, step: step::Step) -> Then {
        if let Some(error) = &step.last_error {
            self.set_status("running", Some(error.clone()));
        }
        if !step.has_changes(self.cursor.next_sequence) {
            return step.then;
        }
        match self.commit(step).await {
            Err(CommitRefused::Halt(reason)) => {
                self.set_status("running", Some(reason));
                Then::Continue
            }
            committed => committed.unwrap_or_else(CommitRefused::then),
        }
    }

    /// Stays halted (and visible) until resumed, paused or removed.
    async fn halt(&self, reason: String, stop: &mut watch::Receiver<bool>) {
        tracing::error!(processor = %self.processor(), shard = self.source.index, %reason, "processor halted");
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
        tracing::warn!(processor = %self.processor(), shard = self.source.index, %reason, "starting again from the stored cursor");
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
            if let Ok(stored) = self
                .storage
                .processing()
                .cursor(self.processor_id, self.source.index)
            {
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

    /// The next records from the cursor; records retention removed before
    /// they were processed are reported and moved past.
    async fn read_batch(&mut self, limit: usize) -> Result<Vec<Record>, StorageError> {
        let read = self
            .storage
            .read_in_order(
                &self.source,
                self.cursor.next_sequence,
                limit,
                self.processing.processor_batch_bytes_max,
            )
            .await?;
        let lost = read.lost;
        if lost > 0 {
            tracing::warn!(processor = %self.processor(), shard = self.source.index, lost, "retention removed unprocessed records");
            self.set_status(
                "running",
                Some(format!(
                    "retention removed {lost} records before they were processed"
                )),
            );
            self.cursor.next_sequence += lost;
        }
        let damaged = read.damaged;
        if damaged > 0 {
            let (first, last) = (
                self.cursor.next_sequence,
                self.cursor.next_sequence + damaged - 1,
            );
            tracing::error!(processor = %self.processor(), shard = self.source.index, first, last, "source records damaged on disk skipped");
            self.set_status(
                "running",
                Some(format!(
                    "records {first} to {last} were damaged on disk and skipped unprocessed"
                )),
            );
            self.cursor.next_sequence += damaged;
        }
        Ok(read.records)
    }

    /// Commits a step: outputs, dead letters, failures, state and the
    /// cursor, in one atomic write. Only then does the cursor move.
    async fn commit(&mut self, step: step::Step) -> Result<Then, CommitRefused> {
        let read_failure = self
            .state_read_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reason) = read_failure {
            return Err(CommitRefused::Retry(format!("reading state: {reason}")));
        }
        let (step, state) = self.state_after(step).await;
        let state = match state {
            Ok(state) => state,
            Err(error) if error.is_transient() => {
                return Err(CommitRefused::Retry(format!("reading state: {error}")));
            }
            Err(error) => return Err(CommitRefused::Halt(format!("reading state: {error}"))),
        };
        step::check_state_budget(
            self.cursor.state,
            state,
            self.state_bytes_max,
            &self.state_limit,
            self.processor(),
        )
        .map_err(CommitRefused::Halt)?;
        let cursor = step::advance(self.cursor, &step, state);
        let mut outputs = route(&self.output, step.outputs);
        if let Some(dead_letter) = &self.dead_letter {
            outputs.extend(route(dead_letter, step.dead_letters));
        }
        let commit = ProcessingCommit {
            processor_id: self.processor_id,
            shard: self.source.index,
            outputs,
            state_writes: step.state.into_iter().collect(),
            failures: step.failures,
            cursor,
        };
        match self.storage.processing().commit(commit).await {
            Ok(()) => {
                self.cursor = cursor;
                Ok(step.then)
            }
            Err(error) if error.is_transient() => {
                Err(CommitRefused::Retry(format!("commit: {error}")))
            }
            Err(error) => Err(CommitRefused::Halt(format!("commit failed: {error}"))),
        }
    }

    /// The shard's state size once the step's writes are committed: one
    /// stored read per written key, on a blocking thread.
    async fn state_after(
        &self,
        mut step: step::Step,
    ) -> (step::Step, Result<StateSize, StorageError>) {
        if step.state.is_empty() {
            return (step, Ok(self.cursor.state));
        }
        let (storage, processor_id, shard) =
            (self.storage.clone(), self.processor_id, self.source.index);
        let (before, writes) = (self.cursor.state, std::mem::take(&mut step.state));
        let joined = tokio::task::spawn_blocking(move || {
            let size = step::state_after(before, &writes, |key| {
                Ok(storage
                    .processing()
                    .state_get(processor_id, shard, key)?
                    .map(|value| (key.len() + value.len()) as u64))
            });
            (writes, size)
        })
        .await;
        match joined {
            Ok((writes, size)) => {
                step.state = writes;
                (step, size)
            }
            Err(_) => (step, Err(StorageError::WriterStopped)),
        }
    }
}

/// A state read storage could not answer (it is being reopened, say) since
/// the last commit: the calls since then are void and must be redone.
pub(super) type ReadFailure = Arc<Mutex<Option<String>>>;

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

/// Groups records by the shard of `stream` their partition key routes to.
fn route(stream: &Stream, records: Vec<(String, Bytes)>) -> Vec<(Arc<Shard>, Vec<AppendRecord>)> {
    let shard_count = stream.shards.len() as u32;
    let mut per_shard: Vec<Vec<AppendRecord>> = vec![Vec::new(); stream.shards.len()];
    for (partition_key, data) in records {
        let shard = shard_for(&partition_key, None, shard_count);
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
