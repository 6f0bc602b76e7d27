//! Running a plugin natively under `cargo test`: the calls Weir makes — a
//! record through the SDK's runtime, its state writes cached and handed
//! over when the call returns — with the state in memory, and the outputs
//! to inspect. As on the server, a record that fails keeps none of its
//! state writes.
//!
//! ```text
//! use weir_plugin::testing::{Harness, Input};
//!
//! let mut plugin = Harness::<MyCounter>::new(&[("window-ms", "60000")])?;
//! let outcome = plugin.process(&[Input::new("user-1", b"{}")])?;
//! assert!(outcome.errors.is_empty());
//! assert_eq!(plugin.state().len(), 1);
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;

use weir_proto::batch::{BatchRecord, InputWriter, OutputEntry, OutputReader};

use crate::state::host::STORE;
use crate::{Error, Processor};

/// One input record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub partition_key: &'a str,
    pub data: &'a [u8],
    pub timestamp_ms: u64,
}

impl<'a> Input<'a> {
    /// A record arriving at time 0.
    pub fn new(partition_key: &'a str, data: &'a [u8]) -> Self {
        Self::at(0, partition_key, data)
    }

    pub fn at(timestamp_ms: u64, partition_key: &'a str, data: &'a [u8]) -> Self {
        Self {
            partition_key,
            data,
            timestamp_ms,
        }
    }
}

/// One output record, as Weir would store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// What some calls produced: the records and the inputs that failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub emitted: Vec<Emitted>,
    /// (sequence number of the input, the plugin's message).
    pub errors: Vec<(u64, String)>,
}

/// A plugin of type `P`, initialised, with its state in memory. One per
/// test thread (the state, like a Wasm instance's, is the thread's).
pub struct Harness<P> {
    next_sequence: u64,
    plugin: PhantomData<P>,
}

impl<P: Processor> Harness<P> {
    /// Runs `init` with `config`, on empty state.
    pub fn new(config: &[(&str, &str)]) -> Result<Self, Error> {
        STORE.with(|store| store.borrow_mut().clear());
        let pairs = config
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        crate::runtime::init::<P>(pairs).map_err(Error)?;
        Ok(Self {
            next_sequence: 0,
            plugin: PhantomData,
        })
    }

    /// Processes `inputs` in order, one call each, numbering them from 0
    /// across calls.
    pub fn process(&mut self, inputs: &[Input<'_>]) -> Result<Outcome, Error> {
        let mut outcome = Outcome::default();
        for input in inputs {
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let mut batch = InputWriter::new();
            batch.push(&BatchRecord {
                sequence,
                timestamp_ms: input.timestamp_ms,
                partition_key: input.partition_key,
                data: input.data,
            });
            let before = STORE.with(|store| store.borrow().clone());
            let output = crate::runtime::process::<P>(&batch.finish()).map_err(Error)?;
            let mut emitted = Vec::new();
            let mut failed = None;
            for entry in OutputReader::new(&output) {
                match entry.map_err(|e| Error(e.to_string()))? {
                    OutputEntry::Keep { .. } => emitted.push(Emitted {
                        partition_key: input.partition_key.to_owned(),
                        data: input.data.to_vec(),
                    }),
                    OutputEntry::Emit {
                        partition_key,
                        data,
                        ..
                    } => emitted.push(Emitted {
                        partition_key: partition_key.unwrap_or(input.partition_key).to_owned(),
                        data: data.to_vec(),
                    }),
                    OutputEntry::Error { message, .. } => failed = Some(message.to_owned()),
                }
            }
            match failed {
                Some(message) => {
                    // As on the server: a failed record keeps no writes and
                    // no outputs.
                    STORE.with(|store| *store.borrow_mut() = before);
                    outcome.errors.push((sequence, message));
                }
                None => outcome.emitted.extend(emitted),
            }
        }
        Ok(outcome)
    }

    /// Calls `tick` with `now_ms`, as Weir does when the shard is idle.
    pub fn tick(&mut self, now_ms: u64) -> Result<Outcome, Error> {
        let output = crate::runtime::tick::<P>(now_ms).map_err(Error)?;
        let mut outcome = Outcome::default();
        for entry in OutputReader::new(&output) {
            match entry.map_err(|e| Error(e.to_string()))? {
                OutputEntry::Emit {
                    partition_key,
                    data,
                    ..
                } => outcome.emitted.push(Emitted {
                    partition_key: partition_key.unwrap_or_default().to_owned(),
                    data: data.to_vec(),
                }),
                OutputEntry::Keep { .. } | OutputEntry::Error { .. } => {}
            }
        }
        Ok(outcome)
    }

    /// The plugin's state now: what Weir would have committed.
    pub fn state(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        STORE.with(|store| store.borrow().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Output, Record, state};

    /// Counts records per key; fails records that are not UTF-8.
    struct Counter;

    impl Processor for Counter {
        fn init(config: &Config) -> Result<Self, Error> {
            config.require("mode")?;
            Ok(Counter)
        }

        fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
            let key = format!("count/{}", record.partition_key);
            let count = state::get_u64(key.as_bytes()) + 1;
            state::set_u64(key.as_bytes(), count);
            let text = std::str::from_utf8(record.data)?;
            out.emit(format!("{text}:{count}").as_bytes());
            Ok(())
        }
    }

    #[test]
    fn a_plugin_runs_natively_with_state_and_failures_as_on_the_server() {
        assert!(
            Harness::<Counter>::new(&[]).is_err(),
            "init's error comes back"
        );
        let mut plugin = Harness::<Counter>::new(&[("mode", "count")]).expect("init");
        let outcome = plugin
            .process(&[
                Input::new("a", b"x"),
                Input::new("a", &[0xff]),
                Input::new("a", b"y"),
            ])
            .expect("calls");
        let data: Vec<_> = outcome.emitted.iter().map(|e| e.data.clone()).collect();
        assert_eq!(data, [b"x:1".to_vec(), b"y:2".to_vec()]);
        assert_eq!(outcome.errors.len(), 1);
        assert_eq!(outcome.errors[0].0, 1);
        assert!(
            outcome.errors[0].1.contains("utf-8"),
            "{:?}",
            outcome.errors
        );
        assert_eq!(
            plugin.state().get(b"count/a".as_slice()),
            Some(&2u64.to_le_bytes().to_vec()),
            "the failed record's count was not kept"
        );
    }
}
