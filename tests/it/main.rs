//! End-to-end tests: the real server on 127.0.0.1:0, real QUIC, real fjall.

mod admission;
mod auth;
mod bad_input;
mod checkpoints;
mod cli;
mod crash;
mod disk_full;
mod hostile;
mod ingest;
mod kinesis;
mod metrics;
mod plugins;
mod retention;
mod sinks;
mod subscribe;
mod support;
mod torture;
mod upstreams;
