//! The QUIC side of the server: the only module that imports quinn.
//!
//! Each request arrives on its own bidirectional stream, so requests to
//! different shards never wait behind one another. A stream carries one
//! request frame; the answer is one response frame (or, for a subscription,
//! one frame per batch until the client stops reading).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use weir_proto::{
    DecodeError, ErrorCode, FRAME_HEADER_BYTES, Frame, Request, Response, body_len, decode_frame,
};

use crate::auth::Session;
use crate::service::{Reply, Service, Subscription};
use crate::tls::ServerIdentity;

/// Application close codes sent with CONNECTION_CLOSE.
pub mod close_code {
    pub const SHUTDOWN: u32 = 0;
    /// `connections_max` is reached; the reason says so.
    pub const TOO_MANY_CONNECTIONS: u32 = 1;
    /// The connection did not authenticate in time, or made room for
    /// newer ones while it had not (`connections_unauthenticated_max`).
    pub const NOT_AUTHENTICATED: u32 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("binding the {listener} to {addr}: {source}{}", in_use_hint(source))]
    Bind {
        listener: Listener,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("QUIC TLS configuration: {0}")]
    QuicTls(String),
}

/// The server's listeners, as a bind error names them: the protocol and
/// the setting (and flag) that moves each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Quic,
    Admin,
    Kinesis,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Quic => "QUIC listener (UDP; setting listen, flag --listen)",
            Self::Admin => "admin listener (TCP; setting admin_listen, flag --admin-listen)",
            Self::Kinesis => {
                "Kinesis API listener (TCP; setting kinesis_listen, flag --kinesis-listen)"
            }
        })
    }
}

impl TransportError {
    /// What a failed bind of `listener` to `addr` becomes.
    pub fn bind(listener: Listener, addr: SocketAddr) -> impl Fn(std::io::Error) -> Self + Copy {
        move |source| Self::Bind {
            listener,
            addr,
            source,
        }
    }
}

fn in_use_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        " (another program, perhaps another Weir server, has it: stop it or pick another address)"
    } else {
        ""
    }
}

/// Binds the QUIC endpoint. `reset_key` signs stateless resets: kept
/// across restarts, so clients of a server that crashed learn at their
/// next packet that their connection is gone instead of waiting for the
/// idle timeout.
pub fn bind(
    addr: SocketAddr,
    identity: ServerIdentity,
    reset_key: &[u8],
    limits: &crate::config::Limits,
) -> Result<quinn::Endpoint, TransportError> {
    let tls = crate::tls::server_config(identity)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TransportError::QuicTls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.connection_streams_max.into())
        .max_concurrent_uni_streams(0u32.into())
        // Bytes a client may have in flight on the connection before it
        // must wait for the server to read: QUIC's own buffering is part
        // of the connection's share.
        .receive_window(
            quinn::VarInt::from_u64(limits.connection_buffered_bytes_max as u64)
                .unwrap_or(quinn::VarInt::MAX),
        )
        // Answers sent but not yet acknowledged, kept for retransmission:
        // a slow link or a client that stops acknowledging holds at most
        // this much. (QUIC sends only what the client's flow control
        // allows, so a subscriber that stops reading holds its one unsent
        // batch in the subscription, not here.)
        .send_window(limits.connection_send_buffer_bytes_max as u64)
        .max_idle_timeout(
            quinn::IdleTimeout::try_from(Duration::from_millis(limits.connection_idle_timeout_ms))
                .ok(),
        );
    config.transport_config(Arc::new(transport));
    // Connection attempts queued before the accept loop sees them.
    config.max_incoming(limits.handshakes_max);
    let bind_error = TransportError::bind(Listener::Quic, addr);
    let socket = weir_proto::io::udp_socket(addr, weir_proto::io::UDP_SOCKET_BUFFER_BYTES)
        .map_err(bind_error)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset_key,
    )));
    // Connection ids carry a keyed hash that the server checks before it
    // answers a packet for an unknown connection with a reset: the same
    // key across restarts, or the old connections' packets are dropped
    // unanswered.
    let cid_key = connection_id_key(reset_key);
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(endpoint_config, Some(config), socket, runtime).map_err(bind_error)
}

/// The connection-id hash key, derived from the reset key.
fn connection_id_key(reset_key: &[u8]) -> u64 {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &[b"weir connection ids".as_slice(), reset_key].concat(),
    );
    let mut key = [0; 8];
    key.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_le_bytes(key)
}

