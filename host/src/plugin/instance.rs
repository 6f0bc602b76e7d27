//! One plugin instance: a store with its limits and the state overlay that
//! the `host` interface reads and writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::log_pipe::LogPipe;
use super::weir::plugin::host::{Host, Level};
use super::{EPOCH_TICK_MS, LoadedPlugin, Plugin, PluginError};

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

    /// Applies the instance's uncommitted state writes.
    pub fn commit(&self, instance: &mut PluginInstance) {
        let mut entries = self.entries();
        for (key, value) in instance.take_state_writes() {
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
    limits: StoreLimits,
    instance_limits: InstanceLimits,
    backing: Option<Box<dyn StateBacking>>,
    /// Writes of earlier successful calls not yet committed.
    pending: StateWrites,
    /// Writes of the call in progress; kept only if it succeeds.
    call: StateWrites,
    stdout: LogPipe,
    processor: String,
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
        let processor = self.processor.as_str();
        let message: String = message.chars().take(1024).collect();
        match level {
            Level::Debug => tracing::debug!(processor, "plugin: {message}"),
            Level::Info => tracing::info!(processor, "plugin: {message}"),
            Level::Warn => tracing::warn!(processor, "plugin: {message}"),
            Level::Error => tracing::error!(processor, "plugin: {message}"),
        }
        Ok(())
    }

    fn state_get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(value) = self.call.get(&key).or_else(|| self.pending.get(&key)) {
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
}

impl PluginInstance {
    pub(super) fn new(
        engine: &Engine,
        plugin: &LoadedPlugin,
        limits: InstanceLimits,
        processor: &str,
        metered: bool,
    ) -> Result<Self, PluginError> {
        let stdout = LogPipe::default();
        // No preopened directories, no network, no environment, no args.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stdout.clone())
            .build();
        let store_limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(limits.memory_bytes_max).unwrap_or(usize::MAX))
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: store_limits,
            instance_limits: limits,
            backing: None,
            pending: StateWrites::new(),
            call: StateWrites::new(),
            stdout,
            processor: processor.to_owned(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.limits);
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
        })
    }

    /// Sets where uncommitted state reads fall through to.
    pub fn set_state_backing(&mut self, backing: Box<dyn StateBacking>) {
        self.store.data_mut().backing = Some(backing);
    }

    /// State writes of successful calls since the last take.
    pub fn take_state_writes(&mut self) -> StateWrites {
        std::mem::take(&mut self.store.data_mut().pending)
    }

    /// Makes writes taken from a previous instance visible again (after a
    /// trap replaced the instance mid-batch).
    pub fn restore_state_writes(&mut self, writes: StateWrites) {
        self.store.data_mut().pending = writes;
    }

    /// Forgets writes of successful calls that will not be committed.
    pub fn discard_state_writes(&mut self) {
        self.store.data_mut().pending.clear();
    }

    pub fn init(&mut self, config: &[(String, String)]) -> Result<(), PluginError> {
        let result =
            self.call(|bindings, store| bindings.weir_plugin_processor().call_init(store, config))?;
        result.output.map_err(PluginError::InitRejected)
    }

    /// Runs `process` on an encoded input batch, with at most `fuel_max`.
    pub fn process(&mut self, batch: &[u8], fuel_max: u64) -> Result<CallOutcome, PluginError> {
        self.set_budget(fuel_max)?;
        let result = self
            .call(|bindings, store| bindings.weir_plugin_processor().call_process(store, batch))?;
        self.finish(result)
    }

    /// Runs `tick` with the host's clock, with at most `fuel_max`.
    pub fn tick(&mut self, now_ms: u64, fuel_max: u64) -> Result<CallOutcome, PluginError> {
        self.set_budget(fuel_max)?;
        let result =
            self.call(|bindings, store| bindings.weir_plugin_processor().call_tick(store, now_ms))?;
        self.finish(result)
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

    /// Calls into the guest, keeping its state writes only on success and
    /// draining what it printed into the log either way.
    fn call<T>(
        &mut self,
        call: impl FnOnce(&Plugin, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<Called<T>, PluginError> {
        let fuel_before = self.store.get_fuel().unwrap_or(0);
        let result = call(&self.bindings, &mut self.store);
        let fuel_used = fuel_before.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let state = self.store.data_mut();
        state.stdout.drain(&state.processor, "stdout");
        let call_writes = std::mem::take(&mut state.call);
        match result {
            Ok(output) => {
                state.pending.extend(call_writes);
                Ok(Called { output, fuel_used })
            }
            Err(error) => Err(classify(error, &state.instance_limits)),
        }
    }

    fn finish(
        &mut self,
        called: Called<Result<Vec<u8>, String>>,
    ) -> Result<CallOutcome, PluginError> {
        match called.output {
            Ok(output) => Ok(CallOutcome {
                output,
                fuel_used: called.fuel_used,
            }),
            Err(message) => {
                // A call that returned an error keeps none of its writes.
                Err(PluginError::Returned(message))
            }
        }
    }
}

struct Called<T> {
    output: T,
    fuel_used: u64,
}

fn deadline_ticks(timeout_ms: u64) -> u64 {
    (timeout_ms / EPOCH_TICK_MS).max(1) + 1
}

/// Turns a wasmtime error into what went wrong, in the user's terms: the
/// trap or root cause, not wasmtime's whole context chain and backtrace.
fn classify(error: wasmtime::Error, limits: &InstanceLimits) -> PluginError {
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
        None => {
            let text = error.root_cause().to_string();
            if text.contains("forcing trap when growing memory") {
                PluginError::MemoryLimit {
                    memory_bytes_max: limits.memory_bytes_max,
                }
            } else {
                PluginError::Trap(text)
            }
        }
    }
}
