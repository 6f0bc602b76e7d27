//! The plugin author's loop without a server: `weir plugin new` scaffolds a
//! crate, `weir plugin test` runs a component over a file of records under
//! the server's limits and fuel accounting.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use weir_proto::Record;
use weir_proto::admin::FailurePolicy;

use weir::config::ProcessingConfig;
use weir::plugin::{
    CompileLimits, InstanceLimits, LoadedPlugin, MemoryState, PluginError, PluginInstance,
    PluginLog, PluginRuntime,
};
use weir::processor::step::{self, InstanceSlot, MakeInstance, Rules, Step, Then};
use weir::storage::{StateSize, now_ms};

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

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Makes instances over in-memory state, as the server makes them over
/// stored state.
struct LocalInstances<'a> {
    runtime: &'a PluginRuntime,
    loaded: LoadedPlugin,
    limits: InstanceLimits,
    log: PluginLog,
    state: MemoryState,
    config: &'a [(String, String)],
}

impl MakeInstance for LocalInstances<'_> {
    fn make(&self) -> Result<PluginInstance, PluginError> {
        let mut instance = self
            .runtime
            .instantiate(&self.loaded, self.limits, self.log.clone())?;
        instance.set_state_backing(Box::new(self.state.clone()));
        instance.init(self.config)?;
        Ok(instance)
    }

    fn fuel_per_call_max(&self) -> u64 {
        self.limits.fuel_per_call_max
    }
}

/// What the run came to so far.
#[derive(Default)]
struct Tally {
    fuel: u64,
    outputs: usize,
    failures: usize,
    state: StateSize,
}

impl Tally {
    /// Prints a step's outputs and failures and commits its state, with
    /// the server's state budget (one shard's worth).
    fn commit(
        &mut self,
        step: Step,
        inputs: &[Record],
        memory: &MemoryState,
        state_bytes_max: u64,
    ) -> anyhow::Result<()> {
        self.fuel += step.fuel_used;
        for (key, data) in &step.outputs {
            println!("out key={key} {}", show(data));
        }
        self.outputs += step.outputs.len();
        for (sequence, reason) in &step.failures {
            self.failures += 1;
            let input = inputs
                .iter()
                .find(|record| record.sequence == *sequence)
                .map_or_else(String::new, |record| show(&record.data));
            println!("error {reason}\n      input: {input}");
        }
        let after = step::state_after(self.state, &step.state, |key| {
            Ok(memory
                .entries()
                .get(key)
                .map(|value| (key.len() + value.len()) as u64))
        })?;
        step::check_state_budget(
            self.state,
            after,
            state_bytes_max,
            "processor_state_bytes_max",
            "NAME",
        )
        .map_err(anyhow::Error::msg)?;
        self.state = after;
        memory.apply(step.state);
        match step.then {
            Then::Continue => Ok(()),
            Then::Halt(reason) | Then::Wait { reason, .. } => bail!("{reason}"),
        }
    }
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
    eprintln!(
        "{}: {}, built against {wit}",
        args.file.display(),
        super::show::bytes(component.len() as u64)
    );

