//! Sinks against a real NATS JetStream (nats-server processes on
//! loopback, started and stopped by PID): every record Weir acked reaches
//! JetStream exactly once, in order per shard, through a stream leader
//! killed mid-run, Weir SIGKILLed mid-run and the whole cluster stopped for
//! a while. Checks count records by content against what Weir acked.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use weir_client::admin::{AdminRequest, AdminResponse, SinkInfo, SinkSettings};
use weir_client::{Client, ErrorCode, Position, PutRecord};

use crate::metrics::{http_get, metric};
use crate::support::{
    ServerProcess, TestServer, create_processor, eventually, purchase_filter, put_all,
    stream_with_plugins, trimmed_to,
};
use crate::upstreams::{Kinesalite, NatsCluster, S3, Tansu, TlsFiles, TlsProxy, free_port};

/// What a JetStream stream lets publishers do, and so how a sink sends.
#[derive(Clone, Copy)]
enum Publishing {
    /// Plain publishes only: one record at a time, each conditional.
    Plain,
    /// `allow_atomic`: one atomic batch at a time.
    Atomic,
    /// `allow_batched` (and atomic): fast-ingest batches, streamed.
    Fast,
}

/// Creates JetStream stream `name` over `subjects`, retrying while a cold
/// cluster elects its meta leader.
async fn create_jetstream_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &str,
    replicas: usize,
    publishing: Publishing,
) {
    let config = stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        num_replicas: replicas,
        allow_atomic_publish: !matches!(publishing, Publishing::Plain),
        allow_batch_publish: matches!(publishing, Publishing::Fast),
        ..Default::default()
    };
    let created = eventually(Duration::from_secs(30), || async {
        js.create_stream(config.clone()).await.is_ok()
    })
    .await;
    assert!(created, "JetStream stream {name} could not be created");
}

async fn messages_in(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    }
}

/// One forwarded message: its subject and the Weir headers that matter.
struct Forwarded {
    subject: String,
    weir_sequence: u64,
    weir_stream: String,
    partition_key: String,
    msg_id: String,
    data: String,
}

/// Every message of JetStream stream `name`, in stream order.
async fn read_jetstream(js: &jetstream::Context, name: &str) -> Vec<Forwarded> {
    let expected = messages_in(js, name).await;
    let stream = js.get_stream(name).await.expect("the JetStream stream");
    let ordered = stream
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer");
    let mut messages = ordered.messages().await.expect("messages");
    let mut forwarded = Vec::new();
    while (forwarded.len() as u64) < expected {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("JetStream delivers every stored message")
            .expect("a message")
            .expect("no delivery error");
        let headers = message.headers.clone().unwrap_or_default();
        let header = |name: &str| {
            headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        forwarded.push(Forwarded {
            subject: message.subject.to_string(),
            weir_sequence: header("Weir-Sequence").parse().expect("Weir-Sequence"),
            weir_stream: header("Weir-Stream"),
            partition_key: header("Weir-Partition-Key"),
            msg_id: header("Nats-Msg-Id"),
            data: String::from_utf8_lossy(&message.payload).into_owned(),
        });
    }
    forwarded
}

/// Checks `forwarded` holds each of `acked` exactly once and nothing else,
/// and that each subject's records are its shard's in sequence order with
/// no gap.
fn assert_exactly_once_in_order(forwarded: &[Forwarded], acked: &HashSet<String>) {
    let mut seen = HashSet::new();
    for message in forwarded {
        assert!(
            seen.insert(message.data.clone()),
            "{} reached JetStream twice",
            message.data
        );
        assert!(
            acked.contains(&message.data),
            "{} was never acked",
            message.data
        );
    }
    let missing: Vec<&String> = acked.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acked records never reached JetStream, e.g. {missing:?}",
        acked.len() - seen.len()
    );
    let mut by_subject: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for message in forwarded {
        by_subject
            .entry(&message.subject)
            .or_default()
            .push(message.weir_sequence);
    }
    for (subject, sequences) in by_subject {
        let expected: Vec<u64> = (sequences[0]..sequences[0] + sequences.len() as u64).collect();
        assert_eq!(sequences, expected, "{subject}: shard order kept, no gaps");
    }
}

