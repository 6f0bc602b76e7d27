//! The Kinesis Data Streams API, tested with the real clients: the Python
//! suite in tests/kinesis drives boto3, the AWS CLI and botocore's SigV4
//! signer (with cbor2 for the Java SDK's CBOR) against `weir serve`
//! processes it starts on 127.0.0.1:0. This test makes the venv those
//! clients live in (pinned in tests/kinesis/requirements.txt, installed
//! from PyPI once per target directory) and runs the suite.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use weir::aws::client::{Connection, Target};
use weir::storage::CatalogKind;

use crate::support::{
    TestServer, create_processor, eventually, go_program, node_modules, purchase_filter, read_all,
    stream_with_plugins, venv,
};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kinesis")
}

#[test]
fn boto3_the_aws_cli_and_cbor_clients_work_against_weir() {
    let venv = venv("kinesis-venv", &suite_dir().join("requirements.txt"));
    let bin = venv.join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new(bin.join("python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(suite_dir())
        .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir-under-test"))
        .env("PATH", path)
        .status()
        .expect("run pytest");
    assert!(
        status.success(),
        "the Kinesis API suite failed (its output is above)"
    );
}

/// The AWS SDK for JavaScript v3, unchanged (pinned in
/// tests/kinesis/js/package.json): tests/kinesis/js/check.cjs creates a
/// stream, puts, reads back every iterator page, checks error classes and
/// SigV4 refusals, and subscribes to each shard over HTTP/2.
#[tokio::test]
async fn the_aws_sdk_for_javascript_works_against_weir() {
    let check = suite_dir().join("js");
    let node_modules = node_modules("kinesis-js-npm", &check.join("package.json"));
    let mut node = Command::new("node");
    node.arg(check.join("check.cjs"))
        .env("NODE_PATH", node_modules);
    passes_against_weir(node, "JavaScript").await;
}

/// Runs an SDK's check program against a new server's Kinesis API (its
/// endpoint and a token's key and secret in the environment) and asserts
/// that every check passed.
async fn passes_against_weir(mut check: Command, sdk: &str) {
    let test = TestServer::start().await;
    let target = test.kinesis_target();
    check
        .env(
            "WEIR_KINESIS_ENDPOINT",
            format!("http://{}", target.authority),
        )
        .env("AWS_ACCESS_KEY_ID", &target.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &target.secret);
    // The server runs on this test's runtime: wait for the check off it.
    let output = tokio::task::spawn_blocking(move || check.output())
        .await
        .expect("join")
        .expect("run the check");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("ok: 11 records"),
        "the {sdk} SDK check failed:\n{stdout}\n{stderr}"
    );
}

/// The AWS SDKs for Go, v1 (the SDK of Fluent Bit's Go Kinesis plugin) and
/// v2, as Debian packages them, unchanged: tests/kinesis/go/sdk-v*/check.go
/// create a stream (waiting with the SDK's own waiter), put, read back
/// every iterator page, check error codes and SigV4 refusals, and
/// subscribe to each shard.
#[tokio::test]
async fn the_aws_sdk_for_go_works_against_weir() {
    go_sdk_passes("sdk-v1", "Go").await;
}

#[tokio::test]
async fn the_aws_sdk_for_go_v2_works_against_weir() {
    go_sdk_passes("sdk-v2", "Go v2").await;
}

async fn go_sdk_passes(dir: &'static str, sdk: &str) {
    let program =
        tokio::task::spawn_blocking(move || go_program(&suite_dir().join("go").join(dir)))
            .await
            .expect("build the Go check");
    passes_against_weir(Command::new(program), sdk).await;
}

/// Records put through the Kinesis API are Weir records like any other:
/// a processor filters them, and its output is readable over QUIC.
#[tokio::test]
async fn processors_run_over_records_put_through_the_kinesis_api() {
    let test = TestServer::start().await;
    let client = &test.client;
    stream_with_plugins(client, "clicks", 2, &[("json-filter", "json_filter")]).await;
    create_processor(client, purchase_filter("buys", "clicks")).await;
    let target = test.kinesis_target();
    let mut connection = Connection::open(&target).await.expect("connect");
    let records: Vec<serde_json::Value> = (0..30)
        .map(|i| {
            let event = if i % 3 == 0 { "purchase" } else { "view" };
            let data = format!(r#"{{"event":"{event}","i":{i}}}"#);
            serde_json::json!({
                "Data": base64::engine::general_purpose::STANDARD.encode(data),
                "PartitionKey": format!("user-{}", i % 5),
            })
        })
        .collect();
    let request = serde_json::json!({"StreamName": "clicks", "Records": records});
    let (status, body) = connection
        .call("PutRecords", &request.to_string())
        .await
        .expect("PutRecords");
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["FailedRecordCount"], 0, "{answer}");

    let all_out = || async {
        read_all(client, "buys.out")
            .await
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 10
    };
    assert!(
        eventually(Duration::from_secs(30), all_out).await,
        "the processor passed the 10 purchases"
    );
    for records in read_all(client, "buys.out").await.values() {
        for record in records {
            let text = String::from_utf8_lossy(&record.data);
            assert!(text.contains("purchase"), "{text}");
        }
    }

    // A wrong secret is refused before anything is stored.
    let forged = Target {
        secret: "not the secret".into(),
        ..target
    };
    let mut connection = Connection::open(&forged).await.expect("connect");
    let (status, body) = connection
        .call("PutRecords", &request.to_string())
        .await
        .expect("an answer");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("InvalidSignatureException"));
    let stored: usize = read_all(client, "clicks")
        .await
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(stored, 30);
}

