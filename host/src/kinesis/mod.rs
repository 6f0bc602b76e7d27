//! The Kinesis Data Streams API over HTTP, so boto3, the AWS CLI, the AWS
//! SDKs, Fluent Bit and Vector work against Weir unchanged.
//!
//! An HTTP/1.1 and HTTP/2 listener (hyper) takes `POST /` with
//! `X-Amz-Target: Kinesis_20131202.<Operation>`, verifies the SigV4
//! signature against Weir's tokens ([`crate::aws::sigv4`]), decodes the JSON or CBOR
//! body ([`value`]) and runs the operation ([`ops`]) through the same
//! [`Service`] the QUIC transport uses. This module is the only one that
//! imports hyper.

mod error;
mod eventstream;
mod fanout;
mod iterator;
mod ops;
mod stream_admin;
mod value;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::aws::sigv4;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

pub use error::KinesisError;
pub use ops::shard_id;

use crate::auth::Session;
use crate::config::KinesisConfig;
use crate::counters::AddressCounts;
use crate::service::Service;
use crate::storage::now_ms;
use iterator::IteratorKeys;
use ops::{Answer, Api};
use value::{Encoding, Fields, MapBuilder};

/// The `X-Amz-Target` prefix of every Kinesis operation.
const TARGET_PREFIX: &str = "Kinesis_20131202.";

/// How long the listener waits after a failed accept (out of file
/// descriptors, say) before it accepts again, rather than spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Binds the API's TCP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the API on `listener` until `shutdown` turns true: plain HTTP
/// and, for clients that open with a TLS handshake, HTTPS with `tls` (the
/// server's certificate) on the same port. `iterator_secret` is the data
/// directory's stable secret, so shard iterators stay valid across a
/// restart.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: Arc<Service>,
    config: KinesisConfig,
    iterator_secret: &[u8],
    mut shutdown: watch::Receiver<bool>,
) {
    let api = Arc::new(Api {
        iterators: IteratorKeys::new(iterator_secret, config.shard_iterator_ttl_ms),
        config,
        service,
    });
    let connections = Arc::new(Semaphore::new(api.config.connections_max));
    let addresses = AddressCounts::default();
    let read_timeout = Duration::from_millis(api.service.limits.request_read_timeout_ms);
    let timeouts = Timeouts {
        read: read_timeout,
        idle: Duration::from_millis(api.service.limits.connection_idle_timeout_ms),
    };
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit,
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = permit else { return };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(%error, "kinesis api: accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let per_address_max = api.config.connections_per_address_max;
        let counted = addresses.acquire(peer.ip(), per_address_max);
        let refusal = counted.is_none().then(|| {
            tracing::warn!(%peer, per_address_max, "kinesis api: connection refused: connections_per_address_max reached");
            Refusal::new(format!(
                "kinesis.connections_per_address_max ({per_address_max}) reached for {}; try again later",
                peer.ip()
            ))
        });
        let api = api.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = counted;
            // A TLS connection opens with a handshake record (0x16); an
            // HTTP one with a method name.
            let mut first = [0u8; 1];
            let peeked = tokio::time::timeout(read_timeout, tcp.peek(&mut first)).await;
            if !matches!(peeked, Ok(Ok(1))) {
                return;
            }
            if first[0] == TLS_HANDSHAKE {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                match tokio::time::timeout(read_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        serve_connection(stream, api, peer, timeouts, refusal, shutdown).await
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "kinesis api: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "kinesis api: TLS handshake timed out"),
                }
            } else {
                serve_connection(tcp, api, peer, timeouts, refusal, shutdown).await;
            }
        });
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Why a connection over a limit is refused: its requests are answered
/// with this as a `LimitExceededException` (which SDKs retry), over
/// HTTP/1.1 without keep-alive and for at most the read timeout, so the
/// client hears why instead of seeing a reset.
#[derive(Clone)]
struct Refusal(Arc<str>);

impl Refusal {
    fn new(message: String) -> Self {
        Self(message.into())
    }

    fn error(&self) -> KinesisError {
        KinesisError::new("LimitExceededException", &*self.0)
    }
}

#[derive(Clone, Copy)]
struct Timeouts {
    /// For a request's headers (and so for an idle HTTP/1.1 connection).
    read: Duration,
    /// For an HTTP/2 connection answering nothing.
    idle: Duration,
}

