//! TLS material: the operator's certificate, or a self-signed one generated
//! on first start and kept in the data directory so local CLI verbs find it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the generated certificate lives inside a data directory; the CLI
/// looks here when no `--ca` is given.
pub fn generated_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("cert.pem")
}

fn generated_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("key.pem")
}

/// The names the generated certificate was made for, one per line: a start
/// with other `tls_names` makes a new certificate.
fn generated_names_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("names")
}

/// Names every generated certificate is valid for: what Weir's own client
/// and a client on the box itself use.
const GENERATED_NAMES_ALWAYS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

fn reset_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("reset.key")
}

/// Bytes of the stateless-reset key.
const RESET_KEY_BYTES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate chain and key the server presents, and the file a client
/// should trust (the generated certificate, or the operator's chain).
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub cert_path: PathBuf,
    pub generated: bool,
    /// The generated certificate was made at this start (first start, or
    /// `tls_names` changed): clients holding a copy of the old one need
    /// the new one.
    pub newly_generated: bool,
}

impl ServerIdentity {
    /// A copy, for a second listener presenting the same certificate.
    pub fn clone_identity(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            cert_path: self.cert_path.clone(),
            generated: self.generated,
            newly_generated: self.newly_generated,
        }
    }
}

/// The operator's certificate and key when given; otherwise the generated
/// pair, made on first start and again when `extra_names` (`tls_names`:
/// the DNS names and addresses remote clients use) differ from the names
/// it was made for.
pub fn load_or_generate(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    extra_names: &[String],
) -> Result<ServerIdentity, TlsError> {
    let (cert_path, key_path, generated, newly_generated) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_owned(), key.to_owned(), false, false),
        _ => {
            let newly_generated = ensure_generated(data_dir, extra_names)?;
            let (cert, key) = (generated_cert_path(data_dir), generated_key_path(data_dir));
            (cert, key, true, newly_generated)
        }
    };
    let chain = read_certificates(&cert_path)?;
    let key = read_private_key(&key_path)?;
    Ok(ServerIdentity {
        chain,
        key,
        cert_path,
        generated,
        newly_generated,
    })
}

/// The names a certificate generated with `tls_names` = `extra_names` is
/// valid for.
pub fn generated_names(extra_names: &[String]) -> Vec<String> {
    GENERATED_NAMES_ALWAYS
        .iter()
        .map(|name| name.to_string())
        .chain(extra_names.iter().cloned())
        .collect()
}

/// Makes the self-signed pair unless the data directory holds one made for
/// the same names; whether it made one.
fn ensure_generated(data_dir: &Path, extra_names: &[String]) -> Result<bool, TlsError> {
    let cert_path = generated_cert_path(data_dir);
    let key_path = generated_key_path(data_dir);
    let names_path = generated_names_path(data_dir);
    let names = generated_names(extra_names);
    let names_text = names.join("\n");
    let made_for = match std::fs::read_to_string(&names_path) {
        Ok(made_for) => made_for,
        // A directory from before the names were kept: its certificate
        // has the names every one has.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            GENERATED_NAMES_ALWAYS.join("\n")
        }
        Err(source) => {
            return Err(TlsError::Read {
                path: names_path,
                source,
            });
        }
    };
    if cert_path.exists() && key_path.exists() && made_for.trim_end() == names_text {
        return Ok(false);
    }
    generate(&cert_path, &key_path, names)?;
    write_private(&names_path, format!("{names_text}\n").as_bytes())?;
    Ok(true)
}

fn generate(cert_path: &Path, key_path: &Path, names: Vec<String>) -> Result<(), TlsError> {
    let certified = rcgen::generate_simple_self_signed(names)?;
    create_parent(cert_path)?;
    // The key first, the certificate last: a start that finds no
    // certificate generates both again.
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    write_private(cert_path, certified.cert.pem().as_bytes())
}

fn create_parent(path: &Path) -> Result<(), TlsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    crate::files::write_owner_only(path, contents).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The key that signs QUIC stateless resets, created on first start and
/// kept private in the data directory: a restarted server must sign resets
/// for its predecessor's connections with the same key, or their clients
/// wait out the idle timeout before they reconnect.
pub fn load_or_create_reset_key(data_dir: &Path) -> Result<Vec<u8>, TlsError> {
    let path = reset_key_path(data_dir);
    match std::fs::read(&path) {
        Ok(key) if key.len() == RESET_KEY_BYTES => return Ok(key),
        // Not ours (or damaged): replace it; the only cost is that current
        // clients are not told of this restart.
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(TlsError::Read { path, source }),
    }
    let mut key = vec![0; RESET_KEY_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    create_parent(&path)?;
    write_private(&path, &key)?;
    Ok(key)
}

/// This box's name for the world (in sinks' message ids): 16 hex digits
/// derived from the reset key, so it stays the same across restarts of
/// one data directory and differs between boxes.
pub fn box_id(reset_key: &[u8]) -> String {
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key),
        b"weir box id",
    );
    tag.as_ref()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A rustls server configuration for QUIC: TLS 1.3 only, ALPN `weir/1`.
