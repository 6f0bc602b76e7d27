//! The `weir` command against a running server: stream admin, put, get.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use crate::support::ServerProcess;

/// Runs `weir` with `args`: (succeeded, stdout, stderr).
fn run(args: &[&str], configure: impl FnOnce(&mut Command)) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir-under-test"));
    command.args(args).env("WEIR_LOG", "warn");
    configure(&mut command);
    let output = command.output().expect("run weir");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A verb against `server`, finding its certificate through its data dir.
fn weir(data: &Path, server: &ServerProcess, args: &[&str]) -> (bool, String, String) {
    run(args, |command| {
        command
            .env("WEIR_SERVER", server.addr.to_string())
            .env("WEIR_DATA", data);
    })
}

/// A verb against the server that must succeed; its output.
fn weir_ok(data: &Path, server: &ServerProcess, args: &[&str]) -> String {
    let (ok, out, err) = weir(data, server, args);
    assert!(ok, "weir {args:?} failed: {err}");
    out
}

/// A verb that needs no server.
fn weir_local(args: &[&str]) -> (bool, String, String) {
    run(args, |_| {})
}

#[test]
fn cli_verbs_find_the_local_certificate_and_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);

    let (ok, out, err) = weir(
        data,
        &server,
        &[
            "stream",
            "create",
            "clicks",
            "--shards",
            "2",
            "--retention-age",
            "24h",
        ],
    );
    assert!(ok, "create failed: {err}");
    assert!(out.contains("created stream clicks"));
    let (_, out, _) = weir(data, &server, &["stream", "list"]);
    assert_eq!(out.trim(), "clicks");

    let (ok, out, err) = weir(
        data,
        &server,
        &["put", "clicks", "--key", "user-1", "hello"],
    );
    assert!(ok, "put failed: {err}");
    assert!(out.starts_with("shard "), "{out}");

    let file = data.join("clicks.jsonl");
    std::fs::write(
        &file,
        "{\"user\":\"a\",\"n\":1}\n{\"user\":\"b\",\"n\":2}\n{\"user\":\"c\",\"n\":3}\n",
    )
    .expect("write");
    let (ok, out, err) = weir(
        data,
        &server,
        &[
            "put",
            "clicks",
            "--file",
            file.to_str().expect("path"),
            "--key-field",
            "user",
        ],
    );
    assert!(ok, "put --file failed: {err}");
    // Not a terminal: no progress bar, but the summary for scripts.
    assert_eq!(out.trim(), "3 stored, 0 failed");

    // `--file -` reads standard input, and sends each line as it comes:
    // the first is stored while the pipe is still open.
    weir_ok(
        data,
        &server,
        &["stream", "create", "piped", "--shards", "1"],
    );
    let mut piped = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .args(["put", "piped", "--file", "-", "--key", "pipe"])
        .env("WEIR_LOG", "warn")
        .env("WEIR_SERVER", server.addr.to_string())
        .env("WEIR_DATA", data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run weir put --file -");
    let mut pipe = piped.stdin.take().expect("stdin");
    pipe.write_all(b"from a pipe 1\n")
        .expect("write to weir's stdin");
    let read_piped = || weir_ok(data, &server, &["get", "piped", "--shard", "0"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !read_piped().contains("key=pipe from a pipe 1") {
        assert!(
            std::time::Instant::now() < deadline,
            "a line sat unsent while the pipe stayed open"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    pipe.write_all(b"from a pipe 2\n")
        .expect("write to weir's stdin");
    drop(pipe);
    let output = piped.wait_with_output().expect("weir put --file -");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "2 stored, 0 failed"
    );
    assert!(read_piped().contains("key=pipe from a pipe 2"));
    // Without a key it says so before waiting for a first line.
    let (ok, _, err) = weir(data, &server, &["put", "piped", "--file", "-"]);
    assert!(!ok);
    assert!(err.contains("give --key KEY or --key-field FIELD"), "{err}");

    let (ok, out, _) = weir(data, &server, &["stream", "describe", "clicks"]);
    assert!(ok);
    assert!(
        out.contains("retention  age: 1.0 d, size: unlimited"),
        "{out}"
    );
    let mut got = String::new();
    for shard in ["0", "1"] {
        let (ok, out, err) = weir(
            data,
            &server,
            &["get", "clicks", "--shard", shard, "--from", "trim-horizon"],
        );
        assert!(ok, "get failed: {err}");
        got.push_str(&out);
    }
    for expected in [
        "key=user-1 hello",
        "key=a {\"user\":\"a\",\"n\":1}",
        "key=c {\"user\":\"c\",\"n\":3}",
    ] {
        assert!(got.contains(expected), "missing {expected:?} in {got}");
    }

    let (ok, _, err) = weir(data, &server, &["get", "nope", "--shard", "0"]);
    assert!(!ok);
    assert!(err.contains("StreamNotFound"), "{err}");
    let (ok, _, err) = weir(
        data,
        &server,
        &["get", "clicks", "--shard", "0", "--from", "soon"],
    );
    assert!(!ok);
    assert!(err.contains("invalid position"), "{err}");
    let (ok, _, _) = weir(data, &server, &["stream", "delete", "clicks"]);
    assert!(ok);
    let (_, out, _) = weir(data, &server, &["stream", "list"]);
    assert_eq!(out.trim(), "piped");
}

/// `weir tail` follows every shard of a stream (backlog, then live
/// records), rides out a server restart, and exits cleanly on Ctrl-C.
#[test]
fn tail_follows_every_shard_across_a_restart_and_stops_on_interrupt() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);
    weir_ok(
        data,
        &server,
        &["stream", "create", "clicks", "--shards", "4"],
    );
    let put = |key: &str, value: &str| {
        weir_ok(data, &server, &["put", "clicks", value, "--key", key]);
    };
    let keys: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    for key in &keys {
        put(key, "before");
    }

    let mut tail = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .args([
            "tail",
            "clicks",
            "--from",
            "trim-horizon",
            "--output",
            "json",
        ])
        .env("WEIR_LOG", "warn")
        .env("WEIR_SERVER", server.addr.to_string())
        .env("WEIR_DATA", data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tail");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let read = |count: usize| -> Vec<serde_json::Value> {
        (0..count)
            .map(|_| {
                let line = lines
                    .recv_timeout(std::time::Duration::from_secs(10))
                    .expect("tail prints the record");
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
            })
            .collect()
    };
    let backlog = read(keys.len());
    put("user-3", "after");
    let live = read(1);

    let mut shards = std::collections::BTreeSet::new();
    for record in &backlog {
        assert_eq!(record["data"], "before");
        shards.insert(record["shard"].as_u64().expect("shard"));
    }
    assert!(shards.len() > 1, "records of several shards: {shards:?}");
    let mut seen: Vec<&str> = backlog
        .iter()
        .map(|r| r["partition_key"].as_str().expect("key"))
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<&str> = keys.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "every backlog record once");
    assert_eq!(live[0]["data"], "after");
    assert_eq!(live[0]["partition_key"], "user-3");
    let same_key = backlog
        .iter()
        .find(|r| r["partition_key"] == "user-3")
        .expect("user-3 before");
    assert_eq!(live[0]["shard"], same_key["shard"], "a key keeps its shard");

    // The server goes away and comes back on the same address: tail
    // reconnects and goes on after what it printed, repeating nothing.
    let addr = server.addr.to_string();
    drop(server);
    let server = ServerProcess::spawn_on(data, &addr, &[]);
    weir_ok(
        data,
        &server,
        &["put", "clicks", "restarted", "--key", "user-3"],
    );
    let resumed = read(1);
    assert_eq!(resumed[0]["data"], "restarted");
    assert_eq!(
        resumed[0]["sequence"],
        live[0]["sequence"].as_u64().expect("seq") + 1
    );

    let interrupted = Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(interrupted.success());
    let status = tail.wait().expect("tail exits");
    assert!(status.success(), "Ctrl-C ends tail cleanly: {status}");
}

