//! `weir bench load`: many producers at once against a `weir serve` child
//! process, with subscribers that never read, while one well-behaved
//! producer measures its ack latency; then the load stops and the same
//! producer measures again. Reports throughput, the server's peak RSS, and
//! both latency figures.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use weir_client::{Client, ClientConfig, Position, PutRecord};

#[derive(Args)]
pub struct LoadArgs {
    /// Producing QUIC connections.
    #[arg(long, default_value_t = 500)]
    connections: usize,
    /// How long the load lasts.
    #[arg(long, value_parser = crate::parse::duration_ms, default_value = "10s")]
    duration: u64,
    /// Records per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Subscriptions that are opened and never read.
    #[arg(long, default_value_t = 50)]
    stalled_subscribers: usize,
    /// A weir.toml for the server (to measure other memory budgets).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

struct ServerProcess {
    child: Child,
    pid: u32,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resident_bytes(pid: u32) -> u64 {
    weir::system::resident_bytes_of(&format!("/proc/{pid}/status"))
}

/// Starts `weir serve` with `config` (or the defaults), letting all of the
/// bench's `connections` come from loopback.
fn start_server(
    dir: &std::path::Path,
    config: Option<&std::path::Path>,
    connections: usize,
) -> anyhow::Result<(ServerProcess, std::net::SocketAddr)> {
    let mut config = match config {
        Some(path) => weir::config::ServerConfig::load(path)?,
        None => weir::config::ServerConfig::default(),
    };
    let limits = &mut config.limits;
    limits.connections_per_address_max = limits.connections_per_address_max.max(connections);
    let config_path = dir.join("bench-load.toml");
    std::fs::write(&config_path, toml::to_string(&config)?)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--kinesis-listen",
            "off",
            "--data",
        ])
        .arg(dir)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting weir serve")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let pid = child.id();
    let server = ServerProcess { child, pid };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .context("weir serve did not report its address")?
        .parse()?;
    Ok((server, addr))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64 / 1000.0
}

/// One well-behaved producer sending a 10-record batch every 20 ms for
/// `duration`; returns its ack latencies in microseconds.
async fn probe(client: &Client, duration: Duration) -> anyhow::Result<Vec<u64>> {
    let records: Vec<PutRecord> = (0..10)
        .map(|i| PutRecord {
            partition_key: format!("probe-{i}"),
            explicit_hash_key: None,
            data: Bytes::from_static(b"probe"),
        })
        .collect();
    let until = Instant::now() + duration;
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        client.put_records("load", None, records.clone()).await?;
        latencies.push(sent.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    latencies.sort_unstable();
    Ok(latencies)
}

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    if args.connections == 0 || args.batch == 0 {
        bail!("--connections and --batch must be positive");
    }
    let dir = tempfile::Builder::new()
        .prefix("weir-bench-load")
        .tempdir()?;
    // The producers, the admin connection (which also holds the stalled
    // subscriptions) and the probe.
    let connections = args.connections + 2;
    let (server, addr) = start_server(dir.path(), args.config.as_deref(), connections)?;
    let cert = weir::tls::generated_cert_path(dir.path());
    let mut config = ClientConfig::new(addr, &cert);
    config.token = Some(weir_client::read_token_file(
        &weir::auth::admin_token_path(dir.path()),
    )?);
    let connect = || Client::connect(config.clone());
    let admin = connect().await?;
    admin.create_stream("load", 4, Default::default()).await?;
    let idle_rss = resident_bytes(server.pid);
    println!(
        "weir bench load: {} producing connections ({} x {} B per request), {} stalled subscribers, {} s",
        args.connections,
        args.batch,
        args.size,
        args.stalled_subscribers,
        args.duration / 1000
    );

    let mut stalled = Vec::new();
    for i in 0..args.stalled_subscribers {
        stalled.push(
            admin
                .subscribe("load", (i % 4) as u32, Position::TrimHorizon)
                .await?,
        );
    }

    let mut producers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        producers.push(connect().await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let data = Bytes::from(vec![b'x'; args.size]);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, producer) in producers.iter().enumerate() {
        let (producer, stop, acked, failed) = (
            producer.clone(),
            stop.clone(),
            acked.clone(),
            failed.clone(),
        );
        let records: Vec<PutRecord> = (0..args.batch)
            .map(|i| PutRecord {
                partition_key: format!("p{index}-{i}"),
                explicit_hash_key: None,
                data: data.clone(),
            })
            .collect();
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match producer.put_records("load", None, records.clone()).await {
                    Ok(results) => acked.fetch_add(results.len() as u64, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }

    let load = Duration::from_millis(args.duration);
    let sampler = {
        let stop = stop.clone();
        let pid = server.pid;
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(resident_bytes(pid));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let under_load = probe(&admin, load).await?;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    while tasks.join_next().await.is_some() {}
    let peak_rss = sampler.await?;
    let records = acked.load(Ordering::Relaxed);
    println!(
        "under load     {:>10.0} records/s  {:>7.1} MB/s  ({} failed requests)",
        records as f64 / elapsed.as_secs_f64(),
        (records as usize * args.size) as f64 / elapsed.as_secs_f64() / 1e6,
        failed.load(Ordering::Relaxed)
    );
    println!(
        "probe producer under load: ack p50 {:.2} ms  p99 {:.2} ms",
        percentile(&under_load, 0.5),
        percentile(&under_load, 0.99)
    );
    for producer in &producers {
        producer.close().await;
    }
    drop(stalled);
    let after = probe(&admin, Duration::from_secs(3)).await?;
    println!(
        "probe producer after load: ack p50 {:.2} ms  p99 {:.2} ms",
        percentile(&after, 0.5),
        percentile(&after, 0.99)
    );
    println!(
        "server RSS: idle {:.1} MB, peak under load {:.1} MB, after load {:.1} MB",
        idle_rss as f64 / 1e6,
        peak_rss as f64 / 1e6,
        resident_bytes(server.pid) as f64 / 1e6
    );
    admin.close().await;
    Ok(())
}
