//! Enhanced fan-out: registered stream consumers and `SubscribeToShard`,
//! which pushes records over one long HTTP answer in event-stream framing,
//! backed by Weir's own subscriptions (a live read that waits at the tip).
//!
//! Consumers are catalog records keyed by the stream's id, so a stream
//! deleted and created again under the same name starts with none.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_proto::{ErrorCode, Position, Request};

use super::error::{KinesisError, Validation};
use super::eventstream;
use super::ops::{Answer, Call, check_name, parse_shard_id, record_value};
use super::value::{Encoding, Fields, MapBuilder, Value};
use crate::service::{Reply, RequestError};
use crate::storage::{CatalogKind, now_ms};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Consumer {
    stream_id: u64,
    stream: String,
    name: String,
    created_ms: u64,
}

impl Call<'_> {
    fn consumer_arn(&self, consumer: &Consumer) -> String {
        format!(
            "{}/consumer/{}:{}",
            self.api.arn(&consumer.stream),
            consumer.name,
            consumer.created_ms / 1000
        )
    }

    fn consumer_value(&self, consumer: &Consumer, with_stream: bool) -> MapBuilder {
        let map = MapBuilder::new()
            .with("ConsumerName", consumer.name.as_str())
            .with("ConsumerARN", self.consumer_arn(consumer))
            .with("ConsumerStatus", "ACTIVE")
            .with(
                "ConsumerCreationTimestamp",
                Value::Time(consumer.created_ms),
            );
        if with_stream {
            map.with("StreamARN", self.api.arn(&consumer.stream))
        } else {
            map
        }
    }

    /// The stream (by name and id) a consumer request is about, after
    /// checking the caller may read it.
    fn consumer_stream(&self, name: &str) -> Result<u64, KinesisError> {
        let service = &self.api.service;
        service
            .may_consume(&self.session, name)
            .map_err(KinesisError::from)?;
        let stream = service
            .storage
            .stream(name)
            .map_err(|e| self.error(e.into(), Some(name)))?;
        Ok(stream.id)
    }

    fn consumers(&self, stream_id: u64) -> Result<Vec<Consumer>, KinesisError> {
        let records = self
            .api
            .service
            .storage
            .catalog()
            .list(CatalogKind::KinesisConsumer, &format!("{stream_id}/"))
            .map_err(|e| KinesisError::from(RequestError::from(e)))?;
        records
            .iter()
            .map(|bytes| {
                serde_json::from_slice(bytes).map_err(|e| {
                    KinesisError::internal(format!("a stored consumer is damaged: {e}"))
                })
            })
            .collect()
    }

    /// The consumer a request names, by `ConsumerARN` or by `StreamARN`
    /// and `ConsumerName`.
    fn named_consumer(&self, fields: &Fields) -> Result<Consumer, KinesisError> {
        let (stream, name) = match fields.text("ConsumerARN")? {
            Some(arn) => parse_consumer_arn(arn)?,
            None => {
                let stream = self.stream_name()?;
                let name = fields.text("ConsumerName")?.ok_or_else(|| {
                    KinesisError::invalid_argument(
                        "Either ConsumerARN or StreamARN and ConsumerName should be provided.",
                    )
                })?;
                (stream, name.to_owned())
            }
        };
        let stream_id = self.consumer_stream(&stream)?;
        self.consumers(stream_id)?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                KinesisError::not_found(format!(
                    "Consumer {name} under stream {stream} under account {} not found.",
                    self.api.config.account_id
                ))
            })
    }

    pub(super) async fn register_stream_consumer(&self) -> Result<Answer, KinesisError> {
        let stream = self.stream_name()?;
        let name = self
            .fields
            .text("ConsumerName")?
            .unwrap_or_default()
            .to_owned();
        let mut validation = Validation::new();
        check_name(&mut validation, &name, "consumerName");
        validation.finish()?;
        let stream_id = self.consumer_stream(&stream)?;
        let existing = self.consumers(stream_id)?;
        if existing.iter().any(|c| c.name == name) {
            return Err(KinesisError::new(
                "ResourceInUseException",
                format!("Consumer {name} under stream {stream} already exists."),
            ));
        }
        let max = self.api.config.consumers_per_stream_max;
        if existing.len() >= max {
            return Err(KinesisError::new(
                "LimitExceededException",
                format!(
                    "stream {stream} has {max} registered consumers \
                     (kinesis.consumers_per_stream_max); deregister one first"
                ),
            ));
        }
        let consumer = Consumer {
            stream_id,
            stream,
            name,
            created_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&consumer)
            .map_err(|e| KinesisError::internal(format!("encoding a consumer: {e}")))?;
        let storage = self.api.service.storage.clone();
        let key = format!("{stream_id}/{}", consumer.name);
        tokio::task::spawn_blocking(move || {
            storage
                .catalog()
                .put(CatalogKind::KinesisConsumer, &key, &bytes)
        })
        .await
        .map_err(|e| KinesisError::internal(format!("storing a consumer: {e}")))?
        .map_err(|e| KinesisError::from(RequestError::from(e)))?;
        Ok(Answer::Value(
            MapBuilder::new()
                .with("Consumer", self.consumer_value(&consumer, false))
                .build(),
        ))
    }

    pub(super) async fn deregister_stream_consumer(&self) -> Result<Answer, KinesisError> {
        let consumer = self.named_consumer(&self.fields)?;
        let storage = self.api.service.storage.clone();
        let key = format!("{}/{}", consumer.stream_id, consumer.name);
        tokio::task::spawn_blocking(move || {
            storage.catalog().remove(CatalogKind::KinesisConsumer, &key)
        })
        .await
        .map_err(|e| KinesisError::internal(format!("removing a consumer: {e}")))?
        .map_err(|e| KinesisError::from(RequestError::from(e)))?;
        Ok(Answer::Value(MapBuilder::new().build()))
    }

    pub(super) async fn describe_stream_consumer(&self) -> Result<Answer, KinesisError> {
        let consumer = self.named_consumer(&self.fields)?;
        Ok(Answer::Value(
            MapBuilder::new()
                .with("ConsumerDescription", self.consumer_value(&consumer, true))
                .build(),
        ))
    }

    pub(super) async fn list_stream_consumers(&self) -> Result<Answer, KinesisError> {
        let stream = self.stream_name()?;
        let stream_id = self.consumer_stream(&stream)?;
        let consumers = self
            .consumers(stream_id)?
            .iter()
            .map(|c| self.consumer_value(c, false).build())
            .collect::<Vec<_>>();
        Ok(Answer::Value(
            MapBuilder::new().with("Consumers", consumers).build(),
        ))
    }

    /// Opens a Weir subscription and streams its batches as
    /// `SubscribeToShardEvent`s: an `initial-response` first, an empty
    /// event every `subscription_heartbeat_ms` while idle, and the end
    /// after `subscription_session_ms` (clients subscribe again from the
    /// last `ContinuationSequenceNumber`, as with Kinesis).
    pub(super) async fn subscribe_to_shard(&self) -> Result<Answer, KinesisError> {
        let consumer = self.named_consumer(&self.fields)?;
        let shard = parse_shard_id(self.fields.text("ShardId")?.unwrap_or_default())?;
        let start = self
            .fields
            .map("StartingPosition")?
            .ok_or_else(|| KinesisError::invalid_argument("StartingPosition is required"))?;
        let sequence = || -> Result<u64, KinesisError> {
            start
                .text("SequenceNumber")?
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    KinesisError::invalid_argument(
                        "StartingPosition needs a valid SequenceNumber for this Type",
                    )
                })
        };
        let from = match start.text("Type")?.unwrap_or_default() {
            "TRIM_HORIZON" => Position::TrimHorizon,
            "LATEST" => Position::Latest,
            "AT_SEQUENCE_NUMBER" => Position::AtSequence(sequence()?),
            "AFTER_SEQUENCE_NUMBER" => Position::AfterSequence(sequence()?),
            "AT_TIMESTAMP" => {
                Position::AtTimestamp(start.timestamp_ms("Timestamp")?.ok_or_else(|| {
                    KinesisError::invalid_argument(
                        "StartingPosition AT_TIMESTAMP needs a Timestamp",
                    )
                })?)
            }
            other => {
                return Err(KinesisError::invalid_argument(format!(
                    "StartingPosition Type {other:?} is not one of TRIM_HORIZON, LATEST, \
                     AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP"
                )));
            }
        };
        let request = Request::Subscribe {
            stream: consumer.stream.clone(),
            shard,
            from,
        };
        let mut subscription = match self.api.service.handle(request, &self.session).await {
            Reply::Subscription(subscription) => subscription,
            Reply::Response(weir_proto::Response::Error { code, message }) => {
                return Err(self.error(RequestError::new(code, message), Some(&consumer.stream)));
            }
            Reply::Response(_) => {
                return Err(KinesisError::internal("Subscribe answered without a feed"));
            }
        };
        let encoding = self.encoding;
        let content_type = encoding.content_type();
        let heartbeat = Duration::from_millis(self.api.config.subscription_heartbeat_ms);
        let session_end = tokio::time::Instant::now()
            + Duration::from_millis(self.api.config.subscription_session_ms);
        let service = self.api.service.clone();
        let session = self.session.clone_identity();
        let (events, feed) = mpsc::channel::<Bytes>(1);
        let mut next_sequence = subscription.confirmation().next_sequence;
        let first = encoding.encode(&MapBuilder::new().build());
        tokio::spawn(async move {
            if events
                .send(eventstream::event("initial-response", content_type, &first))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let batch = tokio::select! {
                    _ = tokio::time::sleep_until(session_end) => return,
                    _ = events.closed() => return,
                    batch = tokio::time::timeout(heartbeat, subscription.next_batch()) => batch,
                };
                let checked = service.may_consume(&session, subscription.stream());
                let (records, millis_behind) = match (checked, batch) {
                    // Records damaged on disk: the session ends with a
                    // continuation past them, where the client subscribes
                    // again (see `super::past_damage`).
                    (Ok(()), Ok(Err(error))) if error.code == ErrorCode::StorageFailure => {
                        let past = super::past_damage(
                            &service,
                            subscription.stream(),
                            shard,
                            Position::AtSequence(next_sequence),
                        );
                        let Some(end) = past.await else {
                            let _ = events.send(exception(encoding, error)).await;
                            return;
                        };
                        tracing::error!(stream = %subscription.stream(), shard, %error, "SubscribeToShard moved past records damaged on disk");
                        let _ = events
                            .send(records_event(encoding, Vec::new(), end, 0))
                            .await;
                        return;
                    }
                    (Err(error), _) | (_, Ok(Err(error))) => {
                        let _ = events.send(exception(encoding, error)).await;
                        return;
                    }
                    // Idle: a heartbeat with no records.
                    (Ok(()), Err(_)) => (Vec::new(), 0),
                    (Ok(()), Ok(Ok(batch))) => {
                        next_sequence = batch.next_sequence;
                        let records = batch.records.into_iter().map(record_value).collect();
                        (records, batch.millis_behind_tip)
                    }
                };
                let event = records_event(encoding, records, next_sequence, millis_behind);
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
        Ok(Answer::Events(feed))
    }
}