#[test]
fn a_second_server_on_a_data_directory_names_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _first = ServerProcess::spawn(dir.path(), &[]);
    let data = dir.path().to_str().expect("path");
    let mut args = crate::support::serve_args("127.0.0.1:0").to_vec();
    args.extend(["--data", data]);
    let (ok, _, err) = weir_local(&args);
    assert!(!ok);
    assert!(err.contains("another Weir server is using"), "{err}");
    assert!(!err.contains("Locked"), "no storage-engine jargon: {err}");
}

/// An address in use is named with its listener, its setting and flag,
/// and the likely cause — whichever of the three listeners it is.
#[test]
fn an_address_in_use_names_its_listener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let (udp_addr, tcp_addr) = (
        udp.local_addr().expect("addr").to_string(),
        tcp.local_addr().expect("addr").to_string(),
    );
    let data = data.to_str().expect("path");
    for (quic, admin, kinesis, named) in [
        (
            udp_addr.as_str(),
            "127.0.0.1:0",
            "off",
            "QUIC listener (UDP; setting listen, flag --listen)",
        ),
        (
            "127.0.0.1:0",
            tcp_addr.as_str(),
            "off",
            "admin listener (TCP; setting admin_listen, flag --admin-listen)",
        ),
        (
            "127.0.0.1:0",
            "127.0.0.1:0",
            tcp_addr.as_str(),
            "Kinesis API listener (TCP; setting kinesis_listen, flag --kinesis-listen)",
        ),
    ] {
        let (ok, _, err) = weir_local(&[
            "serve",
            "--data",
            data,
            "--listen",
            quic,
            "--admin-listen",
            admin,
            "--kinesis-listen",
            kinesis,
        ]);
        assert!(!ok, "started beside a listener holding its address");
        assert!(err.contains(&format!("binding the {named} to ")), "{err}");
        assert!(err.contains("perhaps another Weir server"), "{err}");
    }
}

