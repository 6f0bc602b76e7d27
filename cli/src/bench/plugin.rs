//! `weir bench plugin`: a plugin's throughput through the Wasm boundary,
//! with fuel metering on and off, against the same logic in native Rust,
//! and its cold start from the compiled-artifact cache — all in one run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use weir_proto::batch::{BatchRecord, InputWriter};

/// The json-filter plugin's matching logic, compiled natively: the same
/// source, so the ratio compares targets, not implementations.
#[path = "../../../plugins/json-filter/src/matcher.rs"]
mod json_matcher;

/// The count-by-key plugin's window logic, compiled natively.
#[path = "../../../plugins/count-by-key/src/window.rs"]
mod count_windows;

/// A `HashMap` as the native count-by-key's state.
#[derive(Default)]
struct MapStore(HashMap<String, Vec<u8>>);

impl count_windows::Store for MapStore {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.0.insert(key.to_owned(), value.to_vec());
    }

    fn delete(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// Counts what the native count-by-key emits.
#[derive(Default)]
struct CountEmits(usize);

impl count_windows::Emit for CountEmits {
    fn emit(&mut self, _key: &str, data: &[u8]) {
        self.0 += data.len();
    }
}

use weir::plugin::{InstanceLimits, MemoryState, PluginLog, PluginRuntime, sha256_hex};

#[derive(Args)]
pub struct PluginArgs {
    /// The component to measure (a .wasm built for wasm32-wasip2).
    #[arg(long)]
    plugin: PathBuf,
    /// Plugin config, repeatable.
    #[arg(long = "config", value_parser = crate::parse::key_value)]
    config: Vec<(String, String)>,
    /// Records per measured phase.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    /// Bytes per record (JSON, padded).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Records per call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// The same logic in native Rust, for the ratio.
    #[arg(long, value_enum)]
    native: Option<Native>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Native {
    /// json-filter with field=event op=equals value=purchase.
    JsonFilter,
    /// count-by-key with window-ms=60000 key-field=campaign sum-field=price.
    CountByKey,
}

/// Sample clickstream JSON padded to `size` bytes.
fn sample(i: usize, size: usize) -> Vec<u8> {
    let event = if i.is_multiple_of(4) {
        "purchase"
    } else {
        "view"
    };
    let mut json = format!(
        r#"{{"event":"{event}","campaign":"c{}","price":{},"pad":""#,
        i % 50,
        i % 997
    );
    let pad = size.saturating_sub(json.len() + 2);
    json.push_str(&"x".repeat(pad));
    json.push_str("\"}");
    json.into_bytes()
}

fn limits() -> InstanceLimits {
    InstanceLimits {
        fuel_per_call_max: u64::MAX / 2,
        memory_bytes_max: 256 * 1024 * 1024,
        call_timeout_ms: 60_000,
        state_key_bytes_max: 1024,
        state_value_bytes_max: 1024 * 1024,
    }
}

struct Phase {
    records_per_sec: f64,
    fuel_per_record: f64,
}

/// The benchmark's plugins log without a rate limit.
fn bench_log() -> PluginLog {
    PluginLog::new("bench", u64::MAX)
}

fn run_wasm(
    runtime: &PluginRuntime,
    component: &[u8],
    args: &PluginArgs,
    batches: &[Vec<u8>],
) -> anyhow::Result<Phase> {
    let sha = sha256_hex(component);
    let loaded = runtime.load(&sha, || Ok(component.to_vec()))?;
    let mut instance = runtime.instantiate(&loaded, limits(), bench_log())?;
    let state = MemoryState::default();
    instance.set_state_backing(Box::new(state.clone()));
    instance.init(&args.config)?;
    let started = Instant::now();
    let mut fuel = 0u64;
    for batch in batches {
        let outcome = instance.process(batch, u64::MAX / 2)?;
        fuel += outcome.fuel_used;
        state.commit(&mut instance);
    }
    let elapsed = started.elapsed();
    Ok(Phase {
        records_per_sec: args.records as f64 / elapsed.as_secs_f64(),
        fuel_per_record: fuel as f64 / args.records as f64,
    })
}

fn run_native(native: Native, records: &[Vec<u8>]) -> anyhow::Result<f64> {
    let started = Instant::now();
    match native {
        Native::JsonFilter => {
            let matcher = json_matcher::Matcher::new("event", "equals", Some("purchase"))
                .map_err(anyhow::Error::msg)?;
            let kept = records.iter().filter(|data| matcher.matches(data)).count();
            std::hint::black_box(kept);
        }
        Native::CountByKey => {
            let windows = count_windows::Windows::new("60000", Some("campaign"), Some("price"))
                .map_err(anyhow::Error::msg)?;
            let (mut store, mut out) = (MapStore::default(), CountEmits::default());
            for (sequence, data) in records.iter().enumerate() {
                let time_ms = BENCH_EPOCH_MS + sequence as u64;
                windows
                    .add(&mut store, &mut out, time_ms, "user", data)
                    .map_err(anyhow::Error::msg)?;
            }
            std::hint::black_box(out.0);
        }
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

/// Record times start here, one millisecond apart, so windows close as
/// they would live.
const BENCH_EPOCH_MS: u64 = 1_700_000_000_000;

pub fn run(args: PluginArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.batch == 0 {
        bail!("--records and --batch must be positive");
    }
    let component = std::fs::read(&args.plugin)
        .with_context(|| format!("reading {}", args.plugin.display()))?;
    let cache = tempfile::Builder::new()
        .prefix("weir-bench-plugin")
        .tempdir()?;
    let records: Vec<Vec<u8>> = (0..args.records).map(|i| sample(i, args.size)).collect();
    let batches: Vec<Vec<u8>> = records
        .chunks(args.batch)
        .enumerate()
        .map(|(chunk, records)| {
            let mut writer = InputWriter::new();
            for (offset, data) in records.iter().enumerate() {
                let sequence = (chunk * args.batch + offset) as u64;
                writer.push(&BatchRecord {
                    sequence,
                    timestamp_ms: BENCH_EPOCH_MS + sequence,
                    partition_key: "user",
                    data,
                });
            }
            writer.finish()
        })
        .collect();
    println!(
        "weir bench plugin: {} ({} B), {} records of {} B, batches of {}",
        args.plugin.display(),
        component.len(),
        args.records,
        args.size,
        args.batch
    );

    let metered = PluginRuntime::with_metering(cache.path().join("metered"), true)?;
    let unmetered = PluginRuntime::with_metering(cache.path().join("unmetered"), false)?;
    let fuel_on = run_wasm(&metered, &component, &args, &batches)?;
    let fuel_off = run_wasm(&unmetered, &component, &args, &batches)?;
    println!(
        "wasm, fuel on   {:>12.0} records/s  {:>8.0} fuel/record",
        fuel_on.records_per_sec, fuel_on.fuel_per_record
    );
    println!(
        "wasm, fuel off  {:>12.0} records/s  (metering costs {:.0}%)",
        fuel_off.records_per_sec,
        (fuel_off.records_per_sec / fuel_on.records_per_sec - 1.0) * 100.0
    );
    if let Some(native) = args.native {
        let native_rate = run_native(native, &records)?;
        println!(
            "native          {:>12.0} records/s  (wasm with fuel is {:.2}x slower)",
            native_rate,
            native_rate / fuel_on.records_per_sec
        );
    }

    // Cold start: load from the compiled cache, instantiate, init.
    let sha = sha256_hex(&component);
    let mut samples = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let loaded = metered.load(&sha, bail_missing)?;
        let mut instance = metered.instantiate(&loaded, limits(), bench_log())?;
        instance.init(&args.config)?;
        samples.push(started.elapsed());
    }
    samples.sort();
    println!(
        "cold start from the compiled cache: median {:.2} ms (load + instantiate + init, 20 runs)",
        samples[samples.len() / 2].as_secs_f64() * 1000.0
    );
    Ok(())
}

fn bail_missing() -> Result<Vec<u8>, weir::plugin::PluginError> {
    Err(weir::plugin::PluginError::Host(
        "the compiled cache was expected to hold this plugin".into(),
    ))
}
