//! The Kinesis operations, each translated into Weir's own requests and
//! answered through [`Service::handle`]: validation, routing, roles,
//! limits and storage are the QUIC path's, once. This file only maps
//! names, identifiers and errors between the two vocabularies.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN_BASE64;
use weir_proto::{
    ErrorCode, Position, PutRecord, PutResult, Record, Request, Response, Retention,
    ShardDescription, StreamDescription,
};

use super::error::{KinesisError, Validation};
use super::iterator::{IteratorKeys, IteratorPosition, ShardIterator};
use super::value::{Encoding, Fields, MapBuilder, Value};
use crate::auth::Session;
use crate::config::KinesisConfig;
use crate::service::{Reply, RequestError, Service};
use crate::storage::now_ms;

/// Damaged chunks one GetRecords reads past before it answers (each costs
/// a failed read and a probe).
const DAMAGED_CHUNKS_SKIPPED_PER_CALL_MAX: usize = 8;

/// Kinesis's own limits; Weir's limits apply too where they are stricter.
const PUT_RECORDS_MAX: usize = 500;
const PARTITION_KEY_CHARS_MAX: usize = 256;
const RECORD_DATA_BYTES_MAX: usize = 1024 * 1024;
const PUT_RECORDS_BYTES_MAX: usize = 5 * 1024 * 1024;
const GET_RECORDS_LIMIT_MAX: i64 = 10_000;
const LIST_LIMIT_MAX: i64 = 10_000;
const STREAM_NAME_CHARS_MAX: usize = 128;
/// What a stream created through this API keeps, as Kinesis does by default.
const DEFAULT_RETENTION_HOURS: u64 = 24;
/// Kinesis's retention bounds, in hours. A stream that keeps everything
/// reports the longest as its `RetentionPeriodHours`.
pub(super) const RETENTION_HOURS_MIN: u64 = 24;
pub(super) const RETENTION_HOURS_MAX: u64 = 8_760;
/// The shard count Kinesis gives an on-demand stream.
const ON_DEMAND_SHARDS: u32 = 4;

/// What an operation answers: one body, or (`SubscribeToShard`) a feed of
/// event-stream messages sent as they come.
pub enum Answer {
    Value(Value),
    Events(tokio::sync::mpsc::Receiver<bytes::Bytes>),
}

/// The Kinesis API over one service.
pub struct Api {
    pub service: Arc<Service>,
    pub config: KinesisConfig,
    pub iterators: IteratorKeys,
}

impl Api {
    /// Runs `operation` for a caller already authenticated as `session`;
    /// answers are encoded in `encoding`.
    pub async fn call(
        &self,
        operation: &str,
        fields: Fields,
        session: Session,
        encoding: Encoding,
    ) -> Result<Answer, KinesisError> {
        let call = Call {
            api: self,
            fields,
            session,
            encoding,
        };
        let value = match operation {
            "CreateStream" => call.create_stream().await,
            "DeleteStream" => call.delete_stream().await,
            "ListStreams" => call.list_streams().await,
            "DescribeStream" => call.describe_stream().await,
            "DescribeStreamSummary" => call.describe_stream_summary().await,
            "ListShards" => call.list_shards().await,
            "PutRecord" => call.put_record().await,
            "PutRecords" => call.put_records().await,
            "GetShardIterator" => call.get_shard_iterator().await,
            "GetRecords" => call.get_records().await,
            "DescribeLimits" => call.describe_limits().await,
            "RegisterStreamConsumer" => return call.register_stream_consumer().await,
            "DeregisterStreamConsumer" => return call.deregister_stream_consumer().await,
            "DescribeStreamConsumer" => return call.describe_stream_consumer().await,
            "ListStreamConsumers" => return call.list_stream_consumers().await,
            "SubscribeToShard" => return call.subscribe_to_shard().await,
            "AddTagsToStream" | "TagResource" => call.add_tags().await,
            "RemoveTagsFromStream" | "UntagResource" => call.remove_tags().await,
            "ListTagsForStream" => call.list_tags(true).await,
            "ListTagsForResource" => call.list_tags(false).await,
            "IncreaseStreamRetentionPeriod" => call.change_retention(true).await,
            "DecreaseStreamRetentionPeriod" => call.change_retention(false).await,
            "EnableEnhancedMonitoring" => call.enhanced_monitoring(true).await,
            "DisableEnhancedMonitoring" => call.enhanced_monitoring(false).await,
            "UpdateShardCount" | "SplitShard" | "MergeShards" => {
                Err(KinesisError::invalid_argument(format!(
                    "{operation} is not supported yet: Weir streams keep the shard count they \
                     were created with (live resharding is planned). Create a new stream with \
                     the shard count you need."
                )))
            }
            "StartStreamEncryption" | "StopStreamEncryption" => {
                Err(KinesisError::invalid_argument(format!(
                    "{operation}: Weir does not encrypt records at rest; use an encrypted \
                     file system for the data directory"
                )))
            }
            _ => Err(KinesisError::new(
                "UnknownOperationException",
                format!("Weir does not implement the Kinesis operation {operation:?}"),
            )),
        };
        value.map(Answer::Value)
    }