/// HTTP/1.1 or HTTP/2 (by the client's preface) on one connection, until
/// it ends or the server shuts down; a refused one only says why. A
/// connection that answers nothing for the idle timeout is closed
/// gracefully: HTTP/2 has no header read timeout to do it, and idle
/// connections would otherwise hold `connections_max` places for good.
async fn serve_connection<I>(
    io: I,
    api: Arc<Api>,
    peer: SocketAddr,
    timeouts: Timeouts,
    refusal: Option<Refusal>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.read)
        .keep_alive(refusal.is_none());
    let refused = refusal.is_some();
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request| {
            let (api, refusal) = (api.clone(), refusal.clone());
            let answering = Answering::start(&activity);
            async move {
                let response = handle(api, request, refusal).await;
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    body,
                    _answering: answering,
                }))
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let lifetime = async {
        if refused {
            tokio::time::sleep(timeouts.read).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(lifetime);
    let mut idle_check = tokio::time::interval(timeouts.idle / 4);
    // HTTP/2's graceful close waits for the client to answer a PING; one
    // that never does is dropped after the read timeout.
    let closed_by_then = tokio::time::sleep(Duration::MAX);
    tokio::pin!(closed_by_then);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "kinesis api: connection ended");
                }
                return;
            }
            _ = idle_check.tick(), if !closing => {
                if activity.idle_for().is_some_and(|idle| idle >= timeouts.idle) {
                    tracing::debug!(%peer, "kinesis api: closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closed_by_then
                        .as_mut()
                        .reset(tokio::time::Instant::now() + timeouts.read);
                    closing = true;
                }
            }
            () = &mut closed_by_then => return,
            () = &mut lifetime => return,
            _ = shutdown.changed() => return,
        }
    }
}

/// How many answers a connection is giving (a streamed one until its last
/// event is taken) and since when it gives none.
struct Activity {
    answering: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            answering: 0.into(),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// How long the connection has answered nothing; `None` while it is
    /// answering.
    fn idle_for(&self) -> Option<Duration> {
        let since = *self.idle_since.lock().unwrap_or_else(|p| p.into_inner());
        (self.answering.load(Ordering::Acquire) == 0).then(|| since.elapsed())
    }
}

/// One answer in progress, from its request until its body is dropped.
struct Answering(Arc<Activity>);

impl Answering {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.answering.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        // The time first, so a check that sees no answers sees this end.
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.answering.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body, counted as activity until it is dropped.
struct Tracked {
    body: Body,
    _answering: Answering,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body: one buffer, or event-stream messages as a
/// subscription produces them.
enum Body {
    Full(Option<Bytes>),
    Events(tokio::sync::mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Events(feed) => feed
                .poll_recv(cx)
                .map(|event| event.map(|b| Ok(Frame::data(b)))),
        }
    }
    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    /// Exact for a single buffer, so HTTP/1.1 answers carry a
    /// `Content-Length` instead of chunked encoding.
    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(bytes) => {
                http_body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Events(_) => http_body::SizeHint::default(),
        }
    }
}

/// Bodies and answers up to this size are handled on the async thread;
/// larger ones (hashing, parsing and encoding megabytes takes
/// milliseconds) on the blocking pool, so acks and reads never wait for
/// them.
const INLINE_BYTES_MAX: usize = 64 * 1024;

/// Answers one HTTP request.
async fn handle(
    api: Arc<Api>,
    request: http::Request<Incoming>,
    refusal: Option<Refusal>,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let encoding = Encoding::from_content_type(
        parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let result = async {
        if let Some(refusal) = refusal {
            return Err(refusal.error());
        }
        if parts.method != http::Method::POST {
            return Err(KinesisError::new(
                "UnknownOperationException",
                "the Kinesis API takes POST / with an X-Amz-Target header",
            ));
        }
        let (body, _reserved) = read_body(&api, &parts.headers, body).await?;
        let operation = operation(&parts.headers)?.to_owned();
        let checked = {
            let api = api.clone();
            offload(body.len(), move || {
                let session = authenticate(&api, &parts, &body)?;
                Ok((session, Fields::new(encoding.decode(&body)?)?))
            })
        };
        let (session, fields) = checked.await?;
        api.call(&operation, fields, session, encoding).await
    }
    .await;
    let (status, error_type, body) = match result {
        Ok(Answer::Value(value)) => {
            let encoded = offload(value.approx_bytes(), move || Ok(encoding.encode(&value))).await;
            match encoded {
                Ok(bytes) => (200, None, Body::Full(Some(Bytes::from(bytes)))),
                Err(error) => error_answer(encoding, error),
            }
        }
        Ok(Answer::Events(feed)) => (200, None, Body::Events(feed)),
        Err(error) => error_answer(encoding, error),
    };
    let content_type = match body {
        Body::Events(_) => eventstream::CONTENT_TYPE,
        Body::Full(_) => encoding.content_type(),
    };
    let mut response = http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header("x-amzn-RequestId", request_id());
    if let Some(code) = error_type {
        response = response.header("x-amzn-ErrorType", code);
    }
    response.body(body).unwrap_or_else(|_| {
        let mut fallback = http::Response::new(Body::Full(None));
        *fallback.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        fallback
    })
}

/// Runs `work` here if it is about `bytes` small, else on the blocking pool.
async fn offload<T: Send + 'static>(
    bytes: usize,
    work: impl FnOnce() -> Result<T, KinesisError> + Send + 'static,
) -> Result<T, KinesisError> {
    if bytes <= INLINE_BYTES_MAX {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| KinesisError::internal(format!("a request task failed: {e}")))?
}

