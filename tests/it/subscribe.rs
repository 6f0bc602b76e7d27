//! Subscriptions deliver records committed after they start, in order, and
//! a subscriber that stops reading slows no one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use weir_client::{Position, PutRecord, PutResult, ShardBatch};

use crate::support::TestServer;

fn records(from: usize, count: usize, bytes: usize) -> Vec<PutRecord> {
    (from..from + count)
        .map(|i| PutRecord {
            partition_key: "one-key".into(),
            explicit_hash_key: None,
            data: Bytes::from(format!("{i}:{}", "d".repeat(bytes))),
        })
        .collect()
}

#[tokio::test]
async fn subscribe_delivers_new_records_in_order() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("live", 1, Default::default())
        .await
        .expect("create");
    client
        .put_records("live", None, records(0, 5, 10))
        .await
        .expect("before");

    let mut subscription = client
        .subscribe("live", 0, Position::Latest)
        .await
        .expect("subscribe");
    let producer_client = test.new_client().await;
    let producer = tokio::spawn(async move {
        for round in 0..20 {
            producer_client
                .put_records("live", None, records(5 + round * 10, 10, 10))
                .await
                .expect("put");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut next_index = 5;
    let mut last_sequence = None;
    while next_index < 205 {
        let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("records arrive")
            .expect("batch");
        for record in batch.records {
            let index: usize = String::from_utf8_lossy(&record.data)
                .split(':')
                .next()
                .and_then(|i| i.parse().ok())
                .expect("index");
            assert_eq!(index, next_index, "records out of order or missing");
            assert!(last_sequence < Some(record.sequence));
            last_sequence = Some(record.sequence);
            next_index += 1;
        }
    }
    producer.await.expect("producer");
}

/// Pages over 64 KiB are encoded off the server's async thread and handed
/// to QUIC whole: both reads still return every record, intact, in order.
#[tokio::test]
async fn large_pages_arrive_whole_by_get_records_and_subscribe() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("big", 1, Default::default())
        .await
        .expect("create");
    let sent = records(0, 300, 1024);
    client
        .put_records("big", None, sent.clone())
        .await
        .expect("put");
    let expected: Vec<Bytes> = sent.into_iter().map(|record| record.data).collect();

    let page = client
        .get_records("big", 0, Position::TrimHorizon, 300)
        .await
        .expect("get");
    let got: Vec<Bytes> = page.records.into_iter().map(|r| r.data).collect();
    assert!(got.len() * 1024 > 64 * 1024, "one page over 64 KiB");
    assert_eq!(got, expected);

    let mut subscription = client
        .subscribe("big", 0, Position::TrimHorizon)
        .await
        .expect("subscribe");
    let mut followed = Vec::new();
    while followed.len() < expected.len() {
        let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("records arrive")
            .expect("batch");
        followed.extend(batch.records.into_iter().map(|r| r.data));
    }
    assert_eq!(followed, expected);
}

/// `count` records from `from` over 40 keys, each naming its index.
fn keyed_records(from: usize, count: usize) -> Vec<PutRecord> {
    (from..from + count)
        .map(|i| PutRecord {
            partition_key: format!("key-{}", i % 40),
            explicit_hash_key: None,
            data: Bytes::from(i.to_string()),
        })
        .collect()
}

#[tokio::test]
async fn a_stream_subscription_merges_every_shard_each_in_order() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("merged", 4, Default::default())
        .await
        .expect("create");
    // Where each record was stored, by its index: half before the feed
    // starts (read from the trim horizon), half while it runs.
    let mut stored = HashMap::new();
    let mut put = async |from: usize| {
        let results = client
            .put_records("merged", None, keyed_records(from, 200))
            .await
            .expect("put");
        for (offset, result) in results.into_iter().enumerate() {
            let PutResult::Stored {
                shard, sequence, ..
            } = result
            else {
                panic!("not stored: {result:?}");
            };
            stored.insert(from + offset, (shard, sequence));
        }
    };
    put(0).await;
    let mut feed = client
        .subscribe_stream("merged", Position::TrimHorizon)
        .await
        .expect("subscribe");
    assert_eq!(
        feed.start_sequences().collect::<Vec<_>>(),
        vec![(0, 0), (1, 0), (2, 0), (3, 0)],
        "every shard's feed starts at its trim horizon"
    );
    put(200).await;

    let mut delivered = HashMap::new();
    let mut last_sequence: HashMap<u32, u64> = HashMap::new();
    while delivered.len() < 400 {
        // As a `futures` Stream (StreamExt::next).
        let ShardBatch { shard, batch } =
            tokio::time::timeout(Duration::from_secs(10), StreamExt::next(&mut feed))
                .await
                .expect("records arrive")
                .expect("the feed goes on")
                .expect("a batch");
        for record in batch.records {
            if let Some(last) = last_sequence.insert(shard, record.sequence) {
                assert_eq!(record.sequence, last + 1, "shard {shard} out of order");
            }
            let index: usize = String::from_utf8_lossy(&record.data)
                .parse()
                .expect("index");
            assert!(
                delivered.insert(index, (shard, record.sequence)).is_none(),
                "record {index} delivered twice"
            );
        }
    }
    assert_eq!(
        delivered, stored,
        "every record once, from the shard it was stored in"
    );
    assert_eq!(last_sequence.len(), 4, "40 keys reach all 4 shards");

    // Deleting the stream ends the merged feed: one error, then the end.
    client.delete_stream("merged").await.expect("delete");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut items = Vec::new();
        while let Some(item) = StreamExt::next(&mut feed).await {
            items.push(item);
        }
        items
    })
    .await
    .expect("the feed ends instead of waiting forever");
    let [Err(error)] = &ended[..] else {
        panic!("one error, then the end: {ended:?}");
    };
    assert_eq!(
        error.code(),
        Some(weir_client::ErrorCode::StreamNotFound),
        "{error}"
    );
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_slow_producers() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("busy", 1, Default::default())
        .await
        .expect("create");

    // Subscribers that read one batch and then stop reading.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut subscription = client
            .subscribe("busy", 0, Position::TrimHorizon)
            .await
            .expect("subscribe");
        client
            .put_records("busy", None, records(0, 1, 10))
            .await
            .expect("put");
        subscription.next().await.expect("first batch");
        stalled.push(subscription);
    }

    // 40 MB flows past them: far more than any flow-control window.
    let started = Instant::now();
    let mut latencies = Vec::new();
    for round in 0..100 {
        let sent = Instant::now();
        client
            .put_records("busy", None, records(round * 100, 100, 4_000))
            .await
            .expect("put");
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "producing took {:?} with stalled subscribers",
        started.elapsed()
    );
    assert!(p50 < Duration::from_millis(200), "median put took {p50:?}");
    // The stalled subscribers can still catch up afterwards.
    let batch = stalled[0].next().await.expect("resume");
    assert!(!batch.records.is_empty());
}

