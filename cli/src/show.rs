//! Numbers as a person reads them: sizes in B/KiB/MiB/GiB, durations in
//! ms/s/min/h/d. Scripts get exact numbers from `--output json`.

/// `512 B`, `1.5 KiB`, `12.3 MiB`, `2.0 GiB`.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `850 ms`, `12.5 s`, `3.2 min`, `4.1 h`, `2.0 d`.
pub fn duration_ms(ms: u64) -> String {
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    let scaled = |unit: u64, name: &str| format!("{:.1} {name}", ms as f64 / unit as f64);
    match ms {
        ms if ms < SECOND => format!("{ms} ms"),
        ms if ms < MINUTE => scaled(SECOND, "s"),
        ms if ms < HOUR => scaled(MINUTE, "min"),
        ms if ms < DAY => scaled(HOUR, "h"),
        _ => scaled(DAY, "d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_pick_the_largest_unit_below_1024() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn durations_pick_the_largest_unit_that_fits() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(12_500), "12.5 s");
        assert_eq!(duration_ms(90_000), "1.5 min");
        assert_eq!(duration_ms(86_400_000 * 7), "7.0 d");
        assert_eq!(duration_ms(3_600_000), "1.0 h");
    }
}
