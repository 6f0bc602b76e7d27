//! Server settings. Every limit is a named value with its unit last; the
//! defaults are what `weir serve` uses with no flags and no file.
//!
//! `weir serve --config weir.toml` reads them from TOML; `weir config
//! default` prints [`DEFAULT_CONFIG_TOML`], every setting with its default,
//! unit and meaning. Unknown keys are errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_proto::defaults;

/// Where `/metrics` is served by default (loopback, next to QUIC's 7720).
pub const DEFAULT_ADMIN_PORT: u16 = 7721;

/// Where the Kinesis-compatible API listens by default (kinesalite's port).
pub const DEFAULT_KINESIS_PORT: u16 = 4567;

/// fjall refuses (panics on) smaller journals.
const JOURNAL_BYTES_MIN: u64 = 64 * 1024 * 1024;

/// The documented default configuration file (`weir config default`).
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../weir.default.toml");

/// What turns a listener off, in the file and on the command line.
pub const LISTENER_OFF: &str = "off";

/// A listener's `HOST:PORT`, or [`LISTENER_OFF`] for none.
pub fn parse_listener(text: &str) -> Result<Option<SocketAddr>, String> {
    if text == LISTENER_OFF {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{text:?} is neither an address (HOST:PORT) nor \"{LISTENER_OFF}\""))
}

/// An optional listener in TOML: its address, or `"off"`. (Leaving the
/// key out keeps the default address, so "off" is how a file turns one
/// off.)
mod listener_or_off {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(addr) => s.collect_str(addr),
            None => s.serialize_str(super::LISTENER_OFF),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        super::parse_listener(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acked once fdatasync'd to stable storage (group commit: one sync
    /// covers every request queued while the previous one ran).
    Fsync,
    /// Acked once written to the journal (in the OS page cache); the journal
    /// is synced every `buffered_sync_interval_ms`, so a power cut may lose
    /// that much. A process crash loses nothing.
    Buffered,
}

impl Durability {
    pub const ALL: [Self; 2] = [Self::Fsync, Self::Buffered];

    /// As the config file and `--durability` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fsync => "fsync",
            Self::Buffered => "buffered",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|durability| durability.name() == name)
            .ok_or_else(|| format!("durability is fsync or buffered, not {name:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub durability: Durability,
    pub buffered_sync_interval_ms: u64,
    /// fjall's block cache.
    pub block_cache_bytes: u64,
    /// Journal size before fjall flushes memtables so old journals can go.
    pub journal_bytes_max: u64,
    /// A shard's in-memory table before it is flushed to disk: under write
    /// load each busy shard holds about this much (plus tables being
    /// flushed), so it bounds the server's memory.
    pub memtable_bytes_max: u64,
    /// All memtables together, active and waiting to be flushed: beyond it
    /// the writer waits for flushes (ingest slows to disk speed) instead of
    /// memory growing.
    pub write_buffer_bytes_max: u64,
    /// Record bytes one group commit may carry before it is cut.
    pub group_commit_bytes_max: usize,
    /// A shard's records are stored in chunks of about this many bytes
    /// (one LSM entry each); a group commit's records for a shard are cut
    /// into chunks of this size. Retention removes whole chunks.
    pub chunk_bytes_max: usize,
    /// A stream's chunks (of all its shards) are appended to segment files
    /// of about this size; a segment is deleted once retention removed
    /// every chunk in it.
    pub segment_bytes_max: u64,
    /// Commands waiting for the writer before senders wait (back-pressure).
    pub writer_queue_commands_max: usize,
    /// Recent batches remembered per producer and shard for deduplication.
    pub producer_dedup_batches_max: usize,
    pub retention_check_interval_ms: u64,
    /// Records removed per retention commit, so appends are not stalled.
    pub trim_commit_records_max: usize,
    /// Record bytes (partition keys and data) all streams may hold; puts
    /// beyond it fail with the retryable `StorageFull`. `None`: no budget.
    pub storage_bytes_max: Option<u64>,
    /// Free space the data directory's filesystem must keep; below it puts
    /// fail with `StorageFull` before the disk itself fills.
    pub disk_free_bytes_min: u64,
    /// Shards of all streams together. Each is a fjall keyspace: ~15 KB
    /// of memory, and fjall keeps a copy of its list of keyspaces on disk
    /// for each one created until it restarts (quadratic: ~280 MiB for
    /// 1 024, ~4.3 GiB for 4 096; reclaimed at the next start).
    pub shards_max: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            buffered_sync_interval_ms: 50,
            block_cache_bytes: 8 * 1024 * 1024,
            journal_bytes_max: 64 * 1024 * 1024,
            memtable_bytes_max: 16 * 1024 * 1024,
            write_buffer_bytes_max: 128 * 1024 * 1024,
            group_commit_bytes_max: 16 * 1024 * 1024,
            chunk_bytes_max: 1024 * 1024,
            segment_bytes_max: 64 * 1024 * 1024,
            writer_queue_commands_max: 4096,
            producer_dedup_batches_max: 64,
            retention_check_interval_ms: 1_000,
            trim_commit_records_max: 10_000,
            storage_bytes_max: None,
            disk_free_bytes_min: 64 * 1024 * 1024,
            shards_max: 1024,
        }
    }
}

