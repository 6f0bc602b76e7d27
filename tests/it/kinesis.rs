//! The Kinesis Data Streams API, tested with the real clients: the Python
//! suite in tests/kinesis drives boto3, the AWS CLI and botocore's SigV4
//! signer (with cbor2 for the Java SDK's CBOR) against `weir serve`
//! processes it starts on 127.0.0.1:0. This test makes the venv those
//! clients live in (pinned in tests/kinesis/requirements.txt, installed
//! from PyPI once per target directory) and runs the suite.

use std::path::{Path, PathBuf};
use std::process::Command;

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kinesis")
}

/// A venv with the pinned clients, rebuilt when the pins change.
fn venv() -> PathBuf {
    let requirements = suite_dir().join("requirements.txt");
    let pins = std::fs::read_to_string(&requirements).expect("read requirements.txt");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kinesis-venv");
    let stamp = dir.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&python).args(["-m", "venv"]).arg(&dir));
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements));
    std::fs::write(&stamp, pins).expect("write the venv stamp");
    dir
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

#[test]
fn boto3_the_aws_cli_and_cbor_clients_work_against_weir() {
    let venv = venv();
    let bin = venv.join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new(bin.join("python"))
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(suite_dir())
        .env("WEIR_BIN", env!("CARGO_BIN_EXE_weir-under-test"))
        .env("PATH", path)
        .status()
        .expect("run pytest");
    assert!(
        status.success(),
        "the Kinesis API suite failed (its output is above)"
    );
}
