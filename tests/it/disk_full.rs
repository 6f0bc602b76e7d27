//! A disk that really runs out of space (another program fills it): puts
//! fail with the retryable `StorageFull`, nothing acked is lost, reads keep
//! working, and writes resume by themselves once space is freed — without
//! a restart, although fjall stops taking writes after the failed one.
//!
//! The disk is a small tmpfs mounted for the test, which needs
//! CAP_SYS_ADMIN (CI has it); without it the test says so and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use weir_client::{ErrorCode, Position, PutRecord, PutResult, Record, Retention};

use crate::metrics::{http_get, metric};
use crate::support::{
    TestServer, create_processor, describe_processor, eventually, plugin, processor_settings,
    read_all, server_info,
};

const DISK_BYTES: u64 = 32 * 1024 * 1024;

/// A tmpfs of `DISK_BYTES`, unmounted when dropped.
struct SmallDisk {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<Self> {
        let parent = tempfile::tempdir().expect("temp dir");
        let mount_point = parent.path().join("disk");
        std::fs::create_dir(&mount_point).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
            .arg(&mount_point)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then_some(Self {
            mount_point,
            _parent: parent,
        })
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.mount_point.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        // Whatever does not fill a whole chunk, byte by byte.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount_point)
            .status();
    }
}

fn records(prefix: &str, count: usize) -> Vec<PutRecord> {
    (0..count)
        .map(|i| PutRecord {
            partition_key: format!("{prefix}{i}"),
            explicit_hash_key: None,
            data: Bytes::from(format!(
                r#"{{"x":"{prefix}{i}","pad":"{}"}}"#,
                "p".repeat(2_000)
            )),
        })
        .collect()
}

/// Every acked record is among `stored`, with its data unchanged.
fn assert_acked_intact(stored: &[Record], acked: &[(u64, PutRecord)], when: &str) {
    for (sequence, record) in acked {
        let found = stored
            .iter()
            .find(|r| r.sequence == *sequence)
            .unwrap_or_else(|| panic!("acked record {sequence} missing {when}"));
        assert_eq!(found.data, record.data, "record {sequence} {when}");
    }
}

fn in_dir(dir: &Path) -> tempfile::TempDir {
    tempfile::tempdir_in(dir).expect("data dir")
}

#[tokio::test]
async fn a_really_full_disk_refuses_puts_and_writes_resume_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: mounting a tmpfs needs CAP_SYS_ADMIN");
        return;
    };
    let test = TestServer::start_in(in_dir(&disk.mount_point), |config| {
        config.storage.retention_check_interval_ms = 100;
        // No reserve: the disk itself must say it is full.
        config.storage.disk_free_bytes_min = 0;
    })
    .await;
    let client = &test.client;
    client
        .create_stream("events", 1, Retention::default())
        .await
        .expect("create");
    client
        .create_stream("kept", 1, Retention::default())
        .await
        .expect("create");
    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("plugin");
    let filter = [("field", "x"), ("op", "exists")];
    let mut settings = processor_settings("keep", "json-filter", "events", &filter);
    settings.output = Some("kept".into());
    create_processor(client, settings).await;

    let mut acked = Vec::new();
    let put = |round: usize| {
        let batch = records(&format!("r{round}-"), 5);
        async move {
            let results = client
                .put_records("events", None, batch.clone())
                .await
                .expect("put answered");
            batch.into_iter().zip(results).collect::<Vec<_>>()
        }
    };
    for round in 0..5 {
        for (record, result) in put(round).await {
            let PutResult::Stored { sequence, .. } = result else {
                panic!("put before the disk filled: {result:?}");
            };
            acked.push((sequence, record));
        }
    }

    // A subscriber that reads through the failure and the reopening.
    let mut subscription = client
        .subscribe("events", 0, Position::TrimHorizon)
        .await
        .expect("subscribe");

    let filler = disk.fill();
    let mut refused = None;
    for round in 5..200 {
        for (record, result) in put(round).await {
            match result {
                PutResult::Stored { sequence, .. } => acked.push((sequence, record)),
                PutResult::Failed { code, message } => refused = Some((code, message)),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let (code, message) = refused.expect("the disk filled up");
    assert_eq!(code, ErrorCode::StorageFull, "{message}");
    assert!(code.is_retryable());
    assert!(message.contains("disk"), "{message}");

    // Later puts are refused up front, naming what they wait for.
    let later = put(1_000).await;
    let PutResult::Failed { code, message } = &later[0].1 else {
        panic!("put on a full disk: {:?}", later[0].1);
    };
    assert_eq!(*code, ErrorCode::StorageFull, "{message}");
    assert!(message.contains("write to disk failed"), "{message}");
    let refused = server_info(client).await.writes_refused.expect("shown");
    assert!(refused.contains("write to disk failed"), "{refused}");

    // Admin writes fail with a typed, retryable error instead of hanging;
    // admin reads work.
    let error = client
        .create_stream("during", 1, Retention::default())
        .await
        .expect_err("no room for a new stream");
    assert!(error.code().is_some_and(ErrorCode::is_retryable), "{error}");
    assert!(client.list_streams().await.expect("list").len() >= 2);

    // Reads keep working, and every acked record is there.
    let stored = read_all(client, "events").await;
    assert_acked_intact(&stored[&0], &acked, "while the disk is full");

    // Space comes back: writes resume by themselves.
    std::fs::remove_file(filler).expect("free the disk");
    let resumed = eventually(Duration::from_secs(15), || async {
        matches!(put(2_000).await[0].1, PutResult::Stored { .. })
    })
    .await;
    assert!(resumed, "puts did not resume after space was freed");
    assert_eq!(server_info(client).await.writes_refused, None);
    let admin = test.server.admin_addr().expect("admin listener");
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(metric(&metrics, "weir_storage_reopens_total"), 1);
    assert_eq!(metric(&metrics, "weir_storage_full"), 0);

    // Nothing acked was lost or reordered, sequence numbers were never
    // reused, and the processor caught up exactly once.
    let stored = read_all(client, "events").await;
    let sequences: Vec<u64> = stored[&0].iter().map(|r| r.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    assert_acked_intact(&stored[&0], &acked, "after recovery");
    let caught_up = eventually(Duration::from_secs(15), || async {
        let shard = &describe_processor(client, "keep").await.shards[0];
        shard.status == "running" && shard.cursor == sequences.last().map_or(0, |s| s + 1)
    })
    .await;
    assert!(
        caught_up,
        "processor: {:?}",
        describe_processor(client, "keep").await.shards[0]
    );
    let outputs = read_all(client, "kept").await;
    let output_keys: Vec<&str> = outputs[&0]
        .iter()
        .map(|r| r.partition_key.as_str())
        .collect();
    let input_keys: Vec<&str> = stored[&0]
        .iter()
        .map(|r| r.partition_key.as_str())
        .collect();
    assert_eq!(output_keys, input_keys, "each input filtered exactly once");

    // The subscription saw every stored record, in order, once.
    let mut delivered = Vec::new();
    while delivered.len() < sequences.len() {
        let batch = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await
            .expect("subscription delivers")
            .expect("subscription survives the reopening");
        delivered.extend(batch.records.iter().map(|r| r.sequence));
    }
    assert_eq!(delivered, sequences);

    // And all of it survives a restart.
    let test = test.restart().await;
    let after_restart = read_all(&test.client, "events").await;
    assert_eq!(after_restart[&0].len(), stored[&0].len());
}
