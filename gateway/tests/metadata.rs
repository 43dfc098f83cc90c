//! Discovery over real HTTP: the RFC 8414 / OpenID metadata documents, the JWKS, and CORS for
//! browser clients.

mod common;

use common::*;
use hyper::StatusCode;
use oauth_gateway::keys::Alg;
use serde_json::json;

#[tokio::test]
async fn metadata_is_served_byte_for_byte_at_path_inserted_urls_without_redirects() {
    let gw = Gateway::start_with(Options {
        issuer_path: "/tenant-a",
        ..Options::default()
    })
    .await;
    let endpoint = |path: &str| json!(format!("{}{path}", gw.issuer));
    for path in [
        "/.well-known/oauth-authorization-server/tenant-a",
        "/.well-known/openid-configuration/tenant-a",
        "/tenant-a/.well-known/openid-configuration",
    ] {
        let resp = gw.get_at_root(path, &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let doc = resp.json();
        assert_eq!(doc["issuer"], json!(gw.issuer), "issuer byte for byte");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["authorization_response_iss_parameter_supported"],
            json!(true)
        );
        assert_eq!(doc["token_endpoint"], endpoint("/token"));
        assert_eq!(doc["registration_endpoint"], endpoint("/register"));
        assert_eq!(
            doc["grant_types_supported"],
            json!([
                "authorization_code",
                "refresh_token",
                "client_credentials",
                DEVICE_GRANT,
                EXCHANGE_GRANT
            ])
        );
        assert_eq!(
            doc["device_authorization_endpoint"],
            endpoint("/device_authorization")
        );
        assert_eq!(
            doc["pushed_authorization_request_endpoint"],
            endpoint("/par")
        );
        assert_eq!(doc["require_pushed_authorization_requests"], json!(false));
        assert_eq!(doc["client_id_metadata_document_supported"], json!(true));
        assert!(
            doc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("mcp"))
        );
    }
    // mcp-remote reads the root document whatever the issuer's path (issue 11 item 6): it is
    // served there too, still naming this issuer, which a client that checks (RFC 8414 §3.3)
    // would not take for the root's (it used to be a 404).
    let root = gw
        .get_at_root("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.json()["issuer"], json!(gw.issuer));
    gw.stop().await;
}

#[tokio::test]
async fn jwks_lists_every_key_and_the_first_signs() {
    let gw = Gateway::start_with(Options {
        algs: vec![Alg::ES256, Alg::RS256, Alg::EdDSA],
        ..Options::default()
    })
    .await;
    let jwks = gw.get("/.well-known/jwks.json").await.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for (key, (alg, kty)) in keys
        .iter()
        .zip([("ES256", "EC"), ("RS256", "RSA"), ("EdDSA", "OKP")])
    {
        assert_eq!(key["alg"], alg);
        assert_eq!(key["kty"], kty);
        assert_eq!(key["use"], "sig");
        assert!(key["kid"].is_string());
        assert!(key.get("d").is_none(), "no private material");
    }
    let client_id = gw.public_client(&["mcp"]).await;
    let tokens = gw.code_flow(&Authorization::new(&client_id)).await.json();
    let header = jwt_segment(tokens["access_token"].as_str().unwrap(), 0);
    assert_eq!(header["kid"], keys[0]["kid"]);
    assert_eq!(header["typ"], "at+jwt");
    gw.stop().await;
}

#[tokio::test]
async fn cors_is_offered_to_browser_clients_but_not_on_authorize() {
    let gw = Gateway::start().await;
    let origin = [("origin", "https://inspector.example")];
    let preflight = gw
        .http
        .send(
            hyper::Request::options(gw.url("/token"))
                .header("origin", "https://inspector.example")
                .header("access-control-request-method", "POST")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let meta = gw
        .get_at_root("/.well-known/oauth-authorization-server", &origin)
        .await;
    assert_eq!(meta.header("access-control-allow-origin"), Some("*"));
    let authorize = gw.http.get(&gw.url("/authorize"), &origin).await;
    assert!(authorize.header("access-control-allow-origin").is_none());
    gw.stop().await;
}
