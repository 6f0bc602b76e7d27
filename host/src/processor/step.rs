//! The processing core: one batch (or one idle tick) through a plugin,
//! with every policy decision and no I/O — output validation, the
//! record-by-record replay of a failed batch, halt / skip / dead-letter,
//! the dead-letter format, cursor and counter arithmetic, the state
//! budget. Given the plugin's answers it is deterministic.
//!
//! The server's worker drives it (read → [`process`] on a blocking thread
//! → commit → wait) and so does `weir plugin test`, so a plugin that
//! passes locally is judged the same way on the server. The plugin is
//! reached through [`PluginCalls`]: [`InstanceSlot`] for a real Wasm
//! instance, a scripted fake in the tests below.
//!
//! The happy path is one call per batch. When a batch fails in any way (a
//! trap, fuel or time running out, the memory limit, a blocking call, an
//! error returned for the batch or for some records, an output over the
//! limits or malformed), the batch is replayed one record per call to find
//! the records at fault, and the failure policy applies to each alone:
//! `halt` stops at that record (keeping the records before it), `skip`
//! records its sequence number, `dead-letter` writes it to the dead-letter
//! stream. During the replay each good record's state writes stay visible
//! to the next; a failed record's are dropped.

use bytes::Bytes;
use weir_proto::admin::FailurePolicy;
use weir_proto::batch::{BatchRecord, InputWriter, NO_INPUT, OutputEntry, OutputReader};
use weir_proto::{Record, defaults};

use crate::plugin::instance::StateWrites;
use crate::plugin::{PluginError, PluginInstance};
use crate::storage::{CursorState, StateSize};

/// What the core needs of a plugin: calls, one at a time, and control of
/// their uncommitted state writes.
pub trait PluginCalls {
    /// Runs `process` on an encoded input batch.
    fn process(&mut self, batch: &[u8]) -> Called;
    /// Runs `tick` with the host's clock.
    fn tick(&mut self, now_ms: u64) -> Called;
    /// Drops the latest call's state writes, keeping earlier ones.
    fn reject_last_call(&mut self);
    /// Drops every uncommitted state write.
    fn discard_writes(&mut self);
    /// The state writes to commit (those of every call kept since the last
    /// take).
    fn take_writes(&mut self) -> StateWrites;
}

/// One call's answer: the output buffer or why there is none, and the fuel
/// it burned either way.
pub struct Called {
    pub result: Result<Vec<u8>, CallError>,
    pub fuel_used: u64,
}

#[derive(Debug)]
pub enum CallError {
    /// The call failed: the input's fault, or the plugin's.
    Call(PluginError),
    /// No instance could be made (its `init` failed): no record's fault.
    Instance(PluginError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Call(error) | Self::Instance(error) => error.fmt(f),
        }
    }
}

/// The processor's rules the core applies.
#[derive(Debug, Clone)]
pub struct Rules {
    pub processor: String,
    pub source_stream: String,
    pub shard: u32,
    pub on_error: FailurePolicy,
    pub record_bytes_max: usize,
    pub output_records_max: usize,
    pub output_bytes_max: usize,
}

/// What the worker does after committing a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    Continue,
    /// Stop at the step's cursor until resumed, saying why.
    Halt(String),
    /// Start over from the stored cursor after a while (the server's plugin
    /// memory is taken): nobody's fault.
    Wait {
        status: &'static str,
        reason: String,
    },
}

/// Everything one step produced, to commit atomically with the cursor.
#[derive(Debug)]
pub struct Step {
    /// Output records: (partition key, data).
    pub outputs: Vec<(String, Bytes)>,
    /// Dead letters: (partition key, JSON body).
    pub dead_letters: Vec<(String, Bytes)>,
    /// Source sequence numbers skipped or dead-lettered, with the reason.
    pub failures: Vec<(u64, String)>,
    /// Source records the cursor moves past.
    pub records_in: u64,
    pub fuel_used: u64,
    pub state: StateWrites,
    /// The cursor after the step.
    pub next_sequence: u64,
    /// The latest failure, for `processor describe`.
    pub last_error: Option<String>,
    pub then: Then,
}

