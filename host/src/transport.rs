//! The QUIC side of the server: the only module that imports quinn.
//!
//! Each request arrives on its own bidirectional stream, so requests to
//! different shards never wait behind one another. A stream carries one
//! request frame; the answer is one response frame (or, for a subscription,
//! one frame per batch until the client stops reading).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
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
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("binding UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("QUIC TLS configuration: {0}")]
    QuicTls(String),
}

/// Binds the QUIC endpoint.
pub fn bind(
    addr: SocketAddr,
    identity: ServerIdentity,
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
    let bind_error = |source| TransportError::Bind { addr, source };
    let socket =
        weir_client::udp_socket(addr, weir_client::UDP_SOCKET_BUFFER_BYTES).map_err(bind_error)?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(config),
        socket,
        runtime,
    )
    .map_err(bind_error)
}

/// Accepts connections until `shutdown` turns true, then closes them all.
pub async fn serve(
    endpoint: quinn::Endpoint,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(handle_connection(incoming, service.clone()));
            }
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    endpoint.close(close_code::SHUTDOWN.into(), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
}

async fn handle_connection(incoming: quinn::Incoming, service: Arc<Service>) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
    };
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
    let Some(_address_guard) = AddressCount::acquire(&service, peer.ip()) else {
        let per_address_max = service.limits.connections_per_address_max;
        let reason = format!(
            "connections_per_address_max ({per_address_max}) reached for {}; try again later",
            peer.ip()
        );
        connection.close(close_code::TOO_MANY_CONNECTIONS.into(), reason.as_bytes());
        tracing::warn!(%peer, per_address_max, "connection refused: connections_per_address_max reached");
        return;
    };
    tracing::debug!(%peer, "connection accepted");
    let context = Arc::new(ConnectionContext {
        session: Session::default(),
        buffer: ConnectionBuffer::new(&service.limits),
    });
    loop {
        match connection.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(handle_stream(send, recv, service.clone(), context.clone()));
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "connection ended");
                return;
            }
        }
    }
}

/// What a connection's streams share: who it authenticated as and its
/// share of the request buffers.
struct ConnectionContext {
    session: Session,
    buffer: ConnectionBuffer,
}

/// Counts a connection as open for as long as it lives.
struct ConnectionCount(Arc<Service>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.metrics.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a connection against its address's share for as long as it lives.
struct AddressCount {
    service: Arc<Service>,
    address: IpAddr,
}

impl AddressCount {
    /// None when the address already has `connections_per_address_max`.
    fn acquire(service: &Arc<Service>, address: IpAddr) -> Option<Self> {
        let mut counts = service
            .connections_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_default();
        if *count >= service.limits.connections_per_address_max {
            return None;
        }
        *count += 1;
        Some(Self {
            service: service.clone(),
            address,
        })
    }
}

impl Drop for AddressCount {
    fn drop(&mut self) {
        let mut counts = self
            .service
            .connections_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

enum ReadOutcome {
    Frame(Frame, BufferPermit),
    Decode(DecodeError),
    EndedEarly,
    TimedOut,
    /// The connection's or the server's buffer budget stayed full.
    NoBuffer(String),
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

/// Reads one request frame: its length first, then — once the frame's
/// bytes are reserved from the buffer budgets — its body.
async fn read_request(
    recv: &mut quinn::RecvStream,
    service: &Service,
    buffer: &ConnectionBuffer,
) -> ReadOutcome {
    let frame_bytes_max = service.limits.frame_bytes_max;
    let timeout = Duration::from_millis(service.limits.request_read_timeout_ms);
    let mut buf = BytesMut::new();
    if let Err(outcome) = fill(recv, &mut buf, FRAME_HEADER_BYTES, timeout).await {
        return outcome;
    }
    let mut header = [0; FRAME_HEADER_BYTES];
    header.copy_from_slice(&buf);
    let frame_bytes = match body_len(header, frame_bytes_max) {
        Ok(body_bytes) => FRAME_HEADER_BYTES + body_bytes,
        Err(error) => return ReadOutcome::Decode(error),
    };
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
    let request = match read_request(&mut recv, &service, &connection.buffer).await {
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
        Ok(request) => service.handle(request, &connection.session).await,
        Err(response) => Reply::Response(response),
    };
    let mut buf = BytesMut::new();
    match reply {
        Reply::Response(response) => {
            response.encode(&mut buf);
            if send.write_all(&buf).await.is_ok() {
                let _ = send.finish();
            }
        }
        Reply::Subscription(mut subscription) => {
            drop(permit);
            // Confirm first, so the client knows where the feed starts
            // before it produces anything it expects to see.
            Response::Records(subscription.confirmation()).encode(&mut buf);
            if send.write_all(&buf).await.is_err() {
                return;
            }
            stream_batches(&mut send, &mut subscription, &mut buf, |stream| {
                service.may_consume(&connection.session, stream)
            })
            .await;
        }
    }
}

/// Writes batches until the client stops the stream, an error ends it or
/// the connection may no longer read the stream (`allowed`).
async fn stream_batches(
    send: &mut quinn::SendStream,
    subscription: &mut Subscription,
    buf: &mut BytesMut,
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
        buf.clear();
        response.encode(buf);
        // A stalled subscriber keeps one encoded batch, not also the
        // records it was encoded from.
        drop(response);
        if send.write_all(buf).await.is_err() {
            return;
        }
        if last {
            let _ = send.finish();
            return;
        }
    }
}
