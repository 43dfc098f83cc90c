//! The JWT bearer grant (RFC 7523 §2.1) from trusted issuers, at the extension's level, over a real
//! connection: Identity Assertion JWT Authorization Grants (draft-ietf-oauth-identity-assertion-authz-grant,
//! MCP Enterprise-Managed Authorization) and workload tokens, every JWT signed by an independent JOSE
//! implementation (jsonwebtoken over RustCrypto). Each rule is shown refusing what breaks it.

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
const IDP: &str = "https://idp.example";
const CLUSTER: &str = "https://kubernetes.default.svc.cluster.local";
const MCP: &str = "https://mcp.example/";
const OTHER_MCP: &str = "https://other-mcp.example/";
const ID_JAG: &str = "oauth-id-jag+jwt";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An issuer's signing key: what it signs with and the public JWK it publishes.
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl Key {
    fn rsa(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
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

    fn jwks(&self) -> Value {
        json!({"keys": [self.jwk]})
    }

    /// A JWT over `claims` with this key, naming its kid, typed `typ` (None: no typ header).
    fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn id_jag(&self, claims: &Value) -> String {
        self.sign(Some(ID_JAG), claims)
    }
}

/// The claims of a good ID-JAG for `client_id` (draft §3.1): five minutes, a fresh jti.
fn id_jag_claims(client_id: &str) -> Value {
    let now = now();
    json!({"iss": IDP, "sub": "00u-alice", "aud": ISSUER, "client_id": client_id, "jti": unique("jti"),
           "iat": now, "exp": now + 300, "resource": MCP, "scope": "mcp profile",
           "email": "alice@corp.example", "email_verified": true})
}

/// A database of its own (settings and issuers change), with the issuer set and two resources.
async fn database() -> (TempDb, Client) {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, &format!("issuer => '{ISSUER}'")).await;
    for resource in [MCP, OTHER_MCP] {
        admin
            .execute("SELECT oauth.add_resource($1)", &[&resource])
            .await
            .unwrap();
    }
    (db, admin)
}