impl Step {
    fn at(next_sequence: u64) -> Self {
        Self {
            outputs: Vec::new(),
            dead_letters: Vec::new(),
            failures: Vec::new(),
            records_in: 0,
            fuel_used: 0,
            state: StateWrites::new(),
            next_sequence,
            last_error: None,
            then: Then::Continue,
        }
    }

    /// A step that did nothing and stops the worker.
    pub fn halted(cursor: u64, reason: String) -> Self {
        Self {
            then: Then::Halt(reason),
            ..Self::at(cursor)
        }
    }

    /// Whether there is anything to commit besides fuel.
    pub fn has_changes(&self, cursor: u64) -> bool {
        self.next_sequence != cursor
            || !self.outputs.is_empty()
            || !self.dead_letters.is_empty()
            || !self.state.is_empty()
    }
}

/// Processes `records` (the batch read at `cursor`): one call if it
/// succeeds, else record by record under the failure policy.
pub fn process(
    plugin: &mut impl PluginCalls,
    rules: &Rules,
    records: &[Record],
    cursor: u64,
) -> Step {
    let mut step = Step::at(cursor);
    let called = plugin.process(&encode_batch(records));
    step.fuel_used += called.fuel_used;
    let whole = match called.result {
        Ok(output) => rules.accept_output(&output, records),
        Err(error) => match stop_for(&error, rules) {
            Some(then) => {
                step.then = then;
                return step;
            }
            None => Err(error.to_string()),
        },
    };
    match whole {
        Ok(outputs) => {
            step.outputs = outputs;
            step.records_in = records.len() as u64;
            step.next_sequence = records.last().map_or(cursor, |r| r.sequence + 1);
            step.state = plugin.take_writes();
            step
        }
        Err(reason) => {
            tracing::debug!(processor = %rules.processor, %reason, "batch failed; retrying record by record");
            plugin.discard_writes();
            isolate(plugin, rules, records, step)
        }
    }
}

/// Replays a failed batch one record per call and applies the failure
/// policy to the records that fail alone.
fn isolate(
    plugin: &mut impl PluginCalls,
    rules: &Rules,
    records: &[Record],
    mut step: Step,
) -> Step {
    for record in records {
        let single = std::slice::from_ref(record);
        let called = plugin.process(&encode_batch(single));
        step.fuel_used += called.fuel_used;
        let outcome = match called.result {
            Ok(output) => rules.accept_output(&output, single),
            Err(error) => match stop_for(&error, rules) {
                Some(then) => {
                    // Keep the records before this one, and stop here.
                    step.then = then;
                    break;
                }
                None => Err(error.to_string()),
            },
        };
        match outcome {
            Ok(outputs) => {
                step.outputs.extend(outputs);
                step.records_in += 1;
                step.next_sequence = record.sequence + 1;
            }
            Err(reason) => {
                plugin.reject_last_call();
                let reason = format!("record {}: {reason}", record.sequence);
                step.last_error = Some(reason.clone());
                match rules.on_error {
                    FailurePolicy::Halt => {
                        step.then = Then::Halt(reason);
                        break;
                    }
                    FailurePolicy::Skip => {}
                    FailurePolicy::DeadLetter => step.dead_letters.push((
                        record.partition_key.clone(),
                        rules.dead_letter_body(record, &reason).into(),
                    )),
                }
                step.failures.push((record.sequence, reason));
                step.records_in += 1;
                step.next_sequence = record.sequence + 1;
            }
        }
    }
    step.state = plugin.take_writes();
    step
}

