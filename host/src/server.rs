//! A running server: storage, service and QUIC endpoint, with a shutdown
//! that stops accepting, lets the writer commit what is queued, and syncs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ServerConfig;
use crate::service::Service;
use crate::storage::{Storage, StorageError};
use crate::transport::{self, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening storage in {dir}: {source}")]
    Storage { dir: PathBuf, source: StorageError },
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("creating data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

pub struct Server {
    local_addr: SocketAddr,
    cert_path: PathBuf,
    generated_cert: bool,
    storage: Arc<Storage>,
    shutdown: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
}

impl Server {
    /// Opens the data directory and starts serving on `config.listen`
    /// (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn start(config: ServerConfig) -> Result<Self, ServerError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::DataDir {
            dir: dir.clone(),
            source,
        })?;
        let identity = crate::tls::load_or_generate(
            &dir,
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
        )
        .map_err(TransportError::from)?;
        let cert_path = identity.cert_path.clone();
        let generated_cert = identity.generated;
        let storage_config = config.storage.clone();
        let db_dir = dir.join("db");
        let storage = tokio::task::spawn_blocking(move || Storage::open(&db_dir, storage_config))
            .await
            .map_err(|e| ServerError::Storage {
                dir: dir.clone(),
                source: StorageError::Corrupt {
                    what: if e.is_panic() {
                        "storage (panicked while opening)"
                    } else {
                        "storage"
                    },
                },
            })?
            .map_err(|source| ServerError::Storage {
                dir: dir.clone(),
                source,
            })?;
        let endpoint = transport::bind(config.listen, identity, &config.limits)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let service = Arc::new(Service::new(storage.clone(), config.limits));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let accept_loop = tokio::spawn(transport::serve(endpoint, service, shutdown_rx));
        Ok(Self {
            local_addr,
            cert_path,
            generated_cert,
            storage,
            shutdown,
            accept_loop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificate clients should trust.
    pub fn cert_path(&self) -> &std::path::Path {
        &self.cert_path
    }

    pub fn generated_cert(&self) -> bool {
        self.generated_cert
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Stops accepting, closes connections, commits what the writer has
    /// queued and syncs the journal.
    pub async fn shutdown(self) -> Result<(), StorageError> {
        let _ = self.shutdown.send(true);
        let _ = self.accept_loop.await;
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.shutdown())
            .await
            .unwrap_or(Err(StorageError::WriterStopped))
    }
}
