//! Weir: a single-binary streaming appliance.
//!
//! Producers put records over QUIC; Weir stores them durably in ordered
//! shards and serves reads and live subscriptions. Module map:
//!
//! - [`config`]: every setting and limit, with defaults.
//! - [`storage`]: fjall keyspaces, the single group-committing writer,
//!   retention. The only module that imports fjall.
//! - [`service`]: request handling and validation, transport-agnostic.
//! - [`auth`]: tokens, roles and per-connection sessions.
//! - [`transport`]: the QUIC endpoint; the only module that imports quinn.
//! - [`plugin`]: the Wasm runtime (wasmtime); the only module that imports it.
//! - [`processor`]: processors: one in-order worker per source shard.
//! - [`tls`]: certificates (self-signed on first start) and rustls setup.
//! - [`metrics`]: Prometheus text, `/healthz` and `/readyz` on an admin
//!   HTTP listener.
//! - [`server`]: wires the above together; start and graceful shutdown.
//! - [`files`]: crash-safe writes of the data directory's small files.
//! - [`cli`]: the `weir` command (serve, stream, put, get, tail, bench, demo).

pub mod auth;
pub mod cli;
pub mod config;
pub mod files;
pub mod metrics;
pub mod plugin;
pub mod processor;
pub mod server;
pub mod service;
pub mod storage;
pub mod tls;
pub mod transport;

pub use config::{Durability, Limits, ServerConfig, StorageConfig};
pub use server::Server;