/// Gives an idle shard's plugin the clock (`cursor` stays where it is). A
/// failing tick fails no record: it is reported and its writes dropped.
pub fn tick(plugin: &mut impl PluginCalls, rules: &Rules, now_ms: u64, cursor: u64) -> Step {
    let mut step = Step::at(cursor);
    let called = plugin.tick(now_ms);
    step.fuel_used = called.fuel_used;
    match called.result {
        Ok(output) => match rules.accept_output(&output, &[]) {
            Ok(outputs) => step.outputs = outputs,
            Err(reason) => {
                plugin.reject_last_call();
                step.last_error = Some(format!("tick: {reason}"));
            }
        },
        Err(error) => {
            if let Some(then) = stop_for(&error, rules) {
                step.then = then;
                return step;
            }
            step.last_error = Some(format!("tick: {error}"));
        }
    }
    step.state = plugin.take_writes();
    step
}

/// What a call error means for the worker when it is not the input's
/// fault: an instance that cannot be made halts it (`init` is the
/// plugin's, and no record should be skipped for it); full plugin memory
/// makes it wait.
fn stop_for(error: &CallError, rules: &Rules) -> Option<Then> {
    match error {
        CallError::Call(PluginError::ServerMemoryFull { .. })
        | CallError::Instance(PluginError::ServerMemoryFull { .. }) => Some(Then::Wait {
            status: "waiting for plugin memory",
            reason: error.to_string(),
        }),
        CallError::Instance(error) => Some(Then::Halt(format!(
            "making a plugin instance failed (its init): {error}; fix the plugin or its \
             config, then `weir processor resume {}`",
            rules.processor
        ))),
        CallError::Call(_) => None,
    }
}

impl Rules {
    /// Checks a call's output against its inputs and the limits, and turns
    /// it into records: (partition key, data).
    fn accept_output(
        &self,
        output: &[u8],
        inputs: &[Record],
    ) -> Result<Vec<(String, Bytes)>, String> {
        if output.len() > self.output_bytes_max {
            return Err(format!(
                "the call returned {} bytes of output, over \
                 processor_output_bytes_per_call_max ({} bytes)",
                output.len(),
                self.output_bytes_max
            ));
        }
        let mut accepted = Vec::new();
        for (index, entry) in OutputReader::new(output).enumerate() {
            if index >= self.output_records_max {
                return Err(format!(
                    "the call returned more than processor_output_records_per_call_max \
                     ({}) output entries",
                    self.output_records_max
                ));
            }
            match entry.map_err(|e| format!("malformed plugin output: {e}"))? {
                // The replay names the record; the message is the plugin's.
                OutputEntry::Error { message, .. } => return Err(message.to_owned()),
                OutputEntry::Keep { input_index } => {
                    let input = inputs.get(input_index as usize).ok_or_else(|| {
                        format!(
                            "output keeps input {input_index}, but the batch has {}",
                            inputs.len()
                        )
                    })?;
                    accepted.push((input.partition_key.clone(), input.data.clone()));
                }
                OutputEntry::Emit {
                    input_index,
                    partition_key,
                    data,
                } => {
                    let input = inputs.get(input_index as usize);
                    if input.is_none() && input_index != NO_INPUT {
                        return Err(format!(
                            "output names input {input_index}, but the batch has {}",
                            inputs.len()
                        ));
                    }
                    let key = match (partition_key, input) {
                        (Some(key), _) => key.to_owned(),
                        (None, Some(input)) => input.partition_key.clone(),
                        (None, None) => self.processor.clone(),
                    };
                    let key_chars = key.chars().count();
                    if key_chars == 0 || key_chars > defaults::PARTITION_KEY_CHARS_MAX {
                        return Err(format!(
                            "output partition key has {key_chars} characters (1 to 256 allowed)"
                        ));
                    }
                    if data.len() > self.record_bytes_max {
                        return Err(format!(
                            "oversized output: {} bytes, over record_bytes_max ({} bytes)",
                            data.len(),
                            self.record_bytes_max
                        ));
                    }
                    accepted.push((key, Bytes::copy_from_slice(data)));
                }
            }
        }
        Ok(accepted)
    }

