//! The processor's key-value state in the current shard, kept by the host
//! and committed atomically with the outputs and the cursor. Reads see the
//! writes made earlier in the same call. `weir state get` reads it from
//! outside.
//!
//! During a call the SDK caches what it reads and writes, and hands the
//! host each changed key once, when the call returns: a batch that updates
//! the same key a thousand times crosses the boundary twice, not 2 000
//! times.

use std::cell::RefCell;
use std::collections::HashMap;

#[cfg(target_arch = "wasm32")]
use crate::bindings::weir::plugin::host;

/// State kept in memory on a native build (`cargo test`, see
/// [`crate::testing`]), standing in for the host's.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod host {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        pub(crate) static STORE: RefCell<BTreeMap<Vec<u8>, Vec<u8>>> =
            const { RefCell::new(BTreeMap::new()) };
    }

    pub fn state_get(key: &[u8]) -> Option<Vec<u8>> {
        STORE.with(|store| store.borrow().get(key).cloned())
    }

    pub fn state_set(key: &[u8], value: &[u8]) {
        STORE.with(|store| store.borrow_mut().insert(key.to_vec(), value.to_vec()));
    }

    pub fn state_delete(key: &[u8]) {
        STORE.with(|store| store.borrow_mut().remove(key));
    }
}

struct Entry {
    value: Option<Vec<u8>>,
    dirty: bool,
}

thread_local! {
    /// `Some` while a call is in progress.
    static CACHE: RefCell<Option<HashMap<Vec<u8>, Entry>>> = const { RefCell::new(None) };
}

/// Starts caching for one call.
pub(crate) fn begin_call() {
    CACHE.with(|cache| *cache.borrow_mut() = Some(HashMap::new()));
}

/// Hands the call's changes to the host and stops caching.
pub(crate) fn end_call() {
    let Some(entries) = CACHE.with(|cache| cache.borrow_mut().take()) else {
        return;
    };
    for (key, entry) in entries {
        match (entry.dirty, entry.value) {
            (true, Some(value)) => host::state_set(&key, &value),
            (true, None) => host::state_delete(&key),
            (false, _) => {}
        }
    }
}

pub fn get(key: &[u8]) -> Option<Vec<u8>> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let Some(entries) = cache.as_mut() else {
            return host::state_get(key);
        };
        if let Some(entry) = entries.get(key) {
            return entry.value.clone();
        }
        let value = host::state_get(key);
        entries.insert(
            key.to_vec(),
            Entry {
                value: value.clone(),
                dirty: false,
            },
        );
        value
    })
}

fn write(key: &[u8], value: Option<&[u8]>) {
    CACHE.with(|cache| match cache.borrow_mut().as_mut() {
        Some(entries) => {
            entries.insert(
                key.to_vec(),
                Entry {
                    value: value.map(<[u8]>::to_vec),
                    dirty: true,
                },
            );
        }
        None => match value {
            Some(value) => host::state_set(key, value),
            None => host::state_delete(key),
        },
    });
}

pub fn set(key: &[u8], value: &[u8]) {
    write(key, Some(value));
}

pub fn delete(key: &[u8]) {
    write(key, None);
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