/// Accepts connections until `shutdown` turns true, then closes them all.
pub async fn serve(
    endpoint: quinn::Endpoint,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
) {
    let admission = Arc::new(Admission::default());
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if let Some(handshake) = admission.admit(incoming, &service) {
                    tokio::spawn(handle_connection(handshake, service.clone(), admission.clone()));
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    endpoint.close(close_code::SHUTDOWN.into(), b"server shutting down");
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, endpoint.wait_idle()).await;
}

/// Bounds what connections cost before they have shown who they are:
/// handshakes in progress (`handshakes_max`) and connections that have not
/// authenticated (`connections_unauthenticated_max`).
#[derive(Default)]
struct Admission {
    handshakes: std::sync::atomic::AtomicUsize,
    /// Unauthenticated connections by admission order, oldest first.
    unauthenticated: std::sync::Mutex<std::collections::BTreeMap<u64, quinn::Connection>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// A handshake counted against `handshakes_max` until it ends.
struct Handshake {
    incoming: quinn::Incoming,
    counted: HandshakeCount,
}

struct HandshakeCount(Arc<Admission>);

impl Drop for HandshakeCount {
    fn drop(&mut self) {
        self.0.handshakes.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An unauthenticated connection's place in [`Admission`], given up when
/// it authenticates or ends.
struct PendingAuth {
    admission: Arc<Admission>,
    id: u64,
}

impl Drop for PendingAuth {
    fn drop(&mut self) {
        self.admission.unauthenticated().remove(&self.id);
    }
}

impl Admission {
    fn unauthenticated(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, quinn::Connection>> {
        self.unauthenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a connection attempt proceed, or answers it without keeping
    /// any state: over a quarter of `handshakes_max` in progress, a client
    /// that has not proven its address gets a Retry (spoofed floods cost
    /// nothing); at `handshakes_max`, it is refused.
    fn admit(self: &Arc<Self>, incoming: quinn::Incoming, service: &Service) -> Option<Handshake> {
        let (limits, metrics) = (&service.limits, &service.metrics);
        let in_progress = self.handshakes.load(Ordering::Acquire);
        if in_progress >= limits.handshakes_max {
            tracing::debug!(in_progress, "handshake refused: handshakes_max reached");
            metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            return None;
        }
        if in_progress >= limits.handshakes_max / 4
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            metrics.handshake_retries.fetch_add(1, Ordering::Relaxed);
            let _ = incoming.retry();
            return None;
        }
        self.handshakes.fetch_add(1, Ordering::AcqRel);
        Some(Handshake {
            incoming,
            counted: HandshakeCount(self.clone()),
        })
    }

    /// Counts `connection` as unauthenticated, closing the oldest such
    /// connection when there are more than `unauthenticated_max`.
    fn hold_unauthenticated(
        self: &Arc<Self>,
        connection: &quinn::Connection,
        service: &Service,
    ) -> PendingAuth {
        let unauthenticated_max = service.limits.connections_unauthenticated_max;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut waiting = self.unauthenticated();
        waiting.insert(id, connection.clone());
        while waiting.len() > unauthenticated_max {
            let Some((_, oldest)) = waiting.pop_first() else {
                break;
            };
            let reason = format!(
                "connections_unauthenticated_max ({unauthenticated_max}) reached: \
                 this connection had not authenticated"
            );
            // Debug, not warn: under a flood a line per eviction is itself
            // a cost; the counter shows it.
            tracing::debug!(peer = %oldest.remote_address(), "{reason}");
            service
                .metrics
                .unauthenticated_closed
                .fetch_add(1, Ordering::Relaxed);
            oldest.close(close_code::NOT_AUTHENTICATED.into(), reason.as_bytes());
        }
        PendingAuth {
            admission: self.clone(),
            id,
        }
    }
}

async fn handle_connection(handshake: Handshake, service: Arc<Service>, admission: Arc<Admission>) {
    let auth_timeout = Duration::from_millis(service.limits.connection_auth_timeout_ms);
    let connection = match tokio::time::timeout(auth_timeout, handshake.incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("handshake timed out (connection_auth_timeout_ms)");
            return;
        }
    };
    drop(handshake.counted);
    let peer = connection.remote_address();
    let connections_max = service.limits.connections_max;
    let open = service.metrics.connections.fetch_add(1, Ordering::AcqRel);
    let _open_guard = ConnectionCount(service.clone());
    if open >= connections_max {
        let reason = format!("connections_max ({connections_max}) reached; try again later");
        connection.close(close_code::TOO_MANY_CONNECTIONS.into(), reason.as_bytes());
        tracing::warn!(%peer, connections_max, "connection refused: connections_max reached");
        return;
    }
    let per_address_max = service.limits.connections_per_address_max;
    let Some(_address_guard) = service
        .connections_by_address
        .acquire(peer.ip(), per_address_max)
    else {
        let reason = format!(
            "connections_per_address_max ({per_address_max}) reached for {}; try again later",
            peer.ip()
        );
        connection.close(close_code::TOO_MANY_CONNECTIONS.into(), reason.as_bytes());
        tracing::warn!(%peer, per_address_max, "connection refused: connections_per_address_max reached");
        return;
    };
    tracing::debug!(%peer, "connection accepted");
    let pending_auth = service
        .auth
        .enabled()
        .then(|| admission.hold_unauthenticated(&connection, &service));
    // Watched until it fires once: a fired `Sleep` stays ready.
    let mut must_authenticate = pending_auth.is_some();
    let context = Arc::new(ConnectionContext {
        session: Session::default(),
        buffer: ConnectionBuffer::new(&service.limits),
        pending_auth: std::sync::Mutex::new(pending_auth),
    });
    let auth_deadline = tokio::time::sleep(auth_timeout);
    tokio::pin!(auth_deadline);
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    tokio::spawn(handle_stream(send, recv, service.clone(), context.clone()));
                }
                Err(error) => {
                    tracing::debug!(%peer, %error, "connection ended");
                    return;
                }
            },
            () = &mut auth_deadline, if must_authenticate => {
                must_authenticate = false;
                if !context.session.has_authenticated() {
                    let reason = format!(
                        "not authenticated within connection_auth_timeout_ms ({} ms)",
                        auth_timeout.as_millis()
                    );
                    tracing::debug!(%peer, "{reason}");
                    service
                        .metrics
                        .unauthenticated_closed
                        .fetch_add(1, Ordering::Relaxed);
                    connection.close(close_code::NOT_AUTHENTICATED.into(), reason.as_bytes());
                    return;
                }
            }
        }
    }
}