    /// A dead letter: the record and why it failed, as JSON.
    fn dead_letter_body(&self, record: &Record, reason: &str) -> Vec<u8> {
        let data = match std::str::from_utf8(&record.data) {
            Ok(text) => serde_json::json!({ "data": text }),
            Err(_) => serde_json::json!({
                "data_hex": record.data.iter().map(|b| format!("{b:02x}")).collect::<String>()
            }),
        };
        let mut body = serde_json::json!({
            "processor": self.processor,
            "source_stream": self.source_stream,
            "shard": self.shard,
            "sequence": record.sequence,
            "timestamp_ms": record.timestamp_ms,
            "partition_key": record.partition_key,
            "error": reason,
        });
        if let (Some(body), serde_json::Value::Object(data)) = (body.as_object_mut(), data) {
            body.extend(data);
        }
        body.to_string().into_bytes()
    }
}

/// The cursor after committing `step`, with the shard's state size after
/// its writes.
pub fn advance(cursor: CursorState, step: &Step, state: StateSize) -> CursorState {
    CursorState {
        next_sequence: step.next_sequence,
        records_in: cursor.records_in + step.records_in,
        records_out: cursor.records_out + step.outputs.len() as u64,
        fuel_used: cursor.fuel_used + step.fuel_used,
        records_failed: cursor.records_failed + step.failures.len() as u64,
        state,
    }
}

/// The shard's state size once `writes` are applied to `before`, given
/// the stored size of each written key (key and value bytes, `None` when
/// absent).
pub fn state_after(
    before: StateSize,
    writes: &StateWrites,
    mut stored_bytes: impl FnMut(&[u8]) -> Result<Option<u64>, crate::storage::StorageError>,
) -> Result<StateSize, crate::storage::StorageError> {
    let mut state = before;
    for (key, value) in writes {
        if let Some(old) = stored_bytes(key)? {
            state.keys = state.keys.saturating_sub(1);
            state.bytes = state.bytes.saturating_sub(old);
        }
        if let Some(value) = value {
            state.keys += 1;
            state.bytes += (key.len() + value.len()) as u64;
        }
    }
    Ok(state)
}

/// Refuses a step that grows the shard's state past its share of the
/// processor's budget; a step that shrinks it is always allowed.
pub fn check_state_budget(
    before: StateSize,
    after: StateSize,
    shard_bytes_max: u64,
    limit: &str,
    processor: &str,
) -> Result<(), String> {
    if after.bytes > shard_bytes_max && after.bytes > before.bytes {
        return Err(format!(
            "state would grow to {} bytes, over this shard's share ({shard_bytes_max} bytes) \
             of {limit}; raise it with `weir processor update {processor} --state-max SIZE`",
            after.bytes
        ));
    }
    Ok(())
}

pub fn encode_batch(records: &[Record]) -> Vec<u8> {
    let mut writer = InputWriter::new();
    for record in records {
        writer.push(&BatchRecord {
            sequence: record.sequence,
            timestamp_ms: record.timestamp_ms,
            partition_key: &record.partition_key,
            data: &record.data,
        });
    }
    writer.finish()
}

/// Makes plugin instances (instantiate, state backing, `init`).
pub trait MakeInstance {
    fn make(&self) -> Result<PluginInstance, PluginError>;
    /// The fuel each call may burn.
    fn fuel_per_call_max(&self) -> u64;
}

/// A real plugin for the core: the live instance, made on first use and
/// again after a call poisons it, with the state writes of the dead one's
/// earlier calls carried into the next.
pub struct InstanceSlot<M> {
    maker: M,
    instance: Option<PluginInstance>,
    carried: StateWrites,
}

impl<M: MakeInstance> InstanceSlot<M> {
    pub fn new(maker: M) -> Self {
        Self {
            maker,
            instance: None,
            carried: StateWrites::new(),
        }
    }

    /// A slot whose instance is made now, so a config its `init` refuses
    /// is reported before anything runs.
    pub fn started(maker: M) -> Result<Self, PluginError> {
        let instance = maker.make()?;
        Ok(Self {
            instance: Some(instance),
            ..Self::new(maker)
        })
    }

