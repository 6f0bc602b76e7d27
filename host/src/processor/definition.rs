//! What is stored about a processor (its definition) and the checks its
//! limits must pass; the JSON encoding of the registry's stored records.

use serde::{Deserialize, Serialize};
use weir_proto::Position;
use weir_proto::admin::{ProcessorLimits, ProcessorSettings, StartPosition};

use super::ProcessorError;
use crate::config::ProcessingConfig;
use crate::flows::{self, Flow};
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

    /// How it moves records: from its source to its output and its
    /// dead-letter stream.
    pub(super) fn flows(&self) -> Vec<Flow> {
        std::iter::once(&self.output)
            .chain(&self.dead_letter_stream)
            .map(|to| Flow {
                from: self.settings.source.clone(),
                to: to.clone(),
                by: self.settings.name.clone(),
            })
            .collect()
    }
}

/// Refuses `new` if what it writes could reach its own source through the
/// processors already `defined` and the `other` flows (sinks into this
/// box): records would go round that loop for ever (a filter passes a
/// record it passed before), filling the disk. The error names the loop.
pub(super) fn check_no_loop<'a>(
    new: &'a Definition,
    defined: impl Iterator<Item = &'a Definition>,
    other: &[Flow],
) -> Result<(), ProcessorError> {
    let mut existing: Vec<Flow> = defined.flat_map(Definition::flows).collect();
    existing.extend_from_slice(other);
    match flows::closed_loop(&new.flows(), &existing) {
        None => Ok(()),
        Some(path) => Err(ProcessorError::InvalidSettings(format!(
            "processor {} would feed its own source: {path}; records would go round for ever. Processors must form a DAG: write to a stream none of them reads from this one",
            new.settings.name
        ))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(name: &str, source: &str, output: &str, dead_letter: bool) -> Definition {
        Definition {
            id: 0,
            settings: ProcessorSettings {
                name: name.into(),
                source: source.into(),
                ..Default::default()
            },
            plugin_sha256: String::new(),
            output: output.into(),
            dead_letter_stream: dead_letter.then(|| format!("{name}.dead-letter")),
            fuel_per_sec: 1,
            fuel_per_batch_max: 1,
            memory_bytes_max: 1,
            paused: false,
        }
    }

    fn refusal(new: &Definition, defined: &[Definition]) -> String {
        match check_no_loop(new, defined.iter(), &[]) {
            Err(ProcessorError::InvalidSettings(message)) => message,
            other => panic!("{} was not refused: {other:?}", new.settings.name),
        }
    }

    #[test]
    fn a_processor_that_would_feed_its_own_source_is_refused_with_the_loop() {
        let defined = [
            processor("filter", "clicks", "buys", false),
            processor("enrich", "buys", "rich", true),
            processor("count", "buys", "totals", false),
        ];
        assert_eq!(
            refusal(&processor("back", "rich", "clicks", false), &defined),
            "processor back would feed its own source: rich -> clicks (back) -> buys (filter) \
             -> rich (enrich); records would go round for ever. Processors must form a DAG: \
             write to a stream none of them reads from this one"
        );
        // Through a dead-letter stream, and straight back.
        let redrive = processor("redrive", "enrich.dead-letter", "clicks", false);
        assert!(refusal(&redrive, &defined).contains("-> enrich.dead-letter (enrich)"));
        let itself = processor("echo", "clicks", "clicks", false);
        assert!(refusal(&itself, &defined).contains(": clicks -> clicks (echo);"));
        // Fan-in and chains that end are fine.
        for fine in [
            processor("more", "clicks", "totals", true),
            processor("archive", "totals", "archive", false),
            processor("audit", "rich", "audit", false),
        ] {
            check_no_loop(&fine, defined.iter(), &[]).expect("no loop");
        }
    }
}
