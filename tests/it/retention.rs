//! Retention by age and by bytes removes old records and keeps new ones.

use std::time::Duration;

use bytes::Bytes;
use weir_client::{ErrorCode, Position, PutRecord, PutResult, Retention};

use crate::support::{
    TestServer, create_processor, describe_processor, eventually, plugin, processor_settings,
    read_all, server_info, trimmed_to,
};

fn records(prefix: &str, count: usize, bytes: usize) -> Vec<PutRecord> {
    (0..count)
        .map(|i| PutRecord {
            partition_key: format!("{prefix}{i}"),
            explicit_hash_key: None,
            data: Bytes::from(format!("{prefix}{i}:{}", "x".repeat(bytes))),
        })
        .collect()
}

async fn fast_retention() -> TestServer {
    TestServer::start_with(|config| config.storage.retention_check_interval_ms = 100).await
}

#[tokio::test]
async fn retention_by_age_removes_old_records_and_keeps_new_ones() {
    let test = fast_retention().await;
    let client = &test.client;
    let retention = Retention {
        age_ms: Some(1_000),
        bytes: None,
    };
    client
        .create_stream("aged", 1, retention)
        .await
        .expect("create");
    client
        .put_records("aged", None, records("old", 100, 100))
        .await
        .expect("put old");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    client
        .put_records("aged", None, records("new", 10, 100))
        .await
        .expect("put new");

    let trimmed = trimmed_to(client, "aged", 100).await;
    assert!(trimmed, "old records were not removed");
    let left = &read_all(client, "aged").await[&0];
    assert_eq!(left.len(), 10);
    assert!(
        left.iter().all(|r| r.partition_key.starts_with("new")),
        "a new record was removed"
    );

    let error = client
        .get_records("aged", 0, Position::AtSequence(5), 10)
        .await
        .expect_err("trimmed position");
    assert_eq!(error.code(), Some(ErrorCode::PositionTrimmed));
    assert!(
        error.to_string().contains("now begins at sequence 100"),
        "{error}"
    );
}

#[tokio::test]
async fn retention_by_bytes_keeps_the_newest_records_within_budget() {
    // Chunks of two 1 KiB records: retention removes whole chunks, so a
    // stream may hold one chunk more than its limit.
    let test = TestServer::start_with(|config| {
        config.storage.retention_check_interval_ms = 100;
        config.storage.chunk_bytes_max = 2_000;
    })
    .await;
    let client = &test.client;
    let retention = Retention {
        age_ms: None,
        bytes: Some(20_000),
    };
    client
        .create_stream("sized", 2, retention)
        .await
        .expect("create");
    for round in 0..10 {
        client
            .put_records("sized", None, records(&format!("r{round}-"), 20, 1_000))
            .await
            .expect("put");
    }
    let stored = || async {
        let description = client.describe_stream("sized").await.expect("describe");
        description.shards.iter().map(|s| s.bytes).sum::<u64>()
    };
    let within_budget = eventually(Duration::from_secs(5), || async {
        stored().await <= 20_000 + 2_100
    })
    .await;
    assert!(within_budget, "the stream is still over its byte limit");
    assert!(
        stored().await >= 20_000,
        "retention removed more than needed"
    );

    let all = read_all(client, "sized").await;
    for records in all.values() {
        // What remains of each shard is its newest records: the last round.
        let newest = records.last().expect("a shard kept something");
        assert!(
            newest.partition_key.starts_with("r9-"),
            "newest record removed"
        );
    }
    // Writes still work after trimming, and continue the sequence.
    client
        .put_records("sized", None, records("after", 5, 10))
        .await
        .expect("put after trim");
}

