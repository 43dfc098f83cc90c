//! RFC 7592 over real HTTP: a dynamically registered client reads, updates and deletes its
//! registration with its registration access token.

mod common;

use common::*;
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn registered_client_reads_updates_and_deletes_its_registration_rfc7592() {
    let gw = Gateway::start().await;
    let metadata = json!({"client_name": "CLI", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
    let registered = gw.register(metadata).await.json_if(StatusCode::CREATED);
    let field = |name: &str| registered[name].as_str().unwrap().to_owned();
    let (client_id, token, uri) = (
        field("client_id"),
        field("registration_access_token"),
        field("registration_client_uri"),
    );
    assert_eq!(uri, gw.url(&format!("/register/{client_id}")));
    let http = &gw.http;

    let read = http.with_bearer("GET", &uri, &token, None).await;
    assert_eq!(read.header("cache-control"), Some("no-store"));
    let read = read.ok_json();
    assert_eq!(read["client_name"], "CLI");
    assert!(
        read.get("registration_access_token").is_none(),
        "shown once, at registration"
    );

    let wrong = http.with_bearer("GET", &uri, "not-the-token", None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    let unknown = http
        .with_bearer("GET", &gw.url("/register/no-such-client"), &token, None)
        .await;
    assert_eq!(
        (unknown.status, unknown.text()),
        (wrong.status, wrong.text()),
        "unknown client looks like a wrong token"
    );
    let no_bearer = http.get(&uri, &[]).await;
    assert_eq!(no_bearer.status, StatusCode::UNAUTHORIZED);

    let update = |body| http.with_bearer("PUT", &uri, &token, Some(body));
    let updated = update(json!({"client_id": client_id, "client_name": "CLI v2", "redirect_uris": ["http://127.0.0.1/cb2"], "token_endpoint_auth_method": "none"})).await;
    assert_eq!(
        updated.ok_json()["redirect_uris"],
        json!(["http://127.0.0.1/cb2"])
    );
    let missing_id = update(json!({"redirect_uris": ["http://127.0.0.1/cb"]})).await;
    assert_eq!(missing_id.oauth_error(), "invalid_client_metadata");
    let bad_redirect = update(json!({"client_id": client_id, "redirect_uris": ["http://evil.example/cb"], "token_endpoint_auth_method": "none"})).await;
    assert_eq!(bad_redirect.oauth_error(), "invalid_redirect_uri");

    let deleted = http.with_bearer("DELETE", &uri, &token, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        http.with_bearer("GET", &uri, &token, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(gw.rows_of_client("clients", &client_id).await, 0);
    gw.stop().await;
}