async fn grant(
    db: &Client,
    client: &TestClient,
    assertion: &str,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Value {
    scalar(
        db,
        "SELECT oauth.jwt_bearer_grant($1, $2, $3, $4, $5)",
        &[&client.id, &client.secret(), &assertion, &scope, &resource],
    )
    .await
}

fn assert_refused(answer: &Value, error: &str, why: &str, what: &str) {
    assert_error(answer, error, what);
    let description = answer["error_description"].as_str().unwrap();
    assert!(description.contains(why), "{what}: {description}");
}

/// Trusts `IDP` for ID-JAGs presented by `client`, with `key`.
async fn trust_idp(admin: &Client, client: &TestClient, key: &Key, user_claim: &str) {
    admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'id-jag', ARRAY[$2], '{mcp,profile}', jwks => $3,
                                             algorithms => '{RS256}', user_claim => $4)",
            &[&IDP, &client.id, &key.jwks(), &user_claim],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_id_jag_gets_a_user_token_for_its_resource_and_nothing_else() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let client = confidential_client(&admin).await;
    let key = Key::rsa("idp-1");

    // Off until an issuer is trusted: neither the grant nor the profile is advertised, and a grant is refused.
    let settings: Value = scalar(&gw, "SELECT oauth.settings()", &[]).await;
    assert!(
        !settings["grant_types_supported"]
            .to_string()
            .contains("jwt-bearer"),
        "{settings}"
    );
    assert!(
        settings
            .get("authorization_grant_profiles_supported")
            .is_none()
    );
    assert_refused(
        &grant(
            &gw,
            &client,
            &key.id_jag(&id_jag_claims(&client.id)),
            None,
            None,
        )
        .await,
        "invalid_grant",
        "not trusted",
        "no trusted issuer",
    );

    trust_idp(&admin, &client, &key, "sub").await;
    let settings: Value = scalar(&gw, "SELECT oauth.settings()", &[]).await;
    assert!(
        settings["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("urn:ietf:params:oauth:grant-type:jwt-bearer")),
        "{settings}"
    );
    assert_eq!(
        settings["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );

    // The happy path: the user's token for the ID-JAG's resource, scopes requested ∩ asserted ∩
    // allowed (openid asked for and asserted, but never issued here; email asserted, not allowed).
    let claims = changed(
        &id_jag_claims(&client.id),
        json!({"scope": "mcp profile email openid"}),
    );
    let answer = grant(
        &gw,
        &client,
        &key.id_jag(&claims),
        Some("mcp email openid"),
        Some(MCP),
    )
    .await;
    assert_ok(&answer, "good ID-JAG");
    assert_eq!(answer["user_id"], json!("00u-alice"));
    assert_eq!(answer["client_id"], json!(client.id));
    assert_eq!(answer["scope"], json!("mcp"));
    assert_eq!(answer["resource"], json!(MCP));
    assert_eq!(answer["subject_type"], json!("user"));
    assert_eq!(answer["refresh_token"], Value::Null, "no refresh token");
    assert_eq!(answer["family_id"], Value::Null);
    // No scope requested: what is asserted and allowed.
    let answer = grant(
        &gw,
        &client,
        &key.id_jag(&id_jag_claims(&client.id)),
        None,
        None,
    )
    .await;
    assert_eq!(answer["scope"], json!("mcp profile"), "{answer}");
    // The same user's grant, revocable like any other.
    let grant_id = uuid_field(&answer, "grant_id");
    assert!(grant_live(&admin, grant_id).await);

    // Once only: the same ID-JAG again (its jti).
    let once = key.id_jag(&id_jag_claims(&client.id));
    assert_ok(&grant(&gw, &client, &once, None, None).await, "first use");
    assert_refused(
        &grant(&gw, &client, &once, None, None).await,
        "invalid_grant",
        "already used",
        "jti replay",
    );

    let now = now();
    let base = id_jag_claims(&client.id);
    let other_key = Key::rsa("idp-1");
    let es256 = Key::ec("idp-1");
    let alg_none = {
        let signed = key.id_jag(&base);
        let payload = signed.split('.').nth(1).unwrap().to_owned();
        format!(
            "{}.{payload}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"oauth-id-jag+jwt","kid":"idp-1"}"#)
        )
    };
    let hs256 = {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ID_JAG.into());
        header.kid = Some("idp-1".into());
        jsonwebtoken::encode(&header, &base, &EncodingKey::from_secret(b"guessable")).unwrap()
    };
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("alg none", alg_none, "invalid_grant", "not accepted"),
        ("HS256", hs256, "invalid_grant", "not accepted"),
        ("an algorithm the issuer does not use", es256.id_jag(&base), "invalid_grant", "not accepted"),
        ("bad signature", other_key.id_jag(&base), "invalid_grant", "signature"),
        ("not typed as an ID-JAG", key.sign(Some("JWT"), &base), "invalid_grant", "typ"),
        ("untyped", key.sign(None, &base), "invalid_grant", "typ"),
        ("another issuer", key.id_jag(&changed(&base, json!({"iss": "https://evil.example"}))), "invalid_grant", "not trusted"),
        ("another audience", key.id_jag(&changed(&base, json!({"aud": "https://other-as.example"}))), "invalid_grant", "aud"),
        ("several audiences", key.id_jag(&changed(&base, json!({"aud": [ISSUER, "https://other-as.example"]}))), "invalid_grant", "several audiences"),
        ("issued to another client", key.id_jag(&changed(&base, json!({"client_id": "someone-else"}))), "invalid_grant", "another client"),
        ("no client_id", key.id_jag(&changed(&base, json!({"client_id": null}))), "invalid_grant", "client_id"),
        ("no sub", key.id_jag(&changed(&base, json!({"sub": null}))), "invalid_grant", "sub"),
        ("no jti", key.id_jag(&changed(&base, json!({"jti": null}))), "invalid_grant", "jti"),
        ("no iat", key.id_jag(&changed(&base, json!({"iat": null}))), "invalid_grant", "iat"),
        ("expired", key.id_jag(&changed(&base, json!({"iat": now - 900, "exp": now - 300}))), "invalid_grant", "expired"),
        ("not yet valid", key.id_jag(&changed(&base, json!({"nbf": now + 600, "exp": now + 900}))), "invalid_grant", "nbf"),
        ("several resources", key.id_jag(&changed(&base, json!({"resource": [MCP, OTHER_MCP]}))), "invalid_grant", "one resource"),
        ("issued in the future", key.id_jag(&changed(&base, json!({"iat": now + 600, "exp": now + 900}))), "invalid_grant", "future"),
        ("lives too long", key.id_jag(&changed(&base, json!({"exp": now + 7200}))), "invalid_grant", "at most"),
        ("key-bound (cnf)", key.id_jag(&changed(&base, json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}))), "invalid_grant", "cnf"),
        ("authorization_details", key.id_jag(&changed(&base, json!({"authorization_details": [{"type": "payment"}]}))), "invalid_grant", "authorization_details"),
        ("a resource nobody here serves", key.id_jag(&changed(&base, json!({"resource": "https://elsewhere.example/"}))), "invalid_target", "resource"),
        ("scopes none of which are allowed", key.id_jag(&changed(&base, json!({"scope": "email"}))), "invalid_scope", "no requested scope"),
        ("not a JWT", "not-a-jwt".into(), "invalid_grant", "not trusted"),
    ];
    for (what, assertion, error, why) in &cases {
        assert_refused(
            &grant(&gw, &client, assertion, None, None).await,
            error,
            why,
            what,
        );
    }
    // The request's resource must be the ID-JAG's.
    assert_refused(
        &grant(&gw, &client, &key.id_jag(&base), None, Some(OTHER_MCP)).await,
        "invalid_target",
        "not the one the assertion names",
        "request resource differs",
    );
    // The request may not widen the scopes.
    assert_refused(
        &grant(
            &gw,
            &client,
            &key.id_jag(&id_jag_claims(&client.id)),
            Some("email"),
            None,
        )
        .await,
        "invalid_scope",
        "no requested scope",
        "scope outside the assertion",
    );
    // Only the listed clients, and only authenticated.
    let other = confidential_client(&admin).await;
    assert_refused(
        &grant(
            &gw,
            &other,
            &key.id_jag(&id_jag_claims(&other.id)),
            None,
            None,
        )
        .await,
        "unauthorized_client",
        "may not present",
        "unlisted client",
    );
    let wrong_secret = TestClient {
        secret: Some("wrong".into()),
        ..client.clone()
    };
    assert_error(
        &grant(
            &gw,
            &wrong_secret,
            &key.id_jag(&id_jag_claims(&client.id)),
            None,
            None,
        )
        .await,
        "invalid_client",
        "bad client secret",
    );
    // None of the refusals used up its jti: the same claims signed right still work.
    assert_ok(
        &grant(&gw, &client, &key.id_jag(&base), None, None).await,
        "after the refusals",
    );
    let recorded = row_count(
        &admin,
        "oauth.assertion_grant_jtis WHERE issuer = $1",
        &[&IDP],
    )
    .await;
    assert_eq!(recorded, 4, "only the accepted grants' jtis are recorded");
    let created = row_count(
        &admin,
        "oauth.events WHERE kind = 'assertion_grant_created' AND user_id = '00u-alice'",
        &[],
    )
    .await;
    assert_eq!(
        created, 1,
        "one grant for the user and client, recorded once"
    );
}

