//! The plugin author's loop without a server: `weir plugin new` scaffolds a
//! crate, `weir plugin test` runs a component over a file of records under
//! the server's limits and fuel accounting.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use weir_proto::batch::{BatchRecord, InputWriter, OutputEntry, OutputReader};

use crate::config::ProcessingConfig;
use crate::plugin::{
    CompileLimits, InstanceLimits, MemoryState, PluginInstance, PluginLog, PluginRuntime,
};
use crate::storage::now_ms;

#[derive(Args)]
pub struct TestArgs {
    /// The component (.wasm) to run.
    file: PathBuf,
    /// Records, one per line (JSON lines or plain text).
    #[arg(long)]
    input: PathBuf,
    /// Plugin config, repeatable.
    #[arg(long = "config", value_parser = super::parse::key_value)]
    config: Vec<(String, String)>,
    /// Partition key for every record (default: `test`).
    #[arg(long, conflicts_with = "key_field")]
    key: Option<String>,
    /// Take each record's partition key from this JSON field.
    #[arg(long)]
    key_field: Option<String>,
    /// After the input, call `tick` with this clock (ms since the epoch),
    /// e.g. to close open windows.
    #[arg(long)]
    tick_ms: Option<u64>,
    #[arg(long)]
    fuel_per_batch_max: Option<u64>,
    #[arg(long, value_parser = super::parse::bytes)]
    memory_max: Option<u64>,
}

struct Input {
    sequence: u64,
    timestamp_ms: u64,
    key: String,
    data: Vec<u8>,
}

fn encode(records: &[Input]) -> Vec<u8> {
    let mut writer = InputWriter::new();
    for record in records {
        writer.push(&BatchRecord {
            sequence: record.sequence,
            timestamp_ms: record.timestamp_ms,
            partition_key: &record.key,
            data: &record.data,
        });
    }
    writer.finish()
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Prints a call's outputs; an error entry or bad output is returned.
fn print_outputs(
    output: &[u8],
    inputs: &[Input],
    record_bytes_max: usize,
) -> Result<usize, String> {
    let mut lines = Vec::new();
    for entry in OutputReader::new(output) {
        match entry.map_err(|e| format!("malformed output: {e}"))? {
            OutputEntry::Error { message, .. } => return Err(message.to_owned()),
            OutputEntry::Keep { input_index } => {
                let input = inputs
                    .get(input_index as usize)
                    .ok_or_else(|| format!("keeps input {input_index}, which does not exist"))?;
                lines.push(format!("out key={} {}", input.key, show(&input.data)));
            }
            OutputEntry::Emit {
                input_index,
                partition_key,
                data,
            } => {
                if data.len() > record_bytes_max {
                    return Err(format!(
                        "oversized output: {} bytes, over record_bytes_max ({record_bytes_max})",
                        data.len()
                    ));
                }
                let key = partition_key
                    .map(str::to_owned)
                    .or_else(|| inputs.get(input_index as usize).map(|i| i.key.clone()))
                    .unwrap_or_else(|| "-".into());
                lines.push(format!("out key={key} {}", show(data)));
            }
        }
    }
    for line in &lines {
        println!("{line}");
    }
    Ok(lines.len())
}

pub fn test(args: TestArgs) -> anyhow::Result<()> {
    let component =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let defaults = ProcessingConfig::default();
    let cache = tempfile::Builder::new()
        .prefix("weir-plugin-test")
        .tempdir()?;
    let runtime = PluginRuntime::new(cache.path().to_owned())?;
    let (loaded, wit) = runtime.validate(
        &component,
        defaults.plugin_bytes_max,
        CompileLimits::from_config(&defaults),
    )?;
    let limits = InstanceLimits {
        fuel_per_call_max: args
            .fuel_per_batch_max
            .unwrap_or(defaults.processor_fuel_per_batch_max),
        memory_bytes_max: args.memory_max.unwrap_or(defaults.plugin_memory_bytes_max),
        call_timeout_ms: defaults.plugin_call_timeout_ms,
        state_key_bytes_max: defaults.state_key_bytes_max,
        state_value_bytes_max: defaults.state_value_bytes_max,
    };
    let record_bytes_max = weir_proto::defaults::RECORD_BYTES_MAX;
    eprintln!(
        "{}: {} bytes, built against {wit}",
        args.file.display(),
        component.len()
    );

    let state = MemoryState::default();
    let new_instance = || -> anyhow::Result<PluginInstance> {
        let log = PluginLog::new("test", defaults.plugin_log_lines_per_sec);
        let mut instance = runtime.instantiate(&loaded, limits, log)?;
        instance.set_state_backing(Box::new(state.clone()));
        instance.init(&args.config)?;
        Ok(instance)
    };
    let mut instance = new_instance()?;

    let reader = std::io::BufReader::new(
        std::fs::File::open(&args.input)
            .with_context(|| format!("opening {}", args.input.display()))?,
    );
    let mut records = Vec::new();
    let start_ms = now_ms();
    for (number, line) in reader.lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let key = match (&args.key, &args.key_field) {
            (_, Some(field)) => super::key_from_json(&line, field)
                .with_context(|| format!("line {}", number + 1))?,
            (Some(key), None) => key.clone(),
            (None, None) => "test".into(),
        };
        let sequence = records.len() as u64;
        records.push(Input {
            sequence,
            timestamp_ms: start_ms + sequence,
            key,
            data: line.into_bytes(),
        });
    }

    let (mut fuel, mut outputs, mut failures) = (0u64, 0usize, 0usize);
    for batch in records.chunks(defaults.processor_batch_records_max) {
        let result = instance.process(&encode(batch), limits.fuel_per_call_max);
        let whole = match result {
            Ok(call) => {
                fuel += call.fuel_used;
                // Print nothing yet: a failed batch is replayed record by record.
                check_outputs(&call.output, batch, record_bytes_max).map(|()| call.output)
            }
            Err(error) => {
                if error.poisons_instance() {
                    instance = new_instance()?;
                }
                Err(error.to_string())
            }
        };
        match whole {
            Ok(output) => {
                outputs +=
                    print_outputs(&output, batch, record_bytes_max).map_err(anyhow::Error::msg)?;
                state.commit(&mut instance);
            }
            Err(_) => {
                instance.discard_state_writes();
                for record in batch {
                    let single = std::slice::from_ref(record);
                    match instance.process(&encode(single), limits.fuel_per_call_max) {
                        Ok(call) => {
                            fuel += call.fuel_used;
                            match check_outputs(&call.output, single, record_bytes_max) {
                                Ok(()) => {
                                    outputs +=
                                        print_outputs(&call.output, single, record_bytes_max)
                                            .map_err(anyhow::Error::msg)?;
                                    state.commit(&mut instance);
                                }
                                Err(message) => {
                                    failures += 1;
                                    instance.reject_last_call();
                                    println!(
                                        "error record {}: {message}\n      input: {}",
                                        record.sequence,
                                        show(&record.data)
                                    );
                                }
                            }
                        }
                        Err(error) => {
                            failures += 1;
                            println!(
                                "error record {}: {error}\n      input: {}",
                                record.sequence,
                                show(&record.data)
                            );
                            if error.poisons_instance() {
                                instance = new_instance()?;
                            }
                        }
                    }
                }
            }
        }
    }
    if let Some(now) = args.tick_ms {
        let call = instance.tick(now, limits.fuel_per_call_max)?;
        fuel += call.fuel_used;
        outputs +=
            print_outputs(&call.output, &[], record_bytes_max).map_err(anyhow::Error::msg)?;
        state.commit(&mut instance);
    }

    let map = state.entries();
    for (key, value) in map.iter() {
        println!("state {} = {}", show(key), show(value));
    }
    eprintln!(
        "{} records in, {outputs} out, {failures} failed; fuel {fuel} in all, {} per record; {} state keys",
        records.len(),
        fuel.checked_div(records.len() as u64).unwrap_or(0),
        map.len()
    );
    if failures > 0 {
        bail!("{failures} records failed (see the errors above)");
    }
    Ok(())
}