    pub(super) fn arn(&self, stream: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{stream}",
            self.config.region, self.config.account_id
        )
    }
}

/// One operation's request.
pub(super) struct Call<'a> {
    pub api: &'a Api,
    pub fields: Fields,
    pub session: Session,
    pub encoding: Encoding,
}

impl Call<'_> {
    /// Sends `request` through the service; the answer or a Kinesis error.
    pub(super) async fn send(&self, request: Request) -> Result<Response, KinesisError> {
        let stream = match &request {
            Request::CreateStream { name, .. }
            | Request::DeleteStream { name }
            | Request::DescribeStream { name } => Some(name.clone()),
            Request::PutRecords { stream, .. } | Request::GetRecords { stream, .. } => {
                Some(stream.clone())
            }
            _ => None,
        };
        self.send_raw(request)
            .await
            .map_err(|error| self.error(error, stream.as_deref()))
    }

    /// Sends `request`; the service's own error, for callers that act on it.
    async fn send_raw(&self, request: Request) -> Result<Response, RequestError> {
        match self.api.service.handle(request, &self.session).await {
            Reply::Response(Response::Error { code, message }) => {
                Err(RequestError::new(code, message))
            }
            Reply::Response(response) => Ok(response),
            Reply::Subscription(_) => Err(RequestError::new(
                ErrorCode::Internal,
                "the service answered a single request with a subscription",
            )),
        }
    }

    /// A service error in Kinesis's words ("Stream X under account Y not
    /// found." is what clients and their users expect).
    pub(super) fn error(&self, error: RequestError, stream: Option<&str>) -> KinesisError {
        let account = &self.api.config.account_id;
        match (error.code, stream) {
            (ErrorCode::StreamNotFound, Some(stream)) => KinesisError::not_found(format!(
                "Stream {stream} under account {account} not found."
            )),
            (ErrorCode::StreamExists, Some(stream)) => KinesisError::new(
                "ResourceInUseException",
                format!("Stream {stream} under account {account} already exists."),
            ),
            _ => error.into(),
        }
    }

    /// The stream a request names, by `StreamName` or `StreamARN`.
    pub(super) fn stream_name(&self) -> Result<String, KinesisError> {
        let name = self.fields.text("StreamName")?;
        let arn = self.fields.text("StreamARN")?;
        let from_arn = arn
            .map(|arn| {
                arn.rsplit_once(":stream/")
                    .filter(|(prefix, _)| prefix.starts_with("arn:"))
                    .map(|(_, name)| name.to_owned())
                    .ok_or_else(|| {
                        KinesisError::invalid_argument(format!(
                            "StreamARN {arn:?} is not a stream ARN \
                             (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
                        ))
                    })
            })
            .transpose()?;
        let name = match (name, from_arn) {
            (Some(name), Some(from_arn)) if name != from_arn => {
                return Err(KinesisError::invalid_argument(format!(
                    "StreamName {name:?} and StreamARN name different streams"
                )));
            }
            (Some(name), _) => name.to_owned(),
            (None, Some(from_arn)) => from_arn,
            (None, None) => {
                return Err(KinesisError::invalid_argument(
                    "Either StreamName or StreamARN should be provided.",
                ));
            }
        };
        let mut validation = Validation::new();
        check_name(&mut validation, &name, "streamName");
        validation.finish()?;
        Ok(name)
    }

    pub(super) fn limit(
        &self,
        field: &str,
        aws_field: &str,
        default: i64,
        max: i64,
    ) -> Result<usize, KinesisError> {
        let limit = self.fields.int(field)?.unwrap_or(default);
        let mut validation = Validation::new();
        validation.check_range(limit, aws_field, 1, max);
        validation.finish()?;
        Ok(limit as usize)
    }

    async fn describe(&self, name: &str) -> Result<StreamDescription, KinesisError> {
        match self
            .send(Request::DescribeStream {
                name: name.to_owned(),
            })
            .await?
        {
            Response::Stream(description) => Ok(description),
            other => Err(unexpected(&other)),
        }
    }

    async fn create_stream(&self) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        let mode = match self.fields.map("StreamModeDetails")? {
            Some(details) => details.text("StreamMode")?.map(str::to_owned),
            None => None,
        };
        let shards = match (self.fields.int("ShardCount")?, mode.as_deref()) {
            (Some(count), _) => {
                let mut validation = Validation::new();
                validation.check_range(count, "shardCount", 1, i64::from(u32::MAX));
                validation.finish()?;
                count as u32
            }
            (None, Some("ON_DEMAND")) => ON_DEMAND_SHARDS,
            (None, _) => {
                return Err(KinesisError::invalid_argument(
                    "ShardCount is required for a PROVISIONED stream \
                     (or give StreamModeDetails {StreamMode: ON_DEMAND})",
                ));
            }
        };
        let shards_max = self.api.service.limits.stream_shards_max;
        if shards > shards_max {
            return Err(KinesisError::new(
                "LimitExceededException",
                format!(
                    "This request would exceed the shard limit: a stream has at most \
                     {shards_max} shards (limits.stream_shards_max), {shards} were requested."
                ),
            ));
        }
        let retention = Retention {
            age_ms: Some(DEFAULT_RETENTION_HOURS * 3_600_000),
            bytes: None,
        };
        self.send(Request::CreateStream {
            name,
            shards,
            retention,
        })
        .await?;
        Ok(MapBuilder::new().build())
    }

    async fn delete_stream(&self) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        self.send(Request::DeleteStream { name }).await?;
        Ok(MapBuilder::new().build())
    }

    async fn list_streams(&self) -> Result<Value, KinesisError> {
        let limit = self.limit("Limit", "limit", 100, LIST_LIMIT_MAX)?;
        let start = match self.fields.text("NextToken")? {
            Some(token) => Some(decode_token(token, "NextToken")?),
            None => self
                .fields
                .text("ExclusiveStartStreamName")?
                .map(str::to_owned),
        };
        let Response::Streams(mut names) = self.send(Request::ListStreams).await? else {
            return Err(KinesisError::internal(
                "ListStreams answered with something else",
            ));
        };
        names.sort();
        let (names, more) = page(
            names
                .into_iter()
                .filter(|name| start.as_ref().is_none_or(|start| name > start)),
            limit,
        );
        let mut summaries = Vec::with_capacity(names.len());
        for name in &names {
            // A stream deleted since the listing shows no creation time.
            let created_ms = self.describe(name).await.map_or(0, |d| d.created_ms);
            summaries.push(
                MapBuilder::new()
                    .with("StreamName", name.as_str())
                    .with("StreamARN", self.api.arn(name))
                    .with("StreamStatus", "ACTIVE")
                    .with(
                        "StreamModeDetails",
                        MapBuilder::new().with("StreamMode", "PROVISIONED"),
                    )
                    .with("StreamCreationTimestamp", Value::Time(created_ms))
                    .build(),
            );
        }
        let next_token = more
            .then(|| names.last().map(|last| encode_token(last)))
            .flatten();
        Ok(MapBuilder::new()
            .with(
                "StreamNames",
                names.into_iter().map(Value::from).collect::<Vec<_>>(),
            )
            .with("HasMoreStreams", more)
            .with_opt("NextToken", next_token)
            .with("StreamSummaries", summaries)
            .build())
    }

    fn shard_value(shard: &ShardDescription) -> Value {
        MapBuilder::new()
            .with("ShardId", shard_id(shard.shard))
            .with(
                "HashKeyRange",
                MapBuilder::new()
                    .with("StartingHashKey", shard.hash_key_start.to_string())
                    .with("EndingHashKey", shard.hash_key_end.to_string()),
            )
            .with(
                "SequenceNumberRange",
                MapBuilder::new().with(
                    "StartingSequenceNumber",
                    shard.first_sequence.unwrap_or(0).to_string(),
                ),
            )
            .build()
    }

    pub(super) fn retention_hours(description: &StreamDescription) -> u64 {
        description
            .retention
            .age_ms
            .map_or(RETENTION_HOURS_MAX, |ms| ms.div_ceil(3_600_000))
    }

    async fn describe_stream(&self) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        let limit = self.limit("Limit", "limit", 100, LIST_LIMIT_MAX)?;
        let after = self
            .fields
            .text("ExclusiveStartShardId")?
            .map(parse_shard_id)
            .transpose()?;
        let description = self.describe(&name).await?;
        let (shards, more) = shard_page(&description, after, limit);
        Ok(MapBuilder::new()
            .with(
                "StreamDescription",
                self.summary_fields(&description)
                    .with(
                        "Shards",
                        shards
                            .into_iter()
                            .map(Self::shard_value)
                            .collect::<Vec<_>>(),
                    )
                    .with("HasMoreShards", more),
            )
            .build())
    }

    /// The fields `DescribeStream` and `DescribeStreamSummary` share.
    fn summary_fields(&self, description: &StreamDescription) -> MapBuilder {
        MapBuilder::new()
            .with("StreamName", description.name.as_str())
            .with("StreamARN", self.api.arn(&description.name))
            .with("StreamStatus", "ACTIVE")
            .with(
                "StreamModeDetails",
                MapBuilder::new().with("StreamMode", "PROVISIONED"),
            )
            .with("RetentionPeriodHours", Self::retention_hours(description))
            .with(
                "StreamCreationTimestamp",
                Value::Time(description.created_ms),
            )
            .with(
                "EnhancedMonitoring",
                vec![
                    MapBuilder::new()
                        .with("ShardLevelMetrics", Vec::<Value>::new())
                        .build(),
                ],
            )
            .with("EncryptionType", "NONE")
    }

    async fn describe_stream_summary(&self) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        let description = self.describe(&name).await?;
        Ok(MapBuilder::new()
            .with(
                "StreamDescriptionSummary",
                self.summary_fields(&description)
                    .with("OpenShardCount", description.shards.len() as u64)
                    .with("ConsumerCount", 0u64),
            )
            .build())
    }

    async fn list_shards(&self) -> Result<Value, KinesisError> {
        let limit = self.limit("MaxResults", "maxResults", 1_000, LIST_LIMIT_MAX)?;
        let named =
            self.fields.text("StreamName")?.is_some() || self.fields.text("StreamARN")?.is_some();
        let (name, mut after) = match self.fields.text("NextToken")? {
            Some(_) if named => {
                return Err(KinesisError::invalid_argument(
                    "NextToken and StreamName cannot be provided together.",
                ));
            }
            Some(token) => {
                let decoded = decode_token(token, "NextToken")?;
                let (name, after) = decoded.rsplit_once('\n').ok_or_else(|| {
                    KinesisError::invalid_argument(format!("Invalid NextToken: {token}"))
                })?;
                let after = after.parse::<u32>().map_err(|_| {
                    KinesisError::invalid_argument(format!("Invalid NextToken: {token}"))
                })?;
                (name.to_owned(), Some(after))
            }
            None => (self.stream_name()?, None),
        };
        if let Some(start) = self.fields.text("ExclusiveStartShardId")? {
            after = Some(parse_shard_id(start)?);
        }
        if let Some(filter) = self.fields.map("ShardFilter")? {
            // Weir never closes shards, so every filter but AFTER_SHARD_ID
            // selects all of them.
            if filter.text("Type")? == Some("AFTER_SHARD_ID") {
                let shard = filter.text("ShardId")?.ok_or_else(|| {
                    KinesisError::invalid_argument("ShardFilter AFTER_SHARD_ID needs a ShardId")
                })?;
                after = Some(parse_shard_id(shard)?);
            }
        }
        let description = self.describe(&name).await?;
        let (shards, more) = shard_page(&description, after, limit);
        let next_token = more
            .then(|| {
                shards
                    .last()
                    .map(|s| encode_token(&format!("{name}\n{}", s.shard)))
            })
            .flatten();
        Ok(MapBuilder::new()
            .with(
                "Shards",
                shards
                    .into_iter()
                    .map(Self::shard_value)
                    .collect::<Vec<_>>(),
            )
            .with_opt("NextToken", next_token)
            .build())
    }

    async fn put(
        &self,
        stream: String,
        records: Vec<PutRecord>,
    ) -> Result<Vec<PutResult>, KinesisError> {
        match self
            .send(Request::PutRecords {
                stream,
                producer: None,
                records,
            })
            .await?
        {
            Response::PutResults(results) => Ok(results),
            other => Err(unexpected(&other)),
        }
    }

    async fn put_record(&self) -> Result<Value, KinesisError> {
        let stream = self.stream_name()?;
        // SequenceNumberForOrdering is accepted and needs nothing: a
        // shard's records are always stored in arrival order.
        let limits = RecordLimits::of(&self.api.service.limits);
        let records = limits.records(std::slice::from_ref(&self.fields), "")?;
        match self.put(stream, records).await?.pop() {
            Some(PutResult::Stored {
                shard, sequence, ..
            }) => Ok(MapBuilder::new()
                .with("ShardId", shard_id(shard))
                .with("SequenceNumber", sequence.to_string())
                .with("EncryptionType", "NONE")
                .build()),
            Some(PutResult::Failed { code, message }) => {
                Err(RequestError::new(code, message).into())
            }
            None => Err(KinesisError::internal("PutRecord got no result")),
        }
    }

    async fn put_records(mut self) -> Result<Value, KinesisError> {
        let stream = self.stream_name()?;
        let entries = self.fields.take_list("Records")?.unwrap_or_default();
        let batch_max = PUT_RECORDS_MAX.min(self.api.service.limits.batch_records_max);
        let mut validation = Validation::new();
        if entries.is_empty() || entries.len() > batch_max {
            validation.fail(
                &format!("[{} records]", entries.len()),
                "records",
                &if entries.is_empty() {
                    "Member must have length greater than or equal to 1".to_owned()
                } else {
                    format!("Member must have length less than or equal to {batch_max}")
                },
            );
        }
        validation.finish()?;
        // Base64-decoding up to megabytes of data: on the blocking pool
        // when it is large, like the body's parsing.
        let limits = RecordLimits::of(&self.api.service.limits);
        let bytes = entries.iter().map(Value::approx_bytes).sum();
        let records = super::offload(bytes, move || {
            let entries = entries
                .into_iter()
                .map(Fields::new)
                .collect::<Result<Vec<_>, _>>()?;
            limits.records(&entries, "records")
        })
        .await?;
        let results = self.put(stream, records).await?;
        let failed = results
            .iter()
            .filter(|r| matches!(r, PutResult::Failed { .. }))
            .count();
        let results = results
            .into_iter()
            .map(|result| match result {
                PutResult::Stored {
                    shard, sequence, ..
                } => MapBuilder::new()
                    .with("SequenceNumber", sequence.to_string())
                    .with("ShardId", shard_id(shard))
                    .build(),
                // AWS reports a record's failure with one of two codes;
                // clients retry both.
                PutResult::Failed { code, message } => {
                    let code = match KinesisError::code_for(code).1 {
                        throughput @ "ProvisionedThroughputExceededException" => throughput,
                        _ => "InternalFailure",
                    };
                    MapBuilder::new()
                        .with("ErrorCode", code)
                        .with("ErrorMessage", message)
                        .build()
                }
            })
            .collect::<Vec<_>>();
        Ok(MapBuilder::new()
            .with("FailedRecordCount", failed as u64)
            .with("Records", results)
            .with("EncryptionType", "NONE")
            .build())
    }

    async fn get_shard_iterator(&self) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        let shard_text = self.fields.text("ShardId")?;
        let kind = self.fields.text("ShardIteratorType")?;
        let mut validation = Validation::new();
        if shard_text.is_none() {
            validation.required("shardId");
        }
        const KINDS: [&str; 5] = [
            "AT_SEQUENCE_NUMBER",
            "AFTER_SEQUENCE_NUMBER",
            "TRIM_HORIZON",
            "LATEST",
            "AT_TIMESTAMP",
        ];
        match kind {
            None => validation.required("shardIteratorType"),
            Some(kind) if !KINDS.contains(&kind) => validation.fail(
                kind,
                "shardIteratorType",
                &format!("Member must satisfy enum value set: [{}]", KINDS.join(", ")),
            ),
            Some(_) => {}
        }
        validation.finish()?;
        let (Some(shard_text), Some(kind)) = (shard_text, kind) else {
            return Err(KinesisError::internal("validated fields went missing"));
        };
        let service = &self.api.service;
        service
            .may_consume(&self.session, &name)
            .map_err(KinesisError::from)?;
        let shard_index = parse_shard_id(shard_text)?;
        let stream = service
            .storage
            .stream(&name)
            .map_err(|e| self.error(e.into(), Some(&name)))?;
        let shard = stream.shard(shard_index).map_err(|_| {
            KinesisError::not_found(format!(
                "Shard {shard_text} in stream {name} under account {} does not exist",
                self.api.config.account_id
            ))
        })?;
        let sequence_field = || -> Result<u64, KinesisError> {
            let text = self.fields.text("StartingSequenceNumber")?.ok_or_else(|| {
                KinesisError::invalid_argument(format!(
                    "StartingSequenceNumber is required for ShardIteratorType {kind}"
                ))
            })?;
            text.parse::<u64>().map_err(|_| {
                KinesisError::invalid_argument(format!(
                    "StartingSequenceNumber {text} used in GetShardIterator on shard {shard_text} \
                     in stream {name} under account {} is invalid.",
                    self.api.config.account_id
                ))
            })
        };
        let position = match kind {
            // Records before the trim horizon are gone; reads start at
            // the oldest one left, so 0 always means "the oldest".
            "TRIM_HORIZON" => IteratorPosition::Sequence(0),
            "LATEST" => IteratorPosition::Sequence(
                service
                    .storage
                    .resolve(shard, Position::Latest)
                    .map_err(|e| KinesisError::from(RequestError::from(e)))?,
            ),
            "AT_TIMESTAMP" => {
                let ms = self.fields.timestamp_ms("Timestamp")?.ok_or_else(|| {
                    KinesisError::invalid_argument(
                        "Timestamp is required for ShardIteratorType AT_TIMESTAMP",
                    )
                })?;
                IteratorPosition::Timestamp(ms)
            }
            kind => {
                let sequence = sequence_field()?;
                let start = if kind == "AFTER_SEQUENCE_NUMBER" {
                    sequence.saturating_add(1)
                } else {
                    sequence
                };
                let tip = service
                    .storage
                    .resolve(shard, Position::Latest)
                    .map_err(|e| KinesisError::from(RequestError::from(e)))?;
                if start > tip {
                    return Err(KinesisError::invalid_argument(format!(
                        "StartingSequenceNumber {sequence} used in GetShardIterator on shard \
                         {shard_text} in stream {name} under account {} is invalid because it \
                         did not come from this stream.",
                        self.api.config.account_id
                    )));
                }
                IteratorPosition::Sequence(start)
            }
        };
        let iterator = ShardIterator {
            stream: name,
            stream_id: stream.id,
            shard: shard_index,
            position,
            issued_ms: now_ms(),
        };
        Ok(MapBuilder::new()
            .with("ShardIterator", self.api.iterators.seal(&iterator))
            .build())
    }

    async fn get_records(&self) -> Result<Value, KinesisError> {
        let text = self.fields.text("ShardIterator")?;
        let limit = self.limit(
            "Limit",
            "limit",
            GET_RECORDS_LIMIT_MAX,
            GET_RECORDS_LIMIT_MAX,
        )?;
        let Some(text) = text else {
            return Err(Validation::missing("shardIterator"));
        };
        let now = now_ms();
        let iterator = self.api.iterators.open(text, now)?;
        let current = self.api.service.storage.stream(&iterator.stream).ok();
        if current.is_none_or(|stream| stream.id != iterator.stream_id) {
            return Err(KinesisError::not_found(format!(
                "Stream {} under account {} not found (the iterator belongs to a deleted stream).",
                iterator.stream, self.api.config.account_id
            )));
        }
        let limit = limit.min(self.api.service.limits.get_records_max as usize) as u32;
        let from = match iterator.position {
            IteratorPosition::Sequence(sequence) => Position::AtSequence(sequence),
            IteratorPosition::Timestamp(ms) => Position::AtTimestamp(ms),
        };
        let read = |from| Request::GetRecords {
            stream: iterator.stream.clone(),
            shard: iterator.shard,
            from,
            limit,
        };
        // Records damaged on disk (a failing disk, a power cut in buffered
        // mode) would stop a Kinesis consumer for good: it cannot step past
        // them, and would retry them for ever. The read goes on after them
        // (the log names them).
        let mut from = from;
        let mut skipped = 0;
        let response = loop {
            match self.send_raw(read(from)).await {
                // Retention removed what the iterator points at: Kinesis
                // continues at the oldest record left.
                Err(error) if error.code == ErrorCode::PositionTrimmed => {
                    break self.send(read(Position::TrimHorizon)).await?;
                }
                Err(error) if error.code == ErrorCode::StorageFailure => {
                    let past = super::past_damage(
                        &self.api.service,
                        &iterator.stream,
                        iterator.shard,
                        from,
                    );
                    let Some(end) = past.await else {
                        return Err(self.error(error, Some(&iterator.stream)));
                    };
                    tracing::error!(stream = %iterator.stream, shard = iterator.shard, %error, "a Kinesis GetRecords read on past records damaged on disk");
                    from = Position::AtSequence(end);
                    skipped += 1;
                    if skipped == DAMAGED_CHUNKS_SKIPPED_PER_CALL_MAX {
                        // The next call goes on from here.
                        break Response::Records(weir_proto::RecordBatch {
                            records: Vec::new(),
                            next_sequence: end,
                            records_behind_tip: 0,
                            millis_behind_tip: 0,
                        });
                    }
                }
                other => break other.map_err(|error| self.error(error, Some(&iterator.stream)))?,
            }
        };
        let Response::Records(batch) = response else {
            return Err(unexpected(&response));
        };
        let next = match iterator.position {
            // A time still in the future: keep waiting for it, so records
            // that arrive before it are not returned.
            IteratorPosition::Timestamp(ms) if batch.records.is_empty() && ms > now => {
                IteratorPosition::Timestamp(ms)
            }
            _ => IteratorPosition::Sequence(batch.next_sequence),
        };
        let next = ShardIterator {
            position: next,
            issued_ms: now,
            ..iterator
        };
        let records = batch
            .records
            .into_iter()
            .map(record_value)
            .collect::<Vec<_>>();
        Ok(MapBuilder::new()
            .with("Records", records)
            .with("NextShardIterator", self.api.iterators.seal(&next))
            .with("MillisBehindLatest", batch.millis_behind_tip)
            .build())
    }

    async fn describe_limits(&self) -> Result<Value, KinesisError> {
        let Response::Streams(names) = self.send(Request::ListStreams).await? else {
            return Err(KinesisError::internal(
                "ListStreams answered with something else",
            ));
        };
        let storage = &self.api.service.storage;
        let open_shards: usize = names
            .iter()
            .filter_map(|name| storage.stream(name).ok())
            .map(|stream| stream.shards.len())
            .sum();
        let limits = &self.api.service.limits;
        Ok(MapBuilder::new()
            .with("ShardLimit", storage.config().shards_max as u64)
            .with("OpenShardCount", open_shards as u64)
            .with("OnDemandStreamCount", 0u64)
            .with("OnDemandStreamCountLimit", limits.streams_max as u64)
            .build())
    }
}

