//! Records go in through QUIC and come back exactly once, byte for byte, in
//! order, each in the shard its hash range names.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use weir_client::{ProducerConfig, ProducerStamp, PutRecord, PutResult};

use crate::support::{TestServer, put_all, read_all, stored_before};

fn record_data(i: usize) -> Bytes {
    // Varied sizes and binary content, with the index embedded to identify it.
    let mut data = format!("record-{i}:").into_bytes();
    data.extend((0..(i * 37) % 3000).map(|j| (i + j) as u8));
    Bytes::from(data)
}

async fn stored_count(client: &weir_client::Client, stream: &str) -> usize {
    read_all(client, stream).await.values().map(Vec::len).sum()
}

#[tokio::test]
async fn many_keys_into_four_shards_come_back_exactly_once_in_order() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("clicks", 4, Default::default())
        .await
        .expect("create");

    let producer = client.producer("clicks", ProducerConfig::default());
    let count = 5_000;
    let mut acks = Vec::new();
    for i in 0..count {
        let key = format!("user-{}", i % 997);
        acks.push((
            i,
            key.clone(),
            producer.send(key, record_data(i)).await.expect("send"),
        ));
    }
    let mut acked = HashMap::new();
    for (i, key, ack) in acks {
        let ack = ack.await.expect("acked");
        assert!(!ack.duplicate, "nothing was retried: {ack:?}");
        acked.insert((ack.shard, ack.sequence), (i, key));
    }
    assert_eq!(
        acked.len(),
        count,
        "every ack names a distinct (shard, sequence)"
    );

    let description = client.describe_stream("clicks").await.expect("describe");
    let all = read_all(client, "clicks").await;
    let mut seen = vec![false; count];
    for shard in &description.shards {
        let records = &all[&shard.shard];
        assert_eq!(
            records.len() as u64,
            shard.records,
            "describe agrees with the shard's contents"
        );
        for pair in records.windows(2) {
            assert!(
                pair[0].sequence < pair[1].sequence,
                "shard {} out of order",
                shard.shard
            );
        }
        for record in records {
            let hash = weir_proto::routing::hash_key(&record.partition_key);
            assert!(
                (shard.hash_key_start..=shard.hash_key_end).contains(&hash),
                "record with key {} in the wrong shard {}",
                record.partition_key,
                shard.shard
            );
            let (i, key) = &acked[&(shard.shard, record.sequence)];
            assert_eq!(&record.partition_key, key);
            assert_eq!(record.data, record_data(*i), "record {i} changed");
            assert!(!seen[*i], "record {i} read twice");
            seen[*i] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "some records were not read back");
}

#[tokio::test]
async fn explicit_hash_key_overrides_the_partition_key() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("routed", 4, Default::default())
        .await
        .expect("create");
    let records = (0..4u128)
        .map(|shard| PutRecord {
            partition_key: "same-key".into(),
            explicit_hash_key: Some(shard << 126),
            data: Bytes::from_static(b"x"),
        })
        .collect();
    let results = client
        .put_records("routed", None, records)
        .await
        .expect("put");
    let shards: Vec<u32> = results
        .iter()
        .map(|r| match r {
            PutResult::Stored { shard, .. } => *shard,
            PutResult::Failed { message, .. } => panic!("failed: {message}"),
        })
        .collect();
    assert_eq!(shards, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn a_retried_batch_is_not_stored_twice() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("dedup", 2, Default::default())
        .await
        .expect("create");
    let stamp = ProducerStamp {
        producer_id: 42,
        batch_sequence: 7,
    };
    let batch: Vec<PutRecord> = (0..50)
        .map(|i| PutRecord {
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            data: Bytes::from(format!("v{i}")),
        })
        .collect();
    let first = client
        .put_records("dedup", Some(stamp), batch.clone())
        .await
        .expect("put");
    assert!(
        first.iter().all(|r| matches!(
            r,
            PutResult::Stored {
                duplicate: false,
                ..
            }
        )),
        "a first send is stored, not a duplicate: {first:?}"
    );
    // The ack was "lost": the producer sends the same stamped batch again.
    let retry = client
        .put_records("dedup", Some(stamp), batch.clone())
        .await
        .expect("retry");
    assert_eq!(
        retry,
        stored_before(&first),
        "a retry is answered with the original sequence numbers, marked as stored before"
    );
    let next = ProducerStamp {
        batch_sequence: 8,
        ..stamp
    };
    client
        .put_records("dedup", Some(next), batch)
        .await
        .expect("next batch");
    let stored: usize = read_all(client, "dedup").await.values().map(Vec::len).sum();
    assert_eq!(
        stored, 100,
        "two distinct batches of 50, the retry added nothing"
    );
}

#[tokio::test]
async fn buffered_mode_acks_and_keeps_records_across_a_clean_restart() {
    let test =
        TestServer::start_with(|config| config.storage.durability = weir::Durability::Buffered)
            .await;
    test.client
        .create_stream("fast", 2, Default::default())
        .await
        .expect("create");
    let records: Vec<PutRecord> = (0..300)
        .map(|i| PutRecord {
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            data: record_data(i),
        })
        .collect();
    put_all(&test.client, "fast", records).await;

    let test = test.restart().await;
    assert_eq!(stored_count(&test.client, "fast").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memtables_stay_within_write_buffer_bytes_max() {
    const BUDGET: u64 = 4 * 1024 * 1024;
    let test = TestServer::start_with(|config| {
        // Memtables never fill on their own: only the budget seals them.
        config.storage.memtable_bytes_max = 64 * 1024 * 1024;
        config.storage.write_buffer_bytes_max = BUDGET;
        config.storage.group_commit_bytes_max = 256 * 1024;
    })
    .await;
    test.client
        .create_stream("wide", 8, Default::default())
        .await
        .expect("create");

    let storage = test.server.storage().clone();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(storage.write_buffer_bytes());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            peak
        })
    };
    // 16 MB of records, four times the budget.
    for batch in 0..40 {
        let records = (0..100)
            .map(|i| PutRecord {
                partition_key: format!("key-{batch}-{i}"),
                explicit_hash_key: None,
                data: Bytes::from(vec![b'x'; 4_000]),
            })
            .collect();
        put_all(&test.client, "wide", records).await;
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    // One group commit may land on top of the budget before the writer
    // waits again.
    assert!(
        peak <= BUDGET + 2 * 1024 * 1024,
        "memtables peaked at {peak} bytes, budget {BUDGET}"
    );
    assert_eq!(stored_count(&test.client, "wide").await, 4_000);
}
