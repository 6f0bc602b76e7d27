//! Keeps records whose JSON field matches a condition.
//!
//! Config:
//! - `field`: the field to test; dots reach into objects (`user.country`).
//! - `op`: `equals`, `not-equals`, `greater-than` or `exists`.
//! - `value`: what to compare with (not for `exists`). Compared as a number
//!   when both sides are numbers, else as text.
//!
//! Records that are not JSON objects are dropped, not failed: a filter
//! answers "does this match", and garbage does not.

use serde_json::Value;
use weir_plugin::{Config, Filter, Record};

#[derive(Debug, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    GreaterThan(f64),
    Exists,
}

pub struct JsonFilter {
    path: Vec<String>,
    op: Op,
}

impl Filter for JsonFilter {
    fn init(config: &Config) -> Result<Self, String> {
        let field = config.require("field")?;
        let path = field.split('.').map(str::to_owned).collect();
        let value = || config.require("value").map(str::to_owned);
        let op = match config.require("op")? {
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

    fn keep(&mut self, record: &Record<'_>) -> Result<bool, String> {
        let Ok(document) = serde_json::from_slice::<Value>(record.data) else {
            return Ok(false);
        };
        let found = self
            .path
            .iter()
            .try_fold(&document, |value, name| value.get(name));
        Ok(match (&self.op, found) {
            (Op::Exists, found) => found.is_some(),
            (_, None) => matches!(self.op, Op::NotEquals(_)),
            (Op::Equals(expected), Some(value)) => matches(value, expected),
            (Op::NotEquals(expected), Some(value)) => !matches(value, expected),
            (Op::GreaterThan(limit), Some(value)) => value.as_f64().is_some_and(|v| v > *limit),
        })
    }
}

fn matches(value: &Value, expected: &str) -> bool {
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

weir_plugin::export_filter!(JsonFilter);
