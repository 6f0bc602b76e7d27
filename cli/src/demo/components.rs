//! The demo's plugins, built by `build.rs` and embedded in the binary, so
//! `weir demo` runs from an installed `weir` with no source tree or cargo.

use std::path::Path;

use anyhow::Context;

const JSON_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/json_filter.wasm"));
const COUNT_BY_KEY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/count_by_key.wasm"));

/// The Wasm components the demo's pipeline runs.
pub struct DemoPlugins {
    pub json_filter: Vec<u8>,
    pub count_by_key: Vec<u8>,
}

impl DemoPlugins {
    /// The embedded components, if this binary was built with them (its
    /// build had the wasm32-wasip2 target).
    pub fn embedded() -> Option<Self> {
        (!JSON_FILTER.is_empty() && !COUNT_BY_KEY.is_empty()).then(|| Self {
            json_filter: JSON_FILTER.to_vec(),
            count_by_key: COUNT_BY_KEY.to_vec(),
        })
    }

    /// The components in a directory of built plugins.
    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let read =
            |file: &str| std::fs::read(dir.join(file)).with_context(|| format!("reading {file}"));
        Ok(Self {
            json_filter: read("json_filter.wasm")?,
            count_by_key: read("count_by_key.wasm")?,
        })
    }
}
