//! `weir demo`: a server on a temporary directory, a `clicks` stream, a
//! steady sample clickstream, the bundled `json-filter` and `count-by-key`
//! plugins deployed as a two-stage pipeline, and a live view of it all —
//! no setup needed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::io::Write;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use weir_client::admin::{AdminRequest, AdminResponse, ProcessorSettings};
use weir_client::{Client, Position, ProducerConfig};

use crate::config::ServerConfig;
use crate::server::Server;

#[derive(Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s, 5m); default: run until Ctrl-C.
    #[arg(long, value_parser = super::parse::duration_ms)]
    duration: Option<u64>,
    /// Sample records produced per second.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Print every record as it is tailed (default: a summary per second).
    #[arg(long)]
    verbose: bool,
    #[command(subcommand)]
    command: Option<DemoCommand>,
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
/// end-to-end tests; needs this Weir's source tree and cargo.
pub fn example_plugins_dir() -> anyhow::Result<PathBuf> {
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
    let output = std::process::Command::new(cargo)
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
        .env_remove("RUSTFLAGS")
        .output()
        .context("running cargo to build the example plugins")?;
    if !output.status.success() {
        bail!(
            "building the example plugins failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}

/// The demo's second stage closes windows this often.
const WINDOW_MS: u64 = 10_000;

async fn deploy_pipeline(client: &Client, plugins: &Path) -> anyhow::Result<()> {
    for (name, file) in [
        ("json-filter", "json_filter.wasm"),
        ("count-by-key", "count_by_key.wasm"),
    ] {
        let component =
            std::fs::read(plugins.join(file)).with_context(|| format!("reading {file}"))?;
        client.add_plugin(name, component.into()).await?;
    }
    let stages = [
        (
            "purchases",
            "json-filter",
            "clicks",
            vec![("field", "event"), ("op", "equals"), ("value", "purchase")],
        ),
        (
            "revenue",
            "count-by-key",
            "purchases",
            vec![
                ("window-ms", "10000"),
                ("key-field", "campaign"),
                ("sum-field", "price_cents"),
            ],
        ),
    ];
    for (name, plugin, source, config) in stages {
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
    }
    Ok(())
}

/// "lag N, fuel/record F" for a processor.
async fn processor_line(client: &Client, name: &str) -> String {
    match client
        .admin(AdminRequest::DescribeProcessor { name: name.into() })
        .await
    {
        Ok(AdminResponse::Processor(info)) => {
            let lag: u64 = info.shards.iter().map(|s| s.lag_records).sum();
            let records: u64 = info.shards.iter().map(|s| s.records_in).sum();
            let fuel: u64 = info.shards.iter().map(|s| s.fuel_used).sum();
            format!(
                "{name}: lag {lag}, {} fuel/record",
                fuel.checked_div(records).unwrap_or(0)
            )
        }
        _ => format!("{name}: -"),
    }
}

/// The current window's top campaigns by revenue, from `revenue`'s state.
async fn top_campaigns(client: &Client) -> String {
    let Ok(entries) = client.state("revenue", None, Some("count/"), 1000).await else {
        return "-".into();
    };
    // count/{window_start}/{campaign} -> "{count} {sum}", one per shard.
    let mut windows: std::collections::BTreeMap<
        u64,
        std::collections::HashMap<String, (u64, f64)>,
    > = Default::default();
    for entry in entries {
        let mut parts = entry.key.splitn(3, '/').skip(1);
        let (Some(start), Some(campaign)) =
            (parts.next().and_then(|s| s.parse().ok()), parts.next())
        else {
            continue;
        };
        let mut values = entry.value.split(' ');
        let count: u64 = values.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        let sum: f64 = values.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        let totals = windows
            .entry(start)
            .or_default()
            .entry(campaign.to_owned())
            .or_default();
        totals.0 += count;
        totals.1 += sum;
    }
    let Some((_, current)) = windows.into_iter().next_back() else {
        return "(waiting for purchases)".into();
    };
    let mut ranked: Vec<_> = current.into_iter().collect();
    ranked.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    ranked
        .iter()
        .take(3)
        .map(|(campaign, (count, cents))| format!("{campaign} ${:.2} ({count})", cents / 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(DemoCommand::Data { records }) = args.command {
        return write_sample_data(records);
    }
    println!("Building the example plugins for wasm32-wasip2 (the first run takes a minute)...");
    let plugins = tokio::task::spawn_blocking(example_plugins_dir).await?;
    let dir = tempfile::Builder::new().prefix("weir-demo").tempdir()?;
    let mut config = ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.admin_listen = Some("127.0.0.1:0".parse()?);
    config.kinesis_listen = None;
    let server = Server::start(config).await?;
    let addr = server.local_addr();
    let client = Client::connect(server.client_config()).await?;
    client
        .create_stream("clicks", 4, Default::default())
        .await?;
    let pipeline = match &plugins {
        Ok(plugins) => {
            deploy_pipeline(&client, plugins).await?;
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
    println!(
        "\nProducing {} clicks/s into `clicks` (4 shards); purchases -> revenue per campaign per {} s window. Ctrl-C stops.\n",
        args.rate,
        WINDOW_MS / 1000
    );

    let producer = client.producer("clicks", ProducerConfig::default());
    let produce = async {
        let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
        let mut ticker = tokio::time::interval(interval);
        for i in 0.. {
            ticker.tick().await;
            let (key, json) = sample_click(i);
            producer.send(key, json.into_bytes()).await?;
        }
        anyhow::Ok(())
    };

    let (tailed_tx, mut tailed) = tokio::sync::mpsc::channel(4096);
    for shard in 0..4 {
        let mut subscription = client
            .subscribe("clicks", shard, Position::TrimHorizon)
            .await?;
        let tailed_tx = tailed_tx.clone();
        tokio::spawn(async move {
            while let Ok(batch) = subscription.next().await {
                for record in batch.records {
                    if tailed_tx.send((shard, record)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    let verbose = args.verbose;
    let show = async {
        let started = Instant::now();
        let mut report = tokio::time::interval(Duration::from_secs(1));
        let (mut total, mut last_second) = (0u64, 0u64);
        loop {
            tokio::select! {
                Some((shard, record)) = tailed.recv() => {
                    total += 1;
                    last_second += 1;
                    if verbose {
                        let text = String::from_utf8_lossy(&record.data);
                        println!("shard={shard} seq={} key={} {text}", record.sequence, record.partition_key);
                    }
                }
                _ = report.tick() => {
                    let mut line = format!(
                        "[{:>4}s] ingest {last_second:>4} rec/s ({total} in all)",
                        started.elapsed().as_secs()
                    );
                    if pipeline {
                        line.push_str(&format!(
                            " | {} | {} | top campaigns this window: {}",
                            processor_line(&client, "purchases").await,
                            processor_line(&client, "revenue").await,
                            top_campaigns(&client).await
                        ));
                    }
                    println!("{line}");
                    last_second = 0;
                }
            }
        }
    };
    let stop = async {
        match args.duration {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        result = produce => result?,
        () = show => {}
        () = stop => {}
    }
    producer.flush().await?;
    let description = client.describe_stream("clicks").await?;
    let stored: u64 = description.shards.iter().map(|s| s.records).sum();
    println!("\nStopped. {stored} clicks stored in 4 shards.");
    if pipeline {
        let closed: usize = crate::cli::read_count(&client, "revenue").await;
        println!("`revenue` holds {closed} per-campaign totals of closed windows.");
    }
    client.close().await;
    server.shutdown().await?;
    Ok(())
}