async fn create_sink(
    client: &Client,
    settings: SinkSettings,
) -> Result<SinkInfo, weir_client::ClientError> {
    match client
        .admin(AdminRequest::CreateSink(Box::new(settings)))
        .await?
    {
        AdminResponse::Sink(info) => Ok(*info),
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn describe_sink(client: &Client, name: &str) -> SinkInfo {
    match client
        .admin(AdminRequest::DescribeSink { name: name.into() })
        .await
        .expect("describe sink")
    {
        AdminResponse::Sink(info) => *info,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Puts records `r{i}` (64 bytes each, partition key `k{i % 50}`) for
/// each `i` in `range` and returns their contents, all acked.
async fn put_range(client: &Client, stream: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let records: Vec<PutRecord> = range
        .map(|i| PutRecord {
            partition_key: format!("k{}", i % 50),
            explicit_hash_key: None,
            data: bytes::Bytes::from(format!("r{i:<62}")),
        })
        .collect();
    let contents = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    for chunk in records.chunks(500) {
        put_all(client, stream, chunk.to_vec()).await;
    }
    contents
}

fn sink_settings(name: &str, source: &str, to: String) -> SinkSettings {
    SinkSettings {
        name: name.into(),
        source: source.into(),
        to,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_forwards_exactly_once_through_leader_loss_weir_crashes_and_cluster_outages() {
    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let js = jetstream::new(cluster.client().await);
    create_jetstream_stream(&js, "EDGE", "edge.>", 3, Publishing::Fast).await;

    let data = tempfile::tempdir().expect("temp dir");
    let mut weir = ServerProcess::spawn(data.path(), &[]);
    let mut client = weir.connect().await;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create stream");
    let settings = SinkSettings {
        // Small batches and a bandwidth cap keep forwarding going while
        // the faults below land.
        batch_records: Some(100),
        bytes_per_sec: Some(100_000),
        ..sink_settings(
            "north",
            "clicks",
            format!("nats://{}/edge", cluster.servers()),
        )
    };
    create_sink(&client, settings).await.expect("create sink");
    let mut acked: HashSet<String> = HashSet::new();

    // The stream leader dies while records are being forwarded.
    acked.extend(put_range(&client, "clicks", 0..2_000).await);
    assert!(
        eventually(Duration::from_secs(20), || async {
            messages_in(&js, "EDGE").await >= 200
        })
        .await,
        "forwarding started"
    );
    let leader = js
        .get_stream("EDGE")
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .cluster
        .clone()
        .and_then(|cluster| cluster.leader)
        .expect("the stream has a leader");
    let leader = cluster.index_of(&leader);
    cluster.kill(leader);

    // Weir is SIGKILLed while it forwards, and restarted.
    acked.extend(put_range(&client, "clicks", 2_000..4_000).await);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let info = describe_sink(&client, "north").await;
    assert!(
        info.shards.iter().any(|shard| shard.lag_records > 0),
        "Weir is killed mid-run: {info:?}"
    );
    weir.kill();
    tokio::task::block_in_place(|| cluster.restart(leader));
    weir = ServerProcess::spawn(data.path(), &[]);
    client = weir.connect().await;

    // The whole cluster is down for a while: records wait in Weir, and
    // describe says the sink is backing off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill_all();
    acked.extend(put_range(&client, "clicks", 4_000..6_000).await);
    let backing_off = eventually(Duration::from_secs(30), || async {
        let info = describe_sink(&client, "north").await;
        info.shards.iter().all(|shard| {
            shard.status == "backing off" && shard.last_error.is_some() && shard.lag_records > 0
        })
    })
    .await;
    assert!(backing_off, "{:?}", describe_sink(&client, "north").await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.restart_all());

    assert!(
        eventually(Duration::from_secs(120), || drained(&client, "north")).await,
        "{:?}",
        describe_sink(&client, "north").await
    );
    let info = describe_sink(&client, "north").await;
    assert!(
        info.shards
            .iter()
            .all(|shard| shard.status == "forwarding" && shard.last_ack_ms.is_some()),
        "{info:?}"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            messages_in(&js, "EDGE").await >= acked.len() as u64
        })
        .await
    );
    let forwarded = read_jetstream(&js, "EDGE").await;
    assert_exactly_once_in_order(&forwarded, &acked);
    for message in &forwarded {
        assert_eq!(message.weir_stream, "clicks");
        // Also in atomic batches: JetStream's dedup window sees every id.
        assert!(
            message.msg_id.starts_with("weir:")
                && message
                    .msg_id
                    .ends_with(&format!(":{}", message.weir_sequence)),
            "{}",
            message.msg_id
        );
    }
}

/// A sink whose NATS server is not there says so: its shards back off
/// with "not connected to NATS at ..." as their last error, not only the
/// request time-out an unreachable server looks like to a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_sink_without_its_server_says_it_is_not_connected() {
    let test = TestServer::start_with(|config| config.sinks.sink_request_timeout_ms = 300).await;
    let client = &test.client;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create");
    put_range(client, "clicks", 0..10).await;
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let to = format!("nats://127.0.0.1:{port}/up");
    create_sink(client, sink_settings("lost", "clicks", to))
        .await
        .expect("create sink");
    let says = format!("not connected to NATS at nats://127.0.0.1:{port}");
    let explained = eventually(Duration::from_secs(20), || async {
        describe_sink(client, "lost")
            .await
            .shards
            .iter()
            .all(|shard| {
                shard.status == "backing off"
                    && shard
                        .last_error
                        .as_deref()
                        .is_some_and(|e| e.contains(&says))
            })
    })
    .await;
    assert!(explained, "{:?}", describe_sink(client, "lost").await);
}

/// Mutual TLS to NATS: a TLS-only nats-server (presenting the box's own
/// certificate, which names 127.0.0.1) that requires client certificates
/// signed by it. A sink trusting that certificate but presenting none
/// forwards nothing; one presenting it (`--client-cert`, `--client-key`)
/// delivers every record once, in order. Bad client-certificate settings
/// are refused at create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_sink_forwards_over_mutual_tls_with_the_certificates_it_is_given() {
    let test = TestServer::start().await;
    let client = &test.client;
    let cert = weir::tls::generated_cert_path(test.data_dir());
    let key = test.data_dir().join("tls").join("key.pem");
    let tls = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    };
    let cluster = tokio::task::block_in_place(|| NatsCluster::start_mutual_tls(1, tls));
    let js = jetstream::new(cluster.client().await);
    create_jetstream_stream(&js, "UP", "up.>", 1, Publishing::Atomic).await;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create");
    let to = format!("nats+tls://{}/up", cluster.servers());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());

    for (settings, says) in [
        (
            SinkSettings {
                client_cert_file: Some(cert.clone()),
                ..sink_settings("bad", "clicks", to.clone())
            },
            "--client-cert and --client-key go together",
        ),
        (
            SinkSettings {
                client_cert_file: Some(cert.clone()),
                client_key_file: Some(key.clone()),
                ..sink_settings("bad", "clicks", format!("nats://{}/up", cluster.servers()))
            },
            "--client-cert is for TLS upstreams",
        ),
        (
            SinkSettings {
                client_cert_file: Some(key.clone()),
                client_key_file: Some(key.clone()),
                ..sink_settings("bad", "clicks", to.clone())
            },
            "no CERTIFICATE block",
        ),
    ] {
        let error = create_sink(client, settings).await.expect_err("refused");
        assert!(error.to_string().contains(says), "{error}");
    }

    let mut acked = HashSet::new();
    let records: Vec<PutRecord> = (0..200)
        .map(|i| {
            acked.insert(format!("r{i}"));
            PutRecord {
                partition_key: format!("k{}", i % 20),
                explicit_hash_key: None,
                data: format!("r{i}").into(),
            }
        })
        .collect();
    put_all(client, "clicks", records).await;
    // The server refuses a client without a certificate.
    let anonymous = SinkSettings {
        ca_file: Some(cert.clone()),
        ..sink_settings("anonymous", "clicks", to.clone())
    };
    assert_refused_then_delete(client, anonymous, |_| true).await;
    assert_eq!(messages_in(&js, "UP").await, 0);

    let identified = SinkSettings {
        ca_file: Some(cert.clone()),
        client_cert_file: Some(cert),
        client_key_file: Some(key),
        ..sink_settings("up", "clicks", to)
    };
    create_sink(client, identified).await.expect("create sink");
    let arrived = eventually(Duration::from_secs(30), || async {
        messages_in(&js, "UP").await >= 200
    })
    .await;
    assert!(arrived, "{:?}", describe_sink(client, "up").await);
    assert_exactly_once_in_order(&read_jetstream(&js, "UP").await, &acked);
}

