//! `weir bench sink`: forwarding a stored backlog to NATS JetStream beside
//! publishing the same records straight to JetStream with the same client
//! library (async-nats) from memory, in one run — once as the very
//! messages the sink sends (its headers, `Nats-Msg-Id` among them) and
//! once as bare payloads; and put ack latency while the sink drains,
//! beside the same probe with the sink idle and while the bare direct
//! publisher loads the cluster.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use weir_client::admin::{AdminRequest, AdminResponse, SinkSettings, SinkShardProgress};
use weir_client::{Client, PutRecord, PutResult, Record};
use weir_proto::routing::shard_for;

use weir::config::Durability;
use weir::sink::nats_bench;

/// The JetStream stream the benchmark creates (and removes at the end).
const JETSTREAM_STREAM: &str = "WEIRBENCH";

#[derive(Args, Clone)]
pub struct SinkArgs {
    /// A running NATS JetStream: HOST:PORT[,HOST:PORT…]. The benchmark
    /// creates stream WEIRBENCH over `weirbench.>` there and removes it.
    #[arg(long)]
    nats: String,
    /// Replicas of that stream (3 on a 3-node cluster).
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Data bytes per record.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Acks the direct publisher keeps outstanding per subject.
    #[arg(long, default_value_t = 1000)]
    window: usize,
    /// Create the stream without `allow_batched`, so the sink sends atomic
    /// batches instead of fast-ingest ones.
    #[arg(long)]
    atomic: bool,
}

pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let servers: Vec<String> = args
        .nats
        .split(',')
        .map(|host| format!("nats://{host}"))
        .collect();
    nats_bench::recreate_stream(
        &servers,
        JETSTREAM_STREAM,
        "weirbench.>",
        args.replicas,
        !args.atomic,
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating JetStream stream {JETSTREAM_STREAM}: {e}"))?;
    let embedded = super::embedded(Durability::Fsync, 1000, args.size).await?;
    let client = &embedded.client;
    client
        .create_stream("bench", args.shards, Default::default())
        .await?;
    client.create_stream("probe", 1, Default::default()).await?;
    println!(
        "weir bench sink: {} records of {} B in {} shards to JetStream (R{}, {} batches) at {}",
        args.records,
        args.size,
        args.shards,
        args.replicas,
        if args.atomic { "atomic" } else { "fast-ingest" },
        args.nats
    );

    let batches = super::make_batches(args.records, args.size, 1000);
    let mut per_shard: Vec<Vec<Record>> = vec![Vec::new(); args.shards as usize];
    for record in batches.iter().flatten() {
        let shard = &mut per_shard[shard_for(&record.partition_key, None, args.shards) as usize];
        shard.push(Record {
            sequence: shard.len() as u64,
            timestamp_ms: weir::storage::now_ms(),
            partition_key: record.partition_key.clone(),
            data: record.data.clone(),
        });
    }
    let bar = super::progress_bar(args.records, "storing");
    for batch in batches {
        let stored = batch.len();
        let results = client.put_records("bench", None, batch).await?;
        if let Some(failed) = results
            .iter()
            .find(|r| matches!(r, PutResult::Failed { .. }))
        {
            bail!("storing the backlog failed: {failed:?}");
        }
        bar.inc(stored as u64);
    }
    bar.finish_and_clear();

    let bytes = (args.records * args.size) as f64;
    let window = args.window.max(1);
    let direct_with_headers = nats_bench::publish_direct(
        &servers,
        "weirbench.headers",
        per_shard.clone(),
        window,
        true,
    )
    .await
    .map_err(|e| anyhow::anyhow!("publishing directly: {e}"))?;
    report(
        "direct, sink's headers",
        args.records,
        bytes,
        direct_with_headers,
    );
    // The same put probe while JetStream ingests without any sink: what
    // the cluster's own load on these cores and this disk costs Weir's puts.
    let publishing = tokio::spawn({
        let servers = servers.clone();
        async move {
            nats_bench::publish_direct(&servers, "weirbench.direct", per_shard, window, false).await
        }
    });
    let (beside_direct, _) = probe(client, Duration::from_secs(600), || async {
        publishing.is_finished()
    })
    .await?;
    let direct = publishing
        .await?
        .map_err(|e| anyhow::anyhow!("publishing directly: {e}"))?;
    report("direct", args.records, bytes, direct);

    let (idle, _) = probe(client, Duration::from_secs(3), || async { false }).await?;

    let settings = SinkSettings {
        name: "bench".into(),
        source: "bench".into(),
        to: format!("nats://{}/weirbench.sink", args.nats),
        ..Default::default()
    };
    let started = Instant::now();
    client
        .admin(AdminRequest::CreateSink(Box::new(settings)))
        .await?;
    let total = args.records as u64;
    let (draining, drained) = probe(client, Duration::from_secs(600), || async {
        progress(client)
            .await
            .is_ok_and(|shards| shards.iter().map(|s| s.cursor).sum::<u64>() >= total)
    })
    .await?;
    if !drained {
        bail!("the sink did not forward the backlog within 10 minutes");
    }
    let forwarded = started.elapsed();
    let shards = progress(client).await?;
    if let Some(stuck) = shards.iter().find(|s| s.last_error.is_some()) {
        println!("  (a shard reported: {:?})", stuck.last_error);
    }
    report("sink", args.records, bytes, forwarded);
    println!(
        "sink / direct {:.2}; sink / direct with the sink's headers {:.2}",
        direct.as_secs_f64() / forwarded.as_secs_f64(),
        direct_with_headers.as_secs_f64() / forwarded.as_secs_f64()
    );
    println!(
        "put ack, 100-record batches every 50 ms: sink idle p50 {:.2} ms p99 {:.2} ms; \
         beside direct publishing (no sink) p50 {:.2} ms p99 {:.2} ms; \
         sink draining p50 {:.2} ms p99 {:.2} ms",
        percentile_ms(&idle, 0.5),
        percentile_ms(&idle, 0.99),
        percentile_ms(&beside_direct, 0.5),
        percentile_ms(&beside_direct, 0.99),
        percentile_ms(&draining, 0.5),
        percentile_ms(&draining, 0.99),
    );
    embedded.stop().await?;
    nats_bench::delete_stream(&servers, JETSTREAM_STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("removing {JETSTREAM_STREAM}: {e}"))?;
    Ok(())
}

