//! Shared harness for the extension's integration tests: real connections to a real PostgreSQL.
//!
//! The environment names the cluster (see `scripts/test`); a missing variable fails the test, it
//! never skips it. Tests share the database named by `OAUTH_TEST_DATABASE_URL` and isolate by
//! creating their own clients and users with random ids; a test that changes global state
//! (settings, the extension itself, dump/restore) gets its own throw-away database ([`TempDb`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_postgres::config::Host;
use tokio_postgres::{AsyncMessage, Config, NoTls, Notification};

pub use serde_json;
pub use tokio_postgres;
pub use tokio_postgres::Client;
pub use uuid::Uuid;

mod requests;
pub use requests::*;

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "environment variable {name} is not set: run the tests through scripts/test, or set \
             OAUTH_TEST_DATABASE_URL, OAUTH_TEST_GATEWAY_DATABASE_URL and OAUTH_TEST_PG_BIN"
        ),
    }
}

/// Connection settings of the administrator (extension owner) in the shared test database.
pub fn admin_config() -> Config {
    env("OAUTH_TEST_DATABASE_URL")
        .parse()
        .expect("OAUTH_TEST_DATABASE_URL is not a valid connection string")
}

/// Connection settings of the gateway login role (member of `oauth_gateway`) in the shared test database.
pub fn gateway_config() -> Config {
    env("OAUTH_TEST_GATEWAY_DATABASE_URL")
        .parse()
        .expect("OAUTH_TEST_GATEWAY_DATABASE_URL is not a valid connection string")
}

/// Directory with the PostgreSQL client programs (pg_dump, psql, pg_restore).
pub fn pg_bin(program: &str) -> PathBuf {
    let path = PathBuf::from(env("OAUTH_TEST_PG_BIN")).join(program);
    assert!(
        path.exists(),
        "{} does not exist (OAUTH_TEST_PG_BIN)",
        path.display()
    );
    path
}

/// `config` pointed at another database.
pub fn with_dbname(config: &Config, dbname: &str) -> Config {
    let mut config = config.clone();
    config.dbname(dbname);
    config
}

/// A libpq key=value connection string for subprocesses (pg_dump, psql).
pub fn conninfo(config: &Config) -> String {
    let mut parts = Vec::new();
    if let Some(host) = config.get_hosts().first() {
        match host {
            Host::Tcp(h) => parts.push(format!("host={h}")),
            Host::Unix(p) => parts.push(format!("host={}", p.display())),
        }
    }
    if let Some(port) = config.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={user}"));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!("password={}", String::from_utf8_lossy(password)));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={dbname}"));
    }
    parts.join(" ")
}

/// Opens a connection and drives it on the runtime.
pub async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", conninfo(config)));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A connection whose asynchronous notifications (LISTEN) arrive on the returned channel.
pub async fn connect_listening(config: &Config) -> (Client, mpsc::UnboundedReceiver<Notification>) {
    let (client, mut connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", conninfo(config)));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    (client, rx)
}

pub async fn admin() -> Client {
    connect(&admin_config()).await
}

pub async fn gateway() -> Client {
    connect(&gateway_config()).await
}

/// A random identifier for users, clients and databases created by one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The SQLSTATE of a failed statement; panics (with what happened) when it did not fail in the database.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => match e.as_db_error() {
            Some(db) => db.code().code().to_owned(),
            None => panic!("expected a database error, got {e}"),
        },
    }
}

/// Asserts that `result` failed with exactly `code`.
#[track_caller]
pub fn assert_sqlstate<T: std::fmt::Debug>(
    result: Result<T, tokio_postgres::Error>,
    code: &str,
    what: &str,
) {
    match result {
        Ok(v) => panic!("{what}: expected SQLSTATE {code}, but it succeeded with {v:?}"),
        Err(e) => match e.as_db_error() {
            Some(db) => assert_eq!(
                db.code().code(),
                code,
                "{what}: expected SQLSTATE {code}, got {} ({})",
                db.code().code(),
                db.message()
            ),
            None => panic!("{what}: expected SQLSTATE {code}, got a non-database error {e}"),
        },
    }
}

