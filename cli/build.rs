//! Builds the demo's two plugins (json-filter, count-by-key) for
//! wasm32-wasip2 and leaves them in OUT_DIR, where `demo/components.rs`
//! embeds them: so `weir demo` runs from an installed binary, with no
//! source tree or cargo at hand. When they cannot be built here (no
//! wasm32-wasip2 target: `rustup toolchain install` in the repository adds
//! it) the files are left empty, the build goes on with a warning, and the
//! demo builds them from the source tree when it runs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, the component cargo writes).
const DEMO_PLUGINS: [(&str, &str); 2] = [
    ("json-filter", "json_filter.wasm"),
    ("count-by-key", "count_by_key.wasm"),
];

/// What the demo plugins are built from (the SDK reads the WIT contract and
/// links the codec).
const WATCHED: [&str; 7] = [
    "plugins/Cargo.toml",
    "plugins/Cargo.lock",
    "plugins/json-filter",
    "plugins/count-by-key",
    "guest-sdk",
    "wit",
    "proto/src",
];

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let root = manifest_dir.join("..");
    for watched in WATCHED {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let built = match build(&root.join("plugins")) {
        Ok(dir) => Some(dir),
        Err(reason) => {
            println!(
                "cargo:warning=the demo's plugins are not embedded ({reason}); `weir demo` will build them from the source tree"
            );
            None
        }
    };
    for (_, file) in DEMO_PLUGINS {
        let component = built
            .as_ref()
            .and_then(|dir| std::fs::read(dir.join(file)).ok())
            .unwrap_or_default();
        if let Err(error) = std::fs::write(out_dir.join(file), component) {
            panic!("writing {file} to OUT_DIR: {error}");
        }
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}

/// Builds the demo plugins into the plugins workspace's own target
/// directory (the one the tests and `weir demo` use, so each is built once).
fn build(plugins: &Path) -> Result<PathBuf, String> {
    let target = plugins.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target);
    for (package, _) in DEMO_PLUGINS {
        command.args(["-p", package]);
    }
    // What the outer build sets for build scripts must not leak into this
    // one: another target directory (whose lock the outer build holds),
    // its flags, clippy as the compiler.
    for name in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(name);
    }
    let output = command
        .output()
        .map_err(|error| format!("running cargo: {error}"))?;
    if !output.status.success() {
        let messages = String::from_utf8_lossy(&output.stderr);
        let last = messages
            .lines()
            .rev()
            .find(|l| l.contains("error"))
            .unwrap_or("cargo failed");
        return Err(last.trim().to_owned());
    }
    Ok(target.join("wasm32-wasip2").join("release"))
}
