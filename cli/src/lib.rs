//! The `weir` command.

mod bench;
pub mod demo;
mod memory;
mod parse;
mod plugin_local;
mod plugin_sdk;
mod plugins;
mod serve;
mod show;
mod sinks;
mod status;
mod streams;
mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use weir_client::{Client, ClientConfig};

use serve::ServeArgs;
use streams::{GetArgs, PutArgs, StreamCommand, TailArgs};
use weir::config::ServerConfig;

/// A client configuration for a server running in this process (bench,
/// demo), as its first admin.
pub(crate) fn client_config(access: &weir::server::Access) -> ClientConfig {
    let mut config = ClientConfig::new(access.addr, &access.cert_path);
    config.token.clone_from(&access.admin_token);
    config
}

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
            .unwrap_or_else(|| weir::tls::generated_cert_path(&self.data_dir))
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
                let path = weir::auth::admin_token_path(&self.data_dir);
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

/// A verb that lists things: how to print them, where to connect.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A verb that shows one named thing.
#[derive(Args)]
pub struct DescribeArgs {
    pub name: String,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A verb on one named thing that prints no data.
#[derive(Args)]
pub struct NameArgs {
    pub name: String,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Moves a processor's or sink's cursor.
#[derive(Args)]
pub struct SeekArgs {
    pub name: String,
    /// The new position: trim-horizon, latest, at:SEQ, after:SEQ or
    /// time:MILLIS (since the Unix epoch).
    #[arg(long, value_parser = parse::position)]
    pub to: weir_client::Position,
    /// Only this shard (default: every shard).
    #[arg(long)]
    pub shard: Option<u32>,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
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

/// Runs the command line and maps errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The server, the live demo and the benchmarks (their data, gigabytes
    // of it, is in a temporary directory) clean up when they stop, so a
    // closed pipe must reach them as an error, not end them at once.
    let cleans_up = match &cli.command {
        Command::Serve(_) | Command::Bench(_) => true,
        Command::Demo(args) => args.is_live(),
        _ => false,
    };
    if !cleans_up {
        end_quietly_when_the_reader_goes();
    }
    let result = match cli.command {
        // The server picks its runtime from its configuration.
        Command::Serve(args) => serve::serve(args),
        command => weir::server::runtime(1)
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(run(command))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("weir: {}", describe_error(&error));
            ExitCode::FAILURE
        }
    }
}

/// Lets a verb end quietly when whatever reads its output goes away
/// (`weir tail clicks | head`), as other Unix tools do. Rust programs
/// ignore SIGPIPE, so without this the next `println!` panics with
/// "Broken pipe".
fn end_quietly_when_the_reader_goes() {
    #[cfg(unix)]
    #[allow(unsafe_code)]
    // SAFETY: `signal` only sets this process's disposition of SIGPIPE
    // back to the default; it runs in `main` before any other thread
    // exists, and no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
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
        Command::Serve(_) => bail!("weir serve runs on a runtime of its own (see main)"),
        Command::Demo(args) => demo::run(args).await,
        Command::Stream(command) => streams::stream(command).await,
        Command::Put(args) => streams::put(args).await,
        Command::Get(args) => streams::get(args).await,
        Command::Tail(args) => streams::tail(args).await,
        Command::Plugin(command) => plugins::plugin(command).await,
        Command::Processor(command) => plugins::processor(command).await,
        Command::State(command) => plugins::state(command).await,
        Command::Sink(command) => sinks::run(command).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Status(args) => status::run(args).await,
        Command::Token(command) => tokens::run(command).await,
        Command::Config(ConfigCommand::Default) => {
            print!("{}", weir::config::DEFAULT_CONFIG_TOML);
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
