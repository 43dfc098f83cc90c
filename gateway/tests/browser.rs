//! The pages in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by scripts/setup) driven through WebDriver (fantoccini). One browser session walks
//! through consent → code → token → connected apps → revoke (the guard answers 401), the device
//! page and an error page, checking that each page's own style runs under its CSP and that a
//! keyboard alone can approve. Each page is saved as a PNG under build/screenshots/.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const BRAND: &str = "#7a1fa2";

/// chromedriver on a free port and one browser session; the process ends with the test.
struct Browser {
    driver: Child,
    client: Client,
    screenshots: PathBuf,
}

impl Browser {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver (scripts/setup installs them)"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                // As root (CI containers) Chromium needs --no-sandbox.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1000,900", "--lang=en-US"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        let screenshots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/screenshots");
        std::fs::create_dir_all(&screenshots).unwrap();
        Self {
            driver,
            client,
            screenshots,
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        std::fs::write(self.screenshots.join(format!("{name}.png")), png).unwrap();
    }

    /// The text of the first element matching `css`, once the page holding it has settled: right
    /// after a click the old page may still answer, and its element go stale under the read.
    async fn text(&self, css: &str) -> String {
        let started = std::time::Instant::now();
        loop {
            let read = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(text) => return text,
                Err(e) if started.elapsed() > std::time::Duration::from_secs(5) => {
                    panic!("{css}: {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }

    async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect(script)
    }

    /// The page's own stylesheet ran (its CSP hash matched): the primary button wears the brand.
    async fn assert_styled(&self, what: &str) {
        let color = self
            .script(
                "const b = document.querySelector('button.primary') || document.querySelector('.brand');
                 return getComputedStyle(b).borderTopColor;",
            )
            .await;
        assert_eq!(
            color,
            json!("rgb(122, 31, 162)"),
            "{what}: the page's style is applied"
        );
    }

    async fn keys(&self, keys: &[Key]) {
        let mut actions = KeyActions::new("keyboard".into());
        for key in keys {
            actions = actions
                .then(KeyAction::Down {
                    value: (*key).into(),
                })
                .then(KeyAction::Up {
                    value: (*key).into(),
                });
        }
        self.client.perform_actions(actions).await.expect("keys");
    }

    async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.client.current_url().await.unwrap().to_string();
            if url.starts_with(prefix) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "still at {url}, expected {prefix}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The client's redirect URI: a loopback listener that answers a small page and hands over the
/// request's query, as a native MCP client's callback server does.
async fn callback_server() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let target = request.split(' ').nth(1).unwrap_or_default().to_owned();
            if target.starts_with("/callback") {
                let _ = tx.send(format!("http://{addr}{target}"));
            }
            let body = "<!doctype html><title>Signed in</title><p>You can close this window.</p>";
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    (format!("http://{addr}/callback"), rx)
}

fn ping() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_revokes_and_connects_a_device_in_a_real_browser() {
    let gw = Gateway::start_with(Options {
        adjust: Some(Box::new(|config: &mut oauth_gateway::config::Config| {
            config.branding.name = Some("Acme MCP".into());
            config.branding.primary_color = BRAND.into();
            config
                .scope_descriptions
                .insert("mcp".into(), "Use the Acme tools for you".into());
        })),
        ..Options::guarding(unreachable_upstream(), &["mcp"])
    })
    .await;
    let browser = Browser::start().await;
    let (callback, mut codes) = callback_server().await;
    let client_id = gw
        .create_client(&NewClient {
            name: "Notes app",
            redirect_uris: &[&callback],
            ..NewClient::default()
        })
        .await
        .id;
    let resource_server = gw.confidential_client(&["mcp"]).await;
    let mcp = gw.mcp_url();

    // Consent: the client starts an authorization (PKCE); the browser lands on the consent page.
    let authorization = Authorization {
        redirect_uri: &callback,
        resource: &mcp,
        scope: "mcp",
        ..Authorization::new(&client_id)
    };
    browser
        .client
        .goto(&format!(
            "{}?{}",
            gw.url("/authorize"),
            authorization.query()
        ))
        .await
        .unwrap();
    browser.wait_for_url(&gw.url("/consent")).await;
    assert_eq!(
        browser.text("h1").await,
        "Allow Notes app to access your account?"
    );
    assert!(
        browser
            .text("main")
            .await
            .contains("Use the Acme tools for you")
    );
    assert_eq!(
        browser.script("return document.documentElement.lang").await,
        json!("en")
    );
    browser.assert_styled("consent").await;
    browser.screenshot("consent").await;
    browser.client.set_window_size(412, 915).await.unwrap();
    browser.screenshot("consent-phone").await;
    let overflow = browser
        .script("return document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(overflow, json!(true), "no sideways scrolling on a phone");
    browser.client.set_window_size(1000, 900).await.unwrap();

    // The keyboard alone: the first Tab reaches Allow (a real button), Enter submits.
    browser.keys(&[Key::Tab]).await;
    let focused = browser.client.active_element().await.unwrap();
    assert_eq!(focused.text().await.unwrap(), "Allow");
    assert_eq!(
        focused.prop("tagName").await.unwrap().as_deref(),
        Some("BUTTON")
    );
    browser.keys(&[Key::Enter]).await;
    // The redirect after the form's POST passes form-action: the client receives its code.
    let back = tokio::time::timeout(Duration::from_secs(10), codes.recv())
        .await
        .expect("the callback was reached")
        .unwrap();
    let q = query_of(&back);
    assert_eq!(q.get("state").map(String::as_str), Some("xyz-state"));
    browser.wait_for_url(&callback).await;
    let tokens = gw
        .token(&TokenRequest {
            redirect_uri: &callback,
            ..TokenRequest::redeem(&authorization, &q["code"])
        })
        .await
        .ok_json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        gw.introspect(&access, &resource_server.basic()).await["active"],
        json!(true)
    );
    let guarded = gw
        .http
        .with_bearer("POST", &mcp, &access, Some(ping()))
        .await;
    assert_ne!(
        guarded.status,
        StatusCode::UNAUTHORIZED,
        "the token passes the guard"
    );

    // Connected apps: the grant, then revoke it with its button.
    browser.client.goto(&gw.url("/account/apps")).await.unwrap();
    assert_eq!(browser.text("h2").await, "Notes app");
    let listed = browser.text("main").await;
    assert!(listed.contains("127.0.0.1"), "{listed}");
    assert!(listed.contains(&mcp), "{listed}");
    assert!(listed.contains("Use the Acme tools for you"), "{listed}");
    assert!(listed.contains("UTC"), "{listed}");
    browser.assert_styled("connected apps").await;
    browser.screenshot("connected-apps").await;
    let revoke = browser
        .client
        .find(Locator::Css(
            "button[aria-label='Revoke access of Notes app']",
        ))
        .await
        .expect("a revoke button named for its app");
    revoke.click().await.unwrap();
    browser.wait_for_url(&gw.url("/account/apps")).await;
    assert!(
        browser
            .text("main")
            .await
            .contains("No application is connected to your account.")
    );
    browser.screenshot("connected-apps-revoked").await;
    assert_eq!(
        gw.introspect(&access, &resource_server.basic()).await["active"],
        json!(false)
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let status = gw
            .http
            .with_bearer("POST", &mcp, &access, Some(ping()))
            .await
            .status;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the guard still lets the revoked token through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The device page: type the code, approve.
    let device_client = gw
        .create_client(&NewClient::machine("none", &[DEVICE_GRANT]))
        .await
        .id;
    let codes = gw
        .post(
            "/device_authorization",
            &[("client_id", device_client.as_str()), ("scope", "mcp")],
        )
        .await
        .ok_json();
    browser.client.goto(&gw.url("/device")).await.unwrap();
    assert_eq!(browser.text("h1").await, "Connect a device");
    assert_eq!(
        browser.text("label[for=user_code]").await,
        "Code from your device",
        "the field is labelled"
    );
    browser.assert_styled("device entry").await;
    browser.screenshot("device-code").await;
    let field = browser.client.find(Locator::Id("user_code")).await.unwrap();
    field
        .send_keys(&codes["user_code"].as_str().unwrap().to_lowercase())
        .await
        .unwrap();
    browser.keys(&[Key::Enter]).await;
    browser
        .wait_for_url(&format!("{}?", gw.url("/device")))
        .await;
    assert!(browser.text("h1").await.starts_with("Allow "));
    browser.screenshot("device-approve").await;
    browser
        .client
        .find(Locator::Css("button[value=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, "Device connected");
    browser.screenshot("device-connected").await;
    let polled = gw
        .token(&TokenRequest {
            grant_type: DEVICE_GRANT,
            device_code: codes["device_code"].as_str().unwrap(),
            client_id: &device_client,
            ..TokenRequest::default()
        })
        .await;
    assert_eq!(polled.status, StatusCode::OK, "{}", polled.text());

    // An error page: a consent link that is no longer valid.
    browser
        .client
        .goto(&format!("{}?request_id=expired", gw.url("/consent")))
        .await
        .unwrap();
    assert_eq!(
        browser.text("h1").await,
        "This sign-in request is no longer valid"
    );
    assert!(browser.text(".brand").await.contains("Acme MCP"));
    browser.assert_styled("error page").await;
    browser.screenshot("error").await;

    browser.close().await;
    gw.stop().await;
}
