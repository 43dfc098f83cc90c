//! private_key_jwt client authentication (RFC 7523 §2.2) at the extension's level: assertions
//! signed by an independent JOSE implementation (jsonwebtoken over RustCrypto) against clients
//! whose public keys are registered inline or fetched from a jwks_uri, every RFC 7523 §3 rule
//! refused when broken, and a jti good once.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;
use ring::signature::KeyPair;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;

const ISSUER: &str = "https://as.example";
const TOKEN_ENDPOINT: &str = "https://as.example/token";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client's signing key: what it signs with and the public JWK it publishes.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn rsa(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        // jsonwebtoken reads RSA keys as PKCS#1.
        let der = private.to_pkcs1_der().unwrap();
        let b64 = |b: Vec<u8>| URL_SAFE_NO_PAD.encode(b);
        Key {
            kid: kid.into(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(private.n().to_bytes_be()), "e": b64(private.e().to_bytes_be())}),
        }
    }

    fn ec(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        Key {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
                        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
        }
    }

    /// A JWT over `claims` with this key, naming its kid.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The claims of a good assertion by `client_id`: five minutes, a fresh jti, the token endpoint.
fn claims(client_id: &str) -> Value {
    let now = now();
    json!({"iss": client_id, "sub": client_id, "aud": TOKEN_ENDPOINT, "iat": now, "exp": now + 300,
           "jti": unique("jti")})
}

fn with(base: &Value, changes: Value) -> Value {
    changed(base, changes)
}

/// A database of its own (the settings change), with the issuer set.
async fn database() -> (TempDb, Client) {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, &format!("issuer => '{ISSUER}'")).await;
    (db, admin)
}

/// An administrator's private_key_jwt client of client_credentials with `metadata` (its keys).
async fn machine(admin: &Client, metadata: Value) -> String {
    let spec = ClientSpec {
        redirect_uris: vec![],
        auth_method: "private_key_jwt".into(),
        grant_types: vec!["client_credentials".into()],
        scopes: vec!["mcp".into()],
        metadata,
        ..ClientSpec::default()
    };
    let (id, secret) = try_create_client(admin, &spec).await.unwrap();
    assert_eq!(secret, None, "a private_key_jwt client gets no secret");
    id
}

async fn client_credentials(db: &Client, client_id: &str, assertion: &str) -> Value {
    scalar(
        db,
        "SELECT oauth.client_credentials_grant($1, $2, 'mcp', NULL)",
        &[&client_id, &assertion],
    )
    .await
}

fn assert_refused(answer: &Value, why: &str, what: &str) {
    assert_error(answer, "invalid_client", what);
    let description = answer["error_description"].as_str().unwrap();
    assert!(description.contains(why), "{what}: {description}");
}

