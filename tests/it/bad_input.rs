//! Bad input gets a clear, typed error; nothing acked is lost; other
//! clients keep being served.

use std::time::Duration;

use bytes::Bytes;
use weir_client::{ErrorCode, Position, PutRecord, PutResult};
use weir_proto::{Request, Response};

use crate::support::{
    TestServer, raw_connection, raw_connection_from, raw_exchange, read_all, read_raw_response,
};

fn record(key: &str, bytes: usize) -> PutRecord {
    PutRecord {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: Bytes::from(vec![7u8; bytes]),
    }
}

fn failed_code(result: &PutResult) -> Option<ErrorCode> {
    match result {
        PutResult::Failed { code, .. } => Some(*code),
        PutResult::Stored { .. } => None,
    }
}

/// Stores `count` good records and returns how many the stream holds.
async fn baseline(test: &TestServer, count: usize) -> usize {
    test.client
        .create_stream("s", 2, Default::default())
        .await
        .expect("create");
    let records = (0..count).map(|i| record(&format!("k{i}"), 100)).collect();
    let results = test
        .client
        .put_records("s", None, records)
        .await
        .expect("put");
    assert!(results.iter().all(|r| failed_code(r).is_none()));
    count
}

async fn assert_all_there(test: &TestServer, expected: usize) {
    let stored: usize = read_all(&test.client, "s")
        .await
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(stored, expected, "acked records lost");
}

#[tokio::test]
async fn bad_records_fail_alone_and_their_neighbours_are_stored() {
    let test = TestServer::start().await;
    let stored = baseline(&test, 10).await;
    let records = vec![
        record("ok-1", 10),
        record("too-big", 1024 * 1024 + 1),
        record("", 10),
        record(&"k".repeat(257), 10),
        record(&"é".repeat(256), 10),
        record("ok-2", 1024 * 1024),
    ];
    let results = test
        .client
        .put_records("s", None, records)
        .await
        .expect("put");
    let codes: Vec<_> = results.iter().map(failed_code).collect();
    assert_eq!(
        codes,
        vec![
            None,
            Some(ErrorCode::RecordTooLarge),
            Some(ErrorCode::InvalidPartitionKey),
            Some(ErrorCode::InvalidPartitionKey),
            None,
            None
        ]
    );
    if let PutResult::Failed { message, .. } = &results[1] {
        assert!(
            message.contains("record_bytes_max"),
            "message names the limit: {message}"
        );
    }
    assert_all_there(&test, stored + 3).await;
}

#[tokio::test]
async fn oversized_batches_and_requests_are_refused_whole() {
    let test = TestServer::start().await;
    let stored = baseline(&test, 10).await;
    let too_many = (0..501).map(|i| record(&format!("k{i}"), 1)).collect();
    let error = test
        .client
        .put_records("s", None, too_many)
        .await
        .expect_err("501 records");
    assert_eq!(error.code(), Some(ErrorCode::InvalidBatchSize));
    assert!(error.to_string().contains("batch_records_max"), "{error}");

    let empty = test
        .client
        .put_records("s", None, Vec::new())
        .await
        .expect_err("0 records");
    assert_eq!(empty.code(), Some(ErrorCode::InvalidBatchSize));

    let mut big: Vec<_> = (0..5)
        .map(|i| record(&format!("k{i}"), 1024 * 1024))
        .collect();
    big.push(record("extra", 100 * 1024));
    let error = test
        .client
        .put_records("s", None, big)
        .await
        .expect_err("over 5 MiB");
    assert_eq!(error.code(), Some(ErrorCode::RequestTooLarge));
    assert_all_there(&test, stored).await;
}