fn check_outputs(output: &[u8], inputs: &[Input], record_bytes_max: usize) -> Result<(), String> {
    for entry in OutputReader::new(output) {
        match entry.map_err(|e| format!("malformed output: {e}"))? {
            OutputEntry::Error { message, .. } => return Err(message.to_owned()),
            OutputEntry::Keep { input_index } if input_index as usize >= inputs.len() => {
                return Err(format!("keeps input {input_index}, which does not exist"));
            }
            OutputEntry::Emit { data, .. } if data.len() > record_bytes_max => {
                return Err(format!(
                    "oversized output: {} bytes, over record_bytes_max ({record_bytes_max})",
                    data.len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    Filter,
    Map,
    FilterMap,
    FlatMap,
    Aggregate,
}

#[derive(Args)]
pub struct NewArgs {
    /// Crate name (also the directory created).
    name: String,
    #[arg(long, value_enum, default_value = "filter")]
    kind: Kind,
    /// Where the weir-plugin SDK is (default: this Weir's source tree).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

const CARGO_TOML: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
weir-plugin = { path = "{sdk}" }

[profile.release]
opt-level = 3
lto = true
panic = "abort"

# Build: cargo build --release --target wasm32-wasip2
# Try:   weir plugin test target/wasm32-wasip2/release/{lib}.wasm --input sample.jsonl
"#;

fn body(kind: Kind) -> &'static str {
    match kind {
        Kind::Filter => {
            r#"use weir_plugin::{Config, Filter, Record};

/// Keeps records that contain the configured `needle` (default `{`).
pub struct Plugin {
    needle: Vec<u8>,
}

impl Filter for Plugin {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Self { needle: config.get("needle").unwrap_or("{").as_bytes().to_vec() })
    }

    fn keep(&mut self, record: &Record<'_>) -> Result<bool, String> {
        Ok(contains(record.data, &self.needle))
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

weir_plugin::export_filter!(Plugin);
"#
        }
        Kind::Map => {
            r#"use weir_plugin::{Config, Map, Record};

/// Upper-cases each record.
pub struct Plugin;

impl Map for Plugin {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Plugin)
    }

    fn map(&mut self, record: &Record<'_>) -> Result<Vec<u8>, String> {
        Ok(transform(record.data))
    }
}

pub fn transform(data: &[u8]) -> Vec<u8> {
    data.to_ascii_uppercase()
}

weir_plugin::export_map!(Plugin);
"#
        }
        Kind::FilterMap => {
            r#"use weir_plugin::{Config, FilterMap, Record};

/// Drops empty records and trims the rest.
pub struct Plugin;

impl FilterMap for Plugin {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Plugin)
    }

    fn filter_map(&mut self, record: &Record<'_>) -> Result<Option<Vec<u8>>, String> {
        Ok(transform(record.data))
    }
}

pub fn transform(data: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.as_bytes().to_vec())
}

weir_plugin::export_filter_map!(Plugin);
"#
        }
        Kind::FlatMap => {
            r#"use weir_plugin::{Config, Output, Processor, Record};

/// Emits one record per whitespace-separated word, keyed by the word.
pub struct Plugin;

impl Processor for Plugin {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Plugin)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        for word in words(record.data) {
            out.emit_keyed(word, word.as_bytes());
        }
        Ok(())
    }
}

pub fn words(data: &[u8]) -> Vec<&str> {
    std::str::from_utf8(data).map(|t| t.split_whitespace().collect()).unwrap_or_default()
}

weir_plugin::export_processor!(Plugin);
"#
        }
        Kind::Aggregate => {
            r#"use weir_plugin::{Config, Output, Processor, Record, state};

/// Counts records per partition key; every `every` records of a key it
/// emits the running count. Counts live in state: `weir state get`.
pub struct Plugin {
    every: u64,
}

impl Processor for Plugin {
    fn init(config: &Config) -> Result<Self, String> {
        let every = config.parse_or("every", 100u64)?;
        if every == 0 {
            return Err("every must be at least 1".into());
        }
        Ok(Self { every })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), String> {
        let key = record.partition_key.as_bytes();
        let count = state::get_u64(key) + 1;
        state::set_u64(key, count);
        if should_emit(count, self.every) {
            out.emit(format!("{}={count}", record.partition_key).as_bytes());
        }
        Ok(())
    }
}

pub fn should_emit(count: u64, every: u64) -> bool {
    count.is_multiple_of(every)
}

weir_plugin::export_processor!(Plugin);
"#
        }
    }
}

