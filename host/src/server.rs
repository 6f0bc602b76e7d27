//! A running server: storage, service and QUIC endpoint, with a shutdown
//! that stops accepting, lets the writer commit what is queued, and syncs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Auth, AuthError, admin_token_path};
use crate::config::ServerConfig;
use crate::plugin::{PluginError, PluginRuntime};
use crate::processor::Processors;
use crate::service::Service;
use crate::sink::{SinkError, Sinks};
use crate::storage::{Storage, StorageError};
use crate::transport::{self, Listener, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening storage in {dir}: {source}")]
    Storage { dir: PathBuf, source: StorageError },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("starting the plugin runtime: {0}")]
    Plugins(PluginError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("loading tokens: {0}")]
    Auth(AuthError),
    #[error("creating data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the processors: {0}")]
    Processors(crate::processor::ProcessorError),
    #[error("starting the sinks: {0}")]
    Sinks(SinkError),
    /// A start-up step on another thread panicked (a bug: see the log).
    #[error("{step} failed unexpectedly: {reason}")]
    Panicked { step: &'static str, reason: String },
    /// The server's own thread could not be started or ended before it
    /// said it was serving.
    #[error("the server thread: {0}")]
    Thread(String),
}

/// What a client in the same process (the CLI's benchmarks and demo, the
/// end-to-end tests) needs to reach a server: its address, the certificate
/// to trust and the first admin token (absent when auth is off or the
/// operator removed the token file).
#[derive(Debug, Clone)]
pub struct Access {
    pub addr: SocketAddr,
    pub cert_path: PathBuf,
    pub admin_token: Option<String>,
}