/// The position past records damaged on disk at `from`, if a read there
/// failed for them: a Kinesis client cannot step past them on its own, so
/// GetRecords and SubscribeToShard move it past (and log the error).
async fn past_damage(
    service: &Service,
    stream: &str,
    shard: u32,
    from: weir_proto::Position,
) -> Option<u64> {
    let storage = service.storage.clone();
    let stream = stream.to_owned();
    tokio::task::spawn_blocking(move || storage.past_damage(&stream, shard, from))
        .await
        .ok()
        .flatten()
}

/// An error's status, code and body `{"__type": ..., "message": ...}`.
fn error_answer(encoding: Encoding, error: KinesisError) -> (u16, Option<&'static str>, Body) {
    if error.status >= 500 {
        tracing::warn!(code = error.code, message = %error.message, "kinesis api fault");
    }
    let body = MapBuilder::new()
        .with("__type", error.code)
        .with("message", error.message)
        .build();
    let bytes = Bytes::from(encoding.encode(&body));
    (error.status, Some(error.code), Body::Full(Some(bytes)))
}

/// Reads a request body after reserving its declared size (or the
/// largest allowed, when it declares none) from the server's request
/// budget, `limits.server_buffered_bytes_max`, which QUIC requests share:
/// requests in memory stay within it however many connections send. The
/// reservation lasts until the operation is done.
async fn read_body(
    api: &Api,
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<(Bytes, OwnedSemaphorePermit), KinesisError> {
    let limits = &api.service.limits;
    let bytes_max = api.config.request_body_bytes_max;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(bytes_max);
    if declared > bytes_max {
        return Err(too_large(bytes_max));
    }
    let reserve = declared.clamp(1, limits.server_buffered_bytes_max.max(1));
    let wait = Duration::from_millis(limits.buffer_wait_timeout_ms);
    let permits = u32::try_from(reserve).unwrap_or(u32::MAX);
    let permit = tokio::time::timeout(
        wait,
        api.service.buffered.clone().acquire_many_owned(permits),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        KinesisError::throughput(format!(
            "the server's request buffers are full (limits.server_buffered_bytes_max, {} \
             bytes); retry",
            limits.server_buffered_bytes_max
        ))
    })?;
    let timeout = Duration::from_millis(limits.request_read_timeout_ms);
    match tokio::time::timeout(timeout, Limited::new(body, bytes_max).collect()).await {
        Ok(Ok(collected)) => Ok((collected.to_bytes(), permit)),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(bytes_max))
        }
        Ok(Err(error)) => Err(KinesisError::serialization(format!(
            "reading the request body: {error}"
        ))),
        Err(_) => Err(KinesisError::serialization(format!(
            "the request body did not arrive within {} ms (limits.request_read_timeout_ms)",
            timeout.as_millis()
        ))),
    }
}

fn too_large(bytes_max: usize) -> KinesisError {
    KinesisError::invalid_argument(format!(
        "the request body is over kinesis.request_body_bytes_max ({bytes_max} bytes)"
    ))
}

/// The operation an `X-Amz-Target` header names.
fn operation(headers: &http::HeaderMap) -> Result<&str, KinesisError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    target.strip_prefix(TARGET_PREFIX).ok_or_else(|| {
        KinesisError::new(
            "UnknownOperationException",
            format!("X-Amz-Target must be {TARGET_PREFIX}<Operation>, not {target:?}"),
        )
    })
}

/// Verifies the request's signature; the session acts as the token whose
/// name is the access key id. With `auth.disabled` anything is accepted.
fn authenticate(
    api: &Api,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Session, KinesisError> {
    let auth = &api.service.auth;
    if !auth.enabled() {
        return Ok(Session::default());
    }
    let authorization = sigv4::parse_authorization(&parts.headers)?;
    let Some((secret, session)) = auth.sigv4_identity(&authorization.access_key) else {
        return Err(KinesisError::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid. (No Weir token is named \
             by the access key id; `weir token list` shows the names.)",
        ));
    };
    let signed = sigv4::SignedParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        authority: parts.uri.authority().map(|a| a.as_str()),
        body,
    };
    sigv4::verify(
        &signed,
        &authorization,
        &secret,
        now_ms(),
        api.config.signature_clock_skew_ms_max,
    )?;
    Ok(session)
}

/// A random id in the UUID layout AWS uses.
fn request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let hex = sigv4::hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
