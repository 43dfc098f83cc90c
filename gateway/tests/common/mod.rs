//! End-to-end harness: a fresh database with the extension, an in-process gateway on a free
//! port, and an HTTP client that never follows redirects (the tests read every hop).
//!
//! Requests are written as structs with defaults ([`Authorization`], [`TokenRequest`],
//! [`NewClient`]): a test names only the fields it changes, and an empty field is left out of the
//! request.

#![allow(dead_code)]

pub mod demo_mcp;
pub mod document_server;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use oauth_gateway::config::{KeyConfig, RouteConfig};
use oauth_gateway::keys::{Alg, KeySet, SigningKey, generate_pem};
use oauth_gateway::{Config, Expectations, ServerHandle, verify_access_token};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;
use tokio_postgres::types::{FromSqlOwned, ToSql};

/// The redirect URI clients are registered with (loopback: any port matches, RFC 8252 §7.3).
pub const REDIRECT: &str = "http://127.0.0.1/callback";
/// The redirect URI a native client sends: the registered one on the port it listens on.
pub const CALLBACK: &str = "http://127.0.0.1:51234/callback";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";
pub const FORM: &str = "application/x-www-form-urlencoded";
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set (scripts/test sets it)"))
}

pub fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback port nothing listens on, for a server that binds it a moment later (its URL must
/// be known first, e.g. inside the issuer). Port 0 would come from the kernel's ephemeral range,
/// where any outbound connection made in between (the pool, a fetch) can take it, so the port is
/// drawn below that range and never handed out twice in one process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| {
            let mut bounds = range.split_whitespace().map(|b| b.parse::<u16>().ok());
            Some((bounds.next()??, bounds.next()??))
        })
        .unwrap_or((32768, 60999));
    // The widest stretch outside [low, high] that needs no privileges.
    let (from, to) = if low.saturating_sub(1024) >= 65535 - high {
        (1024u16, low - 1)
    } else {
        (high + 1, 65535)
    };
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let port = from + (rand::random::<u16>() % (to - from + 1));
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

/// Segment `index` of a JWT (0 the header, 1 the payload), decoded without any verification.
pub fn jwt_segment(jwt: &str, index: usize) -> Value {
    let segment = jwt.split('.').nth(index).expect("JWT segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("JSON")
}

/// The value of the hidden form field `name` in an HTML page.
pub fn form_field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in the page"))
        + marker.len();
    page[start..].split('"').next().unwrap().to_owned()
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `pairs` form-encoded, the ones with an empty value left out.
fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

pub struct Response {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn location(&self) -> String {
        self.header("location")
            .unwrap_or_else(|| panic!("no Location; status {} body {}", self.status, self.text()))
            .to_owned()
    }
    /// The JSON body of a 200, failing with the body otherwise.
    pub fn ok_json(&self) -> Value {
        self.json_if(StatusCode::OK)
    }
    /// The JSON body, once the status is `status` (failing with the body otherwise).
    pub fn json_if(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        self.json()
    }
    /// The OAuth error of a JSON error response, after checking its RFC 6749 §5.2 shape.
    pub fn oauth_error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text()
        );
        assert_eq!(self.header("cache-control"), Some("no-store"));
        let body = self.json();
        assert!(body["error_description"].is_string());
        body["error"].as_str().expect("error").to_owned()
    }
    /// An OAuth error response with `status` and `error`; a 401 also challenges the client to
    /// authenticate with HTTP Basic (RFC 6749 §5.2). `what` names the case in a failure.
    pub fn assert_error(&self, status: StatusCode, error: &str, what: &str) {
        assert_eq!(
            (self.status, self.oauth_error()),
            (status, error.to_owned()),
            "{what}"
        );
        if status == StatusCode::UNAUTHORIZED {
            let challenge = self.header("www-authenticate").unwrap_or("");
            assert!(challenge.starts_with("Basic"), "{what}: {challenge}");
        }
    }
    /// A 503 `temporarily_unavailable` that tells the client when to come back.
    pub fn assert_temporarily_unavailable(&self) {
        assert_eq!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            self.text()
        );
        assert_eq!(self.oauth_error(), "temporarily_unavailable");
        assert_eq!(self.header("retry-after"), Some("1"));
    }
}

pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Response {
        let resp = self.client.request(req).await.expect("HTTP request");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Response {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The status of a GET, or None when nothing listens there (yet).
    pub async fn client_get_ok(&self, url: &str) -> Option<StatusCode> {
        let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        self.client.request(req).await.ok().map(|r| r.status())
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Response {
        let mut b = Request::get(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::new())).unwrap()).await
    }

    /// POSTs `pairs` as a form, leaving out the ones with an empty value.
    pub async fn post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let mut b = Request::post(url).header("content-type", FORM);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::from(encode(pairs)))).unwrap())
            .await
    }

    pub async fn post_raw(
        &self,
        url: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Response {
        let b = Request::post(url).header("content-type", content_type);
        self.send(b.body(Full::new(body.into())).unwrap()).await
    }

    /// A request carrying `Authorization: Bearer token` and, if any, a JSON body.
    pub async fn with_bearer(
        &self,
        method: &str,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut b = Request::builder()
            .method(method)
            .uri(url)
            .header("authorization", bearer(token));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(b.body(Full::new(body)).unwrap()).await
    }

    /// `request` POSTed to the token endpoint at `url`.
    pub async fn token_at(&self, url: &str, request: &TokenRequest<'_>) -> Response {
        let authorization = [("authorization", request.authorization)];
        let headers: &[(&str, &str)] = if request.authorization.is_empty() {
            &[]
        } else {
            &authorization
        };
        self.post_form(url, &request.pairs(), headers).await
    }
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

/// A GET /authorize as a native client sends it: code, PKCE S256 with a fresh verifier, the
/// loopback callback, state `xyz-state` and the resource [`RESOURCE`].
pub struct Authorization<'a> {
    pub client_id: &'a str,
    pub response_type: &'a str,
    pub redirect_uri: &'a str,
    /// Its challenge is sent (an empty one is left out), its verifier redeems the code.
    pub pkce: Pkce,
    pub code_challenge_method: &'a str,
    pub state: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
    pub nonce: &'a str,
}

impl<'a> Authorization<'a> {
    pub fn new(client_id: &'a str) -> Self {
        Self {
            client_id,
            response_type: "code",
            redirect_uri: CALLBACK,
            pkce: pkce(),
            code_challenge_method: "S256",
            state: "xyz-state",
            resource: RESOURCE,
            scope: "",
            nonce: "",
        }
    }

    pub fn query(&self) -> String {
        encode(&[
            ("response_type", self.response_type),
            ("client_id", self.client_id),
            ("redirect_uri", self.redirect_uri),
            ("code_challenge", &self.pkce.challenge),
            ("code_challenge_method", self.code_challenge_method),
            ("state", self.state),
            ("resource", self.resource),
            ("scope", self.scope),
            ("nonce", self.nonce),
        ])
    }
}

/// A POST to the token endpoint. Empty fields are left out; `authorization` is the
/// Authorization header (see [`basic`]); `repeated` pairs are sent after the named ones.
#[derive(Clone, Default)]
pub struct TokenRequest<'a> {
    pub grant_type: &'a str,
    pub code: &'a str,
    pub code_verifier: &'a str,
    pub redirect_uri: &'a str,
    pub device_code: &'a str,
    pub refresh_token: &'a str,
    pub subject_token: &'a str,
    pub subject_token_type: &'a str,
    pub actor_token: &'a str,
    pub audience: &'a str,
    pub resource: &'a str,
    pub scope: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub authorization: &'a str,
    pub repeated: &'a [(&'a str, &'a str)],
}

impl<'a> TokenRequest<'a> {
    /// Redeems `code`, issued for `authorization`, as the public client that asked for it.
    pub fn redeem(authorization: &'a Authorization<'_>, code: &'a str) -> Self {
        Self {
            grant_type: "authorization_code",
            code,
            code_verifier: &authorization.pkce.verifier,
            redirect_uri: CALLBACK,
            client_id: authorization.client_id,
            ..Self::default()
        }
    }

    /// Rotates `refresh_token` as the public client `client_id`.
    pub fn refresh(client_id: &'a str, refresh_token: &'a str) -> Self {
        Self {
            grant_type: "refresh_token",
            refresh_token,
            client_id,
            ..Self::default()
        }
    }

