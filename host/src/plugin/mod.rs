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

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use instance::{CallOutcome, InstanceLimits, MemoryState, PluginInstance, StateBacking};

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
                | Self::Trap(_)
                | Self::Host(_)
        )
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
        })
    }

    /// Checks that `bytes` is a component Weir can run: its size, that it
    /// is a component, that it exports `weir:plugin/processor` at this
    /// host's version, and that it imports nothing the host lacks. Returns
    /// the WIT package it was built against.
    pub fn validate(
        &self,
        bytes: &[u8],
        plugin_bytes_max: usize,
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
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginError::NotAComponent {
                reason: format!("{e:#}"),
            })?;
        let wit = self.check_exports(&component)?;
        let loaded = self.prepare(&component)?;
        Ok((loaded, wit))
    }

    fn check_exports(&self, component: &Component) -> Result<String, PluginError> {
        let ty = component.component_type();
        let wanted = format!("{WIT_PACKAGE}/processor@{WIT_VERSION}");
        let mut found = Vec::new();
        for (name, _) in ty.exports(&self.engine) {
            if name == wanted {
                return Ok(format!("{WIT_PACKAGE}@{WIT_VERSION}"));
            }
            found.push(name.to_owned());
        }
        let message = match found
            .iter()
            .find(|name| name.starts_with(&format!("{WIT_PACKAGE}/processor@")))
        {
            Some(other) => format!(
                "the component was built against {other}, but this Weir supports {wanted}; rebuild it with a matching weir-plugin SDK"
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

    fn prepare(&self, component: &Component) -> Result<LoadedPlugin, PluginError> {
        let pre = self.linker.instantiate_pre(component).map_err(|error| {
            let text = format!("{error:#}");
            match text.split('`').nth(1) {
                Some(import) if text.contains("import") => PluginError::UnsupportedImport {
                    import: import.to_owned(),
                },
                _ => PluginError::UnsupportedImport { import: text },
            }
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
        if let Ok(artifact) = std::fs::read(&path) {
            match deserialize_artifact(&self.engine, &artifact) {
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

    /// Compiles and caches a component that was just validated.
    pub fn cache(&self, sha256: &str, bytes: &[u8]) {
        let path = self.cache_path(sha256);
        if path.exists() {
            return;
        }
        match Component::new(&self.engine, bytes) {
            Ok(compiled) => self.store_artifact(&compiled, &path),
            Err(error) => tracing::warn!(%error, "could not compile plugin for the cache"),
        }
    }

    fn store_artifact(&self, compiled: &Component, path: &std::path::Path) {
        let written = compiled
            .serialize()
            .map_err(host_error)
            .and_then(|artifact| {
                // Write then rename, so a crash never leaves half an artifact.
                let partial = path.with_extension("partial");
                std::fs::write(&partial, artifact)
                    .and_then(|()| std::fs::rename(&partial, path))
                    .map_err(host_error)
            });
        if let Err(error) = written {
            tracing::warn!(%error, path = %path.display(), "could not cache compiled plugin");
        }
    }

    pub fn instantiate(
        &self,
        plugin: &LoadedPlugin,
        limits: InstanceLimits,
        processor: &str,
    ) -> Result<PluginInstance, PluginError> {
        PluginInstance::new(&self.engine, plugin, limits, processor, self.metered)
    }
}

/// A component's preamble: magic, then version 0x0d with layer 1.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// Loads an artifact this process (or an earlier one) compiled and wrote.
#[allow(unsafe_code)]
fn deserialize_artifact(engine: &Engine, artifact: &[u8]) -> Result<Component, PluginError> {
    // SAFETY: wasmtime requires that deserialized bytes come from
    // `Component::serialize` of a compatible engine. The cache directory is
    // inside Weir's data directory, written only by `store_artifact`, and
    // the file name carries the engine's compatibility hash; wasmtime also
    // checks its own version and settings header and rejects a mismatch.
    unsafe { Component::deserialize(engine, artifact) }.map_err(host_error)
}