#[tokio::test]
async fn unknown_streams_shards_and_positions_are_typed_errors() {
    let test = TestServer::start().await;
    baseline(&test, 5).await;
    let client = &test.client;
    let error = client
        .put_records("nope", None, vec![record("k", 1)])
        .await
        .expect_err("unknown");
    assert_eq!(error.code(), Some(ErrorCode::StreamNotFound));
    let error = client
        .get_records("nope", 0, Position::TrimHorizon, 10)
        .await
        .expect_err("unknown");
    assert_eq!(error.code(), Some(ErrorCode::StreamNotFound));
    let error = client
        .get_records("s", 9, Position::TrimHorizon, 10)
        .await
        .expect_err("shard");
    assert_eq!(error.code(), Some(ErrorCode::ShardNotFound));
    let error = client
        .get_records("s", 0, Position::AtSequence(1_000), 10)
        .await
        .expect_err("beyond tip");
    assert_eq!(error.code(), Some(ErrorCode::InvalidPosition));
    let error = client
        .get_records("s", 0, Position::TrimHorizon, 0)
        .await
        .expect_err("limit 0");
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
    let error = client
        .create_stream("s", 1, Default::default())
        .await
        .expect_err("exists");
    assert_eq!(error.code(), Some(ErrorCode::StreamExists));
    let error = client
        .create_stream("bad/name", 1, Default::default())
        .await
        .expect_err("name");
    assert_eq!(error.code(), Some(ErrorCode::InvalidStreamName));
    let error = client
        .create_stream("zero", 0, Default::default())
        .await
        .expect_err("shards");
    assert_eq!(error.code(), Some(ErrorCode::InvalidShardCount));
    let error = client.delete_stream("nope").await.expect_err("unknown");
    assert_eq!(error.code(), Some(ErrorCode::StreamNotFound));
    assert_all_there(&test, 5).await;
}

#[tokio::test]
async fn garbage_on_a_quic_stream_gets_an_error_and_the_server_carries_on() {
    let test = TestServer::start().await;
    let stored = baseline(&test, 10).await;
    let raw = raw_connection(test.server.local_addr(), test.server.cert_path()).await;

    let random: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    let cases: Vec<(&str, Vec<u8>, &[ErrorCode])> = vec![
        (
            "random bytes",
            random,
            // InvalidPlugin when the kind byte happens to say AddPlugin
            // (1 run in 256): its length is checked against plugin_bytes_max.
            &[
                ErrorCode::FrameTooLarge,
                ErrorCode::MalformedFrame,
                ErrorCode::UnexpectedMessage,
                ErrorCode::InvalidPlugin,
            ],
        ),
        (
            "truncated frame",
            vec![100, 0, 0, 0, 0x10, 1, 2],
            &[ErrorCode::MalformedFrame],
        ),
        (
            "empty frame",
            vec![0, 0, 0, 0],
            &[ErrorCode::MalformedFrame],
        ),
        (
            "unknown kind",
            vec![1, 0, 0, 0, 0x7e],
            &[ErrorCode::UnexpectedMessage],
        ),
        (
            "huge length",
            vec![0xff, 0xff, 0xff, 0x7f, 0x10],
            &[ErrorCode::FrameTooLarge],
        ),
        (
            "trailing bytes",
            vec![2, 0, 0, 0, 0x03, 0xaa],
            &[ErrorCode::MalformedFrame],
        ),
        (
            "lying count",
            vec![
                12, 0, 0, 0, 0x10, 1, 0, b's', 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0,
            ],
            &[ErrorCode::MalformedFrame],
        ),
    ];
    for (name, bytes, expected) in cases {
        match raw_exchange(&raw, &bytes).await {
            Response::Error { code, message } => {
                assert!(expected.contains(&code), "{name}: got {code:?} ({message})");
                assert!(!message.is_empty(), "{name}: the error says what is wrong");
            }
            other => panic!("{name}: expected an error, got {other:?}"),
        }
    }
    // The same connection still works: a valid request is refused until
    // the connection authenticates, then answered.
    let mut list = bytes::BytesMut::new();
    Request::ListStreams.encode(&mut list);
    match raw_exchange(&raw, &list).await {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthenticated),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    let mut authenticate = bytes::BytesMut::new();
    Request::Authenticate {
        token: test.admin_token(),
    }
    .encode(&mut authenticate);
    assert_eq!(raw_exchange(&raw, &authenticate).await, Response::Ok);
    assert_eq!(
        raw_exchange(&raw, &list).await,
        Response::Streams(vec!["s".into()])
    );
    assert_all_there(&test, stored).await;
}