#[test]
fn a_data_directory_that_is_a_file_is_named_as_such() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("weir-data");
    std::fs::write(&file, "not a directory").expect("write");
    let mut args = crate::support::serve_args("127.0.0.1:0").to_vec();
    args.extend(["--data", file.to_str().expect("path")]);
    let (ok, _, err) = weir_local(&args);
    assert!(!ok);
    assert!(
        err.contains("weir-data: it exists and is not a directory"),
        "{err}"
    );
}

/// `--tls-name` makes the generated certificate valid for a name remote
/// clients use; a start without it makes one that is not.
#[test]
fn the_generated_certificate_carries_the_names_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let list_as = |server: &ServerProcess, name: &str| {
        weir(data, server, &["stream", "list", "--server-name", name])
    };
    let server = ServerProcess::spawn(data, &["--tls-name", "weir.example"]);
    let (ok, _, err) = list_as(&server, "weir.example");
    assert!(ok, "the named certificate was refused: {err}");
    let (ok, _, err) = list_as(&server, "other.example");
    assert!(!ok);
    assert!(err.contains("certificate not valid for name"), "{err}");
    server.terminate();

    let server = ServerProcess::spawn(data, &[]);
    let (ok, _, err) = list_as(&server, "weir.example");
    assert!(
        !ok,
        "a name no longer asked for is still in the certificate"
    );
    assert!(err.contains("certificate not valid for name"), "{err}");
    let (ok, _, err) = list_as(&server, "localhost");
    assert!(ok, "{err}");
}