pub fn server_config(identity: ServerIdentity) -> Result<rustls::ServerConfig, TlsError> {
    // QUIC is defined on TLS 1.3 alone.
    let versions = [&rustls::version::TLS13];
    with_alpn(
        weir_proto::io::quic_crypto_provider(),
        identity,
        &versions,
        vec![weir_proto::ALPN.to_vec()],
    )
}

/// The same certificate for the Kinesis HTTP API: ALPN `h2` and
/// `http/1.1`, TLS 1.3 and 1.2 (agents built on Java 8 or older OpenSSL
/// stop at 1.2, and AWS's endpoints accept it).
pub fn http_server_config(identity: ServerIdentity) -> Result<rustls::ServerConfig, TlsError> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    with_alpn(
        rustls::crypto::ring::default_provider(),
        identity,
        &versions,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    )
}

fn with_alpn(
    provider: rustls::crypto::CryptoProvider,
    identity: ServerIdentity,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// A TLS client configuration (TLS 1.3 or 1.2) trusting `ca_file`'s
/// certificates, or the system's trust store without one, and presenting
/// `identity` when the server asks for a client certificate (mutual TLS).
pub fn client_config(
    ca_file: Option<&Path>,
    identity: Option<ClientIdentity>,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = read_certificates(path)?;
            roots.add_parsable_certificates(certs);
        }
        None => {
            // Unreadable entries of the system store are skipped, as
            // every TLS client does; an empty store fails at the handshake.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}

/// The certificate chain and key a client presents for mutual TLS.
pub struct ClientIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// Reads the chain and key from PEM files; refuses files without a
    /// certificate or a key.
    pub fn read(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            chain: read_certificates(cert)?,
            key: read_private_key(key)?,
        })
    }
}

/// The private key of a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, "private key", e))
}

/// The certificates of a PEM file; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// "reading PATH: ..." when the file could not be read (a wrong path, no
/// permission); otherwise what is wrong with its contents.
fn pem_error(path: &Path, what: &'static str, error: rustls_pki_types::pem::Error) -> TlsError {
    match error {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.to_owned(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            what,
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that cannot be read is reported as such, not as a PEM file
    /// with nothing usable in it; one that holds no PEM says that.
    #[test]
    fn unreadable_and_malformed_pem_files_are_told_apart() {
        let dir = tempfile::tempdir().expect("dir");
        let load = |cert: &Path, key: &Path| {
            load_or_generate(dir.path(), Some(cert), Some(key), &[])
                .err()
                .expect("refused")
        };
        let missing = dir.path().join("missing.pem");
        let error = load(&missing, &missing);
        assert!(matches!(error, TlsError::Read { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("reading {}: ", missing.display())),
            "{error}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not PEM").expect("write");
        let error = load(&garbage, &garbage);
        assert!(
            error.to_string().contains("no CERTIFICATE block"),
            "{error}"
        );

        // A good certificate and a missing key: the key's path is named.
        let generated = load_or_generate(dir.path(), None, None, &[]).expect("generated");
        let error = load(&generated.cert_path, &missing);
        assert!(
            matches!(error, TlsError::Read { ref path, .. } if *path == missing),
            "{error}"
        );
    }

    /// Whether a client that trusts the generated certificate accepts it
    /// for `name`.
    fn valid_for(identity: &ServerIdentity, name: &str) -> bool {
        use rustls::client::danger::ServerCertVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(identity.chain[0].clone()).expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("name");
        verifier
            .verify_server_cert(
                &identity.chain[0],
                &[],
                &name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .is_ok()
    }

    /// `tls_names` adds names to the generated certificate; a start with
    /// other names makes a new one, a start with the same names keeps it.
    #[test]
    fn the_generated_certificate_follows_tls_names() {
        let dir = tempfile::tempdir().expect("dir");
        let first = load_or_generate(dir.path(), None, None, &[]).expect("generated");
        assert!(first.newly_generated);
        assert!(valid_for(&first, "localhost") && valid_for(&first, "::1"));
        assert!(!valid_for(&first, "weir.example"));

        let kept = load_or_generate(dir.path(), None, None, &[]).expect("kept");
        assert!(!kept.newly_generated);
        assert_eq!(kept.chain, first.chain);

        let names = ["weir.example".to_owned(), "192.0.2.7".to_owned()];
        let named = load_or_generate(dir.path(), None, None, &names).expect("named");
        assert!(named.newly_generated);
        assert_ne!(named.chain, first.chain);
        assert!(valid_for(&named, "weir.example"));
        assert!(valid_for(&named, "192.0.2.7"));
        assert!(valid_for(&named, "127.0.0.1"));
        assert!(!valid_for(&named, "other.example"));

        let again = load_or_generate(dir.path(), None, None, &names).expect("again");
        assert!(!again.newly_generated);
        assert_eq!(again.chain, named.chain);
    }
}
