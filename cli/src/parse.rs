//! Parsers for human-friendly command-line values.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use weir::config::Durability;
use weir_proto::Position;

/// `key=value` (the value may contain `=`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

/// A listen address, or `off` for a listener that is turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOrOff(pub Option<std::net::SocketAddr>);

pub fn listen_or_off(text: &str) -> Result<ListenOrOff, String> {
    weir::config::parse_listener(text).map(ListenOrOff)
}

/// `500ms`, `30s`, `15m`, `24h`, `7d` → milliseconds.
pub fn duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: ms, s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?}: use ms, s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `1000`, `64KiB`, `512MiB`, `10GiB`, `1GB` → bytes.
pub fn bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `trim-horizon`, `latest`, `at:SEQ`, `after:SEQ`, `time:MS` (milliseconds
/// since the Unix epoch), or a bare sequence number (= `at:SEQ`).
pub fn position(text: &str) -> Result<Position, String> {
    text.parse()
}

/// `--durability`: fsync or buffered (listed in `--help`).
pub fn durability() -> impl TypedValueParser<Value = Durability> {
    PossibleValuesParser::new(Durability::ALL.map(Durability::name))
        .try_map(|name| name.parse::<Durability>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("24h"), Ok(86_400_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("7d"), Ok(604_800_000));
        assert!(duration_ms("24").is_err());
        assert!(duration_ms("h").is_err());
        assert!(duration_ms("3w").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes("10GiB"), Ok(10 << 30));
        assert_eq!(bytes("1000"), Ok(1000));
        assert_eq!(bytes("2MB"), Ok(2_000_000));
        assert!(bytes("ten").is_err());
        assert!(bytes("5XB").is_err());
    }

    #[test]
    fn positions() {
        assert_eq!(position("trim-horizon"), Ok(Position::TrimHorizon));
        assert_eq!(position("latest"), Ok(Position::Latest));
        assert_eq!(position("at:5"), Ok(Position::AtSequence(5)));
        assert_eq!(position("after:5"), Ok(Position::AfterSequence(5)));
        assert_eq!(position("time:99"), Ok(Position::AtTimestamp(99)));
        assert_eq!(position("12"), Ok(Position::AtSequence(12)));
        assert!(position("at:x").is_err());
        assert!(position("soon").is_err());
    }
}
