//! What Weir shares with AWS clients and servers: Signature Version 4
//! (verified by the Kinesis API, computed by clients) and a minimal signed
//! HTTP/1.1 client for Kinesis-compatible APIs (the Kinesis sink, `weir
//! bench kinesis`, tests).

pub mod client;
pub mod sigv4;