#[tokio::test]
async fn streams_that_never_send_time_out_without_hurting_others() {
    let test = TestServer::start_with(|config| config.limits.request_read_timeout_ms = 300).await;
    let stored = baseline(&test, 10).await;
    let raw = raw_connection(test.server.local_addr(), test.server.cert_path()).await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        let (mut send, recv) = raw.open_bi().await.expect("open");
        // Two bytes of a length prefix, then nothing, ever.
        send.write_all(&[5, 0]).await.expect("write");
        silent.push((send, recv));
    }
    // Meanwhile a well-behaved client is served at once.
    let other = test.new_client().await;
    let started = std::time::Instant::now();
    let results = other
        .put_records("s", None, vec![record("k", 10)])
        .await
        .expect("served");
    assert!(failed_code(&results[0]).is_none());
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "other clients are not held up"
    );

    for (_send, mut recv) in silent {
        match read_raw_response(&mut recv).await {
            Response::Error { code, message } => {
                assert_eq!(code, ErrorCode::RequestTimeout);
                assert!(message.contains("request_read_timeout_ms"), "{message}");
            }
            other => panic!("expected a timeout error, got {other:?}"),
        }
    }
    assert_all_there(&test, stored + 1).await;
}

/// `storage.shards_max` counts the shards of every stream; a deleted
/// stream's shards make room, and the streams created in their place (on
/// their storage) start empty.
#[tokio::test]
async fn shards_of_all_streams_are_limited_and_freed_by_deletes() {
    let test = TestServer::start_with(|config| config.storage.shards_max = 4).await;
    let client = &test.client;
    client
        .create_stream("a", 3, Default::default())
        .await
        .expect("three shards");
    let error = client
        .create_stream("b", 2, Default::default())
        .await
        .expect_err("five shards");
    assert_eq!(error.code(), Some(ErrorCode::LimitExceeded));
    assert!(
        error
            .to_string()
            .contains("holds 3 of its 4 shards (storage.shards_max)"),
        "{error}"
    );
    let old: Vec<PutRecord> = (0..30).map(|i| record(&format!("old-{i}"), 10)).collect();
    crate::support::put_all(client, "a", old).await;
    client.delete_stream("a").await.expect("delete");

    for name in ["b", "c"] {
        client
            .create_stream(name, 2, Default::default())
            .await
            .expect("room again");
    }
    let new: Vec<PutRecord> = (0..10).map(|i| record(&format!("new-{i}"), 10)).collect();
    crate::support::put_all(client, "b", new).await;
    let keys = |stored: std::collections::HashMap<u32, Vec<weir_client::Record>>| {
        let mut keys: Vec<String> = stored
            .into_values()
            .flatten()
            .map(|record| record.partition_key)
            .collect();
        keys.sort();
        keys
    };
    let mut expected: Vec<String> = (0..10).map(|i| format!("new-{i}")).collect();
    expected.sort();
    assert_eq!(keys(read_all(client, "b").await), expected);
    assert!(keys(read_all(client, "c").await).is_empty());
}

