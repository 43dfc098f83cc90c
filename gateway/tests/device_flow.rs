//! The device authorization grant (RFC 8628) over real HTTP: polling, the user's page, denial,
//! and the budget on guessing user codes.

mod common;

use common::*;
use hyper::StatusCode;
use serde_json::{Value, json};

async fn device_client(gw: &Gateway, grant_types: &[&str]) -> String {
    gw.create_client(&NewClient::machine("none", grant_types))
        .await
        .id
}

async fn start(gw: &Gateway, client_id: &str, scope: &str) -> Response {
    gw.post(
        "/device_authorization",
        &[("client_id", client_id), ("scope", scope)],
    )
    .await
}

async fn poll(gw: &Gateway, client_id: &str, device_code: &str) -> Response {
    gw.token(&TokenRequest {
        grant_type: DEVICE_GRANT,
        device_code,
        client_id,
        ..TokenRequest::default()
    })
    .await
}

/// The user's page for one code: the code it shows and its form's CSRF token.
struct DevicePage {
    user_code: String,
    csrf: String,
}

async fn open_device_page(gw: &Gateway, verification_uri_complete: &str) -> DevicePage {
    let page = gw.http.get(verification_uri_complete, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let text = page.text();
    DevicePage {
        user_code: form_field(&text, "user_code"),
        csrf: form_field(&text, "csrf_token"),
    }
}

async fn decide(gw: &Gateway, user_code: &str, csrf: &str, decision: &str) -> Response {
    gw.post(
        "/device",
        &[
            ("user_code", user_code),
            ("csrf_token", csrf),
            ("decision", decision),
        ],
    )
    .await
}

/// A device client without refresh tokens and its device authorization, not yet decided.
async fn pending_device_authorization(gw: &Gateway) -> (String, Value) {
    let id = device_client(gw, &[DEVICE_GRANT]).await;
    let started = start(gw, &id, "").await.json();
    (id, started)
}

fn str_of<'a>(started: &'a Value, name: &str) -> &'a str {
    started[name].as_str().unwrap_or_else(|| panic!("{name}"))
}

#[tokio::test]
async fn device_flow_polls_pending_then_slow_down_then_tokens_once() {
    let gw = Gateway::start().await;
    let id = device_client(&gw, &[DEVICE_GRANT, "refresh_token"]).await;
    let started = start(&gw, &id, "mcp").await;
    assert_eq!(started.header("cache-control"), Some("no-store"));
    let started = started.ok_json();
    let device_code = str_of(&started, "device_code");
    let user_code = str_of(&started, "user_code");
    assert!(
        user_code.len() == 9
            && user_code.chars().enumerate().all(|(i, c)| if i == 4 {
                c == '-'
            } else {
                "BCDFGHJKLMNPQRSTVWXZ".contains(c)
            }),
        "{user_code}"
    );
    assert_eq!(started["verification_uri"], json!(gw.url("/device")));
    assert_eq!(started["interval"], json!(5));
    assert!(started["expires_in"].as_u64().unwrap() >= 60);

    let pending = poll(&gw, &id, device_code).await;
    assert_eq!(
        (pending.status, pending.oauth_error().as_str()),
        (StatusCode::BAD_REQUEST, "authorization_pending")
    );
    assert_eq!(
        poll(&gw, &id, device_code).await.oauth_error(),
        "slow_down",
        "polled within the interval"
    );

    // The user types the code in lower case with a space: the page still finds it.
    let entry = gw.get("/device").await;
    assert!(entry.text().contains("name=\"user_code\""));
    let typed = user_code.to_lowercase().replace('-', " ");
    let page_url = format!(
        "{}?user_code={}",
        gw.url("/device"),
        typed.replace(' ', "+")
    );
    let page = open_device_page(&gw, &page_url).await;
    let forged = decide(&gw, &page.user_code, "AAAA", "approve").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let approved = decide(&gw, &page.user_code, &page.csrf, "approve").await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert!(approved.text().contains("Device connected"));

    let tokens = poll(&gw, &id, device_code).await.ok_json();
    let claims = gw.claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "mcp");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(
        gw.refresh(&id, refresh).await.status,
        StatusCode::OK,
        "device tokens refresh"
    );

    // Single use: a replayed device code fails and revokes what it issued.
    assert_eq!(
        poll(&gw, &id, device_code).await.oauth_error(),
        "invalid_grant"
    );
    let revoked: bool = gw
        .sql_value(
            "SELECT revoked_at IS NOT NULL FROM oauth.refresh_families WHERE family_id = $1::text::uuid",
            &[&claims["family_id"].as_str().unwrap()],
        )
        .await;
    assert!(revoked);
    gw.stop().await;
}

#[tokio::test]
async fn device_flow_denied_by_the_user_answers_access_denied() {
    let gw = Gateway::start().await;
    let (id, started) = pending_device_authorization(&gw).await;
    let page_url = str_of(&started, "verification_uri_complete");
    let page = open_device_page(&gw, page_url).await;
    let denied = decide(&gw, &page.user_code, &page.csrf, "deny").await;
    assert!(denied.text().contains("Request denied"));
    assert_eq!(
        poll(&gw, &id, str_of(&started, "device_code"))
            .await
            .oauth_error(),
        "access_denied"
    );
    // The decided code is gone from the page.
    let again = gw.http.get(page_url, &[]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    let code_only = gw.public_client(&["mcp"]).await;
    let refused = start(&gw, &code_only, "").await;
    assert_eq!(refused.oauth_error(), "unauthorized_client");
    let get = gw.get("/device_authorization").await;
    assert_eq!(get.oauth_error(), "invalid_request");
    gw.stop().await;
}

#[tokio::test]
async fn guessing_user_codes_is_stopped_after_ten_misses() {
    let gw = Gateway::start().await;
    let (_, started) = pending_device_authorization(&gw).await;
    for guess in 0..10 {
        let miss = gw
            .http
            .get(
                &format!("{}?user_code=BCDF-{guess:04}", gw.url("/device")),
                &[],
            )
            .await;
        assert_eq!(miss.status, StatusCode::BAD_REQUEST, "guess {guess}");
    }
    // Even the right code is refused now: the user must wait out the window.
    let refused = gw
        .http
        .get(str_of(&started, "verification_uri_complete"), &[])
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.text().contains("Too many attempts"));
    gw.stop().await;
}
