//! Sign-in through the upstream provider in a real browser: headless Chromium (`webdriver`), the
//! real OpenID provider of the sign-in tests (oidc-provider, `common::upstream`), and the demo MCP
//! server (`oauth-demo-mcp`) behind the gateway's guard. An MCP client discovers the gateway from
//! the server's 401, registers itself and starts an authorization with PKCE; the person signs in
//! on the provider's page, approves, and the client's tool call reaches the server as them. Then
//! the sessions page, RP-Initiated Logout with the client's ID token, and the next authorization
//! asking for sign-in again. Each page is saved as a PNG under build/screenshots/.

mod common;
#[path = "common/webdriver.rs"]
mod webdriver;

use common::demo_mcp::DemoMcp;
use common::upstream::Upstream;
use common::*;
use hyper::StatusCode;
use serde_json::{Value, json};
use webdriver::{Browser, callback_server, received};

const BRAND: &str = "#005f73";
const BRAND_RGB: &str = "rgb(0, 95, 115)";

/// What an MCP client learns before it sends anyone to sign in: from the server's 401 to the
/// protected-resource metadata, the authorization server's metadata, and its own registration.
struct Discovered {
    resource: String,
    authorization_endpoint: String,
    token_endpoint: String,
    client_id: String,
}

async fn discover_and_register(http: &Http, mcp: &str, callback: &str) -> Discovered {
    let challenge = http
        .post_raw(mcp, "application/json", ping().to_string())
        .await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    let header = challenge.header("www-authenticate").unwrap().to_owned();
    let metadata_url = header
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("resource_metadata in {header}"));
    let resource = http.get(metadata_url, &[]).await.ok_json();
    let issuer = resource["authorization_servers"][0].as_str().unwrap();
    let server = http
        .get(
            &format!("{issuer}/.well-known/oauth-authorization-server"),
            &[],
        )
        .await
        .ok_json();
    let registration = json!({
        "client_name": "Notes app",
        "redirect_uris": [callback],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "scope": "openid mcp",
    });
    let registered = http
        .post_raw(
            server["registration_endpoint"].as_str().unwrap(),
            "application/json",
            registration.to_string(),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let text = |v: &Value| v.as_str().unwrap().to_owned();
    Discovered {
        resource: text(&resource["resource"]),
        authorization_endpoint: text(&server["authorization_endpoint"]),
        token_endpoint: text(&server["token_endpoint"]),
        client_id: text(&registered.json()["client_id"]),
    }
}