/// Limits the protocol layer enforces on every request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub batch_records_max: usize,
    pub record_bytes_max: usize,
    /// Partition keys plus data of one `PutRecords`.
    pub request_bytes_max: usize,
    pub frame_bytes_max: usize,
    pub stream_shards_max: u32,
    /// Records one `GetRecords` may ask for.
    pub get_records_max: u32,
    /// Record bytes in one `GetRecords` answer or subscription frame.
    pub read_batch_bytes_max: usize,
    /// Records in one subscription frame.
    pub subscribe_batch_records_max: usize,
    /// How long a client may take to send its request after opening a stream.
    pub request_read_timeout_ms: u64,
    /// Concurrent requests (QUIC streams) per connection.
    pub connection_streams_max: u32,
    /// A QUIC connection, or an HTTP/2 one on the Kinesis API, idle this
    /// long is closed.
    pub connection_idle_timeout_ms: u64,
    /// Open QUIC connections; more are closed with a reason.
    pub connections_max: usize,
    /// Open QUIC connections from one IP address; more are closed with a
    /// reason, so one host cannot take all of `connections_max`.
    pub connections_per_address_max: usize,
    /// Connections that have not yet authenticated: when a new one would
    /// exceed this, the oldest unauthenticated one is closed, so strangers
    /// who never authenticate cannot keep clients with a token out.
    pub connections_unauthenticated_max: usize,
    /// Time a connection has to authenticate before it is closed (only
    /// with authentication on).
    pub connection_auth_timeout_ms: u64,
    /// QUIC handshakes in progress. Beyond a quarter of it, a new client
    /// must first prove its address (a QUIC Retry, one round trip, no
    /// server state); beyond it, new handshakes are refused.
    pub handshakes_max: usize,
    /// Streams on the server.
    pub streams_max: usize,
    /// Open subscriptions per shard.
    pub subscribers_per_shard_max: usize,
    /// Request bytes one connection may have buffered: its QUIC receive
    /// window and requests in progress; its requests wait when it is full,
    /// so one client cannot take the server's whole budget.
    pub connection_buffered_bytes_max: usize,
    /// Answer bytes one connection may have sent but not yet had
    /// acknowledged (its QUIC send window): what a slow link or a client
    /// that stops acknowledging can make the server keep.
    pub connection_send_buffer_bytes_max: usize,
    /// Request bytes all connections together may have in memory; requests
    /// wait when it is full.
    pub server_buffered_bytes_max: usize,
    /// How long a request waits for buffer space before it fails with
    /// `Overloaded`.
    pub buffer_wait_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch_records_max: defaults::BATCH_RECORDS_MAX,
            record_bytes_max: defaults::RECORD_BYTES_MAX,
            request_bytes_max: defaults::REQUEST_BYTES_MAX,
            frame_bytes_max: defaults::FRAME_BYTES_MAX,
            stream_shards_max: 256,
            get_records_max: 10_000,
            read_batch_bytes_max: 4 * 1024 * 1024,
            subscribe_batch_records_max: 1_000,
            request_read_timeout_ms: 10_000,
            connection_streams_max: 256,
            connection_idle_timeout_ms: 30_000,
            connections_max: 1_024,
            connections_per_address_max: 256,
            connections_unauthenticated_max: 256,
            connection_auth_timeout_ms: 10_000,
            handshakes_max: 1_024,
            streams_max: 1_000,
            subscribers_per_shard_max: 64,
            connection_buffered_bytes_max: 16 * 1024 * 1024,
            connection_send_buffer_bytes_max: 4 * 1024 * 1024,
            server_buffered_bytes_max: 256 * 1024 * 1024,
            buffer_wait_timeout_ms: 5_000,
        }
    }
}

