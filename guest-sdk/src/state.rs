//! The processor's key-value state in the current shard, kept by the host
//! and committed atomically with the outputs and the cursor. Reads see the
//! writes made earlier in the same call. `weir state get` reads it from
//! outside.

use crate::bindings::weir::plugin::host;

pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    host::state_get(key)
}

pub fn set(key: &[u8], value: &[u8]) {
    host::state_set(key, value);
}

pub fn delete(key: &[u8]) {
    host::state_delete(key);
}

/// A little-endian `u64` stored under `key` (0 when absent or malformed).
pub fn get_u64(key: &[u8]) -> u64 {
    get(key)
        .and_then(|value| value.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

pub fn set_u64(key: &[u8], value: u64) {
    set(key, &value.to_le_bytes());
}
