//! The Kinesis upstream: `PutRecords` to a Kinesis Data Streams API (AWS
//! over TLS, another Weir box, an emulator), SigV4-signed over one
//! keep-alive HTTP/1.1 connection per shard, plain or TLS. At least once,
//! no loss: a record the upstream refused alone (`FailedRecordCount`) is
//! sent again alone; a batch in flight when Weir crashes is sent again whole.
//! Partition keys are kept, so the upstream routes each key to one shard.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;
use weir_proto::Record;
use weir_proto::admin::SinkSettings;

use super::target::KinesisTarget;
use super::upstream::{TlsFiles, UpstreamError};
use crate::aws::client::{Connection as HttpConnection, Target as HttpTarget};

/// PutRecords takes at most this many records per request.
const PUT_RECORDS_MAX: usize = 500;
/// Quick retries of records the upstream refused one by one (throughput
/// exceeded, say) before the worker backs off.
const RECORD_RETRIES: u32 = 3;
/// The wait before quick retry N is N times this.
const RECORD_RETRY_STEP: Duration = Duration::from_millis(100);

pub(in crate::sink) struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    target: KinesisTarget,
    credentials_file: Option<String>,
    tls_files: TlsFiles,
    request_timeout: Duration,
    /// With TLS: built once for all the sink's shards, on first connect
    /// (reading the CA file or the system store is file I/O).
    tls: OnceCell<TlsConnector>,
}

impl Shared {
    async fn tls(&self) -> Result<TlsConnector, UpstreamError> {
        self.tls
            .get_or_try_init(|| async {
                let config = self.tls_files.client_config(&[b"http/1.1"]).await?;
                Ok(TlsConnector::from(Arc::new(config)))
            })
            .await
            .cloned()
    }
}

impl Connection {
    pub fn new(target: &KinesisTarget, settings: &SinkSettings, request_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                target: target.clone(),
                credentials_file: settings.credentials_file.clone(),
                tls_files: TlsFiles::of(settings),
                request_timeout,
                tls: OnceCell::new(),
            }),
        }
    }

    pub fn for_shard(&self) -> ShardPublisher {
        ShardPublisher {
            shared: self.shared.clone(),
            connection: None,
            taken: HashSet::new(),
        }
    }
}

pub(in crate::sink) struct ShardPublisher {
    shared: Arc<Shared>,
    connection: Option<HttpConnection>,
    /// Sequences of the batch being sent that the upstream already took:
    /// sent again only if Weir restarts before the batch is done.
    taken: HashSet<u64>,
}

impl ShardPublisher {
    /// Connects and checks the stream exists. Kinesis keeps no position of
    /// ours, so forwarding goes on from Weir's cursor.
    pub async fn sync(&mut self) -> Result<Option<u64>, UpstreamError> {
        self.connection = None;
        let body = serde_json::json!({ "StreamName": self.shared.target.stream }).to_string();
        self.call("DescribeStreamSummary", &body).await?;
        Ok(None)
    }

    pub async fn send(&mut self, records: &[Record]) -> Result<(), UpstreamError> {
        let mut attempt = 0;
        loop {
            let pending: Vec<&Record> = records
                .iter()
                .filter(|record| !self.taken.contains(&record.sequence))
                .collect();
            if pending.is_empty() {
                self.taken.clear();
                return Ok(());
            }
            let mut refused = None;
            for chunk in pending.chunks(PUT_RECORDS_MAX) {
                if let Some(reason) = self.put_records(chunk).await? {
                    refused = Some(reason);
                }
            }
            let Some(reason) = refused else {
                self.taken.clear();
                return Ok(());
            };
            attempt += 1;
            if attempt > RECORD_RETRIES {
                return Err(UpstreamError(format!(
                    "Kinesis refused records {RECORD_RETRIES} times: {reason}"
                )));
            }
            tokio::time::sleep(RECORD_RETRY_STEP * attempt).await;
        }
    }

