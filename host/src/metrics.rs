//! What the box is doing, for machines: Prometheus text on an admin HTTP
//! listener (loopback by default), with `/healthz` and `/readyz`.
//!
//! Counters live where the work happens (shard state, [`crate::counters`]);
//! this module only reads them at scrape time, so serving metrics costs
//! nothing on the data path beyond a few atomic adds.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use weir_proto::admin::{ShardProgress, SinkShardProgress};

use crate::service::Service;
use crate::storage::ShardStats;

/// One metric family, read from each item (shard, processor shard).
struct Family<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> u64,
}

const fn counter<T>(name: &'static str, help: &'static str, value: fn(&T) -> u64) -> Family<T> {
    Family {
        name,
        kind: "counter",
        help,
        value,
    }
}

const fn gauge<T>(name: &'static str, help: &'static str, value: fn(&T) -> u64) -> Family<T> {
    Family {
        name,
        kind: "gauge",
        help,
        value,
    }
}

/// Every family, one series per labelled item.
fn render_families<T>(out: &mut String, families: &[Family<T>], items: &[(String, T)]) {
    for family_spec in families {
        family(out, family_spec.name, family_spec.kind, family_spec.help);
        for (labels, item) in items {
            let _ = writeln!(
                out,
                "{}{{{labels}}} {}",
                family_spec.name,
                (family_spec.value)(item)
            );
        }
    }
}