/// Asserts that a gateway function answered the RFC error `code` (with a description).
#[track_caller]
pub fn assert_error(answer: &Value, code: &str, what: &str) {
    assert_eq!(
        answer.get("error").and_then(Value::as_str),
        Some(code),
        "{what}: expected error {code}, got {answer}"
    );
    assert!(
        answer
            .get("error_description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.is_empty()),
        "{what}: error without a description: {answer}"
    );
}

/// Asserts that a gateway function succeeded.
#[track_caller]
pub fn assert_ok(answer: &Value, what: &str) {
    assert!(
        answer.get("error").is_none(),
        "{what}: expected success, got {answer}"
    );
}

pub fn str_field<'a>(answer: &'a Value, field: &str) -> &'a str {
    answer
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string field {field} in {answer}"))
}

pub fn uuid_field(answer: &Value, field: &str) -> uuid::Uuid {
    str_field(answer, field)
        .parse()
        .unwrap_or_else(|e| panic!("field {field} of {answer} is not a uuid: {e}"))
}

/// SHA-256, as the extension stores tokens.
pub fn sha256(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A PKCE pair (RFC 7636): a fresh 43-character verifier and its S256 challenge.
#[derive(Clone, Debug)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_verifier(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn from_verifier(verifier: &str) -> Self {
        Pkce {
            verifier: verifier.to_owned(),
            challenge: URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())),
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// A redirect URL split into the part before the query and its decoded parameters.
#[derive(Debug)]
pub struct Redirect {
    pub base: String,
    pub params: HashMap<String, String>,
    /// Parameter names in order, to catch duplicates.
    pub names: Vec<String>,
}

impl Redirect {
    pub fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .unwrap_or_else(|| panic!("no {name} parameter in redirect {self:?}"))
    }
}

pub fn parse_redirect(location: &str) -> Redirect {
    let (base, query) = location
        .split_once('?')
        .unwrap_or_else(|| panic!("redirect without query: {location}"));
    assert!(
        !location.contains('#'),
        "redirect carries a fragment: {location}"
    );
    let mut params = HashMap::new();
    let mut names = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        names.push(k.to_string());
        params.insert(k.to_string(), v.to_string());
    }
    Redirect {
        base: base.to_owned(),
        params,
        names,
    }
}

/// What a test client is registered with; `ClientSpec::default()` is a confidential web client.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub auth_method: String,
    pub grant_types: Vec<String>,
    pub application_type: String,
    pub allowed_resources: Option<Vec<String>>,
    pub metadata: Value,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            name: unique("client"),
            redirect_uris: vec![format!("https://{}.example/callback", unique("app"))],
            scopes: ["openid", "profile", "email", "offline_access", "mcp"]
                .map(String::from)
                .to_vec(),
            auth_method: "client_secret_basic".into(),
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            application_type: "web".into(),
            allowed_resources: None,
            metadata: json!({}),
        }
    }
}

