//! End-to-end harness: a fresh database with the extension, an in-process gateway on a free
//! port, and an HTTP client that never follows redirects (the tests read every hop).

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use oauth_gateway::config::KeyConfig;
use oauth_gateway::keys::{Alg, KeySet, generate_pem};
use oauth_gateway::{Config, ServerHandle};
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

pub const REDIRECT: &str = "http://127.0.0.1/callback";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set (scripts/test sets it)"))
}

pub fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
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

    pub async fn post_form(
        &self,
        url: &str,
        pairs: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let mut b = Request::post(url).header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::from(body))).unwrap())
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
}

pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
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

pub fn query_of(url: &str) -> HashMap<String, String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

pub struct Options {
    pub issuer_path: &'static str,
    pub algs: Vec<Alg>,
    pub login_url: Option<String>,
    pub database_url_override: Option<String>,
    pub routes: Vec<oauth_gateway::config::RouteConfig>,
    pub pool_size: usize,
    pub pool_wait: std::time::Duration,
    pub cimd: oauth_gateway::config::CimdConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            issuer_path: "",
            algs: vec![Alg::ES256],
            login_url: None,
            database_url_override: None,
            routes: Vec::new(),
            pool_size: 8,
            pool_wait: std::time::Duration::from_millis(1500),
            cimd: Default::default(),
        }
    }
}

pub struct Gateway {
    pub base: String,
    pub issuer: String,
    pub db_name: String,
    pub admin: tokio_postgres::Client,
    pub http: Http,
    pub handle: Option<ServerHandle>,
    pub app: Arc<oauth_gateway::app::App>,
    key_dir: std::path::PathBuf,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let admin_url = env("OAUTH_TEST_DATABASE_URL");
        let gateway_url = env("OAUTH_TEST_GATEWAY_DATABASE_URL");
        let db_name = format!("gw_{}", random_suffix());
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

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let issuer = format!("{base}{}", options.issuer_path);
        admin
            .execute("SELECT oauth.configure(issuer => $1)", &[&issuer])
            .await
            .expect("configure");

        let key_dir = std::env::temp_dir().join(format!("oauth-gw-keys-{}", random_suffix()));
        std::fs::create_dir_all(&key_dir).unwrap();
        let keys = options
            .algs
            .iter()
            .enumerate()
            .map(|(i, alg)| {
                let path = key_dir.join(format!("key{i}.pem"));
                std::fs::write(&path, generate_pem(*alg).unwrap()).unwrap();
                KeyConfig {
                    path,
                    alg: *alg,
                    kid: None,
                }
            })
            .collect();
        let config = Config {
            issuer: issuer.clone(),
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            database_url: options
                .database_url_override
                .unwrap_or(format!("{gateway_url} dbname={db_name}")),
            pool_size: options.pool_size,
            pool_wait: options.pool_wait,
            keys,
            login_url: options.login_url,
            routes: options.routes,
            cimd: options.cimd,
            dev_mode: true,
            dev_user: Some("alice".into()),
            ..Config::default()
        };
        let app = oauth_gateway::build(config).await.expect("build gateway");
        let handle = oauth_gateway::serve(app.clone()).await.expect("serve");
        Self {
            base,
            issuer,
            db_name,
            admin,
            http: Http::new(),
            handle: Some(handle),
            app,
            key_dir,
        }
    }

    /// Another gateway on the same database, issuer and keys (as behind a load balancer).
    pub async fn second(&self) -> (ServerHandle, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = self.app.config.clone();
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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let key = &self.app.config.keys[0];
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_oauth-gateway"))
            .args([
                "serve",
                "--issuer",
                &self.issuer,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--database-url", &self.app.config.database_url])
            .args(["--key", &format!("ES256:{}", key.path.display())])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start oauth-gateway");
        let base = format!("http://127.0.0.1:{port}");
        let started = std::time::Instant::now();
        while self
            .http
            .client_get_ok(&format!("{base}/healthz"))
            .await
            .is_none()
        {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "oauth-gateway process did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        (child, base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub fn keys(&self) -> &KeySet {
        &self.app.keys
    }

    /// A client created by the administrator; `secret` is None for a public client.
    pub async fn client(&self, public: bool, scopes: &[&str]) -> (String, Option<String>) {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let row = self
            .admin
            .query_one(
                "SELECT client_id, client_secret FROM oauth.create_client('Test client', ARRAY[$1], $2, $3, application_type => 'native')",
                &[&REDIRECT, &scopes, &if public { "none" } else { "client_secret_basic" }],
            )
            .await
            .expect("create_client");
        (row.get(0), row.get(1))
    }

    /// GET /authorize with a valid PKCE request plus `extra` parameters.
    pub async fn authorize(
        &self,
        client_id: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> Response {
        let mut pairs: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", "http://127.0.0.1:51234/callback"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("state", "xyz-state"),
            ("resource", RESOURCE),
        ];
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        self.http
            .get(&format!("{}?{query}", self.url("/authorize")), &[])
            .await
    }

    /// Runs authorize and opens the built-in consent page: its `(request_id, csrf_token)`.
    pub async fn consent_form(
        &self,
        client_id: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> (String, String) {
        let resp = self.authorize(client_id, pkce, extra).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
        let consent = self.http.get(&resp.location(), &[]).await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.text());
        let page = consent.text();
        let field = |name: &str| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page
                .find(&marker)
                .unwrap_or_else(|| panic!("{name} in consent page"))
                + marker.len();
            page[start..].split('"').next().unwrap().to_owned()
        };
        (field("request_id"), field("csrf_token"))
    }

    /// POSTs the built-in consent page's approval.
    pub async fn approve(&self, request_id: &str, csrf: &str) -> Response {
        self.http
            .post_form(
                &self.url("/consent"),
                &[
                    ("request_id", request_id),
                    ("csrf_token", csrf),
                    ("decision", "approve"),
                ],
                &[],
            )
            .await
    }

    /// Runs authorize → built-in consent (approve) and returns the code from the client redirect.
    pub async fn code(&self, client_id: &str, pkce: &Pkce, extra: &[(&str, &str)]) -> String {
        let (request_id, csrf) = self.consent_form(client_id, pkce, extra).await;
        let decided = self.approve(&request_id, &csrf).await;
        assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
        let back = decided.location();
        assert!(
            back.starts_with("http://127.0.0.1:51234/callback?"),
            "{back}"
        );
        let q = query_of(&back);
        assert_eq!(q.get("iss"), Some(&self.issuer));
        q["code"].clone()
    }

    pub async fn token(&self, pairs: &[(&str, &str)], headers: &[(&str, &str)]) -> Response {
        self.http
            .post_form(&self.url("/token"), pairs, headers)
            .await
    }

    pub async fn exchange(
        &self,
        client_id: &str,
        secret: Option<&str>,
        code: &str,
        pkce: &Pkce,
    ) -> Response {
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", pkce.verifier.as_str()),
            ("redirect_uri", "http://127.0.0.1:51234/callback"),
            ("client_id", client_id),
        ];
        if let Some(secret) = secret {
            pairs.push(("client_secret", secret));
        }
        self.token(&pairs, &[]).await
    }

    pub async fn refresh(&self, client_id: &str, refresh_token: &str) -> Response {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
            &[],
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown(std::time::Duration::from_secs(2)).await;
        }
        let _ = std::fs::remove_dir_all(&self.key_dir);
        let admin_url = env("OAUTH_TEST_DATABASE_URL");
        drop(self.app);
        let _ = connect(&admin_url)
            .await
            .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", self.db_name))
            .await;
    }
}