/// filter → forward: a processor's output stream feeds a sink; the sink
/// waits (and says why) until a JetStream stream takes its subjects; a
/// stream without atomic batches gets records one at a time, still once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_output_forwards_once_the_jetstream_stream_exists() {
    let cluster = tokio::task::block_in_place(|| NatsCluster::start(1));
    let js = jetstream::new(cluster.client().await);
    let test = TestServer::start().await;
    let client = &test.client;
    stream_with_plugins(client, "clicks", 2, &[("json-filter", "json_filter")]).await;
    create_processor(client, purchase_filter("buys", "clicks")).await;
    create_sink(
        client,
        sink_settings("up", "buys.out", format!("nats://{}/up", cluster.servers())),
    )
    .await
    .expect("create sink");

    let mut purchases = HashSet::new();
    let records: Vec<PutRecord> = (0..100)
        .map(|i| {
            let event = if i % 2 == 0 { "purchase" } else { "view" };
            let data = format!(r#"{{"event":"{event}","n":{i}}}"#);
            if i % 2 == 0 {
                purchases.insert(data.clone());
            }
            PutRecord {
                partition_key: format!("user{i}"),
                explicit_hash_key: None,
                data: data.into(),
            }
        })
        .collect();
    put_all(client, "clicks", records).await;

    let waiting = eventually(Duration::from_secs(20), || async {
        describe_sink(client, "up")
            .await
            .shards
            .iter()
            .any(|shard| {
                shard
                    .last_error
                    .as_deref()
                    .is_some_and(|error| error.contains("no JetStream stream stores subject up."))
            })
    })
    .await;
    assert!(waiting, "{:?}", describe_sink(client, "up").await);
    let admin = test.server.admin_addr().expect("admin listener");
    let (_, body) = http_get(admin, "/metrics").await;
    assert_eq!(
        metric(&body, "weir_sink_backing_off{sink=\"up\",shard=\"0\"}"),
        1
    );

    create_jetstream_stream(&js, "UP", "up.>", 1, Publishing::Plain).await;
    let arrived = eventually(Duration::from_secs(30), || async {
        messages_in(&js, "UP").await >= 50
    })
    .await;
    assert!(arrived, "{:?}", describe_sink(client, "up").await);
    let forwarded = read_jetstream(&js, "UP").await;
    assert_exactly_once_in_order(&forwarded, &purchases);
    assert!(
        forwarded
            .iter()
            .all(|m| m.weir_stream == "buys.out" && m.partition_key.starts_with("user"))
    );
    let (_, body) = http_get(admin, "/metrics").await;
    let forwarded_total: u64 = (0..2)
        .map(|shard| {
            metric(
                &body,
                &format!("weir_sink_records_forwarded_total{{sink=\"up\",shard=\"{shard}\"}}"),
            )
        })
        .sum();
    assert_eq!(forwarded_total, 50);
}

/// Bad sink requests get typed errors; a sink's stream cannot be deleted
/// under it; pause, resume and rm work; a password never shows back.
#[tokio::test]
async fn sink_requests_are_checked_and_sinks_can_be_paused_resumed_and_removed() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("clicks", 1, Default::default())
        .await
        .expect("create stream");
    // Nothing listens there: the sink backs off, which is all this needs.
    let to = "nats://weir:hunter2@127.0.0.1:1/edge".to_owned();
    let cases = [
        (
            sink_settings("s", "clicks", "127.0.0.1:4222/x".into()),
            ErrorCode::InvalidArgument,
            "no scheme",
        ),
        (
            sink_settings("s", "clicks", "nats://h:1/a.>".into()),
            ErrorCode::InvalidArgument,
            "no wildcards",
        ),
        (
            sink_settings("s", "nope", to.clone()),
            ErrorCode::StreamNotFound,
            "nope",
        ),
        (
            sink_settings("bad name!", "clicks", to.clone()),
            ErrorCode::InvalidArgument,
            "sink",
        ),
        (
            SinkSettings {
                batch_records: Some(5_000),
                ..sink_settings("s", "clicks", to.clone())
            },
            ErrorCode::InvalidArgument,
            "sink_batch_records_max",
        ),
        (
            SinkSettings {
                credentials_file: Some("/nonexistent/nats.creds".into()),
                ..sink_settings("s", "clicks", to.clone())
            },
            ErrorCode::InvalidArgument,
            "credentials file",
        ),
    ];
    for (settings, code, says) in cases {
        let error = create_sink(client, settings.clone())
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some(code), "{settings:?}: {error}");
        assert!(error.to_string().contains(says), "{error}");
    }

    let info = create_sink(client, sink_settings("s", "clicks", to.clone()))
        .await
        .expect("create sink");
    assert_eq!(info.settings.to, "nats://weir:***@127.0.0.1:1/edge");
    let again = create_sink(client, sink_settings("s", "clicks", to.clone()))
        .await
        .expect_err("a second sink named s");
    assert_eq!(again.code(), Some(ErrorCode::AlreadyExists));

    let in_use = client.delete_stream("clicks").await.expect_err("in use");
    assert_eq!(in_use.code(), Some(ErrorCode::StreamInUse));
    assert!(
        in_use.to_string().contains("`weir sink delete s`"),
        "{in_use}"
    );

    client
        .admin(AdminRequest::PauseSink { name: "s".into() })
        .await
        .expect("pause");
    let paused = describe_sink(client, "s").await;
    assert!(paused.paused && paused.shards.iter().all(|s| s.status == "paused"));
    client
        .admin(AdminRequest::ResumeSink { name: "s".into() })
        .await
        .expect("resume");
    assert!(!describe_sink(client, "s").await.paused);
    let listed = match client.admin(AdminRequest::ListSinks).await.expect("list") {
        AdminResponse::Sinks(list) => list,
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}").contains("hunter2"));

    client
        .admin(AdminRequest::DeleteSink { name: "s".into() })
        .await
        .expect("rm");
    let gone = client
        .admin(AdminRequest::DescribeSink { name: "s".into() })
        .await
        .expect_err("removed");
    assert_eq!(gone.code(), Some(ErrorCode::SinkNotFound));
    client
        .delete_stream("clicks")
        .await
        .expect("no longer in use");
}

/// One Kinesis API call that must succeed; its JSON answer.
async fn kinesis_call(
    target: &weir::aws::client::Target,
    operation: &str,
    body: serde_json::Value,
) -> serde_json::Value {
    let mut connection = weir::aws::client::Connection::open(target)
        .await
        .expect("connect to the Kinesis API");
    let (status, answer) = connection
        .call(operation, &body.to_string())
        .await
        .expect("an answer");
    assert_eq!(
        status,
        200,
        "{operation}: {}",
        String::from_utf8_lossy(&answer)
    );
    // Some servers answer CreateStream with an empty body.
    if answer.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&answer).expect("JSON")
}

