//! One plugin instance: a store with its limits and the state overlay that
//! the `host` interface reads and writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::log_pipe::{LogPipe, PluginLog};
use super::memory::{MemoryBudget, MemoryRefusal};
use super::weir::plugin::host::{Host, Level};
use super::{BlockingDenied, EPOCH_TICK_MS, LoadedPlugin, Plugin, PluginError};

/// Reads committed state of the (processor, shard) the instance serves.
pub trait StateBacking: Send {
    /// The committed value, or why it could not be read (the call then
    /// fails: answering "absent" would let the plugin overwrite the value).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String>;
}

/// State kept in memory instead of storage: for running a plugin without
/// a server (`weir plugin test`, `weir bench plugin`). `commit` plays the
/// part of the processor's atomic commit.
#[derive(Clone, Default)]
pub struct MemoryState(Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>);

impl StateBacking for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        Ok(self.entries().get(key).cloned())
    }
}

impl MemoryState {
    pub fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the instance's uncommitted state writes (those of every
    /// successful call since the last commit).
    pub fn commit(&self, instance: &mut PluginInstance) {
        self.apply(instance.take_state_writes());
    }

    /// Applies state writes, as a processor commit does.
    pub fn apply(&self, writes: StateWrites) {
        let mut entries = self.entries();
        for (key, value) in writes {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
    }
}

/// Limits every call runs under.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits {
    pub fuel_per_call_max: u64,
    pub memory_bytes_max: u64,
    pub call_timeout_ms: u64,
    pub state_key_bytes_max: usize,
    pub state_value_bytes_max: usize,
}

/// Pending state writes: `None` deletes the key.
pub type StateWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: InstanceMemory,
    instance_limits: InstanceLimits,
    backing: Option<Box<dyn StateBacking>>,
    /// Writes of earlier calls the worker kept, not yet committed.
    pending: StateWrites,
    /// Writes of the latest successful call: visible to later calls, kept
    /// unless the worker rejects that call's output
    /// ([`PluginInstance::reject_last_call`]).
    last_call: StateWrites,
    /// Writes of the call in progress; kept only if it succeeds.
    call: StateWrites,
    stdout: LogPipe,
    log: PluginLog,
}

/// The instance's linear memory: its own limit, and its share of the
/// server's budget for all plugin instances, reserved as it grows and
/// given back when the instance is dropped.
struct InstanceMemory {
    bytes_max: u64,
    budget: Arc<MemoryBudget>,
    reserved: u64,
    tables_max: usize,
}

impl ResourceLimiter for InstanceMemory {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.bytes_max {
            return Err(MemoryRefusal::InstanceLimit {
                memory_bytes_max: self.bytes_max,
            }
            .into());
        }
        let growth = desired.saturating_sub(current) as u64;
        self.budget.reserve(growth)?;
        self.reserved += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.tables_max)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

impl Drop for InstanceMemory {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            Level::Debug => tracing::Level::DEBUG,
            Level::Info => tracing::Level::INFO,
            Level::Warn => tracing::Level::WARN,
            Level::Error => tracing::Level::ERROR,
        };
        self.log.line(level, "host.log", &message);
        Ok(())
    }

    fn state_get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        let uncommitted = [&self.call, &self.last_call, &self.pending];
        if let Some(value) = uncommitted.into_iter().find_map(|writes| writes.get(&key)) {
            return Ok(value.clone());
        }
        match &self.backing {
            Some(backing) => backing
                .get(&key)
                .map_err(|reason| wasmtime::format_err!("reading state failed: {reason}")),
            None => Ok(None),
        }
    }

    fn state_set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        let limits = self.instance_limits;
        if key.len() > limits.state_key_bytes_max || value.len() > limits.state_value_bytes_max {
            wasmtime::bail!(
                "state entry too large: key {} bytes (max {}), value {} bytes (max {})",
                key.len(),
                limits.state_key_bytes_max,
                value.len(),
                limits.state_value_bytes_max
            );
        }
        self.call.insert(key, Some(value));
        Ok(())
    }

    fn state_delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.call.insert(key, None);
        Ok(())
    }
}

