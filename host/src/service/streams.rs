//! CreateStream, DeleteStream, DescribeStream.

use std::sync::Arc;

use weir_proto::{ErrorCode, Response, Retention};

use super::{RequestError, Service, blocking, validate_name};

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
    if retention.age_ms == Some(0) || retention.bytes == Some(0) {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "retention age and bytes must be greater than zero (omit them to keep records forever)",
        ));
    }
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

pub async fn delete(service: &Arc<Service>, name: &str) -> Result<Response, RequestError> {
    let users = service.processors.users_of_stream(name).await;
    if !users.is_empty() {
        return Err(RequestError::new(
            ErrorCode::StreamInUse,
            format!(
                "stream {name:?} is used by processor(s) {}; remove them first ({})",
                users.join(", "),
                users
                    .iter()
                    .map(|user| format!("`weir processor rm {user}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    service.storage.delete_stream(name).await?;
    Ok(Response::Ok)
}

pub fn describe(service: &Arc<Service>, name: &str) -> Result<Response, RequestError> {
    Ok(Response::Stream(service.storage.describe_stream(name)?))
}
