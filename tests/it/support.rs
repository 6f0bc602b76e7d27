//! Starting real servers for tests: in this process (most tests) or as a
//! child process (tests that SIGKILL it). Both listen on 127.0.0.1:0.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir::{Server, ServerConfig};
use weir_client::admin::{AdminRequest, AdminResponse, ProcessorInfo, ProcessorSettings};
use weir_client::{Client, ClientConfig, Position, PutRecord, PutResult, Record};

/// A server in this process on a fresh temporary directory.
pub struct TestServer {
    pub server: Server,
    pub client: Client,
    dir: tempfile::TempDir,
}

/// The defaults, with every listener on a free loopback port.
fn test_config(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::new(dir);
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.kinesis_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the defaults changed by `configure`.
    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), configure).await
    }

    /// Starts on `dir` (which it removes when dropped).
    pub async fn start_in(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let mut config = test_config(dir.path());
        configure(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let client = connect(client_config(&server)).await;
        Self {
            server,
            client,
            dir,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts the server down cleanly and starts a new one (with the
    /// default settings) on the same data directory.
    pub async fn restart(self) -> Self {
        self.restart_after(|_| {}).await
    }

    /// [`TestServer::restart`], doing `between` to the data directory while
    /// no server has it open.
    pub async fn restart_after(self, between: impl FnOnce(&Path)) -> Self {
        self.client.close().await;
        self.server.shutdown().await.expect("clean shutdown");
        between(self.dir.path());
        let server = Server::start(test_config(self.dir.path()))
            .await
            .expect("restart");
        let client = connect(client_config(&server)).await;
        Self {
            server,
            client,
            dir: self.dir,
        }
    }

    pub async fn new_client(&self) -> Client {
        connect(client_config(&self.server)).await
    }

    /// The server's Kinesis API, signed as its first admin token.
    pub fn kinesis_target(&self) -> weir::aws::client::Target {
        weir::aws::client::Target::plain(
            self.server.kinesis_addr().expect("the Kinesis API is on"),
            weir::auth::FIRST_ADMIN_TOKEN_NAME.to_owned(),
            weir::auth::sigv4_secret(&self.admin_token()),
            "us-east-1",
        )
    }

    /// The secret of the server's first admin token.
    pub fn admin_token(&self) -> String {
        client_config(&self.server).token.expect("auth is on")
    }
}

/// A client configuration for an embedded server, as its first admin.
pub fn client_config(server: &Server) -> ClientConfig {
    let access = server.access();
    let mut config = ClientConfig::new(access.addr, access.cert_path);
    config.token = access.admin_token;
    config
}

pub async fn connect(mut config: ClientConfig) -> Client {
    config.request_timeout = Duration::from_secs(20);
    Client::connect(config).await.expect("client connects")
}

/// `weir serve` with QUIC on `listen`, the admin listener on a free
/// loopback port and the Kinesis API off (tests run many servers at once;
/// the API's fixed default port would collide). `--data DIR` follows.
pub fn serve_args(listen: &str) -> [&str; 7] {
    [
        "serve",
        "--listen",
        listen,
        "--admin-listen",
        "127.0.0.1:0",
        "--kinesis-listen",
        "off",
    ]
}

/// The `weir` binary as a child process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub cert: PathBuf,
    token: Option<String>,
}

impl ServerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn spawn(data: &Path, extra_args: &[&str]) -> Self {
        Self::spawn_on(data, "127.0.0.1:0", extra_args)
    }

    /// Starts `weir serve` on `listen` and waits for its "listening on" line.
    pub fn spawn_on(data: &Path, listen: &str, extra_args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir-under-test"))
            .args(serve_args(listen))
            .arg("--data")
            .arg(data)
            .args(extra_args)
            .env("WEIR_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weir serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from weir serve: {line:?}"))
            .parse()
            .expect("address");
        Self {
            child,
            addr,
            cert: weir::tls::generated_cert_path(data),
            token: weir_client::read_token_file(&weir::auth::admin_token_path(data)).ok(),
        }
    }

    /// A client configuration with the server's first admin token.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.addr, &self.cert);
        config.token = self.token.clone();
        config
    }

    pub async fn connect(&self) -> Client {
        connect(self.client_config()).await
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for weir serve")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates one-shard `stream` and puts records 0 to 29 into it in three
/// commits: three chunks in its first segment file. `data(n)` is record
/// n's data.
pub async fn stream_of_three_chunks(client: &Client, stream: &str, data: impl Fn(usize) -> String) {
    client
        .create_stream(stream, 1, Default::default())
        .await
        .expect("create");
    for batch in 0..3 {
        let records = (0..10)
            .map(|i| PutRecord {
                partition_key: format!("k{i}"),
                explicit_hash_key: None,
                data: bytes::Bytes::from(data(batch * 10 + i)),
            })
            .collect();
        put_all(client, stream, records).await;
    }
}

/// The first segment file of the first stream created in data directory `dir`.
pub fn first_segment(dir: &Path) -> PathBuf {
    dir.join("db")
        .join("segments")
        .join("1")
        .join(format!("{:020}.seg", 0))
}

/// Flips a bit in the middle of the first segment file of the first
/// stream created in the data directory `dir`, as a failing disk would.
pub fn damage_the_middle_of_the_first_segment(dir: &Path) {
    let segment = first_segment(dir);
    let mut bytes = std::fs::read(&segment).expect("segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&segment, &bytes).expect("damage");
}

/// Every record of every shard, read with GetRecords from the trim horizon.
pub async fn read_all(client: &Client, stream: &str) -> HashMap<u32, Vec<Record>> {
    let description = client.describe_stream(stream).await.expect("describe");
    let mut all = HashMap::new();
    for shard in description.shards {
        let mut records = Vec::new();
        let mut from = Position::TrimHorizon;
        loop {
            let batch = client
                .get_records(stream, shard.shard, from, 10_000)
                .await
                .expect("get records");
            records.extend(batch.records);
            if batch.records_behind_tip == 0 {
                break;
            }
            from = Position::AtSequence(batch.next_sequence);
        }
        all.insert(shard.shard, records);
    }
    all
}

/// A venv in the target directory with the packages pinned in
/// `requirements` (installed from PyPI once, again when the pins change).
/// Tests that need the same venv wait for each other here.
pub fn venv(name: &str, requirements: &Path) -> PathBuf {
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let pins = std::fs::read_to_string(requirements).expect("read the requirements");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let stamp = dir.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(pins.as_str()) {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run(Command::new(&python).args(["-m", "venv"]).arg(&dir));
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(requirements));
    std::fs::write(&stamp, pins).expect("write the venv stamp");
    dir
}

/// `node_modules` in the target directory with the packages pinned in
/// `package_json` (installed from the npm registry once, again when the
/// pins change). Tests that need npm packages wait for each other here.
pub fn node_modules(name: &str, package_json: &Path) -> PathBuf {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|p| p.into_inner());
    let pins = std::fs::read_to_string(package_json).expect("read package.json");
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let stamp = prefix.join("package.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(pins.as_str()) {
        std::fs::create_dir_all(&prefix).expect("npm prefix");
        std::fs::copy(package_json, prefix.join("package.json")).expect("copy package.json");
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix));
        std::fs::write(&stamp, pins).expect("write the npm stamp");
    }
    prefix.join("node_modules")
}