#[test]
fn no_server_is_reported_at_once_and_plainly() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A data directory with a certificate, and nothing listening.
    drop(ServerProcess::spawn(dir.path(), &[]));
    let started = std::time::Instant::now();
    let (ok, _, err) = run(&["stream", "list", "--server", "127.0.0.1:9"], |command| {
        command.env("WEIR_DATA", dir.path());
    });
    assert!(!ok);
    assert!(err.contains("no Weir server answered within 5s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));

    // The wait is a named setting.
    let started = std::time::Instant::now();
    let (ok, _, err) = run(
        &[
            "stream",
            "list",
            "--server",
            "127.0.0.1:9",
            "--connect-timeout",
            "1s",
        ],
        |command| {
            command.env("WEIR_DATA", dir.path());
        },
    );
    assert!(!ok);
    assert!(err.contains("no Weir server answered within 1s"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[test]
fn an_endless_ca_file_is_refused_at_once() {
    let (ok, _, stderr) = weir_local(&["stream", "list", "--ca", "/dev/zero"]);
    assert!(!ok);
    assert!(stderr.contains("larger than"), "{stderr}");
}

#[test]
fn plugin_test_runs_a_component_locally_and_reports_failures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, "{\"event\":\"purchase\",\"n\":1}\n{\"event\":\"view\",\"n\":2}\n{\"event\":\"purchase\",\"n\":3}\n")
        .expect("write");
    let filter = crate::support::plugin_dir().join("json_filter.wasm");
    let (ok, out, err) = weir_local(&[
        "plugin",
        "test",
        filter.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
        "--config",
        "field=event",
        "--config",
        "op=equals",
        "--config",
        "value=purchase",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "out key=test {\"event\":\"purchase\",\"n\":1}",
            "out key=test {\"event\":\"purchase\",\"n\":3}"
        ]
    );
    assert!(err.contains("3 records in, 2 out, 0 failed"), "{err}");
    assert!(
        err.contains("per record"),
        "fuel per record is reported: {err}"
    );

    std::fs::write(&input, "ok-1\nbad\nok-2\n").expect("write");
    let misbehaving = crate::support::plugin_dir().join("misbehaving.wasm");
    let (ok, out, err) = weir_local(&[
        "plugin",
        "test",
        misbehaving.to_str().expect("path"),
        "--input",
        input.to_str().expect("path"),
        "--config",
        "mode=fail",
    ]);
    assert!(!ok, "a failing record makes the run fail");
    assert!(
        out.contains("error record 1: the plugin returned an error")
            || out.contains("error record 1: record 1 is bad"),
        "{out}"
    );
    assert!(
        out.contains("input: bad") && out.contains("out key=test ok-2"),
        "{out}"
    );
    assert!(err.contains("1 failed"), "{err}");
}

#[test]
fn plugin_new_scaffolds_every_kind() {
    let dir = tempfile::tempdir().expect("temp dir");
    for kind in ["filter", "map", "filter-map", "flat-map", "aggregate"] {
        let path = dir.path().join(format!("my-{kind}"));
        let (ok, out, err) = weir_local(&[
            "plugin",
            "new",
            path.to_str().expect("path"),
            "--kind",
            kind,
        ]);
        assert!(ok, "{kind}: {err}");
        assert!(
            out.contains("cargo build --release --target wasm32-wasip2"),
            "{out}"
        );
        let manifest = std::fs::read_to_string(path.join("Cargo.toml")).expect("Cargo.toml");
        assert!(
            manifest.contains("weir-plugin = { path = \"/"),
            "absolute SDK path: {manifest}"
        );
        assert!(
            manifest.contains(&format!("name = \"my-{kind}\"")),
            "the crate is named after the directory: {manifest}"
        );
        let source = std::fs::read_to_string(path.join("src/lib.rs")).expect("lib.rs");
        assert!(
            source.contains("weir_plugin::export_") && source.contains("#[test]"),
            "{source}"
        );
    }
    let (ok, _, err) = weir_local(&[
        "plugin",
        "new",
        dir.path().join("my-filter").to_str().expect("path"),
    ]);
    assert!(!ok && err.contains("already exists"), "{err}");
}

#[tokio::test]
async fn serve_reads_a_config_file_and_names_unknown_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[limits]\nbatch_records_max = 3\n").expect("write");
    let server = ServerProcess::spawn(dir.path(), &["--config", config.to_str().expect("path")]);
    let client = server.connect().await;
    client
        .create_stream("s", 1, Default::default())
        .await
        .expect("create");
    let records = (0..4)
        .map(|i| weir_client::PutRecord {
            partition_key: format!("k{i}"),
            explicit_hash_key: None,
            data: bytes::Bytes::from_static(b"x"),
        })
        .collect();
    let error = client
        .put_records("s", None, records)
        .await
        .expect_err("over the configured limit");
    assert!(error.to_string().contains("1 to 3 records"), "{error}");

    std::fs::write(&config, "[limits]\nbatch_records_maxx = 3\n").expect("write");
    let (ok, _, err) = weir_local(&[
        "serve",
        "--config",
        config.to_str().expect("path"),
        "--listen",
        "127.0.0.1:0",
        "--kinesis-listen",
        "off",
    ]);
    assert!(!ok, "an unknown key stops the server from starting");
    assert!(
        err.contains("batch_records_maxx"),
        "the error names the key: {err}"
    );

    let (ok, out, _) = weir_local(&["config", "default"]);
    assert!(ok && out.contains("record_bytes_max = 1048576"), "{out}");
}

#[test]
fn status_shows_streams_and_processors_and_speaks_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);
    weir_ok(
        data,
        &server,
        &["stream", "create", "clicks", "--shards", "2"],
    );
    weir_ok(data, &server, &["put", "clicks", "--key", "u1", "hello"]);
    let filter = crate::support::plugin_dir().join("json_filter.wasm");
    weir_ok(
        data,
        &server,
        &[
            "plugin",
            "add",
            filter.to_str().expect("path"),
            "--name",
            "jf",
        ],
    );
    weir_ok(
        data,
        &server,
        &[
            "processor",
            "create",
            "p",
            "--plugin",
            "jf",
            "--from",
            "clicks",
            "--config",
            "field=a",
            "--config",
            "op=exists",
        ],
    );
    let out = weir_ok(
        data,
        &server,
        &[
            "processor",
            "update",
            "p",
            "--fuel-per-sec",
            "5000000",
            "--state-max",
            "2MiB",
        ],
    );
    assert!(
        out.contains("fuel 5000000/s") && out.contains("state 2.0 MiB; on error: halt"),
        "{out}"
    );

    let out = weir_ok(data, &server, &["status"]);
    assert!(out.contains("clicks") && out.contains("p.out"), "{out}");
    assert!(out.contains("jf") && out.contains("storage"), "{out}");
    let out = weir_ok(data, &server, &["status", "--json"]);
    assert!(
        out.trim_start().starts_with('{')
            && out.contains("\"streams\"")
            && out.contains("\"processors\""),
        "{out}"
    );
}

