//! `weir demo`: a server on a temporary directory, a `clicks` stream, a
//! steady sample clickstream, the bundled `json-filter` and `count-by-key`
//! plugins deployed as a two-stage pipeline, and a live screen of it all
//! (`view.rs`, drawn by `terminal.rs`; plain lines when stdout is not a
//! terminal) — no setup needed.

mod components;
mod terminal;
mod view;

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokio::time::MissedTickBehavior;
use weir_client::admin::{AdminRequest, ProcessorSettings};
use weir_client::{Client, Position, Producer, ProducerConfig};

pub use self::components::DemoPlugins;
use self::terminal::Screen;
use self::view::{ClosedWindows, Snapshot};
use super::show;
use weir::config::ServerConfig;
use weir::server::ServerThread;

#[derive(Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s, 5m); default: run until q or Ctrl-C.
    #[arg(long, value_parser = super::parse::duration_ms)]
    duration: Option<u64>,
    /// Sample clicks produced per second (on the live screen, + doubles
    /// and - halves it, b adds a burst).
    #[arg(long, default_value_t = DEFAULT_RATE)]
    rate: u64,
    #[command(subcommand)]
    command: Option<DemoCommand>,
}

impl DemoArgs {
    /// The running demo, not one of its helper verbs.
    pub fn is_live(&self) -> bool {
        self.command.is_none()
    }
}

#[derive(Subcommand)]
enum DemoCommand {
    /// Write sample clicks as JSON lines to stdout (the records the demo
    /// produces: user, campaign, event, price_cents), for
    /// `weir put clicks --file clicks.jsonl --key-field user`.
    Data {
        #[arg(long, default_value_t = 1_000)]
        records: u64,
    },
}

/// `weir demo data`: sample clicks, one JSON object per line.
fn write_sample_data(records: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for i in 0..records {
        writeln!(out, "{}", sample_click(i).1)?;
    }
    out.flush()?;
    Ok(())
}

const USERS: u32 = 500;
const CAMPAIGNS: &[&str] = &[
    "spring-sale",
    "new-arrivals",
    "loyalty",
    "clearance",
    "brand-video",
];
const EVENTS: &[&str] = &[
    "view",
    "view",
    "view",
    "click",
    "click",
    "add_to_cart",
    "purchase",
];

/// One synthetic click event as JSON.
pub fn sample_click(i: u64) -> (String, String) {
    let user = rand::random::<u32>() % USERS;
    let campaign = CAMPAIGNS[rand::random::<u32>() as usize % CAMPAIGNS.len()];
    let event = EVENTS[rand::random::<u32>() as usize % EVENTS.len()];
    let price_cents = if event == "purchase" {
        500 + rand::random::<u32>() % 20_000
    } else {
        0
    };
    let key = format!("user-{user}");
    let json = format!(
        r#"{{"event_id":{i},"user":"{key}","campaign":"{campaign}","event":"{event}","price_cents":{price_cents}}}"#
    );
    (key, json)
}