/// A family with one unlabelled value.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every metric in the Prometheus text format.
pub async fn render(service: &Service) -> String {
    let mut out = String::new();
    let streams = service.storage.all_streams();
    let shard_families: [Family<ShardStats>; 6] = [
        counter(
            "weir_records_appended_total",
            "Records appended, per shard.",
            |s| s.records_appended,
        ),
        counter(
            "weir_bytes_appended_total",
            "Key and data bytes appended, per shard.",
            |s| s.bytes_appended,
        ),
        counter(
            "weir_records_read_total",
            "Records served to readers since start, per shard.",
            |s| s.records_read,
        ),
        counter(
            "weir_bytes_read_total",
            "Key and data bytes served to readers since start, per shard.",
            |s| s.bytes_read,
        ),
        gauge(
            "weir_records_stored",
            "Records stored (after retention), per shard.",
            |s| s.records_stored,
        ),
        gauge(
            "weir_storage_bytes",
            "Key and data bytes stored (after retention), per shard.",
            |s| s.bytes_stored,
        ),
    ];
    // One read of each shard's stats, labelled once, for all families.
    let shards: Vec<(String, ShardStats)> = streams
        .iter()
        .flat_map(|stream| {
            stream.shards.iter().map(|shard| {
                let labels = format!("stream=\"{}\",shard=\"{}\"", stream.name, shard.index);
                (labels, shard.stats())
            })
        })
        .collect();
    render_families(&mut out, &shard_families, &shards);

    let metrics = &service.metrics;
    metrics.put_ack.render(
        &mut out,
        "weir_put_ack_seconds",
        "Time from a PutRecords request to its durable ack.",
    );
    metrics.request_read.render(
        &mut out,
        "weir_request_read_seconds",
        "Time from a request's first bytes to the whole request read.",
    );
    let commits = service.storage.commit_metrics();
    commits.segment_write.render(
        &mut out,
        "weir_commit_segment_write_seconds",
        "Time a group commit takes to write its chunks to segment files and sync them.",
    );
    commits.journal_commit.render(
        &mut out,
        "weir_commit_journal_seconds",
        "Time a group commit takes to commit its index batch (and sync the journal when durable).",
    );
    scalar(
        &mut out,
        "weir_subscribers",
        "gauge",
        "Open subscriptions.",
        metrics.subscribers.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "weir_connections",
        "gauge",
        "Open QUIC connections.",
        metrics.connections.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "weir_buffered_request_bytes",
        "gauge",
        "Request bytes reserved in memory (bounded by server_buffered_bytes_max).",
        service
            .limits
            .server_buffered_bytes_max
            .saturating_sub(service.buffered.available_permits()),
    );
    for (name, help, value) in [
        (
            "weir_handshake_retries_total",
            "New QUIC clients asked to prove their address (past a quarter of handshakes_max).",
            &metrics.handshake_retries,
        ),
        (
            "weir_handshakes_refused_total",
            "New QUIC clients refused at handshakes_max.",
            &metrics.handshakes_refused,
        ),
        (
            "weir_unauthenticated_closed_total",
            "Connections closed for not authenticating in time or to make room.",
            &metrics.unauthenticated_closed,
        ),
    ] {
        scalar(
            &mut out,
            name,
            "counter",
            help,
            value.load(Ordering::Relaxed),
        );
    }
    scalar(
        &mut out,
        "weir_requests_total",
        "counter",
        "Requests handled.",
        metrics.requests.load(Ordering::Relaxed),
    );
    scalar(
        &mut out,
        "weir_request_errors_total",
        "counter",
        "Requests answered with an error.",
        metrics.request_errors.load(Ordering::Relaxed),
    );

    if let Ok(processors) = service.processors.list_detailed().await {
        let processor_families: [Family<ShardProgress>; 6] = [
            counter(
                "weir_processor_records_in_total",
                "Source records a processor consumed.",
                |s| s.records_in,
            ),
            counter(
                "weir_processor_records_out_total",
                "Records a processor emitted.",
                |s| s.records_out,
            ),
            counter(
                "weir_processor_fuel_total",
                "Fuel a processor's plugin burned.",
                |s| s.fuel_used,
            ),
            counter(
                "weir_processor_records_failed_total",
                "Records skipped or dead-lettered.",
                |s| s.records_failed,
            ),
            gauge(
                "weir_processor_lag_records",
                "Committed source records not yet processed.",
                |s| s.lag_records,
            ),
            gauge(
                "weir_processor_lag_seconds",
                "Age of the oldest unprocessed record.",
                |s| s.lag_ms / 1000,
            ),
        ];
        let log_drops: Vec<(String, u64)> = processors
            .iter()
            .map(|p| {
                (
                    format!("processor=\"{}\"", p.settings.name),
                    p.log_lines_dropped,
                )
            })
            .collect();
        let shards: Vec<(String, ShardProgress)> = processors
            .into_iter()
            .flat_map(|processor| {
                let name = processor.settings.name;
                processor.shards.into_iter().map(move |shard| {
                    (
                        format!("processor=\"{name}\",shard=\"{}\"", shard.shard),
                        shard,
                    )
                })
            })
            .collect();
        render_families(&mut out, &processor_families, &shards);
        let log_family: [Family<u64>; 1] = [counter(
            "weir_processor_log_lines_dropped_total",
            "Plugin log lines dropped by plugin_log_lines_per_sec since the workers started.",
            |dropped| *dropped,
        )];
        render_families(&mut out, &log_family, &log_drops);
    }

    if let Ok(sinks) = service.sinks.list_detailed().await {
        let sink_families: [Family<SinkShardProgress>; 7] = [
            counter(
                "weir_sink_records_forwarded_total",
                "Records the upstream acknowledged.",
                |s| s.records_forwarded,
            ),
            counter(
                "weir_sink_bytes_forwarded_total",
                "Record bytes the upstream acknowledged.",
                |s| s.bytes_forwarded,
            ),
            gauge(
                "weir_sink_lag_records",
                "Source records not yet forwarded.",
                |s| s.lag_records,
            ),
            gauge(
                "weir_sink_lag_bytes",
                "Partition key and data bytes of the source records not yet forwarded.",
                |s| s.lag_bytes,
            ),
            gauge(
                "weir_sink_lag_seconds",
                "Age of the oldest record not yet forwarded.",
                |s| s.lag_ms / 1000,
            ),
            gauge(
                "weir_sink_last_ack_timestamp_seconds",
                "When the upstream last acknowledged records (Unix time; 0: never).",
                |s| s.last_ack_ms.unwrap_or(0) / 1000,
            ),
            gauge(
                "weir_sink_backing_off",
                "1 while the worker waits to retry an unreachable or refusing upstream.",
                |s| u64::from(s.status == "backing off"),
            ),
        ];
        let shards: Vec<(String, SinkShardProgress)> = sinks
            .into_iter()
            .flat_map(|sink| {
                let name = sink.settings.name;
                sink.shards
                    .into_iter()
                    .map(move |shard| (format!("sink=\"{name}\",shard=\"{}\"", shard.shard), shard))
            })
            .collect();
        render_families(&mut out, &sink_families, &shards);
    }

    scalar(
        &mut out,
        "weir_plugin_memory_bytes",
        "gauge",
        "Linear memory of all plugin instances (bounded by plugins_memory_bytes_max).",
        service.processors.plugin_memory_bytes(),
    );
    scalar(
        &mut out,
        "weir_process_resident_bytes",
        "gauge",
        "Resident memory of the weir process.",
        crate::system::resident_bytes(),
    );
    if let Ok(bytes) = service.storage.disk_bytes() {
        scalar(
            &mut out,
            "weir_data_dir_bytes",
            "gauge",
            "Disk used by the data directory, as fjall counts it.",
            bytes,
        );
    }
    let storage = &service.storage;
    scalar(
        &mut out,
        "weir_stored_record_bytes",
        "gauge",
        "Record bytes in all streams (what storage_bytes_max bounds).",
        storage.stored_bytes(),
    );
    scalar(
        &mut out,
        "weir_write_buffer_bytes",
        "gauge",
        "Bytes in memtables, active and waiting for flush (bounded by write_buffer_bytes_max).",
        storage.write_buffer_bytes(),
    );
    scalar(
        &mut out,
        "weir_disk_free_bytes",
        "gauge",
        "Free space on the data directory's filesystem (sampled).",
        storage.disk_free_bytes(),
    );
    scalar(
        &mut out,
        "weir_storage_full",
        "gauge",
        "1 while puts are refused with StorageFull.",
        u8::from(storage.space_check().is_err()),
    );
    scalar(
        &mut out,
        "weir_storage_reopens_total",
        "counter",
        "Times storage was reopened after a failed write to disk.",
        storage.reopens(),
    );
    out
}

