//! Named consumers' checkpoints: CommitCheckpoint and GetCheckpoint.

use std::sync::Arc;

use weir_proto::{ErrorCode, Position, Response};

use super::{RequestError, Service, blocking, validate_name};

pub async fn commit(
    service: &Arc<Service>,
    consumer: &str,
    stream: &str,
    shard: u32,
    sequence: u64,
) -> Result<Response, RequestError> {
    validate_name("consumer", consumer, ErrorCode::InvalidConsumerName)?;
    let stream = service.storage.stream(stream)?;
    let shard = stream.shard(shard)?;
    // A checkpoint names a record that exists or existed: not the future.
    service
        .storage
        .resolve(shard, Position::AtSequence(sequence))
        .or_else(|error| match error {
            crate::storage::StorageError::PositionTrimmed { .. } => Ok(sequence),
            error => Err(error),
        })?;
    service
        .storage
        .commit_checkpoint(consumer, shard, sequence)
        .await?;
    Ok(Response::Ok)
}

pub async fn get(
    service: &Arc<Service>,
    consumer: &str,
    stream: &str,
    shard: u32,
) -> Result<Response, RequestError> {
    validate_name("consumer", consumer, ErrorCode::InvalidConsumerName)?;
    let stream = service.storage.stream(stream)?;
    let shard = stream.shard(shard)?.clone();
    let storage = service.storage.clone();
    let consumer = consumer.to_owned();
    let checkpoint = blocking(move || Ok(storage.checkpoint(&consumer, &shard)?)).await?;
    Ok(Response::Checkpoint(checkpoint))
}
