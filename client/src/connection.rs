//! The QUIC connection and one method per request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::Mutex;
use weir_proto::{
    Position, ProducerStamp, PutRecord, PutResult, RecordBatch, Request, Response, Retention,
    StreamDescription, decode_frame,
};

use crate::ClientError;
use crate::producer::{Producer, ProducerConfig};
use crate::subscription::{StreamSubscription, Subscription};
use weir_proto::admin::{
    AdminRequest, AdminResponse, PluginInfo, ProcessorInfo, ProcessorLimits, ProcessorSettings,
    StateEntry,
};

/// Where the server is and how to trust it.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: SocketAddr,
    /// The name the server's certificate must be valid for.
    pub server_name: String,
    /// PEM file with the certificate (or CA) to trust.
    pub ca_cert: PathBuf,
    /// PEM certificates to trust, given in memory; when set, `ca_cert` is
    /// not read.
    pub ca_pem: Option<Bytes>,
    /// Time allowed for one request, from sending it to its response. A
    /// request that times out fails alone; the connection and its other
    /// requests and subscriptions go on.
    pub request_timeout: Duration,
    /// Time allowed to establish a connection (QUIC and TLS handshake): a
    /// server that is not running is reported after this, not after
    /// `request_timeout`.
    pub connect_timeout: Duration,
    /// Largest response frame accepted.
    pub frame_bytes_max: usize,
    /// Presented once per connection (`Authenticate`); every request then
    /// acts with its roles. `None` only for servers with auth disabled.
    pub token: Option<String>,
}

impl ClientConfig {
    /// A server on this machine at the default address, trusting `ca_cert`.
    pub fn local(ca_cert: impl Into<PathBuf>) -> Self {
        Self::new(
            weir_proto::DEFAULT_LISTEN_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7720))),
            ca_cert,
        )
    }

    pub fn new(server: SocketAddr, ca_cert: impl Into<PathBuf>) -> Self {
        Self {
            server,
            server_name: weir_proto::DEFAULT_SERVER_NAME.to_owned(),
            ca_cert: ca_cert.into(),
            ca_pem: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            frame_bytes_max: 64 * 1024 * 1024,
            token: None,
        }
    }
}

struct Inner {
    endpoint: quinn::Endpoint,
    config: ClientConfig,
    /// Re-established on the next call after the connection is lost.
    connection: Mutex<Option<quinn::Connection>>,
}

/// A connection to one Weir server; cheap to clone, safe to share.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// How often an idle connection pings the server.
const CONNECTION_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// A connection whose server has answered nothing (not even a keep-alive)
/// for this long is closed, and the next call reconnects.
const CONNECTION_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