    pub fn pairs(&self) -> Vec<(&'a str, &'a str)> {
        let mut pairs = vec![
            ("grant_type", self.grant_type),
            ("code", self.code),
            ("code_verifier", self.code_verifier),
            ("redirect_uri", self.redirect_uri),
            ("device_code", self.device_code),
            ("refresh_token", self.refresh_token),
            ("subject_token", self.subject_token),
            ("subject_token_type", self.subject_token_type),
            ("actor_token", self.actor_token),
            ("audience", self.audience),
            ("resource", self.resource),
            ("scope", self.scope),
            ("client_id", self.client_id),
            ("client_secret", self.client_secret),
        ];
        pairs.extend_from_slice(self.repeated);
        pairs
    }

    /// The form body, for requests sent from elsewhere.
    pub fn body(&self) -> String {
        encode(&self.pairs())
    }
}

/// A client the administrator creates (`oauth.create_client`): by default a native public
/// client of the code flow with the scope `mcp`.
pub struct NewClient<'a> {
    pub name: &'a str,
    pub redirect_uris: &'a [&'a str],
    pub scopes: &'a [&'a str],
    pub auth_method: &'a str,
    pub grant_types: &'a [&'a str],
    pub application_type: &'a str,
}

impl Default for NewClient<'_> {
    fn default() -> Self {
        Self {
            name: "Test client",
            redirect_uris: &[REDIRECT],
            scopes: &["mcp"],
            auth_method: "none",
            grant_types: &["authorization_code", "refresh_token"],
            application_type: "native",
        }
    }
}

impl<'a> NewClient<'a> {
    /// A client without a browser (no redirect URIs) of `grant_types`, allowed the scopes the
    /// tests ask for.
    pub fn machine(auth_method: &'a str, grant_types: &'a [&'a str]) -> Self {
        Self {
            name: "Machine",
            redirect_uris: &[],
            scopes: &["mcp", "profile", "openid", "offline_access"],
            auth_method,
            grant_types,
            ..Self::default()
        }
    }
}

/// A client's id and, for a confidential one, its secret.
pub struct Credentials {
    pub id: String,
    pub secret: Option<String>,
}

impl Credentials {
    pub fn secret(&self) -> &str {
        self.secret.as_deref().expect("a confidential client")
    }
    /// Its HTTP Basic Authorization header.
    pub fn basic(&self) -> String {
        basic(&self.id, self.secret())
    }
}

/// A new private key of `alg`, except RS256: generating a 2048-bit RSA key takes a noticeable
/// share of a second, so one is made per test process and shared by its gateways (ES256, which
/// signs the access tokens, stays fresh for each).
pub fn test_key_pem(alg: Alg) -> String {
    static RSA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match alg {
        Alg::RS256 => RSA
            .get_or_init(|| generate_pem(Alg::RS256).unwrap())
            .clone(),
        _ => generate_pem(alg).unwrap(),
    }
}

pub struct Options {
    pub issuer_path: &'static str,
    pub algs: Vec<Alg>,
    pub login_url: Option<String>,
    pub database_url_override: Option<String>,
    pub routes: Vec<RouteConfig>,
    pub pool_size: usize,
    pub pool_wait: Duration,
    pub cimd: oauth_gateway::config::CimdConfig,
    /// The test database's name (default: a random `gw_…`), for URLs made before the start.
    pub db_name: Option<String>,
    /// Changes made to the gateway's configuration last.
    pub adjust: Option<Adjust>,
}

/// A change to a test gateway's configuration.
pub type Adjust = Box<dyn FnOnce(&mut Config) + Send>;

impl Default for Options {
    fn default() -> Self {
        Self {
            issuer_path: "",
            // ES256 signs access tokens; RS256 is what OpenID Connect requires for ID tokens.
            algs: vec![Alg::ES256, Alg::RS256],
            login_url: None,
            database_url_override: None,
            routes: Vec::new(),
            pool_size: 8,
            pool_wait: Duration::from_millis(1500),
            cimd: Default::default(),
            db_name: None,
            adjust: None,
        }
    }
}

impl Options {
    /// A gateway guarding `/mcp`, proxied to `upstream`, with tokens carrying `scopes`.
    pub fn guarding(upstream: String, scopes: &[&str]) -> Self {
        Self {
            routes: vec![RouteConfig {
                prefix: "/mcp".into(),
                upstream,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                ..RouteConfig::default()
            }],
            ..Self::default()
        }
    }
}

/// An upstream URL where nothing listens.
pub fn unreachable_upstream() -> String {
    format!("http://127.0.0.1:{}/mcp", free_port())
}

pub struct Gateway {
    pub base: String,
    pub issuer: String,
    pub db_name: String,
    pub admin: tokio_postgres::Client,
    pub http: Http,
    pub config: Config,
    keys: KeySet,
    handle: Option<ServerHandle>,
    key_dir: std::path::PathBuf,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A gateway shared by concurrent tasks; [`Gateway::stop_shared`] ends it.
    pub async fn start_shared() -> Arc<Self> {
        Arc::new(Self::start().await)
    }

