//! `weir bench kinesis`: PutRecords and GetRecords through the Kinesis
//! HTTP API against the QUIC path of the same build, in one run, and
//! optionally the same load against another Kinesis-compatible endpoint
//! (kinesalite, say).
//!
//! The load generator is not boto3: every PutRecords request (JSON body,
//! base64 data, SigV4 signature) is built before the clock starts, and
//! each connection is a plain HTTP/1.1 keep-alive socket that writes the
//! prepared bytes and reads the answer.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;

use super::{Measured, ProduceArgs, embedded_with, make_batches, produce_quic};
use weir::aws::client::{Connection, Target};
use weir::config::Durability;
use weir::storage::now_ms;

#[derive(Args, Clone)]
pub struct KinesisArgs {
    /// Records to send per phase.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Data bytes per record.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Records per PutRecords request (Kinesis allows 500).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// HTTP connections, each with one request in flight (and as many
    /// QUIC requests in flight on the QUIC side).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    #[arg(long, value_parser = crate::parse::durability(), default_value = "fsync")]
    durability: Durability,
    /// Also run the HTTP load against this Kinesis-compatible endpoint
    /// (e.g. http://127.0.0.1:4568 for kinesalite) and print the ratio.
    #[arg(long)]
    endpoint: Option<String>,
    /// Credentials for --endpoint.
    #[arg(long, default_value = "weir-bench")]
    access_key: String,
    #[arg(long, default_value = "weir-bench")]
    secret_key: String,
}

pub async fn run(args: KinesisArgs) -> anyhow::Result<()> {
    if args.records == 0 || args.batch == 0 || args.connections == 0 {
        bail!("--records, --batch and --connections must be positive");
    }
    println!(
        "weir bench kinesis: {} records of {} B, PutRecords of {}, {} connection(s), {} shards, {:?}",
        args.records, args.size, args.batch, args.connections, args.shards, args.durability
    );
    let batches = make_batches(args.records, args.size, args.batch);

    // QUIC first, on its own server and data directory.
    let produce = ProduceArgs {
        records: args.records,
        size: args.size,
        batch: args.batch,
        producers: 1,
        in_flight: args.connections,
        shards: args.shards,
        durability: args.durability,
        rate: 0,
        no_baseline: true,
        churn: false,
        // Throughput beside the HTTP path, which is not warmed up either.
        warmup_batches: 0,
        server_threads: 0,
    };
    let quic_server = embedded_with(args.durability, args.batch, args.size, |_| {}).await?;
    quic_server
        .client
        .create_stream("bench", args.shards, Default::default())
        .await?;
    let clients = quic_server.producers(1).await?;
    let mut quic = produce_quic(&clients, "bench", batches.clone(), &produce).await?;
    quic.report("quic put");
    quic_server.stop().await?;

    // Then the Kinesis API on a fresh server.
    let server = embedded_with(args.durability, args.batch, args.size, |config| {
        config.kinesis_listen = "127.0.0.1:0".parse().ok();
    })
    .await?;
    let secret = server
        .server
        .access()
        .admin_token
        .context("the embedded server has no admin token")?;
    let target = Target::plain(
        server
            .server
            .kinesis_addr()
            .context("the Kinesis listener did not start")?,
        weir::auth::FIRST_ADMIN_TOKEN_NAME.to_owned(),
        weir::auth::sigv4_secret(&secret),
        "us-east-1",
    );
    let mut http = put_over_http(&target, "bench", &batches, &args).await?;
    http.report("http put");
    println!(
        "ratio      HTTP PutRecords {:.2}x of QUIC",
        http.records_per_sec() / quic.records_per_sec()
    );

    // Reads of the same records, both ways, on the same server.
    let started = Instant::now();
    let mut quic_bytes = 0usize;
    for shard in 0..args.shards {
        let mut from = weir_client::Position::TrimHorizon;
        loop {
            let batch = server
                .client
                .get_records("bench", shard, from, 10_000)
                .await?;
            quic_bytes += batch.records.iter().map(|r| r.data.len()).sum::<usize>();
            if batch.records_behind_tip == 0 {
                break;
            }
            from = weir_client::Position::AtSequence(batch.next_sequence);
        }
    }
    let quic_read = quic_bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    let started = Instant::now();
    let (records, http_bytes) = get_over_http(&target, args.shards).await?;
    let http_read = http_bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    if records != args.records {
        bail!(
            "GetRecords read {records} records, {} were put",
            args.records
        );
    }
    println!("quic get   {quic_read:>8.1} MB/s");
    println!(
        "http get   {http_read:>8.1} MB/s   ratio {:.2}x of QUIC",
        http_read / quic_read
    );
    server.stop().await?;

    if let Some(endpoint) = &args.endpoint {
        let addr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("--endpoint {endpoint:?} is not http://IP:PORT"))?;
        let other = Target::plain(
            addr,
            args.access_key.clone(),
            args.secret_key.clone(),
            "us-east-1",
        );
        // A stream of its own: the endpoint may still hold an earlier run's.
        let stream = format!("weir-bench-{}", now_ms());
        let mut measured = put_over_http(&other, &stream, &batches, &args).await?;
        measured.report("endpoint");
        println!(
            "ratio      Weir's HTTP PutRecords {:.1}x of {endpoint}",
            http.records_per_sec() / measured.records_per_sec()
        );
    }
    Ok(())
}