/// Builds the example plugins (`plugins/`, for wasm32-wasip2) once and
/// returns the directory holding the components. Used by the demo and the
/// end-to-end tests; needs this Weir's source tree and cargo. With
/// `show_progress`, cargo draws its progress on stderr (it takes minutes
/// the first time); otherwise its output is kept for the error message.
pub fn example_plugins_dir(show_progress: bool) -> anyhow::Result<PathBuf> {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("plugins");
    if !plugins.join("Cargo.toml").exists() {
        bail!(
            "the example plugins' sources are not at {}",
            plugins.display()
        );
    }
    let target = plugins.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    let failed = if show_progress {
        let status = command
            .status()
            .context("running cargo to build the example plugins")?;
        (!status.success()).then(|| "(cargo's messages are above)".to_owned())
    } else {
        let output = command
            .output()
            .context("running cargo to build the example plugins")?;
        (!output.status.success()).then(|| String::from_utf8_lossy(&output.stderr).into_owned())
    };
    if let Some(messages) = failed {
        bail!("building the example plugins failed:\n{messages}");
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}

/// The demo's second stage closes windows this often.
const WINDOW_MS: u64 = 10_000;
/// The pipeline's stages, in order: (processor, plugin).
const PIPELINE: [(&str, &str); 2] = [("purchases", "json-filter"), ("revenue", "count-by-key")];
/// Clicks per second unless `--rate` says otherwise: enough to show the
/// box working, a small share of what two cores can store and process.
const DEFAULT_RATE: u64 = 5_000;
/// The rate `+` and `-` stay within.
const RATE_RANGE: std::ops::RangeInclusive<u64> = 10..=1_000_000;
/// Clicks one press of `b` adds at once, to show the pipeline catching up.
const BURST_RECORDS: u64 = 200_000;
/// The producer sends what is due this often.
const PRODUCE_TICK: Duration = Duration::from_millis(10);

/// The demo's plugins built from the source tree, for a binary built
/// without them embedded (its build had no wasm32-wasip2 target).
fn build_demo_plugins() -> anyhow::Result<DemoPlugins> {
    let show_progress = std::io::stderr().is_terminal();
    println!(
        "Building the example plugins for wasm32-wasip2 (the first time takes minutes{})...",
        if show_progress {
            "; cargo shows its progress"
        } else {
            ""
        }
    );
    let built = Instant::now();
    let plugins = DemoPlugins::read(&example_plugins_dir(show_progress)?)?;
    if built.elapsed() > Duration::from_secs(5) {
        println!(
            "Built in {}.",
            show::duration_ms(built.elapsed().as_millis() as u64)
        );
    }
    Ok(plugins)
}

async fn deploy_pipeline(client: &Client, plugins: DemoPlugins) -> anyhow::Result<()> {
    for (name, component) in [
        ("json-filter", plugins.json_filter),
        ("count-by-key", plugins.count_by_key),
    ] {
        client.add_plugin(name, component.into()).await?;
    }
    let window_ms = WINDOW_MS.to_string();
    let configs = [
        vec![("field", "event"), ("op", "equals"), ("value", "purchase")],
        vec![
            ("window-ms", window_ms.as_str()),
            ("key-field", "campaign"),
            ("sum-field", "price_cents"),
        ],
    ];
    let mut source = "clicks";
    for ((name, plugin), config) in PIPELINE.into_iter().zip(configs) {
        let settings = ProcessorSettings {
            name: name.into(),
            plugin: plugin.into(),
            source: source.into(),
            output: Some(name.into()),
            config: config
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Default::default()
        };
        client
            .admin(AdminRequest::CreateProcessor(Box::new(settings)))
            .await?;
        source = name;
    }
    Ok(())
}

/// The same pipeline by hand, against `weir serve` in another terminal.
fn print_steps_by_hand() {
    println!("The same by hand, against `weir serve` in another terminal:");
    println!("  weir stream create clicks --shards 4");
    println!(
        "  weir put clicks --key user-1 '{{\"event\":\"purchase\",\"campaign\":\"spring-sale\",\"price_cents\":1999}}'"
    );
    println!("  weir demo data --records 2000 > clicks.jsonl");
    println!("  weir put clicks --file clicks.jsonl --key-field user");
    println!("  (cd plugins && cargo build --release --target wasm32-wasip2)");
    println!(
        "  weir plugin add plugins/target/wasm32-wasip2/release/json_filter.wasm --name json-filter"
    );
    println!(
        "  weir plugin add plugins/target/wasm32-wasip2/release/count_by_key.wasm --name count-by-key"
    );
    println!(
        "  weir processor create purchases --plugin json-filter --from clicks --to purchases \\"
    );
    println!("      --config field=event --config op=equals --config value=purchase");
    println!(
        "  weir processor create revenue --plugin count-by-key --from purchases --to revenue \\"
    );
    println!(
        "      --config window-ms={WINDOW_MS} --config key-field=campaign --config sum-field=price_cents"
    );
    println!(
        "  weir processor describe revenue; weir state get revenue --prefix count/; weir tail revenue"
    );
    println!("  weir status --watch");
}

/// What the keys change while the demo runs.
struct Control {
    rate: AtomicU64,
    burst: AtomicU64,
}

impl Control {
    /// Applies a key press: `b` queues a burst, `+` doubles the rate and
    /// `-` halves it. Returns what to tell the user, or `None` for other keys.
    fn press(&self, key: u8) -> Option<String> {
        let change_rate = |change: fn(u64) -> u64| {
            let rate = change(self.rate.load(Ordering::Relaxed))
                .clamp(*RATE_RANGE.start(), *RATE_RANGE.end());
            self.rate.store(rate, Ordering::Relaxed);
            format!("rate: {rate} clicks/s")
        };
        match key {
            b'b' | b'B' => {
                self.burst.fetch_add(BURST_RECORDS, Ordering::Relaxed);
                Some(format!(
                    "burst: {BURST_RECORDS} clicks queued at once; watch the lag"
                ))
            }
            b'+' | b'=' => Some(change_rate(|rate| rate.saturating_mul(2))),
            b'-' | b'_' => Some(change_rate(|rate| rate / 2)),
            _ => None,
        }
    }
}

/// Sends `control.rate` clicks a second, plus each burst asked for.
async fn produce(producer: Producer, control: &Control) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(PRODUCE_TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let ticks_per_second = 1.0 / PRODUCE_TICK.as_secs_f64();
    let (mut owed, mut next_id) = (0.0f64, 0u64);
    loop {
        ticker.tick().await;
        owed += control.rate.load(Ordering::Relaxed) as f64 / ticks_per_second;
        let due = owed as u64;
        owed -= due as f64;
        for _ in 0..due + control.burst.swap(0, Ordering::Relaxed) {
            let (key, json) = sample_click(next_id);
            next_id += 1;
            // The ack is not awaited: the screen reads what was stored.
            producer.send(key, json.into_bytes()).await?;
        }
    }
}

/// Feeds `closed` from the `revenue` stream: one record per closed window,
/// campaign and source shard.
async fn follow_closed_windows(client: &Client, closed: Arc<ClosedWindows>) -> anyhow::Result<()> {
    let description = client.describe_stream("revenue").await?;
    for shard in description.shards {
        let mut subscription = client
            .subscribe("revenue", shard.shard, Position::TrimHorizon)
            .await?;
        let closed = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Ok(batch) = subscription.next().await {
                batch.records.iter().for_each(|r| closed.add(&r.data));
            }
        });
    }
    Ok(())
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(DemoCommand::Data { records }) = args.command {
        return write_sample_data(records);
    }
    let plugins = match DemoPlugins::embedded() {
        Some(plugins) => Ok(plugins),
        None => tokio::task::spawn_blocking(build_demo_plugins).await?,
    };
    let dir = tempfile::Builder::new().prefix("weir-demo").tempdir()?;
    let mut config = ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.admin_listen = Some("127.0.0.1:0".parse()?);
    config.kinesis_listen = None;
    // On its own threads (`server_threads`), as `weir serve` runs it, not
    // on the thread that produces, draws and reads keys.
    let server = tokio::task::spawn_blocking(move || ServerThread::start(config)).await??;
    let addr = server.local_addr();
    let client = Client::connect(crate::client_config(&server.access())).await?;
    client
        .create_stream("clicks", 4, Default::default())
        .await?;
    let closed = Arc::new(ClosedWindows::default());
    let pipeline = match plugins {
        Ok(plugins) => {
            deploy_pipeline(&client, plugins).await?;
            follow_closed_windows(&client, Arc::clone(&closed)).await?;
            true
        }
        Err(error) => {
            println!("Running without the plugin pipeline: {error:#}");
            false
        }
    };

    println!(
        "\nWeir demo: server on {addr}, data in {} (removed on exit)",
        dir.path().display()
    );
    if let Some(admin) = server.admin_addr() {
        println!("Metrics: curl http://{admin}/metrics");
    }
    let control = Control {
        rate: AtomicU64::new(args.rate.clamp(*RATE_RANGE.start(), *RATE_RANGE.end())),
        burst: AtomicU64::new(0),
    };
    let (screen, mut keys) = match Screen::enter() {
        Some((screen, keys)) => (Some(screen), keys),
        // Not a terminal: no keys (a channel nothing sends on).
        None => (None, tokio::sync::mpsc::unbounded_channel().1),
    };
    if screen.is_none() {
        print_steps_by_hand();
        println!(
            "\n{} clicks a second into `clicks` (4 shards); `purchases` keeps the\npurchases, `revenue` sums them per campaign per {} s window. Each second:\nclicks stored per second, each stage's lag (purchases -> revenue), and the\nrevenue of the last closed window.\n",
            control.rate.load(Ordering::Relaxed),
            WINDOW_MS / 1000
        );
    }

    let producer = client.producer("clicks", ProducerConfig::default());
    let show = async {
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut rates = VecDeque::with_capacity(view::HISTORY_SECONDS);
        let mut appended_before = None;
        let mut message = String::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(key) = keys.recv() => {
                    if matches!(key, b'q' | b'Q') {
                        return;
                    }
                    if let Some(said) = control.press(key) {
                        message = said;
                    }
                    continue;
                }
            }
            let snapshot = Snapshot::take(&client, pipeline, &closed).await;
            let rate = appended_before.map_or(0, |before| snapshot.appended.saturating_sub(before));
            appended_before = Some(snapshot.appended);
            if rates.len() == view::HISTORY_SECONDS {
                rates.pop_front();
            }
            rates.push_back(rate);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match &screen {
                Some(screen) => {
                    let header = format!(
                        "Weir demo  {addr}  up {}   b burst · + faster · - slower · q quit",
                        show::duration_ms(elapsed_ms)
                    );
                    let mut lines =
                        snapshot.screen(&header, &rates, control.rate.load(Ordering::Relaxed));
                    lines.push(message.clone());
                    screen.draw(&lines);
                }
                // Piped into something that stopped reading: stop too.
                None => {
                    let line = snapshot.line(elapsed_ms / 1000, rate);
                    if writeln!(std::io::stdout(), "{line}").is_err() {
                        return;
                    }
                }
            }
        }
    };
    // A signal stops it too (with --duration as well), so the terminal is
    // always given back.
    let stop = async {
        let deadline = async {
            match args.duration {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = deadline => {}
            () = super::serve::wait_for_signal() => {}
        }
    };
    let produced = tokio::select! {
        result = produce(producer.clone(), &control) => result,
        () = show => Ok(()),
        () = stop => Ok(()),
    };
    // Give the terminal back before printing anything else.
    let screen_was_shown = screen.is_some();
    drop(screen);
    produced?;
    producer.flush().await?;
    let description = client.describe_stream("clicks").await?;
    let stored: u64 = description.shards.iter().map(|s| s.records).sum();
    // Not `println!`: stdout may be a pipe its reader closed, and the
    // server below must still shut down and remove its directory.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "\nStopped. {stored} clicks stored in 4 shards.");
    if pipeline {
        let closed: usize = crate::streams::read_count(&client, "revenue").await;
        let _ = writeln!(
            out,
            "`revenue` holds {closed} per-campaign totals of closed windows."
        );
    }
    if screen_was_shown {
        println!();
        print_steps_by_hand();
    }
    client.close().await;
    tokio::task::spawn_blocking(move || server.shutdown()).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_burst_and_change_the_rate_within_its_range() {
        let control = Control {
            rate: AtomicU64::new(40),
            burst: AtomicU64::new(0),
        };
        assert_eq!(control.press(b'+').as_deref(), Some("rate: 80 clicks/s"));
        for _ in 0..5 {
            control.press(b'-');
        }
        assert_eq!(control.rate.load(Ordering::Relaxed), *RATE_RANGE.start());
        control.press(b'b');
        control.press(b'b');
        assert_eq!(control.burst.load(Ordering::Relaxed), 2 * BURST_RECORDS);
        assert_eq!(control.press(b'x'), None);
    }
}