pub(super) fn record_value(record: Record) -> Value {
    MapBuilder::new()
        .with("SequenceNumber", record.sequence.to_string())
        .with(
            "ApproximateArrivalTimestamp",
            Value::Time(record.timestamp_ms),
        )
        .with("Data", Value::Blob(record.data))
        .with("PartitionKey", record.partition_key)
        .build()
}

/// The first `limit` items and whether more follow: one page of a
/// paginated listing.
pub(super) fn page<T>(items: impl Iterator<Item = T>, limit: usize) -> (Vec<T>, bool) {
    let mut items: Vec<T> = items.take(limit.saturating_add(1)).collect();
    let more = items.len() > limit;
    items.truncate(limit);
    (items, more)
}

/// One page of a stream's shards: those after shard `after`, at most `limit`.
fn shard_page(
    description: &StreamDescription,
    after: Option<u32>,
    limit: usize,
) -> (Vec<&ShardDescription>, bool) {
    let shards = description.shards.iter();
    page(
        shards.filter(|s| after.is_none_or(|after| s.shard > after)),
        limit,
    )
}

fn unexpected(response: &Response) -> KinesisError {
    KinesisError::internal(format!(
        "the service gave an unexpected answer ({})",
        match response {
            Response::Ok => "ok",
            Response::Streams(_) => "streams",
            Response::Stream(_) => "stream",
            Response::PutResults(_) => "put results",
            Response::Records(_) => "records",
            Response::Checkpoint(_) => "checkpoint",
            Response::Admin(_) => "admin",
            Response::Error { .. } => "error",
        }
    ))
}