fn unit_test(kind: Kind) -> &'static str {
    match kind {
        Kind::Filter => {
            "assert!(super::contains(b\"{\\\"a\\\":1}\", b\"{\"));\n        assert!(!super::contains(b\"plain\", b\"{\"));"
        }
        Kind::Map => "assert_eq!(super::transform(b\"abc\"), b\"ABC\".to_vec());",
        Kind::FilterMap => {
            "assert_eq!(super::transform(b\"  x \"), Some(b\"x\".to_vec()));\n        assert_eq!(super::transform(b\"   \"), None);"
        }
        Kind::FlatMap => "assert_eq!(super::words(b\"a b  c\"), vec![\"a\", \"b\", \"c\"]);",
        Kind::Aggregate => {
            "assert!(super::should_emit(200, 100));\n        assert!(!super::should_emit(150, 100));"
        }
    }
}

pub fn new(args: NewArgs) -> anyhow::Result<()> {
    let dir = Path::new(&args.name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let sdk = match args.sdk {
        Some(sdk) => sdk,
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("guest-sdk"),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("no weir-plugin SDK at {} (pass --sdk DIR)", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))?;
    let lib = args.name.replace('-', "_");
    let manifest = CARGO_TOML
        .replace("{name}", &args.name)
        .replace("{lib}", &lib)
        .replace("{sdk}", &sdk.display().to_string());
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    let source = format!(
        "{}\n// The logic is plain Rust: test it natively with `cargo test --lib`.\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn logic() {{\n        {}\n    }}\n}}\n",
        body(args.kind),
        unit_test(args.kind)
    );
    std::fs::write(dir.join("src").join("lib.rs"), source)?;
    std::fs::write(
        dir.join("sample.jsonl"),
        "{\"user\":\"a\",\"event\":\"view\"}\n{\"user\":\"b\",\"event\":\"purchase\"}\nplain text line\n",
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    println!(
        "created {} ({} plugin)",
        dir.display(),
        kind_name(args.kind)
    );
    println!(
        "  cd {} && cargo build --release --target wasm32-wasip2",
        dir.display()
    );
    println!("  weir plugin test target/wasm32-wasip2/release/{lib}.wasm --input sample.jsonl");
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Filter => "filter",
        Kind::Map => "map",
        Kind::FilterMap => "filter-map",
        Kind::FlatMap => "flat-map",
        Kind::Aggregate => "aggregate",
    }
}