impl Limits {
    /// Raises the batch limits to carry `records` records of `record_bytes`
    /// (benchmarks use batches larger than the Kinesis defaults).
    pub fn fit_batches(&mut self, records: usize, record_bytes: usize) {
        self.batch_records_max = self.batch_records_max.max(records);
        self.record_bytes_max = self.record_bytes_max.max(record_bytes);
        let request_bytes = records * (record_bytes + defaults::PARTITION_KEY_CHARS_MAX);
        self.request_bytes_max = self.request_bytes_max.max(request_bytes);
        self.frame_bytes_max = self
            .frame_bytes_max
            .max(request_bytes + records * 512 + 64 * 1024);
        self.connection_buffered_bytes_max = self
            .connection_buffered_bytes_max
            .max(4 * self.frame_bytes_max);
        self.server_buffered_bytes_max = self
            .server_buffered_bytes_max
            .max(self.connection_buffered_bytes_max);
    }
}

/// Limits and defaults for plugins and processors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingConfig {
    /// Size of an uploaded component.
    pub plugin_bytes_max: usize,
    /// Default fuel a processor may burn per second (its token bucket's rate).
    pub processor_fuel_per_sec: u64,
    /// Default fuel one call may burn before it is stopped.
    pub processor_fuel_per_batch_max: u64,
    /// Default linear-memory limit of one plugin instance.
    pub plugin_memory_bytes_max: u64,
    /// Wall-clock limit of one call (an epoch deadline).
    pub plugin_call_timeout_ms: u64,
    /// Records per call.
    pub processor_batch_records_max: usize,
    /// Record bytes per call.
    pub processor_batch_bytes_max: usize,
    /// An idle shard's plugin gets a `tick` this often (for time windows).
    pub processor_idle_tick_ms: u64,
    pub state_key_bytes_max: usize,
    pub state_value_bytes_max: usize,
    /// State (keys and values) one processor may hold unless it has its own
    /// `--state-max`; each source shard gets an equal share. A commit that
    /// would grow a shard's state past its share halts that shard's worker,
    /// naming this limit.
    pub processor_state_bytes_max: u64,
    /// Plugins stored on the server.
    pub plugins_max: usize,
    /// Processors on the server.
    pub processors_max: usize,
    /// Linear memory of all plugin instances together (every shard of
    /// every processor). A call that would pass it waits for memory
    /// ("waiting for plugin memory") instead of failing its record.
    pub plugins_memory_bytes_max: u64,
    /// The highest `--memory-max` a processor may be given.
    pub plugin_memory_bytes_ceiling: u64,
    /// The highest `--fuel-per-batch-max` a processor may be given.
    pub processor_fuel_per_batch_ceiling: u64,
    /// Output entries one call may return; more fail the call's records.
    pub processor_output_records_per_call_max: usize,
    /// Output bytes one call may return; more fail the call's records.
    pub processor_output_bytes_per_call_max: usize,
    /// Lines a processor's plugin may log per second (`host.log`, stdout
    /// and stderr together); more are counted and dropped.
    pub plugin_log_lines_per_sec: u64,
    /// The largest function (bytes of code) an uploaded component may have:
    /// compile time grows faster than linearly with it.
    pub plugin_function_bytes_max: usize,
    /// Functions an uploaded component may have.
    pub plugin_functions_max: usize,
    /// Locals one function of an uploaded component may declare.
    pub plugin_function_locals_max: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        Self {
            plugin_bytes_max: 16 * 1024 * 1024,
            processor_fuel_per_sec: 2_000_000_000,
            processor_fuel_per_batch_max: 500_000_000,
            plugin_memory_bytes_max: 64 * 1024 * 1024,
            plugin_call_timeout_ms: 2_000,
            processor_batch_records_max: 1_000,
            processor_batch_bytes_max: 4 * 1024 * 1024,
            processor_idle_tick_ms: 1_000,
            state_key_bytes_max: 1024,
            state_value_bytes_max: 1024 * 1024,
            processor_state_bytes_max: 256 * 1024 * 1024,
            plugins_max: 100,
            processors_max: 100,
            plugins_memory_bytes_max: 1024 * 1024 * 1024,
            plugin_memory_bytes_ceiling: 512 * 1024 * 1024,
            processor_fuel_per_batch_ceiling: 50_000_000_000,
            processor_output_records_per_call_max: 100_000,
            processor_output_bytes_per_call_max: 16 * 1024 * 1024,
            plugin_log_lines_per_sec: 100,
            plugin_function_bytes_max: 256 * 1024,
            plugin_functions_max: 100_000,
            plugin_function_locals_max: 50_000,
        }
    }
}