fn quic_client_config(config: &ClientConfig) -> Result<quinn::ClientConfig, ClientError> {
    let certificate_error = |reason: String| ClientError::Certificate {
        path: config.ca_cert.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let pem = match &config.ca_pem {
        Some(pem) => pem.to_vec(),
        None => crate::read_capped(&config.ca_cert, crate::CA_FILE_BYTES_MAX)
            .map_err(|e| certificate_error(e.to_string()))?,
    };
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| certificate_error(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| certificate_error(e.to_string()))?;
    }
    let provider = Arc::new(weir_proto::io::quic_crypto_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![weir_proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(CONNECTION_KEEP_ALIVE))
        .max_idle_timeout(quinn::IdleTimeout::try_from(CONNECTION_IDLE_TIMEOUT).ok());
    quic.transport_config(Arc::new(transport));
    Ok(quic)
}

impl Client {
    /// Connects (QUIC, TLS 1.3, ALPN `weir/1`) and checks the server answers.
    pub async fn connect(config: ClientConfig) -> Result<Self, ClientError> {
        let bind: SocketAddr = if config.server.is_ipv6() {
            "[::]:0".parse()
        } else {
            "0.0.0.0:0".parse()
        }
        .map_err(|e: std::net::AddrParseError| ClientError::Config(e.to_string()))?;
        let bind_error = |e: std::io::Error| ClientError::Connect {
            addr: config.server.to_string(),
            reason: e.to_string(),
        };
        let socket = crate::udp_socket(bind, crate::UDP_SOCKET_BUFFER_BYTES).map_err(bind_error)?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .map_err(bind_error)?;
        endpoint.set_default_client_config(quic_client_config(&config)?);
        let client = Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                connection: Mutex::new(None),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    pub fn server(&self) -> SocketAddr {
        self.inner.config.server
    }

    async fn connection(&self) -> Result<quinn::Connection, ClientError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(connection.clone());
        }
        let config = &self.inner.config;
        let connect_error = |reason: String| ClientError::Connect {
            addr: config.server.to_string(),
            reason,
        };
        let connecting = self
            .inner
            .endpoint
            .connect(config.server, &config.server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let connection = tokio::time::timeout(config.connect_timeout, connecting)
            .await
            .map_err(|_| {
                connect_error(format!(
                    "no Weir server answered within {:?} (is `weir serve` running there?)",
                    config.connect_timeout
                ))
            })?
            .map_err(|e| connect_error(e.to_string()))?;
        if let Some(token) = &config.token {
            self.authenticate(&connection, token).await?;
        }
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Presents the token on a new connection, before any other request.
    async fn authenticate(
        &self,
        connection: &quinn::Connection,
        token: &str,
    ) -> Result<(), ClientError> {
        let frame = encode(&Request::Authenticate {
            token: token.to_owned(),
        });
        let exchange = async {
            let lost = |e: &dyn std::fmt::Display| connection_lost(connection, e);
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
            send.write_all(&frame).await.map_err(|e| lost(&e))?;
            send.finish().map_err(|e| lost(&e))?;
            let mut buf = BytesMut::new();
            read_response(&mut recv, &mut buf, self.inner.config.frame_bytes_max).await
        };
        let response = tokio::time::timeout(self.inner.config.request_timeout, exchange)
            .await
            .map_err(|_| ClientError::Connection("no answer to Authenticate".into()))??;
        expect_ok(response)
    }

    async fn open(
        &self,
        connection: &quinn::Connection,
        frame: &Bytes,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), ClientError> {
        let lost = |e: &dyn std::fmt::Display| connection_lost(connection, e);
        let (mut send, recv) = connection.open_bi().await.map_err(|e| lost(&e))?;
        // Handed to quinn as one chunk, without copying: a frame is encoded
        // once (one copy of the records) and sent as is, even when retried.
        match send.write_all_chunks(&mut [frame.clone()]).await {
            Ok(()) => send.finish().map_err(|e| lost(&e))?,
            // The server answered before reading the whole request (it is
            // too large, say) and stopped the stream: read its answer.
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(error) => return Err(lost(&error)),
        }
        Ok((send, recv))
    }

    /// Sends an encoded request frame and returns the response; an error
    /// response becomes [`ClientError::Server`].
    pub async fn call_frame(&self, frame: &Bytes) -> Result<Response, ClientError> {
        let connection = self.connection().await?;
        let exchange = async {
            let (_send, mut recv) = self.open(&connection, frame).await?;
            let mut buf = BytesMut::new();
            read_response(&mut recv, &mut buf, self.inner.config.frame_bytes_max).await
        };
        // A request that takes too long fails alone: its stream is dropped
        // (and so reset), the connection and its subscriptions go on. A
        // restarted server resets the connection at once (stateless
        // reset); a vanished one is found by keep-alives within
        // CONNECTION_IDLE_TIMEOUT.
        tokio::time::timeout(self.inner.config.request_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ClientError::Connection(format!(
                    "no response within {:?} (request_timeout)",
                    self.inner.config.request_timeout
                )))
            })
    }

    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        self.call_frame(&encode(request)).await
    }

    pub async fn create_stream(
        &self,
        name: &str,
        shards: u32,
        retention: Retention,
    ) -> Result<(), ClientError> {
        let request = Request::CreateStream {
            name: name.to_owned(),
            shards,
            retention,
        };
        expect_ok(self.call(&request).await?)
    }

    pub async fn delete_stream(&self, name: &str) -> Result<(), ClientError> {
        expect_ok(
            self.call(&Request::DeleteStream {
                name: name.to_owned(),
            })
            .await?,
        )
    }

    pub async fn list_streams(&self) -> Result<Vec<String>, ClientError> {
        match self.call(&Request::ListStreams).await? {
            Response::Streams(names) => Ok(names),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn describe_stream(&self, name: &str) -> Result<StreamDescription, ClientError> {
        match self
            .call(&Request::DescribeStream {
                name: name.to_owned(),
            })
            .await?
        {
            Response::Stream(description) => Ok(description),
            other => Err(unexpected(&other)),
        }
    }

    /// One `PutRecords` request, answered per record. Without a stamp a
    /// retry may store records twice; [`Producer`] stamps its batches.
    pub async fn put_records(
        &self,
        stream: &str,
        producer: Option<ProducerStamp>,
        records: Vec<PutRecord>,
    ) -> Result<Vec<PutResult>, ClientError> {
        let request = Request::PutRecords {
            stream: stream.to_owned(),
            producer,
            records,
        };
        expect_put_results(self.call(&request).await?)
    }

    /// A batching, idempotent producer for `stream`.
    pub fn producer(&self, stream: &str, config: ProducerConfig) -> Producer {
        Producer::new(self.clone(), stream, config)
    }

    pub async fn get_records(
        &self,
        stream: &str,
        shard: u32,
        from: Position,
        limit: u32,
    ) -> Result<RecordBatch, ClientError> {
        let request = Request::GetRecords {
            stream: stream.to_owned(),
            shard,
            from,
            limit,
        };
        match self.call(&request).await? {
            Response::Records(batch) => Ok(batch),
            other => Err(unexpected(&other)),
        }
    }

    /// A live feed of one shard from `from`. Records arrive as they are
    /// committed; if the caller stops calling `next`, QUIC flow control
    /// stalls the feed on the server, not the server itself.
    pub async fn subscribe(
        &self,
        stream: &str,
        shard: u32,
        from: Position,
    ) -> Result<Subscription, ClientError> {
        let request = Request::Subscribe {
            stream: stream.to_owned(),
            shard,
            from,
        };
        let connection = self.connection().await?;
        let (send, recv) = self.open(&connection, &encode(&request)).await?;
        let feed = Subscription::new(send, recv, self.inner.config.frame_bytes_max);
        tokio::time::timeout(self.inner.config.request_timeout, feed.confirmed())
            .await
            .map_err(|_| ClientError::Connection("no subscription confirmation".into()))?
    }

    /// A live feed of every shard of `stream`, each from `from` (see
    /// [`StreamSubscription`]). To start each shard at its own position
    /// (a checkpoint, say), subscribe to the shards one by one and merge
    /// them with [`StreamSubscription::from_shards`].
    pub async fn subscribe_stream(
        &self,
        stream: &str,
        from: Position,
    ) -> Result<StreamSubscription, ClientError> {
        let description = self.describe_stream(stream).await?;
        let mut shards = Vec::with_capacity(description.shards.len());
        for shard in description.shards {
            shards.push((
                shard.shard,
                self.subscribe(stream, shard.shard, from).await?,
            ));
        }
        Ok(StreamSubscription::from_shards(shards))
    }

    /// Stores `consumer`'s position in a shard on the server.
    pub async fn commit_checkpoint(
        &self,
        consumer: &str,
        stream: &str,
        shard: u32,
        sequence: u64,
    ) -> Result<(), ClientError> {
        let request = Request::CommitCheckpoint {
            consumer: consumer.to_owned(),
            stream: stream.to_owned(),
            shard,
            sequence,
        };
        expect_ok(self.call(&request).await?)
    }

    pub async fn checkpoint(
        &self,
        consumer: &str,
        stream: &str,
        shard: u32,
    ) -> Result<Option<u64>, ClientError> {
        let request = Request::GetCheckpoint {
            consumer: consumer.to_owned(),
            stream: stream.to_owned(),
            shard,
        };
        match self.call(&request).await? {
            Response::Checkpoint(sequence) => Ok(sequence),
            other => Err(unexpected(&other)),
        }
    }

    /// Uploads a Wasm component as plugin `name`; the server validates,
    /// stores and compiles it.
    pub async fn add_plugin(
        &self,
        name: &str,
        component: Bytes,
    ) -> Result<PluginInfo, ClientError> {
        let request = Request::AddPlugin {
            name: name.to_owned(),
            component,
        };
        match self.call(&request).await? {
            Response::Admin(AdminResponse::Plugin(info)) => Ok(info),
            other => Err(unexpected(&other)),
        }
    }

    /// Attaches a plugin to a stream; answers with its description once
    /// the plugin's `init` accepted the config and the workers started.
    pub async fn create_processor(
        &self,
        settings: ProcessorSettings,
    ) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(AdminRequest::CreateProcessor(Box::new(settings)))
            .await
    }

    /// A processor's settings and per-shard progress.
    pub async fn describe_processor(&self, name: &str) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(AdminRequest::DescribeProcessor {
            name: name.to_owned(),
        })
        .await
    }

    /// Every processor (without per-shard progress).
    pub async fn list_processors(&self) -> Result<Vec<ProcessorInfo>, ClientError> {
        match self.admin(AdminRequest::ListProcessors).await? {
            AdminResponse::Processors(processors) => Ok(processors),
            other => Err(unexpected_admin(&other)),
        }
    }

    /// Changes a processor's limits; its workers restart from their cursors.
    pub async fn update_processor(
        &self,
        name: &str,
        limits: ProcessorLimits,
    ) -> Result<ProcessorInfo, ClientError> {
        self.processor_call(AdminRequest::UpdateProcessor {
            name: name.to_owned(),
            limits,
        })
        .await
    }

    /// Stops a processor's workers at their cursors until resumed.
    pub async fn pause_processor(&self, name: &str) -> Result<(), ClientError> {
        self.admin_done(AdminRequest::PauseProcessor {
            name: name.to_owned(),
        })
        .await
    }

    /// Restarts a paused (or halted) processor from its cursors.
    pub async fn resume_processor(&self, name: &str) -> Result<(), ClientError> {
        self.admin_done(AdminRequest::ResumeProcessor {
            name: name.to_owned(),
        })
        .await
    }

    /// Removes a processor, its cursors and state (its output stream stays).
    pub async fn remove_processor(&self, name: &str) -> Result<(), ClientError> {
        self.admin_done(AdminRequest::DeleteProcessor {
            name: name.to_owned(),
        })
        .await
    }

    async fn processor_call(&self, request: AdminRequest) -> Result<ProcessorInfo, ClientError> {
        match self.admin(request).await? {
            AdminResponse::Processor(info) => Ok(*info),
            other => Err(unexpected_admin(&other)),
        }
    }

    async fn admin_done(&self, request: AdminRequest) -> Result<(), ClientError> {
        match self.admin(request).await? {
            AdminResponse::Done => Ok(()),
            other => Err(unexpected_admin(&other)),
        }
    }

    /// Sends a control-plane request (plugins, processors, state).
    pub async fn admin(&self, request: AdminRequest) -> Result<AdminResponse, ClientError> {
        match self.call(&Request::Admin(request)).await? {
            Response::Admin(response) => Ok(response),
            other => Err(unexpected(&other)),
        }
    }

    /// A processor's aggregate state: one key (in every shard), or every key
    /// starting with `prefix` (all keys if neither), at most `limit` entries.
    pub async fn state(
        &self,
        processor: &str,
        key: Option<&str>,
        prefix: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StateEntry>, ClientError> {
        let request = AdminRequest::GetState {
            processor: processor.to_owned(),
            key: key.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
            limit,
        };
        match self.admin(request).await? {
            AdminResponse::State(entries) => Ok(entries),
            other => Err(unexpected(&Response::Admin(other))),
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        if let Some(connection) = self.inner.connection.lock().await.take() {
            connection.close(0u32.into(), b"client closed");
        }
        self.inner.endpoint.wait_idle().await;
    }
}

pub(crate) fn encode(request: &Request) -> Bytes {
    let mut buf = BytesMut::new();
    request.encode(&mut buf);
    buf.freeze()
}

/// The first whole response frame in `buf`, taken out of it; `None` until
/// one has fully arrived. An error response becomes [`ClientError::Server`].
pub(crate) fn take_response(
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Response>, ClientError> {
    let Some(frame) =
        decode_frame(buf, frame_bytes_max).map_err(|e| ClientError::Protocol(e.to_string()))?
    else {
        return Ok(None);
    };
    match Response::decode(frame).map_err(|e| ClientError::Protocol(e.to_string()))? {
        Response::Error { code, message } => Err(ClientError::Server { code, message }),
        response => Ok(Some(response)),
    }
}

async fn read_response(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Response, ClientError> {
    loop {
        if let Some(response) = take_response(buf, frame_bytes_max)? {
            return Ok(response);
        }
        match recv.read_chunk(frame_bytes_max, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(ClientError::Connection(
                    "the server ended the stream early".into(),
                ));
            }
            Err(quinn::ReadError::ConnectionLost(error)) => return Err(closed(&error)),
            Err(e) => return Err(ClientError::Connection(e.to_string())),
        }
    }
}

/// A lost connection, with the server's reason when it closed it (for
/// example "connections_max (1024) reached").
fn connection_lost(connection: &quinn::Connection, error: &dyn std::fmt::Display) -> ClientError {
    match connection.close_reason() {
        Some(reason) => closed(&reason),
        None => ClientError::Connection(error.to_string()),
    }
}

pub(crate) fn closed(error: &quinn::ConnectionError) -> ClientError {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => ClientError::Connection(format!(
            "closed by the server: {}",
            String::from_utf8_lossy(&close.reason)
        )),
        other => ClientError::Connection(other.to_string()),
    }
}

fn unexpected_admin(response: &AdminResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected admin answer: {response:?}"))
}

fn expect_ok(response: Response) -> Result<(), ClientError> {
    match response {
        Response::Ok => Ok(()),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn expect_put_results(response: Response) -> Result<Vec<PutResult>, ClientError> {
    match response {
        Response::PutResults(results) => Ok(results),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn unexpected(response: &Response) -> ClientError {
    let kind = match response {
        Response::Ok => "Ok",
        Response::Streams(_) => "Streams",
        Response::Stream(_) => "Stream",
        Response::PutResults(_) => "PutResults",
        Response::Records(_) => "Records",
        Response::Checkpoint(_) => "Checkpoint",
        Response::Admin(_) => "Admin",
        Response::Error { .. } => "Error",
    };
    ClientError::Protocol(format!("unexpected {kind} response for this request"))
}
