//! Request handling, independent of the transport: a decoded [`Request`] in,
//! a [`Reply`] out. One file per family of requests.
//!
//! Validation happens here, before storage sees anything: names, counts,
//! sizes and positions are checked against [`Limits`], and every failure is
//! a typed [`RequestError`] that the transport turns into an error frame.

mod admin;
mod checkpoint;
mod put;
mod read;
mod streams;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use weir_proto::admin::{AdminRequest, Role};
use weir_proto::{ErrorCode, Request, Response};

use crate::auth::{Auth, AuthError, Principal, Session};
use crate::config::Limits;

use crate::counters::{AddressCounts, ServiceMetrics};
use crate::processor::Processors;
use crate::sink::Sinks;
use crate::storage::{Storage, StorageError};

pub use read::Subscription;
pub use streams::set_retention;

/// What a request is answered with.
pub enum Reply {
    /// One response frame, then the stream is finished.
    Response(Response),
    /// Response frames for as long as the client keeps the stream open.
    Subscription(Subscription),
}

/// Why a request failed: a wire code and a message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<RequestError> for Response {
    fn from(error: RequestError) -> Self {
        Response::Error {
            code: error.code,
            message: error.message,
        }
    }
}

impl From<StorageError> for RequestError {
    fn from(error: StorageError) -> Self {
        Self::from_storage(&error)
    }
}

impl RequestError {
    pub fn from_storage(error: &StorageError) -> Self {
        let code = match error {
            StorageError::StreamNotFound { .. } => ErrorCode::StreamNotFound,
            StorageError::StreamExists { .. } => ErrorCode::StreamExists,
            StorageError::ShardLimit { .. } => ErrorCode::LimitExceeded,
            StorageError::ShardNotFound { .. } => ErrorCode::ShardNotFound,
            StorageError::PositionTrimmed { .. } => ErrorCode::PositionTrimmed,
            StorageError::PositionBeyondTip { .. } => ErrorCode::InvalidPosition,
            StorageError::StaleProducerBatch { .. } => ErrorCode::StaleProducerBatch,
            StorageError::WriterStopped => ErrorCode::ShuttingDown,
            StorageError::StorageFull { .. } => ErrorCode::StorageFull,
            StorageError::Corrupt { .. }
            | StorageError::ChunkDamaged { .. }
            | StorageError::InUse { .. }
            | StorageError::UnsupportedLayout { .. }
            | StorageError::Segment(_)
            | StorageError::Engine(_)
            | StorageError::Recovering
            | StorageError::CommitFailed { .. } => ErrorCode::StorageFailure,
            StorageError::Thread { .. } => ErrorCode::Internal,
        };
        Self::new(code, error.to_string())
    }
}

impl From<AuthError> for RequestError {
    fn from(error: AuthError) -> Self {
        let code = match &error {
            AuthError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            AuthError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            AuthError::TokenExists { .. } => ErrorCode::AlreadyExists,
            AuthError::TokenNotFound { .. } => ErrorCode::TokenNotFound,
            AuthError::InvalidToken(_) => ErrorCode::InvalidArgument,
            AuthError::TooManyTokens { .. } => ErrorCode::LimitExceeded,
            AuthError::TokenFile { .. } => ErrorCode::Internal,
            AuthError::Storage(storage) => return Self::from_storage(storage),
        };
        Self::new(code, error.to_string())
    }
}

/// Shared by every connection: the store, the processors, the token table
/// and the limits.
pub struct Service {
    pub storage: Arc<Storage>,
    pub processors: Arc<Processors>,
    pub sinks: Arc<Sinks>,
    pub auth: Auth,
    pub limits: Limits,
    /// The server's request-buffer budget in bytes
    /// (`server_buffered_bytes_max`), shared by all connections.
    pub buffered: Arc<tokio::sync::Semaphore>,
    /// Open QUIC connections per client address
    /// (`connections_per_address_max`).
    pub connections_by_address: AddressCounts,
    pub metrics: ServiceMetrics,
    pub started: std::time::Instant,
}

impl Service {
    pub fn new(
        storage: Arc<Storage>,
        processors: Arc<Processors>,
        sinks: Arc<Sinks>,
        auth: Auth,
        limits: Limits,
    ) -> Self {
        Self {
            storage,
            processors,
            sinks,
            auth,
            buffered: Arc::new(tokio::sync::Semaphore::new(
                limits.server_buffered_bytes_max,
            )),
            limits,
            connections_by_address: Default::default(),
            metrics: ServiceMetrics::default(),
            started: std::time::Instant::now(),
        }
    }

