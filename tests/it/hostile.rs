//! Hostile plugins: each misbehaviour fails its own records (or its own
//! processor) in a documented way, while puts to another stream keep their
//! latency; and aggregates stay equal to a model of their input under
//! every failure policy.

use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_client::admin::{AdminRequest, FailurePolicy, ProcessorInfo};
use weir_client::{Client, ClientError, ErrorCode, PutRecord};

use crate::support::{
    ServerProcess, TestServer, create_processor, describe_processor, eventually, plugin,
    processor_settings, put_all, read_all, stream_with_plugins,
};

/// The slowest healthy put allowed while a hostile plugin runs (generous:
/// CI machines are shared; a frozen async thread takes seconds).
const HEALTHY_PUT_MAX: Duration = Duration::from_millis(750);

async fn put_texts(client: &Client, stream: &str, records: &[&str]) {
    let records = records
        .iter()
        .map(|data| PutRecord {
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Bytes::from(data.to_string()),
        })
        .collect();
    put_all(client, stream, records).await;
}

/// Puts to `stream` for `duration` and returns the slowest ack.
async fn slowest_put(client: &Client, stream: &str, duration: Duration) -> Duration {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < duration {
        let put = Instant::now();
        put_texts(client, stream, &["healthy"]).await;
        slowest = slowest.max(put.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

async fn texts(client: &Client, stream: &str) -> Vec<String> {
    let mut records: Vec<_> = read_all(client, stream)
        .await
        .into_values()
        .flatten()
        .collect();
    records.sort_by_key(|r| r.sequence);
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

async fn wait_until(
    client: &Client,
    name: &str,
    done: impl Fn(&ProcessorInfo) -> bool,
) -> ProcessorInfo {
    let reached = eventually(Duration::from_secs(30), || async {
        done(&describe_processor(client, name).await)
    })
    .await;
    let info = describe_processor(client, name).await;
    assert!(reached, "{name}: {info:#?}");
    info
}

fn consumed(records: u64) -> impl Fn(&ProcessorInfo) -> bool {
    move |info| info.shards.iter().map(|s| s.records_in).sum::<u64>() >= records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_amplifying_looping_and_chatty_plugins_fail_only_their_records() {
    let test = TestServer::start().await;
    let client = &test.client;
    stream_with_plugins(client, "healthy", 1, &[("misbehaving", "misbehaving")]).await;
    let modes = ["sleep", "amplify", "loop", "log-spam", "slow-init"];
    for mode in modes {
        let stream = format!("in-{mode}");
        client
            .create_stream(&stream, 1, Default::default())
            .await
            .expect("create");
        let mut settings = processor_settings(mode, "misbehaving", &stream, &[("mode", mode)]);
        settings.on_error = FailurePolicy::Skip;
        // slow-init spins a second in init and log-spam logs 100 000
        // lines: their fuel must pay for that.
        let fuel = match mode {
            "slow-init" | "log-spam" => 5_000_000_000,
            _ => 50_000_000,
        };
        settings.fuel_per_batch_max = Some(fuel);
        create_processor(client, settings).await;
        put_texts(client, &stream, &["ok-1", "bad", "ok-2"]).await;
    }
    // slow-init: each trap makes a new instance whose init spins a second.
    put_texts(client, "in-slow-init", &["bad", "bad", "ok-3"]).await;

    let slowest = slowest_put(client, "healthy", Duration::from_secs(4)).await;
    assert!(
        slowest < HEALTHY_PUT_MAX,
        "a healthy put took {slowest:?} beside hostile plugins"
    );

    for (mode, error) in [
        ("sleep", "must not block"),
        ("amplify", "processor_output_records_per_call_max"),
        ("loop", "out of fuel"),
    ] {
        let info = wait_until(client, mode, consumed(3)).await;
        let shard = &info.shards[0];
        assert_eq!(shard.failed_sequences, vec![1], "{mode}: {info:#?}");
        assert!(
            shard.last_error.as_deref().unwrap_or("").contains(error),
            "{mode}: {info:#?}"
        );
        assert_eq!(
            texts(client, &format!("{mode}.out")).await,
            ["ok-1", "ok-2"]
        );
    }
    // A failed call costs the fuel it burned.
    let looping = describe_processor(client, "loop").await;
    assert!(looping.shards[0].fuel_used >= 50_000_000, "{looping:#?}");
    // Logging is rate-limited, not fatal: the record passes.
    let spam = wait_until(client, "log-spam", consumed(3)).await;
    assert_eq!(texts(client, "log-spam.out").await, ["ok-1", "bad", "ok-2"]);
    assert!(spam.log_lines_dropped >= 99_000, "{spam:#?}");
    let info = wait_until(client, "slow-init", consumed(6)).await;
    assert_eq!(info.shards[0].failed_sequences.len(), 3, "{info:#?}");
    assert_eq!(
        texts(client, "slow-init.out").await,
        ["ok-1", "ok-2", "ok-3"]
    );

    // Removal does not wait on the plugin.
    let removing = Instant::now();
    client
        .admin(AdminRequest::DeleteProcessor {
            name: "sleep".into(),
        })
        .await
        .expect("rm");
    assert!(removing.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_init_that_blocks_is_refused_at_create() {
    let test = TestServer::start().await;
    let client = &test.client;
    stream_with_plugins(client, "in", 1, &[("misbehaving", "misbehaving")]).await;
    let settings = processor_settings("sleepy", "misbehaving", "in", &[("mode", "sleep-init")]);
    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(settings)))
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("must not block"), "{error}");

    // Limits over the server's ceilings are refused, naming them.
    let mut greedy = processor_settings("greedy", "misbehaving", "in", &[("mode", "ok")]);
    greedy.memory_bytes_max = Some(1 << 40);
    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(greedy)))
        .await
        .expect_err("refused");
    assert!(
        error.to_string().contains("plugin_memory_bytes_ceiling"),
        "{error}"
    );
}

#[tokio::test]
async fn plugin_instances_together_stay_within_the_servers_memory_budget() {
    const BUDGET: u64 = 40 * 1024 * 1024;
    let test = TestServer::start_with(|config| {
        config.processing.plugins_memory_bytes_max = BUDGET;
    })
    .await;
    let client = &test.client;
    client
        .add_plugin("misbehaving", plugin("misbehaving"))
        .await
        .expect("add");
    client
        .create_stream("wide", 8, Default::default())
        .await
        .expect("create");
    // Eight instances keeping 8 MiB each cannot all fit in 40 MiB.
    create_processor(
        client,
        processor_settings("hoarder", "misbehaving", "wide", &[("mode", "hoard")]),
    )
    .await;
    let records: Vec<String> = (0..64).map(|i| format!("r{i}")).collect();
    let keyed = records
        .iter()
        .map(|data| PutRecord {
            partition_key: data.clone(),
            explicit_hash_key: None,
            data: Bytes::from(data.clone()),
        })
        .collect();
    put_all(client, "wide", keyed).await;
    let info = wait_until(client, "hoarder", |info| {
        info.shards
            .iter()
            .any(|s| s.status == "waiting for plugin memory")
    })
    .await;
    let waiting = info
        .shards
        .iter()
        .find(|s| s.status == "waiting for plugin memory")
        .expect("a waiting shard");
    assert!(
        waiting
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("plugins_memory_bytes_max"),
        "{info:#?}"
    );
    let slowest = slowest_put(client, "wide", Duration::from_secs(1)).await;
    assert!(slowest < HEALTHY_PUT_MAX, "{slowest:?}");
    let admin = test.server.admin_addr().expect("admin listener");
    let (_, body) = crate::metrics::http_get(admin, "/metrics").await;
    let held = crate::metrics::metric(&body, "weir_plugin_memory_bytes");
    assert!(
        held > 8 * 1024 * 1024 && held <= BUDGET,
        "instances hold {held} bytes of a {BUDGET}-byte budget"
    );
}

/// A component padded with a custom section to `bytes` in all.
fn padded_component(bytes: usize) -> Bytes {
    let mut component = plugin("json_filter").to_vec();
    let name = b"padding";
    let header = 1 + 5 + 1 + name.len();
    let payload = bytes - component.len() - header;
    let section = 1 + name.len() + payload;
    component.push(0);
    // A 5-byte LEB128 section size, so `header` is exact.
    let mut size = section as u32;
    for i in 0..5 {
        let low = (size & 0x7f) as u8;
        size >>= 7;
        component.push(if i < 4 { low | 0x80 } else { low });
    }
    component.push(name.len() as u8);
    component.extend_from_slice(name);
    component.resize(bytes, 0);
    component.into()
}

#[tokio::test]
async fn uploads_up_to_plugin_bytes_max_work_and_larger_ones_are_refused_by_length() {
    let test = TestServer::start().await;
    let client = &test.client;
    let eight_mib = padded_component(8 * 1024 * 1024);
    client
        .add_plugin("large", eight_mib)
        .await
        .expect("an 8 MiB component is accepted");

    let started = Instant::now();
    let error = client
        .add_plugin("huge", padded_component(17 * 1024 * 1024))
        .await
        .expect_err("over plugin_bytes_max");
    match error {
        ClientError::Server { code, message } => {
            assert_eq!(code, ErrorCode::InvalidPlugin);
            assert!(message.contains("plugin_bytes_max"), "{message}");
        }
        other => panic!("expected a typed refusal, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn components_past_the_compiler_bounds_are_refused_before_compiling() {
    let test = TestServer::start_with(|config| {
        config.processing.plugin_function_bytes_max = 1024;
    })
    .await;
    let error = test
        .client
        .add_plugin("filter", plugin("json_filter"))
        .await
        .expect_err("a function over 1 KiB");
    assert!(
        error.to_string().contains("plugin_function_bytes_max"),
        "{error}"
    );
}

/// The count-by-key aggregate of `key` in the open window.
async fn counted(client: &Client, processor: &str, key: &str) -> u64 {
    client
        .state(processor, None, Some("count/"), 100)
        .await
        .expect("state")
        .iter()
        .filter(|entry| entry.key.ends_with(&format!("/{key}")))
        .map(|entry| {
            entry
                .value
                .split_once(' ')
                .and_then(|(count, _)| count.parse::<u64>().ok())
                .expect("count")
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_a_model_of_their_input_under_every_failure_policy_across_a_sigkill() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    client
        .add_plugin("count-by-key", plugin("count_by_key"))
        .await
        .expect("add");
    // Two good records, one without the key field, two good: in one batch.
    let batch = [
        r#"{"user":"a"}"#,
        r#"{"user":"a"}"#,
        r#"{"other":1}"#,
        r#"{"user":"a"}"#,
        r#"{"user":"a"}"#,
    ];
    let policies = [
        ("halt", FailurePolicy::Halt),
        ("skip", FailurePolicy::Skip),
        ("dead-letter", FailurePolicy::DeadLetter),
    ];
    for (name, policy) in policies {
        let stream = format!("in-{name}");
        client
            .create_stream(&stream, 1, Default::default())
            .await
            .expect("create");
        put_texts(&client, &stream, &batch).await;
        let mut settings = processor_settings(
            name,
            "count-by-key",
            &stream,
            &[("window-ms", "3600000"), ("key-field", "user")],
        );
        settings.on_error = policy;
        create_processor(&client, settings).await;
    }
    wait_until(&client, "halt", |info| info.shards[0].status == "halted").await;
    for name in ["skip", "dead-letter"] {
        wait_until(&client, name, consumed(5)).await;
    }
    // Halt keeps what came before the bad record; the others count every
    // good record, the ones after the failure included.
    let model = [("halt", 2), ("skip", 4), ("dead-letter", 4)];
    for (name, count) in model {
        assert_eq!(counted(&client, name, "a").await, count, "{name}");
    }

    // Across a SIGKILL: more of the same, and the totals follow the model.
    server.kill();
    server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    for name in ["skip", "dead-letter"] {
        put_texts(&client, &format!("in-{name}"), &batch).await;
        wait_until(&client, name, consumed(10)).await;
        assert_eq!(counted(&client, name, "a").await, 8, "{name}");
    }
    assert_eq!(counted(&client, "halt", "a").await, 2);
    let dead = texts(&client, "dead-letter.dead-letter").await;
    assert_eq!(dead.len(), 2, "{dead:?}");
}