    /// One PutRecords; notes the records taken, and says why others were
    /// refused.
    async fn put_records(&mut self, records: &[&Record]) -> Result<Option<String>, UpstreamError> {
        let base64 = base64::engine::general_purpose::STANDARD;
        let entries: Vec<serde_json::Value> = records
            .iter()
            .map(|record| {
                serde_json::json!({
                    "Data": base64.encode(&record.data),
                    "PartitionKey": record.partition_key,
                })
            })
            .collect();
        let body = serde_json::json!({
            "StreamName": self.shared.target.stream,
            "Records": entries,
        })
        .to_string();
        let answer = self.call("PutRecords", &body).await?;
        let results = answer["Records"]
            .as_array()
            .ok_or_else(|| UpstreamError("Kinesis answered PutRecords without Records".into()))?;
        if results.len() != records.len() {
            return Err(UpstreamError(format!(
                "Kinesis answered {} results for {} records",
                results.len(),
                records.len()
            )));
        }
        let mut refused = None;
        for (record, result) in records.iter().zip(results) {
            match result["ErrorCode"].as_str() {
                None => {
                    self.taken.insert(record.sequence);
                }
                Some(code) => {
                    refused.get_or_insert_with(|| {
                        format!(
                            "{code}: {}",
                            result["ErrorMessage"].as_str().unwrap_or_default()
                        )
                    });
                }
            }
        }
        Ok(refused)
    }

    /// Signs and sends one operation; the answer's JSON, or why not.
    async fn call(
        &mut self,
        operation: &str,
        body: &str,
    ) -> Result<serde_json::Value, UpstreamError> {
        let timeout = self.shared.request_timeout;
        let called = tokio::time::timeout(timeout, async {
            if self.connection.is_none() {
                self.connection = Some(self.connect().await?);
            }
            let connection = self
                .connection
                .as_mut()
                .ok_or_else(|| UpstreamError("no connection".into()))?;
            connection
                .call(operation, body)
                .await
                .map_err(|error| UpstreamError(error.to_string()))
        })
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError(format!(
                "Kinesis did not answer {operation} within {} ms (sinks.sink_request_timeout_ms)",
                timeout.as_millis()
            )))
        });
        let (status, answer) = match called {
            Ok(answer) => answer,
            Err(error) => {
                // The connection may hold half an exchange: start afresh.
                self.connection = None;
                return Err(error);
            }
        };
        if answer.is_empty() && status == 200 {
            return Ok(serde_json::Value::Null);
        }
        let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(|error| {
            UpstreamError(format!(
                "Kinesis answered {operation} with something not JSON: {error}"
            ))
        })?;
        if status != 200 {
            let code = answer["__type"].as_str().unwrap_or("an error");
            let code = code.rsplit('#').next().unwrap_or(code);
            let message = answer["message"]
                .as_str()
                .or_else(|| answer["Message"].as_str())
                .unwrap_or_default();
            return Err(UpstreamError(format!(
                "Kinesis refused {operation} for stream {}: {code}: {message}",
                self.shared.target.stream
            )));
        }
        Ok(answer)
    }

    async fn connect(&self) -> Result<HttpConnection, UpstreamError> {
        let shared = &self.shared;
        let host = crate::aws::client::host_of(&shared.target.authority);
        let addr = tokio::net::lookup_host((host, shared.target.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| UpstreamError(format!("cannot resolve {host}")))?;
        let (access_key, secret) = match &shared.credentials_file {
            Some(path) => read_credentials(path).await?,
            // Signed with a key no server knows: works where signatures
            // are not checked (auth disabled, emulators).
            None => ("anonymous".to_owned(), "anonymous".to_owned()),
        };
        let tls = match shared.target.tls {
            false => None,
            true => Some(shared.tls().await?),
        };
        let target = HttpTarget {
            addr,
            authority: shared.target.authority.clone(),
            tls,
            access_key,
            secret,
            region: shared.target.region.clone(),
        };
        HttpConnection::open(&target)
            .await
            .map_err(|error| UpstreamError(error.to_string()))
    }
}

/// `aws_access_key_id` and `aws_secret_access_key` from an AWS-style
/// credentials file (`key = value` lines; the first of each is taken).
async fn read_credentials(path: &str) -> Result<(String, String), UpstreamError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|error| {
        UpstreamError(format!("reading the credentials file {path:?}: {error}"))
    })?;
    parse_credentials(&text).ok_or_else(|| {
        UpstreamError(format!(
            "the credentials file {path:?} needs aws_access_key_id and aws_secret_access_key lines \
             (`weir token aws-credentials` prints them for a Weir box)"
        ))
    })
}

fn parse_credentials(text: &str) -> Option<(String, String)> {
    let value = |name: &str| {
        text.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    Some((value("aws_access_key_id")?, value("aws_secret_access_key")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_aws_style_lines() {
        let text = "[default]\naws_access_key_id = AKID\n# comment\naws_secret_access_key=s3cr=t\n";
        assert_eq!(
            parse_credentials(text),
            Some(("AKID".to_owned(), "s3cr=t".to_owned()))
        );
        assert_eq!(parse_credentials("aws_access_key_id = x\n"), None);
    }
}
