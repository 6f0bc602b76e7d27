//! The admin listener: Prometheus metrics that move as records flow, and
//! health endpoints.

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_client::{Position, PutRecord};

use crate::support::TestServer;

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

pub fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

#[tokio::test]
async fn metrics_move_as_records_flow() {
    let test = TestServer::start().await;
    let admin = test.server.admin_addr().expect("admin listener");
    let client = &test.client;
    client
        .create_stream("m", 1, Default::default())
        .await
        .expect("create");

    let (status, body) = http_get(admin, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        metric(
            &body,
            "weir_records_appended_total{stream=\"m\",shard=\"0\"}"
        ),
        0
    );

    let records = (0..25)
        .map(|i| PutRecord {
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            data: Bytes::from_static(b"0123456789"),
        })
        .collect();
    client.put_records("m", None, records).await.expect("put");
    client
        .get_records("m", 0, Position::TrimHorizon, 100)
        .await
        .expect("get");
    let _subscription = client
        .subscribe("m", 0, Position::Latest)
        .await
        .expect("subscribe");

    let (_, body) = http_get(admin, "/metrics").await;
    assert_eq!(
        metric(
            &body,
            "weir_records_appended_total{stream=\"m\",shard=\"0\"}"
        ),
        25
    );
    assert!(metric(&body, "weir_bytes_appended_total{stream=\"m\",shard=\"0\"}") >= 25 * 10);
    assert_eq!(
        metric(&body, "weir_records_read_total{stream=\"m\",shard=\"0\"}"),
        25
    );
    assert_eq!(metric(&body, "weir_put_ack_seconds_count"), 1);
    // The put's group commit, and the requests it and the reads came in.
    assert!(metric(&body, "weir_commit_segment_write_seconds_count") >= 1);
    assert!(metric(&body, "weir_commit_journal_seconds_count") >= 1);
    assert!(metric(&body, "weir_request_read_seconds_count") >= 3);
    assert_eq!(metric(&body, "weir_subscribers"), 1);
    assert!(metric(&body, "weir_process_resident_bytes") > 1_000_000);

    let (status, body) = http_get(admin, "/healthz").await;
    assert!(
        status.contains("200") && body.contains("ok"),
        "{status} {body}"
    );
    let (status, _) = http_get(admin, "/readyz").await;
    assert!(status.contains("200"), "{status}");
    let (status, _) = http_get(admin, "/nope").await;
    assert!(status.contains("404"), "{status}");
}