    fn call(
        &mut self,
        call: impl FnOnce(&mut PluginInstance, u64) -> Result<crate::plugin::CallOutcome, PluginError>,
    ) -> Called {
        let (instance, fuel_before) = match self.instance.take() {
            Some(instance) => {
                let fuel = instance.fuel_used();
                (instance, fuel)
            }
            None => match self.maker.make() {
                Ok(mut fresh) => {
                    fresh.restore_state_writes(std::mem::take(&mut self.carried));
                    // A fresh instance's `init` is paid by this call.
                    (fresh, 0)
                }
                Err(error) => {
                    return Called {
                        result: Err(CallError::Instance(error)),
                        fuel_used: 0,
                    };
                }
            },
        };
        let mut instance = instance;
        let result = call(&mut instance, self.maker.fuel_per_call_max());
        let fuel_used = instance.fuel_used() - fuel_before;
        match result {
            Ok(outcome) => {
                self.instance = Some(instance);
                Called {
                    result: Ok(outcome.output),
                    fuel_used,
                }
            }
            // After a trap wasmtime refuses further calls: replace it.
            Err(error) if error.poisons_instance() => {
                self.carried = instance.take_state_writes();
                Called {
                    result: Err(CallError::Call(error)),
                    fuel_used,
                }
            }
            Err(error) => {
                self.instance = Some(instance);
                Called {
                    result: Err(CallError::Call(error)),
                    fuel_used,
                }
            }
        }
    }
}

impl<M: MakeInstance> PluginCalls for InstanceSlot<M> {
    fn process(&mut self, batch: &[u8]) -> Called {
        self.call(|instance, fuel_max| instance.process(batch, fuel_max))
    }

    fn tick(&mut self, now_ms: u64) -> Called {
        self.call(|instance, fuel_max| instance.tick(now_ms, fuel_max))
    }

    fn reject_last_call(&mut self) {
        if let Some(instance) = self.instance.as_mut() {
            instance.reject_last_call();
        }
    }

    fn discard_writes(&mut self) {
        if let Some(instance) = self.instance.as_mut() {
            instance.discard_state_writes();
        }
        self.carried.clear();
    }

