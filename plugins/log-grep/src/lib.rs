//! Keeps log lines that match a regular expression and/or are at or above a
//! severity.
//!
//! Config (at least one):
//! - `pattern`: a regular expression (regex-lite syntax) the line must match.
//! - `min-level`: `trace`, `debug`, `info`, `warn`, `error` or `fatal`. A
//!   line's level is the first level word in it (`ERROR`, `warn`, `[Info]`…);
//!   lines without one are kept only when no `min-level` is set.

use regex_lite::Regex;
use weir_plugin::{Config, Error, Filter, Record};

const LEVELS: [(&str, u8); 8] = [
    ("trace", 0),
    ("debug", 1),
    ("info", 2),
    ("warn", 3),
    ("warning", 3),
    ("error", 4),
    ("fatal", 5),
    ("critical", 5),
];

pub struct LogGrep {
    pattern: Option<Regex>,
    min_level: Option<u8>,
}

fn level_of(line: &str) -> Option<u8> {
    line.split(|c: char| !c.is_ascii_alphabetic())
        .filter(|word| (4..=8).contains(&word.len()))
        .find_map(|word| {
            LEVELS
                .iter()
                .find(|(name, _)| word.eq_ignore_ascii_case(name))
                .map(|(_, level)| *level)
        })
}

impl Filter for LogGrep {
    fn init(config: &Config) -> Result<Self, Error> {
        let pattern = config
            .get("pattern")
            .map(|p| Regex::new(p).map_err(|e| format!("invalid pattern {p:?}: {e}")))
            .transpose()?;
        let min_level = config
            .get("min-level")
            .map(|name| {
                level_of(name).ok_or_else(|| {
                    format!(
                        "unknown min-level {name:?}: use trace, debug, info, warn, error or fatal"
                    )
                })
            })
            .transpose()?;
        if pattern.is_none() && min_level.is_none() {
            return Err("give `pattern`, `min-level` or both".into());
        }
        Ok(Self { pattern, min_level })
    }

    fn keep(&mut self, record: &Record<'_>) -> Result<bool, Error> {
        let line = String::from_utf8_lossy(record.data);
        let level_ok = self
            .min_level
            .is_none_or(|min| level_of(&line).is_some_and(|level| level >= min));
        let pattern_ok = self.pattern.as_ref().is_none_or(|p| p.is_match(&line));
        Ok(level_ok && pattern_ok)
    }
}

weir_plugin::export_filter!(LogGrep);