#[tokio::test]
async fn a_full_store_refuses_puts_keeps_serving_reads_and_resumes_after_retention() {
    let test = TestServer::start_with(|config| {
        config.storage.retention_check_interval_ms = 100;
        config.storage.storage_bytes_max = Some(20_000);
    })
    .await;
    let client = &test.client;
    let retention = Retention {
        age_ms: Some(3_000),
        bytes: None,
    };
    client
        .create_stream("full", 2, retention)
        .await
        .expect("create");
    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("plugin");
    let filter = [("field", "x"), ("op", "exists")];
    create_processor(
        client,
        processor_settings("kept", "json-filter", "full", &filter),
    )
    .await;

    // Fill the budget: every record is either acked or refused as full.
    let mut acked = Vec::new();
    let mut refused = None;
    for round in 0..100 {
        let batch = records(&format!("r{round}-"), 5, 1_000);
        let results = client
            .put_records("full", None, batch.clone())
            .await
            .expect("put answered");
        for (record, result) in batch.into_iter().zip(results) {
            match result {
                PutResult::Stored {
                    shard, sequence, ..
                } => acked.push((shard, sequence, record)),
                PutResult::Failed { code, message } => refused = Some((code, message)),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let (code, message) = refused.expect("the budget was reached");
    assert_eq!(code, ErrorCode::StorageFull);
    assert!(code.is_retryable());
    assert!(message.contains("storage_bytes_max is 20000"), "{message}");
    assert!(acked.len() >= 15, "{} records fit", acked.len());
    let refused = server_info(client).await.writes_refused.expect("shown");
    assert!(refused.contains("storage_bytes_max is 20000"), "{refused}");

    // Reads, subscriptions, checkpoints and admin keep working; every acked
    // record is there, intact.
    let stored = read_all(client, "full").await;
    for (shard, sequence, record) in &acked {
        let found = stored[shard]
            .iter()
            .find(|r| r.sequence == *sequence)
            .expect("acked record present");
        assert_eq!(found.data, record.data);
    }
    client
        .subscribe("full", 0, Position::TrimHorizon)
        .await
        .expect("subscribe while full");
    client
        .commit_checkpoint("app", "full", 0, 0)
        .await
        .expect("checkpoint while full");
    client
        .create_stream("another", 1, Retention::default())
        .await
        .expect("admin while full");
    // Processors wait (their outputs would need space) instead of failing.
    let processor_status = || async {
        describe_processor(client, "kept").await.shards[0]
            .status
            .clone()
    };
    let waiting = eventually(Duration::from_secs(5), || async {
        processor_status().await == "waiting for storage"
    })
    .await;
    assert!(waiting, "processor status: {}", processor_status().await);

    // Retention removes the old records and puts resume by themselves.
    let resumed = eventually(Duration::from_secs(10), || async {
        let results = client
            .put_records("full", None, records("later", 1, 100))
            .await
            .expect("put answered");
        matches!(results[0], PutResult::Stored { .. })
    })
    .await;
    assert!(resumed, "puts did not resume after retention freed space");
    assert_eq!(server_info(client).await.writes_refused, None);
    let running = eventually(Duration::from_secs(5), || async {
        processor_status().await == "running"
    })
    .await;
    assert!(running, "processor status: {}", processor_status().await);
}

/// Records a paused processor never read are removed by retention: when it
/// resumes it says how many it lost, and goes on from the first record
/// left instead of halting or skipping silently. It had processed nothing
/// before it was paused: its starting cursor was committed at creation.
#[tokio::test]
async fn a_processor_behind_retention_reports_the_loss_and_goes_on() {
    let test = fast_retention().await;
    let client = &test.client;
    let retention = Retention {
        age_ms: Some(3_000),
        bytes: None,
    };
    client
        .create_stream("brief", 1, retention)
        .await
        .expect("create");
    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("add plugin");
    let purchases = |n: usize| -> Vec<PutRecord> {
        (0..n)
            .map(|i| PutRecord {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: Bytes::from(format!(r#"{{"event":"purchase","n":{i}}}"#)),
            })
            .collect()
    };
    create_processor(client, crate::support::purchase_filter("buys", "brief")).await;
    client.pause_processor("buys").await.expect("pause");

    client
        .put_records("brief", None, purchases(40))
        .await
        .expect("put old");
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    client
        .put_records("brief", None, purchases(5))
        .await
        .expect("put new");
    let trimmed = trimmed_to(client, "brief", 40).await;
    assert!(trimmed, "retention did not remove the old records");

    client.resume_processor("buys").await.expect("resume");
    let caught_up = eventually(Duration::from_secs(10), || async {
        describe_processor(client, "buys").await.shards[0].cursor == 45
    })
    .await;
    let shard = &describe_processor(client, "buys").await.shards[0];
    assert!(
        caught_up,
        "the processor went on from what is left: {shard:?}"
    );
    assert_eq!(shard.status, "running");
    assert_eq!(
        shard.last_error.as_deref(),
        Some("retention removed 40 records before they were processed")
    );
    assert_eq!(read_all(client, "buys.out").await[&0].len(), 5);
}

/// Records the disk damaged are skipped by a processor, which says which
/// and goes on with the rest (as with records retention removed), instead
/// of retrying the damaged chunk forever.
#[tokio::test]
async fn a_processor_skips_records_damaged_on_disk_and_says_which() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("add plugin");
    crate::support::stream_of_three_chunks(client, "worn", |n| {
        format!(r#"{{"event":"purchase","n":{n}}}"#)
    })
    .await;
    let test = test
        .restart_after(crate::support::damage_the_middle_of_the_first_segment)
        .await;
    let client = &test.client;
    create_processor(client, crate::support::purchase_filter("buys", "worn")).await;
    let caught_up = eventually(Duration::from_secs(10), || async {
        describe_processor(client, "buys").await.shards[0].cursor == 30
    })
    .await;
    let shard = &describe_processor(client, "buys").await.shards[0];
    assert!(caught_up, "the processor went past the damage: {shard:?}");
    assert_eq!(shard.status, "running");
    assert_eq!(
        shard.last_error.as_deref(),
        Some("records 10 to 19 were damaged on disk and skipped unprocessed")
    );
    assert_eq!(read_all(client, "buys.out").await[&0].len(), 20);
}

/// The segment files of every stream (a log per stream), in order.
fn segment_files(test: &TestServer) -> Vec<std::path::PathBuf> {
    let root = test.data_dir().join("db").join("segments");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|stream| std::fs::read_dir(stream.path()).into_iter().flatten())
        .flatten()
        .map(|file| file.path())
        .collect();
    files.sort();
    files
}

/// Chunks of about 2 records of 1 KB and segments of about 4 chunks.
async fn small_segments() -> TestServer {
    TestServer::start_with(|config| {
        config.storage.retention_check_interval_ms = 100;
        config.storage.chunk_bytes_max = 2_000;
        config.storage.segment_bytes_max = 8_000;
    })
    .await
}

async fn create_with_byte_limit(client: &weir_client::Client, name: &str, shards: u32, bytes: u64) {
    let retention = Retention {
        age_ms: None,
        bytes: Some(bytes),
    };
    client
        .create_stream(name, shards, retention)
        .await
        .expect("create");
}

#[tokio::test]
async fn retention_deletes_emptied_segment_files_and_a_deleted_stream_leaves_none() {
    let test = small_segments().await;
    let client = &test.client;
    create_with_byte_limit(client, "rolling", 1, 10_000).await;
    for round in 0..30 {
        client
            .put_records("rolling", None, records(&format!("r{round}-"), 2, 1_000))
            .await
            .expect("put");
    }
    // 60 KB written, 10 KB kept: most segments must go, not just be
    // emptied of their chunks.
    let reclaimed = eventually(Duration::from_secs(5), || async {
        total_bytes(&segment_files(&test)) <= 10_000 + 8_000 + 2_100
    })
    .await;
    assert!(reclaimed, "segments left: {:?}", segment_files(&test));
    // Retention trims in passes (every 100 ms here): wait for a pass that
    // finds nothing left to trim, so what is read next is what stays.
    let oldest = || async {
        let description = client.describe_stream("rolling").await.expect("describe");
        description.shards[0].first_sequence
    };
    let settled = eventually(Duration::from_secs(5), || async {
        let before = oldest().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        oldest().await == before
    })
    .await;
    assert!(settled, "retention kept trimming the stream");

    // What is left reads back, newest last, and survives a restart.
    let before = read_all(client, "rolling").await[&0].clone();
    assert!(
        before
            .last()
            .is_some_and(|r| r.partition_key.starts_with("r29-"))
    );
    let test = test.restart().await;
    let after = read_all(&test.client, "rolling").await[&0].clone();
    assert_eq!(after.len(), before.len());
    assert_eq!(
        after.last().map(|r| &r.data),
        before.last().map(|r| &r.data)
    );

    test.client.delete_stream("rolling").await.expect("delete");
    assert_eq!(segment_files(&test), Vec::<std::path::PathBuf>::new());
}

fn to_shard(shard: u32, prefix: &str, count: usize, bytes: usize) -> Vec<PutRecord> {
    // Of two shards, 0 takes the lower half of the hash-key space.
    let hash_key = if shard == 0 { 0 } else { u128::MAX };
    records(prefix, count, bytes)
        .into_iter()
        .map(|record| PutRecord {
            explicit_hash_key: Some(hash_key),
            ..record
        })
        .collect()
}

fn total_bytes(files: &[std::path::PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|file| std::fs::metadata(file).ok())
        .map(|metadata| metadata.len())
        .sum()
}

#[tokio::test]
async fn byte_retention_removes_the_streams_oldest_chunks_whichever_shard_so_its_log_files_go() {
    let test = small_segments().await;
    let client = &test.client;
    create_with_byte_limit(client, "skewed", 2, 20_000).await;
    let mut both = to_shard(0, "hot-first-", 1, 100);
    both.extend(to_shard(1, "quiet-0-", 1, 1_000));
    client
        .put_records("skewed", None, both)
        .await
        .expect("put to both shards");
    assert_eq!(segment_files(&test).len(), 1, "one log file for the stream");

    // The hot shard writes 120 KB; the quiet shard's record is among the
    // stream's oldest, so it goes, and with it the first segment.
    for round in 0..60 {
        client
            .put_records("skewed", None, to_shard(0, &format!("r{round}-"), 2, 1_000))
            .await
            .expect("put");
    }
    let reclaimed = eventually(Duration::from_secs(5), || async {
        total_bytes(&segment_files(&test)) <= 20_000 + 8_000 + 2_100
    })
    .await;
    assert!(reclaimed, "segments left: {:?}", segment_files(&test));
    let shards = read_all(client, "skewed").await;
    assert_eq!(shards[&1].len(), 0, "the quiet shard's old record is gone");
    // The hot shard has the whole stream's limit, not half of it.
    assert!(shards[&0].len() >= 18, "{} records kept", shards[&0].len());

    // Both shards take records and read back after a restart.
    let test = test.restart().await;
    let client = &test.client;
    client
        .put_records("skewed", None, to_shard(1, "quiet-1-", 1, 1_000))
        .await
        .expect("put after restart");
    client
        .put_records("skewed", None, to_shard(0, "r60-", 2, 1_000))
        .await
        .expect("put after restart");
    let shards = read_all(client, "skewed").await;
    let quiet: Vec<_> = shards[&1]
        .iter()
        .map(|r| r.partition_key.as_str())
        .collect();
    assert_eq!(quiet, ["quiet-1-0"]);
    let hot: Vec<_> = shards[&0]
        .iter()
        .map(|r| r.partition_key.as_str())
        .collect();
    assert_eq!(hot[hot.len() - 2..], ["r60-0", "r60-1"]);
}
