//! `weir bench`: throughput and latency against an embedded server on a
//! temporary directory, with the raw-storage baseline measured in the same
//! run so results can be compared as ratios on a noisy machine.

mod backlog;
mod kinesis;
mod load;
mod plugin;
mod sink;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use weir_client::{Client, Position, ProducerStamp, PutRecord, PutResult};
use weir_proto::routing::shard_for;

use weir::config::{Durability, ServerConfig};
use weir::server::ServerThread;
use weir::storage::{AppendRecord, Storage};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Durable ingest: raw storage in-process, then the same over QUIC; or,
    /// with --server, only over QUIC to a running `weir serve`.
    Produce {
        #[command(flatten)]
        args: ProduceArgs,
        #[command(flatten)]
        connect: super::ConnectArgs,
    },
    /// Reads: GetRecords pages (one shard after another, then every shard
    /// at once: `get-par`) and subscriptions over QUIC.
    Consume(ConsumeArgs),
    /// A plugin through the Wasm boundary: fuel on/off, native ratio, cold start.
    Plugin(plugin::PluginArgs),
    /// Produce -> processor -> output-visible latency over QUIC.
    Pipeline(PipelineArgs),
    /// A processor working through records already stored: catch-up rate.
    Backlog(backlog::BacklogArgs),
    /// PutRecords and GetRecords through the Kinesis HTTP API beside QUIC
    /// (and, with --endpoint, beside another Kinesis-compatible server).
    Kinesis(kinesis::KinesisArgs),
    /// Hundreds of producing connections and stalled subscribers against a
    /// `weir serve` process: throughput, peak RSS, a probe's ack latency.
    Load(load::LoadArgs),
    /// A sink forwarding a stored backlog to NATS JetStream, beside the same
    /// records published straight to JetStream; put latency meanwhile.
    Sink(sink::SinkArgs),
}

#[derive(Args, Clone)]
pub struct PipelineArgs {
    /// A filter or map plugin that passes records like {"t":...} through.
    #[arg(long)]
    plugin: std::path::PathBuf,
    /// Plugin config, repeatable (e.g. --config field=t --config op=exists).
    #[arg(long = "config", value_parser = super::parse::key_value)]
    config: Vec<(String, String)>,
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Records produced per second.
    #[arg(long, default_value_t = 2_000)]
    rate: u64,
    #[arg(long, default_value_t = 4)]
    shards: u32,
}

#[derive(Args, Clone)]
pub struct ProduceArgs {
    /// Records to send per measured phase.
    #[arg(long, default_value_t = 200_000)]
    pub(super) records: usize,
    /// Data bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub(super) size: usize,
    /// Records per PutRecords request.
    #[arg(long, default_value_t = 1000)]
    pub(super) batch: usize,
    /// Concurrent producers (each with its own QUIC connection).
    #[arg(long, default_value_t = 1)]
    pub(super) producers: usize,
    /// Requests each producer keeps in flight.
    #[arg(long, default_value_t = 4)]
    pub(super) in_flight: usize,
    #[arg(long, default_value_t = 4)]
    pub(super) shards: u32,
    #[arg(long, value_parser = crate::parse::durability(), default_value = "fsync")]
    pub(super) durability: Durability,
    /// Target records/s over QUIC (0 = as fast as possible); use it to
    /// measure latency below saturation.
    #[arg(long, default_value_t = 0)]
    pub(super) rate: u64,
    /// Skip the raw-storage baseline.
    #[arg(long)]
    pub(super) no_baseline: bool,
    /// Run the QUIC phase twice, the second time beside control-plane work
    /// (a plugin upload and a processor creation every second, `/metrics`
    /// every 100 ms), and print the ack p99 ratio.
    #[arg(long)]
    pub(super) churn: bool,
    /// Batches each connection sends, unmeasured, before the measured
    /// phase: a fresh QUIC connection's first megabytes wait for its
    /// congestion window to open (slow start), which is not the steady
    /// state an ack p99 should describe.
    #[arg(long, default_value_t = 20)]
    pub(super) warmup_batches: usize,
    /// The embedded server's `server_threads` (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(super) server_threads: usize,
}

