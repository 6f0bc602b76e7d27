//! `weir status`: one screen with streams, shards, rates, processors, lag,
//! fuel, errors and disk use; `--watch` refreshes it, `--json` is for scripts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use weir_client::admin::{AdminRequest, AdminResponse, ProcessorInfo, ServerInfo};
use weir_client::{Client, StreamDescription};

use super::{ConnectArgs, OutputArgs, show};

#[derive(Args)]
pub struct StatusArgs {
    /// Refresh every 2 seconds (rates are computed between refreshes).
    #[arg(long)]
    watch: bool,
    /// Print one JSON document instead of the screen (the same as
    /// `--output json`).
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Serialize)]
struct Snapshot {
    server: ServerInfo,
    streams: Vec<StreamDescription>,
    processors: Vec<ProcessorInfo>,
}

async fn snapshot(client: &Client) -> anyhow::Result<Snapshot> {
    let server = match client.admin(AdminRequest::ServerInfo).await? {
        AdminResponse::Server(info) => info,
        other => return Err(super::unexpected(&other)),
    };
    let mut streams = Vec::new();
    for name in client.list_streams().await? {
        streams.push(client.describe_stream(&name).await?);
    }
    let names: Vec<String> = match client.admin(AdminRequest::ListProcessors).await? {
        AdminResponse::Processors(list) => list.into_iter().map(|p| p.settings.name).collect(),
        other => return Err(super::unexpected(&other)),
    };
    let mut processors = Vec::new();
    for name in names {
        if let AdminResponse::Processor(info) = client
            .admin(AdminRequest::DescribeProcessor { name })
            .await?
        {
            processors.push(*info);
        }
    }
    Ok(Snapshot {
        server,
        streams,
        processors,
    })
}

/// Records appended per shard: the last sequence + 1 (sequences are dense).
fn appended(description: &StreamDescription) -> HashMap<u32, u64> {
    description
        .shards
        .iter()
        .map(|s| (s.shard, s.last_sequence.map_or(0, |l| l + 1)))
        .collect()
}

fn print(snapshot: &Snapshot, previous: Option<(&Snapshot, Duration)>) {
    let server = &snapshot.server;
    println!(
        "weir {}  up {}  storage {} (journal preallocation included)  memory {}",
        server.version,
        show::duration_ms(server.uptime_ms),
        show::bytes(server.disk_bytes),
        show::bytes(server.resident_bytes)
    );
    if !server.auth_enabled {
        println!("AUTHENTICATION DISABLED: anyone who reaches the server can do anything");
    }
    if let Some(reason) = &server.writes_refused {
        println!("WRITES REFUSED: {reason}");
    }
    println!(
        "\n{:<24} {:>5} {:>12} {:>12} {:>12}",
        "stream", "shard", "records", "size", "records/s"
    );
    for stream in &snapshot.streams {
        let before = previous
            .and_then(|(p, _)| p.streams.iter().find(|s| s.name == stream.name))
            .map(appended);
        let now = appended(stream);
        for shard in &stream.shards {
            let rate = match (&before, previous) {
                (Some(before), Some((_, elapsed))) => {
                    let delta = now[&shard.shard]
                        .saturating_sub(before.get(&shard.shard).copied().unwrap_or(0));
                    format!("{:.0}", delta as f64 / elapsed.as_secs_f64())
                }
                _ => "-".into(),
            };
            println!(
                "{:<24} {:>5} {:>12} {:>12} {:>12}",
                stream.name,
                shard.shard,
                shard.records,
                show::bytes(shard.bytes),
                rate
            );
        }
    }
    if snapshot.processors.is_empty() {
        return;
    }
    println!(
        "\n{:<20} {:<18} {:<10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "processor", "plugin", "status", "in", "out", "lag", "fuel/rec", "failed"
    );
    for processor in &snapshot.processors {
        let shards = &processor.shards;
        let sum =
            |f: fn(&weir_client::admin::ShardProgress) -> u64| shards.iter().map(f).sum::<u64>();
        let records_in = sum(|s| s.records_in);
        let status = if processor.paused {
            "paused"
        } else if shards.iter().any(|s| s.status == "halted") {
            "halted"
        } else {
            shards.first().map_or("stopped", |s| s.status.as_str())
        };
        println!(
            "{:<20} {:<18} {:<10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            processor.settings.name,
            processor.settings.plugin,
            status,
            records_in,
            sum(|s| s.records_out),
            sum(|s| s.lag_records),
            sum(|s| s.fuel_used).checked_div(records_in).unwrap_or(0),
            sum(|s| s.records_failed)
        );
        for shard in shards {
            if let Some(error) = &shard.last_error {
                println!("    shard {}: {error}", shard.shard);
            }
        }
    }
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    if args.json || args.output.is_json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot(&client).await?)?
        );
        return Ok(());
    }
    let mut previous: Option<(Snapshot, Instant)> = None;
    loop {
        let current = snapshot(&client).await?;
        let taken = Instant::now();
        if args.watch {
            // Clear the screen and home the cursor.
            print!("\x1b[2J\x1b[H");
        }
        print(&current, previous.as_ref().map(|(p, at)| (p, taken - *at)));
        if !args.watch {
            return Ok(());
        }
        previous = Some((current, taken));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