#[test]
fn demo_runs_the_pipeline_and_stops_by_itself() {
    // As installed: the binary alone in a directory, no source tree, no
    // cargo or rustup on the PATH, no CARGO variables.
    let dir = tempfile::tempdir().expect("temp dir");
    let installed = dir.path().join("weir");
    std::fs::copy(env!("CARGO_BIN_EXE_weir-under-test"), &installed).expect("install");
    let output = Command::new(&installed)
        .args(["demo", "--duration", "4s", "--rate", "100"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("WEIR_LOG", "warn")
        .current_dir(dir.path())
        .output()
        .expect("run the installed weir");
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{out}\n{err}");
    assert!(
        !out.contains("Building") && !out.contains("without the plugin pipeline"),
        "the pipeline runs on the plugins built into the binary: {out}"
    );
    assert!(
        out.contains("weir processor create revenue"),
        "prints the steps by hand: {out}"
    );
    // Not a terminal: one short line a second, not a screen.
    assert!(
        !out.contains("\x1b["),
        "no terminal control in a pipe: {out}"
    );
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("clicks/s")).collect();
    assert!(lines.len() >= 3, "a line a second: {out}");
    for line in &lines {
        assert!(line.chars().count() <= 80, "fits 80 columns: {line:?}");
        assert!(line.contains(" lag "), "each stage's lag: {line}");
    }
    assert!(out.contains("Stopped."), "{out}");
}

/// `weir demo | head -3`: when its reader goes away the demo stops as if
/// asked to, shuts its server down and removes its directory.
#[test]
fn demo_piped_into_a_reader_that_stops_cleans_up() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).expect("TMPDIR");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .args(["demo", "--rate", "100"])
        .env("WEIR_LOG", "warn")
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let running = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|line| line.contains("clicks/s"));
    assert!(
        running.is_some(),
        "the demo printed its first line a second"
    );
    assert!(
        std::fs::read_dir(&tmp).expect("list TMPDIR").count() > 0,
        "the demo's data directory is in TMPDIR"
    );
    drop(lines);
    let output = child.wait_with_output().expect("wait for the demo");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {err}", output.status);
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("list TMPDIR").collect();
    assert!(left.is_empty(), "the demo removed its directory: {left:?}");
}

