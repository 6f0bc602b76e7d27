//! The upstream as a sink worker sees it, whatever the engine: a
//! connection shared by the sink's workers, and per shard a publisher that
//! says where the upstream stands and takes batches in order.

use std::path::Path;
use std::time::Duration;

use weir_proto::Record;
use weir_proto::admin::SinkSettings;

use super::target::Target;
use super::{kafka, kinesis, nats};
use crate::storage::Shard;

/// Why the upstream did not take a batch (or could not be asked): the
/// worker backs off, asks where the upstream stands, and tries again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

/// The files a sink's TLS connections read on the server: the
/// certificates to trust (none: the system's trust store) and, for mutual
/// TLS, the certificate and key to present.
#[derive(Debug, Clone, Default)]
pub(super) struct TlsFiles {
    pub ca_file: Option<String>,
    /// (certificate chain, private key).
    pub client_cert: Option<(String, String)>,
}

impl TlsFiles {
    pub fn of(settings: &SinkSettings) -> Self {
        Self {
            ca_file: settings.ca_file.clone(),
            client_cert: settings
                .client_cert_file
                .clone()
                .zip(settings.client_key_file.clone()),
        }
    }

    /// The rustls configuration, read on the blocking pool (the CA file,
    /// the client certificate and the system store are file I/O).
    pub async fn client_config(
        &self,
        alpn: &'static [&'static [u8]],
    ) -> Result<rustls::ClientConfig, UpstreamError> {
        let files = self.clone();
        tokio::task::spawn_blocking(move || files.read_client_config(alpn))
            .await
            .map_err(|error| UpstreamError(format!("TLS set-up: {error}")))?
    }

    fn read_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, UpstreamError> {
        let identity = self
            .client_cert
            .as_ref()
            .map(|(cert, key)| crate::tls::ClientIdentity::read(Path::new(cert), Path::new(key)))
            .transpose();
        identity
            .and_then(|identity| {
                crate::tls::client_config(self.ca_file.as_deref().map(Path::new), identity, alpn)
            })
            .map_err(|error| UpstreamError(format!("TLS set-up: {error}")))
    }
}

/// One sink's connection to its upstream.
pub(super) enum Connection {
    Nats(nats::Connection),
    Kinesis(kinesis::Connection),
    Kafka(kafka::Connection),
}

impl Connection {
    pub fn open(target: &Target, settings: &SinkSettings, request_timeout: Duration) -> Self {
        match target {
            Target::Nats {
                servers,
                subject_prefix,
                tls,
            } => Self::Nats(nats::Connection::new(
                servers.clone(),
                subject_prefix.clone(),
                *tls,
                settings,
                request_timeout,
            )),
            Target::Kinesis(target) => {
                Self::Kinesis(kinesis::Connection::new(target, settings, request_timeout))
            }
            Target::Kafka {
                brokers,
                topic,
                tls,
            } => Self::Kafka(kafka::Connection::new(
                brokers.clone(),
                topic.clone(),
                (*tls).then(|| TlsFiles::of(settings)),
                &settings.name,
                request_timeout,
            )),
        }
    }

    /// The publisher for one source shard.
    pub fn for_shard(&self, box_id: &str, shard: &Shard) -> Upstream {
        match self {
            Self::Nats(connection) => Upstream::Nats(connection.for_shard(box_id, shard)),
            Self::Kinesis(connection) => Upstream::Kinesis(connection.for_shard()),
            Self::Kafka(connection) => Upstream::Kafka(connection.for_shard(box_id, shard)),
        }
    }
}

/// One source shard's way upstream.
pub(super) enum Upstream {
    Nats(nats::ShardPublisher),
    Kinesis(kinesis::ShardPublisher),
    Kafka(kafka::ShardPublisher),
}

impl Upstream {
    /// Asks the upstream where it stands (after a start, a failure or a
    /// lost acknowledgement): the source sequence number after the last
    /// record it stored from this shard, if it can tell.
    pub async fn sync(&mut self) -> Result<Option<u64>, UpstreamError> {
        match self {
            Self::Nats(publisher) => publisher.sync().await,
            Self::Kinesis(publisher) => publisher.sync().await,
            Self::Kafka(publisher) => publisher.sync().await,
        }
    }

    /// Whether [`Self::sync`] finds the exact resume point whatever Weir's
    /// cursor says (so the cursor need not be saved after every batch).
    pub fn knows_position(&self) -> bool {
        matches!(self, Self::Nats(_))
    }

    /// Sends `records` (in sequence order, after those sent before): the
    /// source sequence through which the upstream has now acknowledged
    /// everything sent, if that moved. Kafka and Kinesis acknowledge each
    /// call whole before it returns; NATS may still hold the tail in
    /// flight, until later calls or [`Self::flush`].
    pub async fn send(&mut self, records: &[Record]) -> Result<Option<u64>, UpstreamError> {
        let last = records.last().map(|record| record.sequence);
        match self {
            Self::Nats(publisher) => publisher.send(records).await,
            Self::Kinesis(publisher) => publisher.send(records).await.map(|()| last),
            Self::Kafka(publisher) => publisher.send(records).await.map(|()| last),
        }
    }

    /// Waits until everything sent is acknowledged (before the worker
    /// waits for more records): the source sequence of the last record, if
    /// any was still in flight.
    pub async fn flush(&mut self) -> Result<Option<u64>, UpstreamError> {
        match self {
            Self::Nats(publisher) => publisher.flush().await,
            Self::Kinesis(_) | Self::Kafka(_) => Ok(None),
        }
    }
}