#[tokio::test]
async fn an_assertion_authenticates_once_and_every_broken_rule_is_refused() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let rsa = Key::rsa("rsa-1");
    let ec = Key::ec("ec-1");
    let client_id = machine(&admin, json!({"jwks": {"keys": [rsa.jwk, ec.jwk]}})).await;

    // Good: RS256 and ES256, with the token endpoint or the issuer as audience.
    let good = rsa.sign(&claims(&client_id));
    let answer = client_credentials(&gw, &client_id, &good).await;
    assert_ok(&answer, "RS256 assertion");
    assert_eq!(answer["client_id"], json!(client_id));
    let by_issuer = ec.sign(&with(&claims(&client_id), json!({"aud": ISSUER})));
    assert_ok(
        &client_credentials(&gw, &client_id, &by_issuer).await,
        "ES256, aud issuer",
    );

    // Once only: the same assertion again (RFC 7523 §3 item 7).
    assert_refused(
        &client_credentials(&gw, &client_id, &good).await,
        "already used",
        "replayed jti",
    );

    let now = now();
    let base = claims(&client_id);
    let other_rsa = Key::rsa("rsa-1");
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        jsonwebtoken::encode(
            &header,
            &base,
            &EncodingKey::from_secret(b"the client's shared secret"),
        )
        .unwrap()
    };
    // alg none: a real assertion with its header swapped and its signature dropped.
    let alg_none = {
        let signed = rsa.sign(&base);
        let payload = signed.split('.').nth(1).unwrap().to_owned();
        format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"rsa-1"}"#)
        )
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", rsa.sign(&with(&base, json!({"iat": now - 600, "exp": now - 120}))), "expired"),
        ("not yet valid", rsa.sign(&with(&base, json!({"nbf": now + 600, "exp": now + 900}))), "nbf"),
        ("issued in the future", rsa.sign(&with(&base, json!({"iat": now + 600, "exp": now + 900}))), "iat"),
        ("lives too long", rsa.sign(&with(&base, json!({"exp": now + 2 * 3600}))), "at most"),
        ("wrong audience", rsa.sign(&with(&base, json!({"aud": "https://other.example/token"}))), "aud"),
        ("iss is not sub", rsa.sign(&with(&base, json!({"sub": "someone-else"}))), "iss and sub"),
        ("no jti", rsa.sign(&with(&base, json!({"jti": null}))), "jti"),
        ("unknown kid", Key::rsa("rsa-2").sign(&base), "no key with kid rsa-2"),
        ("HS256 with the public key's kid", hs256, "not accepted"),
        ("alg none", alg_none, "not accepted"),
        ("signed by another key under the same kid", other_rsa.sign(&base), "signature"),
        ("a secret instead of an assertion", "not-a-jwt".into(), "not a signed JWT"),
    ];
    for (what, assertion, why) in &cases {
        assert_refused(
            &client_credentials(&gw, &client_id, assertion).await,
            why,
            what,
        );
    }
    // None of the refusals used up anything: a good assertion still works, and only the two
    // accepted jtis are recorded.
    assert_ok(
        &client_credentials(&gw, &client_id, &ec.sign(&claims(&client_id))).await,
        "after the refusals",
    );
    let recorded: i64 = row_count(
        &admin,
        "oauth.client_assertion_jtis WHERE client_id = $1",
        &[&client_id],
    )
    .await;
    assert_eq!(recorded, 3);
    // Spent jtis go once they expire.
    assert!(cleanup_in(&admin, "2 hours").await >= 3);
    assert_eq!(
        row_count(
            &admin,
            "oauth.client_assertion_jtis WHERE client_id = $1",
            &[&client_id]
        )
        .await,
        0
    );
}

#[tokio::test]
async fn a_registered_signing_algorithm_binds_and_a_private_key_jwt_client_is_confidential() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let rsa = Key::rsa("rsa-1");
    let ec = Key::ec("ec-1");
    let client_id = machine(
        &admin,
        json!({"jwks": {"keys": [rsa.jwk, ec.jwk]}, "token_endpoint_auth_signing_alg": "ES256"}),
    )
    .await;
    assert_refused(
        &client_credentials(&gw, &client_id, &rsa.sign(&claims(&client_id))).await,
        "token_endpoint_auth_signing_alg ES256",
        "RS256 from an ES256 client",
    );
    let issued = client_credentials(&gw, &client_id, &ec.sign(&claims(&client_id))).await;
    assert_ok(&issued, "ES256");

    // Confidential: it may introspect (a public client may not), with a fresh assertion each time.
    let introspected: Value = scalar(
        &gw,
        "SELECT oauth.introspect($1, $2, NULL, $3::text::uuid, NULL)",
        &[
            &client_id,
            &ec.sign(&claims(&client_id)),
            &str_field(&issued, "grant_id"),
        ],
    )
    .await;
    assert_eq!(introspected["active"], json!(true), "{introspected}");
    // And may be given a token exchange policy, which public clients may not.
    execute(
        &admin,
        "SELECT oauth.set_token_exchange_policy($1, '{https://a.example}', '{https://b.example}')",
        &[&client_id],
    )
    .await;
}

