//! private_key_jwt end to end (RFC 7523 §2.2): a replica of ChatGPT, which identifies itself with
//! a Client ID Metadata Document naming private_key_jwt and a jwks_uri, both served over TLS by a
//! loopback document server with a test CA; its token requests carry assertions signed by an
//! independent JOSE implementation (jsonwebtoken over RustCrypto). Also registered clients with
//! jwks or jwks_uri, and what discovery says.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::document_server::{DocumentServer, install_signing_provider};
use common::*;
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CHATGPT_REDIRECT: &str = "https://chatgpt.com/connector_platform_oauth_redirect";

/// An RSA key a client signs its assertions with (RS256, as ChatGPT registers).
struct ClientKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl ClientKey {
    fn new(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let b64 = |b: Vec<u8>| URL_SAFE_NO_PAD.encode(b);
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes()),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(private.n().to_bytes_be()), "e": b64(private.e().to_bytes_be())}),
        }
    }

    /// A fresh assertion by `client_id` for `audience`: five minutes, a new jti.
    fn assertion(&self, client_id: &str, audience: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({"iss": client_id, "sub": client_id, "aud": audience, "iat": now,
                            "exp": now + 300, "jti": random_suffix()});
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// POSTs a token request authenticated by `assertion` (with `client_id` beside it, as ChatGPT sends).
async fn token_with_assertion(
    gw: &Gateway,
    client_id: &str,
    assertion: &str,
    pairs: &[(&str, &str)],
) -> common::Response {
    let mut form: Vec<(&str, &str)> = pairs.to_vec();
    form.extend([
        ("client_id", client_id),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion),
    ]);
    gw.post("/token", &form).await
}

fn assert_invalid_client(resp: &common::Response, what: &str) {
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        resp.text()
    );
    assert_eq!(resp.oauth_error(), "invalid_client", "{what}");
}

/// Authorizes `client_id` at `redirect_uri` through the built-in consent page: the code and PKCE
/// verifier the client holds.
async fn authorized_code(gw: &Gateway, client_id: &str, redirect_uri: &str) -> (String, String) {
    let authorization = Authorization {
        redirect_uri,
        ..Authorization::new(client_id)
    };
    let (request_id, csrf) = gw.consent_form(&authorization).await;
    let decided = gw.approve(&request_id, &csrf).await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
    let back = decided.location();
    assert!(back.starts_with(redirect_uri), "{back}");
    (
        query_of(&back)["code"].clone(),
        authorization.pkce.verifier.clone(),
    )
}

