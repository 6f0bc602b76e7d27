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

    /// Writes `value` straight into one buffer: a GetRecords answer is
    /// megabytes of blobs, which go in once (base64-encoded in place for
    /// JSON), with no intermediate strings or trees.
    pub fn encode(self, value: &Value) -> Vec<u8> {
        // Room for the blobs as they will be written (base64 is 4/3 of
        // them) and the rest of the answer, in one allocation.
        let bytes = value.approx_bytes();
        let mut out = Vec::new();
        match self {
            Self::Json => {
                out.reserve(bytes / 3 * 4 + 1024);
                write_json(&mut out, value);
            }
            Self::Cbor => {
                out.reserve(bytes + 1024);
                write_cbor(&mut out, value);
            }
        }
        out
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
fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) => write_json_scalar(out, f),
        Value::Text(s) => write_json_scalar(out, s),
        Value::Blob(b) => {
            // Base64 needs no escaping: encoded in place between quotes.
            let start = out.len() + 1;
            let len = base64::encoded_len(b.len(), true).unwrap_or_default();
            out.resize(start + len + 1, b'"');
            let written = BASE64.encode_slice(b, &mut out[start..start + len]);
            debug_assert_eq!(written, Ok(len));
        }
        Value::Time(ms) => write_json_scalar(out, &(*ms as f64 / 1000.0)),
        Value::List(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Map(entries) => {
            out.push(b'{');
            for (index, (key, item)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json_scalar(out, key);
                out.push(b':');
                write_json(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A string (escaped) or a number as serde_json writes it (a number that
/// is not finite as `null`).
fn write_json_scalar<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, scalar: &T) {
    // Writing a string or a number to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, scalar);
}

/// A value written as AWS CBOR 1.1: blobs as byte strings, timestamps as
/// tag 1 with epoch milliseconds (RFC 8949's encoding, definite lengths).
fn write_cbor(out: &mut Vec<u8>, value: &Value) {
    const UNSIGNED: u8 = 0;
    const NEGATIVE: u8 = 1;
    const BYTES: u8 = 2;
    const TEXT: u8 = 3;
    const ARRAY: u8 = 4;
    const MAP: u8 = 5;
    const TAG: u8 = 6;
    const EPOCH_TIME_TAG: u64 = 1;
    match value {
        Value::Null => out.push(0xf6),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Int(i) if *i >= 0 => cbor_head(out, UNSIGNED, i.unsigned_abs()),
        Value::Int(i) => cbor_head(out, NEGATIVE, i.unsigned_abs() - 1),
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Text(s) => {
            cbor_head(out, TEXT, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Blob(b) => {
            cbor_head(out, BYTES, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Time(ms) => {
            cbor_head(out, TAG, EPOCH_TIME_TAG);
            cbor_head(out, UNSIGNED, *ms);
        }
        Value::List(items) => {
            cbor_head(out, ARRAY, items.len() as u64);
            for item in items {
                write_cbor(out, item);
            }
        }
        Value::Map(entries) => {
            cbor_head(out, MAP, entries.len() as u64);
            for (key, item) in entries {
                cbor_head(out, TEXT, key.len() as u64);
                out.extend_from_slice(key.as_bytes());
                write_cbor(out, item);
            }
        }
    }
}

/// A CBOR data item's head: its major type and argument, in the fewest
/// bytes.
fn cbor_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let major = major << 5;
    if argument < 24 {
        out.push(major | argument as u8);
    } else if let Ok(byte) = u8::try_from(argument) {
        out.extend_from_slice(&[major | 24, byte]);
    } else if let Ok(short) = u16::try_from(argument) {
        out.push(major | 25);
        out.extend_from_slice(&short.to_be_bytes());
    } else if let Ok(word) = u32::try_from(argument) {
        out.push(major | 26);
        out.extend_from_slice(&word.to_be_bytes());
    } else {
        out.push(major | 27);
        out.extend_from_slice(&argument.to_be_bytes());
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

    /// Like [`Fields::list`], but moves the items out: a list of
    /// megabytes can go on to another thread without a copy.
    pub fn take_list(&mut self, name: &str) -> Result<Option<Vec<Value>>, KinesisError> {
        match self.entries.iter_mut().find(|(key, _)| key == name) {
            None | Some((_, Value::Null)) => Ok(None),
            Some((_, Value::List(items))) => Ok(Some(std::mem::take(items))),
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

    /// Every kind of value, nested, with text that needs escaping.
    fn every_kind() -> Value {
        MapBuilder::new()
            .with("Null", Value::Null)
            .with("Yes", Value::Bool(true))
            .with("No", Value::Bool(false))
            .with(
                "Ints",
                Value::List(vec![
                    Value::Int(0),
                    Value::Int(23),
                    Value::Int(24),
                    Value::Int(-1),
                    Value::Int(-25),
                    Value::Int(300),
                    Value::Int(70_000),
                    Value::Int(5_000_000_000),
                    Value::Int(i64::MIN),
                    Value::Int(i64::MAX),
                ]),
            )
            .with("Float", Value::Float(0.25))
            .with(
                "Text",
                Value::Text("a \"quoted\"\nline, ünïcode \u{1}".into()),
            )
            .with("Empty", Value::Blob(Bytes::new()))
            .with("Data", Value::Blob(Bytes::from(vec![7u8; 300])))
            .with("At", Value::Time(1_700_000_000_250))
            .with(
                "Nested",
                Value::Map(vec![("List".into(), Value::List(Vec::new()))]),
            )
            .build()
    }

    #[test]
    fn cbor_answers_decode_to_what_was_encoded() {
        let value = every_kind();
        let bytes = Encoding::Cbor.encode(&value);
        assert_eq!(Encoding::Cbor.decode(&bytes).expect("decode"), value);
        // And a general-purpose decoder reads it too.
        let raw: ciborium::Value = ciborium::from_reader(&bytes[..]).expect("ciborium");
        assert_eq!(raw.as_map().map(Vec::len), Some(10));
    }

    #[test]
    fn json_answers_are_what_serde_json_reads() {
        let json: serde_json::Value =
            serde_json::from_slice(&Encoding::Json.encode(&every_kind())).expect("valid JSON");
        let expected = serde_json::json!({
            "Null": null,
            "Yes": true,
            "No": false,
            "Ints": [0, 23, 24, -1, -25, 300, 70_000, 5_000_000_000i64, i64::MIN, i64::MAX],
            "Float": 0.25,
            "Text": "a \"quoted\"\nline, ünïcode \u{1}",
            "Empty": "",
            "Data": BASE64.encode([7u8; 300]),
            "At": 1_700_000_000.25,
            "Nested": {"List": []},
        });
        assert_eq!(json, expected);
        assert_eq!(
            String::from_utf8(Encoding::Json.encode(&Value::Float(f64::NAN))).expect("utf8"),
            "null"
        );
    }

    #[test]
    fn a_taken_list_is_moved_out_and_a_wrong_type_is_named() {
        let body = br#"{"Records":[{"Data":"aGVsbG8="}],"StreamName":"s","Empty":null}"#;
        let mut fields = Fields::new(Encoding::Json.decode(body).expect("json")).expect("map");
        let records = fields
            .take_list("Records")
            .expect("a list")
            .expect("present");
        assert_eq!(records.len(), 1);
        assert_eq!(fields.list("Records").expect("still a list"), Some(&[][..]));
        assert_eq!(fields.take_list("Missing").expect("absent"), None);
        assert_eq!(fields.take_list("Empty").expect("null"), None);
        let error = fields.take_list("StreamName").expect_err("text");
        assert_eq!(error.code, "SerializationException");
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
