//! `weir plugin`, `weir processor` and `weir state`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use weir_client::admin::{
    AdminRequest, AdminResponse, FailurePolicy, PluginInfo, ProcessorInfo, ProcessorLimits,
    ProcessorSettings, StartPosition,
};

use super::{ConnectArgs, DescribeArgs, ListArgs, NameArgs, OutputArgs, SeekArgs, show};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Upload a Wasm component (validated, stored by SHA-256, precompiled).
    Add {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// List plugins.
    List(ListArgs),
    /// Show a plugin: hash, size, WIT version, processors using it.
    Describe(DescribeArgs),
    /// Delete a plugin (refused while a processor uses it).
    #[command(visible_alias = "rm")]
    Delete(NameArgs),
    /// Scaffold a plugin crate that builds for wasm32-wasip2, with a test.
    New(super::plugin_local::NewArgs),
    /// Run a component over a file of records locally, under the server's
    /// limits: outputs, final state, fuel per record, errors.
    Test(super::plugin_local::TestArgs),
}

#[derive(Subcommand)]
pub enum ProcessorCommand {
    /// Attach a plugin to a stream.
    Create(CreateArgs),
    /// List processors.
    List(ListArgs),
    /// Per shard: cursor, lag, records in/out, fuel, state size, errors.
    Describe(DescribeArgs),
    /// Stop a processor's workers (its cursors stay).
    Pause(NameArgs),
    /// Change a processor's limits; it keeps its cursors and state, and its
    /// workers restart with the new limits (a halted shard too).
    Update(UpdateArgs),
    /// Restart a paused or halted processor from its cursors.
    Resume(NameArgs),
    /// Move its cursor (every shard, or --shard N) to skip records or
    /// process them again; state is kept. Its workers restart from there.
    Seek(SeekArgs),
    /// Delete a processor, its cursors and state (its output stream stays).
    #[command(visible_alias = "rm")]
    Delete(NameArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    #[arg(long)]
    plugin: String,
    /// Source stream.
    #[arg(long)]
    from: String,
    /// Output stream (default NAME.out); created if missing.
    #[arg(long)]
    to: Option<String>,
    /// Plugin config, repeatable: --config field=price --config op=gt.
    #[arg(long = "config", value_parser = super::parse::key_value)]
    config: Vec<(String, String)>,
    #[command(flatten)]
    limits: LimitArgs,
    /// What to do with a record the plugin fails on.
    #[arg(long, value_enum, default_value = "halt")]
    on_error: OnError,
    #[arg(long, value_enum, default_value = "trim-horizon")]
    start: Start,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
pub struct UpdateArgs {
    name: String,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// A processor's limits, set at create and changed by update; unset ones
/// take the server's defaults (create) or stay as they are (update).
#[derive(Args)]
struct LimitArgs {
    /// Fuel the processor may burn per second (throttles it).
    #[arg(long)]
    fuel_per_sec: Option<u64>,
    /// Fuel one call may burn before it is stopped.
    #[arg(long)]
    fuel_per_batch_max: Option<u64>,
    /// Memory limit of the plugin instance (e.g. 64MiB).
    #[arg(long, value_parser = super::parse::bytes)]
    memory_max: Option<u64>,
    /// State the processor may keep, split between the source's shards
    /// (e.g. 1GiB; default: the server's processor_state_bytes_max).
    #[arg(long, value_parser = super::parse::bytes)]
    state_max: Option<u64>,
}

impl LimitArgs {
    fn to_limits(&self) -> ProcessorLimits {
        ProcessorLimits {
            fuel_per_sec: self.fuel_per_sec,
            fuel_per_batch_max: self.fuel_per_batch_max,
            memory_bytes_max: self.memory_max,
            state_bytes_max: self.state_max,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnError {
    Halt,
    Skip,
    DeadLetter,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Start {
    TrimHorizon,
    Latest,
}

#[derive(Subcommand)]
pub enum StateCommand {
    /// A processor's state: one key, keys with --prefix, or all.
    Get {
        processor: String,
        key: Option<String>,
        #[arg(long, conflicts_with = "key")]
        prefix: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

fn print_plugin(info: &PluginInfo) {
    let used = if info.used_by.is_empty() {
        "-".to_owned()
    } else {
        info.used_by.join(",")
    };
    println!(
        "{:<24} {}  {:>10}  {}  used by: {used}",
        info.name,
        info.sha256,
        show::bytes(info.bytes),
        info.wit
    );
}

fn print_processor(info: &ProcessorInfo) {
    let settings = &info.settings;
    println!(
        "processor {}  plugin {}  {} -> {}{}",
        settings.name,
        settings.plugin,
        settings.source,
        settings
            .output
            .clone()
            .unwrap_or_else(|| format!("{}.out", settings.name)),
        if info.paused { "  (paused)" } else { "" }
    );
    if info.shards.is_empty() {
        return;
    }
    println!(
        "  limits: fuel {}/s, {} per batch; memory {}; state {}; on error: {}{}",
        info.fuel_per_sec,
        info.fuel_per_batch_max,
        show::bytes(info.memory_bytes_max),
        show::bytes(info.state_bytes_max),
        settings.on_error.name(),
        info.dead_letter_stream
            .as_ref()
            .map(|s| format!(" -> {s}"))
            .unwrap_or_default()
    );
    if info.log_lines_dropped > 0 {
        println!(
            "  log: {} lines dropped (over plugin_log_lines_per_sec)",
            info.log_lines_dropped
        );
    }
    println!(
        "  {:>5} {:<16} {:>10} {:>9} {:>9} {:>10} {:>10} {:>12} {:>9} {:>7} {:>10}",
        "shard",
        "status",
        "cursor",
        "lag",
        "lag age",
        "in",
        "out",
        "fuel",
        "fuel/rec",
        "failed",
        "state"
    );
    for shard in &info.shards {
        let per_record = shard.fuel_used.checked_div(shard.records_in).unwrap_or(0);
        println!(
            "  {:>5} {:<16} {:>10} {:>9} {:>9} {:>10} {:>10} {:>12} {:>9} {:>7} {:>10}",
            shard.shard,
            shard.status,
            shard.cursor,
            shard.lag_records,
            show::duration_ms(shard.lag_ms),
            shard.records_in,
            shard.records_out,
            shard.fuel_used,
            per_record,
            shard.records_failed,
            show::bytes(shard.state_bytes)
        );
        if let Some(error) = &shard.last_error {
            println!("        last error: {error}");
        }
        if !shard.failed_sequences.is_empty() {
            let sequences: Vec<String> =
                shard.failed_sequences.iter().map(u64::to_string).collect();
            println!(
                "        failed sequences (newest first): {}",
                sequences.join(", ")
            );
        }
    }
}

pub async fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Add {
            file,
            name,
            connect,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let info = connect
                .connect()
                .await?
                .add_plugin(&name, bytes.into())
                .await?;
            print_plugin(&info);
        }
        PluginCommand::List(ListArgs { output, connect }) => match connect
            .connect()
            .await?
            .admin(AdminRequest::ListPlugins)
            .await?
        {
            AdminResponse::Plugins(plugins) => {
                if !output.json(&plugins)? {
                    plugins.iter().for_each(print_plugin);
                }
            }
            other => return Err(super::unexpected(&other)),
        },
        PluginCommand::Describe(DescribeArgs {
            name,
            output,
            connect,
        }) => {
            match connect
                .connect()
                .await?
                .admin(AdminRequest::DescribePlugin { name })
                .await?
            {
                AdminResponse::Plugin(info) => {
                    if !output.json(&info)? {
                        print_plugin(&info);
                    }
                }
                other => return Err(super::unexpected(&other)),
            }
        }
        PluginCommand::New(args) => super::plugin_local::new(args)?,
        PluginCommand::Test(args) => {
            tokio::task::spawn_blocking(move || super::plugin_local::test(args)).await??
        }
        PluginCommand::Delete(NameArgs { name, connect }) => {
            connect
                .connect()
                .await?
                .admin(AdminRequest::DeletePlugin { name: name.clone() })
                .await?;
            println!("deleted plugin {name}");
        }
    }
    Ok(())
}

pub async fn processor(command: ProcessorCommand) -> anyhow::Result<()> {
    let mut output = OutputArgs::default();
    let (request, connect) = match command {
        ProcessorCommand::Create(args) => {
            let limits = args.limits.to_limits();
            let settings = ProcessorSettings {
                name: args.name,
                plugin: args.plugin,
                source: args.from,
                output: args.to,
                config: args.config,
                fuel_per_sec: limits.fuel_per_sec,
                fuel_per_batch_max: limits.fuel_per_batch_max,
                memory_bytes_max: limits.memory_bytes_max,
                state_bytes_max: limits.state_bytes_max,
                on_error: match args.on_error {
                    OnError::Halt => FailurePolicy::Halt,
                    OnError::Skip => FailurePolicy::Skip,
                    OnError::DeadLetter => FailurePolicy::DeadLetter,
                },
                start: match args.start {
                    Start::TrimHorizon => StartPosition::TrimHorizon,
                    Start::Latest => StartPosition::Latest,
                },
            };
            (
                AdminRequest::CreateProcessor(Box::new(settings)),
                args.connect,
            )
        }
        ProcessorCommand::List(ListArgs {
            output: asked,
            connect,
        }) => {
            output = asked;
            (AdminRequest::ListProcessors, connect)
        }
        ProcessorCommand::Describe(DescribeArgs {
            name,
            output: asked,
            connect,
        }) => {
            output = asked;
            (AdminRequest::DescribeProcessor { name }, connect)
        }
        ProcessorCommand::Pause(NameArgs { name, connect }) => {
            (AdminRequest::PauseProcessor { name }, connect)
        }
        ProcessorCommand::Update(args) => (
            AdminRequest::UpdateProcessor {
                name: args.name,
                limits: args.limits.to_limits(),
            },
            args.connect,
        ),
        ProcessorCommand::Resume(NameArgs { name, connect }) => {
            (AdminRequest::ResumeProcessor { name }, connect)
        }
        ProcessorCommand::Delete(NameArgs { name, connect }) => {
            (AdminRequest::DeleteProcessor { name }, connect)
        }
        ProcessorCommand::Seek(SeekArgs {
            name,
            to,
            shard,
            output: asked,
            connect,
        }) => {
            output = asked;
            (AdminRequest::SeekProcessor { name, to, shard }, connect)
        }
    };
    match connect.connect().await?.admin(request).await? {
        AdminResponse::Processor(info) => {
            if !output.json(&info)? {
                print_processor(&info);
            }
        }
        AdminResponse::Processors(list) => {
            if !output.json(&list)? {
                list.iter().for_each(print_processor);
            }
        }
        AdminResponse::Done => println!("done"),
        other => return Err(super::unexpected(&other)),
    }
    Ok(())
}

pub async fn state(command: StateCommand) -> anyhow::Result<()> {
    let StateCommand::Get {
        processor,
        key,
        prefix,
        limit,
        output,
        connect,
    } = command;
    let request = AdminRequest::GetState {
        processor,
        key,
        prefix,
        limit,
    };
    match connect.connect().await?.admin(request).await? {
        AdminResponse::State(entries) => {
            if output.json(&entries)? {
                return Ok(());
            }
            for entry in entries {
                let value = match entry.value_hex {
                    Some(hex) => format!("(binary, hex) {hex}"),
                    None => entry.value,
                };
                println!("shard {}  key {}  value {value}", entry.shard, entry.key);
            }
        }
        other => return Err(super::unexpected(&other)),
    }
    Ok(())
}