/// Debian's packages of the Go toolchain and of the AWS SDK for Go (v1 and
/// v2), installed with apt-get when missing.
const GO_PACKAGES: [&str; 3] = [
    "golang-go",
    "golang-github-aws-aws-sdk-go-dev",
    "golang-github-aws-aws-sdk-go-v2-dev",
];
/// A directory each of the SDK packages installs.
const GO_SDK_DIRS: [&str; 2] = [
    "github.com/aws/aws-sdk-go/service/kinesis",
    "github.com/aws/aws-sdk-go-v2/service/kinesis",
];
/// Where Debian puts Go libraries: a GOPATH, built against without modules.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// Builds the Go program in `dir` (a `check.go` importing the
/// Debian-packaged AWS SDKs for Go, and packages of `dir`'s parent, a
/// GOPATH) into the target directory, named after `dir`, installing Go and
/// the SDKs from Debian first if they are missing; returns the executable.
pub fn go_program(dir: &Path) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let sources = Path::new(DEBIAN_GOPATH).join("src");
    let go_found = Command::new("go").arg("version").output().is_ok();
    if !go_found || !GO_SDK_DIRS.iter().all(|sdk| sources.join(sdk).exists()) {
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(GO_PACKAGES)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|status| status.success())
        };
        // A fresh machine's package lists may be missing or stale.
        if !install() {
            run(Command::new("apt-get").args(["update", "-q"]));
            assert!(install(), "apt-get install {GO_PACKAGES:?} failed");
        }
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let name = dir.file_name().expect("a directory name").to_string_lossy();
    let program = tmp.join(format!("go-{name}"));
    run(Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&program)
        .arg(dir.join("check.go"))
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!(
                "{DEBIAN_GOPATH}:{}",
                dir.parent().expect("a GOPATH").display()
            ),
        )
        .env("GOCACHE", tmp.join("go-build-cache"))
        .env("GOFLAGS", ""));
    program
}

fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// Waits (up to 5 s) until retention has removed shard 0 of `stream` up to
/// `first_sequence`; false if it did not.
pub async fn trimmed_to(client: &Client, stream: &str, first_sequence: u64) -> bool {
    eventually(Duration::from_secs(5), || async {
        client
            .describe_stream(stream)
            .await
            .expect("describe")
            .shards[0]
            .first_sequence
            == Some(first_sequence)
    })
    .await
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare QUIC connection speaking `weir/1`, for sending bytes the client
/// library would never send.
pub async fn raw_connection(addr: SocketAddr, cert: &Path) -> quinn::Connection {
    raw_connection_from("127.0.0.1:0", addr, cert).await
}

/// A raw QUIC connection from the local address `local` (another loopback
/// address, say, to look like a different host).
pub async fn raw_connection_from(local: &str, addr: SocketAddr, cert: &Path) -> quinn::Connection {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cert).expect("cert file") {
        roots.add(cert.expect("cert")).expect("add cert");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![weir_proto::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint = quinn::Endpoint::client(local.parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    endpoint
        .connect(addr, weir_proto::DEFAULT_SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake")
}

/// Sends raw bytes on a new stream, finishes it, and decodes the answer.
pub async fn raw_exchange(connection: &quinn::Connection, bytes: &[u8]) -> weir_proto::Response {
    let (mut send, mut recv) = connection.open_bi().await.expect("open stream");
    send.write_all(bytes).await.expect("write");
    let _ = send.finish();
    read_raw_response(&mut recv).await
}

pub async fn read_raw_response(recv: &mut quinn::RecvStream) -> weir_proto::Response {
    let answer = recv.read_to_end(64 << 20).await.expect("read answer");
    let mut buf = bytes::BytesMut::from(&answer[..]);
    let frame = weir_proto::decode_frame(&mut buf, usize::MAX)
        .expect("valid frame")
        .expect("complete frame");
    weir_proto::Response::decode(frame).expect("decodable response")
}

/// Builds the plugins workspace for wasm32-wasip2 once per test run and
/// returns the directory holding the `.wasm` components.
pub fn plugin_dir() -> &'static Path {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        weir_cli::demo::example_plugins_dir(false).expect("build the example plugins")
    })
}

/// A built plugin component's bytes, e.g. `plugin("json_filter")`.
pub fn plugin(name: &str) -> bytes::Bytes {
    let path = plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .into()
}

/// Creates `stream` with `shards` shards and uploads the named plugins
/// (`(name, component file stem)`).
pub async fn stream_with_plugins(
    client: &Client,
    stream: &str,
    shards: u32,
    plugins: &[(&str, &str)],
) {
    client
        .create_stream(stream, shards, Default::default())
        .await
        .expect("create stream");
    for (name, file) in plugins {
        client
            .add_plugin(name, plugin(file))
            .await
            .expect("add plugin");
    }
}

/// Processor settings with the server's defaults for everything else.
pub fn processor_settings(
    name: &str,
    plugin: &str,
    source: &str,
    config: &[(&str, &str)],
) -> ProcessorSettings {
    ProcessorSettings {
        name: name.into(),
        plugin: plugin.into(),
        source: source.into(),
        config: config
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ..Default::default()
    }
}

/// Settings for a json-filter processor `name` on `source` that keeps
/// records whose `event` is `purchase` (the plugin uploaded as
/// `json-filter`).
pub fn purchase_filter(name: &str, source: &str) -> ProcessorSettings {
    processor_settings(
        name,
        "json-filter",
        source,
        &[("field", "event"), ("op", "equals"), ("value", "purchase")],
    )
}

/// What `weir status` shows about the server.
pub async fn server_info(client: &Client) -> weir_client::admin::ServerInfo {
    match client
        .admin(AdminRequest::ServerInfo)
        .await
        .expect("server info")
    {
        AdminResponse::Server(info) => info,
        other => panic!("unexpected {other:?}"),
    }
}

pub async fn create_processor(client: &Client, settings: ProcessorSettings) -> ProcessorInfo {
    client
        .create_processor(settings)
        .await
        .expect("create processor")
}

pub async fn describe_processor(client: &Client, name: &str) -> ProcessorInfo {
    client
        .describe_processor(name)
        .await
        .expect("describe processor")
}

/// Puts `records` in one request and checks every one was stored.
pub async fn put_all(client: &Client, stream: &str, records: Vec<PutRecord>) {
    let results = client
        .put_records(stream, None, records)
        .await
        .expect("put");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, PutResult::Stored { .. })),
        "{results:?}"
    );
}

/// The value of a string or number field in the tests' flat JSON records
/// (just enough JSON without another dependency).
pub fn json_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let start = text.find(&format!("\"{name}\":"))? + name.len() + 3;
    let rest = &text[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}

/// `results` as a retry of the same stamped batch is answered: the same
/// positions, each marked as stored before.
pub fn stored_before(results: &[PutResult]) -> Vec<PutResult> {
    results
        .iter()
        .map(|result| match result {
            PutResult::Stored {
                shard, sequence, ..
            } => PutResult::Stored {
                shard: *shard,
                sequence: *sequence,
                duplicate: true,
            },
            failed => failed.clone(),
        })
        .collect()
}
