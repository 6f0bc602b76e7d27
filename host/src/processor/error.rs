//! What managing plugins and processors can fail with.

use crate::plugin::PluginError;
use crate::storage::StorageError;

/// Everything that can go wrong managing plugins and processors.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// No plugin has this name.
    #[error("no plugin named {name:?}")]
    PluginNotFound { name: String },
    /// A different component is already stored under this plugin name.
    #[error(
        "a different plugin named {name:?} exists (sha256 {sha256}); remove it first or pick another name"
    )]
    PluginExists { name: String, sha256: String },
    /// Processors use the plugin.
    #[error(
        "plugin {name:?} is used by processor(s) {processors}; delete them first (`weir processor delete NAME`)"
    )]
    PluginInUse { name: String, processors: String },
    /// No processor has this name.
    #[error("no processor named {name:?}")]
    NotFound { name: String },
    /// A processor with this name exists.
    #[error("a processor named {name:?} already exists")]
    Exists { name: String },
    /// A setting is invalid; the message says which.
    #[error("{0}")]
    InvalidSettings(String),
    /// A count limit is reached; the message names it and its value.
    #[error("{0}")]
    LimitExceeded(String),
    /// The plugin's init rejected the config.
    #[error("the plugin rejected the config: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