    let memory = MemoryState::default();
    let instances = LocalInstances {
        runtime: &runtime,
        loaded,
        limits,
        log: PluginLog::new("test", defaults.plugin_log_lines_per_sec),
        state: memory.clone(),
        config: &args.config,
    };
    // A config the plugin refuses is the first thing to report.
    let mut plugin = InstanceSlot::started(instances)?;
    let rules = Rules {
        processor: "test".into(),
        source_stream: args.input.display().to_string(),
        shard: 0,
        // Every failing record is reported, as `skip` would record it.
        on_error: FailurePolicy::Skip,
        record_bytes_max: weir_proto::defaults::RECORD_BYTES_MAX,
        output_records_max: defaults.processor_output_records_per_call_max,
        output_bytes_max: defaults.processor_output_bytes_per_call_max,
    };

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
        let partition_key = match (&args.key, &args.key_field) {
            (_, Some(field)) => super::streams::key_from_json(&line, field)
                .with_context(|| format!("line {}", number + 1))?,
            (Some(key), None) => key.clone(),
            (None, None) => "test".into(),
        };
        let sequence = records.len() as u64;
        records.push(Record {
            sequence,
            timestamp_ms: start_ms + sequence,
            partition_key,
            data: line.into_bytes().into(),
        });
    }

    let mut tally = Tally::default();
    let state_bytes_max = defaults.processor_state_bytes_max;
    let mut cursor = 0;
    for batch in records.chunks(defaults.processor_batch_records_max) {
        let step = step::process(&mut plugin, &rules, batch, cursor);
        cursor = step.next_sequence;
        tally.commit(step, batch, &memory, state_bytes_max)?;
    }
    if let Some(now) = args.tick_ms {
        let step = step::tick(&mut plugin, &rules, now, cursor);
        if let Some(error) = &step.last_error {
            bail!("{error}");
        }
        tally.commit(step, &[], &memory, state_bytes_max)?;
    }

    let map = memory.entries();
    for (key, value) in map.iter() {
        println!("state {} = {}", show(key), show(value));
    }
    eprintln!(
        "{} records in, {} out, {} failed; fuel {} in all, {} per record; {} state keys",
        records.len(),
        tally.outputs,
        tally.failures,
        tally.fuel,
        tally.fuel.checked_div(records.len() as u64).unwrap_or(0),
        map.len()
    );
    if tally.failures > 0 {
        bail!("{} records failed (see the errors above)", tally.failures);
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
    /// Copy the SDK this weir was built with into the crate (weir-sdk/),
    /// so it builds without a Weir source tree; the default when this
    /// weir's source tree is gone.
    #[arg(long, conflicts_with = "sdk")]
    vendored_sdk: bool,
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
            r#"use weir_plugin::{Config, Error, Filter, Record};

/// Keeps records that contain the configured `needle` (default `{`).
pub struct Plugin {
    needle: Vec<u8>,
}

impl Filter for Plugin {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(Self { needle: config.get("needle").unwrap_or("{").as_bytes().to_vec() })
    }

    fn keep(&mut self, record: &Record<'_>) -> Result<bool, Error> {
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
            r#"use weir_plugin::{Config, Error, Map, Record};

/// Upper-cases each record.
pub struct Plugin;

impl Map for Plugin {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Plugin)
    }

    fn map(&mut self, record: &Record<'_>) -> Result<Vec<u8>, Error> {
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
            r#"use weir_plugin::{Config, Error, FilterMap, Record};

/// Drops empty records and trims the rest.
pub struct Plugin;

impl FilterMap for Plugin {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Plugin)
    }

    fn filter_map(&mut self, record: &Record<'_>) -> Result<Option<Vec<u8>>, Error> {
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
            r#"use weir_plugin::{Config, Error, Output, Processor, Record};

/// Emits one record per whitespace-separated word, keyed by the word.
pub struct Plugin;

impl Processor for Plugin {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Plugin)
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
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
            r#"use weir_plugin::{Config, Error, Output, Processor, Record, state};

/// Counts records per partition key; every `every` records of a key it
/// emits the running count. Counts live in state: `weir state get`.
pub struct Plugin {
    every: u64,
}

impl Processor for Plugin {
    fn init(config: &Config) -> Result<Self, Error> {
        let every = config.parse_or("every", 100u64)?;
        if every == 0 {
            return Err("every must be at least 1".into());
        }
        Ok(Self { every })
    }

    fn process(&mut self, record: &Record<'_>, out: &mut Output) -> Result<(), Error> {
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
        Some(sdk) => Some(
            sdk.canonicalize()
                .with_context(|| format!("no weir-plugin SDK at {} (--sdk)", sdk.display()))?,
        ),
        // This weir's source tree, unless it has moved or gone.
        None if !args.vendored_sdk => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("guest-sdk")
            .canonicalize()
            .ok(),
        None => None,
    };
    // `weir plugin new plugins/my-filter` makes the crate `my-filter`.
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && name.starts_with(|c: char| c.is_ascii_alphabetic())
        })
        .with_context(|| {
            format!(
                "{} does not end in a crate name (letters, digits, - and _, starting with a letter)",
                dir.display()
            )
        })?;
    std::fs::create_dir_all(dir.join("src"))?;
    let sdk = match sdk {
        Some(sdk) => sdk.display().to_string(),
        None => {
            super::plugin_sdk::write_vendored(dir)?;
            format!("{}/guest-sdk", super::plugin_sdk::VENDORED_DIR)
        }
    };
    let lib = name.replace('-', "_");
    let manifest = CARGO_TOML
        .replace("{name}", name)
        .replace("{lib}", &lib)
        .replace("{sdk}", &sdk);
    std::fs::write(dir.join("Cargo.toml"), manifest)?;
    let source = format!(
        "{}\n// The logic is plain Rust: test it natively with `cargo test --lib`.\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn logic() {{\n        {}\n    }}\n}}\n",
        body(args.kind),
        unit_test(args.kind)
    );
    std::fs::write(dir.join("src").join("lib.rs"), source)?;
    std::fs::write(
        dir.join("sample.jsonl"),
        // Every line has the `user` field PLUGINS.md's `--key-field user` reads.
        "{\"user\":\"a\",\"event\":\"view\"}\n{\"user\":\"b\",\"event\":\"purchase\"}\n{\"user\":\"c\",\"event\":\"view\"}\n",
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    println!(
        "created {} ({} plugin, weir-plugin SDK at {sdk})",
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
