//! `weir demo`: a server on a temporary directory, a `clicks` stream, a
//! steady sample clickstream, and a live view of it — no setup needed.

use std::time::{Duration, Instant};

use clap::Args;
use weir_client::{Client, ClientConfig, Position, ProducerConfig};

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

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("weir-demo").tempdir()?;
    let mut config = ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.admin_listen = Some("127.0.0.1:0".parse()?);
    let server = Server::start(config).await?;
    let addr = server.local_addr();
    let client = Client::connect(ClientConfig::new(addr, server.cert_path())).await?;
    client
        .create_stream("clicks", 4, Default::default())
        .await?;

    println!(
        "Weir demo: server on {addr}, data in {} (removed on exit)",
        dir.path().display()
    );
    println!("The same by hand, against `weir serve` in another terminal:");
    println!("  weir stream create clicks --shards 4");
    println!(
        "  weir put clicks --key user-1 '{{\"event\":\"click\",\"campaign\":\"spring-sale\"}}'"
    );
    println!("  weir put clicks --file clicks.jsonl --key-field user");
    println!("  weir stream describe clicks");
    println!("  weir get clicks --shard 0 --from trim-horizon --limit 10");
    println!("  weir tail clicks --from latest");
    println!(
        "Producing {} clicks/s into `clicks` (4 shards) and tailing every shard. Ctrl-C stops.\n",
        args.rate
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
        let mut purchases_cents = 0u64;
        loop {
            tokio::select! {
                Some((shard, record)) = tailed.recv() => {
                    total += 1;
                    last_second += 1;
                    let text = String::from_utf8_lossy(&record.data);
                    if let Some(cents) = text.split("\"price_cents\":").nth(1).and_then(|s| s.trim_end_matches('}').parse::<u64>().ok()) {
                        purchases_cents += cents;
                    }
                    if verbose {
                        println!("shard={shard} seq={} key={} {text}", record.sequence, record.partition_key);
                    }
                }
                _ = report.tick() => {
                    println!(
                        "[{:>4}s] tailed {last_second:>5} records/s, {total} in all; revenue so far ${:.2}",
                        started.elapsed().as_secs(),
                        purchases_cents as f64 / 100.0
                    );
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
    println!("\nStopped. {stored} records stored in 4 shards:");
    for shard in &description.shards {
        println!(
            "  shard {}: {} records, {} bytes",
            shard.shard, shard.records, shard.bytes
        );
    }
    client.close().await;
    server.shutdown().await?;
    Ok(())
}
