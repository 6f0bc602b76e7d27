//! Keeps records whose first byte is `{`, or none with `keep=none`: the
//! cost measured is Weir's batch boundary, not the plugin's logic.

use weir_plugin::{Config, Error, Filter, Record};

pub struct TrivialFilter {
    keep_none: bool,
}

impl Filter for TrivialFilter {
    fn init(config: &Config) -> Result<Self, Error> {
        match config.get("keep") {
            None | Some("json") => Ok(Self { keep_none: false }),
            Some("none") => Ok(Self { keep_none: true }),
            Some(other) => Err(format!("keep must be `json` or `none`, not {other:?}").into()),
        }
    }

    fn keep(&mut self, record: &Record<'_>) -> Result<bool, Error> {
        Ok(!self.keep_none && record.data.first() == Some(&b'{'))
    }
}

weir_plugin::export_filter!(TrivialFilter);