/// Stream and consumer names: 1 to 128 of `[a-zA-Z0-9_.-]`.
pub(super) fn check_name(validation: &mut Validation, name: &str, field: &str) {
    validation.check_length(name, field, 1, STREAM_NAME_CHARS_MAX);
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        validation.fail(
            name,
            field,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        );
    }
}

/// `shardId-000000000003`, Kinesis's form of Weir's shard 3.
pub fn shard_id(shard: u32) -> String {
    format!("shardId-{shard:012}")
}

/// Reads `shardId-000000000003` (or a bare `3`, which Kinesis also takes).
pub fn parse_shard_id(text: &str) -> Result<u32, KinesisError> {
    let digits = text.strip_prefix("shardId-").unwrap_or(text);
    digits
        .parse::<u32>()
        .map_err(|_| KinesisError::invalid_argument(format!("Invalid ShardId: {text:?}")))
}

/// A decimal 128-bit hash key.
fn parse_hash_key(text: &str) -> Option<u128> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse::<u128>().ok()
}

fn encode_token(text: &str) -> String {
    TOKEN_BASE64.encode(text.as_bytes())
}

fn decode_token(token: &str, field: &str) -> Result<String, KinesisError> {
    TOKEN_BASE64
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| KinesisError::invalid_argument(format!("Invalid {field}: {token}")))
}