    pub async fn start_with(options: Options) -> Self {
        let admin_url = env("OAUTH_TEST_DATABASE_URL");
        let gateway_url = env("OAUTH_TEST_GATEWAY_DATABASE_URL");
        let db_name = options
            .db_name
            .unwrap_or_else(|| format!("gw_{}", random_suffix()));
        connect(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .expect("create database");
        let admin = connect(&format!("{admin_url} dbname={db_name}")).await;
        admin
            .batch_execute("CREATE EXTENSION oauth_provider")
            .await
            .expect("create extension");

        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base}{}", options.issuer_path);
        admin
            .execute("SELECT oauth.configure(issuer => $1)", &[&issuer])
            .await
            .expect("configure");

        let key_dir = std::env::temp_dir().join(format!("oauth-gw-keys-{}", random_suffix()));
        std::fs::create_dir_all(&key_dir).unwrap();
        let key_configs: Vec<KeyConfig> = options
            .algs
            .iter()
            .enumerate()
            .map(|(i, alg)| {
                let path = key_dir.join(format!("key{i}.pem"));
                std::fs::write(&path, test_key_pem(*alg)).unwrap();
                KeyConfig {
                    path,
                    alg: *alg,
                    kid: None,
                }
            })
            .collect();
        // The same files the gateway loads: the test verifies what the gateway signs.
        let keys = KeySet::all_signing(
            key_configs
                .iter()
                .map(|k| SigningKey::from_file(&k.path, k.alg, None).unwrap())
                .collect(),
        );
        let mut config = Config {
            issuer: issuer.clone(),
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            database_url: options
                .database_url_override
                .unwrap_or(format!("{gateway_url} dbname={db_name}")),
            pool_size: options.pool_size,
            pool_wait: options.pool_wait,
            keys: key_configs,
            login_url: options.login_url,
            routes: options.routes,
            cimd: options.cimd,
            dev_mode: true,
            dev_user: Some("alice".into()),
            // Tests send thousands of requests from one address; operations.rs tests the limits.
            rate_limits: oauth_gateway::config::RateLimits::off(),
            ..Config::default()
        };
        if let Some(adjust) = options.adjust {
            adjust(&mut config);
        }
        let app = oauth_gateway::build(config.clone())
            .await
            .expect("build gateway");
        let handle = oauth_gateway::serve(app).await.expect("serve");
        Self {
            base,
            issuer,
            db_name,
            admin,
            http: Http::new(),
            config,
            keys,
            handle: Some(handle),
            key_dir,
        }
    }

    /// Another gateway on the same database, issuer and keys (as behind a load balancer).
    pub async fn second(&self) -> (ServerHandle, String) {
        let port = free_port();
        let mut config = self.config.clone();
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        let app = oauth_gateway::build(config)
            .await
            .expect("build second gateway");
        let handle = oauth_gateway::serve(app)
            .await
            .expect("serve second gateway");
        (handle, format!("http://127.0.0.1:{port}"))
    }

