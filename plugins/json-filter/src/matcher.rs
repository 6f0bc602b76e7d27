//! Tests one JSON field against a condition without building the document:
//! serde walks the bytes, skips every value off the path (no allocation),
//! and materialises only the value at the path. Shared verbatim with the
//! native baseline of `weir bench plugin` (same logic, two targets).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

#[derive(Debug, PartialEq)]
pub enum Op {
    Equals(String),
    NotEquals(String),
    GreaterThan(f64),
    Exists,
}

/// A field path (`user.country`) and a condition on its value.
#[derive(Debug)]
pub struct Matcher {
    path: Vec<String>,
    op: Op,
}

impl Matcher {
    /// `op` is `equals`, `not-equals`, `greater-than` or `exists`; every op
    /// but `exists` needs a `value`.
    pub fn new(field: &str, op: &str, value: Option<&str>) -> Result<Self, String> {
        let path = field.split('.').map(str::to_owned).collect();
        let value = || {
            value
                .map(str::to_owned)
                .ok_or_else(|| format!("op `{op}` needs a value"))
        };
        let op = match op {
            "equals" | "eq" => Op::Equals(value()?),
            "not-equals" | "ne" => Op::NotEquals(value()?),
            "greater-than" | "gt" => {
                let text = value()?;
                Op::GreaterThan(
                    text.parse()
                        .map_err(|_| format!("greater-than needs a number, not {text:?}"))?,
                )
            }
            "exists" => Op::Exists,
            other => {
                return Err(format!(
                    "unknown op {other:?}: use equals, not-equals, greater-than or exists"
                ));
            }
        };
        Ok(Self { path, op })
    }

    /// Whether `json` is a JSON document whose field matches. Anything that
    /// is not valid JSON does not match.
    pub fn matches(&self, json: &[u8]) -> bool {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let Ok(found) = PathSeed(&self.path).deserialize(&mut deserializer) else {
            return false;
        };
        if deserializer.end().is_err() {
            return false;
        }
        match (&self.op, found) {
            (Op::Exists, found) => found.is_some(),
            (Op::NotEquals(_), None) => true,
            (_, None) => false,
            (Op::Equals(expected), Some(value)) => equals(&value, expected),
            (Op::NotEquals(expected), Some(value)) => !equals(&value, expected),
            (Op::GreaterThan(limit), Some(value)) => value.as_f64().is_some_and(|v| v > *limit),
        }
    }
}

fn equals(value: &Value, expected: &str) -> bool {
    match value {
        Value::String(text) => text == expected,
        Value::Number(number) => match (number.as_f64(), expected.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => number.to_string() == expected,
        },
        Value::Bool(flag) => flag.to_string() == expected,
        Value::Null => expected == "null",
        _ => false,
    }
}

/// Deserializes the value at a path, or `None` if the path is absent.
struct PathSeed<'p>(&'p [String]);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.0.split_first() {
            None => Value::deserialize(deserializer).map(Some),
            Some((head, rest)) => deserializer.deserialize_any(Step { head, rest }),
        }
    }
}

use serde::Deserialize;

/// One step down the path: into the object field `head`.
struct Step<'p> {
    head: &'p str,
    rest: &'p [String],
}

/// Compares a map key with the wanted name without allocating.
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

macro_rules! not_an_object {
    ($($method:ident($ty:ty)),*) => {
        $(fn $method<E: serde::de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(None)
        })*
    };
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_head) = map.next_key_seed(KeyIs(self.head))? {
            if is_head && found.is_none() {
                found = map.next_value_seed(PathSeed(self.rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    not_an_object!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
}

// Run natively by `cargo test -p weir`, which includes this file in its
// benchmark (a cdylib with component export names cannot link natively).
#[cfg(test)]
mod tests {
    use super::Matcher;

    fn check(field: &str, op: &str, value: Option<&str>, json: &str, expected: bool) {
        let matcher = Matcher::new(field, op, value).expect("valid");
        assert_eq!(
            matcher.matches(json.as_bytes()),
            expected,
            "{field} {op} {value:?} on {json}"
        );
    }

    #[test]
    fn conditions() {
        check(
            "event",
            "equals",
            Some("buy"),
            r#"{"event":"buy","x":[1,{"event":"no"}]}"#,
            true,
        );
        check(
            "event",
            "equals",
            Some("buy"),
            r#"{"x":{"event":"buy"}}"#,
            false,
        );
        check(
            "user.country",
            "equals",
            Some("NO"),
            r#"{"user":{"id":1,"country":"NO"}}"#,
            true,
        );
        check(
            "price",
            "greater-than",
            Some("10"),
            r#"{"price":10.5}"#,
            true,
        );
        check(
            "price",
            "greater-than",
            Some("10"),
            r#"{"price":"11"}"#,
            false,
        );
        check("price", "equals", Some("3"), r#"{"price":3.0}"#, true);
        check("gone", "not-equals", Some("x"), r#"{"here":1}"#, true);
        check("here", "exists", None, r#"{"here":null}"#, true);
        check("here", "exists", None, r#"not json"#, false);
        check("here", "exists", None, r#"{"here":1} trailing"#, false);
        assert!(Matcher::new("f", "resembles", Some("x")).is_err());
        assert!(Matcher::new("f", "equals", None).is_err());
    }
}
