//! SIGKILL the server while producers write (fsync mode), restart it on the
//! same data directory: nothing acked is lost or changed, sequence numbers
//! keep increasing, and retries of stamped batches are not duplicated.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use weir_client::{Client, ProducerStamp, PutRecord, PutResult};

use crate::support::{ServerProcess, read_all, stored_before};

/// What a producer knows: records acked (id → shard, sequence) and the one
/// batch it had in flight when the server died.
#[derive(Default)]
struct ProducerLog {
    acked: HashMap<String, (u32, u64)>,
    in_flight: Option<(ProducerStamp, Vec<PutRecord>)>,
}

fn batch(producer: u64, batch_sequence: u64) -> Vec<PutRecord> {
    (0..100)
        .map(|i| {
            let id = format!("p{producer}-b{batch_sequence}-r{i}");
            PutRecord {
                partition_key: format!("order-{}", (batch_sequence * 100 + i) % 257),
                explicit_hash_key: None,
                data: Bytes::from(format!("{id}:{}", "x".repeat((i as usize * 13) % 700))),
            }
        })
        .collect()
}

fn record_id(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.split(':').next().unwrap_or_default().to_owned()
}

async fn produce_until_error(client: Client, producer: u64, log: Arc<Mutex<ProducerLog>>) {
    for batch_sequence in 0.. {
        let stamp = ProducerStamp {
            producer_id: producer,
            batch_sequence,
        };
        let records = batch(producer, batch_sequence);
        log.lock().expect("log").in_flight = Some((stamp, records.clone()));
        let Ok(results) = client
            .put_records("orders", Some(stamp), records.clone())
            .await
        else {
            return;
        };
        let mut log = log.lock().expect("log");
        log.in_flight = None;
        for (record, result) in records.iter().zip(results) {
            if let PutResult::Stored {
                shard, sequence, ..
            } = result
            {
                log.acked.insert(record_id(&record.data), (shard, sequence));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_nothing_acked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::spawn(dir.path(), &["--durability", "fsync"]);
    let client = server.connect().await;
    client
        .create_stream("orders", 4, Default::default())
        .await
        .expect("create");

    // A batch acked before the crash, retried after the restart.
    let early_stamp = ProducerStamp {
        producer_id: 99,
        batch_sequence: 0,
    };
    let early = client
        .put_records("orders", Some(early_stamp), batch(99, 0))
        .await
        .expect("early batch");

    let logs: Vec<Arc<Mutex<ProducerLog>>> = (0..3).map(|_| Arc::default()).collect();
    let mut producers = Vec::new();
    for (producer, log) in logs.iter().enumerate() {
        let client = server.connect().await;
        producers.push(tokio::spawn(produce_until_error(
            client,
            producer as u64,
            log.clone(),
        )));
    }
    // Let the producers get going, then kill -9 in the middle of it.
    let acked_some = crate::support::eventually(Duration::from_secs(20), || async {
        logs.iter()
            .all(|log| log.lock().expect("log").acked.len() >= 500)
    })
    .await;
    assert!(acked_some, "producers made no progress before the kill");
    server.kill();
    for producer in producers {
        tokio::time::timeout(Duration::from_secs(30), producer)
            .await
            .expect("producers notice the dead server")
            .expect("producer task");
    }

    let server = ServerProcess::spawn(dir.path(), &["--durability", "fsync"]);
    let client = server.connect().await;
    let before_retry = read_all(&client, "orders").await;
    let mut last_sequence: HashMap<u32, u64> = HashMap::new();
    let mut found: HashMap<String, (u32, u64)> = HashMap::new();
    for (shard, records) in &before_retry {
        for pair in records.windows(2) {
            assert!(
                pair[0].sequence < pair[1].sequence,
                "shard {shard} out of order after restart"
            );
        }
        if let Some(last) = records.last() {
            last_sequence.insert(*shard, last.sequence);
        }
        for record in records {
            let id = record_id(&record.data);
            assert!(
                found
                    .insert(id.clone(), (*shard, record.sequence))
                    .is_none(),
                "{id} stored twice"
            );
        }
    }
    let mut acked_total = 0;
    for log in &logs {
        for (id, position) in &log.lock().expect("log").acked {
            acked_total += 1;
            assert_eq!(
                found.get(id),
                Some(position),
                "acked record {id} lost or moved"
            );
        }
    }
    assert!(acked_total >= 1500);

    // Retrying the batches whose acks were lost stores each record once.
    for log in &logs {
        let in_flight = log.lock().expect("log").in_flight.take();
        if let Some((stamp, records)) = in_flight {
            let results = client
                .put_records("orders", Some(stamp), records)
                .await
                .expect("retry");
            assert!(
                results
                    .iter()
                    .all(|r| matches!(r, PutResult::Stored { .. }))
            );
        }
    }
    let retried = client
        .put_records("orders", Some(early_stamp), batch(99, 0))
        .await
        .expect("retry early");
    assert_eq!(
        retried,
        stored_before(&early),
        "a retry after the restart is answered from the persisted dedup state"
    );

    let after_retry = read_all(&client, "orders").await;
    let mut ids = HashSet::new();
    for records in after_retry.values() {
        for record in records {
            assert!(ids.insert(record_id(&record.data)), "duplicate after retry");
        }
    }

    // New appends continue each shard's sequence, never reuse it.
    let results = client
        .put_records("orders", None, batch(7, 1_000))
        .await
        .expect("put after restart");
    for result in results {
        let PutResult::Stored {
            shard, sequence, ..
        } = result
        else {
            panic!("put after restart failed: {result:?}");
        };
        if let Some(last) = last_sequence.get(&shard) {
            assert!(
                sequence > *last,
                "sequence {sequence} reused in shard {shard}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_writes_do_not_wait_on_a_journal_larger_than_the_write_buffer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = |name: &str, write_buffer_bytes: u64| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[storage]\nmemtable_bytes_max = 67108864\nwrite_buffer_bytes_max = {write_buffer_bytes}\n"
            ),
        )
        .expect("write config");
        path
    };
    // 12 MiB into four shards' memtables, unflushed, then a kill.
    let roomy = config("roomy.toml", 64 * 1024 * 1024);
    let mut server = ServerProcess::spawn(dir.path(), &["--config", roomy.to_str().expect("path")]);
    let client = server.connect().await;
    client
        .create_stream("big", 4, Default::default())
        .await
        .expect("create");
    for round in 0..6 {
        let records = (0..4)
            .map(|i| PutRecord {
                partition_key: format!("k{round}-{i}"),
                explicit_hash_key: None,
                data: Bytes::from(vec![b'x'; 512 * 1024]),
            })
            .collect();
        crate::support::put_all(&client, "big", records).await;
    }
    server.kill();

    // Restarted with a write buffer smaller than what the journal replays.
    let tight = config("tight.toml", 1024 * 1024);
    let server = ServerProcess::spawn(dir.path(), &["--config", tight.to_str().expect("path")]);
    let client = server.connect().await;
    let started = std::time::Instant::now();
    crate::support::put_all(
        &client,
        "big",
        vec![PutRecord {
            partition_key: "after".into(),
            explicit_hash_key: None,
            data: Bytes::from_static(b"after the crash"),
        }],
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "the first put after the crash took {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_keeps_each_shards_order_with_batches_in_flight_across_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::spawn(dir.path(), &[]);
    let listen = server.addr.to_string();
    let client = server.connect().await;
    client
        .create_stream("ordered", 4, Default::default())
        .await
        .expect("create");
    // Small batches and many in flight: plenty of chances to reorder.
    let config = weir_client::ProducerConfig {
        linger: Duration::from_millis(1),
        batch_records_max: 8,
        in_flight_batches_max: 8,
        retries_max: 1_000,
        retry_backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let producer = client.producer("ordered", config);
    let total = 3_000u64;
    let sender = producer.clone();
    // Paced, so the kill below lands while batches are in flight.
    let sending = tokio::spawn(async move {
        let mut acks = Vec::new();
        for index in 0..total {
            let ack = sender
                .send(format!("key-{}", index % 16), index.to_string())
                .await
                .expect("queued");
            acks.push(ack);
            if index % 25 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        acks
    });
    tokio::time::sleep(Duration::from_millis(120)).await;
    server.kill();
    server = ServerProcess::spawn_on(dir.path(), &listen, &[]);
    let acks = sending.await.expect("sender");
    producer.flush().await.expect("flush");
    for (index, ack) in acks.into_iter().enumerate() {
        if let Err(error) = ack.await {
            panic!("record {index} not acked (retried through the crash): {error}");
        }
    }

    let client = server.connect().await;
    let mut seen = HashSet::new();
    for (shard, records) in read_all(&client, "ordered").await {
        let indexes: Vec<u64> = records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).parse().expect("index"))
            .collect();
        for pair in indexes.windows(2) {
            assert!(
                pair[0] < pair[1],
                "shard {shard}: record {} stored after {}",
                pair[1],
                pair[0]
            );
        }
        for index in indexes {
            assert!(seen.insert(index), "record {index} stored twice");
        }
    }
    assert_eq!(seen.len() as u64, total, "every record stored once");
}

/// What a power cut in buffered mode can leave (SIGKILL cannot: the page
/// cache survives it): the journal holds a commit whose chunk never fully
/// reached its segment. The server starts, the stream takes writes, reads
/// get the records before the lost ones and then an error naming them and
/// where reading goes on.
#[tokio::test]
async fn records_a_power_cut_kept_from_the_disk_are_named_and_the_stream_goes_on() {
    let test = crate::support::TestServer::start().await;
    crate::support::stream_of_three_chunks(&test.client, "cut", |n| format!("before-{n}")).await;
    let test = test
        .restart_after(|dir| {
            let segment = crate::support::first_segment(dir);
            let len = std::fs::metadata(&segment).expect("segment").len();
            let file = std::fs::File::options().write(true).open(&segment);
            file.expect("open").set_len(len - 1).expect("cut");
        })
        .await;
    let client = &test.client;

    let stored = client
        .put_records(
            "cut",
            None,
            vec![PutRecord {
                partition_key: "k".into(),
                explicit_hash_key: None,
                data: Bytes::from_static(b"after"),
            }],
        )
        .await
        .expect("the stream takes writes");
    let PutResult::Stored { sequence, .. } = stored[0] else {
        panic!("not stored: {stored:?}");
    };
    assert_eq!(sequence, 30, "sequence numbers are never reused");

    let before = client
        .get_records("cut", 0, weir_client::Position::TrimHorizon, 100)
        .await
        .expect("the records before the lost ones");
    assert_eq!(before.records.len(), 20);
    let error = client
        .get_records("cut", 0, weir_client::Position::AtSequence(20), 100)
        .await
        .expect_err("the lost records");
    let message = error.to_string();
    assert!(
        message.contains("records 20 to 29 of stream \"cut\" shard 0 are damaged on disk")
            && message.contains("Reads from at:30 go on"),
        "{message}"
    );
    let after = client
        .get_records("cut", 0, weir_client::Position::AtSequence(30), 100)
        .await
        .expect("after");
    assert_eq!(after.records[0].data, Bytes::from_static(b"after"));
}