    /// Answers one request made on a connection with `session`.
    pub async fn handle(self: &Arc<Self>, request: Request, session: &Session) -> Reply {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let reply = match self.authorize(&request, session).await {
            Ok(principal) => self.dispatch(request, session, principal).await,
            Err(error) => Reply::Response(error.into()),
        };
        if let Reply::Response(Response::Error { .. }) = &reply {
            self.metrics.request_errors.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }

    /// Whether `session` may still read `stream`: a subscription asks
    /// before each batch, so revoking its token ends it.
    pub fn may_consume(&self, session: &Session, stream: &str) -> Result<(), RequestError> {
        self.may(session, Role::Consume, stream)
    }

    /// Whether `session` has `role` on `stream` (for requests that have
    /// no `Request` of their own, such as the Kinesis API's tags).
    pub fn may(&self, session: &Session, role: Role, stream: &str) -> Result<(), RequestError> {
        self.auth.principal(session)?.require(role, Some(stream))?;
        Ok(())
    }

    /// Who is asking, and whether they may: checked before anything is
    /// looked up, so a denial says nothing about what exists.
    async fn authorize(
        &self,
        request: &Request,
        session: &Session,
    ) -> Result<Principal, RequestError> {
        if let Request::Authenticate { .. } = request {
            return Ok(Principal::Anyone);
        }
        let principal = self.auth.principal(session)?;
        let (role, stream) = match request {
            Request::Authenticate { .. } | Request::ListStreams => return Ok(principal),
            Request::DescribeStream { name } => {
                if principal.sees(name) {
                    return Ok(principal);
                }
                (Role::Consume, Some(name.as_str()))
            }
            Request::CreateStream { name, .. } | Request::DeleteStream { name } => {
                (Role::Admin, Some(name.as_str()))
            }
            Request::PutRecords { stream, .. } => (Role::Produce, Some(stream.as_str())),
            Request::GetRecords { stream, .. }
            | Request::Subscribe { stream, .. }
            | Request::CommitCheckpoint { stream, .. }
            | Request::GetCheckpoint { stream, .. } => (Role::Consume, Some(stream.as_str())),
            Request::Admin(AdminRequest::GetState { processor, .. })
                if !principal.allows(Role::Admin, None) =>
            {
                // State is derived from the source stream: whoever may read
                // the source may read it.
                let source = self.processors.source_of(processor).await;
                let source = source.ok_or_else(|| {
                    RequestError::new(
                        ErrorCode::ProcessorNotFound,
                        format!("no processor named {processor:?}"),
                    )
                })?;
                principal.require(Role::Consume, Some(&source))?;
                return Ok(principal);
            }
            Request::AddPlugin { .. } | Request::Admin(_) => (Role::Admin, None),
        };
        principal.require(role, stream)?;
        Ok(principal)
    }

    async fn dispatch(
        self: &Arc<Self>,
        request: Request,
        session: &Session,
        principal: Principal,
    ) -> Reply {
        let result = match request {
            Request::Authenticate { token } => self
                .auth
                .authenticate(session, &token)
                .map(|()| Response::Ok)
                .map_err(RequestError::from),
            Request::CreateStream {
                name,
                shards,
                retention,
            } => streams::create(self, &name, shards, retention).await,
            Request::DeleteStream { name } => streams::delete(self, &name).await,
            Request::ListStreams => {
                let mut names = self.storage.list_streams();
                names.retain(|name| principal.sees(name));
                Ok(Response::Streams(names))
            }
            Request::DescribeStream { name } => streams::describe(self, &name),
            Request::PutRecords {
                stream,
                producer,
                records,
            } => {
                let received = std::time::Instant::now();
                let result = put::put_records(self, &stream, producer, records).await;
                self.metrics.put_ack.observe(received.elapsed());
                result
            }
            Request::GetRecords {
                stream,
                shard,
                from,
                limit,
            } => read::get_records(self, &stream, shard, from, limit).await,
            Request::Subscribe {
                stream,
                shard,
                from,
            } => {
                return match read::subscribe(self, &stream, shard, from).await {
                    Ok(subscription) => Reply::Subscription(subscription),
                    Err(error) => Reply::Response(error.into()),
                };
            }
            Request::CommitCheckpoint {
                consumer,
                stream,
                shard,
                sequence,
            } => checkpoint::commit(self, &consumer, &stream, shard, sequence).await,
            Request::GetCheckpoint {
                consumer,
                stream,
                shard,
            } => checkpoint::get(self, &consumer, &stream, shard).await,
            Request::AddPlugin { name, component } => {
                let service = self.clone();
                control_plane(async move { admin::add_plugin(&service, &name, &component).await })
                    .await
            }
            Request::Admin(request) => {
                let service = self.clone();
                control_plane(async move { admin::handle(&service, request).await }).await
            }
        };
        Reply::Response(result.unwrap_or_else(Response::from))
    }
}

/// A name check ([`crate::names`]) answered with `code`.
pub fn validate_name(kind: &str, name: &str, code: ErrorCode) -> Result<(), RequestError> {
    crate::names::validate(kind, name).map_err(|message| RequestError::new(code, message))
}

/// Runs control-plane work — catalog writes synced to disk, storage
/// scans, plugin compiles and inits, worker start-up — on the blocking
/// pool, so the async thread (acks, reads, subscriptions) never waits for
/// it. The future is driven there with the runtime's handle; its timers
/// and I/O keep working, driven by the runtime's own thread.
pub async fn control_plane<T: Send + 'static>(
    work: impl Future<Output = Result<T, RequestError>> + Send + 'static,
) -> Result<T, RequestError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(work))
        .await
        .map_err(|e| {
            RequestError::new(
                ErrorCode::Internal,
                format!("control-plane task failed: {e}"),
            )
        })?
}

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RequestError> + Send + 'static,
) -> Result<T, RequestError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| RequestError::new(ErrorCode::Internal, format!("storage task failed: {e}")))?
}
