//! The pages in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! installed by scripts/setup) driven through WebDriver (fantoccini). One browser session walks
//! through consent → code → token → connected apps → revoke (the guard answers 401), the device
//! page and an error page, checking that each page's own style runs under its CSP and that a
//! keyboard alone can approve. Each page is saved as a PNG under build/screenshots/.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use std::time::{Duration, Instant};

use common::*;
use fantoccini::Locator;
use fantoccini::key::Key;
use hyper::StatusCode;
use serde_json::{Value, json};
use webdriver::{Browser, callback_server, received};

const BRAND: &str = "#7a1fa2";
const BRAND_RGB: &str = "rgb(122, 31, 162)";

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
    browser.assert_styled(BRAND_RGB, "consent").await;
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
    let back = received(&mut codes).await;
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
    browser.assert_styled(BRAND_RGB, "connected apps").await;
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
    browser.assert_styled(BRAND_RGB, "device entry").await;
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
    browser.assert_styled(BRAND_RGB, "error page").await;
    browser.screenshot("error").await;

    browser.close().await;
    gw.stop().await;
}
