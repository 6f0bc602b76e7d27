//! PutRecords: validate each record, route it by hash key, append each
//! shard's share in one group commit, answer per record.

use std::sync::Arc;

use bytes::Bytes;
use weir_proto::routing::shard_for;
use weir_proto::{ErrorCode, ProducerStamp, PutRecord, PutResult, Response};

use super::{RequestError, Service};
use crate::storage::AppendRecord;

pub async fn put_records(
    service: &Arc<Service>,
    stream: &str,
    producer: Option<ProducerStamp>,
    records: Vec<PutRecord>,
) -> Result<Response, RequestError> {
    let limits = &service.limits;
    if records.is_empty() || records.len() > limits.batch_records_max {
        return Err(RequestError::new(
            ErrorCode::InvalidBatchSize,
            format!(
                "a PutRecords batch holds 1 to {} records (batch_records_max), this one has {}",
                limits.batch_records_max,
                records.len()
            ),
        ));
    }
    let request_bytes: usize = records
        .iter()
        .map(|r| r.partition_key.len() + r.data.len())
        .sum();
    if request_bytes > limits.request_bytes_max {
        return Err(RequestError::new(
            ErrorCode::RequestTooLarge,
            format!(
                "the batch's keys and data add up to {request_bytes} bytes, over request_bytes_max ({} bytes)",
                limits.request_bytes_max
            ),
        ));
    }
    let stream = service.storage.stream(stream)?;
    let shard_count = stream.shards.len() as u32;

    let mut results: Vec<Option<PutResult>> = vec![None; records.len()];
    // Per shard: the indexes of its records in the request, and the records.
    let mut routed: Vec<(Vec<usize>, Vec<AppendRecord>)> =
        vec![(Vec::new(), Vec::new()); shard_count as usize];
    for (index, record) in records.into_iter().enumerate() {
        match check_record(service, &record.partition_key, &record.data) {
            Ok(()) => {
                let shard = shard_for(&record.partition_key, record.explicit_hash_key, shard_count)
                    as usize;
                routed[shard].0.push(index);
                routed[shard].1.push(AppendRecord {
                    partition_key: record.partition_key,
                    data: record.data,
                });
            }
            Err(error) => {
                results[index] = Some(PutResult::Failed {
                    code: error.code,
                    message: error.message,
                })
            }
        }
    }

    let mut indexes = Vec::new();
    let mut appends = Vec::new();
    for (shard, (shard_indexes, shard_records)) in routed.into_iter().enumerate() {
        if !shard_records.is_empty() {
            indexes.push((shard as u32, shard_indexes));
            appends.push((stream.shards[shard].clone(), shard_records));
        }
    }
    let outcomes = service.storage.append(producer, appends).await;
    for ((shard, shard_indexes), outcome) in indexes.into_iter().zip(outcomes) {
        match outcome {
            Ok(outcome) => {
                for (offset, index) in shard_indexes.into_iter().enumerate() {
                    results[index] = Some(PutResult::Stored {
                        shard,
                        sequence: outcome.first_sequence + offset as u64,
                        duplicate: outcome.duplicate,
                    });
                }
            }
            Err(error) => {
                let error = RequestError::from(error);
                for index in shard_indexes {
                    results[index] = Some(PutResult::Failed {
                        code: error.code,
                        message: error.message.clone(),
                    });
                }
            }
        }
    }
    let results = results
        .into_iter()
        .map(|r| {
            r.unwrap_or(PutResult::Failed {
                code: ErrorCode::Internal,
                message: "record was neither stored nor rejected".into(),
            })
        })
        .collect();
    Ok(Response::PutResults(results))
}

fn check_record(service: &Service, partition_key: &str, data: &Bytes) -> Result<(), RequestError> {
    let key_chars = partition_key.chars().count();
    let key_chars_max = weir_proto::defaults::PARTITION_KEY_CHARS_MAX;
    if key_chars == 0 || key_chars > key_chars_max {
        return Err(RequestError::new(
            ErrorCode::InvalidPartitionKey,
            format!(
                "a partition key has 1 to {key_chars_max} characters, this one has {key_chars}"
            ),
        ));
    }
    let record_bytes_max = service.limits.record_bytes_max;
    if data.len() > record_bytes_max {
        return Err(RequestError::new(
            ErrorCode::RecordTooLarge,
            format!(
                "record data is {} bytes, over record_bytes_max ({record_bytes_max} bytes)",
                data.len()
            ),
        ));
    }
    Ok(())
}