/// The demo on a real terminal (a pseudo-terminal from util-linux's
/// `script`): a screen redrawn in place on the alternate screen, keys read
/// one by one (`b` bursts), and, stopped by SIGTERM, the terminal as it
/// was.
#[test]
fn demo_draws_a_live_screen_and_gives_the_terminal_back() {
    crate::support::plugin_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let weir = env!("CARGO_BIN_EXE_weir-under-test");
    let session = format!(
        "stty cols 80 rows 24; timeout --foreground --signal TERM 10 {weir} demo --rate 1000; \
         echo; stty -a"
    );
    let mut script = Command::new("script")
        .args([
            "--quiet",
            "--flush",
            "--return",
            "--command",
            &session,
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("WEIR_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the demo on a pseudo-terminal");
    let mut keys = script.stdin.take().expect("stdin");
    std::thread::sleep(std::time::Duration::from_secs(5));
    keys.write_all(b"b").expect("press b");
    let output = script.wait_with_output().expect("script");
    drop(keys);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{out}");
    let enter = out
        .find("\x1b[?1049h")
        .expect("enters the alternate screen");
    let leave = out
        .rfind("\x1b[?1049l")
        .expect("leaves the alternate screen");
    let screen = &out[enter..leave];
    assert!(
        screen.matches("\x1b[H").count() >= 5,
        "redraws in place: {out}"
    );
    let last_frame = screen.rsplit("\x1b[H").next().expect("a frame");
    for part in [
        "clicks/s",
        "purchases  json-filter",
        "revenue    count-by-key",
        "open window",
        "closed windows",
        "storage",
    ] {
        assert!(
            last_frame.contains(part),
            "{part:?} on the screen: {last_frame}"
        );
    }
    for line in last_frame.split("\r\n") {
        // The terminal turns each "\r\n" the demo writes into "\r\r\n".
        let visible = line
            .replace("\x1b[K", "")
            .replace("\x1b[J", "")
            .replace('\r', "");
        assert!(
            visible.chars().count() <= 80,
            "fits 80 columns: {visible:?}"
        );
    }
    assert!(
        last_frame.split("\r\n").count() <= 24,
        "fits 24 rows: {last_frame}"
    );
    assert!(
        screen.contains("burst: 200000 clicks queued"),
        "b bursts: {out}"
    );
    let after = &out[leave..];
    let stored: u64 = after
        .split("Stopped. ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the summary after the screen");
    assert!(
        stored > 20_000,
        "the burst adds clicks beyond 1000/s: {stored}"
    );
    assert!(after.contains("weir processor create revenue"), "{after}");
    // The terminal reads lines and echoes again.
    assert!(
        after.contains(" icanon ") && after.contains(" echo "),
        "{after}"
    );
}

#[test]
fn token_verbs_create_list_and_revoke_and_the_cli_uses_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);
    weir_ok(data, &server, &["stream", "create", "clicks"]);

    let out = weir_ok(
        data,
        &server,
        &[
            "token",
            "create",
            "--name",
            "sensor",
            "--role",
            "produce",
            "--streams",
            "clicks",
        ],
    );
    let secret = out.lines().last().expect("secret line").to_owned();
    assert!(secret.starts_with("weir_"), "{out}");
    assert!(out.contains("shown only now"), "{out}");
    assert!(out.contains(&format!("WEIR_TOKEN={secret}")), "{out}");
    assert!(out.contains("aws_access_key_id=sensor"), "{out}");

    // With --token the CLI acts as that token: it may put, not create.
    let as_sensor = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(["--token", &secret]);
        weir(data, &server, &full)
    };
    let (ok, _, err) = as_sensor(&["put", "clicks", "hello", "--key", "k"]);
    assert!(ok, "{err}");
    let (ok, _, err) = as_sensor(&["stream", "create", "other"]);
    assert!(!ok && err.contains("PermissionDenied"), "{err}");

    let (_, out, _) = weir(data, &server, &["token", "list"]);
    assert!(out.contains("sensor") && out.contains("produce") && out.contains("clicks"));
    assert!(!out.contains(&secret), "list never shows secrets");

    weir_ok(data, &server, &["token", "delete", "sensor"]);
    let (ok, _, err) = as_sensor(&["put", "clicks", "again", "--key", "k"]);
    assert!(!ok && err.contains("refused the token"), "{err}");
    assert!(
        !err.contains("is `weir serve` running"),
        "a refused token is not a connection problem: {err}"
    );
    let (ok, _, err) = weir(
        data,
        &server,
        &["token", "create", "--name", "x", "--role", "owner"],
    );
    assert!(!ok && err.contains("unknown role"), "{err}");
}