pub struct Server {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    kinesis_addr: Option<SocketAddr>,
    cert_path: PathBuf,
    generated_cert: bool,
    /// The generated certificate was made at this start.
    cert_newly_generated: bool,
    admin_token: Option<String>,
    auth_enabled: bool,
    storage: Arc<Storage>,
    processors: Arc<Processors>,
    sinks: Arc<Sinks>,
    shutdown: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl Server {
    /// Opens the data directory and starts serving on `config.listen`
    /// (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        config.validate().map_err(ServerError::Config)?;
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
            dir: dir.clone(),
            // "File exists" would not say which way it is wrong.
            source: if source.kind() == std::io::ErrorKind::AlreadyExists {
                std::io::Error::other(
                    "it exists and is not a directory (pick another data directory)",
                )
            } else {
                source
            },
        })?;
        let identity = crate::tls::load_or_generate(
            &dir,
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            &config.tls_names,
        )
        .map_err(TransportError::from)?;
        let reset_key = crate::tls::load_or_create_reset_key(&dir).map_err(TransportError::from)?;
        let cert_path = identity.cert_path.clone();
        let generated_cert = identity.generated;
        let cert_newly_generated = identity.newly_generated;
        let storage_config = config.storage.clone();
        let db_dir = dir.join("db");
        let storage = tokio::task::spawn_blocking(move || Storage::open(&db_dir, storage_config))
            .await
            .map_err(|e| ServerError::Panicked {
                step: "opening storage",
                reason: e.to_string(),
            })?
            .map_err(|source| ServerError::Storage {
                dir: dir.clone(),
                source,
            })?;
        // The Kinesis API presents the same certificate to HTTPS clients.
        let http_tls = match config.kinesis_listen {
            Some(_) => Some(Arc::new(
                crate::tls::http_server_config(identity.clone_identity())
                    .map_err(TransportError::from)?,
            )),
            None => None,
        };
        let endpoint = transport::bind(config.listen, identity, &reset_key, &config.limits)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(TransportError::bind(Listener::Quic, config.listen))?;
        // Every listener is bound before processors and sinks start, so an
        // address in use stops the start before anything runs.
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(
                crate::metrics::bind_admin(addr)
                    .await
                    .map_err(TransportError::bind(Listener::Admin, addr))?,
            ),
            None => None,
        };
        let kinesis_listener = match config.kinesis_listen {
            Some(addr) => Some(
                crate::kinesis::bind(addr)
                    .await
                    .map_err(TransportError::bind(Listener::Kinesis, addr))?,
            ),
            None => None,
        };
        let runtime = Arc::new(
            PluginRuntime::new(dir.join("compiled"))
                .map_err(ServerError::Plugins)?
                .with_memory_budget(config.processing.plugins_memory_bytes_max),
        );
        let processors = Processors::start(
            storage.clone(),
            runtime,
            config.processing.clone(),
            &config.limits,
        )
        .await
        .map_err(ServerError::Processors)?;
        let own_kinesis = kinesis_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok());
        let sinks = Sinks::start(
            storage.clone(),
            config.sinks.clone(),
            crate::tls::box_id(&reset_key),
            own_kinesis,
        )
        .await
        .map_err(ServerError::Sinks)?;
        let (auth_storage, auth_config, auth_dir) =
            (storage.clone(), config.auth.clone(), dir.clone());
        let auth =
            tokio::task::spawn_blocking(move || Auth::open(auth_storage, &auth_config, &auth_dir))
                .await
                .map_err(|e| ServerError::Panicked {
                    step: "loading tokens",
                    reason: e.to_string(),
                })?
                .map_err(ServerError::Auth)?;
        // The first admin token, for clients in this process (bench, demo,
        // tests); absent when auth is off or the operator removed the file.
        let admin_token = weir_proto::io::read_token_file(&admin_token_path(&dir)).ok();
        let auth_enabled = auth.enabled();
        let service = Arc::new(Service::new(
            storage.clone(),
            processors.clone(),
            sinks.clone(),
            auth,
            config.limits,
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let admin_addr = match admin_listener {
            Some(listener) => {
                let bound = listener.local_addr().ok();
                tokio::spawn(crate::metrics::serve_admin(
                    listener,
                    service.clone(),
                    shutdown_rx.clone(),
                ));
                bound
            }
            None => None,
        };
        let kinesis_addr = match (kinesis_listener, http_tls) {
            (Some(listener), Some(tls)) => {
                let (service, config, shutdown) =
                    (service.clone(), config.kinesis.clone(), shutdown_rx.clone());
                tokio::spawn(async move {
                    crate::kinesis::serve(listener, tls, service, config, &reset_key, shutdown)
                        .await
                });
                own_kinesis
            }
            _ => None,
        };
        let accept_loop = tokio::spawn(transport::serve(endpoint, service, shutdown_rx));
        Ok(Self {
            local_addr,
            admin_addr,
            kinesis_addr,
            cert_path,
            generated_cert,
            cert_newly_generated,
            admin_token,
            auth_enabled,
            storage,
            processors,
            sinks,
            shutdown,
            accept_loop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, if the admin listener is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the Kinesis-compatible API is served, if it is on.
    pub fn kinesis_addr(&self) -> Option<SocketAddr> {
        self.kinesis_addr
    }

    /// The certificate clients should trust.
    pub fn cert_path(&self) -> &std::path::Path {
        &self.cert_path
    }

    /// How a client in this process reaches this server, as its first admin.
    pub fn access(&self) -> Access {
        Access {
            addr: self.local_addr,
            cert_path: self.cert_path.clone(),
            admin_token: self.admin_token.clone(),
        }
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth_enabled
    }

    pub fn generated_cert(&self) -> bool {
        self.generated_cert
    }

    /// The generated certificate was made at this start (first start, or
    /// `tls_names` changed).
    pub fn cert_newly_generated(&self) -> bool {
        self.cert_newly_generated
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Stops accepting, closes connections, commits what the writer has
    /// queued and syncs the journal.
    pub async fn shutdown(self) -> Result<(), StorageError> {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        self.processors.shutdown().await;
        self.sinks.shutdown().await;
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.shutdown())
            .await
            .unwrap_or(Err(StorageError::WriterStopped))
    }
}

/// The async runtime a server runs on, with `threads` threads (see
/// `server_threads`). One thread drives everything itself, without the
/// hand-offs between threads that a multi-threaded runtime makes.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("weir-server")
        .enable_all()
        .build()
}

/// A server running on its own thread with its own runtime (`server_threads`),
/// as `weir serve` runs it: for the benchmark and the demo, so the client
/// side of the same process does not share the server's thread.
pub struct ServerThread {
    access: Access,
    storage: Arc<Storage>,
    admin_addr: Option<SocketAddr>,
    kinesis_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), StorageError>>>,
}

impl ServerThread {
    pub fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let threads = config.server_threads();
        let thread = std::thread::Builder::new()
            .name("weir-server".into())
            .spawn(move || {
                let runtime = runtime(threads).map_err(|source| StorageError::Thread {
                    what: "server thread's async runtime",
                    source,
                })?;
                runtime.block_on(async move {
                    let server = match Server::start(config).await {
                        Ok(server) => server,
                        Err(error) => {
                            let _ = started_tx.send(Err(error));
                            return Ok(());
                        }
                    };
                    let info = (
                        server.access(),
                        server.storage().clone(),
                        server.admin_addr(),
                        server.kinesis_addr(),
                    );
                    let _ = started_tx.send(Ok(info));
                    let _ = stop_rx.await;
                    server.shutdown().await
                })
            })
            .map_err(|source| ServerError::Thread(format!("could not start it: {source}")))?;
        let (access, storage, admin_addr, kinesis_addr) = started_rx.recv().map_err(|_| {
            ServerError::Thread("it ended before the server started (see the log)".into())
        })??;
        Ok(Self {
            access,
            storage,
            admin_addr,
            kinesis_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.access.addr
    }

    /// How a client in this process reaches this server, as its first admin.
    pub fn access(&self) -> Access {
        self.access.clone()
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Where `/metrics` is served, if the admin listener is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Where the Kinesis-compatible API is served, if it is on.
    pub fn kinesis_addr(&self) -> Option<SocketAddr> {
        self.kinesis_addr
    }

    /// Shuts the server down gracefully and waits for its thread.
    pub fn shutdown(mut self) -> Result<(), StorageError> {
        self.stop.take().map(|stop| stop.send(()));
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(StorageError::WriterStopped),
            None => Ok(()),
        }
    }
}