/// Every record of a Kinesis stream as (partition key, data), read with
/// GetRecords from each shard's trim horizon.
async fn kinesis_read_all(
    target: &weir::aws::client::Target,
    stream: &str,
) -> Vec<(String, String)> {
    use base64::Engine;
    let shards = kinesis_call(
        target,
        "ListShards",
        serde_json::json!({"StreamName": stream}),
    )
    .await;
    let mut records = Vec::new();
    for shard in shards["Shards"].as_array().expect("shards") {
        let iterator = kinesis_call(
            target,
            "GetShardIterator",
            serde_json::json!({
                "StreamName": stream,
                "ShardId": shard["ShardId"],
                "ShardIteratorType": "TRIM_HORIZON",
            }),
        )
        .await;
        let mut iterator = iterator["ShardIterator"].clone();
        loop {
            let page = kinesis_call(
                target,
                "GetRecords",
                serde_json::json!({"ShardIterator": iterator, "Limit": 10000}),
            )
            .await;
            let got = page["Records"].as_array().expect("records");
            for record in got {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(record["Data"].as_str().expect("data"))
                    .expect("base64");
                records.push((
                    record["PartitionKey"].as_str().expect("key").to_owned(),
                    String::from_utf8(data).expect("UTF-8"),
                ));
            }
            if got.is_empty() {
                break;
            }
            iterator = page["NextShardIterator"].clone();
        }
    }
    records
}

/// A Weir process with a sink that was SIGKILLed mid-run and restarted,
/// and has since forwarded everything acked.
struct CrashRun {
    client: Client,
    acked: HashSet<String>,
    _weir: ServerProcess,
    _data: tempfile::TempDir,
}

/// Starts Weir with a 2-shard `clicks` stream and the sink `settings`
/// (slowed to 100 kB/s in batches of 100, so the kill lands mid-run), puts
/// 2 000 records, SIGKILLs Weir while the sink forwards, restarts it, puts
/// 1 000 more and waits until the sink has no lag.
async fn forward_across_a_weir_crash(settings: SinkSettings) -> CrashRun {
    let name = settings.name.clone();
    let data = tempfile::tempdir().expect("temp dir");
    let mut weir = ServerProcess::spawn(data.path(), &[]);
    let mut client = weir.connect().await;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create stream");
    let settings = SinkSettings {
        batch_records: Some(100),
        bytes_per_sec: Some(100_000),
        ..settings
    };
    create_sink(&client, settings).await.expect("create sink");

    let mut acked: HashSet<String> = put_range(&client, "clicks", 0..2_000)
        .await
        .into_iter()
        .collect();
    let started = eventually(Duration::from_secs(20), || async {
        describe_sink(&client, &name)
            .await
            .shards
            .iter()
            .any(|shard| shard.records_forwarded > 0)
    })
    .await;
    assert!(started, "{:?}", describe_sink(&client, &name).await);
    let info = describe_sink(&client, &name).await;
    assert!(
        info.shards.iter().any(|s| s.lag_records > 0),
        "killed mid-run: {info:?}"
    );
    weir.kill();
    weir = ServerProcess::spawn(data.path(), &[]);
    client = weir.connect().await;
    acked.extend(put_range(&client, "clicks", 2_000..3_000).await);
    assert!(
        eventually(Duration::from_secs(60), || drained(&client, &name)).await,
        "{:?}",
        describe_sink(&client, &name).await
    );
    CrashRun {
        client,
        acked,
        _weir: weir,
        _data: data,
    }
}

/// Creates sink `settings`, which its upstream must refuse: waits until
/// every shard shows an error that `refusal` accepts, checks that nothing
/// was forwarded, and deletes the sink.
async fn assert_refused_then_delete(
    client: &Client,
    settings: SinkSettings,
    refusal: impl Fn(&str) -> bool,
) {
    let name = settings.name.clone();
    create_sink(client, settings).await.expect("create sink");
    let refused = eventually(Duration::from_secs(20), || async {
        describe_sink(client, &name)
            .await
            .shards
            .iter()
            .all(|shard| shard.last_error.as_deref().is_some_and(&refusal))
    })
    .await;
    let info = describe_sink(client, &name).await;
    assert!(refused, "the upstream refuses sink {name}: {info:?}");
    assert!(
        info.shards.iter().all(|shard| shard.cursor == 0),
        "nothing forwarded: {info:?}"
    );
    client
        .admin(AdminRequest::DeleteSink { name })
        .await
        .expect("delete sink");
}

/// Whether every shard of sink `name` has forwarded all it holds.
async fn drained(client: &Client, name: &str) -> bool {
    describe_sink(client, name)
        .await
        .shards
        .iter()
        .all(|shard| shard.lag_records == 0)
}

/// Forwards to the Kinesis API at `upstream` (stream `central`, made
/// here) across a SIGKILL of Weir: every acked record arrives, with its
/// partition key; duplicates are allowed (at least once) and counted.
async fn forward_to_kinesis_across_a_crash(
    upstream: &weir::aws::client::Target,
    credentials_file: Option<String>,
    tls_ca_file: Option<String>,
) {
    kinesis_call(
        upstream,
        "CreateStream",
        serde_json::json!({"StreamName": "central", "ShardCount": 2}),
    )
    .await;
    // Over TLS by name, as to AWS: the certificate must name `localhost`.
    let to = match &tls_ca_file {
        Some(_) => format!("kinesis+https://localhost:{}/central", upstream.addr.port()),
        None => format!("kinesis://{}/central", upstream.addr),
    };
    let settings = SinkSettings {
        credentials_file,
        ca_file: tls_ca_file,
        ..sink_settings("south", "clicks", to)
    };
    let run = forward_across_a_weir_crash(settings).await;
    let acked = &run.acked;

    let forwarded = kinesis_read_all(upstream, "central").await;
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for (key, data) in &forwarded {
        assert!(acked.contains(data), "{data} was never acked");
        let index: usize = data[1..].trim().parse().expect("r{i}");
        assert_eq!(key, &format!("k{}", index % 50), "partition key kept");
        if !seen.insert(data.clone()) {
            duplicates += 1;
        }
    }
    assert_eq!(
        seen.len(),
        acked.len(),
        "every acked record reached Kinesis"
    );
    println!(
        "kinesis sink: {} records, {duplicates} sent again after the crash",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinesis_sink_forwards_to_kinesalite_without_loss_across_a_crash() {
    let kinesalite = tokio::task::block_in_place(Kinesalite::start);
    let upstream =
        weir::aws::client::Target::plain(kinesalite.addr, "any".into(), "any".into(), "us-east-1");
    forward_to_kinesis_across_a_crash(&upstream, None, None).await;
}

/// Writes `target`'s keys into `dir` as an AWS credentials file (as `weir
/// token aws-credentials` prints them) and returns its path.
fn write_credentials(dir: &std::path::Path, target: &weir::aws::client::Target) -> String {
    let path = dir.join("sink.credentials");
    std::fs::write(
        &path,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            target.access_key, target.secret
        ),
    )
    .expect("write credentials");
    path.display().to_string()
}

/// `server`'s own Kinesis API as an upstream, with a one-shard stream
/// `central` made there: the target and a credentials file for it.
async fn kinesis_central(server: &TestServer) -> (weir::aws::client::Target, String) {
    let upstream = server.kinesis_target();
    kinesis_call(
        &upstream,
        "CreateStream",
        serde_json::json!({"StreamName": "central", "ShardCount": 1}),
    )
    .await;
    let credentials = write_credentials(server.data_dir(), &upstream);
    (upstream, credentials)
}

/// Box to box: the upstream is another Weir's Kinesis API, which checks
/// the sink's signature (credentials from a file, as `weir token
/// aws-credentials` prints them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinesis_sink_forwards_to_another_weir_with_signed_requests() {
    let central = TestServer::start().await;
    let upstream = central.kinesis_target();
    let credentials = write_credentials(central.data_dir(), &upstream);
    forward_to_kinesis_across_a_crash(&upstream, Some(credentials), None).await;
}