/// `--output json` gives scripts one JSON document (JSON lines for `get`)
/// with the documented field names.
#[test]
fn verbs_that_read_print_json_for_scripts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let (ok, out, err) = weir(data, &server, &args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    weir_ok(
        data,
        &server,
        &["stream", "create", "clicks", "--shards", "1"],
    );
    weir_ok(data, &server, &["put", "clicks", "hello", "--key", "k"]);

    assert_eq!(json(&["stream", "list"]), serde_json::json!(["clicks"]));
    let described = json(&["stream", "describe", "clicks"]);
    assert_eq!(described["name"], "clicks");
    assert_eq!(described["shards"][0]["records"], 1);

    let record = json(&["get", "clicks", "--shard", "0"]);
    assert_eq!(record["data"], "hello");
    assert_eq!(record["partition_key"], "k");
    assert_eq!(record["sequence"], 0);
    assert_eq!(record["shard"], 0);

    let tokens = json(&["token", "list"]);
    assert_eq!(tokens[0]["name"], "admin");
    assert!(tokens[0].get("secret").is_none_or(|s| s.is_null()));
    assert_eq!(json(&["plugin", "list"]), serde_json::json!([]));
    let status = json(&["status"]);
    assert_eq!(status["streams"][0]["name"], "clicks");
    assert_eq!(json(&["processor", "list"]), serde_json::json!([]));
}

/// `weir demo data` writes the clicks the README's pipeline filters and
/// sums, so the tour shows output at every step.
#[test]
fn demo_data_feeds_the_tour_pipeline() {
    let (ok, out, err) = weir_local(&["demo", "data", "--records", "200"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 200);
    for click in &lines {
        for field in ["user", "campaign", "event", "price_cents"] {
            assert!(!click[field].is_null(), "{field} missing in {click}");
        }
    }
    assert!(
        lines.iter().any(|c| c["event"] == "purchase"),
        "some clicks are purchases, so `purchases` and `revenue` get records"
    );
}

/// A verb piped into a reader that stops early (`weir demo data | head`)
/// ends the way other Unix tools do — by SIGPIPE, saying nothing — not
/// with a "Broken pipe" error or a panic.
#[test]
fn a_verb_whose_reader_goes_away_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    const SIGPIPE: i32 = 13;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
        .args(["demo", "data", "--records", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir demo data");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read a line");
    assert!(first.contains("\"campaign\""), "{first}");
    // The reader (and with it the pipe's only read end) is gone here.
    let output = child.wait_with_output().expect("wait for weir");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(SIGPIPE),
        "{:?}: {stderr}",
        output.status
    );
    assert!(stderr.is_empty(), "nothing said on stderr: {stderr}");
}

/// The scaffold flow exactly as docs/PLUGINS.md gives it: `plugin new`,
/// build for wasm32-wasip2, `plugin test` over the scaffold's
/// `sample.jsonl` with `--key-field user`.
#[test]
fn the_documented_scaffold_flow_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    scaffold_builds_and_runs(dir.path(), "my-plugin", &[]);
}

/// The same with the SDK copied into the crate, as from a weir whose
/// source tree is gone: the crate names nothing outside itself.
#[test]
fn a_scaffold_with_the_vendored_sdk_builds_on_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let crate_dir = scaffold_builds_and_runs(dir.path(), "my-vendored-plugin", &["--vendored-sdk"]);
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
    assert!(
        manifest.contains("weir-plugin = { path = \"weir-sdk/guest-sdk\" }"),
        "{manifest}"
    );
    let sdk_manifest =
        std::fs::read_to_string(crate_dir.join("weir-sdk/proto/Cargo.toml")).expect("manifest");
    assert!(!sdk_manifest.contains("workspace"), "{sdk_manifest}");
}