/// What a successful call returned.
#[derive(Debug)]
pub struct CallOutcome {
    pub output: Vec<u8>,
    pub fuel_used: u64,
}

pub struct PluginInstance {
    store: Store<HostState>,
    bindings: Plugin,
    metered: bool,
    /// Fuel burned by every call so far, successful or not.
    fuel_used: u64,
}

impl PluginInstance {
    pub(super) fn new(
        engine: &Engine,
        plugin: &LoadedPlugin,
        limits: InstanceLimits,
        log: PluginLog,
        budget: Arc<MemoryBudget>,
        metered: bool,
    ) -> Result<Self, PluginError> {
        let stdout = LogPipe::new(log.clone());
        // No preopened directories, no network, no environment, no args.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stdout.clone())
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            memory: InstanceMemory {
                bytes_max: limits.memory_bytes_max,
                budget,
                reserved: 0,
                tables_max: TABLE_ELEMENTS_MAX,
            },
            instance_limits: limits,
            backing: None,
            pending: StateWrites::new(),
            last_call: StateWrites::new(),
            call: StateWrites::new(),
            stdout,
            log,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.memory);
        if metered {
            store
                .set_fuel(limits.fuel_per_call_max)
                .map_err(super::host_error)?;
        }
        store.set_epoch_deadline(deadline_ticks(limits.call_timeout_ms));
        let bindings = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(e, &limits))?;
        Ok(Self {
            store,
            bindings,
            metered,
            fuel_used: 0,
        })
    }

    /// Sets where uncommitted state reads fall through to.
    pub fn set_state_backing(&mut self, backing: Box<dyn StateBacking>) {
        self.store.data_mut().backing = Some(backing);
    }

    /// State writes of the calls kept since the last take, for the commit.
    pub fn take_state_writes(&mut self) -> StateWrites {
        let state = self.store.data_mut();
        let mut writes = std::mem::take(&mut state.pending);
        writes.extend(std::mem::take(&mut state.last_call));
        writes
    }

    /// Makes writes taken from a previous instance visible again (after a
    /// trap replaced the instance mid-batch).
    pub fn restore_state_writes(&mut self, writes: StateWrites) {
        self.store.data_mut().pending = writes;
    }

    /// Forgets the latest call's writes (its output was refused, or its
    /// record failed), keeping those of the calls before it.
    pub fn reject_last_call(&mut self) {
        self.store.data_mut().last_call.clear();
    }

    /// Forgets every write not yet taken.
    pub fn discard_state_writes(&mut self) {
        let state = self.store.data_mut();
        state.pending.clear();
        state.last_call.clear();
    }

    /// Fuel burned by all calls so far, including calls that failed.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    pub fn init(&mut self, config: &[(String, String)]) -> Result<(), PluginError> {
        let result =
            self.call(|bindings, store| bindings.weir_plugin_processor().call_init(store, config))?;
        self.finish(result).map(drop).map_err(|error| match error {
            PluginError::Returned(message) => PluginError::InitRejected(message),
            other => other,
        })
    }

    /// Runs `process` on an encoded input batch, with at most `fuel_max`.
    pub fn process(&mut self, batch: &[u8], fuel_max: u64) -> Result<CallOutcome, PluginError> {
        self.set_budget(fuel_max)?;
        let result = self
            .call(|bindings, store| bindings.weir_plugin_processor().call_process(store, batch))?;
        self.finish(result)
            .map(|(output, fuel_used)| CallOutcome { output, fuel_used })
    }

    /// Runs `tick` with the host's clock, with at most `fuel_max`.
    pub fn tick(&mut self, now_ms: u64, fuel_max: u64) -> Result<CallOutcome, PluginError> {
        self.set_budget(fuel_max)?;
        let result =
            self.call(|bindings, store| bindings.weir_plugin_processor().call_tick(store, now_ms))?;
        self.finish(result)
            .map(|(output, fuel_used)| CallOutcome { output, fuel_used })
    }

    fn set_budget(&mut self, fuel_max: u64) -> Result<(), PluginError> {
        let limits = &mut self.store.data_mut().instance_limits;
        limits.fuel_per_call_max = fuel_max;
        let timeout_ms = limits.call_timeout_ms;
        if self.metered {
            self.store.set_fuel(fuel_max).map_err(super::host_error)?;
        }
        self.store.set_epoch_deadline(deadline_ticks(timeout_ms));
        Ok(())
    }

    /// Calls into the guest, counting the fuel it burns and draining what
    /// it printed into the log either way. The previous call's writes are
    /// kept from here on; this call's wait in `call` for [`Self::finish`].
    fn call<T>(
        &mut self,
        call: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<Called<T>, PluginError> {
        let state = self.store.data_mut();
        let kept = std::mem::take(&mut state.last_call);
        state.pending.extend(kept);
        let fuel_before = self.store.get_fuel().unwrap_or(0);
        let result = call(&self.bindings, &mut self.store);
        let fuel_used = fuel_before.saturating_sub(self.store.get_fuel().unwrap_or(0));
        self.fuel_used += fuel_used;
        let state = self.store.data_mut();
        state.stdout.drain();
        match result {
            Ok(output) => Ok(Called { output, fuel_used }),
            Err(error) => {
                state.call.clear();
                Err(classify(error, &state.instance_limits))
            }
        }
    }

    /// A call that returned normally: its writes become the latest call's
    /// if it succeeded; a call that returned an error keeps none of them.
    fn finish<T>(&mut self, called: Called<Result<T, String>>) -> Result<(T, u64), PluginError> {
        let state = self.store.data_mut();
        let writes = std::mem::take(&mut state.call);
        match called.output {
            Ok(output) => {
                state.last_call = writes;
                Ok((output, called.fuel_used))
            }
            Err(message) => Err(PluginError::Returned(message)),
        }
    }
}

