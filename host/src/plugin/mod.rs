//! The Wasm plugin runtime: the only module that imports wasmtime.
//!
//! - [`PluginRuntime`]: one engine (fuel metering and epoch interruption on),
//!   one linker (Weir's `host` interface and a deny-everything WASI), an
//!   epoch ticker, and a compiled-artifact cache on disk keyed by the
//!   component's SHA-256 and the engine's settings.
//! - [`instance::PluginInstance`]: one store and instance, called with
//!   batches under a fuel budget, a wall-clock deadline and a memory limit.
//!
//! The contract is `wit/plugin.wit` (package `weir:plugin@0.1.0`).

pub mod instance;
mod log_pipe;
mod memory;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use instance::{CallOutcome, InstanceLimits, MemoryState, PluginInstance, StateBacking};
pub use log_pipe::PluginLog;
pub use memory::MemoryBudget;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // Host functions may trap (an oversized state write, say).
    imports: { default: trappable },
});

/// The WIT package plugins are built against.
pub const WIT_PACKAGE: &str = "weir:plugin";
/// The contract version this host implements.
pub const WIT_VERSION: &str = "0.1.0";
/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK_MS: u64 = 10;

/// Everything that can go wrong with a plugin, at upload or at run time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The uploaded bytes are not a Wasm component.
    #[error(
        "not a WebAssembly component ({reason}); build it with `cargo build --target wasm32-wasip2`"
    )]
    NotAComponent { reason: String },
    /// The component is larger than `plugin_bytes_max`.
    #[error("component is {bytes} bytes, over plugin_bytes_max ({plugin_bytes_max} bytes)")]
    TooLarge {
        bytes: usize,
        plugin_bytes_max: usize,
    },
    /// The component does not export Weir's `processor` interface at a
    /// version this host supports.
    #[error("{0}")]
    WrongInterface(String),
    /// The component imports something the host does not provide.
    #[error(
        "the component imports {import}, which Weir does not provide (plugins get only weir:plugin/host and a sandboxed WASI without files, network or environment)"
    )]
    UnsupportedImport { import: String },
    /// The plugin's `init` rejected its config.
    #[error("the plugin rejected its config: {0}")]
    InitRejected(String),
    /// The call used up its fuel budget (`fuel_per_batch_max`).
    #[error("out of fuel: the call used more than fuel_per_batch_max ({fuel_max})")]
    OutOfFuel { fuel_max: u64 },
    /// The call ran past its wall-clock deadline.
    #[error("timed out: the call ran longer than {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The plugin tried to grow its memory past `memory_bytes_max`.
    #[error(
        "memory limit: the plugin tried to grow its memory past memory_bytes_max ({memory_bytes_max} bytes)"
    )]
    MemoryLimit { memory_bytes_max: u64 },
    /// The server's budget for all plugin instances' memory is taken; the
    /// call is not the plugin's fault and is retried once memory frees up.
    #[error(
        "waiting for plugin memory: all plugin instances together reached plugins_memory_bytes_max ({plugins_memory_bytes_max} bytes)"
    )]
    ServerMemoryFull { plugins_memory_bytes_max: u64 },
    /// The plugin tried to block (sleep, or wait for I/O).
    #[error(
        "the plugin tried to block (a sleep or a wait on I/O); plugins must not block, since a blocked call holds a server thread"
    )]
    Blocking,
    /// The component is too large for the compiler bounds.
    #[error("{0}")]
    TooComplex(String),
    /// The plugin trapped (a panic, an unreachable, an invalid access).
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error for the whole call.
    #[error("the plugin returned an error: {0}")]
    Returned(String),
    /// The plugin's output buffer did not decode.
    #[error("the plugin's output is malformed: {0}")]
    BadOutput(String),
    /// Compiling, caching or instantiating failed on the host side.
    #[error("plugin runtime: {0}")]
    Host(String),
}

impl PluginError {
    /// Whether the instance must be replaced before the next call (after a
    /// trap wasmtime refuses further calls into it).
    pub fn poisons_instance(&self) -> bool {
        matches!(
            self,
            Self::OutOfFuel { .. }
                | Self::Timeout { .. }
                | Self::MemoryLimit { .. }
                | Self::ServerMemoryFull { .. }
                | Self::Blocking
                | Self::Trap(_)
                | Self::Host(_)
        )
    }
}

