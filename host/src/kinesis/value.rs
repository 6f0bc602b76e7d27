//! The two body encodings of the Kinesis API, read into one tree.
//!
//! JSON 1.1 (boto3, the AWS CLI, most SDKs) carries blobs as base64 text
//! and timestamps as epoch seconds with a fraction; CBOR 1.1 (the AWS SDK
//! for Java, so KCL and the Kinesis Agent) carries blobs as byte strings
//! and timestamps as tag 1 with epoch milliseconds. Operations read fields
//! through [`Fields`], which accepts either form, and answer with a
//! [`Value`] that [`Encoding::encode`] writes in the request's encoding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use super::error::KinesisError;

/// A body, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Blob(Bytes),
    /// Epoch milliseconds.
    Time(u64),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    /// About how many bytes the value's text and blobs take (to decide
    /// where to encode it, not how).
    pub fn approx_bytes(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            Value::List(items) => items.iter().map(Value::approx_bytes).sum(),
            Value::Map(entries) => entries
                .iter()
                .map(|(key, value)| key.len() + value.approx_bytes())
                .sum(),
            _ => 8,
        }
    }
}

/// How a request's body is encoded; the answer uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

impl Encoding {
    pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
    pub const CBOR_CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

    /// The encoding a `Content-Type` names; anything but CBOR is read as
    /// JSON (AWS accepts `application/json` and no type at all).
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(t) if t.trim().starts_with(Self::CBOR_CONTENT_TYPE) => Self::Cbor,
            _ => Self::Json,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => Self::JSON_CONTENT_TYPE,
            Self::Cbor => Self::CBOR_CONTENT_TYPE,
        }
    }

    /// Reads a request body; an empty body is an empty map.
    pub fn decode(self, body: &[u8]) -> Result<Value, KinesisError> {
        if body.is_empty() {
            return Ok(Value::Map(Vec::new()));
        }
        match self {
            Self::Json => serde_json::from_slice::<serde_json::Value>(body)
                .map(from_json)
                .map_err(|e| KinesisError::serialization(format!("the body is not JSON: {e}"))),
            Self::Cbor => ciborium::from_reader::<ciborium::Value, _>(body)
                .map_err(|e| KinesisError::serialization(format!("the body is not CBOR: {e}")))
                .and_then(from_cbor),
        }
    }

    pub fn encode(self, value: &Value) -> Vec<u8> {
        match self {
            // Serialized straight from the tree: a GetRecords answer is
            // megabytes of base64, so no intermediate copy of it.
            Self::Json => serde_json::to_vec(&Json(value)).unwrap_or_default(),
            Self::Cbor => {
                let mut out = Vec::new();
                // Writing to a Vec cannot fail, and every Value has a CBOR form.
                let _ = ciborium::into_writer(&to_cbor(value), &mut out);
                out
            }
        }
    }
}

fn from_json(value: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Text(s),
        J::Array(items) => Value::List(items.into_iter().map(from_json).collect()),
        J::Object(map) => Value::Map(map.into_iter().map(|(k, v)| (k, from_json(v))).collect()),
    }
}

fn from_cbor(value: ciborium::Value) -> Result<Value, KinesisError> {
    use ciborium::Value as C;
    Ok(match value {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => Value::Int(
            i64::try_from(i)
                .map_err(|_| KinesisError::serialization("a CBOR integer is out of range"))?,
        ),
        C::Float(f) => Value::Float(f),
        C::Text(s) => Value::Text(s),
        C::Bytes(b) => Value::Blob(Bytes::from(b)),
        C::Tag(1, inner) => match *inner {
            C::Integer(i) => Value::Time(
                u64::try_from(i)
                    .map_err(|_| KinesisError::serialization("a CBOR timestamp is negative"))?,
            ),
            C::Float(f) if f >= 0.0 => Value::Time(f as u64),
            _ => return Err(KinesisError::serialization("CBOR tag 1 must hold a number")),
        },
        C::Tag(_, inner) => from_cbor(*inner)?,
        C::Array(items) => Value::List(items.into_iter().map(from_cbor).collect::<Result<_, _>>()?),
        C::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| match k {
                    C::Text(k) => Ok((k, from_cbor(v)?)),
                    _ => Err(KinesisError::serialization("CBOR map keys must be text")),
                })
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(KinesisError::serialization("unsupported CBOR value")),
    })
}

/// A value written as AWS JSON 1.1: blobs as base64 text, timestamps as
/// epoch seconds with a fraction.
struct Json<'a>(&'a Value);

impl serde::Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Blob(b) => serializer.serialize_str(&BASE64.encode(b)),
            Value::Time(ms) => serializer.serialize_f64(*ms as f64 / 1000.0),
            Value::List(items) => serializer.collect_seq(items.iter().map(Json)),
            Value::Map(entries) => {
                serializer.collect_map(entries.iter().map(|(key, value)| (key, Json(value))))
            }
        }
    }
}

fn to_cbor(value: &Value) -> ciborium::Value {
    use ciborium::Value as C;
    match value {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Int(i) => C::Integer((*i).into()),
        Value::Float(f) => C::Float(*f),
        Value::Text(s) => C::Text(s.clone()),
        Value::Blob(b) => C::Bytes(b.to_vec()),
        Value::Time(ms) => C::Tag(1, Box::new(C::Integer((*ms).into()))),
        Value::List(items) => C::Array(items.iter().map(to_cbor).collect()),
        Value::Map(entries) => C::Map(
            entries
                .iter()
                .map(|(k, v)| (C::Text(k.clone()), to_cbor(v)))
                .collect(),
        ),
    }
}