/// The same over TLS (`kinesis+https://`), trusting the other box's
/// certificate from `--ca-file`; a sink trusting another certificate gets
/// nowhere and says why; a CA file for a plain URL, or one that holds no
/// certificate, is refused at create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kinesis_sink_forwards_over_tls_to_the_certificate_it_trusts() {
    let central = TestServer::start().await;
    let upstream = central.kinesis_target();
    let credentials = write_credentials(central.data_dir(), &upstream);
    let central_cert = weir::tls::generated_cert_path(central.data_dir());

    // A box that trusts only its own certificate.
    let other = TestServer::start().await;
    let own_cert = weir::tls::generated_cert_path(other.data_dir());
    other
        .client
        .create_stream("clicks", 1, Default::default())
        .await
        .expect("create");
    other
        .client
        .put_records(
            "clicks",
            None,
            vec![PutRecord {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: "r0".into(),
            }],
        )
        .await
        .expect("put");
    let to = format!("kinesis+https://localhost:{}/central", upstream.addr.port());
    let untrusting = SinkSettings {
        credentials_file: Some(credentials.clone()),
        ca_file: Some(own_cert.display().to_string()),
        ..sink_settings("wary", "clicks", to.clone())
    };
    other
        .client
        .admin(AdminRequest::CreateSink(Box::new(untrusting)))
        .await
        .expect("create sink");
    let refused = eventually(Duration::from_secs(10), || async {
        describe_sink(&other.client, "wary").await.shards[0]
            .last_error
            .as_deref()
            .is_some_and(|error| error.contains("certificate"))
    })
    .await;
    let info = describe_sink(&other.client, "wary").await;
    assert!(refused, "the handshake fails on the certificate: {info:?}");
    assert_eq!(info.shards[0].cursor, 0, "nothing forwarded");

    for (to, ca_file, says) in [
        (
            format!("kinesis://{}/central", upstream.addr),
            central_cert.display().to_string(),
            "--ca-file is for TLS upstreams",
        ),
        (to.clone(), credentials.clone(), "no CERTIFICATE block"),
        (
            to.clone(),
            "/nonexistent/ca.pem".into(),
            "/nonexistent/ca.pem",
        ),
    ] {
        let settings = SinkSettings {
            ca_file: Some(ca_file),
            ..sink_settings("bad", "clicks", to)
        };
        let error = other
            .client
            .admin(AdminRequest::CreateSink(Box::new(settings)))
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(says), "{error}");
    }
    drop(other);

    forward_to_kinesis_across_a_crash(
        &upstream,
        Some(credentials),
        Some(central_cert.display().to_string()),
    )
    .await;
}

/// One forwarded Kafka record: where it landed and what it says.
struct KafkaForwarded {
    partition: i32,
    key: String,
    data: String,
    shard: String,
    sequence: u64,
}

/// How the test reaches a Kafka broker: where, and over TLS or not.
struct KafkaAccess {
    bootstrap: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl KafkaAccess {
    fn plain(tansu: &Tansu) -> Self {
        Self {
            bootstrap: format!("127.0.0.1:{}", tansu.port),
            tls: None,
        }
    }
}

async fn kafka_client(access: &KafkaAccess) -> rskafka::client::Client {
    let mut builder = rskafka::client::ClientBuilder::new(vec![access.bootstrap.clone()]);
    if let Some(tls) = &access.tls {
        builder = builder.tls_config(tls.clone());
    }
    builder.build().await.expect("connect to the broker")
}

async fn create_kafka_topic(access: &KafkaAccess, topic: &str, partitions: i32) {
    let client = kafka_client(access).await;
    let controller = client.controller_client().expect("a controller client");
    controller
        .create_topic(topic, partitions, 1, 5_000)
        .await
        .expect("create the topic");
}

/// Every record of every partition of `topic`, in offset order.
async fn read_kafka_topic(
    access: &KafkaAccess,
    topic: &str,
    partitions: i32,
) -> Vec<KafkaForwarded> {
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    let client = kafka_client(access).await;
    let mut forwarded = Vec::new();
    for partition in 0..partitions {
        let reader = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .expect("a partition client");
        let end = reader
            .get_offset(OffsetAt::Latest)
            .await
            .expect("high watermark");
        let mut offset = reader
            .get_offset(OffsetAt::Earliest)
            .await
            .expect("low watermark");
        while offset < end {
            let (records, _) = reader
                .fetch_records(offset, 1..4_000_000, 1_000)
                .await
                .expect("fetch");
            for record in records {
                offset = record.offset + 1;
                let header = |name: &str| {
                    String::from_utf8(record.record.headers.get(name).cloned().unwrap_or_default())
                        .expect("UTF-8 header")
                };
                forwarded.push(KafkaForwarded {
                    partition,
                    key: String::from_utf8(record.record.key.clone().unwrap_or_default())
                        .expect("UTF-8 key"),
                    data: String::from_utf8(record.record.value.clone().unwrap_or_default())
                        .expect("UTF-8 value"),
                    shard: header("weir-shard"),
                    sequence: header("weir-sequence").parse().expect("weir-sequence"),
                });
            }
        }
    }
    forwarded
}

/// Checks every one of `acked` is in `forwarded` (the tail read on resume
/// keeps a lost ack or a crash from repeating a batch), keys kept, each
/// partition holding its shard's records in order. A record may arrive
/// twice only where SINKS.md says Kafka allows it: a produce still in
/// the broker's hands when Weir was killed, stored after the restarted
/// sink read the partition's tail — one batch per partition and crash,
/// `resent_max` records at most. Returns how many arrived twice.
fn assert_kafka_once_each(
    forwarded: &[KafkaForwarded],
    acked: &HashSet<String>,
    resent_max: usize,
) -> usize {
    let mut seen = HashSet::new();
    let mut resent = 0;
    let mut first_sequences: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
    for record in forwarded {
        assert!(
            acked.contains(&record.data),
            "{} was never acked",
            record.data
        );
        let index: usize = record.data[1..].trim().parse().expect("r{i}");
        assert_eq!(
            record.key,
            format!("k{}", index % 50),
            "the partition key is the Kafka key"
        );
        assert_eq!(
            record.shard,
            record.partition.to_string(),
            "shard N goes to partition N"
        );
        if seen.insert(record.data.clone()) {
            first_sequences
                .entry(record.partition)
                .or_default()
                .push(record.sequence);
        } else {
            resent += 1;
        }
    }
    assert_eq!(seen.len(), acked.len(), "every acked record reached Kafka");
    assert!(
        resent <= resent_max,
        "{resent} records reached Kafka twice (at most {resent_max} allowed)"
    );
    for (partition, sequences) in first_sequences {
        assert!(
            sequences.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "partition {partition} in order"
        );
    }
    resent
}

/// Kafka through a Weir crash and a broker crash. Tansu keeps its log in
/// S3 (moto), so what it acknowledged before it was killed is there again
/// when it starts: the topic must end up holding every record Weir acked
/// exactly once, in order — those in flight when the broker died, and
/// those put while it was down, included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sink_forwards_across_a_weir_crash_and_a_broker_crash() {
    let s3 = tokio::task::block_in_place(S3::start);
    let mut tansu = tokio::task::block_in_place(|| Tansu::start_on(&s3));
    let kafka = KafkaAccess::plain(&tansu);
    create_kafka_topic(&kafka, "events", 2).await;
    let settings = sink_settings(
        "west",
        "clicks",
        format!("kafka://127.0.0.1:{}/events", tansu.port),
    );
    let run = forward_across_a_weir_crash(settings).await;
    let client = &run.client;
    let mut acked = run.acked.clone();
    // One batch of 100 records per partition may be resent after the kill.
    let resent = assert_kafka_once_each(&read_kafka_topic(&kafka, "events", 2).await, &acked, 200);

