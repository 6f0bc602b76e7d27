//! Readings of this process from the operating system.

/// This process's resident memory.
pub fn resident_bytes() -> u64 {
    resident_bytes_of("/proc/self/status")
}

/// Resident memory from a `/proc/*/status` file (0 if unreadable).
pub fn resident_bytes_of(status_path: &str) -> u64 {
    std::fs::read_to_string(status_path)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
