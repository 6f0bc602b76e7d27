//! Weir: a single-binary streaming appliance — the server as a library.
//!
//! Producers put records over QUIC; Weir stores them durably in ordered
//! shards and serves reads and live subscriptions. The `weir` command
//! (crate `weir-cli`) and the end-to-end tests run it through [`Server`].
//! Module map:
//!
//! - [`config`]: every setting and limit, with defaults.
//! - [`storage`]: fjall keyspaces, the single group-committing writer,
//!   retention. The only module that imports fjall.
//! - [`service`]: request handling and validation, transport-agnostic.
//! - [`auth`]: tokens, roles and per-connection sessions.
//! - [`transport`]: the QUIC endpoint; the only module that imports quinn.
//! - [`aws`]: SigV4 signing and verification, and a minimal signed HTTP
//!   client for Kinesis-compatible APIs.
//! - [`kinesis`]: the Kinesis Data Streams API over HTTP (SigV4, JSON and
//!   CBOR), translated into service requests; the only module that
//!   imports hyper.
//! - [`plugin`]: the Wasm runtime (wasmtime); the only module that imports it.
//! - [`processor`]: processors: one in-order worker per source shard.
//! - [`sink`]: forwarding streams to other engines (NATS JetStream); the
//!   only module that imports their clients.
//! - [`tls`]: certificates (self-signed on first start) and rustls setup.
//! - [`metrics`]: Prometheus text rendered from the service, `/healthz` and
//!   `/readyz`, on an admin HTTP listener.
//! - [`counters`]: the service's counters and latency histogram (a leaf).
//! - [`names`]: what a stream, consumer, plugin or processor may be called.
//! - [`system`]: readings of this process from the operating system.
//! - [`server`]: wires the above together; start and graceful shutdown.
//! - [`files`]: crash-safe writes of the data directory's small files.
//! - [`flows`]: how records move between streams (processors, sinks into
//!   this box), and the loops among them that are refused (a leaf).

pub mod auth;
pub mod aws;
pub mod config;
pub mod counters;
pub mod files;
pub mod flows;
pub mod kinesis;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod processor;
pub mod server;
pub mod service;
pub mod sink;
pub mod storage;
pub mod system;
pub mod tls;
pub mod transport;

pub use config::{Durability, Limits, ServerConfig, StorageConfig};
pub use server::Server;

#[cfg(test)]
mod module_graph {
    //! The modules form a graph without cycles, so the crate reads top-down
    //! (a leaf such as `config` or `counters` never reaches up into the
    //! service that uses it). Checked over the `crate::` paths in the
    //! source, so anyone can run it: `cargo test -p weir module_graph`.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Top-level modules each top-level module's files name.
    fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut pending = vec![src.clone()];
        while let Some(path) = pending.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).expect("read src") {
                    pending.push(entry.expect("entry").path());
                }
                continue;
            }
            let relative = path.strip_prefix(&src).expect("under src");
            let module = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|name| name.trim_end_matches(".rs").to_owned())
                .expect("module name");
            if module == "lib" || module == "main" || path.extension() != Some("rs".as_ref()) {
                continue;
            }
            // Code only: a doc comment may name any module.
            let text: String = std::fs::read_to_string(&path)
                .expect("read source")
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let uses = graph.entry(module.clone()).or_default();
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    // `crate::{a::X, b::{Y, Z}}`: the first segment of each path.
                    Some(group) => group[..group.find('}').unwrap_or(group.len())]
                        .split(',')
                        .filter_map(|path| path.trim().split("::").next())
                        .collect(),
                    None => rest
                        .split(|c: char| !c.is_alphanumeric() && c != '_')
                        .take(1)
                        .collect(),
                };
                for name in names {
                    if !name.is_empty() && name != module {
                        uses.insert(name.to_owned());
                    }
                }
            }
        }
        graph
    }

    #[test]
    fn modules_depend_on_each_other_without_cycles() {
        let graph = dependencies();
        // Depth-first search; a module met again on the current path closes
        // a cycle.
        fn visit(
            module: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) {
            if let Some(start) = path.iter().position(|m| m == module) {
                panic!("module cycle: {} -> {module}", path[start..].join(" -> "));
            }
            if !done.insert(module.to_owned()) {
                return;
            }
            path.push(module.to_owned());
            for next in graph.get(module).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            visit(module, &graph, &mut Vec::new(), &mut done);
        }
        assert!(graph.contains_key("service") && graph["service"].contains("storage"));
    }
}