/// What a record of `PutRecord` or `PutRecords` may be: AWS's limits or
/// the server's, whichever is lower. Plain values, so a large
/// `PutRecords` can be checked and decoded on the blocking pool.
#[derive(Clone, Copy)]
struct RecordLimits {
    data_max: usize,
    bytes_max: usize,
}

impl RecordLimits {
    fn of(limits: &crate::config::Limits) -> Self {
        Self {
            data_max: RECORD_DATA_BYTES_MAX.min(limits.record_bytes_max),
            bytes_max: PUT_RECORDS_BYTES_MAX.min(limits.request_bytes_max),
        }
    }

    /// Reads and validates records (`PutRecord`'s one or `PutRecords`'
    /// list) with AWS's constraints and messages.
    fn records(&self, entries: &[Fields], prefix: &str) -> Result<Vec<PutRecord>, KinesisError> {
        let data_max = self.data_max;
        let mut validation = Validation::new();
        let mut records = Vec::with_capacity(entries.len());
        let mut total = 0usize;
        for (index, entry) in entries.iter().enumerate() {
            let field = |name: &str| {
                if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}.{}.member.{name}", index + 1)
                }
            };
            let key = entry.text("PartitionKey")?;
            let data = entry.blob("Data")?;
            match key {
                Some(key) => {
                    validation.check_length(key, &field("partitionKey"), 1, PARTITION_KEY_CHARS_MAX)
                }
                None => validation.required(&field("partitionKey")),
            }
            match &data {
                Some(data) if data.len() > data_max => validation.fail(
                    &format!(
                        "java.nio.HeapByteBuffer[pos=0 lim={} cap={}]",
                        data.len(),
                        data.len()
                    ),
                    &field("data"),
                    &format!("Member must have length less than or equal to {data_max}"),
                ),
                Some(_) => {}
                None => validation.required(&field("data")),
            }
            let explicit_hash_key = match entry.text("ExplicitHashKey")? {
                Some(text) => match parse_hash_key(text) {
                    Some(hash) => Some(hash),
                    None => {
                        validation.fail(
                            text,
                            &field("explicitHashKey"),
                            "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
                        );
                        None
                    }
                },
                None => None,
            };
            if let (Some(key), Some(data)) = (key, data) {
                total += key.len() + data.len();
                records.push(PutRecord {
                    partition_key: key.to_owned(),
                    explicit_hash_key,
                    data,
                });
            }
        }
        validation.finish()?;
        let bytes_max = self.bytes_max;
        if total > bytes_max {
            return Err(KinesisError::invalid_argument(format!(
                "Records size exceeds {bytes_max} bytes: the partition keys and data add up to \
                 {total} bytes"
            )));
        }
        Ok(records)
    }
}