/// Authentication: tokens with roles (see the auth module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Lets every connection do everything without a token. Logged loudly
    /// at start; only for a server nothing untrusted can reach.
    pub disabled: bool,
    /// Tokens stored on the server.
    pub tokens_max: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            disabled: false,
            tokens_max: 1_000,
        }
    }
}

/// The Kinesis Data Streams API (see docs/KINESIS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KinesisConfig {
    /// The region in the stream ARNs this server reports. Requests signed
    /// for any region are accepted: an edge box has no region of its own.
    pub region: String,
    /// The account id in the stream ARNs this server reports.
    pub account_id: String,
    /// How far a request's signing time may be from the server's clock.
    pub signature_clock_skew_ms_max: u64,
    /// How long a shard iterator may be used after it was issued.
    pub shard_iterator_ttl_ms: u64,
    /// The largest request body read (PutRecords of 5 MiB is ~6.7 MiB as
    /// base64 in JSON).
    pub request_body_bytes_max: usize,
    /// HTTP connections open at once; more wait to be accepted.
    pub connections_max: usize,
    /// HTTP connections open from one IP address; more are refused, so one
    /// host cannot take all of `connections_max`.
    pub connections_per_address_max: usize,
    /// Enhanced fan-out consumers one stream may have registered.
    pub consumers_per_stream_max: usize,
    /// How long one `SubscribeToShard` answer streams before it ends (the
    /// client subscribes again from where it got to).
    pub subscription_session_ms: u64,
    /// An empty event is sent after this long without records.
    pub subscription_heartbeat_ms: u64,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_owned(),
            account_id: "000000000000".to_owned(),
            signature_clock_skew_ms_max: 5 * 60 * 1000,
            shard_iterator_ttl_ms: 5 * 60 * 1000,
            request_body_bytes_max: 10 * 1024 * 1024,
            connections_max: 1_024,
            connections_per_address_max: 256,
            consumers_per_stream_max: 20,
            subscription_session_ms: 5 * 60 * 1000,
            subscription_heartbeat_ms: 5_000,
        }
    }
}

