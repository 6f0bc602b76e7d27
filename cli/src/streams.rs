//! Streams and their records: `weir stream create|list|describe|delete`,
//! `put`, `get` and `tail`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use weir_client::{
    Client, ClientError, PendingAck, Position, ProducerConfig, Record, Retention, ShardBatch,
    StreamSubscription,
};

use super::{ConnectArgs, DescribeArgs, ListArgs, NameArgs, OutputArgs, parse, show};

#[derive(Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// Remove records older than this (e.g. 24h, 7d).
        #[arg(long, value_parser = parse::duration_ms)]
        retention_age: Option<u64>,
        /// Keep at most this many record bytes (e.g. 10GiB).
        #[arg(long, value_parser = parse::bytes)]
        retention_bytes: Option<u64>,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List streams.
    List(ListArgs),
    /// Show a stream's shards: hash-key ranges, sequence numbers, sizes.
    Describe(DescribeArgs),
    /// Delete a stream and all its records.
    #[command(visible_alias = "rm")]
    Delete(NameArgs),
}

#[derive(Args)]
pub struct PutArgs {
    stream: String,
    /// The record's data (omit with --file).
    data: Option<String>,
    /// Partition key (with --file: the same key for every line).
    #[arg(long)]
    key: Option<String>,
    /// One record per line of this file (`-`: standard input).
    #[arg(long, conflicts_with = "data")]
    file: Option<PathBuf>,
    /// With --file: take each line's partition key from this JSON field.
    #[arg(long, requires = "file", conflicts_with = "key")]
    key_field: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
pub struct GetArgs {
    stream: String,
    #[arg(long)]
    shard: u32,
    /// trim-horizon, latest, at:SEQ, after:SEQ, time:MILLIS.
    #[arg(long, value_parser = parse::position, default_value = "trim-horizon")]
    from: Position,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
pub struct TailArgs {
    stream: String,
    /// trim-horizon, latest, at:SEQ, after:SEQ, time:MILLIS.
    #[arg(long, value_parser = parse::position, default_value = "latest")]
    from: Position,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn stream(command: StreamCommand) -> anyhow::Result<()> {
    match command {
        StreamCommand::Create {
            name,
            shards,
            retention_age,
            retention_bytes,
            connect,
        } => {
            let client = connect.connect().await?;
            let retention = Retention {
                age_ms: retention_age,
                bytes: retention_bytes,
            };
            client.create_stream(&name, shards, retention).await?;
            println!("created stream {name} with {shards} shard(s)");
        }
        StreamCommand::List(ListArgs { output, connect }) => {
            let names = connect.connect().await?.list_streams().await?;
            if !output.json(&names)? {
                names.iter().for_each(|name| println!("{name}"));
            }
        }
        StreamCommand::Describe(DescribeArgs {
            name,
            output,
            connect,
        }) => {
            let description = connect.connect().await?.describe_stream(&name).await?;
            if output.json(&description)? {
                return Ok(());
            }
            let limit = |value: Option<u64>, show: fn(u64) -> String| {
                value.map_or("unlimited".to_owned(), show)
            };
            println!("stream     {}", description.name);
            if description.created_ms > 0 {
                println!(
                    "created    {} ago",
                    show::duration_ms(
                        weir::storage::now_ms().saturating_sub(description.created_ms)
                    )
                );
            }
            println!(
                "retention  age: {}, size: {}",
                limit(description.retention.age_ms, show::duration_ms),
                limit(description.retention.bytes, show::bytes)
            );
            println!(
                "{:>5}  {:>34}  {:>34}  {:>12}  {:>12}  {:>10}  {:>12}",
                "shard",
                "hash key start",
                "hash key end",
                "first seq",
                "last seq",
                "records",
                "size"
            );
            for shard in description.shards {
                let seq = |s: Option<u64>| s.map_or("-".to_owned(), |s| s.to_string());
                println!(
                    "{:>5}  {:>34}  {:>34}  {:>12}  {:>12}  {:>10}  {:>12}",
                    shard.shard,
                    format!("{:#x}", shard.hash_key_start),
                    format!("{:#x}", shard.hash_key_end),
                    seq(shard.first_sequence),
                    seq(shard.last_sequence),
                    shard.records,
                    show::bytes(shard.bytes)
                );
            }
        }
        StreamCommand::Delete(NameArgs { name, connect }) => {
            connect.connect().await?.delete_stream(&name).await?;
            println!("deleted stream {name}");
        }
    }
    Ok(())
}

pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    match (&args.data, &args.file) {
        (Some(data), None) => {
            let key = args.key.clone().context("--key is required with DATA")?;
            let results = client
                .put_records(
                    &args.stream,
                    None,
                    vec![weir_client::PutRecord {
                        partition_key: key,
                        explicit_hash_key: None,
                        data: data.clone().into_bytes().into(),
                    }],
                )
                .await?;
            match results.into_iter().next() {
                Some(weir_client::PutResult::Stored {
                    shard, sequence, ..
                }) => {
                    println!("shard {shard} sequence {sequence}");
                }
                Some(weir_client::PutResult::Failed { code, message }) => {
                    bail!("{}: {message}", code.name())
                }
                None => bail!("the server returned no result"),
            }
        }
        (None, Some(file)) => put_file(&client, &args, file).await?,
        _ => bail!("give DATA or --file FILE"),
    }
    client.close().await;
    Ok(())
}

/// Records `put --file` has sent whose answers it has not counted yet;
/// reading waits while this many are outstanding.
const PUT_ACKS_WAITING_MAX: usize = 10_000;

async fn put_file(client: &Client, args: &PutArgs, file: &Path) -> anyhow::Result<()> {
    // Said before the first line, which a pipe may take long to bring.
    if args.key.is_none() && args.key_field.is_none() {
        bail!("give --key KEY or --key-field FIELD with --file");
    }
    let from_stdin = file == Path::new("-");
    let name = if from_stdin {
        "standard input".to_owned()
    } else {
        file.display().to_string()
    };
    // Read asynchronously: a pipe may pause for minutes between lines,
    // and the producer must send what it has meanwhile.
    let (reader, bytes_total): (Box<dyn AsyncBufRead + Unpin + Send>, Option<u64>) = if from_stdin {
        (
            Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
            None,
        )
    } else {
        let opened = tokio::fs::File::open(file)
            .await
            .with_context(|| format!("opening {name}"))?;
        let length = opened
            .metadata()
            .await
            .with_context(|| format!("reading {name}"))?
            .len();
        (Box::new(tokio::io::BufReader::new(opened)), Some(length))
    };
    // Progress only for a person watching (indicatif draws on stderr);
    // the summary below is printed either way, for scripts too. Standard
    // input has no known length, so it counts bytes without a bar.
    let progress = match bytes_total {
        _ if !std::io::stderr().is_terminal() => indicatif::ProgressBar::hidden(),
        Some(total) => indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    let producer = client.producer(&args.stream, ProducerConfig::default());
    // Answers are tallied in order as they come, on a task of their own: a
    // failure shows at once (a pipe may stay open for hours), and the
    // channel's bound keeps memory bounded on big files.
    let (acks, mut answers) = tokio::sync::mpsc::channel::<PendingAck>(PUT_ACKS_WAITING_MAX);
    let tally = tokio::spawn({
        let progress = progress.clone();
        async move {
            let (mut stored, mut failed) = (0u64, 0u64);
            while let Some(ack) = answers.recv().await {
                match ack.await {
                    Ok(_) => stored += 1,
                    Err(error) => {
                        failed += 1;
                        progress.suspend(|| eprintln!("record failed: {error}"));
                    }
                }
            }
            (stored, failed)
        }
    });
    let mut lines = reader.lines();
    let mut number = 0;
    while let Some(line) = lines
        .next_line()
        .await
        .with_context(|| format!("reading line {} of {name}", number + 1))?
    {
        number += 1;
        progress.inc(line.len() as u64 + 1);
        if line.is_empty() {
            continue;
        }
        let key = match &args.key {
            Some(key) => key.clone(),
            // Then --key-field is given (checked above).
            None => key_from_json(&line, args.key_field.as_deref().unwrap_or_default())
                .with_context(|| format!("line {number}"))?,
        };
        let ack = producer.send(key, line.into_bytes()).await?;
        if acks.send(ack).await.is_err() {
            bail!("the task counting the server's answers stopped");
        }
    }
    producer.flush().await?;
    drop(acks);
    let (stored, failed) = tally
        .await
        .context("the task counting the server's answers stopped")?;
    progress.finish_and_clear();
    println!("{stored} stored, {failed} failed");
    if failed > 0 {
        bail!("{failed} records were not stored");
    }
    Ok(())
}

pub(crate) fn key_from_json(line: &str, field: &str) -> anyhow::Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(line).context("not valid JSON (needed for --key-field)")?;
    match value.get(field) {
        Some(serde_json::Value::String(key)) => Ok(key.clone()),
        Some(serde_json::Value::Null) | None => {
            bail!("no field {field:?} to use as the partition key")
        }
        Some(other) => Ok(other.to_string()),
    }
}

/// Records stored in a stream, summed over its shards.
pub(crate) async fn read_count(client: &Client, stream: &str) -> usize {
    match client.describe_stream(stream).await {
        Ok(description) => description.shards.iter().map(|s| s.records as usize).sum(),
        Err(_) => 0,
    }
}

/// A record as `get` and `tail` print it: text, or one JSON object per
/// line (`data` when it is UTF-8, else `data_base64`).
fn print_record(output: OutputArgs, shard: u32, record: &Record) -> anyhow::Result<()> {
    let text = std::str::from_utf8(&record.data).ok();
    let line = RecordLine {
        shard,
        sequence: record.sequence,
        timestamp_ms: record.timestamp_ms,
        partition_key: &record.partition_key,
        data: text,
        data_base64: text.is_none().then(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(&record.data)
        }),
    };
    if !output.json(&line)? {
        println!(
            "shard={shard} seq={} ts={} key={} {}",
            record.sequence,
            record.timestamp_ms,
            record.partition_key,
            String::from_utf8_lossy(&record.data)
        );
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct RecordLine<'a> {
    shard: u32,
    sequence: u64,
    timestamp_ms: u64,
    partition_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let batch = client
        .get_records(&args.stream, args.shard, args.from, args.limit)
        .await?;
    for record in &batch.records {
        print_record(args.output, args.shard, record)?;
    }
    eprintln!(
        "next position: at:{} ({} records, {} behind the tip)",
        batch.next_sequence,
        batch.records_behind_tip,
        show::duration_ms(batch.millis_behind_tip)
    );
    Ok(())
}

/// How long `tail` waits between attempts to reach a server that went away.
const TAIL_RECONNECT_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Follows every shard until interrupted. A lost connection (a server
/// restart, a network change) is not the end: `tail` reconnects and goes
/// on right after the last record it printed of each shard.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let mut printed = HashMap::new();
    let mut client = args.connect.connect().await?;
    loop {
        let lost = tokio::select! {
            lost = follow(&client, &args, &mut printed) => lost,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        // Only a lost connection: a server's refusal (records damaged on
        // disk, say) would come back at once.
        if !matches!(lost.downcast_ref(), Some(ClientError::Connection(_))) {
            return Err(lost);
        }
        eprintln!("weir: {lost}; reconnecting");
        client = loop {
            tokio::select! {
                connected = args.connect.connect() => match connected {
                    Ok(client) => break client,
                    // No server answered (yet): it may be restarting.
                    Err(error) if matches!(error.downcast_ref(), Some(ClientError::Connect { .. })) => {
                        tokio::time::sleep(TAIL_RECONNECT_PAUSE).await;
                    }
                    Err(error) => return Err(error),
                },
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        };
        eprintln!("weir: reconnected");
    }
}

/// Prints every shard's records, each shard from after the last one
/// `printed` of it (or from `--from`), until something fails.
async fn follow(
    client: &Client,
    args: &TailArgs,
    printed: &mut HashMap<u32, u64>,
) -> anyhow::Error {
    let subscribed = async {
        let mut shards = Vec::new();
        for shard in client.describe_stream(&args.stream).await?.shards {
            let from = printed
                .get(&shard.shard)
                .map_or(args.from, |&sequence| Position::AfterSequence(sequence));
            let subscription = client.subscribe(&args.stream, shard.shard, from).await?;
            shards.push((shard.shard, subscription));
        }
        anyhow::Ok(StreamSubscription::from_shards(shards))
    };
    let mut feed = match subscribed.await {
        Ok(feed) => feed,
        Err(error) => return error,
    };
    loop {
        let ShardBatch { shard, batch } = match feed.next().await {
            Ok(batch) => batch,
            Err(error) => return error.into(),
        };
        for record in &batch.records {
            if let Err(error) = print_record(args.output, shard, record) {
                return error;
            }
            printed.insert(shard, record.sequence);
        }
    }
}