fn ping() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_at_the_provider_in_a_real_browser_and_the_tool_call_is_theirs() {
    let upstream = Upstream::start().await;
    let demo = DemoMcp::start().await;
    let upstream_config = upstream.openid();
    let gw = Gateway::start_with(Options {
        adjust: Some(Box::new(
            move |config: &mut oauth_gateway::config::Config| {
                config.dev_user = None;
                config.upstream = Some(upstream_config);
                config.branding.name = Some("Acme MCP".into());
                config.branding.primary_color = BRAND.into();
            },
        )),
        ..Options::guarding(demo.url.clone(), &["mcp"])
    })
    .await;
    upstream.configure(&gw).await;
    let browser = Browser::start().await;
    let (callback, mut callbacks) = callback_server().await;
    let mcp = gw.mcp_url();
    let client = discover_and_register(&gw.http, &mcp, &callback).await;
    assert_eq!(client.resource, mcp);

    // The client opens the browser at the authorization endpoint; nobody is signed in, so the
    // gateway sends it on to the provider's sign-in page.
    let authorization = Authorization {
        redirect_uri: &callback,
        resource: &client.resource,
        scope: "openid mcp",
        ..Authorization::new(&client.client_id)
    };
    let start = format!(
        "{}?{}",
        client.authorization_endpoint,
        authorization.query()
    );
    browser.client.goto(&start).await.unwrap();
    browser
        .wait_for_url(&format!("{}/interaction/", upstream.issuer))
        .await;
    assert_eq!(browser.text("h1").await, "Sign in");
    browser.screenshot("upstream-sign-in").await;
    let field = browser
        .client
        .find(fantoccini::Locator::Id("login"))
        .await
        .expect("the provider's user name field");
    field.send_keys("alice").await.unwrap();
    browser.click("button[type=submit]").await;

    // Back at the gateway, signed in: the consent page names the user the provider vouched for.
    browser.wait_for_url(&gw.url("/consent?")).await;
    assert_eq!(
        browser.text("h1").await,
        "Allow Notes app to access your account?"
    );
    assert!(browser.text("main").await.contains("Signed in as alice."));
    browser.assert_styled(BRAND_RGB, "consent").await;
    browser.screenshot("consent-signed-in").await;
    browser.click("button[value=approve]").await;

    // The redirect delivers the code, named as this issuer's (RFC 9207); the client redeems it.
    let back = query_of(&received(&mut callbacks).await);
    assert_eq!(back["state"], "xyz-state");
    assert_eq!(back["iss"], gw.issuer);
    let tokens = gw
        .http
        .token_at(
            &client.token_endpoint,
            &TokenRequest {
                redirect_uri: &callback,
                ..TokenRequest::redeem(&authorization, &back["code"])
            },
        )
        .await
        .ok_json();
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    assert_eq!(jwt_segment(&id_token, 1)["sub"], "alice");

    // The tool call passes the guard and reaches the server as alice, with her claims.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "whoami", "arguments": {}}});
    let answer = gw
        .http
        .with_bearer("POST", &mcp, access, Some(call))
        .await
        .ok_json();
    let who = &answer["result"]["structuredContent"];
    assert_eq!(who["subject"], "alice", "{answer}");
    assert_eq!(who["client_id"], json!(client.client_id));
    assert_eq!(who["props"]["email"], "alice@example.com");
    assert_eq!(who["authorization_header_seen"], false);

    // Where alice is signed in: this browser.
    browser
        .client
        .goto(&gw.url("/account/sessions"))
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await, "Where you are signed in");
    assert_eq!(browser.text("section h2").await, "This browser");
    browser.assert_styled(BRAND_RGB, "sessions").await;
    browser.screenshot("sessions").await;

    // RP-Initiated Logout, started by the client with its ID token as the hint: the session ends
    // at once, without asking. (The return to a registered post_logout_redirect_uri is
    // browser_mcp_sdk.rs's.)
    let logout = format!(
        "{}?{}",
        gw.url("/logout"),
        form_urlencoded::Serializer::new(String::new())
            .append_pair("id_token_hint", &id_token)
            .finish()
    );
    browser.client.goto(&logout).await.unwrap();
    assert_eq!(browser.text("h1").await, "Signed out");
    browser.assert_styled(BRAND_RGB, "signed out").await;
    browser.screenshot("signed-out").await;
    let (sessions, grants): (i64, i64) = (
        gw.sql_value(
            "SELECT count(*) FROM oauth.list_user_sessions('alice')",
            &[],
        )
        .await,
        gw.sql_value(
            "SELECT count(*) FROM oauth.grants WHERE user_id = 'alice' AND revoked_at IS NULL",
            &[],
        )
        .await,
    );
    assert_eq!(
        (sessions, grants),
        (0, 1),
        "the session ended, the grant lives"
    );

    // The next authorization asks for sign-in again, on the provider's page.
    let again = Authorization {
        redirect_uri: &callback,
        resource: &client.resource,
        scope: "openid mcp",
        state: "again",
        ..Authorization::new(&client.client_id)
    };
    browser
        .client
        .goto(&format!(
            "{}?{}",
            client.authorization_endpoint,
            again.query()
        ))
        .await
        .unwrap();
    browser
        .wait_for_url(&format!("{}/interaction/", upstream.issuer))
        .await;
    assert_eq!(browser.text("h1").await, "Sign in");

    browser.close().await;
    gw.stop().await;
}
