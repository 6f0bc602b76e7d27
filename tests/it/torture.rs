//! Crash torture: SIGKILL the server again and again at random moments
//! while idempotent producers write and a two-stage pipeline (a filter,
//! then an aggregate) runs, and check after every restart that nothing
//! acked is lost, nothing is stored twice and every processor output
//! exists exactly once; at the end the aggregate's state must equal a
//! model computed from the input. It runs in both durability modes, and
//! checks at every restart that no processor cursor is ahead of the
//! outputs it committed with. A second test kills the very first start
//! at random moments and checks the data directory still starts.
//!
//! It prints its seed; `WEIR_TORTURE_SEED=<seed>` repeats the kill
//! schedule and the data (thread timing still varies).
//! `WEIR_TORTURE_ROUNDS=<n>` runs longer (a soak); CI runs 4 rounds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_client::admin::ProcessorSettings;
use weir_client::{Client, ProducerConfig};

use crate::support::{
    ServerProcess, create_processor, describe_processor, eventually, json_field as field, plugin,
    processor_settings, read_all,
};

const ROUNDS_DEFAULT: u64 = 3;
const PRODUCERS: u64 = 3;
const KEYS: u64 = 8;
/// Long enough that no aggregate window closes during a run.
const WINDOW_MS: &str = "3600000";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The record a producer sends as its `index`th: decided by the seed alone.
struct Event {
    id: String,
    key: String,
    buy: bool,
    amount: u64,
}

impl Event {
    fn new(seed: u64, producer: u64, index: u64) -> Self {
        let mix = (seed ^ (producer << 48) ^ index).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            id: format!("p{producer}-{index}"),
            key: format!("k{}", (mix >> 8) % KEYS),
            buy: (mix >> 20).is_multiple_of(3),
            amount: (mix >> 32) % 100 + 1,
        }
    }

    fn json(&self) -> String {
        let kind = if self.buy { "buy" } else { "view" };
        format!(
            r#"{{"id":"{}","key":"{}","kind":"{kind}","amount":{}}}"#,
            self.id, self.key, self.amount
        )
    }
}

/// Acked records: id -> (shard, sequence, data).
type Acked = Arc<Mutex<HashMap<String, (u32, u64, Bytes)>>>;