#[tokio::test]
async fn chatgpt_connects_with_its_metadata_document_and_private_key_jwt() {
    install_signing_provider();
    let docs = DocumentServer::start().await;
    let client_path = "/oauth/3f9a1c2b/client.json";
    let client_id = docs.url(client_path);
    let jwks_uri = docs.url("/oauth/jwks.json");
    // ChatGPT's document, as the issue quotes it (its own URLs on the test server).
    docs.serve(
        client_path,
        json!({
            "client_id": client_id,
            "client_name": "ChatGPT",
            "redirect_uris": [CHATGPT_REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg": "RS256",
            "jwks_uri": jwks_uri,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"]
        }),
    );
    let key = ClientKey::new("chatgpt-2025");
    docs.serve("/oauth/jwks.json", json!({"keys": [key.jwk]}));
    let gw = Gateway::start_with(Options {
        cimd: docs.cimd_config(),
        ..Options::default()
    })
    .await;
    let token_endpoint = gw.url("/token");

    // The code flow with PKCE; the code is redeemed with an assertion for the token endpoint.
    let (code, verifier) = authorized_code(&gw, &client_id, CHATGPT_REDIRECT).await;
    let redeem = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", CHATGPT_REDIRECT),
    ];
    // A public client's request (no assertion) is refused: the document made a confidential client.
    let public = gw
        .post(
            "/token",
            &[redeem.as_slice(), &[("client_id", client_id.as_str())]].concat(),
        )
        .await;
    assert_invalid_client(&public, "no assertion");
    let assertion = key.assertion(&client_id, &token_endpoint);
    let tokens = token_with_assertion(&gw, &client_id, &assertion, &redeem).await;
    let tokens = tokens.ok_json();
    assert_eq!(
        gw.claims(tokens["access_token"].as_str().unwrap())["client_id"],
        json!(client_id)
    );
    assert_eq!(
        docs.hits("/oauth/jwks.json"),
        1,
        "the key set was fetched once"
    );

    // Refresh, with a fresh assertion (the issuer as audience this time).
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = token_with_assertion(
        &gw,
        &client_id,
        &key.assertion(&client_id, &gw.issuer),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await
    .ok_json();
    let refresh_token = refreshed["refresh_token"].as_str().unwrap().to_owned();

    // The same assertion twice: the second is refused (its jti was used).
    let replayed = token_with_assertion(
        &gw,
        &client_id,
        &assertion,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_invalid_client(&replayed, "replayed assertion");
    assert!(
        replayed.text().contains("already used"),
        "{}",
        replayed.text()
    );

    // One method at a time; the right assertion type; the client_id the assertion names.
    let both = gw
        .http
        .post_form(
            &token_endpoint,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
                ("client_assertion_type", ASSERTION_TYPE),
                (
                    "client_assertion",
                    &key.assertion(&client_id, &token_endpoint),
                ),
            ],
            &[("authorization", &basic(&client_id, "secret"))],
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST, "{}", both.text());
    assert_eq!(both.oauth_error(), "invalid_request");
    let wrong_type = gw
        .post(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
                ),
                (
                    "client_assertion",
                    &key.assertion(&client_id, &token_endpoint),
                ),
            ],
        )
        .await;
    assert_invalid_client(&wrong_type, "SAML assertion type");
    let other_id = token_with_assertion(
        &gw,
        "https://someone.example/client.json",
        &key.assertion(&client_id, &token_endpoint),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_invalid_client(&other_id, "client_id is not the assertion's");

    // ChatGPT rotates its key: the unknown kid makes the gateway fetch the key set again (once
    // the copy is more than a minute old), and the new key works.
    let rotated = ClientKey::new("chatgpt-2026");
    docs.serve("/oauth/jwks.json", json!({"keys": [rotated.jwk]}));
    gw.admin
        .execute(
            "UPDATE oauth.client_jwks SET attempted_at = now() - interval '2 minutes' WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap();
    let after_rotation = token_with_assertion(
        &gw,
        &client_id,
        &rotated.assertion(&client_id, &token_endpoint),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_eq!(
        after_rotation.status,
        StatusCode::OK,
        "{}",
        after_rotation.text()
    );
    assert_eq!(
        docs.hits("/oauth/jwks.json"),
        2,
        "refetched once for the new kid"
    );
    // A kid the client never published: refused, without another fetch within the minute.
    let unknown = token_with_assertion(
        &gw,
        &client_id,
        &ClientKey::new("nobody").assertion(&client_id, &token_endpoint),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
        ],
    )
    .await;
    assert_invalid_client(&unknown, "unknown kid");
    assert_eq!(docs.hits("/oauth/jwks.json"), 2);
    assert_eq!(docs.hits(client_path), 1, "the document was fetched once");
    gw.stop().await;
}

#[tokio::test]
async fn registered_clients_authenticate_with_inline_keys_or_a_jwks_uri_everywhere() {
    install_signing_provider();
    let docs = DocumentServer::start().await;
    let gw = Gateway::start_with(Options {
        cimd: docs.cimd_config(),
        ..Options::default()
    })
    .await;
    let token_endpoint = gw.url("/token");

    // Discovery says what the extension accepts.
    let metadata = gw
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    for field in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
    ] {
        let methods = metadata[field].as_array().unwrap();
        assert!(
            methods.contains(&json!("private_key_jwt")),
            "{field}: {metadata}"
        );
    }
    let algs = metadata["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(
        algs.contains(&json!("RS256")) && algs.contains(&json!("ES256")),
        "{metadata}"
    );
    assert!(!algs.iter().any(|a| {
        a.as_str()
            .is_some_and(|a| a.starts_with("HS") || a == "none")
    }));

    // Registration with inline keys: no secret handed out; the code flow with an assertion.
    let inline_key = ClientKey::new("inline-1");
    let registered = gw
        .register(json!({
            "client_name": "Inline keys",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [inline_key.jwk]},
        }))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let registered = registered.json();
    assert!(registered["client_secret"].is_null(), "{registered}");
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let (code, verifier) = authorized_code(&gw, &client_id, CALLBACK).await;
    let tokens = token_with_assertion(
        &gw,
        &client_id,
        &inline_key.assertion(&client_id, &token_endpoint),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await
    .ok_json();
    let access_token = tokens["access_token"].as_str().unwrap();

    // Introspection and revocation authenticate the same way (the issuer as audience).
    let assertion_form = |assertion: String| {
        vec![
            (
                "client_assertion_type".to_owned(),
                ASSERTION_TYPE.to_owned(),
            ),
            ("client_assertion".to_owned(), assertion),
        ]
    };
    let post = |path: &'static str, token: String, assertion: String| {
        let gw = &gw;
        async move {
            let mut form = assertion_form(assertion);
            form.push(("token".into(), token));
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            gw.post(path, &pairs).await
        }
    };
    let introspected = post(
        "/introspect",
        access_token.to_owned(),
        inline_key.assertion(&client_id, &gw.issuer),
    )
    .await
    .ok_json();
    assert_eq!(introspected["active"], json!(true), "{introspected}");
    let revoked = post(
        "/revoke",
        tokens["refresh_token"].as_str().unwrap().to_owned(),
        inline_key.assertion(&client_id, &gw.issuer),
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());

    // Registration with a jwks_uri: the key set is fetched (through the guarded fetcher) when
    // the client first authenticates.
    let uri_key = ClientKey::new("uri-1");
    docs.serve("/registered/jwks.json", json!({"keys": [uri_key.jwk]}));
    let registered = gw
        .register(json!({
            "client_name": "Keys at a URL",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks_uri": docs.url("/registered/jwks.json"),
        }))
        .await
        .json();
    assert!(registered["client_secret"].is_null(), "{registered}");
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let (code, verifier) = authorized_code(&gw, &client_id, CALLBACK).await;
    let tokens = token_with_assertion(
        &gw,
        &client_id,
        &uri_key.assertion(&client_id, &token_endpoint),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    assert_eq!(docs.hits("/registered/jwks.json"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_machine_client_gets_client_credentials_tokens_with_an_assertion() {
    install_signing_provider();
    let gw = Gateway::start().await;
    let key = ClientKey::new("machine-1");
    let row = gw
        .admin
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client('Machine', '{}', '{mcp}', 'private_key_jwt', \
             '{client_credentials}', metadata => $1)",
            &[&json!({"jwks": {"keys": [key.jwk]}})],
        )
        .await
        .unwrap();
    let (client_id, secret): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(secret, None);
    let assertion = key.assertion(&client_id, &gw.url("/token"));
    let issued = token_with_assertion(
        &gw,
        &client_id,
        &assertion,
        &[("grant_type", "client_credentials"), ("scope", "mcp")],
    )
    .await
    .ok_json();
    assert_eq!(
        gw.claims(issued["access_token"].as_str().unwrap())["sub"],
        json!(client_id)
    );
    let again = token_with_assertion(
        &gw,
        &client_id,
        &assertion,
        &[("grant_type", "client_credentials"), ("scope", "mcp")],
    )
    .await;
    assert_invalid_client(&again, "replay");
    gw.stop().await;
}