    /// The `oauth-gateway` binary serving this gateway's database, issuer and key in a child
    /// process (for signals), once it answers; returns the child and its base URL.
    pub async fn spawn_process(&self) -> (std::process::Child, String) {
        let port = free_port();
        let key = &self.config.keys[0];
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_oauth-gateway"))
            .args([
                "serve",
                "--issuer",
                &self.issuer,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--database-url", &self.config.database_url])
            .arg("--no-rate-limits")
            .args(["--key", &format!("ES256:{}", key.path.display())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start oauth-gateway");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while self
            .http
            .client_get_ok(&format!("{base}/healthz"))
            .await
            .is_none()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "oauth-gateway process did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (child, base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// Where a gateway started with [`Options::guarding`] guards its upstream.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// The claims of an access token this gateway signed, checked for `audience` when given.
    pub fn verify(&self, token: &str, audience: Option<&str>) -> Result<Value, String> {
        let expect = Expectations {
            issuer: &self.issuer,
            audience,
            algorithms: &[
                jsonwebtoken::Algorithm::ES256,
                jsonwebtoken::Algorithm::RS256,
                jsonwebtoken::Algorithm::EdDSA,
            ],
            validate_exp: true,
        };
        verify_access_token(token, &self.keys, &expect).map_err(|e| format!("{e:?}"))
    }

    /// The claims of an access token this gateway signed, for any audience.
    pub fn claims(&self, token: &str) -> Value {
        self.verify(token, None).expect("a valid access token")
    }

    /// A new administrator connection to this gateway's database.
    pub async fn admin_connection(&self) -> tokio_postgres::Client {
        connect(&format!(
            "{} dbname={}",
            env("OAUTH_TEST_DATABASE_URL"),
            self.db_name
        ))
        .await
    }

    /// The first column of the one row `sql` returns.
    pub async fn sql_value<T: FromSqlOwned>(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
        self.admin
            .query_one(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// How many rows of `oauth.<table>` belong to `client_id`.
    pub async fn rows_of_client(&self, table: &str, client_id: &str) -> i64 {
        self.sql_value(
            &format!("SELECT count(*) FROM oauth.{table} WHERE client_id = $1"),
            &[&client_id],
        )
        .await
    }

    /// What an application does when the user disconnects an app: `oauth.revoke_grant`.
    pub async fn revoke_grant(&self, grant_id: &str) {
        self.admin
            .execute("SELECT oauth.revoke_grant($1::text::uuid)", &[&grant_id])
            .await
            .expect("revoke_grant");
    }

    pub async fn create_client(&self, client: &NewClient<'_>) -> Credentials {
        let row = self
            .admin
            .query_one(
                "SELECT client_id, client_secret FROM oauth.create_client($1, $2, $3, $4, $5, $6)",
                &[
                    &client.name,
                    &client.redirect_uris,
                    &client.scopes,
                    &client.auth_method,
                    &client.grant_types,
                    &client.application_type,
                ],
            )
            .await
            .expect("create_client");
        Credentials {
            id: row.get(0),
            secret: row.get(1),
        }
    }

    /// A public native client of the code flow allowed `scopes`: its id.
    pub async fn public_client(&self, scopes: &[&str]) -> String {
        self.create_client(&NewClient {
            scopes,
            ..NewClient::default()
        })
        .await
        .id
    }

    /// A confidential (client_secret_basic) native client of the code flow allowed `scopes`.
    pub async fn confidential_client(&self, scopes: &[&str]) -> Credentials {
        self.create_client(&NewClient {
            scopes,
            auth_method: "client_secret_basic",
            ..NewClient::default()
        })
        .await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(&self.url(path), &[]).await
    }

    /// GET `path` from the root of the host (where the well-known documents live).
    pub async fn get_at_root(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.http
            .get(&format!("{}{path}", self.base), headers)
            .await
    }

    /// POSTs `pairs` as a form to `path` of the issuer.
    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> Response {
        self.http.post_form(&self.url(path), pairs, &[]).await
    }

    /// POSTs `pairs` as a form to `path` with the Authorization header `authorization`.
    pub async fn post_authenticated(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        authorization: &str,
    ) -> Response {
        self.http
            .post_form(&self.url(path), pairs, &[("authorization", authorization)])
            .await
    }

    /// RFC 7591 dynamic registration of the client `metadata`.
    pub async fn register(&self, metadata: Value) -> Response {
        self.http
            .post_raw(
                &self.url("/register"),
                "application/json",
                metadata.to_string(),
            )
            .await
    }

    pub async fn authorize(&self, authorization: &Authorization<'_>) -> Response {
        self.http
            .get(
                &format!("{}?{}", self.url("/authorize"), authorization.query()),
                &[],
            )
            .await
    }

    /// Runs authorize and opens the built-in consent page: its `(request_id, csrf_token)`.
    pub async fn consent_form(&self, authorization: &Authorization<'_>) -> (String, String) {
        let resp = self.authorize(authorization).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
        let consent = self.http.get(&resp.location(), &[]).await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.text());
        let page = consent.text();
        (
            form_field(&page, "request_id"),
            form_field(&page, "csrf_token"),
        )
    }

    /// POSTs the built-in consent page's `decision` ("approve" or "deny").
    pub async fn decide(&self, request_id: &str, csrf: &str, decision: &str) -> Response {
        self.post(
            "/consent",
            &[
                ("request_id", request_id),
                ("csrf_token", csrf),
                ("decision", decision),
            ],
        )
        .await
    }

    pub async fn approve(&self, request_id: &str, csrf: &str) -> Response {
        self.decide(request_id, csrf, "approve").await
    }

    /// Runs authorize → built-in consent (approve) and returns the code from the client redirect.
    pub async fn code(&self, authorization: &Authorization<'_>) -> String {
        let (request_id, csrf) = self.consent_form(authorization).await;
        let decided = self.approve(&request_id, &csrf).await;
        assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
        let back = decided.location();
        assert!(back.starts_with(&format!("{CALLBACK}?")), "{back}");
        let q = query_of(&back);
        assert_eq!(q.get("iss"), Some(&self.issuer));
        q["code"].clone()
    }

    /// The whole code flow of a public client, consent approved: the token response.
    pub async fn code_flow(&self, authorization: &Authorization<'_>) -> Response {
        let code = self.code(authorization).await;
        self.token(&TokenRequest::redeem(authorization, &code))
            .await
    }

    pub async fn token(&self, request: &TokenRequest<'_>) -> Response {
        self.http.token_at(&self.url("/token"), request).await
    }

    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> Response {
        self.token(&TokenRequest::refresh(client_id, refresh_token))
            .await
    }

    /// RFC 7662 introspection by a resource server authenticating with `authorization`.
    pub async fn introspect(&self, token: &str, authorization: &str) -> Value {
        self.post_authenticated("/introspect", &[("token", token)], authorization)
            .await
            .json()
    }

    /// RFC 7009 revocation by a client authenticating with `authorization`.
    pub async fn revoke(&self, token: &str, authorization: &str) -> Response {
        self.post_authenticated("/revoke", &[("token", token)], authorization)
            .await
    }

    /// GETs `url` with `token` until `done(status)`, failing with `what` after `within`.
    async fn poll_until(
        &self,
        url: &str,
        token: &str,
        within: Duration,
        what: &str,
        done: impl Fn(StatusCode) -> bool,
    ) {
        let started = Instant::now();
        loop {
            let status = self
                .http
                .get(url, &[("authorization", &bearer(token))])
                .await
                .status;
            if done(status) {
                return;
            }
            assert!(started.elapsed() < within, "{what} ({status})");
            tokio::time::sleep(within / 50).await;
        }
    }

    /// Waits for the revocation feed's first synchronisation, seen through the guarded `url`
    /// (until then the proxy answers 503 to every token).
    pub async fn wait_synced(&self, url: &str, token: &str) {
        self.poll_until(
            url,
            token,
            Duration::from_secs(5),
            "revocation feed never synchronised",
            |status| status != StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    }

    /// Waits until the guarded `url` refuses `token` with a 401, failing with `what` after `within`.
    pub async fn wait_refused(&self, url: &str, token: &str, within: Duration, what: &str) {
        self.poll_until(url, token, within, what, |status| {
            status == StatusCode::UNAUTHORIZED
        })
        .await;
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown(Duration::from_secs(2)).await;
        }
        let _ = std::fs::remove_dir_all(&self.key_dir);
        let admin_url = env("OAUTH_TEST_DATABASE_URL");
        let _ = connect(&admin_url)
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.db_name))
            .await;
    }

    /// Stops a gateway started with [`Gateway::start_shared`] once its tasks are done.
    pub async fn stop_shared(gateway: Arc<Self>) {
        Arc::try_unwrap(gateway)
            .ok()
            .expect("no task holds the gateway any more")
            .stop()
            .await;
    }
}

/// Runs `call(i)` for `i` in `0..clients`, all released at once; their results in order of `i`.
pub async fn at_once<F, Fut, T>(clients: usize, call: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let barrier = barrier.clone();
            let request = call(i);
            tokio::spawn(async move {
                barrier.wait().await;
                request.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

impl Gateway {
    /// Another gateway on the same database, issuer and keys, its configuration changed by
    /// `change`: its handle and base URL.
    pub async fn second_with(&self, change: impl FnOnce(&mut Config)) -> (ServerHandle, String) {
        let port = free_port();
        let mut config = self.config.clone();
        config.listen = format!("127.0.0.1:{port}").parse().unwrap();
        change(&mut config);
        let app = oauth_gateway::build(config)
            .await
            .expect("build second gateway");
        let handle = oauth_gateway::serve(app)
            .await
            .expect("serve second gateway");
        (handle, format!("http://127.0.0.1:{port}"))
    }

    /// A pending authorization request of a new public client: its request id.
    pub async fn pending_request_id(&self) -> String {
        let client_id = self.public_client(&["mcp"]).await;
        let resp = self.authorize(&Authorization::new(&client_id)).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
        query_of(&resp.location())["request_id"].clone()
    }
}

/// Writes `request` on a new connection to `addr` (from the local address `from` when given) and
/// returns what the server answered before closing, or what arrived within `within`.
pub async fn raw_exchange(
    addr: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    request: &[u8],
    within: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(std::net::SocketAddr::new(ip, 0)).unwrap();
    }
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// One request as an upstream received it: the request target exactly as sent, and its headers.
#[derive(Clone, Debug)]
pub struct Received {
    pub target: String,
    pub headers: hyper::HeaderMap,
}

/// An upstream at `url` (ending in `/mcp`) that answers every request with 200 and records it.
pub struct RecordingUpstream {
    pub url: String,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
}

impl RecordingUpstream {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            log.lock().unwrap().push(Received {
                                target: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self { url, received }
    }

    /// Everything received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

/// A TCP relay to the test cluster whose connections can be frozen: bytes stop flowing both ways
/// while both sockets stay open, as when a network path, a failover or a pooler silently drops a
/// session. Only connections whose startup message names `application_name` are frozen.
pub struct FreezingRelay {
    /// A libpq connection string for the gateway's role through the relay.
    pub database_url: String,
    /// How many times [`FreezingRelay::freeze`] was called: a connection freezes when this
    /// grows past what it was when the connection opened.
    freezes: Arc<std::sync::atomic::AtomicUsize>,
}

impl FreezingRelay {
    pub async fn start(db_name: &str, application_name: &'static str) -> Self {
        let target: tokio_postgres::Config =
            env("OAUTH_TEST_GATEWAY_DATABASE_URL").parse().unwrap();
        let host = match &target.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("a TCP host for the test cluster, not {other:?}"),
        };
        let upstream = format!(
            "{host}:{}",
            target.get_ports().first().copied().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let freezes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let switch = freezes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let switch = switch.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    relay(client, server, switch, application_name).await;
                });
            }
        });
        let user = target.get_user().unwrap_or("postgres");
        Self {
            database_url: format!("host=127.0.0.1 port={port} user={user} dbname={db_name}"),
            freezes,
        }
    }

    /// Freezes the matching connections open now (later ones flow).
    pub fn freeze(&self) {
        self.freezes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    switch: Arc<std::sync::atomic::AtomicUsize>,
    application_name: &'static str,
) {
    let opened_after = switch.load(std::sync::atomic::Ordering::SeqCst);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut first = vec![0u8; 8192];
    let Ok(n) = client_read.read(&mut first).await else {
        return;
    };
    let named = first[..n]
        .windows(application_name.len())
        .any(|w| w == application_name.as_bytes());
    if server_write.write_all(&first[..n]).await.is_err() {
        return;
    }
    // A frozen connection's sockets are kept (not dropped) so neither side sees it close.
    let flowing =
        move || !(named && switch.load(std::sync::atomic::Ordering::SeqCst) > opened_after);
    let flowing_back = flowing.clone();
    let up = async move {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !flowing() {
                std::future::pending::<()>().await;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !flowing_back() {
                std::future::pending::<()>().await;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(up, down);
}
