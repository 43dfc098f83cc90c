//! A real browser for the page tests: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup) driven through WebDriver (fantoccini), and the
//! loopback callback a native MCP client listens on. Included by the browser tests alone
//! (`#[path]`), so that the other test binaries do not build it.
//!
//! chromedriver and the Chromium it starts run in a process group of their own, killed when the
//! [`Browser`] is dropped: a failing test unwinds through the drop and leaves no browser behind.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::common::free_port;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver's process group, killed whole on drop (Chromium is chromedriver's child, and
/// would outlive it).
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// chromedriver on a free port and one browser session; both end with the test.
pub struct Browser {
    pub client: Client,
    screenshots: PathBuf,
    // Declared last: dropped after the client.
    _driver: Driver,
}

impl Browser {
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver (scripts/setup installs them)"
        );
        let port = free_port();
        let driver = Driver(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
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
            client,
            screenshots,
            _driver: driver,
        }
    }

    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
        std::fs::write(self.screenshots.join(format!("{name}.png")), png).unwrap();
    }

    /// The text of the first element matching `css`, once the page holding it has settled: right
    /// after a click the old page may still answer, and its element go stale under the read.
    pub async fn text(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let read = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.text().await,
                Err(e) => Err(e),
            };
            match read {
                Ok(text) => return text,
                Err(e) if started.elapsed() > Duration::from_secs(5) => panic!("{css}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect(script)
    }

    /// The page's own stylesheet ran (its CSP hash matched): the primary button, or else the
    /// brand bar, wears `rgb`, the brand colour.
    pub async fn assert_styled(&self, rgb: &str, what: &str) {
        let color = self
            .script(
                "const b = document.querySelector('button.primary') || document.querySelector('.brand');
                 return getComputedStyle(b).borderTopColor;",
            )
            .await;
        assert_eq!(color, json!(rgb), "{what}: the page's style is applied");
    }

    pub async fn keys(&self, keys: &[Key]) {
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

    pub async fn wait_for_url(&self, prefix: &str) -> String {
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

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Ends the WebDriver session politely; the processes end with the drop.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// The client's redirect URI: a loopback listener that answers a small page and hands over the
/// request's query, as a native MCP client's callback server does.
pub async fn callback_server() -> (String, mpsc::UnboundedReceiver<String>) {
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

/// The query the client's callback received, within ten seconds.
pub async fn received(callbacks: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), callbacks.recv())
        .await
        .expect("the callback was reached")
        .expect("the callback server runs")
}