/// A `SubscribeToShardEvent`: records, and where to subscribe again.
fn records_event(
    encoding: Encoding,
    records: Vec<Value>,
    continuation: u64,
    millis_behind: u64,
) -> Bytes {
    let payload = encoding.encode(
        &MapBuilder::new()
            .with("Records", records)
            .with("ContinuationSequenceNumber", continuation.to_string())
            .with("MillisBehindLatest", millis_behind)
            .with("ChildShards", Vec::<Value>::new())
            .build(),
    );
    eventstream::event("SubscribeToShardEvent", encoding.content_type(), &payload)
}

/// The event that ends a subscription with `error`.
fn exception(encoding: Encoding, error: RequestError) -> Bytes {
    let error = KinesisError::from(error);
    let payload = encoding.encode(&MapBuilder::new().with("message", error.message).build());
    eventstream::exception(error.code, encoding.content_type(), &payload)
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/CONSUMER:SECONDS`.
fn parse_consumer_arn(arn: &str) -> Result<(String, String), KinesisError> {
    let invalid = || {
        KinesisError::invalid_argument(format!(
            "ConsumerARN {arn:?} is not a consumer ARN \
             (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/CONSUMER:TIMESTAMP)"
        ))
    };
    let (_, path) = arn.split_once(":stream/").ok_or_else(invalid)?;
    let (stream, consumer) = path.split_once("/consumer/").ok_or_else(invalid)?;
    let name = consumer.rsplit_once(':').map_or(consumer, |(name, _)| name);
    if stream.is_empty() || name.is_empty() {
        return Err(invalid());
    }
    Ok((stream.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_arns_name_their_stream_and_consumer() {
        assert_eq!(
            parse_consumer_arn(
                "arn:aws:kinesis:us-east-1:000000000000:stream/clicks/consumer/app:1700000000"
            )
            .expect("valid"),
            ("clicks".to_owned(), "app".to_owned())
        );
        for bad in [
            "",
            "arn:aws:kinesis:r:a:stream/clicks",
            "arn:x:stream//consumer/app:1",
        ] {
            assert!(parse_consumer_arn(bad).is_err(), "{bad}");
        }
    }
}
