//! The guest SDK as this `weir` was built with it, carried in the binary:
//! `weir plugin new --vendored-sdk` (or a `weir` whose source tree is gone)
//! writes it into the new crate, which then builds on any machine with
//! Rust and the wasm32-wasip2 target.

use std::path::Path;

/// Where the copy goes, inside the new crate; the crate depends on
/// `{VENDORED_DIR}/guest-sdk`.
pub const VENDORED_DIR: &str = "weir-sdk";

/// The workspace manifest the SDK's manifests inherit from.
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

/// (path under [`VENDORED_DIR`], contents). The server's socket helpers
/// (`proto/src/io.rs`, behind the `io` feature) are left out: a guest has
/// no use for them.
const SOURCES: &[(&str, &str)] = &[
    ("wit/plugin.wit", include_str!("../../wit/plugin.wit")),
    (
        "guest-sdk/src/lib.rs",
        include_str!("../../guest-sdk/src/lib.rs"),
    ),
    (
        "guest-sdk/src/adapters.rs",
        include_str!("../../guest-sdk/src/adapters.rs"),
    ),
    (
        "guest-sdk/src/runtime.rs",
        include_str!("../../guest-sdk/src/runtime.rs"),
    ),
    (
        "guest-sdk/src/state.rs",
        include_str!("../../guest-sdk/src/state.rs"),
    ),
    (
        "guest-sdk/src/testing.rs",
        include_str!("../../guest-sdk/src/testing.rs"),
    ),
    ("proto/src/lib.rs", include_str!("../../proto/src/lib.rs")),
    (
        "proto/src/admin.rs",
        include_str!("../../proto/src/admin.rs"),
    ),
    (
        "proto/src/batch.rs",
        include_str!("../../proto/src/batch.rs"),
    ),
    (
        "proto/src/error.rs",
        include_str!("../../proto/src/error.rs"),
    ),
    (
        "proto/src/frame.rs",
        include_str!("../../proto/src/frame.rs"),
    ),
    (
        "proto/src/message.rs",
        include_str!("../../proto/src/message.rs"),
    ),
    (
        "proto/src/routing.rs",
        include_str!("../../proto/src/routing.rs"),
    ),
    ("proto/src/wire.rs", include_str!("../../proto/src/wire.rs")),
];

/// (path under [`VENDORED_DIR`], the member's manifest).
const MANIFESTS: [(&str, &str); 2] = [
    (
        "guest-sdk/Cargo.toml",
        include_str!("../../guest-sdk/Cargo.toml"),
    ),
    ("proto/Cargo.toml", include_str!("../../proto/Cargo.toml")),
];

/// Writes the SDK under `crate_dir/weir-sdk`.
pub fn write_vendored(crate_dir: &Path) -> anyhow::Result<()> {
    let root = crate_dir.join(VENDORED_DIR);
    let manifests = MANIFESTS
        .iter()
        .map(|&(path, manifest)| (path, standalone_manifest(manifest, WORKSPACE_MANIFEST)));
    let sources = SOURCES
        .iter()
        .map(|&(path, contents)| (path, contents.to_owned()));
    for (path, contents) in manifests.chain(sources) {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, contents)?;
    }
    Ok(())
}

/// A workspace member's manifest made to stand alone: what it inherits
/// from `workspace` written out, `weir-proto` found beside it, and the
/// `io` feature's server-only dependencies dropped (the feature stays, empty,
/// because the code names it).
fn standalone_manifest(member: &str, workspace: &str) -> String {
    let mut out = String::new();
    let mut section = "";
    for line in member.lines() {
        if line.starts_with('[') {
            section = line.trim();
            if section == "[lints]" {
                continue;
            }
        } else if section == "[lints]" {
            continue;
        } else if let Some(key) = line.strip_suffix(".workspace = true") {
            let inherited = match section {
                "[package]" => workspace_value(workspace, "[workspace.package]", key),
                _ if key == "weir-proto" => Some("{ path = \"../proto\" }".to_owned()),
                _ => workspace_value(workspace, "[workspace.dependencies]", key),
            };
            if let Some(value) = inherited {
                out.push_str(&format!("{key} = {value}\n"));
            }
            continue;
        } else if line.contains("workspace = true, optional = true")
            || (section == "[features]" && line.starts_with('#'))
        {
            // The `io` feature's dependencies and the comment on it.
            continue;
        } else if section == "[features]" && line.starts_with("io = ") {
            out.push_str("# The server's socket helpers, not carried here.\nio = []\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The value of `key` in `section` of the workspace manifest (one line each).
fn workspace_value(workspace: &str, section: &str, key: &str) -> Option<String> {
    workspace
        .lines()
        .skip_while(|line| line.trim() != section)
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .find_map(|line| {
            let (name, value) = line.split_once(" = ")?;
            (name.trim() == key).then(|| value.trim().to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every source file of the SDK and the codec it links is carried (a
    /// new module would otherwise be missing from vendored copies), and
    /// nothing else.
    #[test]
    fn the_carried_sources_are_the_sdks_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut on_disk = Vec::new();
        for dir in ["wit", "guest-sdk/src", "proto/src"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("SDK directory") {
                let name = entry.expect("entry").file_name();
                let path = format!("{dir}/{}", name.to_string_lossy());
                if path != "proto/src/io.rs" {
                    on_disk.push(path);
                }
            }
        }
        on_disk.sort();
        let mut carried: Vec<String> = SOURCES.iter().map(|(path, _)| (*path).into()).collect();
        carried.sort();
        assert_eq!(carried, on_disk);
    }

    #[test]
    fn member_manifests_stand_alone() {
        for (path, manifest) in MANIFESTS {
            let standalone = standalone_manifest(manifest, WORKSPACE_MANIFEST);
            assert!(!standalone.contains("workspace"), "{path}:\n{standalone}");
            let parsed: toml::Table = toml::from_str(&standalone).expect("valid TOML");
            assert_eq!(
                parsed["package"]["edition"].as_str(),
                Some("2024"),
                "{path}"
            );
            let dependencies = parsed["dependencies"].as_table().expect("dependencies");
            assert!(!dependencies.contains_key("rustls"), "{path}");
            if path.starts_with("guest-sdk") {
                assert_eq!(
                    dependencies["weir-proto"]["path"].as_str(),
                    Some("../proto")
                );
            } else {
                assert_eq!(dependencies["md-5"].as_str(), Some("0.11"));
                assert_eq!(
                    dependencies["serde"]["features"][0].as_str(),
                    Some("derive")
                );
                assert_eq!(parsed["features"]["io"].as_array().map(Vec::len), Some(0));
            }
        }
    }
}