/// The error a plugin's blocking WASI call (`poll`, `pollable.block`)
/// traps with: a blocked call cannot be interrupted by the epoch deadline.
#[derive(Debug, thiserror::Error)]
#[error("plugins may not block")]
pub(crate) struct BlockingDenied;

/// What the compiler is given at most: a component past these is refused
/// before compiling (cranelift's time grows faster than linearly with a
/// function's size, and a compile cannot be interrupted).
#[derive(Debug, Clone, Copy)]
pub struct CompileLimits {
    pub function_bytes_max: usize,
    pub functions_max: usize,
    pub function_locals_max: u64,
}

impl CompileLimits {
    pub fn from_config(config: &crate::config::ProcessingConfig) -> Self {
        Self {
            function_bytes_max: config.plugin_function_bytes_max,
            functions_max: config.plugin_functions_max,
            function_locals_max: config.plugin_function_locals_max,
        }
    }
}

fn host_error(error: impl std::fmt::Display) -> PluginError {
    PluginError::Host(error.to_string())
}

/// A compiled plugin, ready to instantiate cheaply.
#[derive(Clone)]
pub struct LoadedPlugin {
    pre: PluginPre<instance::HostState>,
}

/// The engine, linker and compiled-artifact cache shared by all processors.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<instance::HostState>,
    cache_dir: PathBuf,
    /// A hash of the engine's settings: artifacts compiled under other
    /// settings (say, without fuel) must not be loaded.
    engine_fingerprint: u64,
    ticker_stop: Arc<AtomicBool>,
    metered: bool,
    /// The memory of all instances together (`plugins_memory_bytes_max`).
    memory: Arc<MemoryBudget>,
}

impl Drop for PluginRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Release);
    }
}