/// Elements of a table a plugin may grow to (function references).
const TABLE_ELEMENTS_MAX: usize = 1_000_000;

struct Called<T> {
    output: T,
    fuel_used: u64,
}

fn deadline_ticks(timeout_ms: u64) -> u64 {
    (timeout_ms / EPOCH_TICK_MS).max(1) + 1
}

/// Turns a wasmtime error into what went wrong, in the user's terms: the
/// trap or the refusal that stopped it, not wasmtime's whole context chain
/// and backtrace.
fn classify(error: wasmtime::Error, limits: &InstanceLimits) -> PluginError {
    if let Some(refusal) = error.downcast_ref::<MemoryRefusal>() {
        return match refusal {
            MemoryRefusal::InstanceLimit { memory_bytes_max } => PluginError::MemoryLimit {
                memory_bytes_max: *memory_bytes_max,
            },
            MemoryRefusal::ServerBudget {
                plugins_memory_bytes_max,
            } => PluginError::ServerMemoryFull {
                plugins_memory_bytes_max: *plugins_memory_bytes_max,
            },
        };
    }
    if error.downcast_ref::<BlockingDenied>().is_some() {
        return PluginError::Blocking;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginError::OutOfFuel {
            fuel_max: limits.fuel_per_call_max,
        },
        Some(Trap::Interrupt) => PluginError::Timeout {
            timeout_ms: limits.call_timeout_ms,
        },
        Some(Trap::UnreachableCodeReached) => PluginError::Trap(
            "wasm `unreachable` executed (in Rust, a panic: its message is in the server log)"
                .into(),
        ),
        Some(trap) => PluginError::Trap(trap.to_string()),
        None => PluginError::Trap(error.root_cause().to_string()),
    }
}