#[tokio::test]
async fn a_verified_email_names_the_user_when_the_issuer_says_so() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let client = confidential_client(&admin).await;
    let key = Key::ec("idp-ec");
    admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'id-jag', ARRAY[$2], '{mcp}', jwks => $3,
                                             algorithms => '{ES256}', user_claim => 'email',
                                             allowed_resources => ARRAY[$4])",
            &[&IDP, &client.id, &key.jwks(), &MCP],
        )
        .await
        .unwrap();
    let answer = grant(
        &gw,
        &client,
        &key.id_jag(&id_jag_claims(&client.id)),
        None,
        None,
    )
    .await;
    assert_ok(&answer, "verified email");
    assert_eq!(answer["user_id"], json!("alice@corp.example"));
    let unverified = changed(&id_jag_claims(&client.id), json!({"email_verified": false}));
    assert_refused(
        &grant(&gw, &client, &key.id_jag(&unverified), None, None).await,
        "invalid_grant",
        "verified email",
        "unverified email",
    );
    // The issuer's allowed resources bind: another listed resource is refused.
    let elsewhere = changed(&id_jag_claims(&client.id), json!({"resource": OTHER_MCP}));
    assert_error(
        &grant(&gw, &client, &key.id_jag(&elsewhere), None, None).await,
        "invalid_target",
        "resource outside the issuer's",
    );
}

