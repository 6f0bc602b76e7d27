//! What connections cost before they authenticate, and how fast clients
//! find a restarted server.

use std::time::{Duration, Instant};

use weir_client::ProducerConfig;

use crate::metrics::{http_get, metric};
use crate::support::{ServerProcess, TestServer, raw_connection};

#[tokio::test]
async fn strangers_that_never_authenticate_cannot_keep_clients_out() {
    let test = TestServer::start_with(|config| {
        config.limits.connections_unauthenticated_max = 4;
        config.limits.connection_auth_timeout_ms = 1_500;
    })
    .await;
    let (addr, cert) = (test.server.local_addr(), test.server.cert_path());
    let mut strangers = Vec::new();
    for _ in 0..8 {
        strangers.push(raw_connection(addr, cert).await);
    }
    // A client with a token gets in, and its connection stays.
    let client = test.new_client().await;
    client
        .list_streams()
        .await
        .expect("authenticated client served");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let open = strangers
        .iter()
        .filter(|c| c.close_reason().is_none())
        .count();
    assert!(open <= 4, "{open} unauthenticated connections kept open");

    // Past connection_auth_timeout_ms every stranger is gone, the client
    // is not.
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    for stranger in &strangers {
        let reason = stranger.close_reason().expect("closed");
        assert!(
            reason
                .to_string()
                .contains("connections_unauthenticated_max")
                || reason.to_string().contains("connection_auth_timeout_ms"),
            "{reason}"
        );
    }
    client.list_streams().await.expect("still served");
    let (_, body) = http_get(test.server.admin_addr().expect("admin"), "/metrics").await;
    assert_eq!(
        metric(&body, "weir_unauthenticated_closed_total"),
        8,
        "{body}"
    );
}

#[tokio::test]
async fn clients_get_in_when_every_address_must_be_validated_first() {
    // A quarter of one handshake is zero: every client gets a QUIC Retry.
    let test = TestServer::start_with(|config| config.limits.handshakes_max = 1).await;
    let client = test.new_client().await;
    client
        .create_stream("validated", 1, Default::default())
        .await
        .expect("served after a Retry");
    let (_, body) = http_get(test.server.admin_addr().expect("admin"), "/metrics").await;
    assert!(metric(&body, "weir_handshake_retries_total") >= 1, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_resumes_within_a_second_of_a_crash_and_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = ServerProcess::spawn(dir.path(), &[]);
    let listen = server.addr.to_string();
    let client = server.connect().await;
    client
        .create_stream("events", 1, Default::default())
        .await
        .expect("create");
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        retry_backoff: Duration::from_millis(20),
        ..Default::default()
    };
    let producer = client.producer("events", config);
    let before = producer.send("k", "before").await.expect("send");
    before.await.expect("acked before the crash");

    server.kill();
    server = ServerProcess::spawn_on(dir.path(), &listen, &[]);
    let restarted = Instant::now();
    let after = producer.send("k", "after").await.expect("send");
    let ack = after.await.expect("acked after the restart");
    let resumed = restarted.elapsed();
    assert_eq!(ack.sequence, 1);
    assert!(!ack.duplicate, "stored by this send, not an earlier one");
    assert!(
        resumed < Duration::from_secs(1),
        "the producer took {resumed:?} to resume"
    );
    drop(server);
}

#[tokio::test]
async fn a_client_can_trust_certificates_given_in_memory() {
    let test = TestServer::start().await;
    let mut config = crate::support::client_config(&test.server);
    config.ca_pem = Some(std::fs::read(test.server.cert_path()).expect("cert").into());
    config.ca_cert = "/nonexistent/cert.pem".into();
    let client = weir_client::Client::connect(config)
        .await
        .expect("connects with the PEM in memory");
    client.list_streams().await.expect("served");
}

/// CPU time process `pid` has used (user + system), from /proc/PID/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th; both in clock ticks of 1/100 s on Linux.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// The server in a process of its own, so that only its CPU is counted
/// (the other tests in this process keep both cores busy).
#[tokio::test]
async fn an_authenticated_connection_costs_nothing_after_the_auth_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[limits]\nconnection_auth_timeout_ms = 100\n").expect("config");
    let server = ServerProcess::spawn(dir.path(), &["--config", config.to_str().expect("path")]);
    let client = server.connect().await;
    client.list_streams().await.expect("served");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_time(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_time(server.pid()) - before;
    assert!(
        used < Duration::from_millis(100),
        "an idle server used {used:?} of CPU in a second"
    );
    client.list_streams().await.expect("still served");
}