/// Scaffolds `dir/name` with `extra` arguments to `plugin new`, builds it
/// and runs its sample through `plugin test`; returns the crate's
/// directory.
fn scaffold_builds_and_runs(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let examples = crate::support::plugin_dir();
    let crate_dir = dir.join(name);
    let mut args = vec!["plugin", "new", crate_dir.to_str().expect("path")];
    args.extend(extra);
    let (ok, _, err) = weir_local(&args);
    assert!(ok, "{err}");
    // Reuse the example plugins' build of the SDK's dependencies: same
    // pinned versions, same target directory (examples is
    // TARGET/wasm32-wasip2/release).
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    std::fs::copy(plugins.join("Cargo.lock"), crate_dir.join("Cargo.lock")).expect("lock");
    let target = examples
        .ancestors()
        .nth(2)
        .expect("the examples' target directory");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(&crate_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", target)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "the scaffold builds");
    let component = examples.join(format!("{}.wasm", name.replace('-', "_")));
    let sample = crate_dir.join("sample.jsonl");
    let (ok, out, err) = weir_local(&[
        "plugin",
        "test",
        component.to_str().expect("path"),
        "--input",
        sample.to_str().expect("path"),
        "--config",
        "needle=purchase",
        "--key-field",
        "user",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("out key=b"), "the purchase passes: {out}");
    assert!(!out.contains("out key=a"), "a view does not: {out}");
    crate_dir
}

#[test]
fn sink_verbs_create_describe_pause_resume_and_remove() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);
    let ok = |args: &[&str]| -> String {
        let (ok, out, err) = weir(data, &server, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        serde_json::from_str(ok(&args).trim()).expect("JSON")
    };
    ok(&["stream", "create", "clicks", "--shards", "2"]);
    // Nothing listens on port 1: the sink backs off, which is enough here.
    let created = ok(&[
        "sink",
        "create",
        "s",
        "--from",
        "clicks",
        "--to",
        "nats://u:pw@127.0.0.1:1/edge",
        "--batch-records",
        "10",
        "--bytes-per-sec",
        "64KiB",
    ]);
    assert!(
        created.contains("sink s  clicks -> nats://u:***@127.0.0.1:1/edge")
            && !created.contains("pw"),
        "{created}"
    );
    let described = json(&["sink", "describe", "s"]);
    assert_eq!(described["settings"]["to"], "nats://u:***@127.0.0.1:1/edge");
    assert_eq!(described["settings"]["batch_records"], 10);
    assert_eq!(described["settings"]["bytes_per_sec"], 65_536);
    assert_eq!(described["shards"].as_array().map(Vec::len), Some(2));
    assert_eq!(json(&["sink", "list"]).as_array().map(Vec::len), Some(1));

    let (deleted, _, err) = weir(data, &server, &["stream", "delete", "clicks"]);
    assert!(!deleted && err.contains("`weir sink delete s`"), "{err}");
    let (created, _, err) = weir(
        data,
        &server,
        &[
            "sink",
            "create",
            "t",
            "--from",
            "clicks",
            "--to",
            "redis://h:1/x",
        ],
    );
    assert!(!created && err.contains("not supported"), "{err}");

    assert_eq!(ok(&["sink", "pause", "s"]).trim(), "done");
    assert_eq!(json(&["sink", "describe", "s"])["paused"], true);
    ok(&["sink", "resume", "s"]);
    assert_eq!(json(&["sink", "describe", "s"])["paused"], false);
    ok(&["sink", "delete", "s"]);
    let (found, _, err) = weir(data, &server, &["sink", "describe", "s"]);
    assert!(!found && err.contains("no sink named \"s\""), "{err}");
    // `rm` is an alias of `delete` on every kind.
    ok(&["stream", "rm", "clicks"]);
}

#[test]
fn bench_produce_measures_a_running_server_from_its_own_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path();
    let server = ServerProcess::spawn(data, &[]);
    let (ok, out, err) = weir(
        data,
        &server,
        &[
            "bench",
            "produce",
            "--records",
            "3000",
            "--batch",
            "100",
            "--size",
            "200",
        ],
    );
    assert!(ok, "bench failed: {err}");
    assert!(out.contains(&format!("--server {}", server.addr)), "{out}");
    assert!(
        out.contains("after 20 warm-up batches per connection"),
        "{out}"
    );
    let quic = out
        .lines()
        .find(|line| line.starts_with("quic"))
        .unwrap_or_else(|| panic!("no quic line: {out}"));
    assert!(quic.contains("(3000 records in"), "{quic}");
    assert!(!out.contains("raw"), "the in-process baseline ran: {out}");
    // The run's stream is gone again.
    let (_, streams, _) = weir(data, &server, &["stream", "list"]);
    assert_eq!(streams.trim(), "", "{streams}");
}