#[derive(Args, Clone)]
pub struct ConsumeArgs {
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Records per GetRecords call.
    #[arg(long, default_value_t = 10_000)]
    limit: u32,
    /// The embedded server's `server_threads` (0: one per core).
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
}

impl ProduceArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.records == 0 || self.batch == 0 || self.producers == 0 || self.in_flight == 0 {
            bail!("--records, --batch, --producers and --in-flight must be positive");
        }
        Ok(())
    }

    /// What one run sends, for the line that opens its report.
    fn describe(&self) -> String {
        let paced = if self.rate > 0 {
            format!(", paced at {} records/s", self.rate)
        } else {
            String::new()
        };
        format!(
            "{} records of {} B, batches of {}, {} producer(s) x {} in flight, {} shards{paced}, after {} warm-up batches per connection",
            self.records,
            self.size,
            self.batch,
            self.producers,
            self.in_flight,
            self.shards,
            self.warmup_batches,
        )
    }
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Produce { args, connect } if connect.server.is_some() => {
            produce_against(&connect, args).await
        }
        BenchCommand::Produce { args, .. } => produce(args).await,
        BenchCommand::Consume(args) => consume(args).await,
        BenchCommand::Pipeline(args) => pipeline(args).await,
        BenchCommand::Backlog(args) => backlog::run(args).await,
        BenchCommand::Load(args) => load::run(args).await,
        BenchCommand::Kinesis(args) => kinesis::run(args).await,
        BenchCommand::Sink(args) => sink::run(args).await,
        BenchCommand::Plugin(args) => {
            tokio::task::spawn_blocking(move || plugin::run(args)).await?
        }
    }
}

pub(super) struct Embedded {
    pub server: ServerThread,
    pub client: Client,
    _dir: tempfile::TempDir,
}

pub(super) async fn embedded(
    durability: Durability,
    batch: usize,
    size: usize,
) -> anyhow::Result<Embedded> {
    embedded_with(durability, batch, size, |_| {}).await
}

pub(super) async fn embedded_with(
    durability: Durability,
    batch: usize,
    size: usize,
    configure: impl FnOnce(&mut ServerConfig),
) -> anyhow::Result<Embedded> {
    let dir = tempfile::Builder::new().prefix("weir-bench").tempdir()?;
    let mut config = ServerConfig::new(dir.path());
    config.listen = "127.0.0.1:0".parse()?;
    config.admin_listen = None;
    config.kinesis_listen = None;
    config.storage.durability = durability;
    configure(&mut config);
    config.limits.fit_batches(batch, size);
    let server = ServerThread::start(config)?;
    let mut client_config = crate::client_config(&server.access());
    client_config.frame_bytes_max = usize::MAX;
    let client = Client::connect(client_config).await?;
    Ok(Embedded {
        server,
        client,
        _dir: dir,
    })
}

impl Embedded {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.client.close().await;
        let server = self.server;
        tokio::task::spawn_blocking(move || server.shutdown()).await??;
        Ok(())
    }
}

/// Pre-built batches: keys spread over many partition keys, random data.
pub(super) fn make_batches(records: usize, size: usize, batch: usize) -> Vec<Vec<PutRecord>> {
    let data: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
    let data = Bytes::from(data);
    (0..records)
        .map(|i| PutRecord {
            partition_key: format!("user-{}", i % 100_003),
            explicit_hash_key: None,
            data: data.clone(),
        })
        .collect::<Vec<_>>()
        .chunks(batch.max(1))
        .map(<[PutRecord]>::to_vec)
        .collect()
}

pub(super) fn progress_bar(total: usize, label: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>10} {bar:40} {pos}/{len} records {per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_owned());
    bar
}

pub(super) struct Measured {
    pub records: usize,
    pub bytes: usize,
    pub elapsed: Duration,
    /// Per-request ack latency, microseconds.
    pub latencies_us: Vec<u64>,
}

