//! Replicas of what MCP clients in the wild send, at the extension's level: the exact registration
//! bodies, then an authorization to each kind of redirect URI they registered.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::{Client, TestClient, authorize, gateway, register, unique};

/// Runs one authorization to `redirect_uri` and redeems its code; the token response.
async fn authorize_and_redeem(db: &Client, registered: &Value, redirect_uri: &str) -> Value {
    let client = TestClient::registered(registered, redirect_uri);
    let authorized = authorize(db, &client, &unique("user")).await;
    assert!(
        authorized.location.starts_with(redirect_uri),
        "{} returns to {redirect_uri}",
        authorized.location
    );
    authorized.exchange().run(db).await
}

/// Registers `body` as the client sends it, then completes an authorization at each of `uses`.
async fn registers_as_native_and_completes_at(db: &Client, body: Value, uses: &[&str]) {
    let registered = register(db, &body).await;
    assert!(registered["error"].is_null(), "{registered}");
    assert_eq!(registered["application_type"], json!("native"));
    for redirect_uri in uses {
        let tokens = authorize_and_redeem(db, &registered, redirect_uri).await;
        assert!(
            tokens["refresh_token"].is_string(),
            "{redirect_uri}: {tokens}"
        );
    }
}

#[tokio::test]
async fn cursor_registers_a_private_scheme_an_https_and_a_loopback_redirect_uri_without_application_type()
 {
    let body = json!({
        "client_name": "Cursor",
        "token_endpoint_auth_method": "none",
        "redirect_uris": [
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "https://www.cursor.com/agents/mcp/oauth/callback",
            "http://localhost:8787/callback"
        ],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]
    });
    let uses = [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
        "http://localhost:49152/callback",
    ];
    registers_as_native_and_completes_at(&gateway().await, body, &uses).await;
}

#[tokio::test]
async fn vs_code_registers_a_loopback_and_an_https_redirect_uri_and_uses_another_port_when_busy() {
    let body = json!({
        "client_name": "Visual Studio Code",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1:33418/", "https://vscode.dev/redirect"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]
    });
    let uses = [
        "http://127.0.0.1:33418/",
        "http://127.0.0.1:33419/",
        "https://vscode.dev/redirect",
    ];
    registers_as_native_and_completes_at(&gateway().await, body, &uses).await;
}

#[tokio::test]
async fn a_client_that_says_it_is_web_still_cannot_register_loopback_or_private_scheme_uris() {
    let db = gateway().await;
    for uri in [
        "http://127.0.0.1:33418/",
        "cursor://anysphere.cursor-mcp/oauth/callback",
    ] {
        let refused = register(
            &db,
            &json!({
                "application_type": "web",
                "token_endpoint_auth_method": "none",
                "redirect_uris": [uri, "https://app.example/cb"],
            }),
        )
        .await;
        assert_eq!(
            refused["error"],
            json!("invalid_redirect_uri"),
            "{uri}: {refused}"
        );
    }
    let plain_http = register(
        &db,
        &json!({
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://app.example/cb", "http://127.0.0.1/cb"],
        }),
    )
    .await;
    assert_eq!(
        plain_http["error"],
        json!("invalid_redirect_uri"),
        "http off loopback stays refused for native clients too: {plain_http}"
    );
}