    let forwarded =
        |info: &SinkInfo| -> u64 { info.shards.iter().map(|s| s.records_forwarded).sum() };
    let before = forwarded(&describe_sink(client, "west").await);
    acked.extend(put_range(client, "clicks", 3_000..5_000).await);
    let moving = eventually(Duration::from_secs(20), || async {
        forwarded(&describe_sink(client, "west").await) > before
    })
    .await;
    let info = describe_sink(client, "west").await;
    assert!(
        moving && info.shards.iter().any(|s| s.lag_records > 0),
        "killed mid-run: {info:?}"
    );
    tansu.kill();
    acked.extend(put_range(client, "clicks", 5_000..5_500).await);
    let backing_off = eventually(Duration::from_secs(30), || async {
        describe_sink(client, "west")
            .await
            .shards
            .iter()
            .all(|shard| shard.status == "backing off" && shard.lag_records > 0)
    })
    .await;
    assert!(backing_off, "{:?}", describe_sink(client, "west").await);

    tokio::task::block_in_place(|| tansu.restart());
    assert!(
        eventually(Duration::from_secs(60), || drained(client, "west")).await,
        "{:?}",
        describe_sink(client, "west").await
    );
    // A broker killed loses what it never acknowledged, or keeps it and
    // the tail read skips it: nothing more arrives twice.
    assert_eq!(
        assert_kafka_once_each(&read_kafka_topic(&kafka, "events", 2).await, &acked, 200),
        resent
    );
}

/// A Kafka sink over mutual TLS: Tansu behind a TLS-terminating proxy
/// that presents the box's own certificate, requires a client certificate
/// it signed, and is what the broker advertises. With only the system's
/// trust store the handshake fails and nothing moves; trusting that
/// certificate (`ca_file`) and presenting it (`client_cert_file`,
/// `client_key_file`), every record arrives once, in order per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_sink_forwards_over_mutual_tls_with_the_certificates_it_is_given() {
    let test = TestServer::start().await;
    let client = &test.client;
    let cert = weir::tls::generated_cert_path(test.data_dir());
    let tls = TlsFiles {
        cert: cert.clone(),
        key: test.data_dir().join("tls").join("key.pem"),
    };
    let broker_port = free_port();
    let proxy = TlsProxy::start_mutual(&tls, broker_port).await;
    let _tansu = tokio::task::block_in_place(|| Tansu::start_advertising(broker_port, proxy.port));
    let identity = weir::tls::ClientIdentity::read(&tls.cert, &tls.key).expect("identity");
    let access = KafkaAccess {
        bootstrap: format!("localhost:{}", proxy.port),
        tls: Some(std::sync::Arc::new(
            weir::tls::client_config(Some(&cert), Some(identity), &[]).expect("TLS config"),
        )),
    };
    create_kafka_topic(&access, "secure", 2).await;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create");
    let acked: HashSet<String> = put_range(client, "clicks", 0..300)
        .await
        .into_iter()
        .collect();
    let to = format!("kafka+tls://localhost:{}/secure", proxy.port);

    assert_refused_then_delete(
        client,
        sink_settings("wary", "clicks", to.clone()),
        |error| error.contains("certificate"),
    )
    .await;

    // Trusting the proxy, but presenting no certificate: refused.
    let anonymous = SinkSettings {
        ca_file: Some(cert.display().to_string()),
        ..sink_settings("anonymous", "clicks", to.clone())
    };
    assert_refused_then_delete(client, anonymous, |_| true).await;

    let trusting = SinkSettings {
        ca_file: Some(cert.display().to_string()),
        client_cert_file: Some(cert.display().to_string()),
        client_key_file: Some(tls.key.display().to_string()),
        ..sink_settings("secure", "clicks", to)
    };
    create_sink(client, trusting).await.expect("create sink");
    assert!(
        eventually(Duration::from_secs(30), || drained(client, "secure")).await,
        "{:?}",
        describe_sink(client, "secure").await
    );
    assert_kafka_once_each(&read_kafka_topic(&access, "secure", 2).await, &acked, 0);
}

/// The sinks' threads (the `weir-sinks` runtime and its blocking pool)
/// run at a lower priority than the rest of the server, so a drain yields
/// the cores to acks.
#[test]
fn sink_threads_run_below_the_servers_priority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::spawn(dir.path(), &[]);
    let tasks = std::path::PathBuf::from(format!("/proc/{}/task", server.pid()));
    let nice_of = |name: &str| -> Vec<i64> {
        std::fs::read_dir(&tasks)
            .expect("the server's threads")
            .filter_map(Result::ok)
            .filter(|task| {
                std::fs::read_to_string(task.path().join("comm"))
                    .is_ok_and(|comm| comm.trim() == name)
            })
            .map(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
                // Fields after the command's closing parenthesis; nice is
                // the 19th field of the line, the 17th after it.
                let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
                    .split(' ')
                    .collect();
                fields[16].parse().expect("nice")
            })
            .collect()
    };
    // The thread lowers its own priority as it starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nice_of("weir-sinks") != [10] && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(nice_of("weir-sinks"), [10], "the sinks' thread");
    assert_eq!(
        nice_of("weir-storage-bg").len(),
        1,
        "the storage thread is there"
    );
    assert!(
        nice_of("weir-storage-bg").iter().all(|nice| *nice == 0),
        "the rest of the server at normal priority"
    );
}