/// The hex SHA-256 of a component: its content address.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl PluginRuntime {
    pub fn new(cache_dir: PathBuf) -> Result<Self, PluginError> {
        Self::with_metering(cache_dir, true)
    }

    /// A runtime with fuel metering on or off. Off is only for measuring
    /// what metering costs (`weir bench plugin`); Weir always meters.
    pub fn with_metering(cache_dir: PathBuf, metered: bool) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.consume_fuel(metered);
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(host_error)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(host_error)?;
        deny_blocking(&mut linker).map_err(host_error)?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state).map_err(host_error)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_fingerprint = hasher.finish();

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(host_error)?;
        std::fs::create_dir_all(&cache_dir).map_err(host_error)?;
        Ok(Self {
            engine,
            linker,
            cache_dir,
            engine_fingerprint,
            ticker_stop,
            metered,
            memory: Arc::new(MemoryBudget::new(u64::MAX)),
        })
    }

    /// Bounds the memory of all instances together.
    pub fn with_memory_budget(mut self, bytes_max: u64) -> Self {
        self.memory = Arc::new(MemoryBudget::new(bytes_max));
        self
    }

    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.memory
    }

    /// Checks that `bytes` is a component Weir can run: its size, that it
    /// is a component within the compiler bounds, that it exports
    /// `weir:plugin/processor` at this host's version, and that it imports
    /// nothing the host lacks. Compiles it once and keeps the artifact in
    /// the cache under `sha256`. Returns the WIT package it was built
    /// against. Compiling takes a while: call it off the async thread.
    pub fn validate(
        &self,
        bytes: &[u8],
        plugin_bytes_max: usize,
        bounds: CompileLimits,
    ) -> Result<(LoadedPlugin, String), PluginError> {
        if bytes.len() > plugin_bytes_max {
            return Err(PluginError::TooLarge {
                bytes: bytes.len(),
                plugin_bytes_max,
            });
        }
        if !wasmparser_is_component(bytes) {
            return Err(PluginError::NotAComponent {
                reason: if bytes.starts_with(b"\0asm") {
                    "it is a core module, not a component".into()
                } else {
                    "it does not start with the Wasm magic number".into()
                },
            });
        }
        check_compile_limits(bytes, bounds)?;
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginError::NotAComponent {
                reason: format!("{e:#}"),
            })?;
        let wit = self.check_exports(&component)?;
        let loaded = self.prepare(&component)?;
        let path = self.cache_path(&sha256_hex(bytes));
        if !path.exists() {
            self.store_artifact(&component, &path);
        }
        Ok((loaded, wit))
    }

    /// The contract version the component's `processor` export was built
    /// against, if this host can run it: the same minor version within 0.x
    /// (the same major from 1.0), as the WIT file promises.
    fn check_exports(&self, component: &Component) -> Result<String, PluginError> {
        let ty = component.component_type();
        let wanted = format!("{WIT_PACKAGE}/processor@{WIT_VERSION}");
        let prefix = format!("{WIT_PACKAGE}/processor@");
        let mut found = Vec::new();
        for (name, _) in ty.exports(&self.engine) {
            if let Some(version) = name.strip_prefix(&prefix)
                && contract_compatible(version)
            {
                return Ok(format!("{WIT_PACKAGE}@{version}"));
            }
            found.push(name.to_owned());
        }
        let message = match found.iter().find(|name| name.starts_with(&prefix)) {
            Some(other) => format!(
                "the component was built against {other}, but this Weir supports {wanted} \
                 (and its other {} versions); rebuild it with a matching weir-plugin SDK",
                compatible_range()
            ),
            None => format!(
                "the component does not export {wanted} (it exports: {}); build it with the weir-plugin SDK",
                if found.is_empty() {
                    "nothing".to_owned()
                } else {
                    found.join(", ")
                }
            ),
        };
        Err(PluginError::WrongInterface(message))
    }

    /// Links a compiled component: first its imports against what Weir
    /// provides (the `host` interface of a compatible contract, WASI's
    /// sandboxed interfaces), naming the first it lacks; then wasmtime's
    /// own type check.
    fn prepare(&self, component: &Component) -> Result<LoadedPlugin, PluginError> {
        let host_prefix = format!("{WIT_PACKAGE}/host@");
        for (import, _) in component.component_type().imports(&self.engine) {
            let provided = WASI_PROVIDED.iter().any(|wasi| import.starts_with(wasi))
                || import
                    .strip_prefix(&host_prefix)
                    .is_some_and(contract_compatible);
            if !provided {
                return Err(PluginError::UnsupportedImport {
                    import: import.to_owned(),
                });
            }
        }
        let pre = self.linker.instantiate_pre(component).map_err(|error| {
            PluginError::WrongInterface(format!(
                "the component's imports do not match what Weir provides: {error:#}"
            ))
        })?;
        let pre = PluginPre::new(pre).map_err(|e| PluginError::WrongInterface(format!("{e:#}")))?;
        Ok(LoadedPlugin { pre })
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{sha256}-{:016x}.cwasm", self.engine_fingerprint))
    }

    /// A compiled plugin: from the artifact cache when it has one for this
    /// component and engine, else compiled from `component` and cached.
    pub fn load(
        &self,
        sha256: &str,
        component: impl FnOnce() -> Result<Vec<u8>, PluginError>,
    ) -> Result<LoadedPlugin, PluginError> {
        let path = self.cache_path(sha256);
        if let Ok(file) = std::fs::read(&path) {
            match deserialize_artifact(&self.engine, &file) {
                Ok(compiled) => return self.prepare(&compiled),
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "ignoring unreadable compiled plugin")
                }
            }
        }
        let bytes = component()?;
        let compiled =
            Component::new(&self.engine, &bytes).map_err(|e| PluginError::NotAComponent {
                reason: format!("{e:#}"),
            })?;
        self.store_artifact(&compiled, &path);
        self.prepare(&compiled)
    }

    fn store_artifact(&self, compiled: &Component, path: &std::path::Path) {
        let written = compiled
            .serialize()
            .map_err(host_error)
            .and_then(|mut artifact| {
                let digest = ring::digest::digest(&ring::digest::SHA256, &artifact);
                artifact.extend_from_slice(digest.as_ref());
                crate::files::write_owner_only(path, &artifact).map_err(host_error)
            });
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "could not cache compiled plugin");
        }
    }

    pub fn instantiate(
        &self,
        plugin: &LoadedPlugin,
        limits: InstanceLimits,
        log: PluginLog,
    ) -> Result<PluginInstance, PluginError> {
        PluginInstance::new(
            &self.engine,
            plugin,
            limits,
            log,
            self.memory.clone(),
            self.metered,
        )
    }
}

