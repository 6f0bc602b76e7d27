//! What is stored about a processor (its definition) and the checks its
//! limits must pass; the JSON encoding of the registry's stored records.

use std::collections::{HashMap, VecDeque};

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

    /// The streams it writes to: its output and its dead-letter stream.
    pub(super) fn targets(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.output.as_str()).chain(self.dead_letter_stream.as_deref())
    }
}

/// Refuses `new` if what it writes could reach its own source through the
/// processors already `defined`: records would go round that loop for ever
/// (a filter passes a record it passed before), filling the disk. The
/// error names the loop.
pub(super) fn check_no_loop<'a>(
    new: &'a Definition,
    defined: impl Iterator<Item = &'a Definition>,
) -> Result<(), ProcessorError> {
    let defined: Vec<&Definition> = defined.collect();
    let source = new.settings.source.as_str();
    for start in new.targets() {
        // Breadth-first over the streams processors write to; `reached_by`
        // keeps, for each stream reached, the processor and its source.
        let mut reached_by: HashMap<&str, (&str, &str)> = HashMap::new();
        reached_by.insert(start, (&new.settings.name, source));
        let mut queue = VecDeque::from([start]);
        while let Some(stream) = queue.pop_front() {
            if stream == source {
                let mut hops = Vec::new();
                let mut at = stream;
                loop {
                    let (processor, from) = reached_by[at];
                    hops.push(format!("{at} ({processor})"));
                    if processor == new.settings.name && from == source {
                        break;
                    }
                    at = from;
                }
                hops.reverse();
                return Err(ProcessorError::InvalidSettings(format!(
                    "processor {} would feed its own source: {source} -> {}; records would go round for ever. Processors must form a DAG: write to a stream none of them reads from this one",
                    new.settings.name,
                    hops.join(" -> ")
                )));
            }
            for processor in defined.iter().filter(|d| d.settings.source == stream) {
                for target in processor.targets() {
                    if !reached_by.contains_key(target) {
                        reached_by.insert(target, (&processor.settings.name, stream));
                        queue.push_back(target);
                    }
                }
            }
        }
    }
    Ok(())
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
        match check_no_loop(new, defined.iter()) {
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
            check_no_loop(&fine, defined.iter()).expect("no loop");
        }
    }
}
