//! `weir sink`: forwarding a stream to NATS JetStream, Kafka or a Kinesis API.

use clap::{Args, Subcommand};
use weir_client::admin::{AdminRequest, AdminResponse, SinkInfo, SinkSettings, StartPosition};

use super::{ConnectArgs, DescribeArgs, ListArgs, NameArgs, OutputArgs, SeekArgs, show};

#[derive(Subcommand)]
pub enum SinkCommand {
    /// Forward a stream to another engine, in order, resuming by itself.
    Create(CreateArgs),
    /// List sinks.
    List(ListArgs),
    /// Per shard: state, cursor, lag (records, bytes, age), last ack, last error.
    Describe(DescribeArgs),
    /// Stop forwarding (the cursors stay; records wait in Weir).
    Pause(NameArgs),
    /// Forward again from the cursors (also: retry now instead of after
    /// the current backoff).
    Resume(NameArgs),
    /// Delete a sink and its cursors (what it forwarded stays upstream).
    #[command(visible_alias = "rm")]
    Delete(NameArgs),
    /// Move its cursor (every shard, or --shard N), e.g. to skip a backlog
    /// nobody needs upstream. JetStream and Kafka sinks still resume after
    /// what the upstream holds, so only Kinesis sinks send records again.
    Seek(SeekArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    name: String,
    /// Source stream (a processor's output stream works too).
    #[arg(long)]
    from: String,
    /// Upstream: nats://HOST:PORT[,HOST:PORT…]/SUBJECT-PREFIX (shard N goes
    /// to SUBJECT-PREFIX.N; nats+tls:// for TLS), kafka://HOST:PORT[,HOST:PORT…]/TOPIC (shard N
    /// to partition N; kafka+tls:// for TLS), kinesis://HOST:PORT/STREAM[?region=REGION] or, over
    /// TLS (AWS), kinesis+https://HOST[:PORT]/STREAM[?region=REGION].
    #[arg(long)]
    to: String,
    /// A credentials file on the server (NATS: a .creds file; Kinesis:
    /// aws_access_key_id / aws_secret_access_key lines); only its path is
    /// stored.
    #[arg(long)]
    credentials_file: Option<String>,
    /// A PEM file on the server with the certificates to trust for a TLS
    /// upstream (default: the system's trust store).
    #[arg(long)]
    ca_file: Option<String>,
    /// For mutual TLS: a PEM certificate (chain) on the server that the
    /// sink presents to the upstream, with --client-key.
    #[arg(long, requires = "client_key")]
    client_cert: Option<String>,
    /// The private key of --client-cert (a PEM file on the server).
    #[arg(long, requires = "client_cert")]
    client_key: Option<String>,
    #[arg(long, value_enum, default_value = "trim-horizon")]
    start: Start,
    /// Records per upstream request (default and ceiling: the server's
    /// sink_batch_records_max).
    #[arg(long)]
    batch_records: Option<u32>,
    /// How long a short batch waits for more records before it is sent.
    #[arg(long)]
    linger_ms: Option<u64>,
    /// Record bytes forwarded per second at most, over all shards.
    #[arg(long, value_parser = super::parse::bytes)]
    bytes_per_sec: Option<u64>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Start {
    TrimHorizon,
    Latest,
}

pub async fn run(command: SinkCommand) -> anyhow::Result<()> {
    let mut output = OutputArgs::default();
    let (request, connect) = match command {
        SinkCommand::Create(args) => {
            let settings = SinkSettings {
                name: args.name,
                source: args.from,
                to: args.to,
                credentials_file: args.credentials_file,
                ca_file: args.ca_file,
                client_cert_file: args.client_cert,
                client_key_file: args.client_key,
                start: match args.start {
                    Start::TrimHorizon => StartPosition::TrimHorizon,
                    Start::Latest => StartPosition::Latest,
                },
                batch_records: args.batch_records,
                linger_ms: args.linger_ms,
                bytes_per_sec: args.bytes_per_sec,
            };
            (AdminRequest::CreateSink(Box::new(settings)), args.connect)
        }
        SinkCommand::List(ListArgs {
            output: asked,
            connect,
        }) => {
            output = asked;
            (AdminRequest::ListSinks, connect)
        }
        SinkCommand::Describe(DescribeArgs {
            name,
            output: asked,
            connect,
        }) => {
            output = asked;
            (AdminRequest::DescribeSink { name }, connect)
        }
        SinkCommand::Pause(NameArgs { name, connect }) => {
            (AdminRequest::PauseSink { name }, connect)
        }
        SinkCommand::Resume(NameArgs { name, connect }) => {
            (AdminRequest::ResumeSink { name }, connect)
        }
        SinkCommand::Delete(NameArgs { name, connect }) => {
            (AdminRequest::DeleteSink { name }, connect)
        }
        SinkCommand::Seek(SeekArgs {
            name,
            to,
            shard,
            output: asked,
            connect,
        }) => {
            output = asked;
            (AdminRequest::SeekSink { name, to, shard }, connect)
        }
    };
    match connect.connect().await?.admin(request).await? {
        AdminResponse::Sink(info) => {
            if !output.json(&info)? {
                print_sink(&info);
            }
        }
        AdminResponse::Sinks(list) => {
            if !output.json(&list)? {
                list.iter().for_each(print_sink);
            }
        }
        AdminResponse::Done => println!("done"),
        other => return Err(super::unexpected(&other)),
    }
    Ok(())
}

fn print_sink(info: &SinkInfo) {
    let settings = &info.settings;
    println!(
        "sink {}  {} -> {}{}",
        settings.name,
        settings.source,
        settings.to,
        if info.paused { "  (paused)" } else { "" }
    );
    if info.shards.is_empty() {
        return;
    }
    println!(
        "  {:>5} {:<12} {:>10} {:>9} {:>11} {:>8} {:>11} {:>13} {:>10}",
        "shard", "state", "cursor", "lag", "lag size", "lag age", "forwarded", "size", "last ack"
    );
    let now = weir::storage::now_ms();
    for shard in &info.shards {
        println!(
            "  {:>5} {:<12} {:>10} {:>9} {:>11} {:>8} {:>11} {:>13} {:>10}",
            shard.shard,
            shard.status,
            shard.cursor,
            shard.lag_records,
            show::bytes(shard.lag_bytes),
            show::duration_ms(shard.lag_ms),
            shard.records_forwarded,
            show::bytes(shard.bytes_forwarded),
            shard.last_ack_ms.map_or("-".to_owned(), |at| format!(
                "{} ago",
                show::duration_ms(now.saturating_sub(at))
            )),
        );
        if let Some(error) = &shard.last_error {
            println!("        last error: {error}");
        }
    }
}
