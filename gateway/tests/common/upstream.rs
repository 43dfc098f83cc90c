//! The upstream identity provider of the sign-in tests, oidc-provider (a certified OpenID
//! provider, tests/upstream/oidc_provider.mjs, from tests/clients/node_modules after `npm ci`),
//! and a browser made of a cookie jar and form posts to walk through it.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;
use oauth_gateway::upstream::UpstreamConfig;

use super::*;

pub const CLIENT_ID: &str = "oauth-gateway";
pub const CLIENT_SECRET: &str = "upstream-client-secret";

/// The upstream provider, ended with the test.
pub struct Upstream {
    child: Child,
    pub issuer: String,
    port: u16,
    env: Vec<(String, String)>,
    /// The gateway callback it was configured with, for a restart.
    redirect_uri: std::sync::Mutex<Option<String>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upstream {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// With the provider's options (`REFRESH_TOKENS`, `ACCESS_TOKEN_TTL`: tests/upstream/oidc_provider.mjs).
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = free_port();
        let child = Self::spawn(port, &env, None);
        // Owned at once, so that a failed start still ends the process (Drop).
        let upstream = Self {
            child,
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            env,
            redirect_uri: Default::default(),
        };
        upstream.wait_ready().await;
        upstream
    }

    /// A new process on the same port: same issuer and client, none of the tokens it issued.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let redirect_uri = self.redirect_uri.lock().unwrap().clone();
        self.child = Self::spawn(self.port, &self.env, redirect_uri.as_deref());
        self.wait_ready().await;
    }

    /// Ends the process (as a provider out of reach).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn spawn(port: u16, env: &[(String, String)], redirect_uri: Option<&str>) -> Child {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        assert!(
            std::path::Path::new(&format!("{root}/tests/clients/node_modules/oidc-provider"))
                .exists(),
            "oidc-provider is missing: run `npm ci` in tests/clients"
        );
        let mut command = Command::new("node");
        command
            .arg(format!("{root}/tests/upstream/oidc_provider.mjs"))
            .env("PORT", port.to_string())
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(uri) = redirect_uri {
            command.env("REDIRECT_URI", uri);
        }
        command.spawn().expect("node runs")
    }

    async fn wait_ready(&self) {
        let http = Http::new();
        for _ in 0..100 {
            if http
                .client_get_ok(&format!("{}/healthz", self.issuer))
                .await
                == Some(StatusCode::OK)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the upstream provider did not start");
    }

    /// The gateway's callback, once the gateway listens.
    pub async fn configure(&self, gateway: &Gateway) {
        let callback = gateway.url("/login/callback");
        *self.redirect_uri.lock().unwrap() = Some(callback.clone());
        let url = format!("{}/configure?redirect_uri={callback}", self.issuer);
        assert_eq!(Http::new().get(&url, &[]).await.status, StatusCode::OK);
    }

    pub fn openid(&self) -> UpstreamConfig {
        UpstreamConfig {
            issuer: Some(self.issuer.clone()),
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            allow_http: true,
            ..Default::default()
        }
    }
}

/// A gateway signing users in through `config` (no dev_user: only sessions sign anyone in).
pub async fn gateway_with(upstream: &Upstream, config: UpstreamConfig) -> Gateway {
    let gateway = Gateway::start_with(Options {
        adjust: Some(Box::new(move |c| {
            c.dev_user = None;
            c.upstream = Some(config);
        })),
        ..Options::default()
    })
    .await;
    upstream.configure(&gateway).await;
    gateway
}

/// A browser: cookies per host and port (paths ignored), redirects followed by the test.
pub struct Browser {
    pub http: Http,
    jar: HashMap<String, HashMap<String, String>>,
}

pub fn authority(url: &str) -> String {
    let u = url::Url::parse(url).expect("absolute URL");
    format!(
        "{}:{}",
        u.host_str().unwrap(),
        u.port_or_known_default().unwrap()
    )
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: Http::new(),
            jar: HashMap::new(),
        }
    }

    fn cookie_header(&self, url: &str) -> String {
        self.jar
            .get(&authority(url))
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default()
    }

    fn keep(&mut self, url: &str, resp: &Response) {
        let jar = self.jar.entry(authority(url)).or_default();
        for line in resp.headers.get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.to_ascii_lowercase().contains("max-age=0") || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        self.jar.get(&authority(url))?.get(name).cloned()
    }

    pub async fn get(&mut self, url: &str) -> Response {
        let cookies = self.cookie_header(url);
        let resp = self.http.get(url, &[("cookie", &cookies)]).await;
        self.keep(url, &resp);
        resp
    }

    pub async fn post(&mut self, url: &str, pairs: &[(&str, &str)]) -> Response {
        let cookies = self.cookie_header(url);
        let resp = self
            .http
            .post_form(url, pairs, &[("cookie", &cookies)])
            .await;
        self.keep(url, &resp);
        resp
    }

    /// GETs `url` and follows redirects until one leaves for `stop` (returned unfollowed) or a
    /// page answers: (the last URL, its response).
    pub async fn navigate(&mut self, url: &str, stop: &str) -> (String, Response) {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let resp = self.get(&url).await;
            if !resp.status.is_redirection() {
                return (url, resp);
            }
            let next = url::Url::parse(&url)
                .unwrap()
                .join(&resp.location())
                .unwrap()
                .to_string();
            if next.starts_with(stop) {
                return (url, resp);
            }
            url = next;
        }
        panic!("too many redirects");
    }
}

/// The upstream's sign-in: from its authorization URL, the login form posted as `user`, to the
/// redirect back to the gateway's callback (returned, not followed).
pub async fn sign_in_upstream(browser: &mut Browser, authorize_url: &str, user: &str) -> String {
    let (form_url, page) = browser.navigate(authorize_url, "\u{0}").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(form_url.contains("/interaction/"), "{form_url}");
    let posted = browser.post(&form_url, &[("login", user)]).await;
    assert!(posted.status.is_redirection(), "{}", posted.text());
    let resume = url::Url::parse(&form_url)
        .unwrap()
        .join(&posted.location())
        .unwrap()
        .to_string();
    let back = browser.get(&resume).await;
    assert!(back.status.is_redirection(), "{}", back.text());
    back.location()
}

/// /authorize → /consent → the upstream's authorization URL (a browser without a session).
pub async fn start_authorization(
    browser: &mut Browser,
    gateway: &Gateway,
    authorization: &Authorization<'_>,
    upstream: &Upstream,
) -> String {
    let start = format!("{}?{}", gateway.url("/authorize"), authorization.query());
    let (_, resp) = browser.navigate(&start, &upstream.issuer).await;
    assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
    let location = resp.location();
    assert!(location.starts_with(&upstream.issuer), "{location}");
    location
}
