//! Control-plane messages for plugins, processors, state and tokens. They are rare
//! and small, so their bodies are JSON (one `AdminRequest` or
//! `AdminResponse` per frame); the data path stays binary. Uploading a
//! plugin is the exception: `Request::AddPlugin` carries the component as a
//! blob.

use serde::{Deserialize, Serialize};

/// What to do with a record whose processing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Stop the processor's worker at that record and report why.
    #[default]
    Halt,
    /// Record the sequence number as skipped and go on.
    Skip,
    /// Write the record and the reason to the dead-letter stream and go on.
    DeadLetter,
}

impl FailurePolicy {
    /// As `--on-error` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Halt => "halt",
            Self::Skip => "skip",
            Self::DeadLetter => "dead-letter",
        }
    }
}

/// Where a new processor starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StartPosition {
    #[default]
    TrimHorizon,
    Latest,
}

/// Everything `weir processor create` sets. `None` limits take the
/// server's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcessorSettings {
    pub name: String,
    pub plugin: String,
    pub source: String,
    /// Output stream; created (with the source's shard count) if missing.
    pub output: Option<String>,
    pub config: Vec<(String, String)>,
    pub fuel_per_sec: Option<u64>,
    pub fuel_per_batch_max: Option<u64>,
    pub memory_bytes_max: Option<u64>,
    /// State bytes (keys and values) the processor may keep, split evenly
    /// between the source's shards.
    #[serde(default)]
    pub state_bytes_max: Option<u64>,
    pub on_error: FailurePolicy,
    pub start: StartPosition,
}

/// Everything `weir sink create` sets. `None` values take the server's
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SinkSettings {
    pub name: String,
    /// The Weir stream whose records are forwarded.
    pub source: String,
    /// Where to: `nats://HOST:PORT/SUBJECT-PREFIX` (`nats+tls://` for TLS),
    /// `kafka://HOST:PORT/TOPIC` (`kafka+tls://`), `kinesis://HOST:PORT/STREAM` or
    /// `kinesis+https://HOST[:PORT]/STREAM`.
    /// A password in the URL is never shown back.
    pub to: String,
    /// A file on the server holding the upstream's credentials (for NATS,
    /// a `.creds` file); only its path is stored and shown.
    #[serde(default)]
    pub credentials_file: Option<String>,
    /// A PEM file on the server with the certificates to trust for a TLS
    /// upstream (`nats+tls://`, `kafka+tls://`, `kinesis+https://`);
    /// without it, the system's trust store.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// For mutual TLS: PEM files on the server with the certificate (chain)
    /// and private key the sink presents to a TLS upstream. Both or
    /// neither; only their paths are stored.
    #[serde(default)]
    pub client_cert_file: Option<String>,
    #[serde(default)]
    pub client_key_file: Option<String>,
    pub start: StartPosition,
    /// Records per upstream request.
    pub batch_records: Option<u32>,
    /// How long a short batch waits for more records before it is sent.
    pub linger_ms: Option<u64>,
    /// Bytes of record data forwarded per second at most, over all shards.
    pub bytes_per_sec: Option<u64>,
}

/// One source shard of a sink, as `weir sink describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkShardProgress {
    pub shard: u32,
    /// `forwarding`, `backing off`, `paused`, `stopped`.
    pub status: String,
    /// Next source sequence number to forward.
    pub cursor: u64,
    pub lag_records: u64,
    /// Partition key and data bytes of the records not yet forwarded.
    pub lag_bytes: u64,
    /// Age of the oldest record not yet forwarded.
    pub lag_ms: u64,
    pub records_forwarded: u64,
    pub bytes_forwarded: u64,
    /// When the upstream last acknowledged records (Unix ms).
    pub last_ack_ms: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkInfo {
    /// The settings, with any password in `to` replaced by `***`.
    pub settings: SinkSettings,
    pub paused: bool,
    pub created_ms: u64,
    /// Empty in `ListSinks` answers.
    pub shards: Vec<SinkShardProgress>,
}

