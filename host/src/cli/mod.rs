//! The `weir` command.

mod bench;
mod bench_backlog;
mod bench_kinesis;
mod bench_load;
mod bench_plugin;
mod bench_sink;
pub mod demo;
mod memory;
mod parse;
mod plugin_local;
mod plugins;
mod show;
mod sinks;
mod status;
mod tokens;

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use weir_client::{Client, ClientConfig, Position, ProducerConfig, Record, Retention};

use crate::config::{Durability, ServerConfig};
use crate::server::Server;

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: QUIC ingest, durable shards, Wasm processors — one binary"
)]
struct Cli {
    /// Log lines as human-readable text or as JSON for collectors
    /// (level and modules via WEIR_LOG, e.g. WEIR_LOG=debug).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (no config needed: data in ./weir-data, QUIC on 127.0.0.1:7720).
    Serve(ServeArgs),
    /// A live pipeline on a temporary server: sample clicks -> purchases ->
    /// revenue per campaign (`weir demo data` writes the sample clicks).
    Demo(demo::DemoArgs),
    /// Create, list, describe and delete streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Put records: one from the command line, or one per line of a file.
    Put(PutArgs),
    /// Read records from one shard from a position.
    Get(GetArgs),
    /// Follow every shard of a stream live.
    Tail(TailArgs),
    /// Upload, list, describe and remove Wasm plugins.
    #[command(subcommand)]
    Plugin(plugins::PluginCommand),
    /// Attach plugins to streams; pause, resume, describe, remove.
    #[command(subcommand)]
    Processor(plugins::ProcessorCommand),
    /// Forward a stream to NATS JetStream, Kafka or a Kinesis API: create,
    /// list, describe, pause, resume, remove.
    #[command(subcommand)]
    Sink(sinks::SinkCommand),
    /// Query a processor's aggregate state.
    #[command(subcommand)]
    State(plugins::StateCommand),
    /// Measure ingest and read throughput against an embedded server.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// One screen: streams, shards, rates, processors, lag, fuel, errors, disk.
    Status(status::StatusArgs),
    /// Create, list and delete (revoke) access tokens.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the default weir.toml: every setting, its default and unit.
    Default,
    /// Check a weir.toml and print the configuration it results in.
    Check { file: PathBuf },
}

/// Flags override the configuration file, which overrides the defaults.
#[derive(Args)]
struct ServeArgs {
    /// A weir.toml (see `weir config default`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (created if missing) [default: ./weir-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// UDP address for QUIC [default: 127.0.0.1:7720].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TCP address for /metrics, /healthz, /readyz [default: 127.0.0.1:7721].
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// TCP address for the Kinesis Data Streams API, or `off`
    /// [default: 127.0.0.1:4567].
    #[arg(long, value_parser = parse::listen_or_off)]
    kinesis_listen: Option<parse::ListenOrOff>,
    /// PEM certificate chain (default: self-signed, generated in DATA/tls/).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// When an ack is sent: after fsync, or after the journal write with a
    /// sync every --sync-interval-ms [default: fsync].
    #[arg(long, value_enum)]
    durability: Option<Durability>,
    /// Journal sync interval in buffered mode [default: 50].
    #[arg(long)]
    sync_interval_ms: Option<u64>,
}

/// Where the server is and which certificate to trust.
#[derive(Args, Clone)]
pub struct ConnectArgs {
    /// Server address [default: 127.0.0.1:7720, this machine's default port].
    #[arg(long, env = "WEIR_SERVER")]
    pub(crate) server: Option<SocketAddr>,
    /// Certificate to trust (default: DATA/tls/cert.pem, the local server's).
    #[arg(long, env = "WEIR_CA")]
    ca: Option<PathBuf>,
    /// The local server's data directory, to find its certificate.
    #[arg(long = "data", env = "WEIR_DATA", default_value = "./weir-data")]
    data_dir: PathBuf,
    /// Name the server's certificate is valid for.
    #[arg(long, default_value = weir_proto::DEFAULT_SERVER_NAME)]
    server_name: String,
    /// Access token (default: DATA/admin.token, the local server's first
    /// admin token).
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How long to wait for the server to answer the connection (e.g. 5s,
    /// 500ms) before saying none did.
    #[arg(long, env = "WEIR_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse::duration_ms)]
    connect_timeout: u64,
}

impl ConnectArgs {
    /// The server's address: `--server`, or this machine's default port.
    pub(crate) fn address(&self) -> SocketAddr {
        self.server.unwrap_or_else(|| {
            weir_proto::DEFAULT_LISTEN_ADDR
                .parse()
                .unwrap_or_else(|_| unreachable!("the default address is valid"))
        })
    }

