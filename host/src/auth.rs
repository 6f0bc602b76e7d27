//! Who may do what: named tokens with roles on some or all streams.
//!
//! A connection presents its token once (`Authenticate`); the connection's
//! [`Session`] remembers the token's hash, and every later request looks the
//! hash up again, so revoking a token takes effect on the next request of
//! every connection that uses it. Only SHA-256 hashes of secrets are stored:
//! secrets are 256 random bits, so a fast hash is as good as a slow one.
//!
//! On first start (no tokens stored) the server creates the token `admin`
//! and writes its secret to `DATA/admin.token`, readable only by the owner;
//! the local CLI reads it from there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_proto::admin::{Role, TokenInfo};

use crate::config::AuthConfig;
use crate::storage::{CatalogKind, Storage, StorageError, now_ms};

/// The file in the data directory holding the first admin token's secret.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The name of the token created on first start.
pub const FIRST_ADMIN_TOKEN_NAME: &str = "admin";
const SECRET_PREFIX: &str = "weir_";

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("a token named {name:?} already exists")]
    TokenExists { name: String },
    #[error("no token named {name:?}")]
    TokenNotFound { name: String },
    #[error("{0}")]
    InvalidToken(String),
    #[error("tokens_max ({tokens_max}) reached; revoke unused tokens first")]
    TooManyTokens { tokens_max: usize },
    #[error("writing {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

type SecretHash = [u8; 32];

fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{SECRET_PREFIX}{hex}")
}

/// The SigV4 secret access key of the token whose secret is `secret`, for
/// the Kinesis API (the access key id is the token's name).
pub fn sigv4_secret(secret: &str) -> String {
    sigv4_secret_from_hash(&hash_secret(secret))
}

/// Derived from the secret's hash, so the client (from the secret) and the
/// server (from what it stores) compute the same key, and tokens made
/// before the Kinesis API existed work with it. SigV4 needs the server to
/// hold a signing secret: whoever reads the token table can sign Kinesis
/// requests (as with AWS's own keys), but still cannot present the token
/// itself over QUIC.
fn sigv4_secret_from_hash(hash: &SecretHash) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, hash);
    let tag = ring::hmac::sign(&key, b"weir sigv4 secret access key v1");
    let hex: String = tag.as_ref()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("weir{hex}")
}

