//! ID tokens in each client's `id_token_signed_response_alg` (OIDC Registration §2, default
//! RS256) and the discovery document that promises them (OpenID Connect Discovery §3: RS256 must
//! be listed). Every ID token is checked as a relying party checks it: with the JWKS key its
//! header names, verified here with ring from the published JWK, not with the gateway's code.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use hyper::StatusCode;
use oauth_gateway::keys::Alg;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

/// The JWKS entry named by `jwt`'s `kid`, once the signature verifies with it: the header and
/// the claims.
async fn verified(gw: &Gateway, jwt: &str) -> (Value, Value) {
    let header = jwt_segment(jwt, 0);
    let jwks = gw.get("/.well-known/jwks.json").await.ok_json();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .unwrap_or_else(|| panic!("the kid of {header} in the JWKS {jwks}"))
        .clone();
    assert_eq!(key["alg"], header["alg"], "the key's alg is the token's");
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let part = |name: &str| URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap();
    let message = signed.as_bytes();
    let outcome = match header["alg"].as_str().unwrap() {
        "RS256" => RsaPublicKeyComponents {
            n: part("n"),
            e: part("e"),
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, message, &signature),
        "ES256" => {
            let point = [vec![4], part("x"), part("y")].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, &signature)
        }
        "EdDSA" => UnparsedPublicKey::new(&ED25519, part("x")).verify(message, &signature),
        other => panic!("unexpected alg {other}"),
    };
    assert!(outcome.is_ok(), "{jwt} does not verify with {key}");
    (header, jwt_segment(jwt, 1))
}

/// OIDC Core §3.1.3.6, computed here: the left half of the access token's hash, SHA-512 for
/// Ed25519 and SHA-256 for the others.
fn expected_at_hash(alg: &str, access_token: &str) -> String {
    let digest = match alg {
        "EdDSA" => Sha512::digest(access_token.as_bytes()).to_vec(),
        _ => Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// A native public client registered at `/register` with `extra` fields: its registration.
async fn register(gw: &Gateway, extra: Value) -> Value {
    let mut metadata = json!({
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "client_name": "ID token client",
    });
    metadata
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    gw.register(metadata).await.json_if(StatusCode::CREATED)
}

/// The code flow with `openid` for `client_id`: the token response.
async fn signed_in(gw: &Gateway, client_id: &str) -> Value {
    let authorization = Authorization {
        scope: "openid mcp",
        nonce: "n-0S6_WzA2Mj",
        ..Authorization::new(client_id)
    };
    gw.code_flow(&authorization).await.ok_json()
}

/// The ID token of `tokens`, verified, in `alg`, with the claims and `at_hash` a relying party
/// checks; its header.
async fn id_token_in(gw: &Gateway, tokens: &Value, client_id: &str, alg: &str) -> Value {
    let id_token = tokens["id_token"].as_str().expect("an ID token for openid");
    let (header, claims) = verified(gw, id_token).await;
    assert_eq!(header["alg"], alg, "{header}");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], json!(gw.issuer));
    assert_eq!(claims["aud"], json!(client_id));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    let access_token = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        claims["at_hash"],
        json!(expected_at_hash(alg, access_token)),
        "at_hash with {alg}'s hash"
    );
    header
}

/// The access token of `tokens` is signed by the first configured key, whatever the ID token's.
async fn access_token_on_first_key(gw: &Gateway, tokens: &Value) {
    let access_token = tokens["access_token"].as_str().unwrap();
    let (header, _) = verified(gw, access_token).await;
    let jwks = gw.get("/.well-known/jwks.json").await.ok_json();
    assert_eq!(header["kid"], jwks["keys"][0]["kid"], "the first key signs");
    assert_eq!(header["typ"], "at+jwt");
    gw.claims(access_token);
}