#[tokio::test]
async fn registration_takes_keys_inline_or_at_a_jwks_uri_and_refuses_bad_ones() {
    let (db, _admin) = database().await;
    let gw = db.gateway().await;
    let key = Key::ec("ec-1");
    let base = json!({
        "client_name": "Key holder",
        "redirect_uris": ["https://app.example/cb"],
        "token_endpoint_auth_method": "private_key_jwt",
    });
    let inline = register(&gw, &with(&base, json!({"jwks": {"keys": [key.jwk]}}))).await;
    assert_ok(&inline, "inline jwks");
    assert!(inline["client_secret"].is_null(), "no secret: {inline}");
    assert_eq!(
        inline["token_endpoint_auth_method"],
        json!("private_key_jwt")
    );
    assert_eq!(inline["jwks"]["keys"][0]["kid"], json!("ec-1"));
    let at_uri = register(
        &gw,
        &with(&base, json!({"jwks_uri": "https://app.example/jwks.json"})),
    )
    .await;
    assert_ok(&at_uri, "jwks_uri");
    assert_eq!(at_uri["jwks_uri"], json!("https://app.example/jwks.json"));

    // The registered client authenticates at the code exchange with an assertion.
    let client = TestClient::registered(&inline, "https://app.example/cb");
    let auth = authorize(&gw, &client, &unique("user")).await;
    let assertion = key.sign(&claims(&client.id));
    let tokens = Exchange {
        client_secret: Some(&assertion),
        ..auth.exchange()
    }
    .run(&gw)
    .await;
    assert_ok(&tokens, "code exchange with an assertion");

    let mut private = key.jwk.clone();
    private["d"] = json!("c2VjcmV0");
    let hmac = json!({"kty": "oct", "k": "c2VjcmV0"});
    #[rustfmt::skip]
    let refused = [
        ("no keys", json!({}), "exactly one of jwks and jwks_uri"),
        ("both", json!({"jwks": {"keys": [key.jwk]}, "jwks_uri": "https://app.example/jwks.json"}), "exactly one"),
        ("a private key", json!({"jwks": {"keys": [private]}}), "private member d"),
        ("a symmetric key", json!({"jwks": {"keys": [hmac]}}), "symmetric"),
        ("http jwks_uri", json!({"jwks_uri": "http://app.example/jwks.json"}), "https"),
        ("HS256", json!({"jwks": {"keys": [key.jwk]}, "token_endpoint_auth_signing_alg": "HS256"}), "token_endpoint_auth_signing_alg"),
        ("keys with a secret", json!({"token_endpoint_auth_method": "client_secret_basic", "jwks": {"keys": [key.jwk]}}), "go with"),
    ];
    for (what, changes, why) in refused {
        let answer = register(&gw, &with(&base, changes)).await;
        assert_error(&answer, "invalid_client_metadata", what);
        assert!(
            answer["error_description"].as_str().unwrap().contains(why),
            "{what}: {answer}"
        );
    }

    // RFC 7592: the keys may be replaced, the method not switched to a secret.
    let token = str_field(&inline, "registration_access_token");
    let update = |changes: Value| with(&with(&base, json!({"client_id": client.id})), changes);
    let rotated: Value = scalar(
        &gw,
        "SELECT oauth.update_registration($1, $2, $3)",
        &[
            &client.id,
            &token,
            &update(json!({"jwks": {"keys": [Key::ec("ec-2").jwk]}})),
        ],
    )
    .await;
    assert_eq!(
        rotated["jwks"]["keys"][0]["kid"],
        json!("ec-2"),
        "{rotated}"
    );
    let switched: Value = scalar(
        &gw,
        "SELECT oauth.update_registration($1, $2, $3)",
        &[
            &client.id,
            &token,
            &update(json!({"token_endpoint_auth_method": "client_secret_basic"})),
        ],
    )
    .await;
    assert_error(&switched, "invalid_client_metadata", "switch to a secret");
}

