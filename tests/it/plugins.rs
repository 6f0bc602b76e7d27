//! Plugins end to end: upload, processors over every shard, the example
//! plugins, chaining, failure policies, fuel, and exactly-once across a
//! SIGKILL.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use weir_client::admin::{
    AdminRequest, AdminResponse, FailurePolicy, ProcessorInfo, ProcessorLimits, ProcessorSettings,
};
use weir_client::{Client, ErrorCode, Position, PutRecord, Record};

use crate::support::{
    ServerProcess, TestServer, create_processor, describe_processor, eventually, plugin,
    processor_settings, purchase_filter, put_all, read_all, stream_with_plugins,
};

/// Waits until the processor has consumed `records` source records.
async fn wait_for_input(client: &Client, name: &str, records: u64) -> ProcessorInfo {
    let done = eventually(Duration::from_secs(30), || async {
        describe_processor(client, name)
            .await
            .shards
            .iter()
            .map(|s| s.records_in)
            .sum::<u64>()
            >= records
    })
    .await;
    let info = describe_processor(client, name).await;
    assert!(
        done,
        "processor {name} did not consume {records} records: {info:#?}"
    );
    info
}

async fn put(client: &Client, stream: &str, records: &[(&str, String)]) {
    let records = records
        .iter()
        .map(|(key, data)| PutRecord {
            partition_key: (*key).into(),
            explicit_hash_key: None,
            data: Bytes::from(data.clone()),
        })
        .collect();
    put_all(client, stream, records).await;
}

async fn all_texts(client: &Client, stream: &str) -> Vec<String> {
    let mut all: Vec<(u32, Record)> = read_all(client, stream)
        .await
        .into_iter()
        .flat_map(|(shard, records)| records.into_iter().map(move |r| (shard, r)))
        .collect();
    all.sort_by_key(|(shard, r)| (*shard, r.sequence));
    all.into_iter()
        .map(|(_, r)| String::from_utf8_lossy(&r.data).into_owned())
        .collect()
}

#[tokio::test]
async fn json_filter_keeps_matching_records_once_in_order() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("clicks", 2, Default::default())
        .await
        .expect("create");
    let info = client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("add plugin");
    assert_eq!(info.wit, "weir:plugin@0.1.0");
    // Uploading the same component again under the same name is a no-op.
    let again = client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("re-add");
    assert_eq!(again.sha256, info.sha256);

    create_processor(client, purchase_filter("buys", "clicks")).await;
    let records: Vec<(String, String)> = (0..300)
        .map(|i| {
            let event = if i % 3 == 0 { "purchase" } else { "view" };
            (
                format!("user-{}", i % 17),
                format!(r#"{{"event":"{event}","i":{i}}}"#),
            )
        })
        .collect();
    for chunk in records.chunks(100) {
        let chunk: Vec<(&str, String)> =
            chunk.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        put(client, "clicks", &chunk).await;
    }
    let info = wait_for_input(client, "buys", 300).await;
    let fuel: u64 = info.shards.iter().map(|s| s.fuel_used).sum();
    assert!(fuel > 0, "fuel use is measured");
    assert_eq!(info.shards.iter().map(|s| s.records_out).sum::<u64>(), 100);

    // Every purchase exactly once; per key, in the order produced.
    let output = read_all(client, "buys.out").await;
    let mut seen_per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for records in output.values() {
        for record in records {
            let text = String::from_utf8_lossy(&record.data);
            assert!(text.contains("purchase"), "{text}");
            let i: u64 = text
                .split("\"i\":")
                .nth(1)
                .and_then(|s| s.trim_end_matches('}').parse().ok())
                .expect("index");
            seen_per_key
                .entry(record.partition_key.clone())
                .or_default()
                .push(i);
        }
    }
    let mut all: Vec<u64> = seen_per_key.values().flatten().copied().collect();
    for indexes in seen_per_key.values() {
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "order within a key changed"
        );
    }
    all.sort_unstable();
    assert_eq!(all, (0..300).step_by(3).collect::<Vec<u64>>());

    // Processor progress is in the metrics too.
    let admin = test.server.admin_addr().expect("admin listener");
    let (_, body) = crate::metrics::http_get(admin, "/metrics").await;
    let consumed: u64 = (0..2)
        .map(|shard| {
            crate::metrics::metric(
                &body,
                &format!("weir_processor_records_in_total{{processor=\"buys\",shard=\"{shard}\"}}"),
            )
        })
        .sum();
    assert_eq!(consumed, 300);

    // Nor can a stream a processor reads or writes.
    for stream in ["clicks", "buys.out"] {
        let error = client.delete_stream(stream).await.expect_err("in use");
        assert_eq!(error.code(), Some(ErrorCode::StreamInUse), "{error}");
        assert!(
            error.to_string().contains("`weir processor delete buys`"),
            "names the exact command: {error}"
        );
    }

    // A plugin in use cannot be removed.
    let error = client
        .admin(AdminRequest::DeletePlugin {
            name: "json-filter".into(),
        })
        .await
        .expect_err("in use");
    assert_eq!(error.code(), Some(ErrorCode::PluginInUse));
}