/// A public client an administrator made for a workload: its only credential is the workload's token.
async fn workload_client(admin: &Client) -> TestClient {
    create_client(
        admin,
        ClientSpec {
            scopes: vec!["mcp".into()],
            ..ClientSpec::public_native()
        },
    )
    .await
}

fn workload_claims(sub: &str) -> Value {
    let now = now();
    json!({"iss": CLUSTER, "sub": sub, "aud": [ISSUER], "iat": now, "nbf": now, "exp": now + 3600,
           "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api"}}})
}

#[tokio::test]
async fn a_workload_token_gets_a_client_token_under_subject_rules() {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let client = workload_client(&admin).await;
    let key = Key::rsa("cluster-1");
    admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'workload', ARRAY[$2], '{mcp}', jwks => $3,
                                             algorithms => '{RS256}', allowed_resources => ARRAY[$4],
                                             subjects => '{system:serviceaccount:payments:*,spiffe://corp.example/billing}')",
            &[&CLUSTER, &client.id, &key.jwks(), &MCP],
        )
        .await
        .unwrap();
    // A workload issuer turns the grant on, but not the ID-JAG profile.
    let settings: Value = scalar(&gw, "SELECT oauth.settings()", &[]).await;
    assert!(
        settings["grant_types_supported"]
            .to_string()
            .contains("jwt-bearer")
    );
    assert!(
        settings
            .get("authorization_grant_profiles_supported")
            .is_none()
    );

    // A Kubernetes service-account token (no typ, no jti, audience as an array of one).
    let token = key.sign(None, &workload_claims("system:serviceaccount:payments:api"));
    let answer = grant(&gw, &client, &token, None, None).await;
    assert_ok(&answer, "service account token");
    assert_eq!(
        answer["user_id"],
        json!("system:serviceaccount:payments:api")
    );
    assert_eq!(answer["subject_type"], json!("client"));
    assert_eq!(answer["client_id"], json!(client.id));
    assert_eq!(answer["scope"], json!("mcp"));
    assert_eq!(answer["resource"], json!(MCP));
    assert_eq!(answer["refresh_token"], Value::Null);
    // Without a jti a workload token is a reusable credential until it expires (RFC 7523 §3
    // lets a server refuse seen jtis; there is none to see).
    assert_ok(&grant(&gw, &client, &token, None, None).await, "again");
    // A SPIFFE JWT-SVID, with a jti: once only.
    let svid = key.sign(
        Some("JWT"),
        &changed(
            &workload_claims("spiffe://corp.example/billing"),
            json!({"jti": unique("svid"), "aud": ISSUER}),
        ),
    );
    assert_ok(
        &grant(&gw, &client, &svid, Some("mcp"), Some(MCP)).await,
        "SVID",
    );
    assert_refused(
        &grant(&gw, &client, &svid, None, None).await,
        "invalid_grant",
        "already used",
        "SVID replay",
    );

    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("a subject outside the rules", key.sign(None, &workload_claims("system:serviceaccount:default:api")), "invalid_grant", "subject"),
        ("a prefix is no exact match", key.sign(None, &workload_claims("spiffe://corp.example/billing-2")), "invalid_grant", "subject"),
        ("typed as an ID-JAG", key.id_jag(&workload_claims("system:serviceaccount:payments:api")), "invalid_grant", "typ"),
        ("expired", key.sign(None, &changed(&workload_claims("system:serviceaccount:payments:api"), json!({"iat": now() - 7200, "nbf": now() - 7200, "exp": now() - 3600}))), "invalid_grant", "expired"),
        ("another audience", key.sign(None, &changed(&workload_claims("system:serviceaccount:payments:api"), json!({"aud": ["https://kubernetes.default.svc"]}))), "invalid_grant", "aud"),
        ("bad signature", Key::rsa("cluster-1").sign(None, &workload_claims("system:serviceaccount:payments:api")), "invalid_grant", "signature"),
        ("unknown key", Key::rsa("cluster-2").sign(None, &workload_claims("system:serviceaccount:payments:api")), "invalid_grant", "no key with kid"),
    ];
    for (what, assertion, error, why) in &cases {
        assert_refused(
            &grant(&gw, &client, assertion, None, None).await,
            error,
            why,
            what,
        );
    }
    assert_refused(
        &grant(&gw, &client, &token, Some("profile"), None).await,
        "invalid_scope",
        "no requested scope",
        "a scope the trust does not allow",
    );
    assert_error(
        &grant(&gw, &client, &token, None, Some(OTHER_MCP)).await,
        "invalid_target",
        "a resource the trust does not allow",
    );

    // The trust relationship's expiry ends it.
    admin
        .execute(
            "SELECT oauth.update_trusted_issuer($1, expires_at => now() + interval '1 second')",
            &[&CLUSTER],
        )
        .await
        .unwrap();
    let later: Value = scalar(
        &gw,
        "SELECT oauth.jwt_bearer_grant($1, NULL, $2, NULL, NULL, now() + interval '1 minute')",
        &[&client.id, &token],
    )
    .await;
    assert_refused(&later, "invalid_grant", "not trusted", "expired trust");
}

