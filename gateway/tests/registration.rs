//! RFC 7591 dynamic registration over real HTTP: each field checked, and what a web client gets.

mod common;

use common::*;
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn registration_checks_each_field() {
    let gw = Gateway::start().await;
    let register = |body: String| async {
        gw.http
            .post_raw(&gw.url("/register"), "application/json", body)
            .await
    };
    for (body, error) in [
        ("not json".to_owned(), "invalid_client_metadata"),
        (json!({"redirect_uris": "https://a.example/cb"}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://a.example/cb#x"]}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://a.example/cb"]}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://localhost/cb"], "application_type": "web"}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "scope": "admin"}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "client_name": 7}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:alert(1)"}).to_string(), "invalid_client_metadata"),
    ] {
        let resp = register(body.clone()).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.oauth_error(), error, "{body}");
    }
    let form = gw
        .post("/register", &[("redirect_uris", "https://a.example/cb")])
        .await;
    assert_eq!(form.oauth_error(), "invalid_request");
    let ok = gw
        .register(json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Web app"}))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let body = ok.json();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(
        body["client_secret"].as_str().unwrap().len(),
        43,
        "256-bit secret"
    );
    assert_eq!(body["application_type"], "web");
    gw.stop().await;
}
