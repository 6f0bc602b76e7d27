//! Write Weir plugins in ordinary Rust.
//!
//! A plugin is a Wasm component that Weir runs over every shard of a stream,
//! in order. Implement one of the traits and export it with its macro:
//!
//! | kind | trait | macro | per record |
//! |---|---|---|---|
//! | filter | [`Filter`] | [`export_filter!`] | keep it or not |
//! | map | [`Map`] | [`export_map!`] | one new record |
//! | filter-map | [`FilterMap`] | [`export_filter_map!`] | zero or one record |
//! | flat-map, aggregate | [`Processor`] | [`export_processor!`] | any number of records, [`state`], [`Processor::tick`] |
//!
//! ```text
//! use weir_plugin::{Config, Filter, Record};
//!
//! struct NonEmpty;
//!
//! impl Filter for NonEmpty {
//!     fn init(_config: &Config) -> Result<Self, weir_plugin::Error> {
//!         Ok(NonEmpty)
//!     }
//!     fn keep(&mut self, record: &Record<'_>) -> Result<bool, weir_plugin::Error> {
//!         let text = std::str::from_utf8(record.data)?; // any error converts
//!         Ok(!text.is_empty())
//!     }
//! }
//!
//! weir_plugin::export_filter!(NonEmpty);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm`
//! file is the component to upload with `weir plugin add`.
//!
//! Keep everything that must survive in [`state`]: it is committed with the
//! outputs and the processor's cursor, exactly once. The plugin's own memory
//! is lost whenever Weir restarts or replaces the instance (after a trap).
//!
//! Test a plugin natively with `cargo test` and [`testing::Harness`]: the
//! same trait calls, state in memory, outputs to inspect.

mod adapters;
mod runtime;
pub mod state;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use adapters::{Filter, FilterMap, Map};
pub use weir_proto::batch::BatchRecord as Record;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        default_bindings_module: "weir_plugin::bindings",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
    });
}

#[doc(hidden)]
pub use runtime::{init as __init, process as __process, tick as __tick};

/// Why a plugin call failed: the message Weir shows in `processor
/// describe`, in dead letters and in its log. `?` converts any error into
/// it — anything that displays, such as `std::str::Utf8Error`, a `String`
/// or a `&str` — so plugin code needs no `map_err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn message(&self) -> &str {
        &self.0
    }
}

// `Error` itself does not implement `Display`, so this conversion does not
// overlap `From<T> for T`.
impl<E: std::fmt::Display> From<E> for Error {
    fn from(error: E) -> Self {
        Self(error.to_string())
    }
}

/// The processor's `key=value` configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`, or an error saying it is required.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("config key `{key}` is required"))
    }

    /// The value of `key` parsed as `T`, or `default` when not given.
    pub fn parse_or<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("config key `{key}`: cannot parse {text:?}")),
        }
    }

    /// Every `key=value` pair, in the order given.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Where a plugin writes its output records.
pub struct Output {
    writer: weir_proto::batch::OutputWriter,
    input_index: u32,
}

impl Output {
    fn new() -> Self {
        Self {
            writer: weir_proto::batch::OutputWriter::new(),
            input_index: weir_proto::batch::NO_INPUT,
        }
    }

    /// Emits a record with the input record's partition key.
    pub fn emit(&mut self, data: &[u8]) {
        self.writer.emit(self.input_index, None, data);
    }

    /// Emits the input record unchanged (cheapest: its bytes are not copied
    /// back to the host).
    pub fn keep(&mut self) {
        self.writer.keep(self.input_index);
    }

    /// Emits a record with its own partition key.
    pub fn emit_keyed(&mut self, partition_key: &str, data: &[u8]) {
        self.writer
            .emit(self.input_index, Some(partition_key), data);
    }
}

/// The general plugin: called once per record, emits any number of records
/// and may read and write [`state`]. Flat-maps and aggregates implement it.
pub trait Processor: Sized + 'static {
    /// Checks the config and builds the plugin; an error rejects the
    /// processor with this message.
    fn init(config: &Config) -> Result<Self, Error>;

    /// Handles one record. An error fails this record only; the processor's
    /// failure policy decides what happens to it.
    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error>;

    /// Called with the host's clock when the shard has been idle, e.g. to
    /// close time windows without waiting for the next record.
    fn tick(&mut self, now_ms: u64, out: &mut Output) -> Result<(), Error> {
        let _ = (now_ms, out);
        Ok(())
    }
}

/// Writes a line to the host's log (tagged with the processor's name); on
/// a native build (`cargo test`), to standard error.
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::weir::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?}: {message}");
}

pub use bindings::weir::plugin::host::Level as LogLevel;

/// Exports a [`Processor`] as the plugin's implementation. The exports
/// exist only when building for Wasm, so the same crate also compiles
/// natively for `cargo test`.
#[macro_export]
macro_rules! export_processor {
    ($processor:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __WeirPlugin;

            impl $crate::bindings::exports::weir::plugin::processor::Guest for __WeirPlugin {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> Result<(), String> {
                    $crate::__init::<$processor>(config)
                }

                fn process(batch: ::std::vec::Vec<u8>) -> Result<::std::vec::Vec<u8>, String> {
                    $crate::__process::<$processor>(&batch)
                }

                fn tick(now_ms: u64) -> Result<::std::vec::Vec<u8>, String> {
                    $crate::__tick::<$processor>(now_ms)
                }
            }

            $crate::bindings::__export_plugin!(__WeirPlugin);
        };
    };
}

/// Exports a [`Filter`] as the plugin's implementation.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        $crate::export_processor!($crate::__adapters::FilterProcessor<$filter>);
    };
}

/// Exports a [`Map`] as the plugin's implementation.
#[macro_export]
macro_rules! export_map {
    ($map:ty) => {
        $crate::export_processor!($crate::__adapters::MapProcessor<$map>);
    };
}

/// Exports a [`FilterMap`] as the plugin's implementation.
#[macro_export]
macro_rules! export_filter_map {
    ($filter_map:ty) => {
        $crate::export_processor!($crate::__adapters::FilterMapProcessor<$filter_map>);
    };
}

#[doc(hidden)]
pub mod __adapters {
    pub use crate::adapters::{FilterMapProcessor, FilterProcessor, MapProcessor};
}