    fn take_writes(&mut self) -> StateWrites {
        match self.instance.as_mut() {
            Some(instance) => instance.take_state_writes(),
            None => std::mem::take(&mut self.carried),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::OutputWriter;

    /// A scripted plugin: per record (by data), what its call does. A
    /// record's good call writes `count` = records seen, reading its own
    /// earlier writes, so lost state shows as a wrong count.
    #[derive(Default)]
    struct Fake {
        /// Data of the records whose call traps.
        traps: Vec<&'static str>,
        /// Data whose call runs out of fuel (poisons, like a trap).
        out_of_fuel: Vec<&'static str>,
        /// Data whose output names an input that does not exist.
        bad_index: Vec<&'static str>,
        /// Making an instance fails (after a poisoning call).
        init_fails: bool,
        alive: bool,
        committed: u64,
        pending: Vec<u64>,
        last_call: Vec<u64>,
        calls: u64,
    }

    impl Fake {
        fn count(&self) -> u64 {
            self.last_call
                .last()
                .or(self.pending.last())
                .copied()
                .unwrap_or(self.committed)
        }
    }

    impl PluginCalls for Fake {
        fn process(&mut self, batch: &[u8]) -> Called {
            self.calls += 1;
            if !self.alive {
                if self.init_fails && self.calls > 1 {
                    return Called {
                        result: Err(CallError::Instance(PluginError::Trap("init".into()))),
                        fuel_used: 0,
                    };
                }
                self.alive = true;
            }
            let pending = std::mem::take(&mut self.last_call);
            self.pending.extend(pending);
            let records: Vec<_> = weir_proto::batch::InputReader::new(batch)
                .expect("valid batch")
                .map(|r| r.expect("valid record"))
                .collect();
            let mut output = OutputWriter::new();
            let mut writes = Vec::new();
            let mut count = self.count();
            for (index, record) in records.iter().enumerate() {
                let data = std::str::from_utf8(record.data).expect("text");
                let error = if self.traps.contains(&data) {
                    Some(PluginError::Trap("boom".into()))
                } else if self.out_of_fuel.contains(&data) {
                    Some(PluginError::OutOfFuel { fuel_max: 10 })
                } else {
                    None
                };
                if let Some(error) = error {
                    self.alive = false;
                    return Called {
                        result: Err(CallError::Call(error)),
                        fuel_used: 10,
                    };
                }
                let index = if self.bad_index.contains(&data) {
                    99
                } else {
                    index as u32
                };
                output.keep(index);
                count += 1;
                writes.push(count);
            }
            self.last_call = writes;
            Called {
                result: Ok(output.finish()),
                fuel_used: records.len() as u64,
            }
        }

        fn tick(&mut self, _now_ms: u64) -> Called {
            Called {
                result: Ok(Vec::new()),
                fuel_used: 1,
            }
        }

        fn reject_last_call(&mut self) {
            self.last_call.clear();
        }

        fn discard_writes(&mut self) {
            self.last_call.clear();
            self.pending.clear();
        }

        fn take_writes(&mut self) -> StateWrites {
            let count = self.count();
            self.pending.clear();
            self.last_call.clear();
            self.committed = count;
            StateWrites::from([(b"count".to_vec(), Some(count.to_string().into_bytes()))])
        }
    }

    fn records(data: &[&str]) -> Vec<Record> {
        data.iter()
            .enumerate()
            .map(|(index, data)| Record {
                sequence: 10 + index as u64,
                timestamp_ms: 1_000,
                partition_key: "k".into(),
                data: Bytes::from(data.to_string()),
            })
            .collect()
    }

    fn rules(on_error: FailurePolicy) -> Rules {
        Rules {
            processor: "p".into(),
            source_stream: "in".into(),
            shard: 0,
            on_error,
            record_bytes_max: 1024,
            output_records_max: 100,
            output_bytes_max: 1 << 20,
        }
    }

    struct Case {
        name: &'static str,
        plugin: Fake,
        policy: FailurePolicy,
        input: &'static [&'static str],
        kept: &'static [&'static str],
        failed: &'static [u64],
        next_sequence: u64,
        count: &'static str,
        then: fn(&Then) -> bool,
    }

    #[test]
    fn policies_hold_for_every_kind_of_failure() {
        let five = &["a", "b", "bad", "c", "d"];
        let cases = [
            Case {
                name: "a clean batch is one call",
                plugin: Fake::default(),
                policy: FailurePolicy::Halt,
                input: five,
                kept: five,
                failed: &[],
                next_sequence: 15,
                count: "5",
                then: |then| *then == Then::Continue,
            },
            Case {
                name: "trap on record 3, skip: the state counts the other four",
                plugin: Fake {
                    traps: vec!["bad"],
                    ..Fake::default()
                },
                policy: FailurePolicy::Skip,
                input: five,
                kept: &["a", "b", "c", "d"],
                failed: &[12],
                next_sequence: 15,
                count: "4",
                then: |then| *then == Then::Continue,
            },
            Case {
                name: "out of fuel on record 3, dead-letter",
                plugin: Fake {
                    out_of_fuel: vec!["bad"],
                    ..Fake::default()
                },
                policy: FailurePolicy::DeadLetter,
                input: five,
                kept: &["a", "b", "c", "d"],
                failed: &[12],
                next_sequence: 15,
                count: "4",
                then: |then| *then == Then::Continue,
            },
            Case {
                name: "bad output index, halt: keeps what came before",
                plugin: Fake {
                    bad_index: vec!["bad"],
                    ..Fake::default()
                },
                policy: FailurePolicy::Halt,
                input: five,
                kept: &["a", "b"],
                failed: &[],
                next_sequence: 12,
                count: "2",
                then: |then| matches!(then, Then::Halt(reason) if reason.contains("record 12")),
            },
            Case {
                name: "an init that fails after a trap halts, skipping nothing",
                plugin: Fake {
                    traps: vec!["bad"],
                    init_fails: true,
                    ..Fake::default()
                },
                policy: FailurePolicy::Skip,
                input: five,
                kept: &[],
                failed: &[],
                next_sequence: 10,
                count: "0",
                then: |then| matches!(then, Then::Halt(reason) if reason.contains("init")),
            },
        ];
        for case in cases {
            let Case {
                name, mut plugin, ..
            } = case;
            let input = records(case.input);
            let step = process(&mut plugin, &rules(case.policy), &input, 10);
            let kept: Vec<_> = step.outputs.iter().map(|(_, data)| data.clone()).collect();
            let expected: Vec<_> = case
                .kept
                .iter()
                .map(|data| Bytes::from(data.to_string()))
                .collect();
            assert_eq!(kept, expected, "{name}");
            let failed: Vec<_> = step
                .failures
                .iter()
                .map(|(sequence, _)| *sequence)
                .collect();
            assert_eq!(failed, case.failed, "{name}");
            assert_eq!(step.next_sequence, case.next_sequence, "{name}");
            assert_eq!(
                step.state.get(b"count".as_slice()),
                Some(&Some(case.count.as_bytes().to_vec())),
                "{name}"
            );
            assert!((case.then)(&step.then), "{name}: {:?}", step.then);
            assert!(step.fuel_used > 0, "{name}: calls are charged");
        }
    }

