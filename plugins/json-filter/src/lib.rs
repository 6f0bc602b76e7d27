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

pub mod matcher;

use matcher::Matcher;
use weir_plugin::{Config, Error, Filter, Record};

pub struct JsonFilter(Matcher);

impl Filter for JsonFilter {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(Self(Matcher::new(
            config.require("field")?,
            config.require("op")?,
            config.get("value"),
        )?))
    }

    fn keep(&mut self, record: &Record<'_>) -> Result<bool, Error> {
        Ok(self.0.matches(record.data))
    }
}

weir_plugin::export_filter!(JsonFilter);
