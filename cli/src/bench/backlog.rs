//! `weir bench backlog`: how fast a processor works through records already
//! stored — the catch-up rate after a processor is created or resumed, with
//! storage reads, the Wasm calls, state and the atomic commits all included.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use weir_client::admin::{AdminRequest, AdminResponse, ShardProgress};
use weir_client::{PutRecord, PutResult};

use weir::config::Durability;

#[derive(Args, Clone)]
pub struct BacklogArgs {
    /// The processor's plugin (a .wasm component).
    #[arg(long)]
    plugin: std::path::PathBuf,
    /// Plugin config, repeatable (e.g. --config window-ms=60000).
    #[arg(long = "config", value_parser = crate::parse::key_value)]
    config: Vec<(String, String)>,
    /// Records stored before the processor starts.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 4)]
    shards: u32,
    /// Distinct values of the records' `campaign` field.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
}

/// Records like the demo's purchases: `{"event","campaign","amount","i"}`.
fn records(count: usize, keys: usize) -> Vec<PutRecord> {
    (0..count)
        .map(|i| PutRecord {
            partition_key: format!("user-{}", i % 10_007),
            explicit_hash_key: None,
            data: format!(
                r#"{{"event":"purchase","campaign":"c{}","amount":{}.5,"i":{i}}}"#,
                i % keys.max(1),
                i % 100
            )
            .into(),
        })
        .collect()
}

pub async fn run(args: BacklogArgs) -> anyhow::Result<()> {
    let component = std::fs::read(&args.plugin)
        .with_context(|| format!("reading {}", args.plugin.display()))?;
    let embedded = super::embedded(Durability::Fsync, 1000, 128).await?;
    let client = &embedded.client;
    client
        .create_stream("in", args.shards, Default::default())
        .await?;
    println!(
        "weir bench backlog: {} records in {} shards ({} keys), then {} works through them (fsync)",
        args.records,
        args.shards,
        args.keys,
        args.plugin.display()
    );
    let bar = super::progress_bar(args.records, "storing");
    for batch in records(args.records, args.keys).chunks(1000) {
        let results = client.put_records("in", None, batch.to_vec()).await?;
        if let Some(PutResult::Failed { code, message }) = results
            .iter()
            .find(|r| matches!(r, PutResult::Failed { .. }))
        {
            bail!("storing the backlog failed: {}: {message}", code.name());
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();

    // Adding compiles the component: outside the timed part.
    client.add_plugin("bench", component.into()).await?;
    let started = Instant::now();
    super::create_bench_processor(client, &args.config).await?;
    let bar = super::progress_bar(args.records, "processing");
    let deadline = started + Duration::from_secs(600);
    let shards = loop {
        let shards = progress(client).await?;
        let done: u64 = shards.iter().map(|s| s.cursor).sum();
        bar.set_position(done);
        if let Some(halted) = shards.iter().find(|s| s.status == "halted") {
            bail!(
                "the processor halted: {}",
                halted.last_error.as_deref().unwrap_or("no error recorded")
            );
        }
        if done as usize >= args.records {
            break shards;
        }
        if Instant::now() > deadline {
            bail!("the processor did not catch up within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let records_in: u64 = shards.iter().map(|s| s.records_in).sum();
    let records_out: u64 = shards.iter().map(|s| s.records_out).sum();
    let fuel: u64 = shards.iter().map(|s| s.fuel_used).sum();
    let state_keys: u64 = shards.iter().map(|s| s.state_keys).sum();
    println!(
        "caught up   {:>10.0} records/s  ({records_in} records in {:.2} s; {records_out} out, \
         {} fuel/record, {state_keys} state keys)",
        records_in as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        fuel.checked_div(records_in).unwrap_or(0),
    );
    embedded.stop().await
}

async fn progress(client: &weir_client::Client) -> anyhow::Result<Vec<ShardProgress>> {
    match client
        .admin(AdminRequest::DescribeProcessor {
            name: "bench".into(),
        })
        .await?
    {
        AdminResponse::Processor(info) => Ok(info.shards),
        other => Err(crate::unexpected(&other)),
    }
}