/// Builds an answer's map; `None` values are left out, as AWS does.
#[derive(Default)]
pub struct MapBuilder(Vec<(String, Value)>);

impl MapBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.push((key.to_owned(), value.into()));
        self
    }

    pub fn with_opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.with(key, value),
            None => self,
        }
    }

    pub fn build(self) -> Value {
        Value::Map(self.0)
    }
}

impl From<MapBuilder> for Value {
    fn from(builder: MapBuilder) -> Self {
        builder.build()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<u64> for Value {
    fn from(i: u64) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}

/// A request's top-level fields. Unknown fields are ignored (newer SDKs
/// send fields this server does not know); a known field of the wrong type
/// is a `SerializationException`, as AWS answers it.
pub struct Fields {
    entries: Vec<(String, Value)>,
}

impl Fields {
    pub fn new(value: Value) -> Result<Self, KinesisError> {
        match value {
            Value::Map(entries) => Ok(Self { entries }),
            _ => Err(KinesisError::serialization(
                "the request body must be a map of fields",
            )),
        }
    }

    /// The fields as key-value pairs (for maps whose keys are data, such
    /// as tags).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries.iter().map(|(key, value)| (key, value))
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
            .filter(|value| **value != Value::Null)
    }

    pub fn text(&self, name: &str) -> Result<Option<&str>, KinesisError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, KinesisError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(Value::Float(f)) if f.fract() == 0.0 => Ok(Some(*f as i64)),
            Some(_) => Err(wrong_type(name, "an integer")),
        }
    }

    /// A blob: bytes in CBOR, base64 text in JSON (and accepted in CBOR).
    pub fn blob(&self, name: &str) -> Result<Option<Bytes>, KinesisError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Blob(b)) => Ok(Some(b.clone())),
            Some(Value::Text(s)) => BASE64
                .decode(s)
                .map(|b| Some(Bytes::from(b)))
                .map_err(|_| KinesisError::serialization(format!("{name} is not valid base64"))),
            Some(_) => Err(wrong_type(name, "a blob")),
        }
    }

    /// A timestamp in epoch milliseconds: JSON numbers are seconds, CBOR
    /// tag 1 is milliseconds.
    pub fn timestamp_ms(&self, name: &str) -> Result<Option<u64>, KinesisError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Time(ms)) => Ok(Some(*ms)),
            Some(Value::Int(s)) => Ok(Some((*s).max(0) as u64 * 1000)),
            Some(Value::Float(s)) if s.is_finite() => Ok(Some((s.max(0.0) * 1000.0) as u64)),
            Some(_) => Err(wrong_type(name, "a timestamp")),
        }
    }

    pub fn list(&self, name: &str) -> Result<Option<&[Value]>, KinesisError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::List(items)) => Ok(Some(items)),
            Some(_) => Err(wrong_type(name, "a list")),
        }
    }

    pub fn map(&self, name: &str) -> Result<Option<Fields>, KinesisError> {
        match self.get(name) {
            None => Ok(None),
            Some(value @ Value::Map(_)) => Fields::new(value.clone()).map(Some),
            Some(_) => Err(wrong_type(name, "a structure")),
        }
    }
}

fn wrong_type(name: &str, expected: &str) -> KinesisError {
    KinesisError::serialization(format!("{name} must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_blobs_are_base64_and_timestamps_seconds() {
        let body = br#"{"Data":"aGVsbG8=","Timestamp":1700000000.25,"Extra":{"x":1}}"#;
        let fields = Fields::new(Encoding::Json.decode(body).expect("json")).expect("map");
        assert_eq!(
            fields.blob("Data").expect("blob").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            fields.timestamp_ms("Timestamp").expect("time"),
            Some(1_700_000_000_250)
        );
        assert!(fields.text("Data").is_ok() && fields.int("Data").is_err());
        let answer = MapBuilder::new()
            .with("Data", Value::Blob(Bytes::from_static(b"hello")))
            .with("At", Value::Time(1_500))
            .build();
        assert_eq!(
            String::from_utf8(Encoding::Json.encode(&answer)).expect("utf8"),
            r#"{"Data":"aGVsbG8=","At":1.5}"#
        );
    }

    #[test]
    fn cbor_blobs_are_bytes_and_timestamps_tagged_milliseconds() {
        let request = MapBuilder::new()
            .with("Data", Value::Blob(Bytes::from_static(&[0, 159, 255])))
            .with("Timestamp", Value::Time(1_700_000_000_250))
            .build();
        let bytes = Encoding::Cbor.encode(&request);
        let raw: ciborium::Value = ciborium::from_reader(&bytes[..]).expect("cbor");
        let timestamp = raw
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some("Timestamp")))
            .map(|(_, v)| v.clone());
        assert_eq!(
            timestamp,
            Some(ciborium::Value::Tag(
                1,
                Box::new(ciborium::Value::Integer(1_700_000_000_250u64.into()))
            ))
        );
        let fields = Fields::new(Encoding::Cbor.decode(&bytes).expect("decode")).expect("map");
        assert_eq!(
            fields.blob("Data").expect("blob").as_deref(),
            Some(&[0, 159, 255][..])
        );
        assert_eq!(
            fields.timestamp_ms("Timestamp").expect("time"),
            Some(1_700_000_000_250)
        );
    }

    #[test]
    fn garbage_is_a_serialization_error() {
        for (encoding, body) in [
            (Encoding::Json, &b"{not json"[..]),
            (Encoding::Cbor, &[0xff][..]),
        ] {
            let error = encoding.decode(body).expect_err("garbage");
            assert_eq!(error.code, "SerializationException");
        }
        assert!(Fields::new(Value::List(Vec::new())).is_err());
    }
}