#[tokio::test]
async fn trusted_issuers_are_managed_from_sql() {
    let (db, admin) = database().await;
    let _ = db.gateway().await;
    let client = confidential_client(&admin).await;
    let public = workload_client(&admin).await;
    let key = Key::rsa("k");
    let add = |issuer: &'static str,
               profile: &'static str,
               client_id: String,
               extra: &'static str| {
        let admin = &admin;
        let jwks = key.jwks();
        async move {
            admin
                .execute(
                    &format!(
                        "SELECT oauth.add_trusted_issuer($1, $2, ARRAY[$3], '{{mcp}}', jwks => $4{extra})"
                    ),
                    &[&issuer, &profile, &client_id, &jwks],
                )
                .await
        }
    };
    #[rustfmt::skip]
    let refused = [
        ("http issuer", add("http://idp.example", "id-jag", client.id.clone(), "").await),
        ("unknown profile", add(IDP, "saml", client.id.clone(), "").await),
        ("unknown client", add(IDP, "id-jag", "nobody".into(), "").await),
        ("a public client for ID-JAGs", add(IDP, "id-jag", public.id.clone(), "").await),
        ("a workload issuer without subjects", add(CLUSTER, "workload", public.id.clone(), "").await),
        ("alg none", add(IDP, "id-jag", client.id.clone(), ", algorithms => '{none}'").await),
        ("HS256", add(IDP, "id-jag", client.id.clone(), ", algorithms => '{HS256}'").await),
        ("both keys and a jwks_uri", add(IDP, "id-jag", client.id.clone(), ", jwks_uri => 'https://idp.example/keys'").await),
        ("a resource that is no resource indicator", add(IDP, "id-jag", client.id.clone(), ", allowed_resources => '{not-a-uri}'").await),
    ];
    for (what, result) in refused {
        assert_eq!(sqlstate(result), "OA400", "{what}");
    }
    add(IDP, "id-jag", client.id.clone(), "").await.unwrap();
    assert_eq!(
        sqlstate(add(IDP, "id-jag", client.id.clone(), "").await),
        "OA400",
        "twice"
    );
    admin
        .execute(
            "SELECT oauth.update_trusted_issuer($1, jwks_uri => 'https://idp.example/oauth2/v1/keys',
                                                algorithms => '{RS256,ES256}')",
            &[&IDP],
        )
        .await
        .unwrap();
    let listed = admin
        .query_one(
            "SELECT jwks, jwks_uri, algorithms FROM oauth.list_trusted_issuers() WHERE issuer = $1",
            &[&IDP],
        )
        .await
        .unwrap();
    assert_eq!(listed.get::<_, Option<Value>>(0), None);
    assert_eq!(
        listed.get::<_, Option<String>>(1).as_deref(),
        Some("https://idp.example/oauth2/v1/keys")
    );
    assert_eq!(listed.get::<_, Vec<String>>(2), vec!["RS256", "ES256"]);
    assert_eq!(
        sqlstate(
            admin
                .execute(
                    "SELECT oauth.update_trusted_issuer('https://nobody.example')",
                    &[]
                )
                .await
        ),
        "OA411"
    );
    let removed: bool = scalar(&admin, "SELECT oauth.remove_trusted_issuer($1)", &[&IDP]).await;
    assert!(removed);
    let again: bool = scalar(&admin, "SELECT oauth.remove_trusted_issuer($1)", &[&IDP]).await;
    assert!(!again);
    let events = row_count(
        &admin,
        "oauth.events WHERE kind IN ('trusted_issuer_added', 'trusted_issuer_updated', 'trusted_issuer_removed')",
        &[],
    )
    .await;
    assert_eq!(events, 3);
}