fn report(label: &str, records: usize, bytes: f64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{label:<24} {:>10.0} records/s {:>8.1} MB/s  ({records} records in {seconds:.2} s)",
        records as f64 / seconds,
        bytes / seconds / 1e6,
    );
}

/// Puts 100 small records to `probe` every 50 ms until `done` or
/// `timeout`: the ack latencies in microseconds, and whether `done` came.
async fn probe<F, Fut>(
    client: &Client,
    timeout: Duration,
    mut done: F,
) -> anyhow::Result<(Vec<u64>, bool)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while Instant::now() < deadline {
        tick.tick().await;
        if done().await {
            return Ok((latencies, true));
        }
        let records = (0..100)
            .map(|i| PutRecord {
                partition_key: format!("p{i}"),
                explicit_hash_key: None,
                data: Bytes::from_static(b"{\"probe\":true}"),
            })
            .collect();
        let sent = Instant::now();
        client.put_records("probe", None, records).await?;
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    Ok((latencies, false))
}

fn percentile_ms(latencies_us: &[u64], p: f64) -> f64 {
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    sorted[((last as f64) * p).round() as usize] as f64 / 1000.0
}

async fn progress(client: &Client) -> anyhow::Result<Vec<SinkShardProgress>> {
    match client
        .admin(AdminRequest::DescribeSink {
            name: "bench".into(),
        })
        .await
        .context("describing the sink")?
    {
        AdminResponse::Sink(info) => Ok(info.shards),
        other => Err(crate::unexpected(&other)),
    }
}
