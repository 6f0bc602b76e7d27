//! Named consumers keep their position in the server, across restarts.

use bytes::Bytes;
use weir_client::{ErrorCode, PutRecord};

use crate::support::ServerProcess;

#[tokio::test]
async fn checkpoints_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    client
        .create_stream("events", 2, Default::default())
        .await
        .expect("create");
    let records = (0..10)
        .map(|i| PutRecord {
            partition_key: format!("k{i}"),
            explicit_hash_key: Some(0),
            data: Bytes::from_static(b"e"),
        })
        .collect();
    client
        .put_records("events", None, records)
        .await
        .expect("put");
    assert_eq!(
        client.checkpoint("app", "events", 0).await.expect("get"),
        None
    );
    client
        .commit_checkpoint("app", "events", 0, 6)
        .await
        .expect("commit");
    client
        .commit_checkpoint("other-app", "events", 0, 2)
        .await
        .expect("commit");

    let error = client
        .commit_checkpoint("app", "events", 0, 99)
        .await
        .expect_err("future");
    assert_eq!(error.code(), Some(ErrorCode::InvalidPosition));
    let error = client
        .commit_checkpoint("bad name", "events", 0, 1)
        .await
        .expect_err("name");
    assert_eq!(error.code(), Some(ErrorCode::InvalidConsumerName));

    let status = server.terminate();
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    let server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    assert_eq!(
        client.checkpoint("app", "events", 0).await.expect("get"),
        Some(6)
    );
    assert_eq!(
        client
            .checkpoint("other-app", "events", 0)
            .await
            .expect("get"),
        Some(2)
    );
    assert_eq!(
        client.checkpoint("app", "events", 1).await.expect("get"),
        None
    );
}
