//! `weir serve`: the server in the foreground until a signal stops it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{memory, parse};
use weir::config::{Durability, ServerConfig};
use weir::server::Server;

#[derive(Args)]
pub struct ServeArgs {
    /// A weir.toml (see `weir config default`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (created if missing) [default: ./weir-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// UDP address for QUIC [default: 127.0.0.1:7720].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// TCP address for /metrics, /healthz, /readyz, or `off`
    /// [default: 127.0.0.1:7721].
    #[arg(long, value_parser = parse::listen_or_off)]
    admin_listen: Option<parse::ListenOrOff>,
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
    /// A DNS name or IP address remote clients reach this box by, for the
    /// generated certificate (repeat for several; adds to tls_names).
    #[arg(long = "tls-name", value_name = "NAME", conflicts_with = "tls_cert")]
    tls_names: Vec<String>,
    /// When an ack is sent: after fsync, or after the journal write with a
    /// sync every --sync-interval-ms [default: fsync].
    #[arg(long, value_parser = parse::durability())]
    durability: Option<Durability>,
    /// Journal sync interval in buffered mode [default: 50].
    #[arg(long)]
    sync_interval_ms: Option<u64>,
}

/// Runs the server on an async runtime of `server_threads` threads until
/// SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = configure(args)?;
    weir::server::runtime(config.server_threads())
        .context("cannot start the server's async runtime")?
        .block_on(run(config))
}

/// The configuration: the file's (or the defaults), then the flags.
fn configure(args: ServeArgs) -> anyhow::Result<ServerConfig> {
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
    if let Some(parse::ListenOrOff(admin)) = args.admin_listen {
        config.admin_listen = admin;
    }
    if let Some(parse::ListenOrOff(kinesis)) = args.kinesis_listen {
        config.kinesis_listen = kinesis;
    }
    if args.tls_cert.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    config.tls_names.extend(args.tls_names);
    if let Some(durability) = args.durability {
        config.storage.durability = durability;
    }
    if let Some(interval) = args.sync_interval_ms {
        config.storage.buffered_sync_interval_ms = interval;
    }
    Ok(config)
}

/// Where the server is and which certificate to trust.
async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let threads = config.server_threads();
    let data_dir = config.data_dir.clone();
    let durability = config.storage.durability;
    let cert_names = config.tls_names.clone();
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
        threads,
        "weir serving (QUIC, TLS 1.3, ALPN weir/1)"
    );
    if server.auth_enabled() {
        tracing::info!(
            token = %weir::auth::admin_token_path(&data_dir).display(),
            "clients authenticate with tokens; CLI verbs run here use the first admin token"
        );
    }
    if server.cert_newly_generated() {
        tracing::info!(
            cert = %server.cert_path().display(),
            "made a self-signed certificate for {}; remote clients need a copy of it (pass --ca)",
            weir::tls::generated_names(&cert_names).join(", "),
        );
    } else if server.generated_cert() {
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