/// Requests an admin connection may send before it is closed.
const ADMIN_REQUEST_BYTES_MAX: usize = 8 * 1024;
/// How long the admin listener waits for a request before it closes the
/// connection (a scraper sends its request at once).
const ADMIN_REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` turns true.
pub async fn serve_admin(
    listener: TcpListener,
    service: Arc<Service>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let service = service.clone();
        let shutting_down = shutdown.clone();
        tokio::spawn(async move {
            let mut request = vec![0u8; ADMIN_REQUEST_BYTES_MAX];
            let read =
                tokio::time::timeout(ADMIN_REQUEST_READ_TIMEOUT, stream.read(&mut request)).await;
            let Ok(Ok(length)) = read else { return };
            let text = String::from_utf8_lossy(&request[..length]);
            let path = text.split_whitespace().nth(1).unwrap_or("/");
            let (status, content_type, body) = match path {
                "/metrics" => {
                    // Storage reads and the processors' lock: off the async thread.
                    let service = service.clone();
                    match crate::service::control_plane(async move { Ok(render(&service).await) })
                        .await
                    {
                        Ok(body) => ("200 OK", "text/plain; version=0.0.4", body),
                        Err(error) => (
                            "500 Internal Server Error",
                            "text/plain",
                            format!("{}\n", error.message),
                        ),
                    }
                }
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/readyz" if *shutting_down.borrow() => (
                    "503 Service Unavailable",
                    "text/plain",
                    "shutting down\n".to_owned(),
                ),
                "/readyz" => ("200 OK", "text/plain", "ready\n".to_owned()),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics, /healthz or /readyz\n".to_owned(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the admin listener.
pub async fn bind_admin(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
