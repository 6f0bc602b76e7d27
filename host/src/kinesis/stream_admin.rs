//! Stream housekeeping: tags, the retention period, enhanced monitoring.
//!
//! Tags are a catalog record per stream id (so a stream created again
//! under the same name starts untagged); changing them or the retention
//! needs the `admin` role on the stream, listing them the right to see it.

use std::collections::BTreeMap;

use weir_proto::admin::Role;
use weir_proto::{Request, Response, Retention};

use super::error::{KinesisError, Validation};
use super::ops::{Call, RETENTION_HOURS_MAX, RETENTION_HOURS_MIN, page};
use super::value::{MapBuilder, Value};
use crate::service::RequestError;
use crate::storage::CatalogKind;

/// Kinesis's limits on tags.
const TAGS_PER_STREAM_MAX: usize = 50;
const TAG_KEY_CHARS_MAX: usize = 128;
const TAG_VALUE_CHARS_MAX: usize = 256;

type Tags = BTreeMap<String, String>;

/// One record per stream; the trailing slash keeps stream 1's key from
/// being a prefix of stream 10's.
fn tags_key(stream_id: u64) -> String {
    format!("{stream_id}/")
}

impl Call<'_> {
    /// The stream a tag request names (by name, `StreamARN` or
    /// `ResourceARN`) and its id, after checking the caller may `role` it.
    fn tagged_stream(&self, role: Role) -> Result<(String, u64), KinesisError> {
        let name = match self.fields.text("ResourceARN")? {
            Some(arn) => arn
                .rsplit_once(":stream/")
                .map(|(_, name)| name.to_owned())
                .ok_or_else(|| {
                    KinesisError::invalid_argument(format!(
                        "ResourceARN {arn:?} is not a stream ARN"
                    ))
                })?,
            None => self.stream_name()?,
        };
        self.api
            .service
            .may(&self.session, role, &name)
            .map_err(KinesisError::from)?;
        let stream = self
            .api
            .service
            .storage
            .stream(&name)
            .map_err(|e| self.error(e.into(), Some(&name)))?;
        Ok((name, stream.id))
    }

    fn tags(&self, stream_id: u64) -> Result<Tags, KinesisError> {
        let records = self
            .api
            .service
            .storage
            .catalog()
            .list(CatalogKind::KinesisTags, &tags_key(stream_id))
            .map_err(|e| KinesisError::from(RequestError::from(e)))?;
        match records.first() {
            None => Ok(Tags::new()),
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| KinesisError::internal(format!("stored tags are damaged: {e}"))),
        }
    }

    async fn store_tags(&self, stream_id: u64, tags: &Tags) -> Result<(), KinesisError> {
        let bytes = serde_json::to_vec(tags)
            .map_err(|e| KinesisError::internal(format!("encoding tags: {e}")))?;
        let storage = self.api.service.storage.clone();
        tokio::task::spawn_blocking(move || {
            storage
                .catalog()
                .put(CatalogKind::KinesisTags, &tags_key(stream_id), &bytes)
        })
        .await
        .map_err(|e| KinesisError::internal(format!("storing tags: {e}")))?
        .map_err(|e| KinesisError::from(RequestError::from(e)))
    }

    /// `AddTagsToStream` and `TagResource`.
    pub(super) async fn add_tags(&self) -> Result<Value, KinesisError> {
        let (name, stream_id) = self.tagged_stream(Role::Admin)?;
        let given = self
            .fields
            .map("Tags")?
            .ok_or_else(|| KinesisError::invalid_argument("Tags is required"))?;
        let mut tags = self.tags(stream_id)?;
        let mut validation = Validation::new();
        for (key, value) in given.entries() {
            let Value::Text(value) = value else {
                return Err(KinesisError::serialization("tag values must be strings"));
            };
            validation.check_length(key, "tags.key", 1, TAG_KEY_CHARS_MAX);
            validation.check_length(value, "tags.value", 0, TAG_VALUE_CHARS_MAX);
            tags.insert(key.clone(), value.clone());
        }
        validation.finish()?;
        if tags.len() > TAGS_PER_STREAM_MAX {
            return Err(KinesisError::new(
                "LimitExceededException",
                format!(
                    "stream {name} would have {} tags; a stream has at most {TAGS_PER_STREAM_MAX}",
                    tags.len()
                ),
            ));
        }
        self.store_tags(stream_id, &tags).await?;
        Ok(MapBuilder::new().build())
    }

    /// `RemoveTagsFromStream` and `UntagResource`.
    pub(super) async fn remove_tags(&self) -> Result<Value, KinesisError> {
        let (_, stream_id) = self.tagged_stream(Role::Admin)?;
        let keys = self.fields.list("TagKeys")?.unwrap_or_default();
        let mut tags = self.tags(stream_id)?;
        for key in keys {
            if let Value::Text(key) = key {
                tags.remove(key);
            }
        }
        self.store_tags(stream_id, &tags).await?;
        Ok(MapBuilder::new().build())
    }

    /// `ListTagsForStream` (paged) and `ListTagsForResource`.
    pub(super) async fn list_tags(&self, paged: bool) -> Result<Value, KinesisError> {
        let (_, stream_id) = self.tagged_stream(Role::Consume)?;
        let tags = self.tags(stream_id)?;
        let start = self.fields.text("ExclusiveStartTagKey")?;
        let limit = self.limit(
            "Limit",
            "limit",
            TAGS_PER_STREAM_MAX as i64,
            TAGS_PER_STREAM_MAX as i64,
        )?;
        let (selected, more) = page(
            tags.iter()
                .filter(|(key, _)| start.is_none_or(|start| key.as_str() > start)),
            limit,
        );
        let list = selected
            .into_iter()
            .map(|(key, value)| {
                MapBuilder::new()
                    .with("Key", key.as_str())
                    .with("Value", value.as_str())
                    .build()
            })
            .collect::<Vec<_>>();
        let answer = MapBuilder::new().with("Tags", list);
        Ok(if paged {
            answer.with("HasMoreTags", more)
        } else {
            answer
        }
        .build())
    }

    /// `IncreaseStreamRetentionPeriod` (`increase`) and
    /// `DecreaseStreamRetentionPeriod`: Weir's retention age, in hours.
    pub(super) async fn change_retention(&self, increase: bool) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        let hours = self.fields.int("RetentionPeriodHours")?;
        let mut validation = Validation::new();
        match hours {
            Some(hours) => validation.check_range(
                hours,
                "retentionPeriodHours",
                RETENTION_HOURS_MIN as i64,
                RETENTION_HOURS_MAX as i64,
            ),
            None => validation.required("retentionPeriodHours"),
        }
        validation.finish()?;
        let hours = hours.map_or(RETENTION_HOURS_MIN, |hours| hours as u64);
        let Response::Stream(description) = self
            .send(Request::DescribeStream { name: name.clone() })
            .await?
        else {
            return Err(KinesisError::internal(
                "DescribeStream answered with something else",
            ));
        };
        let current = Self::retention_hours(&description);
        let (wrong_way, verb) = if increase {
            (hours < current, "increase")
        } else {
            (hours > current, "decrease")
        };
        if wrong_way {
            return Err(KinesisError::invalid_argument(format!(
                "Requested retention period ({hours} hours) for stream {name} can not be \
                 {verb}d from the current retention period ({current} hours)."
            )));
        }
        let retention = Retention {
            age_ms: Some(hours * 3_600_000),
            bytes: description.retention.bytes,
        };
        crate::service::set_retention(&self.api.service, &self.session, &name, retention)
            .await
            .map_err(|e| self.error(e, Some(&name)))?;
        Ok(MapBuilder::new().build())
    }

    /// `EnableEnhancedMonitoring` / `DisableEnhancedMonitoring`: Weir
    /// always exports per-shard metrics on `/metrics`, so this changes
    /// nothing and answers as Kinesis does.
    pub(super) async fn enhanced_monitoring(&self, enable: bool) -> Result<Value, KinesisError> {
        let name = self.stream_name()?;
        self.send(Request::DescribeStream { name: name.clone() })
            .await?;
        let requested = self.fields.list("ShardLevelMetrics")?.unwrap_or_default();
        let desired: Vec<Value> = if enable {
            requested.to_vec()
        } else {
            Vec::new()
        };
        Ok(MapBuilder::new()
            .with("StreamName", name.as_str())
            .with("StreamARN", self.api.arn(&name))
            .with("CurrentShardLevelMetrics", Vec::<Value>::new())
            .with("DesiredShardLevelMetrics", desired)
            .build())
    }
}