/// What a connection's streams share: who it authenticated as and its
/// share of the request buffers.
struct ConnectionContext {
    session: Session,
    buffer: ConnectionBuffer,
    /// Held until the connection authenticates.
    pending_auth: std::sync::Mutex<Option<PendingAuth>>,
}

/// Counts a connection as open for as long as it lives.
struct ConnectionCount(Arc<Service>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.metrics.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

enum ReadOutcome {
    Frame(Frame, BufferPermit),
    Decode(DecodeError),
    EndedEarly,
    TimedOut,
    /// The connection's or the server's buffer budget stayed full.
    NoBuffer(String),
    /// A plugin upload over `plugin_bytes_max`, refused from its length.
    TooLarge(String),
    Reset,
}

/// Request bytes one connection may hold in memory, and the server's
/// budget all connections share: a client that sends large requests fast
/// waits for its own share first, so it can take at most that much of the
/// server's.
struct ConnectionBuffer {
    share: Arc<Semaphore>,
    share_bytes: usize,
}

impl ConnectionBuffer {
    fn new(limits: &crate::config::Limits) -> Self {
        Self {
            share: Arc::new(Semaphore::new(limits.connection_buffered_bytes_max)),
            share_bytes: limits.connection_buffered_bytes_max,
        }
    }
}

/// Budget held by one request until it is answered.
struct BufferPermit {
    _connection: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

/// Reserves `bytes` of the connection's share and of the server's budget
/// (a request larger than either takes all of it, alone).
async fn reserve(
    buffer: &ConnectionBuffer,
    service: &Service,
    bytes: usize,
) -> Result<BufferPermit, String> {
    let limits = &service.limits;
    let wait = Duration::from_millis(limits.buffer_wait_timeout_ms);
    let connection = acquire(&buffer.share, buffer.share_bytes, bytes, wait)
        .await
        .ok_or_else(|| {
            format!(
                "this connection's requests fill connection_buffered_bytes_max ({} bytes); \
                 wait for answers before sending more",
                buffer.share_bytes
            )
        })?;
    let server = acquire(
        &service.buffered,
        limits.server_buffered_bytes_max,
        bytes,
        wait,
    )
    .await
    .ok_or_else(|| {
        format!(
            "the server's request buffers are full (server_buffered_bytes_max, {} bytes); retry",
            limits.server_buffered_bytes_max
        )
    })?;
    Ok(BufferPermit {
        _connection: connection,
        _server: server,
    })
}

/// `bytes` (at most `capacity`) permits of a byte budget, if they come
/// within `wait`.
async fn acquire(
    budget: &Arc<Semaphore>,
    capacity: usize,
    bytes: usize,
    wait: Duration,
) -> Option<OwnedSemaphorePermit> {
    let permits = u32::try_from(bytes.clamp(1, capacity.max(1))).unwrap_or(u32::MAX);
    tokio::time::timeout(wait, budget.clone().acquire_many_owned(permits))
        .await
        .ok()?
        .ok()
}

/// Bytes of an upload frame besides the component (the plugin's name and
/// the field lengths).
const UPLOAD_FRAME_OVERHEAD_BYTES: usize = 64 * 1024;

/// How long a stopping server waits for its clients to acknowledge the
/// close before it exits anyway.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(2);

/// Reads one request frame: its length and kind first, then — once the
/// frame's bytes are reserved from the buffer budgets — the rest. A plugin
/// upload may be as large as `plugin_bytes_max`; every other request at
/// most `frame_bytes_max`.
async fn read_request(
    recv: &mut quinn::RecvStream,
    service: &Service,
    buffer: &ConnectionBuffer,
) -> ReadOutcome {
    let plugin_bytes_max = service.processors.plugin_bytes_max();
    let upload_bytes_max = plugin_bytes_max + UPLOAD_FRAME_OVERHEAD_BYTES;
    let timeout = Duration::from_millis(service.limits.request_read_timeout_ms);
    let mut buf = BytesMut::new();
    if let Err(outcome) = fill(recv, &mut buf, FRAME_HEADER_BYTES, timeout).await {
        return outcome;
    }
    let mut header = [0; FRAME_HEADER_BYTES];
    header.copy_from_slice(&buf);
    // The length alone (an empty frame is refused here); its limit depends
    // on the kind, which comes next.
    let body_bytes = match body_len(header, usize::MAX) {
        Ok(body_bytes) => body_bytes,
        Err(error) => return ReadOutcome::Decode(error),
    };
    if let Err(outcome) = fill(recv, &mut buf, FRAME_HEADER_BYTES + 1, timeout).await {
        return outcome;
    }
    let frame_bytes_max = if buf[FRAME_HEADER_BYTES] == weir_proto::message::kind::ADD_PLUGIN {
        if body_bytes > upload_bytes_max {
            return ReadOutcome::TooLarge(format!(
                "the upload is {body_bytes} bytes, over plugin_bytes_max ({plugin_bytes_max} \
                 bytes) for the component; the server did not read it"
            ));
        }
        upload_bytes_max
    } else {
        service.limits.frame_bytes_max
    };
    if let Err(error) = body_len(header, frame_bytes_max) {
        return ReadOutcome::Decode(error);
    }
    let frame_bytes = FRAME_HEADER_BYTES + body_bytes;
    let permit = match reserve(buffer, service, frame_bytes).await {
        Ok(permit) => permit,
        Err(reason) => return ReadOutcome::NoBuffer(reason),
    };
    buf.reserve(frame_bytes - buf.len());
    if let Err(outcome) = fill(recv, &mut buf, frame_bytes, timeout).await {
        return outcome;
    }
    match decode_frame(&mut buf, frame_bytes_max) {
        Ok(Some(frame)) => ReadOutcome::Frame(frame, permit),
        Ok(None) => ReadOutcome::EndedEarly,
        Err(error) => ReadOutcome::Decode(error),
    }
}

/// Reads from `recv` until `buf` holds `len` bytes, within `timeout`.
async fn fill(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    len: usize,
    timeout: Duration,
) -> Result<(), ReadOutcome> {
    let read = async {
        while buf.len() < len {
            match recv.read_chunk(len - buf.len(), true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err(ReadOutcome::EndedEarly),
                Err(_) => return Err(ReadOutcome::Reset),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ReadOutcome::TimedOut))
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    service: Arc<Service>,
    connection: Arc<ConnectionContext>,
) {
    // Held until the request is answered: its records stay in memory
    // until the writer has committed them.
    let mut permit = None;
    let reading = std::time::Instant::now();
    let read = read_request(&mut recv, &service, &connection.buffer).await;
    service.metrics.request_read.observe(reading.elapsed());
    let request = match read {
        ReadOutcome::Frame(frame, reserved) => {
            permit = Some(reserved);
            Request::decode(frame).map_err(|error| {
                let code = match error {
                    DecodeError::UnknownKind { .. } => ErrorCode::UnexpectedMessage,
                    _ => ErrorCode::MalformedFrame,
                };
                Response::error(code, error.to_string())
            })
        }
        ReadOutcome::NoBuffer(reason) => Err(Response::error(ErrorCode::Overloaded, reason)),
        ReadOutcome::TooLarge(reason) => Err(Response::error(ErrorCode::InvalidPlugin, reason)),
        ReadOutcome::Decode(error) => {
            let code = match error {
                DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
                _ => ErrorCode::MalformedFrame,
            };
            Err(Response::error(code, error.to_string()))
        }
        ReadOutcome::EndedEarly => Err(Response::error(
            ErrorCode::MalformedFrame,
            "the stream ended before a complete request frame",
        )),
        ReadOutcome::TimedOut => Err(Response::error(
            ErrorCode::RequestTimeout,
            format!(
                "no complete request within {} ms (request_read_timeout_ms)",
                service.limits.request_read_timeout_ms
            ),
        )),
        ReadOutcome::Reset => return,
    };
    // The request is in hand: stop the peer from sending more on this stream.
    let _ = recv.stop(0u32.into());
    let reply = match request {
        Ok(request) => {
            let authenticating = matches!(request, Request::Authenticate { .. });
            let reply = service.handle(request, &connection.session).await;
            if authenticating && connection.session.has_authenticated() {
                connection
                    .pending_auth
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
            }
            reply
        }
        Err(response) => Reply::Response(response),
    };
    match reply {
        Reply::Response(response) => {
            if send.write_chunk(encode(response).await).await.is_ok() {
                let _ = send.finish();
            }
        }
        Reply::Subscription(mut subscription) => {
            drop(permit);
            // Confirm first, so the client knows where the feed starts
            // before it produces anything it expects to see.
            let confirmation = encode(Response::Records(subscription.confirmation())).await;
            if send.write_chunk(confirmation).await.is_err() {
                return;
            }
            stream_batches(&mut send, &mut subscription, |stream| {
                service.may_consume(&connection.session, stream)
            })
            .await;
        }
    }
}

/// Responses up to this size are encoded on the async thread; larger ones
/// (pages of records, up to megabytes) on the blocking pool, so copying
/// them does not hold up every other connection's packets. The encoded
/// frame goes to quinn as it is, without another copy.
const INLINE_ENCODE_BYTES_MAX: usize = 64 * 1024;

async fn encode(response: Response) -> Bytes {
    fn frame(response: Response) -> Bytes {
        let mut buf = BytesMut::new();
        response.encode(&mut buf);
        buf.freeze()
    }
    let large = matches!(&response, Response::Records(batch) if batch.encoded_len() > INLINE_ENCODE_BYTES_MAX);
    if !large {
        return frame(response);
    }
    tokio::task::spawn_blocking(move || frame(response))
        .await
        .unwrap_or_else(|error| {
            let message = format!("encoding a response failed: {error}");
            frame(Response::error(ErrorCode::Internal, message))
        })
}

/// Writes batches until the client stops the stream, an error ends it or
/// the connection may no longer read the stream (`allowed`).
async fn stream_batches(
    send: &mut quinn::SendStream,
    subscription: &mut Subscription,
    allowed: impl Fn(&str) -> Result<(), crate::service::RequestError>,
) {
    loop {
        let batch = tokio::select! {
            batch = subscription.next_batch() => batch,
            _ = send.stopped() => return,
        };
        let batch = batch.and_then(|batch| allowed(subscription.stream()).map(|()| batch));
        let (response, last) = match batch {
            Ok(batch) => (Response::Records(batch), false),
            Err(error) => (Response::from(error), true),
        };
        // A stalled subscriber keeps one encoded batch, not also the
        // records it was encoded from.
        if send.write_chunk(encode(response).await).await.is_err() {
            return;
        }
        if last {
            let _ = send.finish();
            return;
        }
    }
}
