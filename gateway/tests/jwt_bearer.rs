//! The JWT bearer grant end to end (RFC 7523 §2.1): an enterprise IdP's Identity Assertion JWT
//! Authorization Grant (MCP Enterprise-Managed Authorization) and a Kubernetes workload's token,
//! presented at /token over HTTP. The IdP's key set is served over TLS by a loopback server with a
//! test CA and fetched by the gateway; the JWTs are signed by an independent JOSE implementation
//! (jsonwebtoken over RustCrypto). The issued tokens pass the guard and introspection.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::document_server::{DocumentServer, install_signing_provider};
use common::*;
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth_gateway::config::RouteConfig;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

/// An issuer's RSA key (RS256, what IdPs and Kubernetes sign with by default).
struct IssuerKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl IssuerKey {
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

    fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn metadata_of(http: &Http, base: &str) -> Value {
    http.get(
        &format!("{base}/.well-known/oauth-authorization-server"),
        &[],
    )
    .await
    .ok_json()
}

fn advertises_jwt_bearer(metadata: &Value) -> bool {
    metadata["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!(JWT_BEARER))
}

#[tokio::test]
async fn an_id_jag_and_a_workload_token_become_access_tokens_the_guard_accepts() {
    install_signing_provider();
    let docs = DocumentServer::start().await;
    let idp = docs.url("/idp");
    let idp_keys = docs.url("/idp/oauth2/v1/keys");
    let key = IssuerKey::new("idp-2026");
    docs.serve("/idp/oauth2/v1/keys", json!({"keys": [key.jwk]}));
    let upstream = RecordingUpstream::start().await;
    let gw = Gateway::start_with(Options {
        cimd: docs.cimd_config(),
        routes: vec![RouteConfig {
            prefix: "/mcp".into(),
            upstream: upstream.url.clone(),
            scopes: vec!["mcp".into()],
            ..RouteConfig::default()
        }],
        ..Options::default()
    })
    .await;
    let mcp = gw.mcp_url();

    // Off by default: not advertised, and refused like any grant this server does not know of.
    let before = metadata_of(&gw.http, &gw.base).await;
    assert!(!advertises_jwt_bearer(&before), "{before}");
    assert!(
        before
            .get("authorization_grant_profiles_supported")
            .is_none()
    );

    // The MCP client (confidential) whose IdP issues it ID-JAGs; the administrator trusts the IdP.
    let client = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    gw.admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'id-jag', ARRAY[$2], '{mcp,profile}', jwks_uri => $3,
                                             algorithms => '{RS256}')",
            &[&idp, &client.id, &idp_keys],
        )
        .await
        .unwrap();
    // A gateway reading the settings now advertises the grant and the profile.
    let (second, second_base) = gw.second().await;
    let after = metadata_of(&gw.http, &second_base).await;
    assert!(advertises_jwt_bearer(&after), "{after}");
    assert_eq!(
        after["authorization_grant_profiles_supported"],
        json!([ID_JAG_PROFILE])
    );
    second.shutdown(Duration::from_secs(1)).await;

