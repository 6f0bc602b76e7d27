//! The plugin catalog: uploaded components, validated and compiled once,
//! stored content-addressed (one copy of a component however many names it
//! has), each name with its metadata.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ProcessorError;
use super::definition::{decode, encode};
use crate::config::ProcessingConfig;
use crate::plugin::{CompileLimits, LoadedPlugin, PluginError, PluginRuntime};
use crate::storage::{Storage, now_ms};

/// A stored plugin: its metadata (the component is stored separately).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PluginRecord {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
    pub wit: String,
    pub created_ms: u64,
}

pub(super) struct PluginCatalog {
    storage: Arc<Storage>,
    runtime: Arc<PluginRuntime>,
    plugin_bytes_max: usize,
    compile_limits: CompileLimits,
}

impl PluginCatalog {
    pub fn new(
        storage: Arc<Storage>,
        runtime: Arc<PluginRuntime>,
        config: &ProcessingConfig,
    ) -> Self {
        Self {
            storage,
            runtime,
            plugin_bytes_max: config.plugin_bytes_max,
            compile_limits: CompileLimits::from_config(config),
        }
    }

    /// The largest component `plugin add` accepts.
    pub fn plugin_bytes_max(&self) -> usize {
        self.plugin_bytes_max
    }

    pub fn get(&self, name: &str) -> Result<PluginRecord, ProcessorError> {
        let bytes = self
            .storage
            .processing()
            .plugin_info(name)?
            .ok_or_else(|| ProcessorError::PluginNotFound {
                name: name.to_owned(),
            })?;
        decode(&bytes, "plugin metadata")
    }

    pub fn all(&self) -> Result<Vec<PluginRecord>, ProcessorError> {
        self.storage
            .processing()
            .plugin_infos()?
            .iter()
            .map(|bytes| decode(bytes, "plugin metadata"))
            .collect()
    }

    /// Validates and compiles `component` (the compiled artifact is cached
    /// for later starts), then stores it under `name`.
    pub async fn add(
        &self,
        name: &str,
        sha256: String,
        component: &[u8],
    ) -> Result<PluginRecord, ProcessorError> {
        let wit = self.validate(component).await?;
        let record = PluginRecord {
            name: name.to_owned(),
            sha256,
            bytes: component.len() as u64,
            wit,
            created_ms: now_ms(),
        };
        self.storage
            .processing()
            .put_plugin(name, &encode(&record), &record.sha256, component)?;
        tracing::info!(plugin = name, sha256 = %record.sha256, bytes = component.len(), "plugin added");
        Ok(record)
    }

    /// Removes `record`'s name, and its component unless another name
    /// holds the same one.
    pub fn remove(&self, record: &PluginRecord) -> Result<(), ProcessorError> {
        let shared = self
            .all()?
            .iter()
            .any(|other| other.name != record.name && other.sha256 == record.sha256);
        self.storage
            .processing()
            .remove_plugin(&record.name, &record.sha256, shared)?;
        tracing::info!(plugin = %record.name, "plugin removed");
        Ok(())
    }

    /// Validates and compiles an upload on a blocking thread (compiling
    /// takes a while), within the compiler bounds. Returns the WIT package
    /// it targets.
    async fn validate(&self, component: &[u8]) -> Result<String, ProcessorError> {
        let runtime = self.runtime.clone();
        let component = component.to_vec();
        let (plugin_bytes_max, bounds) = (self.plugin_bytes_max, self.compile_limits);
        let (_, wit) = tokio::task::spawn_blocking(move || {
            runtime.validate(&component, plugin_bytes_max, bounds)
        })
        .await
        .map_err(|e| PluginError::Host(format!("compiling the plugin panicked: {e}")))??;
        Ok(wit)
    }

    /// The compiled component with this digest, from the cache or storage.
    pub fn load(&self, sha256: &str) -> Result<LoadedPlugin, ProcessorError> {
        let storage = &self.storage;
        Ok(self.runtime.load(sha256, || {
            storage
                .processing()
                .plugin_component(sha256)
                .map_err(|e| PluginError::Host(e.to_string()))?
                .ok_or_else(|| {
                    PluginError::Host(format!("component {sha256} is missing from storage"))
                })
        })?)
    }
}