#[tokio::test]
async fn count_limits_are_enforced_with_the_limit_named() {
    let test = TestServer::start_with(|config| {
        config.limits.streams_max = 2;
        config.limits.subscribers_per_shard_max = 2;
        config.limits.connections_max = 3;
    })
    .await;
    let client = &test.client;
    client
        .create_stream("a", 1, Default::default())
        .await
        .expect("first");
    client
        .create_stream("b", 1, Default::default())
        .await
        .expect("second");
    let error = client
        .create_stream("c", 1, Default::default())
        .await
        .expect_err("third");
    assert_eq!(error.code(), Some(ErrorCode::LimitExceeded));
    assert!(error.to_string().contains("streams_max (2)"), "{error}");
    // A processor's output stream counts as well.
    client
        .add_plugin("json-filter", crate::support::plugin("json_filter"))
        .await
        .expect("add plugin");
    let error = client
        .create_processor(crate::support::purchase_filter("purchases", "a"))
        .await
        .expect_err("an output stream past streams_max");
    assert_eq!(error.code(), Some(ErrorCode::LimitExceeded));
    assert!(
        error
            .to_string()
            .contains("streams_max (2) streams, so stream \"purchases.out\" cannot be created"),
        "{error}"
    );
    assert_eq!(client.list_streams().await.expect("list").len(), 2);

    let first = client
        .subscribe("a", 0, Position::Latest)
        .await
        .expect("first");
    let _second = client
        .subscribe("a", 0, Position::Latest)
        .await
        .expect("second");
    let error = client
        .subscribe("a", 0, Position::Latest)
        .await
        .expect_err("third");
    assert_eq!(error.code(), Some(ErrorCode::LimitExceeded));
    assert!(
        error.to_string().contains("subscribers_per_shard_max (2)"),
        "{error}"
    );
    // Closing a subscription frees its place.
    drop(first);
    let freed = crate::support::eventually(Duration::from_secs(5), || async {
        client.subscribe("a", 0, Position::Latest).await.is_ok()
    })
    .await;
    assert!(freed, "a closed subscription still counts");

    // Three connections are allowed (the test's own is one); the fourth is
    // closed with the limit named, and the others keep working.
    let _second_connection = test.new_client().await;
    let _third_connection = test.new_client().await;
    let fourth = weir_client::Client::connect(crate::support::client_config(&test.server)).await;
    let error = match fourth {
        Ok(client) => client
            .list_streams()
            .await
            .expect_err("over connections_max"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("connections_max (3)"), "{error}");
    assert_eq!(client.list_streams().await.expect("still served").len(), 2);
}

#[tokio::test]
async fn one_address_gets_only_its_share_of_connections() {
    let test = TestServer::start_with(|config| config.limits.connections_per_address_max = 2).await;
    let cert = test.server.cert_path();
    let addr = test.server.local_addr();
    // The test's own client is one connection from 127.0.0.1; one more fits.
    let _second = test.new_client().await;
    let third = weir_client::Client::connect(crate::support::client_config(&test.server)).await;
    let error = match third {
        Ok(client) => client
            .list_streams()
            .await
            .expect_err("over connections_per_address_max"),
        Err(error) => error,
    };
    assert!(
        error
            .to_string()
            .contains("connections_per_address_max (2) reached for 127.0.0.1"),
        "{error}"
    );
    // Another address (127.0.0.2 is loopback too) is still let in and
    // answered, and the first address's connections keep working.
    let other_host = raw_connection_from("127.0.0.2:0", addr, cert).await;
    let mut list = bytes::BytesMut::new();
    Request::ListStreams.encode(&mut list);
    match raw_exchange(&other_host, &list).await {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthenticated),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    test.client.list_streams().await.expect("still served");
}

/// Opens a stream on `raw` that declares a frame of `body_bytes` and sends
/// only its first bytes, so the server reserves buffer budget for it.
async fn half_sent_request(
    raw: &quinn::Connection,
    body_bytes: u32,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, recv) = raw.open_bi().await.expect("open");
    let mut start = body_bytes.to_le_bytes().to_vec();
    start.extend_from_slice(&[0x10, 1, 0, b's']);
    send.write_all(&start).await.expect("write");
    (send, recv)
}

#[tokio::test]
async fn a_client_fills_only_its_own_buffer_share() {
    let test = TestServer::start_with(|config| {
        config.limits.connection_buffered_bytes_max = 1_000_000;
        config.limits.server_buffered_bytes_max = 2_000_000;
        // Held requests outlive the waits for their buffer space.
        config.limits.request_read_timeout_ms = 3_000;
        config.limits.buffer_wait_timeout_ms = 500;
    })
    .await;
    let stored = baseline(&test, 5).await;
    let (addr, cert) = (test.server.local_addr(), test.server.cert_path());

    // A greedy client: its first huge request takes most of its share, the
    // second waits for the share and is refused, naming the limit.
    let greedy = raw_connection(addr, cert).await;
    let _first = half_sent_request(&greedy, 900_000).await;
    let (_send, mut second) = half_sent_request(&greedy, 900_000).await;

    // Meanwhile everyone else is served at once.
    let other = test.new_client().await;
    let started = std::time::Instant::now();
    let results = other
        .put_records("s", None, vec![record("k", 1_000)])
        .await
        .expect("served");
    assert!(failed_code(&results[0]).is_none());
    assert!(started.elapsed() < Duration::from_millis(500));
    match read_raw_response(&mut second).await {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::Overloaded);
            assert!(
                message.contains("connection_buffered_bytes_max"),
                "{message}"
            );
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }

    // A second greedy client takes most of what is left of the server's
    // budget: a large request from a third waits, then is refused.
    let greedy_too = raw_connection(addr, cert).await;
    let _held = half_sent_request(&greedy_too, 900_000).await;
    let third = raw_connection(addr, cert).await;
    let (_send, mut large) = half_sent_request(&third, 500_000).await;
    match read_raw_response(&mut large).await {
        Response::Error { code, message } => {
            assert_eq!(code, ErrorCode::Overloaded);
            assert!(message.contains("server_buffered_bytes_max"), "{message}");
            assert!(code.is_retryable());
        }
        other => panic!("expected Overloaded, got {other:?}"),
    }
    assert_all_there(&test, stored + 1).await;
}