async fn produce(client: Client, producer: u64, seed: u64, acked: Acked, stop: Arc<AtomicBool>) {
    let config = ProducerConfig {
        linger: Duration::from_millis(2),
        // One batch at a time keeps each producer's records in order per
        // shard, which the checks rely on.
        in_flight_batches_max: 1,
        retries_max: 1_000,
        retry_backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let sender = client.producer("events", config);
    let mut waiting = Vec::new();
    let mut index = 0;
    while !stop.load(Ordering::Relaxed) {
        let event = Event::new(seed, producer, index);
        let data = Bytes::from(event.json());
        let Ok(ack) = sender.send(event.key.clone(), data.clone()).await else {
            break;
        };
        let acked = acked.clone();
        waiting.push(tokio::spawn(async move {
            if let Ok(ack) = ack.await {
                acked
                    .lock()
                    .expect("acked")
                    .insert(event.id, (ack.shard, ack.sequence, data));
            }
        }));
        index += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = sender.flush().await;
    for ack in waiting {
        let _ = ack.await;
    }
}

/// Stored records of `stream` by id: (shard, sequence, data). Panics on a
/// duplicate id.
async fn stored_by_id(client: &Client, stream: &str) -> HashMap<String, (u32, u64, Bytes)> {
    let mut by_id = HashMap::new();
    for (shard, records) in read_all(client, stream).await {
        for record in records {
            let text = String::from_utf8_lossy(&record.data).into_owned();
            let id = field(&text, "id").expect("record has an id").to_owned();
            let previous = by_id.insert(id.clone(), (shard, record.sequence, record.data));
            assert!(previous.is_none(), "{stream}: record {id} stored twice");
        }
    }
    by_id
}

/// What must hold at any moment after a restart.
async fn check_invariants(client: &Client, acked: &Acked, round: u64, seed: u64) {
    let context = format!("round {round}, seed {seed}");
    // The producers keep writing meanwhile, so read in causal order: what
    // was acked and the filter's cursors before the outputs, the outputs
    // before their inputs.
    let acked = acked.lock().expect("acked").clone();
    let cursors: HashMap<u32, u64> = describe_processor(client, "buys")
        .await
        .shards
        .iter()
        .map(|shard| (shard.shard, shard.cursor))
        .collect();
    let outputs = stored_by_id(client, "buys").await;
    let events = stored_by_id(client, "events").await;
    // Every buy the cursor has moved past is readable in the output.
    for (id, (shard, sequence, data)) in &events {
        let passed = cursors.get(shard).is_some_and(|cursor| sequence < cursor);
        if passed && field(&String::from_utf8_lossy(data), "kind") == Some("buy") {
            assert!(
                outputs.contains_key(id),
                "{context}: the cursor of shard {shard} passed {id} but its output is not readable"
            );
        }
    }
    for (id, (shard, sequence, data)) in &acked {
        let stored = events
            .get(id)
            .unwrap_or_else(|| panic!("{context}: acked record {id} lost"));
        assert_eq!(
            stored,
            &(*shard, *sequence, data.clone()),
            "{context}: acked record {id} changed"
        );
    }
    // Each producer's records are in order within a shard.
    let mut last: HashMap<(u32, String), u64> = HashMap::new();
    let mut sorted: Vec<_> = events.iter().collect();
    sorted.sort_by_key(|(_, (shard, sequence, _))| (*shard, *sequence));
    for (id, (shard, _, _)) in sorted {
        let (producer, index) = id.split_once('-').expect("id");
        let index: u64 = index.parse().expect("index");
        if let Some(previous) = last.insert((*shard, producer.to_owned()), index) {
            assert!(
                previous < index,
                "{context}: {id} stored after {producer}-{previous} in shard {shard}"
            );
        }
    }
    // Stage one's outputs: each once, each a buy that was stored.
    for (id, (_, _, data)) in outputs {
        let source = events
            .get(&id)
            .unwrap_or_else(|| panic!("{context}: output {id} has no input"));
        assert_eq!(
            &source.2, &data,
            "{context}: output {id} differs from its input"
        );
        assert!(
            field(&String::from_utf8_lossy(&data), "kind") == Some("buy"),
            "{context}: {id} is not a buy"
        );
    }
}

/// Totals per key: closed windows from the aggregate's output plus the
/// open window's state.
async fn aggregate_totals(client: &Client) -> BTreeMap<String, (u64, u64)> {
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for records in read_all(client, "totals").await.into_values() {
        for record in records {
            let text = String::from_utf8_lossy(&record.data).into_owned();
            let key = field(&text, "key").expect("key").to_owned();
            let count: u64 = field(&text, "count")
                .and_then(|c| c.parse().ok())
                .expect("count");
            let sum: f64 = field(&text, "sum")
                .and_then(|s| s.parse().ok())
                .expect("sum");
            let entry = totals.entry(key).or_default();
            entry.0 += count;
            entry.1 += sum as u64;
        }
    }
    let state = client
        .state("totals", None, Some("count/"), 10_000)
        .await
        .expect("state");
    for entry in state {
        // count/{window_start}/{key} -> "{count} {sum}"
        let key = entry.key.rsplit('/').next().expect("key").to_owned();
        let (count, sum) = entry.value.split_once(' ').expect("count sum");
        let total = totals.entry(key).or_default();
        total.0 += count.parse::<u64>().expect("count");
        total.1 += sum.parse::<f64>().expect("sum") as u64;
    }
    totals
}

/// A processor writing to a stream named after it.
fn settings(name: &str, plugin: &str, source: &str, config: &[(&str, &str)]) -> ProcessorSettings {
    ProcessorSettings {
        output: Some(name.into()),
        ..processor_settings(name, plugin, source, config)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_lose_nothing_acked_and_processors_stay_exactly_once() {
    torture("fsync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_lose_nothing_acked_in_buffered_mode_either() {
    torture("buffered").await;
}

async fn torture(durability: &str) {
    let seed = env_u64("WEIR_TORTURE_SEED").unwrap_or_else(rand::random);
    let rounds = env_u64("WEIR_TORTURE_ROUNDS").unwrap_or(ROUNDS_DEFAULT);
    println!(
        "crash torture ({durability}): seed {seed}, {rounds} rounds (WEIR_TORTURE_SEED={seed} repeats it)"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("temp dir");
    let args = ["--durability", durability];
    let mut server = ServerProcess::spawn(dir.path(), &args);
    let listen = server.addr.to_string();
    let client = server.connect().await;
    client
        .create_stream("events", 2, Default::default())
        .await
        .expect("create");
    for (name, file) in [
        ("json-filter", "json_filter"),
        ("count-by-key", "count_by_key"),
    ] {
        client.add_plugin(name, plugin(file)).await.expect("plugin");
    }
    let filter = [("field", "kind"), ("op", "equals"), ("value", "buy")];
    create_processor(&client, settings("buys", "json-filter", "events", &filter)).await;
    let aggregate = [
        ("window-ms", WINDOW_MS),
        ("key-field", "key"),
        ("sum-field", "amount"),
    ];
    create_processor(
        &client,
        settings("totals", "count-by-key", "buys", &aggregate),
    )
    .await;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let mut config = server.client_config();
        config.request_timeout = Duration::from_secs(1);
        let producer_client = Client::connect(config).await.expect("connect");
        producers.push(tokio::spawn(produce(
            producer_client,
            producer,
            seed,
            acked.clone(),
            stop.clone(),
        )));
    }

    let mut acked_after_first_restart = 0;
    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2_000))).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        server = ServerProcess::spawn_on(dir.path(), &listen, &args);
        let client = server.connect().await;
        check_invariants(&client, &acked, round, seed).await;
        let count = acked.lock().expect("acked").len();
        println!("crash torture: round {round}: {count} acked records intact");
        if round == 1 {
            acked_after_first_restart = count;
        }
    }

    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        tokio::time::timeout(Duration::from_secs(60), producer)
            .await
            .expect("producers drain")
            .expect("producer task");
    }
    let client = server.connect().await;
    check_invariants(&client, &acked, rounds + 1, seed).await;
    let acked_total = acked.lock().expect("acked").len();
    assert!(
        acked_total > acked_after_first_restart + 100,
        "seed {seed}: producers stopped making progress after the restarts \
         ({acked_after_first_restart} acked after the first, {acked_total} in all)"
    );

    // Once the pipeline catches up: stage one kept exactly the buys, and the
    // aggregate equals the model computed from the stored input.
    let events = stored_by_id(&client, "events").await;
    let mut expected_buys = HashSet::new();
    let mut model: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, (_, _, data)) in &events {
        let text = String::from_utf8_lossy(data);
        if field(&text, "kind") == Some("buy") {
            expected_buys.insert(id.clone());
            let total = model
                .entry(field(&text, "key").expect("key").to_owned())
                .or_default();
            total.0 += 1;
            total.1 += field(&text, "amount")
                .and_then(|a| a.parse::<u64>().ok())
                .expect("amount");
        }
    }
    let caught_up = eventually(Duration::from_secs(60), || async {
        let buys: HashSet<String> = stored_by_id(&client, "buys").await.into_keys().collect();
        buys == expected_buys && aggregate_totals(&client).await == model
    })
    .await;
    assert!(
        caught_up,
        "seed {seed}: the pipeline does not match the model: aggregate {:?}, model {model:?}",
        aggregate_totals(&client).await
    );
}

#[tokio::test]
async fn a_kill_at_any_moment_of_the_first_start_leaves_a_data_directory_that_starts() {
    let seed: u64 = env_u64("WEIR_TORTURE_SEED").unwrap_or_else(rand::random);
    println!("first-start kills: seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    for attempt in 0..12u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
            .args(crate::support::serve_args("127.0.0.1:0"))
            .arg("--data")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn weir serve");
        let delay_ms = rng.random_range(0..=(attempt * 10).max(1));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = first.kill();
        let _ = first.wait();

        let server = ServerProcess::spawn(dir.path(), &[]);
        let client = server.connect().await;
        client
            .create_stream("after-kill", 1, Default::default())
            .await
            .unwrap_or_else(|e| {
                panic!("seed {seed}, killed after {delay_ms} ms: the admin token fails: {e}")
            });
    }
}