    #[test]
    fn dead_letters_carry_the_record_and_the_reason() {
        let mut plugin = Fake {
            traps: vec!["bad"],
            ..Fake::default()
        };
        let step = process(
            &mut plugin,
            &rules(FailurePolicy::DeadLetter),
            &records(&["bad"]),
            10,
        );
        assert_eq!(step.dead_letters.len(), 1);
        let body = String::from_utf8(step.dead_letters[0].1.to_vec()).expect("json");
        for part in [
            r#""data":"bad""#,
            r#""sequence":10"#,
            r#""error":"record 10: trapped: boom""#,
        ] {
            assert!(body.contains(part), "{body}");
        }
    }

    #[test]
    fn outputs_over_the_limits_fail_their_record() {
        let mut limited = rules(FailurePolicy::Skip);
        limited.output_records_max = 1;
        // Two records in one call: two outputs, over the limit of one; alone
        // each is within it, so nothing fails.
        let mut plugin = Fake::default();
        let step = process(&mut plugin, &limited, &records(&["a", "b"]), 10);
        assert!(step.failures.is_empty(), "{:?}", step.failures);
        assert_eq!(step.outputs.len(), 2);

        let mut two = OutputWriter::new();
        two.emit(NO_INPUT, Some("k"), b"x");
        two.emit(NO_INPUT, Some("k"), b"y");
        let two = two.finish();
        let over = limited.accept_output(&two, &[]).expect_err("over");
        assert!(
            over.contains("processor_output_records_per_call_max"),
            "{over}"
        );
        limited.output_records_max = 10;
        limited.output_bytes_max = 8;
        let over = limited.accept_output(&two, &[]).expect_err("over");
        assert!(
            over.contains("processor_output_bytes_per_call_max"),
            "{over}"
        );
    }

    #[test]
    fn state_over_budget_is_refused_unless_it_shrinks() {
        let small = StateSize { keys: 1, bytes: 10 };
        let large = StateSize {
            keys: 2,
            bytes: 100,
        };
        assert!(check_state_budget(small, large, 50, "x", "p").is_err());
        assert!(check_state_budget(large, small, 5, "x", "p").is_ok());
        let writes = StateWrites::from([(b"a".to_vec(), Some(vec![0; 9])), (b"b".to_vec(), None)]);
        let after = state_after(large, &writes, |key| {
            Ok((key == b"b").then_some(50).or(Some(40)))
        })
        .expect("sizes");
        assert_eq!(after, StateSize { keys: 1, bytes: 20 });
    }
}
