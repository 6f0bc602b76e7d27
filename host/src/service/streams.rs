//! CreateStream, DeleteStream, DescribeStream.

use std::sync::Arc;

use weir_proto::{ErrorCode, Response, Retention};

use weir_proto::admin::Role;

use super::{RequestError, Service, blocking, validate_name};
use crate::auth::Session;

pub async fn create(
    service: &Arc<Service>,
    name: &str,
    shards: u32,
    retention: Retention,
) -> Result<Response, RequestError> {
    validate_name("stream", name, ErrorCode::InvalidStreamName)?;
    let shards_max = service.limits.stream_shards_max;
    if shards == 0 || shards > shards_max {
        return Err(RequestError::new(
            ErrorCode::InvalidShardCount,
            format!("a stream needs 1 to {shards_max} shards (stream_shards_max), not {shards}"),
        ));
    }
    check_retention(retention)?;
    let streams_max = service.limits.streams_max;
    if service.storage.list_streams().len() >= streams_max {
        return Err(RequestError::new(
            ErrorCode::LimitExceeded,
            format!(
                "the server holds streams_max ({streams_max}) streams; delete one or raise the limit"
            ),
        ));
    }
    let storage = service.storage.clone();
    let name = name.to_owned();
    blocking(move || Ok(storage.create_stream(&name, shards, retention)?)).await?;
    Ok(Response::Ok)
}

/// Changes how long (and how much) a stream keeps; needs the `admin` role
/// on the stream. The next retention pass applies it.
pub async fn set_retention(
    service: &Arc<Service>,
    session: &Session,
    name: &str,
    retention: Retention,
) -> Result<Response, RequestError> {
    service.may(session, Role::Admin, name)?;
    check_retention(retention)?;
    let storage = service.storage.clone();
    let name = name.to_owned();
    blocking(move || Ok(storage.set_retention(&name, retention)?)).await?;
    Ok(Response::Ok)
}

fn check_retention(retention: Retention) -> Result<(), RequestError> {
    if retention.age_ms == Some(0) || retention.bytes == Some(0) {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "retention age and bytes must be greater than zero (omit them to keep records forever)",
        ));
    }
    Ok(())
}

pub async fn delete(service: &Arc<Service>, name: &str) -> Result<Response, RequestError> {
    let processors = service.processors.users_of_stream(name).await;
    let sinks = service.sinks.users_of_stream(name).await;
    if !processors.is_empty() || !sinks.is_empty() {
        let users: Vec<String> = processors
            .iter()
            .map(|user| format!("processor {user}"))
            .chain(sinks.iter().map(|user| format!("sink {user}")))
            .collect();
        let commands: Vec<String> = processors
            .iter()
            .map(|user| format!("`weir processor delete {user}`"))
            .chain(
                sinks
                    .iter()
                    .map(|user| format!("`weir sink delete {user}`")),
            )
            .collect();
        return Err(RequestError::new(
            ErrorCode::StreamInUse,
            format!(
                "stream {name:?} is used by {}; remove them first ({})",
                users.join(", "),
                commands.join(", ")
            ),
        ));
    }
    service.storage.delete_stream(name).await?;
    Ok(Response::Ok)
}

pub fn describe(service: &Arc<Service>, name: &str) -> Result<Response, RequestError> {
    Ok(Response::Stream(service.storage.describe_stream(name)?))
}