#[tokio::test]
async fn keys_at_a_jwks_uri_are_asked_for_stored_and_refetched_for_an_unknown_kid() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let key = Key::ec("ec-1");
    let jwks_uri = "https://keys.example/jwks.json";
    let client_id = machine(&admin, json!({"jwks_uri": jwks_uri})).await;
    let to_fetch = |assertion: String| {
        let gw = &gw;
        let client_id = client_id.clone();
        async move {
            scalar::<Option<String>>(
                gw,
                "SELECT oauth.client_jwks_to_fetch($1, $2)",
                &[&client_id, &assertion],
            )
            .await
        }
    };

    // No copy yet: refused, and the gateway is told where to fetch.
    let first = key.sign(&claims(&client_id));
    assert_refused(
        &client_credentials(&gw, &client_id, &first).await,
        "no keys",
        "before a fetch",
    );
    assert_eq!(to_fetch(first.clone()).await.as_deref(), Some(jwks_uri));

    // A fetched set that is not public keys is refused and remembered as the failure.
    let mut private = key.jwk.clone();
    private["d"] = json!("c2VjcmV0");
    let stored: Value = scalar(
        &gw,
        "SELECT oauth.store_client_jwks($1, $2, $3, now() + interval '1 hour', now() + interval '1 minute')",
        &[&client_id, &jwks_uri, &json!({"keys": [private]})],
    )
    .await;
    assert_error(&stored, "invalid_client", "private key set");
    assert_eq!(to_fetch(first.clone()).await, None, "negatively cached");

    // The good set: stored, and the assertion authenticates.
    let stored: Value = scalar(
        &gw,
        "SELECT oauth.store_client_jwks($1, $2, $3, now() + interval '1 hour', now() + interval '1 minute')",
        &[&client_id, &jwks_uri, &json!({"keys": [key.jwk]})],
    )
    .await;
    assert_ok(&stored, "store");
    assert_ok(
        &client_credentials(&gw, &client_id, &first).await,
        "with the fetched keys",
    );
    assert_eq!(
        to_fetch(key.sign(&claims(&client_id))).await,
        None,
        "fresh copy with the key"
    );

    // The client rotates: an unknown kid asks for a refetch, but not twice within a minute.
    let rotated = Key::ec("ec-2");
    let assertion = rotated.sign(&claims(&client_id));
    assert_eq!(
        to_fetch(assertion.clone()).await,
        None,
        "fetched less than a minute ago"
    );
    execute(
        &admin,
        "UPDATE oauth.client_jwks SET attempted_at = now() - interval '2 minutes' WHERE client_id = $1",
        &[&client_id],
    )
    .await;
    assert_eq!(to_fetch(assertion.clone()).await.as_deref(), Some(jwks_uri));
    let stored: Value = scalar(
        &gw,
        "SELECT oauth.store_client_jwks($1, $2, $3, now() + interval '1 hour', now() + interval '1 minute')",
        &[&client_id, &jwks_uri, &json!({"keys": [rotated.jwk]})],
    )
    .await;
    assert_ok(&stored, "store the rotated set");
    assert_ok(
        &client_credentials(&gw, &client_id, &assertion).await,
        "rotated key",
    );
    // The old key is gone with the old set.
    assert_refused(
        &client_credentials(&gw, &client_id, &key.sign(&claims(&client_id))).await,
        "no key with kid ec-1",
        "retired key",
    );

    // A refetch that fails keeps the last good copy serving until the retry.
    execute(
        &admin,
        "UPDATE oauth.client_jwks SET fresh_until = now() WHERE client_id = $1",
        &[&client_id],
    )
    .await;
    assert_eq!(
        to_fetch(assertion.clone()).await.as_deref(),
        Some(jwks_uri),
        "stale"
    );
    execute(
        &gw,
        "SELECT oauth.record_client_jwks_failure($1, $2, 'answered 503', now() + interval '1 minute')",
        &[&client_id, &jwks_uri],
    )
    .await;
    assert_ok(
        &client_credentials(&gw, &client_id, &rotated.sign(&claims(&client_id))).await,
        "last good copy",
    );
}

#[tokio::test]
async fn chatgpts_metadata_document_makes_a_private_key_jwt_client() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let client_id = "https://chatgpt.com/oauth/0123456789abcdef/client.json";
    let document = json!({
        "client_id": client_id,
        "client_name": "ChatGPT",
        "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
        "token_endpoint_auth_signing_alg": "RS256",
        "jwks_uri": "https://chatgpt.com/oauth/jwks.json",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]
    });
    let store = |document: Value| {
        let gw = &gw;
        async move {
            scalar::<Value>(
                gw,
                "SELECT oauth.store_client_document($1, $2, now() + interval '1 hour', now() + interval '1 minute')",
                &[&client_id, &document],
            )
            .await
        }
    };
    let method = || async {
        scalar::<String>(
            &admin,
            "SELECT token_endpoint_auth_method FROM oauth.clients WHERE client_id = $1",
            &[&client_id],
        )
        .await
    };
    assert_ok(&store(document.clone()).await, "ChatGPT's document");
    assert_eq!(method().await, "private_key_jwt");

    // Offered but not declared, with keys: still private_key_jwt. Without keys: none.
    assert_ok(
        &store(with(
            &document,
            json!({"token_endpoint_auth_method": "none"}),
        ))
        .await,
        "offered",
    );
    assert_eq!(method().await, "private_key_jwt");
    let public = with(
        &document,
        json!({"token_endpoint_auth_method": null, "jwks_uri": null, "token_endpoint_auth_signing_alg": null}),
    );
    assert_ok(&store(public).await, "no keys");
    assert_eq!(method().await, "none");
    // Declared without keys, or a secret method offered alone: refused.
    let keyless = with(&document, json!({"jwks_uri": null}));
    assert_error(
        &store(keyless).await,
        "invalid_client_metadata",
        "declared without keys",
    );
    let secret = with(
        &document,
        json!({"token_endpoint_auth_method": "client_secret_basic", "token_endpoint_auth_methods_supported": ["client_secret_basic"]}),
    );
    assert_error(
        &store(secret).await,
        "invalid_client_metadata",
        "secret method",
    );
}
