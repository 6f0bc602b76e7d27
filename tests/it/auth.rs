//! Tokens and roles: who may connect, what each token may do, revocation,
//! and the explicit way to turn authentication off.

use weir_client::admin::{AdminRequest, AdminResponse, Role, TokenInfo};
use weir_client::{Client, ClientError, ErrorCode, Position, PutRecord, PutResult};

use crate::support::TestServer;

fn record(key: &str) -> PutRecord {
    PutRecord {
        partition_key: key.into(),
        explicit_hash_key: None,
        data: bytes::Bytes::from_static(b"{}"),
    }
}

fn code(error: ClientError) -> ErrorCode {
    match error {
        ClientError::Server { code, .. } => code,
        other => panic!("expected a server error, got {other}"),
    }
}

fn denied<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    code(result.expect_err("denied"))
}

async fn create_token(
    admin: &Client,
    name: &str,
    roles: Vec<Role>,
    streams: Option<Vec<&str>>,
) -> TokenInfo {
    let request = AdminRequest::CreateToken {
        name: name.into(),
        roles,
        streams: streams.map(|s| s.into_iter().map(str::to_owned).collect()),
    };
    match admin.admin(request).await.expect("create token") {
        AdminResponse::Token(info) => info,
        other => panic!("unexpected {other:?}"),
    }
}

async fn client_with(test: &TestServer, token: Option<&str>) -> Result<Client, ClientError> {
    let mut config = crate::support::client_config(&test.server);
    config.token = token.map(str::to_owned);
    let client = Client::connect(config).await?;
    Ok(client)
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((path, bytes));
        }
    }
    files
}

#[tokio::test]
async fn tokens_limit_each_connection_to_its_roles_and_streams() {
    let test = TestServer::start().await;
    let admin = &test.client;
    for stream in ["clicks", "orders", "secret"] {
        admin
            .create_stream(stream, 1, Default::default())
            .await
            .expect("create");
    }

    // No token: nothing but Authenticate is answered.
    let anonymous = client_with(&test, None).await.expect("QUIC connects");
    let error = anonymous.list_streams().await.expect_err("no token");
    assert_eq!(code(error), ErrorCode::Unauthenticated);
    // A wrong token is refused when the connection authenticates.
    let wrong = client_with(&test, Some("weir_not-a-token")).await;
    assert_eq!(
        code(wrong.err().expect("wrong token")),
        ErrorCode::Unauthenticated
    );

    let sensor = create_token(admin, "sensor", vec![Role::Produce], Some(vec!["clicks"])).await;
    let secret = sensor.secret.clone().expect("secret shown on create");
    let producer = client_with(&test, Some(&secret)).await.expect("connects");
    let results = producer
        .put_records("clicks", None, vec![record("a"), record("b")])
        .await
        .expect("produce on its stream");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, PutResult::Stored { .. }))
    );
    assert_eq!(
        denied(
            producer
                .put_records("orders", None, vec![record("a")])
                .await
        ),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        denied(
            producer
                .get_records("clicks", 0, Position::TrimHorizon, 10)
                .await
        ),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        denied(producer.create_stream("mine", 1, Default::default()).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        denied(producer.admin(AdminRequest::ListTokens).await),
        ErrorCode::PermissionDenied
    );
    // It sees only its stream, and cannot tell a hidden stream from a
    // missing one.
    assert_eq!(producer.list_streams().await.expect("list"), vec!["clicks"]);
    let hidden = producer
        .describe_stream("secret")
        .await
        .expect_err("hidden");
    let missing = producer
        .describe_stream("nothing")
        .await
        .expect_err("missing");
    let (
        ClientError::Server {
            code: a,
            message: hidden,
        },
        ClientError::Server {
            code: b,
            message: missing,
        },
    ) = (hidden, missing)
    else {
        panic!("expected server errors");
    };
    assert_eq!(
        (a, b),
        (ErrorCode::PermissionDenied, ErrorCode::PermissionDenied)
    );
    assert_eq!(
        hidden.replace("secret", "X"),
        missing.replace("nothing", "X"),
        "the answers differ only in the name asked for"
    );

    // A consumer of every stream reads and subscribes, but cannot produce.
    let reader = create_token(admin, "reader", vec![Role::Consume], None).await;
    let consumer = client_with(&test, reader.secret.as_deref())
        .await
        .expect("connects");
    let batch = consumer
        .get_records("clicks", 0, Position::TrimHorizon, 10)
        .await
        .expect("consume");
    assert_eq!(batch.records.len(), 2);
    let mut feed = consumer
        .subscribe("orders", 0, Position::Latest)
        .await
        .expect("subscribe");
    assert_eq!(
        denied(
            consumer
                .put_records("clicks", None, vec![record("c")])
                .await
        ),
        ErrorCode::PermissionDenied
    );

    // Listing shows names and roles, never secrets.
    let tokens = match admin.admin(AdminRequest::ListTokens).await.expect("list") {
        AdminResponse::Tokens(tokens) => tokens,
        other => panic!("unexpected {other:?}"),
    };
    let names: Vec<&str> = tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["admin", "reader", "sensor"]);
    assert!(tokens.iter().all(|t| t.secret.is_none()));
    assert_eq!(
        code(
            admin
                .admin(AdminRequest::CreateToken {
                    name: "sensor".into(),
                    roles: vec![Role::Consume],
                    streams: None,
                })
                .await
                .expect_err("duplicate")
        ),
        ErrorCode::AlreadyExists
    );

    // Revocation reaches the open connection's next request; what it
    // stored stays.
    admin
        .admin(AdminRequest::DeleteToken {
            name: "sensor".into(),
        })
        .await
        .expect("revoke");
    assert_eq!(
        denied(
            producer
                .put_records("clicks", None, vec![record("c")])
                .await
        ),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(
            client_with(&test, Some(&secret))
                .await
                .err()
                .expect("revoked")
        ),
        ErrorCode::Unauthenticated
    );
    let stored = consumer
        .get_records("clicks", 0, Position::TrimHorizon, 10)
        .await
        .expect("read");
    assert_eq!(stored.records.len(), 2);

    // Secrets are stored only as hashes: the reader's secret is in no file.
    let reader_secret = reader.secret.clone().expect("secret");
    for (path, bytes) in files_under(test.data_dir()) {
        assert!(
            !bytes
                .windows(reader_secret.len())
                .any(|w| w == reader_secret.as_bytes()),
            "{} holds a token secret",
            path.display()
        );
    }

    // A running subscription ends once its token is revoked.
    admin
        .admin(AdminRequest::DeleteToken {
            name: "reader".into(),
        })
        .await
        .expect("revoke");
    admin
        .put_records("orders", None, vec![record("o")])
        .await
        .expect("put");
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
        .await
        .expect("the feed answers");
    assert_eq!(
        code(ended.expect_err("revoked")),
        ErrorCode::Unauthenticated
    );
}