#[tokio::test]
async fn discovery_lists_rs256_first_then_every_loaded_algorithm() {
    let gw = Gateway::start().await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let doc = gw.get_at_root(path, &[]).await.ok_json();
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["RS256", "ES256"]),
            "{path}: RS256 is required (OpenID Connect Discovery §3) and listed first"
        );
    }
    gw.stop().await;

    let three = Gateway::start_with(Options {
        algs: vec![Alg::EdDSA, Alg::ES256, Alg::EdDSA, Alg::RS256],
        ..Options::default()
    })
    .await;
    let doc = three
        .get_at_root("/.well-known/openid-configuration", &[])
        .await
        .ok_json();
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256", "EdDSA", "ES256"]),
        "each algorithm once, RS256 first, then in the keys' order"
    );
    three.stop().await;
}

#[tokio::test]
async fn a_client_registered_without_an_algorithm_gets_rs256_id_tokens() {
    let gw = Gateway::start().await;
    let registered = register(&gw, json!({})).await;
    let client_id = registered["client_id"].as_str().unwrap();
    let tokens = signed_in(&gw, client_id).await;
    let header = id_token_in(&gw, &tokens, client_id, "RS256").await;
    let jwks = gw.get("/.well-known/jwks.json").await.ok_json();
    assert_eq!(header["kid"], jwks["keys"][1]["kid"], "the RS256 key's kid");
    access_token_on_first_key(&gw, &tokens).await;
    // Refreshing issues no ID token (rotation only), whatever the algorithm.
    let refreshed = gw
        .refresh(client_id, tokens["refresh_token"].as_str().unwrap())
        .await
        .ok_json();
    assert!(refreshed.get("id_token").is_none(), "{refreshed}");
    access_token_on_first_key(&gw, &refreshed).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_client_registered_with_es256_gets_es256_id_tokens() {
    let gw = Gateway::start_with(Options {
        // RS256 first: the ES256 ID token must not be the first key's by accident.
        algs: vec![Alg::RS256, Alg::ES256],
        ..Options::default()
    })
    .await;
    let registered = register(&gw, json!({"id_token_signed_response_alg": "ES256"})).await;
    assert_eq!(registered["id_token_signed_response_alg"], "ES256");
    let client_id = registered["client_id"].as_str().unwrap();
    let read = gw
        .http
        .with_bearer(
            "GET",
            registered["registration_client_uri"].as_str().unwrap(),
            registered["registration_access_token"].as_str().unwrap(),
            None,
        )
        .await
        .ok_json();
    assert_eq!(read["id_token_signed_response_alg"], "ES256", "{read}");
    let tokens = signed_in(&gw, client_id).await;
    let header = id_token_in(&gw, &tokens, client_id, "ES256").await;
    let jwks = gw.get("/.well-known/jwks.json").await.ok_json();
    assert_eq!(header["kid"], jwks["keys"][1]["kid"]);
    let access_header = jwt_segment(tokens["access_token"].as_str().unwrap(), 0);
    assert_eq!(
        access_header["alg"], "RS256",
        "access tokens stay on the first key"
    );
    access_token_on_first_key(&gw, &tokens).await;
    gw.stop().await;
}

#[tokio::test]
async fn eddsa_id_tokens_where_the_gateway_holds_an_ed25519_key() {
    let gw = Gateway::start_with(Options {
        algs: vec![Alg::ES256, Alg::RS256, Alg::EdDSA],
        ..Options::default()
    })
    .await;
    let registered = register(&gw, json!({"id_token_signed_response_alg": "EdDSA"})).await;
    let client_id = registered["client_id"].as_str().unwrap();
    let tokens = signed_in(&gw, client_id).await;
    id_token_in(&gw, &tokens, client_id, "EdDSA").await;
    access_token_on_first_key(&gw, &tokens).await;
    gw.stop().await;
}

#[tokio::test]
async fn unsupported_algorithms_are_refused_at_registration_and_update() {
    let gw = Gateway::start().await;
    for (alg, why) in [
        (json!("EdDSA"), "no Ed25519 key on this gateway"),
        (json!("none"), "unsigned ID tokens"),
        (json!("HS256"), "a symmetric algorithm"),
        (json!("PS256"), "an algorithm nothing here signs with"),
        (json!("rs256"), "algorithm names are case-sensitive"),
        (json!(["RS256"]), "not a string"),
        (json!(null), "not a string"),
    ] {
        let resp = gw
            .register(json!({
                "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "id_token_signed_response_alg": alg,
            }))
            .await;
        resp.assert_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", why);
        let description = resp.json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            description.contains("id_token_signed_response_alg"),
            "{why}: {description}"
        );
    }

    // RFC 7592 update: the same rule.
    let registered = register(&gw, json!({})).await;
    let uri = registered["registration_client_uri"].as_str().unwrap();
    let token = registered["registration_access_token"].as_str().unwrap();
    let mut update = json!({
        "client_id": registered["client_id"],
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
    });
    for alg in ["EdDSA", "none"] {
        update["id_token_signed_response_alg"] = json!(alg);
        let resp = gw
            .http
            .with_bearer("PUT", uri, token, Some(update.clone()))
            .await;
        resp.assert_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", alg);
    }
    update["id_token_signed_response_alg"] = json!("ES256");
    let updated = gw
        .http
        .with_bearer("PUT", uri, token, Some(update))
        .await
        .ok_json();
    assert_eq!(updated["id_token_signed_response_alg"], "ES256");
    let client_id = registered["client_id"].as_str().unwrap();
    let tokens = signed_in(&gw, client_id).await;
    id_token_in(&gw, &tokens, client_id, "ES256").await;
    gw.stop().await;
}

