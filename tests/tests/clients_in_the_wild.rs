//! Replicas of what MCP clients in the wild send, at the extension's level: the exact registration
//! bodies, then an authorization to each kind of redirect URI they registered.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::tokio_postgres::Client;
use oauth_provider_tests::{gateway, unique};
use sha2::{Digest, Sha256};

async fn register(db: &Client, body: &Value) -> Value {
    db.query_one("SELECT oauth.register_client($1)", &[body])
        .await
        .unwrap()
        .get(0)
}

/// Runs one authorization to `redirect_uri` and redeems its code; the token response.
async fn authorize_and_redeem(db: &Client, client_id: &str, redirect_uri: &str) -> Value {
    let verifier = format!("{}{}", unique("verifier"), "v".repeat(40));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let began: Value = db
        .query_one(
            "SELECT oauth.begin_authorization($1)",
            &[&json!({
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "st",
            })],
        )
        .await
        .unwrap()
        .get(0);
    let request_id = began["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{redirect_uri}: authorization refused: {began}"))
        .to_owned();
    let location: String = db
        .query_one(
            "SELECT oauth.issue_code($1, $2)",
            &[&request_id, &unique("user")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        location.starts_with(redirect_uri.split('?').next().unwrap()),
        "{location} returns to {redirect_uri}"
    );
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"));
    let none: Option<&str> = None;
    db.query_one(
        "SELECT oauth.exchange_code($1, $2, $3, $4, $5, NULL)",
        &[&client_id, &none, &code, &verifier, &redirect_uri],
    )
    .await
    .unwrap()
    .get(0)
}

/// Registers `body` as the client sends it, then completes an authorization at each of `uses`.
async fn registers_as_native_and_completes_at(db: &Client, body: Value, uses: &[&str]) {
    let registered = register(db, &body).await;
    assert!(registered["error"].is_null(), "{registered}");
    assert_eq!(registered["application_type"], json!("native"));
    let client_id = registered["client_id"].as_str().unwrap();
    for redirect_uri in uses {
        let tokens = authorize_and_redeem(db, client_id, redirect_uri).await;
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