/// What a token allows. `Admin` includes `Produce` and `Consume` on the
/// same streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Put records.
    Produce,
    /// Read, subscribe, checkpoints, processor state.
    Consume,
    /// Create and delete streams; on all streams also plugins, processors,
    /// tokens and server information.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::Admin => "admin",
        }
    }
}

/// A token as `ListTokens` shows it; the secret only in `CreateToken`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub name: String,
    pub roles: Vec<Role>,
    /// The streams the roles apply to; `None` means every stream.
    pub streams: Option<Vec<String>>,
    pub created_ms: u64,
    /// Shown once, when the token is created; the server keeps only its hash.
    pub secret: Option<String>,
}

/// Limits to change on a processor; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorLimits {
    pub fuel_per_sec: Option<u64>,
    pub fuel_per_batch_max: Option<u64>,
    pub memory_bytes_max: Option<u64>,
    pub state_bytes_max: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    ListPlugins,
    DescribePlugin {
        name: String,
    },
    /// Deletes a plugin (refused while a processor uses it).
    #[serde(alias = "remove-plugin")]
    DeletePlugin {
        name: String,
    },
    CreateProcessor(Box<ProcessorSettings>),
    ListProcessors,
    DescribeProcessor {
        name: String,
    },
    PauseProcessor {
        name: String,
    },
    ResumeProcessor {
        name: String,
    },
    DeleteProcessor {
        name: String,
    },
    /// Changes a processor's limits; it keeps its cursors and state, and
    /// its workers restart with the new limits (a halted shard too).
    UpdateProcessor {
        name: String,
        limits: ProcessorLimits,
    },
    /// Moves a processor's cursor in one shard (or in every shard when
    /// `shard` is `None`) to `to`: records before it are skipped, records
    /// after it processed (again). State is kept as it is.
    SeekProcessor {
        name: String,
        to: crate::message::Position,
        shard: Option<u32>,
    },
    CreateSink(Box<SinkSettings>),
    ListSinks,
    DescribeSink {
        name: String,
    },
    PauseSink {
        name: String,
    },
    ResumeSink {
        name: String,
    },
    /// Moves a sink's cursor in one shard (or in every shard) to `to`.
    SeekSink {
        name: String,
        to: crate::message::Position,
        shard: Option<u32>,
    },
    /// Removes a sink and its cursors; what it forwarded stays upstream.
    DeleteSink {
        name: String,
    },
    /// The server's version, uptime and resource use.
    ServerInfo,
    /// A processor's state: one key (in every shard), or every key with a
    /// prefix, up to `limit` entries.
    GetState {
        processor: String,
        key: Option<String>,
        prefix: Option<String>,
        limit: u32,
    },
    /// A new token with these roles on these streams (`None`: all streams).
    CreateToken {
        name: String,
        roles: Vec<Role>,
        streams: Option<Vec<String>>,
    },
    ListTokens,
    /// Deletes (revokes) a token; requests on connections that use it fail
    /// from now on.
    #[serde(alias = "revoke-token")]
    DeleteToken {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    pub bytes: u64,
    /// The WIT package the component was built against.
    pub wit: String,
    pub created_ms: u64,
    /// Processors using it (a plugin in use cannot be removed).
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardProgress {
    pub shard: u32,
    /// `running`, `paused`, `waiting for fuel`, `waiting for storage`,
    /// `retrying`, `halted`, `stopped`.
    pub status: String,
    /// Next source sequence number to process.
    pub cursor: u64,
    pub lag_records: u64,
    pub lag_ms: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub fuel_used: u64,
    pub records_failed: u64,
    pub state_keys: u64,
    pub state_bytes: u64,
    pub last_error: Option<String>,
    /// Most recent skipped or dead-lettered sequence numbers.
    pub failed_sequences: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessorInfo {
    pub settings: ProcessorSettings,
    pub plugin_sha256: String,
    pub paused: bool,
    pub dead_letter_stream: Option<String>,
    pub fuel_per_sec: u64,
    pub fuel_per_batch_max: u64,
    pub memory_bytes_max: u64,
    #[serde(default)]
    pub state_bytes_max: u64,
    /// Log lines the plugin wrote past `plugin_log_lines_per_sec`, dropped
    /// since the workers last started.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// Empty in `ListProcessors` answers.
    pub shards: Vec<ShardProgress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    pub shard: u32,
    pub key: String,
    /// The value as UTF-8 (lossy for binary values).
    pub value: String,
    /// The value in hex when it is not valid UTF-8.
    pub value_hex: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: String,
    pub uptime_ms: u64,
    /// Disk used by the data directory, as the storage engine counts it.
    pub disk_bytes: u64,
    pub resident_bytes: u64,
    /// False when the operator turned authentication off.
    pub auth_enabled: bool,
    /// Why puts are refused with `StorageFull` now (the storage budget, the
    /// disk reserve, a failed write to disk), if they are.
    #[serde(default)]
    pub writes_refused: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum AdminResponse {
    Done,
    Plugin(PluginInfo),
    Plugins(Vec<PluginInfo>),
    Processor(Box<ProcessorInfo>),
    Processors(Vec<ProcessorInfo>),
    State(Vec<StateEntry>),
    Sink(Box<SinkInfo>),
    Sinks(Vec<SinkInfo>),
    Server(ServerInfo),
    Token(TokenInfo),
    Tokens(Vec<TokenInfo>),
}

impl AdminResponse {
    /// What kind of answer this is, in words (for messages).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Plugin(_) => "a plugin",
            Self::Plugins(_) => "a list of plugins",
            Self::Processor(_) => "a processor",
            Self::Processors(_) => "a list of processors",
            Self::State(_) => "state entries",
            Self::Sink(_) => "a sink",
            Self::Sinks(_) => "a list of sinks",
            Self::Server(_) => "server information",
            Self::Token(_) => "a token",
            Self::Tokens(_) => "a list of tokens",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_delete_and_the_old_names_still_parse() {
        let plugin = AdminRequest::DeletePlugin { name: "p".into() };
        let token = AdminRequest::DeleteToken { name: "t".into() };
        let json = |request: &AdminRequest| serde_json::to_string(request).expect("encode");
        assert_eq!(json(&plugin), r#"{"op":"delete-plugin","name":"p"}"#);
        assert_eq!(json(&token), r#"{"op":"delete-token","name":"t"}"#);
        let parse = |text: &str| serde_json::from_str::<AdminRequest>(text).expect("decode");
        assert_eq!(parse(r#"{"op":"remove-plugin","name":"p"}"#), plugin);
        assert_eq!(parse(r#"{"op":"revoke-token","name":"t"}"#), token);
    }

    #[test]
    fn a_seek_carries_its_position_as_the_command_line_writes_it() {
        use crate::message::Position;
        let seek = AdminRequest::SeekProcessor {
            name: "p".into(),
            to: Position::AtTimestamp(1_700_000_000_000),
            shard: Some(2),
        };
        let json = serde_json::to_string(&seek).expect("encode");
        assert_eq!(
            json,
            r#"{"op":"seek-processor","name":"p","to":"time:1700000000000","shard":2}"#
        );
        assert_eq!(
            serde_json::from_str::<AdminRequest>(&json).expect("decode"),
            seek
        );
        for position in [
            Position::TrimHorizon,
            Position::Latest,
            Position::AtSequence(5),
            Position::AfterSequence(5),
        ] {
            assert_eq!(position.to_string().parse(), Ok(position));
        }
        let bad = serde_json::from_str::<AdminRequest>(
            r#"{"op":"seek-sink","name":"s","to":"soon","shard":null}"#,
        )
        .expect_err("not a position");
        assert!(
            bad.to_string().contains("invalid position \"soon\""),
            "{bad}"
        );
    }
}