async fn seek_processor(
    client: &Client,
    name: &str,
    to: Position,
    shard: Option<u32>,
) -> Result<ProcessorInfo, weir_client::ClientError> {
    match client
        .admin(AdminRequest::SeekProcessor {
            name: name.into(),
            to,
            shard,
        })
        .await?
    {
        AdminResponse::Processor(info) => Ok(*info),
        other => panic!("unexpected {other:?}"),
    }
}

/// `processor seek` moves a processor's cursor: back, and the records are
/// processed again; forward, and they are skipped; a position a shard
/// cannot take is refused and moves nothing.
#[tokio::test]
async fn seek_moves_a_processors_cursor_back_and_forward() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("clicks", 1, Default::default())
        .await
        .expect("create");
    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("add plugin");
    create_processor(client, purchase_filter("buys", "clicks")).await;
    let purchases = |range: std::ops::Range<u32>| -> Vec<(&'static str, String)> {
        range
            .map(|i| ("k", format!(r#"{{"event":"purchase","i":{i}}}"#)))
            .collect()
    };
    put(client, "clicks", &purchases(0..10)).await;
    wait_for_input(client, "buys", 10).await;

    let info = seek_processor(client, "buys", Position::AtSequence(4), None)
        .await
        .expect("seek back");
    assert_eq!(info.shards[0].cursor, 4, "{info:#?}");
    let done = eventually(Duration::from_secs(30), || async {
        all_texts(client, "buys.out").await.len() == 16
    })
    .await;
    assert!(done, "records 4..10 processed again");
    let texts = all_texts(client, "buys.out").await;
    assert_eq!(texts[10], r#"{"event":"purchase","i":4}"#);

    // Paused: records arrive, the cursor jumps past them, and resuming
    // processes only what comes after. It stays paused through the seek.
    client
        .admin(AdminRequest::PauseProcessor {
            name: "buys".into(),
        })
        .await
        .expect("pause");
    put(client, "clicks", &purchases(10..15)).await;
    let info = seek_processor(client, "buys", Position::Latest, Some(0))
        .await
        .expect("seek to latest");
    assert!(info.paused);
    assert_eq!(info.shards[0].cursor, 15, "{info:#?}");
    assert_eq!(info.shards[0].status, "paused", "{info:#?}");

    for (to, shard, code) in [
        (Position::AtSequence(99), None, ErrorCode::InvalidPosition),
        (Position::TrimHorizon, Some(3), ErrorCode::ShardNotFound),
    ] {
        let error = seek_processor(client, "buys", to, shard)
            .await
            .expect_err("refused");
        assert_eq!(error.code(), Some(code), "{error}");
    }
    let error = seek_processor(client, "nope", Position::Latest, None)
        .await
        .expect_err("no such processor");
    assert_eq!(error.code(), Some(ErrorCode::ProcessorNotFound), "{error}");
    assert_eq!(
        describe_processor(client, "buys").await.shards[0].cursor,
        15
    );

    client
        .admin(AdminRequest::ResumeProcessor {
            name: "buys".into(),
        })
        .await
        .expect("resume");
    put(client, "clicks", &purchases(15..16)).await;
    wait_for_input(client, "buys", 17).await;
    let texts = all_texts(client, "buys.out").await;
    assert_eq!(texts.len(), 17, "{texts:?}");
    assert_eq!(texts[16], r#"{"event":"purchase","i":15}"#);
}

/// Processors forming a loop (stored before Weir refused loops) do not
/// send records round when the server starts: the one that closed the
/// loop starts paused; the others run.
#[tokio::test]
async fn a_loop_stored_before_loops_were_refused_is_paused_at_start() {
    let test = TestServer::start().await;
    stream_with_plugins(&test.client, "a", 1, &[("json-filter", "json_filter")]).await;
    create_processor(&test.client, purchase_filter("first", "a")).await;
    let second = ProcessorSettings {
        output: Some("b".into()),
        ..purchase_filter("second", "first.out")
    };
    create_processor(&test.client, second).await;
    // Point `second` back at `a`, as an older Weir let it.
    let test = test
        .restart_after(|dir| {
            let storage =
                weir::storage::Storage::open(&dir.join("db"), weir::StorageConfig::default())
                    .expect("open storage");
            let processing = storage.processing();
            for bytes in processing.processor_definitions().expect("definitions") {
                let mut definition: serde_json::Value =
                    serde_json::from_slice(&bytes).expect("a JSON definition");
                if definition["settings"]["name"] == "second" {
                    definition["output"] = "a".into();
                    let bytes = serde_json::to_vec(&definition).expect("encode");
                    processing
                        .put_processor("second", &bytes)
                        .expect("store the loop");
                }
            }
            storage.shutdown().expect("shutdown");
        })
        .await;
    let client = &test.client;
    assert!(describe_processor(client, "second").await.paused);
    assert!(!describe_processor(client, "first").await.paused);
    let error = client
        .admin(AdminRequest::ResumeProcessor {
            name: "second".into(),
        })
        .await
        .expect_err("resuming it would start the loop");
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
    assert!(
        error
            .to_string()
            .contains("first.out -> a (second) -> first.out (first)"),
        "{error}"
    );

    put(client, "a", &[("k", r#"{"event":"purchase"}"#.to_owned())]).await;
    wait_for_input(client, "first", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(all_texts(client, "a").await.len(), 1, "nothing went round");
    assert_eq!(all_texts(client, "first.out").await.len(), 1);
}

#[tokio::test]
async fn bad_plugins_and_configs_are_rejected_with_reasons() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .create_stream("s", 1, Default::default())
        .await
        .expect("create");

    let error = client
        .add_plugin("junk", Bytes::from_static(b"definitely not wasm"))
        .await
        .expect_err("junk");
    assert_eq!(error.code(), Some(ErrorCode::InvalidPlugin));
    assert!(
        error.to_string().contains("not a WebAssembly component"),
        "{error}"
    );

    // A core module (version 1, layer 0) is Wasm but not a component.
    let core_module = Bytes::from_static(b"\0asm\x01\0\0\0");
    let error = client
        .add_plugin("core", core_module)
        .await
        .expect_err("core module");
    assert!(error.to_string().contains("core module"), "{error}");

    let error = client
        .add_plugin("sockets", plugin("bad_import"))
        .await
        .expect_err("unsupported import");
    assert_eq!(error.code(), Some(ErrorCode::InvalidPlugin));
    assert!(
        error.to_string().contains("weir:plugin/network"),
        "names the import: {error}"
    );

    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("add");
    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(processor_settings(
            "p",
            "json-filter",
            "s",
            &[("field", "x"), ("op", "resembles"), ("value", "y")],
        ))))
        .await
        .expect_err("bad config");
    assert_eq!(error.code(), Some(ErrorCode::InvalidConfig));
    assert!(
        error.to_string().contains("unknown op \"resembles\""),
        "the plugin's message: {error}"
    );

    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(processor_settings(
            "p",
            "nope",
            "s",
            &[],
        ))))
        .await
        .expect_err("unknown plugin");
    assert_eq!(error.code(), Some(ErrorCode::PluginNotFound));
    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(processor_settings(
            "p",
            "json-filter",
            "missing",
            &[("field", "x"), ("op", "exists")],
        ))))
        .await
        .expect_err("unknown stream");
    assert_eq!(error.code(), Some(ErrorCode::StreamNotFound));

    // Writing back into a stream upstream of itself would send records
    // round for ever (it filled the disk): refused, naming the loop.
    let exists = [("field", "x"), ("op", "exists")];
    create_processor(
        client,
        processor_settings("there", "json-filter", "s", &exists),
    )
    .await;
    let back = ProcessorSettings {
        output: Some("s".into()),
        ..processor_settings("back", "json-filter", "there.out", &exists)
    };
    let error = client
        .admin(AdminRequest::CreateProcessor(Box::new(back)))
        .await
        .expect_err("a loop");
    assert_eq!(error.code(), Some(ErrorCode::InvalidArgument));
    assert!(
        error.to_string().contains(
            "processor back would feed its own source: there.out -> s (back) -> there.out (there)"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn log_grep_keeps_matching_lines_at_or_above_a_level() {
    let test = TestServer::start().await;
    let client = &test.client;
    stream_with_plugins(client, "logs", 1, &[("log-grep", "log_grep")]).await;
    create_processor(
        client,
        processor_settings(
            "alerts",
            "log-grep",
            "logs",
            &[("pattern", "disk|memory"), ("min-level", "warn")],
        ),
    )
    .await;
    let lines = [
        "2026-11-26T10:00:00Z INFO disk check ok",
        "2026-11-26T10:00:01Z WARN disk 91% full",
        "2026-11-26T10:00:02Z ERROR memory exhausted",
        "2026-11-26T10:00:03Z ERROR network down",
        "[warning] disk slow",
    ];
    let records: Vec<(&str, String)> = lines.iter().map(|l| ("host-1", (*l).to_owned())).collect();
    put(client, "logs", &records).await;
    wait_for_input(client, "alerts", 5).await;
    assert_eq!(
        all_texts(client, "alerts.out").await,
        vec![
            lines[1].to_owned(),
            lines[2].to_owned(),
            lines[4].to_owned()
        ]
    );
}

/// Waits until the current time is early in a `window_ms` window, so a
/// quick burst of records lands in one window.
async fn align_to_window(window_ms: u64) {
    loop {
        let offset = weir::storage::now_ms() % window_ms;
        if offset < window_ms / 4 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(window_ms - offset + 5)).await;
    }
}

#[tokio::test]
async fn count_by_key_emits_closed_windows_and_exposes_the_open_one() {
    let test =
        TestServer::start_with(|config| config.processing.processor_idle_tick_ms = 100).await;
    let client = &test.client;
    stream_with_plugins(client, "ads", 2, &[("count-by-key", "count_by_key")]).await;
    let window_ms = 3_000;
    create_processor(
        client,
        processor_settings(
            "kpis",
            "count-by-key",
            "ads",
            &[
                ("window-ms", "3000"),
                ("key-field", "campaign"),
                ("sum-field", "price"),
            ],
        ),
    )
    .await;

    align_to_window(window_ms).await;
    let mut records = Vec::new();
    for i in 0..10 {
        let (campaign, price) = if i < 6 { ("spring", 2) } else { ("autumn", 3) };
        records.push((
            if i % 2 == 0 { "u1" } else { "u2" },
            format!(r#"{{"campaign":"{campaign}","price":{price}}}"#),
        ));
    }
    put(client, "ads", &records).await;
    wait_for_input(client, "kpis", 10).await;

    // While the window is open its counts are queryable state.
    let state = client
        .state("kpis", None, Some("count/"), 100)
        .await
        .expect("state");
    let mut counts: HashMap<String, u64> = HashMap::new();
    for entry in &state {
        // count/{window_start}/{campaign} -> "{count} {sum}"
        let campaign = entry.key.rsplit('/').next().expect("key").to_owned();
        let count: u64 = entry
            .value
            .split(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .expect("count");
        *counts.entry(campaign).or_default() += count;
    }
    assert_eq!(counts.get("spring"), Some(&6), "{state:?}");
    assert_eq!(counts.get("autumn"), Some(&4), "{state:?}");
    assert_state_size_matches(client, "kpis").await;

    // After the window ends, an idle tick closes it: one record per key per
    // shard, with counts and sums adding up.
    // Each shard closes its own window, so wait until both have.
    let totals = || async {
        let mut totals: HashMap<String, (u64, f64)> = HashMap::new();
        for text in all_texts(client, "kpis.out").await {
            let value: serde_json_lite::Value = text.parse().expect("json");
            let entry = totals.entry(value.key.clone()).or_default();
            entry.0 += value.count;
            entry.1 += value.sum;
        }
        totals
    };
    let closed = eventually(Duration::from_secs(10), || async {
        let totals = totals().await;
        totals.get("spring") == Some(&(6, 12.0)) && totals.get("autumn") == Some(&(4, 12.0))
    })
    .await;
    assert!(
        closed,
        "windows did not close with the right totals: {:?}",
        totals().await
    );
    // Closing the windows deleted their keys; the kept size followed.
    assert_state_size_matches(client, "kpis").await;
}

/// `processor describe`'s state keys and bytes (kept with the cursor, not
/// counted on demand) equal the state actually stored, shard by shard.
async fn assert_state_size_matches(client: &Client, processor: &str) {
    let entries = client
        .state(processor, None, None, 10_000)
        .await
        .expect("state");
    for shard in describe_processor(client, processor).await.shards {
        let stored: Vec<_> = entries.iter().filter(|e| e.shard == shard.shard).collect();
        let bytes: usize = stored.iter().map(|e| e.key.len() + e.value.len()).sum();
        assert_eq!(shard.state_keys, stored.len() as u64, "{shard:?}");
        assert_eq!(shard.state_bytes, bytes as u64, "{shard:?}");
    }
}

/// Just enough JSON for the count-by-key test without another dependency.
mod serde_json_lite {
    pub struct Value {
        pub key: String,
        pub count: u64,
        pub sum: f64,
    }

    use crate::support::json_field as field;

    impl std::str::FromStr for Value {
        type Err = String;

        fn from_str(text: &str) -> Result<Self, String> {
            Ok(Self {
                key: field(text, "key").unwrap_or_default().to_owned(),
                count: field(text, "count")
                    .and_then(|c| c.parse().ok())
                    .ok_or("count")?,
                sum: field(text, "sum")
                    .and_then(|s| s.parse().ok())
                    .ok_or("sum")?,
            })
        }
    }
}

/// Recomputes an audit chain: each record is `HASH DATA` with
/// HASH = SHA-256(previous hash || DATA). Returns the data in order.
fn verify_chain(records: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut previous = vec![0u8; 32];
    let mut data = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let (hash, body) = record.split_once(' ').expect("HASH DATA");
        let expected = Sha256::new()
            .chain_update(&previous)
            .chain_update(body.as_bytes())
            .finalize();
        let expected_hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, expected_hex, "chain broken at output {i}");
        previous = expected.to_vec();
        data.push(body.to_owned());
    }
    data
}

#[tokio::test]
async fn audit_chain_output_verifies() {
    let test = TestServer::start().await;
    let client = &test.client;
    stream_with_plugins(client, "orders", 1, &[("audit-chain", "audit_chain")]).await;
    create_processor(
        client,
        processor_settings("audit", "audit-chain", "orders", &[]),
    )
    .await;
    let records: Vec<(&str, String)> = (0..50)
        .map(|i| ("acct-1", format!("order {i}: buy 10 @ {}", 100 + i)))
        .collect();
    put(client, "orders", &records).await;
    wait_for_input(client, "audit", 50).await;
    let chained = all_texts(client, "audit.out").await;
    let data = verify_chain(&chained);
    assert_eq!(
        data,
        records.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()
    );
    // Tampering with one record breaks verification from there on.
    let mut tampered = chained.clone();
    tampered[10] = tampered[10].replace("buy", "sell");
    assert!(std::panic::catch_unwind(|| verify_chain(&tampered)).is_err());
}

#[tokio::test]
async fn processors_chain_into_a_two_stage_pipeline() {
    let test =
        TestServer::start_with(|config| config.processing.processor_idle_tick_ms = 100).await;
    let client = &test.client;
    stream_with_plugins(
        client,
        "clicks",
        2,
        &[
            ("json-filter", "json_filter"),
            ("count-by-key", "count_by_key"),
        ],
    )
    .await;
    let mut purchases = purchase_filter("purchases", "clicks");
    purchases.output = Some("purchases".into());
    create_processor(client, purchases).await;
    let mut totals = processor_settings(
        "totals",
        "count-by-key",
        "purchases",
        &[("window-ms", "2000"), ("key-field", "campaign")],
    );
    totals.output = Some("totals".into());
    create_processor(client, totals).await;

    align_to_window(2_000).await;
    let records: Vec<(&str, String)> = (0..40)
        .map(|i| {
            let event = if i % 4 == 0 { "purchase" } else { "view" };
            let campaign = if i % 8 == 0 { "a" } else { "b" };
            (
                "user",
                format!(r#"{{"event":"{event}","campaign":"{campaign}"}}"#),
            )
        })
        .collect();
    put(client, "clicks", &records).await;
    let counted = eventually(Duration::from_secs(15), || async {
        let texts = all_texts(client, "totals").await;
        texts
            .iter()
            .map(|t| t.parse::<serde_json_lite::Value>().map_or(0, |v| v.count))
            .sum::<u64>()
            == 10
    })
    .await;
    assert!(
        counted,
        "stage two did not count stage one's 10 purchases: {:?}",
        all_texts(client, "totals").await
    );
}

#[tokio::test]
async fn failure_policies_contain_misbehaving_plugins() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .add_plugin("misbehaving", plugin("misbehaving"))
        .await
        .expect("add");
    let input = [
        ("k", "ok-1".to_owned()),
        ("k", "bad".to_owned()),
        ("k", "ok-2".to_owned()),
    ];

    // (mode, policy, fuel per call): every misbehaviour under some policy;
    // `alloc` gets fuel enough to reach the memory limit first.
    let cases = [
        ("panic", FailurePolicy::Halt, 20_000_000),
        ("loop", FailurePolicy::Skip, 20_000_000),
        ("fail", FailurePolicy::Skip, 20_000_000),
        ("alloc", FailurePolicy::DeadLetter, 20_000_000_000),
        ("oversized", FailurePolicy::DeadLetter, 20_000_000_000),
    ];
    for (mode, policy, fuel) in cases {
        let stream = format!("in-{mode}");
        client
            .create_stream(&stream, 1, Default::default())
            .await
            .expect("create");
        put(client, &stream, &input).await;
        let mut processor = processor_settings(mode, "misbehaving", &stream, &[("mode", mode)]);
        processor.on_error = policy;
        processor.fuel_per_batch_max = Some(fuel);
        processor.memory_bytes_max = Some(32 * 1024 * 1024);
        create_processor(client, processor).await;
    }

    // halt: stops at the bad record, keeps what came before, says why.
    let halted = eventually(Duration::from_secs(20), || async {
        describe_processor(client, "panic").await.shards[0].status == "halted"
    })
    .await;
    let info = describe_processor(client, "panic").await;
    assert!(halted, "{info:#?}");
    assert_eq!(info.shards[0].cursor, 1, "halted at the bad record");
    assert!(
        info.shards[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("record 1"),
        "{info:#?}"
    );
    assert_eq!(all_texts(client, "panic.out").await, vec!["ok-1"]);

    for (mode, expected_error) in [("loop", "out of fuel"), ("fail", "record 1 is bad")] {
        let info = wait_for_input(client, mode, 3).await;
        assert_eq!(
            info.shards[0].failed_sequences,
            vec![1],
            "{mode}: {info:#?}"
        );
        assert!(
            info.shards[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains(expected_error),
            "{mode}: {info:#?}"
        );
        assert_eq!(
            all_texts(client, &format!("{mode}.out")).await,
            vec!["ok-1", "ok-2"],
            "{mode}"
        );
    }

    for (mode, expected_error) in [("alloc", "memory"), ("oversized", "oversized output")] {
        wait_for_input(client, mode, 3).await;
        assert_eq!(
            all_texts(client, &format!("{mode}.out")).await,
            vec!["ok-1", "ok-2"],
            "{mode}"
        );
        let dead = all_texts(client, &format!("{mode}.dead-letter")).await;
        assert_eq!(dead.len(), 1, "{mode}: {dead:?}");
        assert!(
            dead[0].contains(r#""data":"bad""#) && dead[0].contains(r#""sequence":1"#),
            "{dead:?}"
        );
        assert!(dead[0].contains(expected_error), "{mode}: {dead:?}");
    }

    // The server kept serving throughout, and a halted processor resumes.
    client
        .put_records("in-panic", None, vec![])
        .await
        .expect_err("empty batch is refused, not ignored");
    client
        .admin(AdminRequest::ResumeProcessor {
            name: "panic".into(),
        })
        .await
        .expect("resume");
    let halted_again = eventually(Duration::from_secs(20), || async {
        describe_processor(client, "panic").await.shards[0].status == "halted"
    })
    .await;
    assert!(
        halted_again,
        "a resumed processor meets the same bad record and halts again"
    );
}

#[tokio::test]
async fn fuel_rate_throttles_a_processor() {
    let test = TestServer::start().await;
    let client = &test.client;
    client
        .add_plugin("json-filter", plugin("json_filter"))
        .await
        .expect("add");
    for name in ["slow", "fast"] {
        client
            .create_stream(name, 1, Default::default())
            .await
            .expect("create");
        let records: Vec<(&str, String)> =
            (0..400).map(|i| ("k", format!(r#"{{"i":{i}}}"#))).collect();
        put(client, name, &records).await;
    }
    let mut slow = processor_settings(
        "slow-p",
        "json-filter",
        "slow",
        &[("field", "i"), ("op", "exists")],
    );
    slow.fuel_per_sec = Some(200_000);
    slow.fuel_per_batch_max = Some(50_000_000);
    let started = std::time::Instant::now();
    create_processor(client, slow).await;
    create_processor(
        client,
        processor_settings(
            "fast-p",
            "json-filter",
            "fast",
            &[("field", "i"), ("op", "exists")],
        ),
    )
    .await;

    wait_for_input(client, "fast-p", 400).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow = describe_processor(client, "slow-p").await;
    let shard = &slow.shards[0];
    assert!(
        shard.records_in > 0,
        "a throttled processor still makes progress"
    );
    assert!(shard.records_in < 400, "not throttled: {slow:#?}");
    // The rate over the elapsed time, one second's burst, and one call's
    // overshoot (a call's cost is known only when it returns).
    let fuel_per_record = shard.fuel_used / shard.records_in;
    let allowed = 200_000 * (started.elapsed().as_secs() + 2) + 16 * fuel_per_record;
    assert!(
        shard.fuel_used <= allowed,
        "burned {} fuel, allowed {allowed}",
        shard.fuel_used
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_processing_yields_each_output_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    stream_with_plugins(&client, "ledger", 1, &[("audit-chain", "audit_chain")]).await;
    let count = 2_000;
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let records: Vec<(&str, String)> = chunk
            .iter()
            .map(|i| ("acct", format!("entry {i}")))
            .collect();
        put(&client, "ledger", &records).await;
    }
    // Throttled so the kill lands mid-way.
    let mut audit = processor_settings("audit", "audit-chain", "ledger", &[]);
    audit.fuel_per_sec = Some(5_000_000);
    create_processor(&client, audit).await;
    let started = eventually(Duration::from_secs(20), || async {
        describe_processor(&client, "audit").await.shards[0].records_in > 100
    })
    .await;
    assert!(started);
    server.kill();

    // The restart would load the plugin from the compiled-artifact cache:
    // damage it as a torn write at a power cut would (a run of zeros in
    // the middle); the server must notice and compile the plugin again,
    // not run the damaged machine code.
    let cached = std::fs::read_dir(dir.path().join("compiled"))
        .expect("compiled cache")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .expect("no compiled artifact was cached");
    let mut damaged = std::fs::read(&cached).expect("read artifact");
    let middle = damaged.len() / 2;
    let run = (damaged.len() / 4).min(64 << 10);
    damaged[middle - run / 2..middle + run / 2].fill(0);
    std::fs::write(&cached, &damaged).expect("damage artifact");
    let server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    let before = describe_processor(&client, "audit").await.shards[0].records_in;
    assert!(before < count, "the kill came too late to test anything");
    // Lift the throttle by re-creating nothing: just wait, resumed from the cursor.
    let finished = eventually(Duration::from_secs(120), || async {
        describe_processor(&client, "audit").await.shards[0].records_in >= count
    })
    .await;
    assert!(
        finished,
        "{:#?}",
        describe_processor(&client, "audit").await
    );
    let rewritten = std::fs::read(&cached).expect("artifact");
    assert_ne!(rewritten, damaged, "the damaged artifact was not replaced");
    let chained = all_texts(&client, "audit.out").await;
    let data = verify_chain(&chained);
    assert_eq!(data.len(), count as usize, "each input exactly once");
    for (i, body) in data.iter().enumerate() {
        assert_eq!(body, &format!("entry {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_processors_resume_from_their_cursors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    stream_with_plugins(&client, "events", 2, &[("json-filter", "json_filter")]).await;
    let records: Vec<(String, String)> = (0..600)
        .map(|i| (format!("k{}", i % 13), format!(r#"{{"n":{i}}}"#)))
        .collect();
    for chunk in records.chunks(200) {
        let chunk: Vec<(&str, String)> =
            chunk.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        put(&client, "events", &chunk).await;
    }
    // Throttled so the shutdown lands mid-way through the input.
    let mut filter = processor_settings(
        "f",
        "json-filter",
        "events",
        &[("field", "n"), ("op", "exists")],
    );
    filter.fuel_per_sec = Some(1_000_000);
    create_processor(&client, filter).await;
    let started = eventually(Duration::from_secs(20), || async {
        describe_processor(&client, "f")
            .await
            .shards
            .iter()
            .map(|s| s.records_in)
            .sum::<u64>()
            > 50
    })
    .await;
    assert!(started);

    let stopping = std::time::Instant::now();
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        stopping.elapsed()
    );

    let server = ServerProcess::spawn(dir.path(), &[]);
    let client = server.connect().await;
    let resumed_at: u64 = describe_processor(&client, "f")
        .await
        .shards
        .iter()
        .map(|s| s.records_in)
        .sum();
    assert!(resumed_at > 50, "the cursor survived the shutdown");
    wait_for_input(&client, "f", 600).await;
    let mut outputs: Vec<u64> = all_texts(&client, "f.out")
        .await
        .iter()
        .map(|t| {
            t.trim_start_matches("{\"n\":")
                .trim_end_matches('}')
                .parse()
                .expect("n")
        })
        .collect();
    outputs.sort_unstable();
    assert_eq!(
        outputs,
        (0..600).collect::<Vec<u64>>(),
        "every record processed exactly once"
    );
}

#[tokio::test]
async fn a_processor_over_its_state_budget_halts_without_skipping_input() {
    let test =
        TestServer::start_with(|config| config.processing.processor_state_bytes_max = 400).await;
    let client = &test.client;
    stream_with_plugins(client, "users", 1, &[("count-by-key", "count_by_key")]).await;
    create_processor(
        client,
        processor_settings(
            "per-user",
            "count-by-key",
            "users",
            &[("window-ms", "3600000")],
        ),
    )
    .await;
    // Each new partition key adds a state entry of ~40 bytes; 10 fit.
    for i in 0..40 {
        let key = format!("user-{i:04}");
        put(client, "users", &[(key.as_str(), "{}".to_owned())]).await;
    }
    let halted = eventually(Duration::from_secs(15), || async {
        describe_processor(client, "per-user").await.shards[0].status == "halted"
    })
    .await;
    let shard = describe_processor(client, "per-user")
        .await
        .shards
        .remove(0);
    assert!(halted, "{shard:?}");
    let error = shard.last_error.clone().expect("reason");
    assert!(error.contains("processor_state_bytes_max (400)"), "{error}");
    assert!(shard.state_bytes <= 400, "{shard:?}");
    assert!(
        shard.cursor < 40,
        "the records that did not fit were not skipped: {shard:?}"
    );

    // Raising the processor's own budget restarts it where it stopped; it
    // keeps its state and goes on without a server restart.
    let updated = match client
        .admin(AdminRequest::UpdateProcessor {
            name: "per-user".into(),
            limits: ProcessorLimits {
                state_bytes_max: Some(4_000),
                ..Default::default()
            },
        })
        .await
        .expect("update")
    {
        AdminResponse::Processor(info) => info,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(updated.state_bytes_max, 4_000);
    wait_for_input(client, "per-user", 40).await;
    let shard = describe_processor(client, "per-user")
        .await
        .shards
        .remove(0);
    assert_eq!(shard.status, "running", "{shard:?}");
    assert_eq!(shard.records_failed, 0, "nothing skipped: {shard:?}");
    assert!(shard.state_keys >= 40, "a count per user: {shard:?}");
    assert_state_size_matches(client, "per-user").await;

    // A limit of zero is refused with the setting named.
    let error = client
        .admin(AdminRequest::UpdateProcessor {
            name: "per-user".into(),
            limits: ProcessorLimits {
                fuel_per_sec: Some(0),
                ..Default::default()
            },
        })
        .await
        .expect_err("zero fuel");
    assert!(error.to_string().contains("fuel-per-sec"), "{error}");
}

/// State storage cannot answer (it is being reopened after a failed write):
/// the plugin's call fails, so the worker redoes the batch later. Answering
/// "absent" would let an aggregate start counting from zero again and
/// overwrite the stored total.
#[test]
fn a_state_read_storage_cannot_answer_fails_the_call() {
    use weir::plugin::{InstanceLimits, PluginLog, PluginRuntime, StateBacking};
    use weir_proto::batch::{BatchRecord, InputWriter};

    struct Unavailable;
    impl StateBacking for Unavailable {
        fn get(&self, _key: &[u8]) -> Result<Option<Vec<u8>>, String> {
            Err("storage is being reopened".into())
        }
    }

    let cache = tempfile::tempdir().expect("cache dir");
    let runtime = PluginRuntime::new(cache.path().to_owned()).expect("runtime");
    let component = plugin("count_by_key");
    let loaded = runtime
        .load("count-by-key-test", || Ok(component.to_vec()))
        .expect("load");
    let limits = InstanceLimits {
        fuel_per_call_max: u64::MAX / 2,
        memory_bytes_max: 64 * 1024 * 1024,
        call_timeout_ms: 10_000,
        state_key_bytes_max: 1024,
        state_value_bytes_max: 1024 * 1024,
    };
    let mut instance = runtime
        .instantiate(&loaded, limits, PluginLog::new("test", 100))
        .expect("instantiate");
    instance.set_state_backing(Box::new(Unavailable));
    let config = [("window-ms".to_owned(), "60000".to_owned())];
    instance.init(&config).expect("init");
    let mut input = InputWriter::new();
    input.push(&BatchRecord {
        sequence: 0,
        timestamp_ms: 1_000,
        partition_key: "user-1",
        data: b"{}",
    });
    let error = instance
        .process(&input.finish(), u64::MAX / 2)
        .expect_err("the call fails");
    assert!(
        format!("{error:?}").contains("storage is being reopened"),
        "{error:?}"
    );
    assert!(instance.take_state_writes().is_empty());
}

/// `component` as if built against contract `version`: every
/// `weir:plugin/…@0.1.0` name renamed (the versions have the same length).
fn built_against(component: &[u8], version: &str) -> Bytes {
    let (from, to) = (b"@0.1.0".as_slice(), format!("@{version}").into_bytes());
    assert_eq!(from.len(), to.len());
    let mut bytes = component.to_vec();
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(from.len()).position(|w| w == from) {
        let start = at + found;
        bytes[start..start + to.len()].copy_from_slice(&to);
        at = start + to.len();
    }
    bytes.into()
}

#[tokio::test]
async fn plugins_of_the_same_minor_contract_version_are_accepted() {
    let test = TestServer::start().await;
    let client = &test.client;
    let filter = plugin("json_filter");
    let info = client
        .add_plugin("patch-ahead", built_against(&filter, "0.1.7"))
        .await
        .expect("a later patch version of the contract is accepted");
    assert_eq!(info.wit, "weir:plugin@0.1.7");
    stream_with_plugins(client, "in", 1, &[]).await;
    create_processor(
        client,
        processor_settings(
            "patched",
            "patch-ahead",
            "in",
            &[("field", "kind"), ("op", "equals"), ("value", "buy")],
        ),
    )
    .await;
    put(client, "in", &[("k", r#"{"kind":"buy"}"#.to_owned())]).await;
    wait_for_input(client, "patched", 1).await;
    assert_eq!(
        all_texts(client, "patched.out").await,
        [r#"{"kind":"buy"}"#]
    );

    let error = client
        .add_plugin("minor-ahead", built_against(&filter, "0.2.0"))
        .await
        .expect_err("another minor version is refused");
    assert!(
        error.to_string().contains("0.2.0") && error.to_string().contains("0.1.x"),
        "{error}"
    );
}

/// The example plugins' own unit tests — run natively through the SDK's
/// `testing::Harness`, as a plugin author runs them with `cargo test` —
/// are part of the suite.
#[test]
fn the_example_plugins_own_tests_pass_natively() {
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(&plugins)
        .args(["test", "--workspace", "--target-dir"])
        .arg(plugins.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run cargo test in plugins/");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let passed: u32 = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split(' ').next()?.parse::<u32>().ok())
        .sum();
    assert!(
        passed >= 5,
        "count-by-key's and json-filter's tests ran: {stdout}"
    );
}