/// Replaces WASI's blocking calls with ones that trap: a guest blocked in
/// the host (`std::thread::sleep`, a wait on a pollable) is out of the
/// epoch deadline's reach and would hold its thread for as long as it
/// asked. Polling whether something is ready stays allowed.
fn deny_blocking(linker: &mut Linker<instance::HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL_INTERFACE)?;
    for blocking in ["poll", "[method]pollable.block"] {
        poll.func_new(blocking, |_, _, _, _| Err(BlockingDenied.into()))?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI packages the linker provides (sandboxed: no files, network or
/// environment reach the plugin).
const WASI_PROVIDED: [&str; 6] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// The `wasi:io/poll` version wasmtime-wasi provides (newer guests'
/// imports of 0.2.x resolve to it).
const WASI_POLL_INTERFACE: &str = "wasi:io/poll@0.2.12";

/// Refuses a component whose code is past `limits`, naming the limit,
/// before anything is compiled.
fn check_compile_limits(bytes: &[u8], limits: CompileLimits) -> Result<(), PluginError> {
    let invalid = |e: wasmparser::BinaryReaderError| PluginError::NotAComponent {
        reason: e.to_string(),
    };
    let mut functions = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(invalid)?;
        let wasmparser::Payload::CodeSectionEntry(body) = payload else {
            continue;
        };
        functions += 1;
        if functions > limits.functions_max {
            return Err(PluginError::TooComplex(format!(
                "the component has more than plugin_functions_max ({}) functions",
                limits.functions_max
            )));
        }
        let size = body.range().len();
        if size > limits.function_bytes_max {
            return Err(PluginError::TooComplex(format!(
                "function {functions} is {size} bytes of code, over plugin_function_bytes_max \
                 ({} bytes); split it into smaller functions",
                limits.function_bytes_max
            )));
        }
        let mut locals = 0u64;
        for local in body.get_locals_reader().map_err(invalid)? {
            let (count, _) = local.map_err(invalid)?;
            locals += u64::from(count);
        }
        if locals > limits.function_locals_max {
            return Err(PluginError::TooComplex(format!(
                "function {functions} declares {locals} locals, over plugin_function_locals_max ({})",
                limits.function_locals_max
            )));
        }
    }
    Ok(())
}

/// Whether a plugin built against contract `version` runs on this host:
/// semver-compatible with [`WIT_VERSION`] (0.x: the same minor).
fn contract_compatible(version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        parts.next()?.parse::<u64>().ok()?;
        Some((major, minor))
    };
    match (parse(version), parse(WIT_VERSION)) {
        (Some((0, minor)), Some((0, host_minor))) => minor == host_minor,
        (Some((major, _)), Some((host_major, _))) => major == host_major && major > 0,
        _ => false,
    }
}

/// The versions [`contract_compatible`] accepts, for messages: "0.1.x".
fn compatible_range() -> String {
    match WIT_VERSION.split_once('.') {
        Some(("0", rest)) => format!("0.{}.x", rest.split('.').next().unwrap_or("0")),
        Some((major, _)) => format!("{major}.x"),
        None => WIT_VERSION.to_owned(),
    }
}

/// A component's preamble: magic, then version 0x0d with layer 1.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// Bytes of the SHA-256 digest that ends each cached artifact.
const ARTIFACT_DIGEST_BYTES: usize = 32;

/// Loads an artifact this process (or an earlier one) compiled and wrote,
/// once its digest shows it is whole: wasmtime runs the machine code in it
/// as it is, so a file damaged on disk (a torn write at a power cut) must
/// never get that far.
#[allow(unsafe_code)]
fn deserialize_artifact(engine: &Engine, file: &[u8]) -> Result<Component, PluginError> {
    let Some(split) = file.len().checked_sub(ARTIFACT_DIGEST_BYTES) else {
        return Err(host_error("the file is too short to be an artifact"));
    };
    let (artifact, digest) = file.split_at(split);
    if ring::digest::digest(&ring::digest::SHA256, artifact).as_ref() != digest {
        return Err(host_error(
            "the file is damaged (its digest does not match)",
        ));
    }
    // SAFETY: wasmtime requires that deserialized bytes come from
    // `Component::serialize` of a compatible engine. The cache directory is
    // inside Weir's data directory, written only by `store_artifact`, the
    // digest checked above shows these are the bytes it wrote, and the file
    // name carries the engine's compatibility hash; wasmtime also checks
    // its own version and settings header and rejects a mismatch.
    unsafe { Component::deserialize(engine, artifact) }.map_err(host_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_of_the_same_minor_contract_version_are_compatible() {
        for version in ["0.1.0", "0.1.1", "0.1.42"] {
            assert!(contract_compatible(version), "{version}");
        }
        for version in ["0.2.0", "0.0.9", "1.1.0", "0.1", "x.y.z", ""] {
            assert!(!contract_compatible(version), "{version}");
        }
        assert_eq!(compatible_range(), "0.1.x");
    }
}