/// Sinks: forwarding streams to other engines (see docs/SINKS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Sinks the server keeps.
    pub sinks_max: usize,
    /// Records in one upstream request: a sink's `--batch-records` default
    /// and ceiling (NATS takes at most 1 000 in one atomic batch).
    pub sink_batch_records_max: u32,
    /// Record bytes in one upstream request at most.
    pub sink_batch_bytes_max: usize,
    /// How long an upstream request (a publish, a tail lookup) may take
    /// before it counts as failed and is retried.
    pub sink_request_timeout_ms: u64,
    /// The longest wait between retries while an upstream is unreachable
    /// or refusing (waits start at a tenth of a second and double, with
    /// jitter).
    pub sink_retry_backoff_ms_max: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            sinks_max: 64,
            sink_batch_records_max: 1_000,
            sink_batch_bytes_max: 4 * 1024 * 1024,
            sink_request_timeout_ms: 5_000,
            sink_retry_backoff_ms_max: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// TCP address of the admin HTTP listener (`/metrics`, `/healthz`,
    /// `/readyz`); `None` (`"off"` in the file) turns it off.
    #[serde(with = "listener_or_off")]
    pub admin_listen: Option<SocketAddr>,
    /// TCP address of the Kinesis-compatible HTTP API (HTTP/1.1 and h2);
    /// `None` (`"off"` in the file) turns it off.
    #[serde(with = "listener_or_off")]
    pub kinesis_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The operator's certificate chain and key (PEM); without them Weir
    /// generates a self-signed pair in `{data_dir}/tls/`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// DNS names and IP addresses the generated certificate is valid for
    /// besides localhost, 127.0.0.1 and ::1: the names remote clients
    /// (the AWS SDKs over HTTPS) reach this box by.
    pub tls_names: Vec<String>,
    /// Threads that run connections and requests (QUIC, the Kinesis and
    /// admin HTTP listeners); 0 is one per core. Storage writes, plugins
    /// and large encodes have threads of their own.
    pub server_threads: usize,
    pub storage: StorageConfig,
    pub limits: Limits,
    pub processing: ProcessingConfig,
    pub auth: AuthConfig,
    pub kinesis: KinesisConfig,
    pub sinks: SinkConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new("./weir-data")
    }
}

/// Numeric settings for which 0 is a choice, not a mistake.
const ZERO_MEANS_SOMETHING: &[&str] = &[
    "server_threads",                   // one per core
    "storage.block_cache_bytes",        // no block cache
    "storage.disk_free_bytes_min",      // no reserve kept free
    "limits.subscribers_per_shard_max", // subscriptions refused
    "limits.buffer_wait_timeout_ms",    // refuse at once when buffers are full
    "processing.plugins_max",           // no plugins on this box
    "processing.processors_max",
    "processing.plugin_log_lines_per_sec", // plugin log lines dropped
    "kinesis.consumers_per_stream_max",    // no enhanced fan-out
    "sinks.sinks_max",                     // no forwarding from this box
];