/// Records damaged on disk do not stop a Kinesis consumer, which has no
/// way to step past them: it gets the records before them, an answer that
/// moves its iterator past them, then the rest.
#[tokio::test]
async fn a_kinesis_consumer_reads_on_past_records_damaged_on_disk() {
    let test = TestServer::start().await;
    crate::support::stream_of_three_chunks(&test.client, "worn", |n| {
        format!("{}-{}", n / 10, n % 10)
    })
    .await;
    let test = test
        .restart_after(crate::support::damage_the_middle_of_the_first_segment)
        .await;
    let mut connection = Connection::open(&test.kinesis_target())
        .await
        .expect("connect");
    let mut call = async |operation: &str, request: serde_json::Value| {
        let (status, body) = connection
            .call(operation, &request.to_string())
            .await
            .expect(operation);
        let answer: serde_json::Value = serde_json::from_slice(&body).expect("JSON answer");
        assert_eq!(status, 200, "{operation}: {answer}");
        answer
    };
    let answer = call(
        "GetShardIterator",
        serde_json::json!({"StreamName": "worn", "ShardId": "shardId-000000000000",
            "ShardIteratorType": "TRIM_HORIZON"}),
    )
    .await;
    let mut iterator = answer["ShardIterator"].clone();
    let mut read = Vec::new();
    for _ in 0..5 {
        let answer = call("GetRecords", serde_json::json!({"ShardIterator": iterator})).await;
        for record in answer["Records"].as_array().expect("records") {
            let data = record["Data"].as_str().expect("data");
            let data = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64");
            read.push(String::from_utf8(data).expect("text"));
        }
        iterator = answer["NextShardIterator"].clone();
    }
    let expected: Vec<String> = [0, 2]
        .iter()
        .flat_map(|batch| (0..10).map(move |i| format!("{batch}-{i}")))
        .collect();
    assert_eq!(
        read, expected,
        "every record but the damaged chunk's, in order"
    );
}