/// Records the disk damaged are skipped by a sink, which says which and
/// forwards the rest, instead of retrying the damaged chunk forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_skips_records_damaged_on_disk_and_says_which() {
    let central = TestServer::start().await;
    let (upstream, credentials) = kinesis_central(&central).await;

    let edge = TestServer::start().await;
    crate::support::stream_of_three_chunks(&edge.client, "worn", |n| format!("r{n}")).await;
    let edge = edge
        .restart_after(crate::support::damage_the_middle_of_the_first_segment)
        .await;
    let settings = SinkSettings {
        credentials_file: Some(credentials),
        ..sink_settings("s", "worn", format!("kinesis://{}/central", upstream.addr))
    };
    edge.client
        .admin(AdminRequest::CreateSink(Box::new(settings)))
        .await
        .expect("create sink");
    let caught_up = eventually(Duration::from_secs(20), || async {
        describe_sink(&edge.client, "s").await.shards[0].cursor == 30
    })
    .await;
    let shard = &describe_sink(&edge.client, "s").await.shards[0];
    assert!(caught_up, "the sink went past the damage: {shard:?}");
    assert_eq!(
        shard.last_error.as_deref(),
        Some("records 10 to 19 were damaged on disk and skipped unforwarded")
    );
    let mut forwarded: Vec<String> = kinesis_read_all(&upstream, "central")
        .await
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    forwarded.sort();
    let mut expected: Vec<String> = (0..10).chain(20..30).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(forwarded, expected);
}

/// A sink waiting (its upstream down) at records the disk damaged can
/// still be described, and its metrics are still served.
#[tokio::test]
async fn a_sink_waiting_at_damaged_records_is_still_described() {
    let edge = TestServer::start().await;
    crate::support::stream_of_three_chunks(&edge.client, "worn", |n| format!("r{n}")).await;
    // Nothing listens on port 1: the sink backs off at its first record.
    let settings = sink_settings("stuck", "worn", "nats://127.0.0.1:1/edge".into());
    edge.client
        .admin(AdminRequest::CreateSink(Box::new(settings)))
        .await
        .expect("create sink");
    let edge = edge
        .restart_after(|dir| {
            // A bit flipped in the first chunk, where the sink waits.
            let segment = crate::support::first_segment(dir);
            let mut bytes = std::fs::read(&segment).expect("segment");
            bytes[10] ^= 1;
            std::fs::write(&segment, &bytes).expect("damage");
        })
        .await;
    let shard = &describe_sink(&edge.client, "stuck").await.shards[0];
    assert_eq!((shard.cursor, shard.lag_records), (0, 30), "{shard:?}");
    let admin = edge.server.admin_addr().expect("admin listener");
    let (_, metrics) = crate::metrics::http_get(admin, "/metrics").await;
    assert!(
        metrics.contains("weir_sink_lag_records{sink=\"stuck\",shard=\"0\"} 30"),
        "{metrics}"
    );
}

/// Records a paused sink never forwarded are removed by retention: when it
/// resumes it says how many it lost and forwards what is left (here to the
/// same box's own Kinesis API, signed).
#[tokio::test]
async fn a_sink_behind_retention_reports_the_loss_and_forwards_the_rest() {
    let test =
        TestServer::start_with(|config| config.storage.retention_check_interval_ms = 100).await;
    let client = &test.client;
    let (upstream, credentials) = kinesis_central(&test).await;
    let retention = weir_client::Retention {
        age_ms: Some(3_000),
        bytes: None,
    };
    client
        .create_stream("brief", 1, retention)
        .await
        .expect("create");
    let settings = SinkSettings {
        credentials_file: Some(credentials),
        ..sink_settings("s", "brief", format!("kinesis://{}/central", upstream.addr))
    };
    client
        .admin(AdminRequest::CreateSink(Box::new(settings)))
        .await
        .expect("create sink");
    client
        .admin(AdminRequest::PauseSink { name: "s".into() })
        .await
        .expect("pause");

    let records = |prefix: &str, n: usize| -> Vec<PutRecord> {
        (0..n)
            .map(|i| PutRecord {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: format!("{prefix}{i}").into(),
            })
            .collect()
    };
    client
        .put_records("brief", None, records("old", 30))
        .await
        .expect("put old");
    // The lag is exact: every partition key and data byte not forwarded.
    let waiting = &describe_sink(client, "s").await.shards[0];
    let bytes: usize = (0..30)
        .map(|i| format!("k{i}").len() + format!("old{i}").len())
        .sum();
    assert_eq!((waiting.lag_records, waiting.lag_bytes), (30, bytes as u64));
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    client
        .put_records("brief", None, records("new", 4))
        .await
        .expect("put new");
    let trimmed = trimmed_to(client, "brief", 30).await;
    assert!(trimmed, "retention did not remove the old records");

    client
        .admin(AdminRequest::ResumeSink { name: "s".into() })
        .await
        .expect("resume");
    let describe = || async {
        match client
            .admin(AdminRequest::DescribeSink { name: "s".into() })
            .await
            .expect("describe sink")
        {
            AdminResponse::Sink(info) => info,
            other => panic!("unexpected answer: {other:?}"),
        }
    };
    let forwarded = eventually(Duration::from_secs(10), || async {
        describe().await.shards[0].cursor == 34
    })
    .await;
    let info = describe().await;
    assert!(forwarded, "the sink went on from what is left: {info:?}");
    assert_eq!(
        info.shards[0].last_error.as_deref(),
        Some("retention removed 30 records before they were forwarded")
    );
    let central: Vec<String> = kinesis_read_all(&upstream, "central")
        .await
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(central, ["new0", "new1", "new2", "new3"]);
}