    /// The certificate this client trusts.
    pub(crate) fn ca_path(&self) -> PathBuf {
        self.ca
            .clone()
            .unwrap_or_else(|| crate::tls::generated_cert_path(&self.data_dir))
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        let ca = self.ca_path();
        if !ca.exists() {
            bail!(
                "no certificate at {}: start `weir serve` here first, or pass --ca FILE (and --server ADDR)",
                ca.display()
            );
        }
        let mut config = ClientConfig::new(self.address(), ca);
        config.server_name = self.server_name.clone();
        config.connect_timeout = std::time::Duration::from_millis(self.connect_timeout);
        config.token = match &self.token {
            Some(token) => Some(token.clone()),
            None => {
                let path = crate::auth::admin_token_path(&self.data_dir);
                weir_client::read_token_file(&path).ok()
            }
        };
        Client::connect(config).await.map_err(|error| match error {
            // The server answered: the token is the problem, not the network.
            weir_client::ClientError::Server {
                code: weir_client::ErrorCode::Unauthenticated,
                message,
            } => anyhow::anyhow!(
                "the server at {} refused the token ({message}); on the server's machine \
                 the admin token is in DATA/admin.token (--data DATA), elsewhere pass one \
                 from `weir token create` with --token or WEIR_TOKEN",
                self.address()
            ),
            // Its message already says no server answered, and where.
            connect @ weir_client::ClientError::Connect { .. } => anyhow::Error::new(connect),
            other => anyhow::Error::new(other)
                .context(format!("talking to the server at {}", self.address())),
        })
    }
}

/// An admin answer the command did not expect: a client and server of
/// different versions, most likely.
pub(crate) fn unexpected(answer: &weir_client::admin::AdminResponse) -> anyhow::Error {
    anyhow::anyhow!(
        "the server answered with {} where this command expected something else \
         (are `weir` and the server the same version?)",
        answer.kind()
    )
}

/// How a verb that reads data prints it.
#[derive(Args, Clone, Copy, Default)]
pub struct OutputArgs {
    /// `text` for people; `json` for scripts: one JSON document, or one
    /// per line for `get` and `tail` (README "Output for scripts").
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

impl OutputArgs {
    pub fn is_json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// Prints `value` as one line of JSON if JSON was asked for; whether
    /// it did (else the caller prints text).
    pub fn json(&self, value: &impl serde::Serialize) -> anyhow::Result<bool> {
        if !self.is_json() {
            return Ok(false);
        }
        println!("{}", serde_json::to_string(value)?);
        Ok(true)
    }
}

#[derive(Subcommand)]
enum StreamCommand {
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
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a stream's shards: hash-key ranges, sequence numbers, sizes.
    Describe {
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a stream and all its records.
    #[command(visible_alias = "rm")]
    Delete {
        name: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

#[derive(Args)]
struct PutArgs {
    stream: String,
    /// The record's data (omit with --file).
    data: Option<String>,
    /// Partition key (with --file: the same key for every line).
    #[arg(long)]
    key: Option<String>,
    /// One record per line of this file.
    #[arg(long, conflicts_with = "data")]
    file: Option<PathBuf>,
    /// With --file: take each line's partition key from this JSON field.
    #[arg(long, requires = "file", conflicts_with = "key")]
    key_field: Option<String>,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
struct GetArgs {
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
struct TailArgs {
    stream: String,
    /// trim-horizon, latest, at:SEQ, after:SEQ, time:MILLIS.
    #[arg(long, value_parser = parse::position, default_value = "latest")]
    from: Position,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs the command line and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("weir: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir: {}", describe_error(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, leaving out a cause whose text the
/// message before it already includes (many errors print their source).
fn describe_error(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn,async_nats=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Stream(command) => stream(command).await,
        Command::Put(args) => put(args).await,
        Command::Get(args) => get(args).await,
        Command::Tail(args) => tail(args).await,
        Command::Plugin(command) => plugins::plugin(command).await,
        Command::Processor(command) => plugins::processor(command).await,
        Command::State(command) => plugins::state(command).await,
        Command::Sink(command) => sinks::run(command).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Status(args) => status::run(args).await,
        Command::Token(command) => tokens::run(command).await,
        Command::Config(ConfigCommand::Default) => {
            print!("{}", crate::config::DEFAULT_CONFIG_TOML);
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let config = ServerConfig::load(&file)?;
            print!(
                "{}",
                toml::to_string(&config).context("printing the configuration")?
            );
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    if let Some(data) = args.data {
        config.data_dir = data;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = Some(admin);
    }
    if let Some(parse::ListenOrOff(kinesis)) = args.kinesis_listen {
        config.kinesis_listen = kinesis;
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    if let Some(durability) = args.durability {
        config.storage.durability = durability;
    }
    if let Some(interval) = args.sync_interval_ms {
        config.storage.buffered_sync_interval_ms = interval;
    }
    let data_dir = config.data_dir.clone();
    let durability = config.storage.durability;
    let server = Server::start(config).await?;
    memory::spawn_trimmer();
    // Tests and scripts read this line to find the port when --listen uses 0.
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    if let Some(kinesis) = server.kinesis_addr() {
        // Second line, also for scripts: where to point `endpoint_url`.
        println!("kinesis api on http://{kinesis}");
        let _ = std::io::stdout().flush();
    }
    if let Some(admin) = server.admin_addr() {
        tracing::info!(%admin, "metrics at http://{admin}/metrics");
    }
    tracing::info!(
        listen = %server.local_addr(),
        data = %data_dir.display(),
        ?durability,
        "weir serving (QUIC, TLS 1.3, ALPN weir/1)"
    );
    if server.auth_enabled() {
        tracing::info!(
            token = %crate::auth::admin_token_path(&data_dir).display(),
            "clients authenticate with tokens; CLI verbs run here use the first admin token"
        );
    }
    if server.generated_cert() {
        tracing::info!(
            cert = %server.cert_path().display(),
            "self-signed certificate; CLI verbs run here find it, remote clients pass --ca with a copy of it"
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down: closing connections, committing queued writes");
    server.shutdown().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

async fn stream(command: StreamCommand) -> anyhow::Result<()> {
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
        StreamCommand::List { output, connect } => {
            let names = connect.connect().await?.list_streams().await?;
            if !output.json(&names)? {
                names.iter().for_each(|name| println!("{name}"));
            }
        }
        StreamCommand::Describe {
            name,
            output,
            connect,
        } => {
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
                        crate::storage::now_ms().saturating_sub(description.created_ms)
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
        StreamCommand::Delete { name, connect } => {
            connect.connect().await?.delete_stream(&name).await?;
            println!("deleted stream {name}");
        }
    }
    Ok(())
}

async fn put(args: PutArgs) -> anyhow::Result<()> {
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
                Some(weir_client::PutResult::Stored { shard, sequence }) => {
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

async fn put_file(client: &Client, args: &PutArgs, file: &PathBuf) -> anyhow::Result<()> {
    let bytes_total = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    // Progress only for a person watching (indicatif draws on stderr);
    // the summary below is printed either way, for scripts too.
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(bytes_total).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let producer = client.producer(&args.stream, ProducerConfig::default());
    let mut acks = Vec::new();
    let (mut stored, mut failed) = (0u64, 0u64);
    let mut tally = |result: Result<_, weir_client::ClientError>| match result {
        Ok(_) => stored += 1,
        Err(error) => {
            failed += 1;
            progress.suspend(|| eprintln!("record failed: {error}"));
        }
    };
    for (number, line) in reader.lines().enumerate() {
        let line =
            line.with_context(|| format!("reading line {} of {}", number + 1, file.display()))?;
        progress.inc(line.len() as u64 + 1);
        if line.is_empty() {
            continue;
        }
        let key = match (&args.key, &args.key_field) {
            (Some(key), _) => key.clone(),
            (None, Some(field)) => {
                key_from_json(&line, field).with_context(|| format!("line {}", number + 1))?
            }
            (None, None) => bail!("give --key KEY or --key-field FIELD with --file"),
        };
        acks.push(producer.send(key, line.into_bytes()).await?);
        // Collect answers as we go so memory stays bounded on big files.
        if acks.len() >= 10_000 {
            for ack in acks.drain(..) {
                tally(ack.await);
            }
        }
    }
    producer.flush().await?;
    for ack in acks {
        tally(ack.await);
    }
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

async fn get(args: GetArgs) -> anyhow::Result<()> {
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

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let client = args.connect.connect().await?;
    let description = client.describe_stream(&args.stream).await?;
    let (lines, mut received) = tokio::sync::mpsc::channel::<anyhow::Result<(u32, Record)>>(1024);
    for shard in description.shards {
        let mut subscription = client
            .subscribe(&args.stream, shard.shard, args.from)
            .await?;
        let lines = lines.clone();
        tokio::spawn(async move {
            loop {
                match subscription.next().await {
                    Ok(batch) => {
                        for record in batch.records {
                            if lines.send(Ok((shard.shard, record))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        let _ = lines.send(Err(error.into())).await;
                        return;
                    }
                }
            }
        });
    }
    drop(lines);
    loop {
        tokio::select! {
            line = received.recv() => match line {
                Some(Ok((shard, record))) => print_record(args.output, shard, &record)?,
                Some(Err(error)) => return Err(error),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