#[tokio::test]
async fn first_start_writes_an_owner_only_admin_token_and_it_survives_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let test = TestServer::start().await;
    let path = weir::auth::admin_token_path(test.data_dir());
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner may read the token");
    let secret = weir_client::read_token_file(&path).expect("read");
    assert_eq!(secret, test.admin_token());

    let test = test.restart().await;
    assert_eq!(
        weir_client::read_token_file(&path).expect("read"),
        secret,
        "a restart keeps the token"
    );
    test.client
        .list_streams()
        .await
        .expect("the old token still works");
}

#[tokio::test]
async fn a_first_start_killed_after_writing_admin_token_stores_that_token_next_time() {
    // What a kill between writing the file and storing its hash leaves: a
    // token file and no token. The next start must adopt the file's secret.
    let dir = tempfile::tempdir().expect("dir");
    let secret = format!("weir_{}", "ab".repeat(32));
    std::fs::write(
        weir::auth::admin_token_path(dir.path()),
        format!("{secret}\n"),
    )
    .expect("write token file");
    let test = crate::support::TestServer::start_in(dir, |_| {}).await;
    assert_eq!(test.admin_token(), secret);
    test.client
        .list_streams()
        .await
        .expect("the file's secret is the admin token");

    // A damaged file (a kill mid-write of an older version) is replaced.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(weir::auth::admin_token_path(dir.path()), "").expect("write");
    let test = crate::support::TestServer::start_in(dir, |_| {}).await;
    assert!(test.admin_token().starts_with("weir_"));
    test.client.list_streams().await.expect("a new token works");
}

#[tokio::test]
async fn auth_can_be_disabled_explicitly() {
    let test = TestServer::start_with(|config| config.auth.disabled = true).await;
    assert!(!weir::auth::admin_token_path(test.data_dir()).exists());
    let anonymous = client_with(&test, None).await.expect("connects");
    anonymous
        .create_stream("open", 1, Default::default())
        .await
        .expect("anyone may do anything");
    match anonymous
        .admin(AdminRequest::ServerInfo)
        .await
        .expect("info")
    {
        AdminResponse::Server(info) => assert!(!info.auth_enabled),
        other => panic!("unexpected {other:?}"),
    }
}