/// A stream's Kinesis consumers and tags go with it: deleting the stream
/// leaves none of its catalog records behind.
#[tokio::test]
async fn deleting_a_stream_removes_its_consumers_and_tags() {
    let test = TestServer::start().await;
    let target = test.kinesis_target();
    let mut connection = Connection::open(&target).await.expect("connect");
    let mut call = async |operation: &str, body: serde_json::Value| {
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
    };
    call(
        "CreateStream",
        serde_json::json!({"StreamName": "s", "ShardCount": 1}),
    )
    .await;
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/s";
    call(
        "RegisterStreamConsumer",
        serde_json::json!({"StreamARN": arn, "ConsumerName": "app"}),
    )
    .await;
    call(
        "AddTagsToStream",
        serde_json::json!({"StreamName": "s", "Tags": {"team": "edge"}}),
    )
    .await;
    let storage = test.server.storage().clone();
    let stream_id = storage.stream("s").expect("stream").id;
    let records_of_stream = || {
        [CatalogKind::KinesisConsumer, CatalogKind::KinesisTags]
            .iter()
            .map(|kind| {
                storage
                    .catalog()
                    .list(*kind, &format!("{stream_id}/"))
                    .expect("read the catalog")
                    .len()
            })
            .sum::<usize>()
    };
    assert_eq!(records_of_stream(), 2);
    call("DeleteStream", serde_json::json!({"StreamName": "s"})).await;
    assert_eq!(records_of_stream(), 0);
}

/// Sends one small unsigned request on a new connection and reads the
/// whole answer (the server closes a refused connection after it).
async fn raw_request(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        b"POST / HTTP/1.1\r\nHost: weir\r\nX-Amz-Target: Kinesis_20131202.ListStreams\r\n\
          Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// An HTTP/2 connection that asks nothing is closed (GOAWAY, then the
/// socket) after `limits.connection_idle_timeout_ms`, as idle HTTP/1.1
/// ones are by the header read timeout: idle clients cannot keep
/// `connections_max` places forever, nor can one that stops answering.
#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let test = TestServer::start_with(|config| {
        config.limits.connection_idle_timeout_ms = 500;
        // How long the graceful close waits for a PING answer, which this
        // client never gives.
        config.limits.request_read_timeout_ms = 1000;
    })
    .await;
    let addr = test.server.kinesis_addr().expect("the Kinesis API is on");
    let mut h2 = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The client preface and an empty SETTINGS frame (prior knowledge).
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("preface");
    let opened = std::time::Instant::now();
    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 1024];
        loop {
            match h2.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection is still open after 10 s; received {received:?}"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(400),
        "closed before the idle timeout: {:?}",
        opened.elapsed()
    );
    // Frames: 3 bytes length, 1 byte type (7 is GOAWAY), 1 flags, 4 stream.
    let mut frames = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        frames.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    assert!(
        frames.contains(&7),
        "no GOAWAY among frame types {frames:?}"
    );
}

/// One host cannot take every HTTP connection: past
/// `kinesis.connections_per_address_max` its requests are answered with a
/// LimitExceededException naming the setting, and a freed slot serves again.
#[tokio::test]
async fn one_address_cannot_take_every_http_connection() {
    let test = TestServer::start_with(|config| {
        config.kinesis.connections_per_address_max = 2;
    })
    .await;
    let addr = test.server.kinesis_addr().expect("the Kinesis API is on");
    let first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _second = tokio::net::TcpStream::connect(addr).await.expect("connect");

    let refused = raw_request(addr).await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(
        refused.contains("x-amzn-errortype: LimitExceededException")
            && refused.contains("kinesis.connections_per_address_max (2) reached for 127.0.0.1"),
        "{refused}"
    );

    drop(first);
    let served = std::sync::Mutex::new(String::new());
    let freed = eventually(Duration::from_secs(5), || async {
        let answer = raw_request(addr).await;
        let refused = answer.contains("LimitExceededException");
        *served.lock().expect("lock") = answer;
        !refused
    })
    .await;
    let served = served.into_inner().expect("lock");
    assert!(freed, "the freed slot serves again: {served}");
    assert!(
        served.contains("MissingAuthenticationTokenException"),
        "served as usual (an unsigned request): {served}"
    );
}