    let id_jag_claims = |jti: &str| {
        let now = now();
        json!({"iss": idp, "sub": "00u-alice", "aud": gw.issuer, "client_id": client.id, "jti": jti,
               "iat": now, "exp": now + 300, "resource": mcp, "scope": "mcp"})
    };
    let id_jag = key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-1"));
    let request = |assertion: String| {
        vec![
            ("grant_type".to_owned(), JWT_BEARER.to_owned()),
            ("assertion".to_owned(), assertion),
        ]
    };
    let post = |pairs: Vec<(String, String)>, auth: Option<String>| {
        let http = &gw.http;
        let url = gw.url("/token");
        async move {
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            http.post_form(&url, &pairs, &headers).await
        }
    };
    let tokens = post(request(id_jag.clone()), Some(client.basic())).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], json!("Bearer"));
    assert_eq!(tokens["scope"], json!("mcp"));
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let claims = gw
        .verify(&access_token, Some(&mcp))
        .expect("bound to the ID-JAG's resource");
    assert_eq!(claims["sub"], json!("00u-alice"));
    assert_eq!(claims["client_id"], json!(client.id));
    assert_eq!(
        docs.hits("/idp/oauth2/v1/keys"),
        1,
        "the IdP's keys were fetched once"
    );

    // The guard lets it through to the MCP server; introspection says it is active.
    let through = gw
        .http
        .get(&mcp, &[("authorization", &bearer(&access_token))])
        .await;
    assert_eq!(through.status, StatusCode::OK, "{}", through.text());
    assert_eq!(upstream.count(), 1);
    let introspected = gw.introspect(&access_token, &client.basic()).await;
    assert_eq!(introspected["active"], json!(true), "{introspected}");
    assert_eq!(introspected["sub"], json!("00u-alice"));

    // Refusals, RFC 6749 §5.2-shaped and never cached.
    let replay = post(request(id_jag.clone()), Some(client.basic())).await;
    replay.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "replayed ID-JAG");
    assert_eq!(replay.header("cache-control"), Some("no-store"));
    assert!(replay.text().contains("already used"), "{}", replay.text());
    let untyped = key.sign(None, &id_jag_claims("jag-2"));
    post(request(untyped), Some(client.basic()))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "no typ");
    let foreign =
        IssuerKey::new("idp-2026").sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-3"));
    post(request(foreign), Some(client.basic()))
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "signed by another key",
        );
    let mut with_details = request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-4")));
    with_details.push(("authorization_details".into(), r#"[{"type":"x"}]"#.into()));
    post(with_details, Some(client.basic())).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "authorization_details",
    );
    post(
        vec![("grant_type".into(), JWT_BEARER.into())],
        Some(client.basic()),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request", "no assertion");
    let other = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    post(
        request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-5"))),
        Some(other.basic()),
    )
    .await
    .assert_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        "an unlisted client",
    );
    post(
        request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-6"))),
        Some(basic(&client.id, "wrong")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "wrong secret");

    // The client revokes its token (RFC 7009): that token alone, the user's grant stays.
    let revoked = gw.revoke(&access_token, &client.basic()).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert_eq!(
        gw.introspect(&access_token, &client.basic()).await["active"],
        json!(false)
    );
    let second_token = post(
        request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-7"))),
        Some(client.basic()),
    )
    .await
    .ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        gw.introspect(&second_token, &client.basic()).await["active"],
        json!(true)
    );

    // Workload identity: a public client made for the workload presents its service-account token.
    let cluster = docs.url("/cluster");
    let cluster_key = IssuerKey::new("sa-key");
    let workload = gw.public_client(&["mcp"]).await;
    gw.admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'workload', ARRAY[$2], '{mcp}', jwks => $3,
                                             algorithms => '{RS256}',
                                             subjects => '{system:serviceaccount:payments:*}')",
            &[&cluster, &workload, &json!({"keys": [cluster_key.jwk]})],
        )
        .await
        .unwrap();
    let sa_claims = |sub: &str| {
        let now = now();
        json!({"iss": cluster, "sub": sub, "aud": [gw.issuer], "iat": now, "nbf": now, "exp": now + 3600})
    };
    let mut pairs =
        request(cluster_key.sign(None, &sa_claims("system:serviceaccount:payments:api")));
    pairs.push(("client_id".into(), workload.clone()));
    let tokens = post(pairs, None).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let tokens = tokens.json();
    assert!(tokens.get("refresh_token").is_none());
    let workload_token = tokens["access_token"].as_str().unwrap().to_owned();
    let claims = gw.verify(&workload_token, Some(&mcp)).unwrap();
    assert_eq!(claims["sub"], json!("system:serviceaccount:payments:api"));
    assert_eq!(claims["client_id"], json!(workload));
    let through = gw
        .http
        .get(&mcp, &[("authorization", &bearer(&workload_token))])
        .await;
    assert_eq!(through.status, StatusCode::OK, "{}", through.text());
    let mut pairs =
        request(cluster_key.sign(None, &sa_claims("system:serviceaccount:default:api")));
    pairs.push(("client_id".into(), workload.clone()));
    post(pairs, None).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "a subject outside the rules",
    );
    gw.stop().await;
}
