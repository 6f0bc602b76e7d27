//! What is stored about a processor (its definition) and the checks its
//! limits must pass; the JSON encoding of the registry's stored records.

use serde::{Deserialize, Serialize};
use weir_proto::Position;
use weir_proto::admin::{ProcessorLimits, ProcessorSettings, StartPosition};

use super::ProcessorError;
use crate::config::ProcessingConfig;
use crate::storage::StorageError;

/// A stored processor definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Definition {
    pub(super) id: u64,
    pub(super) settings: ProcessorSettings,
    pub(super) plugin_sha256: String,
    pub(super) output: String,
    pub(super) dead_letter_stream: Option<String>,
    pub(super) fuel_per_sec: u64,
    pub(super) fuel_per_batch_max: u64,
    pub(super) memory_bytes_max: u64,
    pub(super) paused: bool,
}

impl Definition {
    /// Where its workers start in a shard with no committed cursor.
    pub(super) fn start_position(&self) -> Position {
        match self.settings.start {
            StartPosition::TrimHorizon => Position::TrimHorizon,
            StartPosition::Latest => Position::Latest,
        }
    }
}

/// Every limit a processor has must let it do something, and stay under
/// the server's ceilings.
pub(super) fn check_limits(
    limits: &ProcessorLimits,
    config: &ProcessingConfig,
) -> Result<(), ProcessorError> {
    let ceilings = [
        (
            "memory-max",
            limits.memory_bytes_max,
            "plugin_memory_bytes_ceiling",
            config.plugin_memory_bytes_ceiling,
        ),
        (
            "fuel-per-batch-max",
            limits.fuel_per_batch_max,
            "processor_fuel_per_batch_ceiling",
            config.processor_fuel_per_batch_ceiling,
        ),
    ];
    for (flag, value, setting, ceiling) in ceilings {
        if let Some(value) = value.filter(|value| *value > ceiling) {
            return Err(ProcessorError::InvalidSettings(format!(
                "{flag} {value} is over the server's {setting} ({ceiling})"
            )));
        }
    }
    let named = [
        ("fuel-per-sec", limits.fuel_per_sec),
        ("fuel-per-batch-max", limits.fuel_per_batch_max),
        ("memory-max", limits.memory_bytes_max),
        ("state-max", limits.state_bytes_max),
    ];
    match named.iter().find(|(_, value)| *value == Some(0)) {
        Some((name, _)) => Err(ProcessorError::InvalidSettings(format!(
            "{name} must be greater than zero"
        ))),
        None => Ok(()),
    }
}

/// A stored record, read back.
pub(super) fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, ProcessorError> {
    serde_json::from_slice(bytes)
        .map_err(|_| ProcessorError::Storage(StorageError::Corrupt { what }))
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