#[tokio::test]
async fn an_issuers_keys_at_a_jwks_uri_are_fetched_when_missing_or_rotated_and_refused_when_unusable()
 {
    let (db, admin) = database().await;
    let gw = db.gateway().await;
    let client = confidential_client(&admin).await;
    let key = Key::rsa("idp-1");
    let keys_url = "https://idp.example/oauth2/v1/keys";
    admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'id-jag', ARRAY[$2], '{mcp}', jwks_uri => $3,
                                             algorithms => '{RS256}')",
            &[&IDP, &client.id, &keys_url],
        )
        .await
        .unwrap();
    let to_fetch = |assertion: String, later: i32| {
        let gw = &gw;
        async move {
            scalar::<Option<Value>>(
                gw,
                "SELECT oauth.trusted_issuer_jwks_to_fetch($1, now() + make_interval(secs => $2))",
                &[&assertion, &(later as f64)],
            )
            .await
        }
    };
    let wanted = json!({"issuer": IDP, "jwks_uri": keys_url});
    // No copy yet: the gateway is asked to fetch, and the grant waits for the keys.
    assert_eq!(
        to_fetch(key.id_jag(&id_jag_claims(&client.id)), 0).await,
        Some(wanted.clone())
    );
    assert_refused(
        &grant(
            &gw,
            &client,
            &key.id_jag(&id_jag_claims(&client.id)),
            None,
            None,
        )
        .await,
        "invalid_grant",
        "keys are not available",
        "no copy of the keys",
    );
    // Another issuer's JWTs, or an unknown one's, ask for nothing.
    let stranger = key.id_jag(&changed(
        &id_jag_claims(&client.id),
        json!({"iss": "https://stranger.example"}),
    ));
    assert_eq!(to_fetch(stranger, 0).await, None);

    // A key set with a private key is refused and negatively cached until retry_at.
    let mut private = key.jwk.clone();
    private["d"] = json!("AAAA");
    let stored: Value = scalar(
        &gw,
        "SELECT oauth.store_trusted_issuer_jwks($1, $2, $3, now() + interval '1 hour', now() + interval '5 minutes')",
        &[&IDP, &keys_url, &json!({"keys": [private]})],
    )
    .await;
    assert_refused(
        &stored,
        "invalid_grant",
        "unusable",
        "a private key in the set",
    );
    assert_eq!(
        to_fetch(key.id_jag(&id_jag_claims(&client.id)), 60).await,
        None
    );
    assert_eq!(
        to_fetch(key.id_jag(&id_jag_claims(&client.id)), 301).await,
        Some(wanted.clone())
    );
    // Only the issuer's own jwks_uri is stored.
    let elsewhere: Value = scalar(
        &gw,
        "SELECT oauth.store_trusted_issuer_jwks($1, 'https://evil.example/keys', $2, now() + interval '1 hour', now())",
        &[&IDP, &key.jwks()],
    )
    .await;
    assert_error(&elsewhere, "invalid_request", "another jwks_uri");

    // The good set: fresh, the grant verifies, nothing more to fetch.
    let stored: Value = scalar(
        &gw,
        "SELECT oauth.store_trusted_issuer_jwks($1, $2, $3, now() + interval '1 hour', now() + interval '5 minutes')",
        &[&IDP, &keys_url, &key.jwks()],
    )
    .await;
    assert_eq!(stored, json!({}));
    assert_eq!(
        to_fetch(key.id_jag(&id_jag_claims(&client.id)), 0).await,
        None
    );
    assert_ok(
        &grant(
            &gw,
            &client,
            &key.id_jag(&id_jag_claims(&client.id)),
            None,
            None,
        )
        .await,
        "with the fetched keys",
    );
    // The IdP rotated its key: a new kid is looked for, but at most once a minute.
    let rotated = Key::rsa("idp-2");
    assert_eq!(
        to_fetch(rotated.id_jag(&id_jag_claims(&client.id)), 0).await,
        None
    );
    assert_eq!(
        to_fetch(rotated.id_jag(&id_jag_claims(&client.id)), 61).await,
        Some(wanted.clone())
    );
    // Stale after its freshness: fetched again.
    assert_eq!(
        to_fetch(key.id_jag(&id_jag_claims(&client.id)), 3601).await,
        Some(wanted)
    );
}