#[tokio::test]
async fn device_flow_id_tokens_follow_the_administrators_setting() {
    let gw = Gateway::start().await;
    let client_id: String = gw
        .sql_value(
            "SELECT client_id FROM oauth.create_client('TV', '{}', '{openid,mcp}', 'none', \
             '{urn:ietf:params:oauth:grant-type:device_code}', 'native', \
             metadata => '{\"id_token_signed_response_alg\": \"ES256\"}')",
            &[],
        )
        .await;
    let started = gw
        .post(
            "/device_authorization",
            &[("client_id", client_id.as_str()), ("scope", "openid mcp")],
        )
        .await
        .ok_json();
    let page = gw
        .http
        .get(started["verification_uri_complete"].as_str().unwrap(), &[])
        .await
        .text();
    let approved = gw
        .post(
            "/device",
            &[
                ("user_code", form_field(&page, "user_code").as_str()),
                ("csrf_token", form_field(&page, "csrf_token").as_str()),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    let tokens = gw
        .token(&TokenRequest {
            grant_type: DEVICE_GRANT,
            device_code: started["device_code"].as_str().unwrap(),
            client_id: &client_id,
            ..TokenRequest::default()
        })
        .await
        .ok_json();
    let id_token = tokens["id_token"].as_str().expect("an ID token for openid");
    let (header, claims) = verified(&gw, id_token).await;
    assert_eq!(header["alg"], "ES256");
    assert_eq!(claims["aud"], json!(client_id));
    assert_eq!(
        claims["at_hash"],
        json!(expected_at_hash(
            "ES256",
            tokens["access_token"].as_str().unwrap()
        ))
    );

    // An administrator's default is RS256 as well.
    let plain: String = gw
        .sql_value(
            "SELECT client_id FROM oauth.create_client('Plain', $1, '{openid,mcp}', 'none', \
             application_type => 'native')",
            &[&vec![REDIRECT]],
        )
        .await;
    let tokens = signed_in(&gw, &plain).await;
    id_token_in(&gw, &tokens, &plain, "RS256").await;
    gw.stop().await;
}

#[tokio::test]
async fn without_an_rs256_key_the_first_key_signs_id_tokens() {
    let gw = Gateway::start_with(Options {
        algs: vec![Alg::ES256],
        ..Options::default()
    })
    .await;
    let doc = gw
        .get_at_root("/.well-known/openid-configuration", &[])
        .await
        .ok_json();
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let refused = gw
        .register(json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "id_token_signed_response_alg": "RS256",
        }))
        .await;
    refused.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        "RS256 asked of a gateway without an RSA key",
    );
    // A client registered without the field (so RS256) still gets an ID token: the first key's.
    let registered = register(&gw, json!({})).await;
    let client_id = registered["client_id"].as_str().unwrap();
    let tokens = signed_in(&gw, client_id).await;
    id_token_in(&gw, &tokens, client_id, "ES256").await;
    gw.stop().await;
}
