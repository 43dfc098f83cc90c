//! An MCP SDK client (the TypeScript SDK, `tests/clients/browser_driven_mcp_client.mjs`) and a
//! person in a real browser (headless Chromium) through the upstream provider (oidc-provider): the
//! SDK discovers, registers (with a post-logout redirect URI) and sends the person to authorize;
//! they sign in at the provider, approve, and the SDK's tool call reaches the demo MCP server as
//! them. On "connected apps" they revoke it: the SDK's next call is refused within a second. Then
//! RP-Initiated Logout sends the browser back to the client's registered URI, and the SDK's next
//! authorization asks for sign-in again. Pages are saved under build/screenshots/ (sdk-*).

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::demo_mcp::DemoMcp;
use common::upstream::Upstream;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use webdriver::Browser;

/// The SDK client process and its line protocol (see the script's header).
struct SdkClient {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    callback_origin: String,
}

impl SdkClient {
    fn start(mcp_url: &str) -> Self {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(format!(
                "{root}/tests/clients/browser_driven_mcp_client.mjs"
            ))
            .env("MCP_URL", mcp_url)
            .env("CALLBACK_PORT", port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the SDK client (npm ci in tests/clients)");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdin,
            lines,
            callback_origin: format!("http://127.0.0.1:{port}"),
        }
    }

    /// The next event the client reports, within 20 seconds (`awaited` names it for the failure).
    async fn next(&mut self, awaited: &str) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the SDK client reported no {awaited} in time"))
            .expect("its stdout")
            .expect("the SDK client is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    /// The next event that has `field`, skipping others.
    async fn next_with(&mut self, field: &str) -> Value {
        loop {
            let event = self.next(field).await;
            eprintln!("SDK client: {event}");
            if event.get(field).is_some() {
                return event;
            }
        }
    }

    async fn send(&mut self, command: &str) {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_sdk_client_is_authorized_in_a_real_browser_revoked_and_signed_out() {
    let upstream = Upstream::start().await;
    let demo = DemoMcp::start().await;
    let upstream_config = upstream.openid();
    let gw = Gateway::start_with(Options {
        adjust: Some(Box::new(
            move |config: &mut oauth_gateway::config::Config| {
                config.dev_user = None;
                config.upstream = Some(upstream_config);
            },
        )),
        ..Options::guarding(demo.url.clone(), &["mcp"])
    })
    .await;
    upstream.configure(&gw).await;
    let browser = Browser::start().await;
    let mut sdk = SdkClient::start(&gw.mcp_url());

    // The SDK found the gateway from the server's 401, registered, and sends the person here.
    let authorize = sdk.next_with("authorize").await["authorize"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(authorize.starts_with(&gw.url("/authorize?")), "{authorize}");
    browser.client.goto(&authorize).await.unwrap();
    browser
        .wait_for_url(&format!("{}/interaction/", upstream.issuer))
        .await;
    browser.screenshot("sdk-upstream-sign-in").await;
    browser
        .client
        .find(fantoccini::Locator::Id("login"))
        .await
        .expect("the provider's user name field")
        .send_keys("alice")
        .await
        .unwrap();
    browser.click("button[type=submit]").await;
    browser.wait_for_url(&gw.url("/consent?")).await;
    assert_eq!(
        browser.text("h1").await,
        "Allow Notes MCP client to access your account?"
    );
    browser.screenshot("sdk-consent").await;
    browser.click("button[value=approve]").await;

    // The browser lands on the client's loopback callback; the SDK redeems and calls the tool.
    browser
        .wait_for_url(&format!("{}/callback", sdk.callback_origin))
        .await;
    let connected = sdk.next_with("connected").await;
    let client_id = connected["connected"].as_str().unwrap().to_owned();
    assert_eq!(connected["whoami"]["subject"], "alice", "{connected}");
    assert_eq!(connected["whoami"]["client_id"], client_id.as_str());
    assert_eq!(connected["whoami"]["authorization_header_seen"], false);
    sdk.send("call").await;
    assert_eq!(sdk.next_with("called").await["called"]["subject"], "alice");

    // Connected apps lists it; revoking it refuses the SDK's next call within a second.
    browser.client.goto(&gw.url("/account/apps")).await.unwrap();
    assert_eq!(browser.text("h2").await, "Notes MCP client");
    browser.screenshot("sdk-connected-apps").await;
    browser
        .click("button[aria-label='Revoke access of Notes MCP client']")
        .await;
    browser.wait_for_url(&gw.url("/account/apps")).await;
    let revoked = Instant::now();
    sdk.send("call").await;
    // The SDK's refresh is refused too: it forgets its tokens and starts a new authorization.
    let again = sdk.next_with("authorize").await;
    let refused = sdk.next_with("refused").await;
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "refused after {:?}",
        revoked.elapsed()
    );
    assert_eq!(refused["unauthorized"], true, "{refused}");
    assert!(
        again["authorize"]
            .as_str()
            .unwrap()
            .starts_with(&gw.url("/authorize?"))
    );

    // RP-Initiated Logout back to the client's registered post-logout URI, with its state.
    let logout = format!(
        "{}?{}",
        gw.url("/logout"),
        form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &client_id)
            .append_pair(
                "post_logout_redirect_uri",
                &format!("{}/signed-out", sdk.callback_origin)
            )
            .append_pair("state", "bye-1")
            .finish()
    );
    browser.client.goto(&logout).await.unwrap();
    browser.screenshot("sdk-confirm-sign-out").await;
    browser.click("button[type=submit]").await;
    let signed_out = sdk.next_with("signed_out").await;
    assert_eq!(signed_out["signed_out"]["state"], "bye-1");
    let sessions: i64 = gw
        .sql_value(
            "SELECT count(*) FROM oauth.list_user_sessions('alice')",
            &[],
        )
        .await;
    assert_eq!(sessions, 0);

    // The SDK's new authorization asks for sign-in again, on the provider's page.
    browser
        .client
        .goto(again["authorize"].as_str().unwrap())
        .await
        .unwrap();
    browser
        .wait_for_url(&format!("{}/interaction/", upstream.issuer))
        .await;
    assert_eq!(browser.text("h1").await, "Sign in");

    sdk.send("exit").await;
    browser.close().await;
    gw.stop().await;
}