async fn seek_sink(
    client: &Client,
    name: &str,
    to: Position,
    shard: Option<u32>,
) -> Result<SinkInfo, weir_client::ClientError> {
    match client
        .admin(AdminRequest::SeekSink {
            name: name.into(),
            to,
            shard,
        })
        .await?
    {
        AdminResponse::Sink(info) => Ok(*info),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// `sink seek` moves a sink's cursor: forward, and a backlog is never
/// forwarded; back, and a Kinesis upstream gets the records again (at
/// least once). A shard the stream lacks is refused.
#[tokio::test]
async fn seek_moves_a_sinks_cursor_past_a_backlog_and_back() {
    let test = TestServer::start().await;
    let client = &test.client;
    let (upstream, credentials) = kinesis_central(&test).await;
    let settings = SinkSettings {
        credentials_file: Some(credentials),
        ..sink_settings("s", "edge", format!("kinesis://{}/central", upstream.addr))
    };
    client
        .create_stream("edge", 1, Default::default())
        .await
        .expect("create");
    let put = |prefix: &'static str, n: usize| async move {
        let records = (0..n)
            .map(|i| PutRecord {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: format!("{prefix}{i}").into(),
            })
            .collect();
        put_all(client, "edge", records).await;
    };
    put("first", 3).await;
    create_sink(client, settings).await.expect("create sink");
    let at = |cursor: u64| async move {
        eventually(Duration::from_secs(20), || async {
            describe_sink(client, "s").await.shards[0].cursor == cursor
        })
        .await
    };
    assert!(at(3).await, "{:?}", describe_sink(client, "s").await);

    client
        .admin(AdminRequest::PauseSink { name: "s".into() })
        .await
        .expect("pause");
    put("backlog", 5).await;
    let info = seek_sink(client, "s", Position::Latest, None)
        .await
        .expect("seek past the backlog");
    assert_eq!(
        (
            info.paused,
            info.shards[0].cursor,
            info.shards[0].lag_records
        ),
        (true, 8, 0),
        "{info:?}"
    );
    for (to, shard, code) in [
        (Position::TrimHorizon, Some(1), ErrorCode::ShardNotFound),
        (Position::AfterSequence(8), None, ErrorCode::InvalidPosition),
    ] {
        let error = seek_sink(client, "s", to, shard)
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some(code), "{error}");
    }
    let error = seek_sink(client, "nope", Position::Latest, None)
        .await
        .expect_err("no such sink");
    assert_eq!(error.code(), Some(ErrorCode::SinkNotFound), "{error}");
    client
        .admin(AdminRequest::ResumeSink { name: "s".into() })
        .await
        .expect("resume");
    put("after", 1).await;
    assert!(at(9).await, "{:?}", describe_sink(client, "s").await);
    let central = || async {
        let mut data: Vec<String> = kinesis_read_all(&upstream, "central")
            .await
            .into_iter()
            .map(|(_, data)| data)
            .collect();
        data.sort();
        data
    };
    assert_eq!(central().await, ["after0", "first0", "first1", "first2"]);

    // Back to the start of a running sink: all nine again.
    seek_sink(client, "s", Position::TrimHorizon, Some(0))
        .await
        .expect("seek back");
    let twice = eventually(Duration::from_secs(20), || async {
        central().await.len() == 13
    })
    .await;
    let forwarded = central().await;
    assert!(twice, "{forwarded:?}");
    assert_eq!(
        forwarded
            .iter()
            .filter(|d| d.starts_with("backlog"))
            .count(),
        5
    );
}

/// A sink into this box's own Kinesis API that would feed its own source
/// (straight back, or through processors and other such sinks) is
/// refused with the loop named, and so is a processor that would close
/// a loop through one.
#[tokio::test]
async fn loops_through_the_boxs_own_kinesis_api_are_refused() {
    let test = TestServer::start().await;
    let client = &test.client;
    let (upstream, credentials) = kinesis_central(&test).await;
    stream_with_plugins(client, "edge", 1, &[("json-filter", "json_filter")]).await;
    let sink = |name: &str, from: &str, to: String| SinkSettings {
        credentials_file: Some(credentials.clone()),
        ..sink_settings(name, from, to)
    };
    let own = |stream: &str| format!("kinesis://{}/{stream}", upstream.addr);
    let refusal = |error: weir_client::ClientError| {
        assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
        error.to_string()
    };

    let error = create_sink(client, sink("echo", "central", own("central")))
        .await
        .expect_err("straight back");
    assert!(
        refusal(error).contains("would feed its own source: central -> central (sink echo);"),
        "names the loop"
    );
    create_sink(client, sink("up", "edge", own("central")))
        .await
        .expect("edge -> central closes no loop");
    let localhost = format!("kinesis://localhost:{}/edge", upstream.addr.port());
    let error = create_sink(client, sink("down", "central", localhost))
        .await
        .expect_err("back through localhost");
    assert!(
        refusal(error).contains("central -> edge (sink down) -> central (sink up)"),
        "names the loop"
    );
    let back = weir_client::admin::ProcessorSettings {
        output: Some("edge".into()),
        ..crate::support::purchase_filter("back", "central")
    };
    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(back)))
        .await
        .expect_err("a processor closing the loop");
    assert!(
        refusal(error).contains("central -> edge (back) -> central (sink up)"),
        "names the loop"
    );
    // Another box's API on another port is not this box.
    let elsewhere = format!("kinesis://127.0.0.1:{}/edge", free_port());
    create_sink(client, sink("away", "central", elsewhere))
        .await
        .expect("not this box");
}

/// Moving a JetStream sink's cursor back sends nothing twice: the sink
/// asks JetStream where it stands and goes on after what it holds, and
/// its forwarded count does not count those records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_sink_moved_back_keeps_exactly_once() {
    let cluster = tokio::task::block_in_place(|| NatsCluster::start(1));
    let js = jetstream::new(cluster.client().await);
    create_jetstream_stream(&js, "UP", "up.>", 1, Publishing::Fast).await;
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create");
    let acked: HashSet<String> = put_range(client, "clicks", 0..100)
        .await
        .into_iter()
        .collect();
    create_sink(
        client,
        sink_settings("up", "clicks", format!("nats://{}/up", cluster.servers())),
    )
    .await
    .expect("create sink");
    let forwarded = |sink: SinkInfo| -> u64 {
        sink.shards
            .iter()
            .map(|shard| shard.records_forwarded)
            .sum()
    };
    let all_in = eventually(Duration::from_secs(30), || async {
        drained(client, "up").await && messages_in(&js, "UP").await == 100
    })
    .await;
    assert!(all_in, "{:?}", describe_sink(client, "up").await);
    assert_eq!(forwarded(describe_sink(client, "up").await), 100);

    seek_sink(client, "up", Position::TrimHorizon, None)
        .await
        .expect("seek back");
    let resumed = eventually(Duration::from_secs(30), || async {
        drained(client, "up").await
    })
    .await;
    assert!(resumed, "{:?}", describe_sink(client, "up").await);
    // Still in JetStream once each, and counted once.
    assert_eq!(messages_in(&js, "UP").await, 100);
    assert_exactly_once_in_order(&read_jetstream(&js, "UP").await, &acked);
    assert_eq!(forwarded(describe_sink(client, "up").await), 100);
}