impl Measured {
    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p` quantile of the ack latencies, in milliseconds.
    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies_us.sort_unstable();
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let index =
            ((self.latencies_us.len() as f64 * p) as usize).min(self.latencies_us.len() - 1);
        self.latencies_us[index] as f64 / 1000.0
    }

    pub fn report(&mut self, label: &str) {
        let (p50, p99, p999) = (
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.percentile_ms(0.999),
        );
        println!(
            "{label:<10} {:>10.0} records/s  {:>8.1} MB/s  ack p50 {p50:.2} ms  p99 {p99:.2} ms  p999 {p999:.2} ms  ({} records in {:.2} s)",
            self.records_per_sec(),
            self.bytes as f64 / self.elapsed.as_secs_f64() / 1e6,
            self.records,
            self.elapsed.as_secs_f64(),
        );
    }
}

/// Where the server's group commits spent their time: the disk's share of
/// an ack.
fn report_commits(commits: &weir::counters::CommitMetrics) {
    let mean_ms = |histogram: &weir::counters::Histogram| {
        histogram
            .mean()
            .map_or(0.0, |mean| mean.as_secs_f64() * 1000.0)
    };
    println!(
        "commits    {} group commits, mean {:.2} ms writing and syncing chunks, {:.2} ms committing their index",
        commits.segment_write.count(),
        mean_ms(&commits.segment_write),
        mean_ms(&commits.journal_commit),
    );
}

async fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    args.check()?;
    println!(
        "weir bench produce: {}, {}",
        args.describe(),
        args.durability.name()
    );
    let batches = make_batches(args.records, args.size, args.batch);

    // Each phase gets a fresh data directory, so one phase's background
    // compaction does not slow the next.
    let baseline = if args.no_baseline {
        None
    } else {
        let embedded = embedded(args.durability, args.batch, args.size).await?;
        embedded
            .client
            .create_stream("baseline", args.shards, Default::default())
            .await?;
        let mut measured = produce_raw(embedded.server.storage(), &batches, &args).await?;
        measured.report("raw");
        embedded.stop().await?;
        Some(measured.records_per_sec())
    };

    let embedded = embedded_with(args.durability, args.batch, args.size, |config| {
        config.server_threads = args.server_threads;
    })
    .await?;
    embedded
        .client
        .create_stream("bench", args.shards, Default::default())
        .await?;
    let clients = embedded.producers(args.producers).await?;
    let mut measured = produce_quic(&clients, "bench", batches.clone(), &args).await?;
    close_extra(&clients).await;
    measured.report("quic");
    report_commits(embedded.server.storage().commit_metrics());
    if let Some(baseline) = baseline {
        println!(
            "ratio      {:.2}x of the raw-storage baseline",
            measured.records_per_sec() / baseline
        );
    }
    embedded.stop().await?;
    if args.churn {
        let quiet_p99 = measured.percentile_ms(0.99);
        let mut churned = produce_beside_churn(batches, &args).await?;
        churned.report("churn");
        println!(
            "ack p99 beside control-plane work: {:.2}x of the quiet run",
            churned.percentile_ms(0.99) / quiet_p99
        );
    }
    Ok(())
}

/// The QUIC phase again, on a fresh server, while another client uploads
/// a plugin (a new component each time, so each is compiled) and creates a
/// processor every second and `/metrics` is scraped every 100 ms.
async fn produce_beside_churn(
    batches: Vec<Vec<PutRecord>>,
    args: &ProduceArgs,
) -> anyhow::Result<Measured> {
    let embedded = embedded_with(args.durability, args.batch, args.size, |config| {
        config.admin_listen = "127.0.0.1:0".parse().ok();
        config.server_threads = args.server_threads;
    })
    .await?;
    embedded
        .client
        .create_stream("bench", args.shards, Default::default())
        .await?;
    let admin = embedded
        .server
        .admin_addr()
        .context("the admin listener did not start")?;
    let component = match super::demo::DemoPlugins::embedded() {
        Some(plugins) => plugins.json_filter,
        None => std::fs::read(super::demo::example_plugins_dir(false)?.join("json_filter.wasm"))?,
    };
    let churn_client = Client::connect(crate::client_config(&embedded.server.access())).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let churn = tokio::spawn(control_plane_churn(churn_client, admin, component, stopped));
    let clients = embedded.producers(args.producers).await?;
    let measured = produce_quic(&clients, "bench", batches, args).await;
    close_extra(&clients).await;
    let _ = stop.send(true);
    let (uploads, scrapes) = churn.await.context("churn task")??;
    println!(
        "churn      {uploads} plugins uploaded and processors created, {scrapes} /metrics scrapes"
    );
    embedded.stop().await?;
    measured
}

async fn control_plane_churn(
    client: Client,
    admin: std::net::SocketAddr,
    component: Vec<u8>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(u64, u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client
        .create_stream("churn-source", 1, Default::default())
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let (mut uploads, mut scrapes) = (0, 0);
    while !*stop.borrow() {
        tick.tick().await;
        let mut metrics = tokio::net::TcpStream::connect(admin).await?;
        metrics.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
        let mut body = Vec::new();
        metrics.read_to_end(&mut body).await?;
        scrapes += 1;
        if scrapes % 10 == 0 {
            uploads += 1;
            let name = format!("churn-{uploads}");
            let unique = with_custom_section(&component, &name);
            client.add_plugin(&name, unique).await?;
            let settings = weir_client::admin::ProcessorSettings {
                name: name.clone(),
                plugin: name,
                source: "churn-source".into(),
                config: vec![
                    ("field".into(), "kind".into()),
                    ("op".into(), "equals".into()),
                    ("value".into(), "buy".into()),
                ],
                ..Default::default()
            };
            client
                .admin(weir_client::admin::AdminRequest::CreateProcessor(Box::new(
                    settings,
                )))
                .await?;
        }
    }
    Ok((uploads, scrapes))
}

/// `component` with a custom section named `name` appended: the same
/// plugin with another SHA-256, so the server compiles it afresh.
fn with_custom_section(component: &[u8], name: &str) -> Bytes {
    let mut bytes = component.to_vec();
    let mut payload = Vec::new();
    push_leb128(&mut payload, name.len());
    payload.extend_from_slice(name.as_bytes());
    bytes.push(0);
    push_leb128(&mut bytes, payload.len());
    bytes.extend_from_slice(&payload);
    bytes.into()
}

fn push_leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let low = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// The same appends straight into the storage layer: routing and group
/// commit included, QUIC and the codec not.
async fn produce_raw(
    storage: &Arc<Storage>,
    batches: &[Vec<PutRecord>],
    args: &ProduceArgs,
) -> anyhow::Result<Measured> {
    let stream = storage.stream("baseline")?;
    let routed: Vec<Vec<(usize, Vec<AppendRecord>)>> = batches
        .iter()
        .map(|batch| {
            let mut per_shard: Vec<Vec<AppendRecord>> = vec![Vec::new(); args.shards as usize];
            for record in batch {
                let shard = shard_for(&record.partition_key, None, args.shards);
                per_shard[shard as usize].push(AppendRecord {
                    partition_key: record.partition_key.clone(),
                    data: record.data.clone(),
                });
            }
            per_shard
                .into_iter()
                .enumerate()
                .filter(|(_, r)| !r.is_empty())
                .collect()
        })
        .collect();
    let bar = progress_bar(args.records, "raw");
    let concurrency = args.producers * args.in_flight;
    let queue = Arc::new(std::sync::Mutex::new(routed.into_iter()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let storage = storage.clone();
        let stream = stream.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(batch) = next else { break };
                let appends = batch
                    .into_iter()
                    .map(|(shard, records)| (stream.shards[shard].clone(), records))
                    .collect::<Vec<_>>();
                let sent = Instant::now();
                let mut count = 0u64;
                for outcome in storage.append(None, appends).await {
                    count += u64::from(outcome?.count);
                }
                latencies.push(sent.elapsed().as_micros() as u64);
                bar.inc(count);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies_us = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies_us.extend(result??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Measured {
        records: args.records,
        bytes: args.records * args.size,
        elapsed,
        latencies_us,
    })
}

/// The QUIC phase on its own: `weir bench produce --server ADDR` against a
/// running `weir serve`, so the server's figure is measured with the client
/// in another process. A stream is created for the run and deleted after.
async fn produce_against(connect: &super::ConnectArgs, args: ProduceArgs) -> anyhow::Result<()> {
    args.check()?;
    let mut clients = Vec::with_capacity(args.producers);
    for _ in 0..args.producers {
        clients.push(connect.connect().await?);
    }
    let stream = format!("bench-{}", std::process::id());
    clients[0]
        .create_stream(&stream, args.shards, Default::default())
        .await
        .context("creating the benchmark's stream")?;
    println!(
        "weir bench produce --server {}: {}, stream {stream} (the server's durability)",
        connect.address(),
        args.describe()
    );
    let batches = make_batches(args.records, args.size, args.batch);
    let measured = produce_quic(&clients, &stream, batches, &args).await;
    if let Err(error) = clients[0].delete_stream(&stream).await {
        eprintln!("could not delete the benchmark's stream {stream}: {error}");
    }
    for client in &clients {
        client.close().await;
    }
    measured?.report("quic");
    Ok(())
}

impl Embedded {
    /// The embedded client and `count - 1` more connections.
    pub async fn producers(&self, count: usize) -> anyhow::Result<Vec<Client>> {
        let mut clients = vec![self.client.clone()];
        for _ in 1..count {
            let mut config = crate::client_config(&self.server.access());
            config.frame_bytes_max = usize::MAX;
            clients.push(Client::connect(config).await?);
        }
        Ok(clients)
    }
}

/// Closes the connections [`Embedded::producers`] opened besides its own.
pub(super) async fn close_extra(clients: &[Client]) {
    for client in clients.iter().skip(1) {
        client.close().await;
    }
}

/// Sends `batches` to `stream`, `args.in_flight` requests at a time from
/// each client, and measures throughput and ack latency.
pub(super) async fn produce_quic(
    clients: &[Client],
    stream: &str,
    batches: Vec<Vec<PutRecord>>,
    args: &ProduceArgs,
) -> anyhow::Result<Measured> {
    warm_up(clients, stream, &batches, args).await?;
    let bar = progress_bar(args.records, "quic");
    let batch_count = batches.len();
    let queue = Arc::new(std::sync::Mutex::new(batches.into_iter().enumerate()));
    // With --rate, batch i may not be sent before start + i * interval.
    let interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.batch as f64 / args.rate as f64));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (producer, client) in clients.iter().enumerate() {
        for lane in 0..args.in_flight {
            let queue = queue.clone();
            let client = client.clone();
            let bar = bar.clone();
            let stream = stream.to_owned();
            tasks.spawn(async move {
                let producer_id = (producer * 1000 + lane) as u64 + 1;
                let mut latencies = Vec::new();
                let mut batch_sequence = 0;
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                    let Some((index, records)) = next else { break };
                    if let Some(interval) = interval {
                        tokio::time::sleep_until((started + interval * index as u32).into()).await;
                    }
                    let stamp = ProducerStamp {
                        producer_id,
                        batch_sequence,
                    };
                    batch_sequence += 1;
                    let count = records.len() as u64;
                    let sent = Instant::now();
                    let results = client.put_records(&stream, Some(stamp), records).await?;
                    latencies.push(sent.elapsed().as_micros() as u64);
                    if let Some(PutResult::Failed { code, message }) = results
                        .iter()
                        .find(|r| matches!(r, PutResult::Failed { .. }))
                    {
                        bail!("record failed: {}: {message}", code.name());
                    }
                    bar.inc(count);
                }
                anyhow::Ok(latencies)
            });
        }
    }
    let mut latencies_us = Vec::with_capacity(batch_count);
    while let Some(result) = tasks.join_next().await {
        latencies_us.extend(result.context("producer task")??);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok(Measured {
        records: args.records,
        bytes: args.records * args.size,
        elapsed,
        latencies_us,
    })
}

/// Sends `args.warmup_batches` of `batches` on each connection, unstamped
/// (so the measured phase's producer stamps start fresh), `args.in_flight`
/// at a time, and waits for their acks.
async fn warm_up(
    clients: &[Client],
    stream: &str,
    batches: &[Vec<PutRecord>],
    args: &ProduceArgs,
) -> anyhow::Result<()> {
    let mut sends = tokio::task::JoinSet::new();
    for client in clients {
        for lane in 0..args.in_flight {
            let warmup: Vec<Vec<PutRecord>> = batches
                .iter()
                .cycle()
                .skip(lane)
                .step_by(args.in_flight)
                .take(args.warmup_batches.div_ceil(args.in_flight))
                .cloned()
                .collect();
            let (client, stream) = (client.clone(), stream.to_owned());
            sends.spawn(async move {
                for records in warmup {
                    client.put_records(&stream, None, records).await?;
                }
                anyhow::Ok(())
            });
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent.context("warm-up task")??;
    }
    Ok(())
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let embedded = embedded_with(Durability::Buffered, 1000, args.size, |config| {
        config.server_threads = args.server_threads;
    })
    .await?;
    let client = &embedded.client;
    client
        .create_stream("bench", args.shards, Default::default())
        .await?;
    println!(
        "weir bench consume: {} records of {} B in {} shards, GetRecords limit {}",
        args.records, args.size, args.shards, args.limit
    );
    let producer = client.producer(
        "bench",
        weir_client::ProducerConfig {
            batch_records_max: 1000,
            batch_bytes_max: 8 << 20,
            ..Default::default()
        },
    );
    let data = Bytes::from(vec![b'x'; args.size]);
    let load = progress_bar(args.records, "load");
    for i in 0..args.records {
        // Acks are not awaited one by one: flush below waits for them all.
        drop(producer.send(format!("user-{i}"), data.clone()).await?);
        load.inc(1);
    }
    producer.flush().await?;
    load.finish_and_clear();

    // As one consumer polling one shard after another (the shape of a
    // single-partition consumer), then as Kinesis consumers read (KCL: one
    // worker, one request in flight, per shard).
    let started = Instant::now();
    let mut shards_read = Vec::new();
    for shard in 0..args.shards {
        shards_read.push(get_shard(client, shard, args.limit).await?);
    }
    report_get("get", args.records, &shards_read, started.elapsed())?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..args.shards {
        let (client, limit) = (client.clone(), args.limit);
        tasks.spawn(async move { get_shard(&client, shard, limit).await });
    }
    let mut shards_read = Vec::new();
    while let Some(result) = tasks.join_next().await {
        shards_read.push(result??);
    }
    report_get("get-par", args.records, &shards_read, started.elapsed())?;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in 0..args.shards {
        let client = client.clone();
        tasks.spawn(async move {
            let expected =
                client.describe_stream("bench").await?.shards[shard as usize].records as usize;
            let mut subscription = client
                .subscribe("bench", shard, Position::TrimHorizon)
                .await?;
            let mut seen = 0;
            while seen < expected {
                seen += subscription.next().await?.records.len();
            }
            anyhow::Ok(seen)
        });
    }
    let mut subscribed = 0;
    while let Some(result) = tasks.join_next().await {
        subscribed += result??;
    }
    let elapsed = started.elapsed();
    println!(
        "subscribe  {:>10.0} records/s  {:>8.1} MB/s",
        subscribed as f64 / elapsed.as_secs_f64(),
        (subscribed * args.size) as f64 / elapsed.as_secs_f64() / 1e6
    );
    embedded.stop().await
}

/// Reads a shard from the trim horizon to the tip with GetRecords pages:
/// (records, data bytes).
async fn get_shard(client: &Client, shard: u32, limit: u32) -> anyhow::Result<(usize, usize)> {
    let (mut records, mut bytes) = (0, 0);
    let mut from = Position::TrimHorizon;
    loop {
        let batch = client.get_records("bench", shard, from, limit).await?;
        records += batch.records.len();
        bytes += batch.records.iter().map(|r| r.data.len()).sum::<usize>();
        if batch.records_behind_tip == 0 {
            return Ok((records, bytes));
        }
        from = Position::AtSequence(batch.next_sequence);
    }
}

/// Prints a GetRecords phase's rate from each shard's (records, bytes).
fn report_get(
    label: &str,
    expected: usize,
    shards_read: &[(usize, usize)],
    elapsed: Duration,
) -> anyhow::Result<()> {
    let records: usize = shards_read.iter().map(|(records, _)| records).sum();
    let bytes: usize = shards_read.iter().map(|(_, bytes)| bytes).sum();
    if records != expected {
        bail!("read {records} records, expected {expected}");
    }
    println!(
        "{label:<10} {:>10.0} records/s  {:>8.1} MB/s",
        records as f64 / elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
    Ok(())
}

fn micros_since(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

/// Creates processor `bench`: plugin `bench` from stream `in` to `out`.
pub(super) async fn create_bench_processor(
    client: &Client,
    config: &[(String, String)],
) -> anyhow::Result<()> {
    let settings = weir_client::admin::ProcessorSettings {
        name: "bench".into(),
        plugin: "bench".into(),
        source: "in".into(),
        output: Some("out".into()),
        config: config.to_vec(),
        ..Default::default()
    };
    client
        .admin(weir_client::admin::AdminRequest::CreateProcessor(Box::new(
            settings,
        )))
        .await?;
    Ok(())
}

/// Produces records stamped with their send time, runs them through a
/// processor, and measures when each becomes visible in the output stream.
async fn pipeline(args: PipelineArgs) -> anyhow::Result<()> {
    let component = std::fs::read(&args.plugin)
        .with_context(|| format!("reading {}", args.plugin.display()))?;
    let embedded = embedded(Durability::Fsync, 1000, 1024).await?;
    let client = &embedded.client;
    client
        .create_stream("in", args.shards, Default::default())
        .await?;
    client.add_plugin("bench", component.into()).await?;
    create_bench_processor(client, &args.config).await?;
    println!(
        "weir bench pipeline: {} records at {} records/s through {} into {} shards (fsync)",
        args.records,
        args.rate,
        args.plugin.display(),
        args.shards
    );

    let origin = Instant::now();
    let (latency_tx, mut latency_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    for shard in 0..args.shards {
        let mut subscription = client
            .subscribe("out", shard, Position::TrimHorizon)
            .await?;
        let latency_tx = latency_tx.clone();
        tokio::spawn(async move {
            while let Ok(batch) = subscription.next().await {
                let now = micros_since(origin);
                for record in batch.records {
                    let text = String::from_utf8_lossy(&record.data);
                    let sent = text
                        .strip_prefix("{\"t\":")
                        .and_then(|rest| rest.split(',').next())
                        .and_then(|t| t.parse::<u64>().ok());
                    if let Some(sent) = sent
                        && latency_tx.send(now.saturating_sub(sent)).is_err()
                    {
                        return;
                    }
                }
            }
        });
    }
    drop(latency_tx);

    let producer = client.producer(
        "in",
        weir_client::ProducerConfig {
            linger: Duration::from_millis(1),
            ..Default::default()
        },
    );
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let bar = progress_bar(args.records, "pipeline");
    for i in 0..args.records {
        tokio::time::sleep_until((origin + interval * i as u32).into()).await;
        let data = format!(
            r#"{{"t":{},"i":{i},"campaign":"c{}"}}"#,
            micros_since(origin),
            i % 7
        );
        drop(
            producer
                .send(format!("user-{}", i % 1000), data.into_bytes())
                .await?,
        );
        bar.inc(1);
    }
    producer.flush().await?;
    bar.finish_and_clear();

    let mut latencies = Vec::with_capacity(args.records);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latencies.len() < args.records {
        match tokio::time::timeout_at(deadline, latency_rx.recv()).await {
            Ok(Some(latency)) => latencies.push(latency),
            _ => break,
        }
    }
    if latencies.len() < args.records {
        bail!(
            "only {} of {} records reached the output (does the plugin pass them?)",
            latencies.len(),
            args.records
        );
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    println!(
        "produce -> output visible: p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    embedded.stop().await
}