impl ServerConfig {
    /// `server_threads`, with 0 resolved to the cores this process may use.
    pub fn server_threads(&self) -> usize {
        match self.server_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            threads => threads,
        }
    }

    /// Reads a TOML configuration file; settings it omits keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values the server cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        let journal_min = JOURNAL_BYTES_MIN;
        if self.storage.journal_bytes_max < journal_min {
            return Err(format!(
                "storage.journal_bytes_max must be at least {journal_min} (64 MiB, the storage engine's minimum), not {}",
                self.storage.journal_bytes_max
            ));
        }
        if self.tls_cert.is_some() && !self.tls_names.is_empty() {
            return Err(
                "tls_names are for the generated certificate; with tls_cert, the names are \
                 those the operator's certificate carries (remove one of the two)"
                    .to_owned(),
            );
        }
        if let Some(name) = self
            .tls_names
            .iter()
            .find(|name| rustls_pki_types::ServerName::try_from(name.as_str()).is_err())
        {
            return Err(format!(
                "tls_names: {name:?} is neither a DNS name nor an IP address"
            ));
        }
        if let Some(name) = self.first_zero_setting() {
            return Err(format!(
                "{name} must be at least 1 (0 would stop what it limits from working)"
            ));
        }
        let processing = &self.processing;
        let (limits, storage) = (&self.limits, &self.storage);
        let within = [
            (
                "limits.record_bytes_max",
                limits.record_bytes_max as u64,
                "limits.request_bytes_max",
                limits.request_bytes_max as u64,
            ),
            (
                "limits.request_bytes_max",
                limits.request_bytes_max as u64,
                "limits.frame_bytes_max",
                limits.frame_bytes_max as u64,
            ),
            (
                "limits.connection_buffered_bytes_max",
                limits.connection_buffered_bytes_max as u64,
                "limits.server_buffered_bytes_max",
                limits.server_buffered_bytes_max as u64,
            ),
            (
                "storage.chunk_bytes_max",
                storage.chunk_bytes_max as u64,
                "storage.segment_bytes_max",
                storage.segment_bytes_max,
            ),
            (
                "processing.plugin_memory_bytes_max",
                processing.plugin_memory_bytes_max,
                "processing.plugin_memory_bytes_ceiling",
                processing.plugin_memory_bytes_ceiling,
            ),
            (
                "processing.processor_fuel_per_batch_max",
                processing.processor_fuel_per_batch_max,
                "processing.processor_fuel_per_batch_ceiling",
                processing.processor_fuel_per_batch_ceiling,
            ),
        ];
        for (name, value, ceiling_name, ceiling) in within {
            if value > ceiling {
                return Err(format!(
                    "{name} ({value}) must not be over {ceiling_name} ({ceiling})"
                ));
            }
        }
        Ok(())
    }

    /// The first count, size or time setting that is 0 where 0 has no
    /// meaning of its own: a queue of 0 commands, a 0 ms tick or timeout,
    /// a page of 0 records make the server fail at start, spin, hang at
    /// shutdown or refuse everything. Checked over every numeric setting,
    /// so one added later is covered too.
    fn first_zero_setting(&self) -> Option<String> {
        fn walk(table: &toml::Table, prefix: &str) -> Option<String> {
            table.iter().find_map(|(key, value)| {
                let name = format!("{prefix}{key}");
                match value {
                    toml::Value::Table(inner) => walk(inner, &format!("{name}.")),
                    toml::Value::Integer(0) if !ZERO_MEANS_SOMETHING.contains(&name.as_str()) => {
                        Some(name)
                    }
                    _ => None,
                }
            })
        }
        let table = toml::Table::try_from(self).ok()?;
        walk(&table, "")
    }

    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: weir_proto::DEFAULT_LISTEN_ADDR
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 7720))),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_ADMIN_PORT))),
            kinesis_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_KINESIS_PORT))),
            data_dir: data_dir.into(),
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            server_threads: 0,
            storage: StorageConfig::default(),
            limits: Limits::default(),
            processing: ProcessingConfig::default(),
            auth: AuthConfig::default(),
            kinesis: KinesisConfig::default(),
            sinks: SinkConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_threads_default_to_one_per_core() {
        let config = ServerConfig::from_toml("").expect("defaults");
        assert_eq!(config.server_threads, 0);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(config.server_threads(), cores);
        let config = ServerConfig::from_toml("server_threads = 3").expect("three");
        assert_eq!(config.server_threads(), 3);
    }

    #[test]
    fn the_documented_default_file_is_the_default_and_covers_every_setting() {
        let parsed = ServerConfig::from_toml(DEFAULT_CONFIG_TOML).expect("default file parses");
        assert_eq!(parsed, ServerConfig::default());
        let serialized = toml::to_string(&ServerConfig::default()).expect("serializes");
        for line in serialized.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(
                    DEFAULT_CONFIG_TOML.contains(&format!("{key} = ")),
                    "setting {key} is missing from weir.default.toml"
                );
            }
        }
    }

    #[test]
    fn a_file_turns_a_listener_off_with_off_and_names_a_bad_address() {
        let config = ServerConfig::from_toml("admin_listen = \"off\"\nkinesis_listen = \"off\"\n")
            .expect("off");
        assert_eq!((config.admin_listen, config.kinesis_listen), (None, None));
        let text = toml::to_string(&config).expect("serializes");
        assert_eq!(ServerConfig::from_toml(&text).expect("round trip"), config);
        let config = ServerConfig::from_toml("kinesis_listen = \"0.0.0.0:4568\"\n").expect("addr");
        assert_eq!(
            config.kinesis_listen,
            Some("0.0.0.0:4568".parse().expect("addr"))
        );
        let error = ServerConfig::from_toml("kinesis_listen = \"of\"\n").expect_err("typo");
        assert!(error.contains("\"of\" is neither an address"), "{error}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let error =
            ServerConfig::from_toml("[limits]\nbatch_records_maxx = 5\n").expect_err("unknown");
        assert!(error.contains("batch_records_maxx"), "{error}");
        let error =
            ServerConfig::from_toml("[storage]\ndurability = \"sometimes\"\n").expect_err("bad");
        assert!(error.contains("sometimes"), "{error}");
        let error = ServerConfig::from_toml("[storage]\njournal_bytes_max = 1048576\n")
            .expect_err("too small");
        assert!(error.contains("storage.journal_bytes_max"), "{error}");
        let error =
            ServerConfig::from_toml("[limits]\nserver_buffered_bytes_max = 0\n").expect_err("zero");
        assert!(error.contains("server_buffered_bytes_max"), "{error}");
        // Zero as a queue length, a tick or a page size: refused by name
        // (it panicked at start, hung shutdown, or froze subscriptions).
        for (section, key) in [
            ("storage", "writer_queue_commands_max"),
            ("storage", "buffered_sync_interval_ms"),
            ("limits", "subscribe_batch_records_max"),
            ("kinesis", "subscription_heartbeat_ms"),
            ("sinks", "sink_request_timeout_ms"),
        ] {
            let error =
                ServerConfig::from_toml(&format!("[{section}]\n{key} = 0\n")).expect_err("zero");
            assert!(
                error.contains(&format!("{section}.{key} must be at least 1")),
                "{error}"
            );
        }
        for setting in ZERO_MEANS_SOMETHING {
            let text = match setting.split_once('.') {
                Some((section, key)) => format!("[{section}]\n{key} = 0\n"),
                None => format!("{setting} = 0\n"),
            };
            ServerConfig::from_toml(&text).unwrap_or_else(|e| panic!("{setting} = 0: {e}"));
        }
        let error = ServerConfig::from_toml("tls_names = [\"weir box\"]\n").expect_err("a name");
        assert!(
            error.contains("tls_names: \"weir box\" is neither a DNS name nor an IP address"),
            "{error}"
        );
        ServerConfig::from_toml("tls_names = [\"weir.example\", \"10.0.0.7\", \"fd00::7\"]\n")
            .expect("names and addresses");
        let error = ServerConfig::from_toml(
            "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntls_names = [\"weir.example\"]\n",
        )
        .expect_err("names beside an operator certificate");
        assert!(
            error.contains("tls_names are for the generated certificate"),
            "{error}"
        );
        // Limits that contain one another stay in order.
        let error = ServerConfig::from_toml("[limits]\nrecord_bytes_max = 6000000\n")
            .expect_err("a record over a request");
        assert!(
            error.contains(
                "limits.record_bytes_max (6000000) must not be over limits.request_bytes_max"
            ),
            "{error}"
        );
        let error = ServerConfig::from_toml("[storage]\nchunk_bytes_max = 100000000\n")
            .expect_err("a chunk over a segment");
        assert!(error.contains("storage.segment_bytes_max"), "{error}");
        let partial =
            ServerConfig::from_toml("[limits]\nbatch_records_max = 1000\n").expect("partial");
        assert_eq!(partial.limits.batch_records_max, 1000);
        assert_eq!(
            partial.limits.record_bytes_max,
            Limits::default().record_bytes_max
        );
    }
}