#[tokio::test]
async fn deleting_a_stream_ends_its_subscriptions() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("doomed", 1, Default::default())
        .await
        .expect("create");
    let mut subscription = client
        .subscribe("doomed", 0, Position::Latest)
        .await
        .expect("subscribe");
    client.delete_stream("doomed").await.expect("delete");
    let ended = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("the subscription ends instead of waiting forever");
    let error = ended.expect_err("an error, not records");
    assert_eq!(
        error.code(),
        Some(weir_client::ErrorCode::StreamNotFound),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_times_out_leaves_the_connection_and_its_subscriptions_alone() {
    let test = TestServer::start().await;
    crate::support::stream_with_plugins(&test.client, "live", 1, &[("misbehaving", "misbehaving")])
        .await;
    let mut config = crate::support::client_config(&test.server);
    config.request_timeout = Duration::from_millis(400);
    let impatient = weir_client::Client::connect(config).await.expect("connect");
    let mut subscription = impatient
        .subscribe("live", 0, Position::Latest)
        .await
        .expect("subscribe");

    // Creating a processor whose init spins a second outlasts the timeout.
    let slow =
        crate::support::processor_settings("slow", "misbehaving", "live", &[("mode", "slow-init")]);
    let error = impatient
        .admin(weir_client::admin::AdminRequest::CreateProcessor(Box::new(
            slow,
        )))
        .await
        .expect_err("times out");
    assert!(error.to_string().contains("request_timeout"), "{error}");

    // The subscription on the same connection still delivers.
    test.client
        .put_records("live", None, records(0, 1, 3))
        .await
        .expect("put");
    let batch = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .expect("delivered")
        .expect("subscription alive");
    assert_eq!(batch.records.len(), 1);
    impatient
        .list_streams()
        .await
        .expect("the client still works");
}
