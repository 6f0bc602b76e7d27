//! Arbitrary text as weir.toml: parsing never panics, and a configuration
//! that parses survives printing and parsing again unchanged (what
//! `weir config check` prints can be read back).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../src/config.rs"]
mod config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = config::ServerConfig::from_toml(text) else {
        return;
    };
    let printed = toml::to_string(&parsed).expect("a parsed config prints");
    let reparsed = config::ServerConfig::from_toml(&printed).expect("printed config parses");
    assert_eq!(parsed, reparsed, "print/parse round trip changed the config");
});