/// Whether `secret` looks like one [`new_secret`] made.
fn is_well_formed(secret: &str) -> bool {
    secret
        .strip_prefix(SECRET_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A token as stored: the secret only as its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    name: String,
    roles: Vec<Role>,
    streams: Option<Vec<String>>,
    created_ms: u64,
    secret_sha256: SecretHash,
}

/// A token's name and what it allows.
#[derive(Debug)]
pub struct Token {
    stored: StoredToken,
}

impl Token {
    pub fn name(&self) -> &str {
        &self.stored.name
    }

    /// Whether the token has `role` (or admin, which includes every role)
    /// on `stream`; `None` asks for the role on all streams.
    pub fn allows(&self, role: Role, stream: Option<&str>) -> bool {
        let roles = &self.stored.roles;
        let has_role = roles.contains(&role) || roles.contains(&Role::Admin);
        let in_scope = match (&self.stored.streams, stream) {
            (None, _) => true,
            (Some(streams), Some(stream)) => streams.iter().any(|s| s == stream),
            (Some(_), None) => false,
        };
        has_role && in_scope
    }

    /// Whether any role of the token covers `stream` (it may see it listed).
    pub fn sees(&self, stream: &str) -> bool {
        self.allows(Role::Consume, Some(stream)) || self.allows(Role::Produce, Some(stream))
    }

    fn info(&self) -> TokenInfo {
        TokenInfo {
            name: self.stored.name.clone(),
            roles: self.stored.roles.clone(),
            streams: self.stored.streams.clone(),
            created_ms: self.stored.created_ms,
            secret: None,
        }
    }
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Authentication is disabled: every request is allowed.
    Anyone,
    Token(Arc<Token>),
}

impl Principal {
    pub fn allows(&self, role: Role, stream: Option<&str>) -> bool {
        match self {
            Self::Anyone => true,
            Self::Token(token) => token.allows(role, stream),
        }
    }

    pub fn sees(&self, stream: &str) -> bool {
        match self {
            Self::Anyone => true,
            Self::Token(token) => token.sees(stream),
        }
    }

    /// Fails with a message naming the token, the role and the stream as
    /// the client named it — never whether the stream exists.
    pub fn require(&self, role: Role, stream: Option<&str>) -> Result<(), AuthError> {
        if self.allows(role, stream) {
            return Ok(());
        }
        let name = match self {
            Self::Anyone => "",
            Self::Token(token) => token.name(),
        };
        let scope = match stream {
            Some(stream) => format!("on stream {stream:?}"),
            None => "on all streams (plugins, processors, tokens and server information need it)"
                .to_owned(),
        };
        Err(AuthError::PermissionDenied(format!(
            "token {name:?} lacks the {} role {scope}",
            role.name()
        )))
    }
}

/// What one connection has proven; shared by its streams.
#[derive(Debug, Default)]
pub struct Session {
    secret_hash: Mutex<Option<SecretHash>>,
}

impl Session {
    /// Whether the connection presented a valid token (it may have been
    /// revoked since).
    pub fn has_authenticated(&self) -> bool {
        self.secret_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl Session {
    /// A new session acting as the same token (or none), for work that
    /// outlives the request that authenticated, such as a subscription.
    pub fn clone_identity(&self) -> Self {
        Self {
            secret_hash: Mutex::new(*self.secret_hash.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// A session already bound to a token (a request whose signature was
    /// verified with the token's key).
    fn for_token(hash: SecretHash) -> Self {
        Self {
            secret_hash: Mutex::new(Some(hash)),
        }
    }
}

/// The token table: loaded at start, changed by admin requests.
pub struct Auth {
    disabled: bool,
    tokens_max: usize,
    storage: Arc<Storage>,
    tokens: RwLock<HashMap<SecretHash, Arc<Token>>>,
}

impl Auth {
    /// Loads the stored tokens; on first start (none stored, auth on)
    /// creates the `admin` token and writes its secret to `DATA/admin.token`.
    pub fn open(
        storage: Arc<Storage>,
        config: &AuthConfig,
        data_dir: &Path,
    ) -> Result<Self, AuthError> {
        let mut tokens = HashMap::new();
        for bytes in storage.catalog().list(CatalogKind::Token, "")? {
            let stored: StoredToken =
                serde_json::from_slice(&bytes).map_err(|_| StorageError::Corrupt {
                    what: "token record",
                })?;
            tokens.insert(stored.secret_sha256, Arc::new(Token { stored }));
        }
        let auth = Self {
            disabled: config.disabled,
            tokens_max: config.tokens_max,
            storage,
            tokens: RwLock::new(tokens),
        };
        if auth.disabled {
            tracing::warn!(
                "AUTHENTICATION IS DISABLED (auth.disabled = true): anyone who can reach the \
                 QUIC port may read, write and administer every stream"
            );
        } else if auth.read().is_empty() {
            auth.create_first_admin(data_dir)?;
        }
        Ok(auth)
    }

    /// Creates the first admin token, crash-safe: the secret is written to
    /// `DATA/admin.token` (atomically) before its hash is stored, and a
    /// start that finds the file but no tokens stores the file's secret. So
    /// a kill at any moment leaves either no token and no file (a new one
    /// is made) or a file whose secret works — never a stored token whose
    /// secret is lost.
    fn create_first_admin(&self, data_dir: &Path) -> Result<(), AuthError> {
        let path = admin_token_path(data_dir);
        let secret = match weir_proto::io::read_token_file(&path) {
            Ok(secret) if is_well_formed(&secret) => secret,
            _ => {
                let secret = new_secret();
                crate::files::write_owner_only(&path, format!("{secret}\n").as_bytes()).map_err(
                    |source| AuthError::TokenFile {
                        path: path.clone(),
                        source,
                    },
                )?;
                secret
            }
        };
        self.insert(FIRST_ADMIN_TOKEN_NAME, vec![Role::Admin], None, secret)?;
        tracing::info!(path = %path.display(), "created the first admin token");
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        !self.disabled
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<SecretHash, Arc<Token>>> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<SecretHash, Arc<Token>>> {
        self.tokens.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `secret` and binds the connection to its token.
    pub fn authenticate(&self, session: &Session, secret: &str) -> Result<(), AuthError> {
        if self.disabled {
            return Ok(());
        }
        let hash = hash_secret(secret);
        if !self.read().contains_key(&hash) {
            return Err(AuthError::Unauthenticated(
                "unknown or revoked token".to_owned(),
            ));
        }
        *session
            .secret_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hash);
        Ok(())
    }

    /// For a SigV4-signed request: the signing secret of the token named
    /// `name` and a session acting as it; `None` if no such token exists.
    pub fn sigv4_identity(&self, name: &str) -> Option<(String, Session)> {
        self.read()
            .iter()
            .find(|(_, token)| token.name() == name)
            .map(|(hash, _)| (sigv4_secret_from_hash(hash), Session::for_token(*hash)))
    }

    /// Who the connection acts as, checked against the current table.
    pub fn principal(&self, session: &Session) -> Result<Principal, AuthError> {
        if self.disabled {
            return Ok(Principal::Anyone);
        }
        let hash = *session
            .secret_hash
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(hash) = hash else {
            return Err(AuthError::Unauthenticated(
                "this connection has not authenticated: send Authenticate with a token first \
                 (the first admin token is in the server's DATA/admin.token)"
                    .to_owned(),
            ));
        };
        self.read()
            .get(&hash)
            .map(|token| Principal::Token(token.clone()))
            .ok_or_else(|| {
                AuthError::Unauthenticated(
                    "the token this connection authenticated with was revoked".to_owned(),
                )
            })
    }

    /// Creates a token; the answer carries its secret (shown only now).
    pub fn create(
        &self,
        name: &str,
        roles: Vec<Role>,
        streams: Option<Vec<String>>,
    ) -> Result<TokenInfo, AuthError> {
        if roles.is_empty() {
            return Err(AuthError::InvalidToken(
                "a token needs at least one role (produce, consume, admin)".to_owned(),
            ));
        }
        if streams.as_ref().is_some_and(Vec::is_empty) {
            return Err(AuthError::InvalidToken(
                "a token's stream list cannot be empty; leave it out for all streams".to_owned(),
            ));
        }
        self.insert(name, roles, streams, new_secret())
    }

    fn insert(
        &self,
        name: &str,
        roles: Vec<Role>,
        streams: Option<Vec<String>>,
        secret: String,
    ) -> Result<TokenInfo, AuthError> {
        let mut tokens = self.write();
        if tokens.values().any(|t| t.name() == name) {
            return Err(AuthError::TokenExists {
                name: name.to_owned(),
            });
        }
        if tokens.len() >= self.tokens_max {
            return Err(AuthError::TooManyTokens {
                tokens_max: self.tokens_max,
            });
        }
        let stored = StoredToken {
            name: name.to_owned(),
            roles,
            streams,
            created_ms: now_ms(),
            secret_sha256: hash_secret(&secret),
        };
        let bytes = serde_json::to_vec(&stored)
            .map_err(|e| AuthError::InvalidToken(format!("encoding token: {e}")))?;
        self.storage
            .catalog()
            .put(CatalogKind::Token, name, &bytes)?;
        let token = Arc::new(Token { stored });
        let mut info = token.info();
        info.secret = Some(secret);
        tokens.insert(token.stored.secret_sha256, token);
        Ok(info)
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let mut infos: Vec<TokenInfo> = self.read().values().map(|t| t.info()).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Removes a token; connections using it fail their next request.
    pub fn revoke(&self, name: &str) -> Result<(), AuthError> {
        let mut tokens = self.write();
        let hash = tokens
            .iter()
            .find(|(_, t)| t.name() == name)
            .map(|(hash, _)| *hash)
            .ok_or_else(|| AuthError::TokenNotFound {
                name: name.to_owned(),
            })?;
        self.storage.catalog().remove(CatalogKind::Token, name)?;
        tokens.remove(&hash);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(roles: Vec<Role>, streams: Option<Vec<&str>>) -> Token {
        Token {
            stored: StoredToken {
                name: "t".into(),
                roles,
                streams: streams.map(|s| s.into_iter().map(str::to_owned).collect()),
                created_ms: 0,
                secret_sha256: [0; 32],
            },
        }
    }

    #[test]
    fn roles_apply_to_their_streams_and_admin_includes_the_others() {
        let producer = token(vec![Role::Produce], Some(vec!["clicks"]));
        assert!(producer.allows(Role::Produce, Some("clicks")));
        assert!(!producer.allows(Role::Produce, Some("orders")));
        assert!(!producer.allows(Role::Consume, Some("clicks")));
        assert!(!producer.allows(Role::Produce, None));
        assert!(producer.sees("clicks") && !producer.sees("orders"));

        let stream_admin = token(vec![Role::Admin], Some(vec!["clicks"]));
        assert!(stream_admin.allows(Role::Consume, Some("clicks")));
        assert!(!stream_admin.allows(Role::Admin, None));

        let admin = token(vec![Role::Admin], None);
        assert!(admin.allows(Role::Admin, None));
        assert!(admin.allows(Role::Produce, Some("anything")));
    }

    #[test]
    fn secrets_are_random_and_prefixed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(is_well_formed(&a));
        assert!(!is_well_formed("weir_123") && !is_well_formed(""));
    }

    #[test]
    fn sigv4_secrets_are_derived_alike_from_the_secret_and_its_hash() {
        let secret = new_secret();
        let derived = sigv4_secret(&secret);
        assert_eq!(derived, sigv4_secret_from_hash(&hash_secret(&secret)));
        assert_eq!(derived.len(), 44);
        assert_ne!(derived, sigv4_secret(&new_secret()));
        assert!(!derived.contains(&secret[SECRET_PREFIX.len()..SECRET_PREFIX.len() + 16]));
    }
}