/// Creates the stream, waits for it, then sends every batch as one
/// prepared PutRecords request.
async fn put_over_http(
    target: &Target,
    stream: &str,
    batches: &[Vec<weir_client::PutRecord>],
    args: &KinesisArgs,
) -> anyhow::Result<Measured> {
    let mut connection = Connection::open(target).await?;
    let create = serde_json::json!({"StreamName": stream, "ShardCount": args.shards});
    let (status, body) = connection.call("CreateStream", &create.to_string()).await?;
    if status != 200 {
        bail!("CreateStream: {status} {}", String::from_utf8_lossy(&body));
    }
    // Emulators create streams asynchronously: wait until ACTIVE.
    let describe = serde_json::json!({"StreamName": stream}).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = connection.call("DescribeStreamSummary", &describe).await?;
        if status == 200 && String::from_utf8_lossy(&body).contains("\"ACTIVE\"") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the stream did not become ACTIVE within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let requests: Vec<Vec<u8>> = batches
        .iter()
        .map(|batch| {
            let records: Vec<serde_json::Value> = batch
                .iter()
                .map(|r| serde_json::json!({"Data": BASE64.encode(&r.data), "PartitionKey": r.partition_key}))
                .collect();
            let body = serde_json::json!({"StreamName": stream, "Records": records}).to_string();
            Ok(target.request("PutRecords", &body)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let queue = std::sync::Arc::new(std::sync::Mutex::new(requests.into_iter()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let (queue, target) = (queue.clone(), target.clone());
        tasks.spawn(async move {
            let mut connection = Connection::open(&target).await?;
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some(request) = next else { break };
                let sent = Instant::now();
                let (status, body) = connection.send(&request).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                let answer: serde_json::Value = serde_json::from_slice(&body)
                    .with_context(|| format!("PutRecords answered {status}"))?;
                if status != 200 || answer["FailedRecordCount"] != 0 {
                    bail!("PutRecords: {status} {answer}");
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies_us.extend(done??);
    }
    Ok(Measured {
        records: args.records,
        bytes: args.records * args.size,
        elapsed: started.elapsed(),
        latencies_us,
    })
}

/// Reads every shard from the trim horizon with GetRecords (limit 10 000);
/// the records and data bytes read.
async fn get_over_http(target: &Target, shards: u32) -> anyhow::Result<(usize, usize)> {
    let mut connection = Connection::open(target).await?;
    let (mut records, mut bytes) = (0, 0);
    for shard in 0..shards {
        let request = serde_json::json!({
            "StreamName": "bench",
            "ShardId": weir::kinesis::shard_id(shard),
            "ShardIteratorType": "TRIM_HORIZON",
        });
        let (_, body) = connection
            .call("GetShardIterator", &request.to_string())
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&body)?;
        let mut iterator = answer["ShardIterator"]
            .as_str()
            .context("GetShardIterator answered without an iterator")?
            .to_owned();
        loop {
            let request = serde_json::json!({"ShardIterator": iterator, "Limit": 10_000});
            let (status, body) = connection.call("GetRecords", &request.to_string()).await?;
            // Parsed without building a tree or decoding the data (the
            // length of base64 text gives the data's): the load generator
            // shares the machine with the server.
            let page: RecordsPage<'_> = serde_json::from_slice(&body).with_context(|| {
                format!(
                    "GetRecords answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )
            })?;
            if page.records.is_empty() {
                break;
            }
            records += page.records.len();
            bytes += page
                .records
                .iter()
                .map(|r| base64_decoded_len(r.data))
                .sum::<usize>();
            iterator = page.next_shard_iterator;
        }
    }
    Ok((records, bytes))
}

#[derive(serde::Deserialize)]
struct RecordsPage<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RecordData<'a>>,
    #[serde(rename = "NextShardIterator")]
    next_shard_iterator: String,
}

#[derive(serde::Deserialize)]
struct RecordData<'a> {
    #[serde(rename = "Data", borrow)]
    data: &'a str,
}

fn base64_decoded_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    text.len() / 4 * 3 - padding
}