impl ClientSpec {
    /// A public native client with a loopback redirect URI (what MCP clients are).
    pub fn public_native() -> Self {
        ClientSpec {
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            auth_method: "none".into(),
            application_type: "native".into(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
    pub spec: ClientSpec,
}

impl TestClient {
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }
}

/// The SQL call `oauth.create_client` with every argument of `spec`.
pub async fn try_create_client(
    db: &Client,
    spec: &ClientSpec,
) -> Result<(String, Option<String>), tokio_postgres::Error> {
    let row = db
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &spec.name,
                &spec.redirect_uris,
                &spec.scopes,
                &spec.auth_method,
                &spec.grant_types,
                &spec.application_type,
                &spec.allowed_resources,
                &spec.metadata,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

pub async fn create_client(db: &Client, spec: ClientSpec) -> TestClient {
    let (id, secret) = try_create_client(db, &spec)
        .await
        .unwrap_or_else(|e| panic!("create_client({spec:?}) failed: {e:?}"));
    TestClient {
        id,
        secret,
        redirect_uri: spec.redirect_uris[0].clone(),
        spec,
    }
}

/// A confidential web client allowed every default scope.
pub async fn confidential_client(db: &Client) -> TestClient {
    create_client(db, ClientSpec::default()).await
}

/// The authorize parameters of a valid request by `client` (override or add with `extra`; a
/// `null` in `extra` removes the parameter).
pub fn authorize_params(client: &TestClient, pkce: &Pkce, extra: Value) -> Value {
    let defaults = json!({
        "client_id": client.id,
        "response_type": "code",
        "redirect_uri": client.redirect_uri,
        "scope": "openid mcp",
        "state": unique("state"),
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "nonce": unique("nonce"),
    });
    changed(&defaults, extra)
}

pub async fn begin_authorization(db: &Client, params: &Value) -> Value {
    scalar(db, "SELECT oauth.begin_authorization($1)", &[params]).await
}

/// `oauth.issue_code`: `user_id` consents to `scopes` (`None`: all requested) with `props`; the
/// redirect location.
pub async fn issue_code(
    db: &Client,
    request_id: &str,
    user_id: &str,
    scopes: Option<&[&str]>,
    props: &Value,
) -> String {
    let scopes: Option<Vec<&str>> = scopes.map(<[&str]>::to_vec);
    let sql = "SELECT oauth.issue_code($1, $2, $3, $4)";
    scalar(db, sql, &[&request_id, &user_id, &scopes, props]).await
}

/// A new user's consent to everything the request `begun` asks for: the redirect location.
pub async fn consent_to(db: &Client, begun: &Value) -> String {
    let request_id = str_field(begun, "request_id");
    issue_code(db, request_id, &unique("user"), None, &json!({})).await
}

/// The result of running an authorization request through consent ([`Authorize::run`]).
#[derive(Clone, Debug)]
pub struct Authorized {
    pub code: String,
    pub pkce: Pkce,
    pub redirect_uri: String,
    pub location: String,
    pub client_id: String,
    pub client_secret: Option<String>,
}

/// A valid authorization request by `client`, consented by `user_id`.
pub async fn authorize(db: &Client, client: &TestClient, user_id: &str) -> Authorized {
    Authorize::new(client).run(db, user_id).await
}

/// Redeems `auth` the way a well-behaved `client` does.
pub async fn exchange(db: &Client, client: &TestClient, auth: &Authorized) -> Value {
    auth.exchange().by(client).run(db).await
}

/// Authorizes `user_id` and redeems the code; panics unless it succeeds.
pub async fn tokens_for(db: &Client, client: &TestClient, user_id: &str) -> Value {
    let auth = authorize(db, client, user_id).await;
    let answer = exchange(db, client, &auth).await;
    assert_ok(&answer, "exchange_code");
    answer
}

/// `client` rotating `refresh_token` with no other argument.
pub async fn rotate(db: &Client, client: &TestClient, refresh_token: &str) -> Value {
    Rotate::of(client, refresh_token).run(db).await
}

/// `oauth.rotate_refresh_token` a minute and a second from now: past any reuse grace window
/// (at most a minute), so a rotated token presented here is reuse.
pub async fn rotate_after_grace(db: &Client, client: &TestClient, refresh_token: &str) -> Value {
    let later: String = scalar(db, "SELECT (now() + interval '61 seconds')::text", &[]).await;
    Rotate::of(client, refresh_token).at(&later).run(db).await
}

/// `oauth.introspect` of a refresh token.
pub async fn introspect_refresh(db: &Client, client: &TestClient, refresh_token: &str) -> Value {
    db.query_one(
        "SELECT oauth.introspect($1, $2, $3, NULL, NULL)",
        &[&client.id, &client.secret, &refresh_token],
    )
    .await
    .unwrap()
    .get(0)
}

/// `oauth.introspect` of the grant/family claims of an access token.
pub async fn introspect_claims(
    db: &Client,
    client: &TestClient,
    grant_id: uuid::Uuid,
    family_id: Option<uuid::Uuid>,
) -> Value {
    db.query_one(
        "SELECT oauth.introspect($1, $2, NULL, $3, $4)",
        &[&client.id, &client.secret, &grant_id, &family_id],
    )
    .await
    .unwrap()
    .get(0)
}

pub fn is_active(answer: &Value) -> bool {
    match answer.get("active") {
        Some(Value::Bool(b)) => *b,
        _ => panic!("introspection answer without active: {answer}"),
    }
}

/// State of a refresh family, read directly by the administrator.
#[derive(Debug)]
pub struct FamilyRow {
    pub current_hash: Option<Vec<u8>>,
    pub previous_hash: Option<Vec<u8>>,
    pub generation: i32,
    pub revoked: bool,
    pub revoked_reason: Option<String>,
    pub token_count: i64,
}

pub async fn family_row(admin: &Client, family_id: uuid::Uuid) -> FamilyRow {
    let row = admin
        .query_one(
            "SELECT current_hash, previous_hash, generation, revoked_at IS NOT NULL, revoked_reason,
                    (SELECT count(*) FROM oauth.refresh_tokens t WHERE t.family_id = f.family_id)
               FROM oauth.refresh_families f WHERE family_id = $1",
            &[&family_id],
        )
        .await
        .unwrap_or_else(|e| panic!("no family {family_id}: {e:?}"));
    FamilyRow {
        current_hash: row.get(0),
        previous_hash: row.get(1),
        generation: row.get(2),
        revoked: row.get(3),
        revoked_reason: row.get(4),
        token_count: row.get(5),
    }
}

/// Whether the grant is live (not revoked), read directly by the administrator.
pub async fn grant_live(admin: &Client, grant_id: uuid::Uuid) -> bool {
    admin
        .query_one(
            "SELECT revoked_at IS NULL FROM oauth.grants WHERE grant_id = $1",
            &[&grant_id],
        )
        .await
        .unwrap_or_else(|e| panic!("no grant {grant_id}: {e:?}"))
        .get(0)
}

/// A throw-away database with the extension installed, for tests that change global state.
/// Dropped (WITH FORCE) when the value goes out of scope, also when the test panics.
pub struct TempDb {
    pub name: String,
    pub config: Config,
}

impl TempDb {
    /// Creates `oauth_test_<random>`, with `CREATE EXTENSION oauth_provider` when `with_extension`.
    pub async fn create_with(with_extension: bool) -> TempDb {
        let name = unique("oauth_test");
        let admin = admin().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
        let db = TempDb {
            config: with_dbname(&admin_config(), &name),
            name,
        };
        if with_extension {
            db.admin()
                .await
                .batch_execute("CREATE EXTENSION oauth_provider")
                .await
                .unwrap_or_else(|e| panic!("CREATE EXTENSION in {}: {e:?}", db.name));
        }
        db
    }

    pub async fn create() -> TempDb {
        Self::create_with(true).await
    }

    pub async fn admin(&self) -> Client {
        connect(&self.config).await
    }

    pub fn gateway_config(&self) -> Config {
        with_dbname(&gateway_config(), &self.name)
    }

    pub async fn gateway(&self) -> Client {
        connect(&self.gateway_config()).await
    }

    pub fn conninfo(&self) -> String {
        conninfo(&self.config)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let maintenance = conninfo(&with_dbname(&self.config, "postgres"));
        let status = Command::new(pg_bin("dropdb"))
            .args([
                "--if-exists",
                "--force",
                "--maintenance-db",
                &maintenance,
                &self.name,
            ])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: could not drop throw-away database {}: {status:?}",
                self.name
            );
        }
    }
}

/// Runs a PostgreSQL client program and panics with its output when it fails.
pub fn run_pg_program(program: &str, args: &[&str]) -> String {
    let output = Command::new(pg_bin(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A copy of `source` made with `pg_dump --format=<format>` and restored (psql for plain, else
/// pg_restore) into a new throw-away database.
pub async fn dump_and_restore(source: &TempDb, format: &str) -> TempDb {
    let target = TempDb::create_with(false).await;
    let dir = std::env::temp_dir().join(unique("oauth_dump"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("dump");
    let file = file.to_str().unwrap();
    run_pg_program(
        "pg_dump",
        &[
            "--no-owner",
            &format!("--format={format}"),
            "--file",
            file,
            "--dbname",
            &source.conninfo(),
        ],
    );
    if format == "plain" {
        run_pg_program(
            "psql",
            &[
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-f",
                file,
                "--dbname",
                &target.conninfo(),
            ],
        );
    } else {
        run_pg_program(
            "pg_restore",
            &[
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",
                "--dbname",
                &target.conninfo(),
                file,
            ],
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    target
}
