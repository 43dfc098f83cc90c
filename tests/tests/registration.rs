//! RFC 7591 dynamic client registration through the gateway role.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

async fn register(db: &tokio_postgres::Client, metadata: &Value) -> Value {
    db.query_one("SELECT oauth.register_client($1)", &[metadata])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn mcp_style_public_native_client_registers_and_completes_a_flow_on_any_loopback_port() {
    let gw = gateway().await;
    let admin = admin().await;
    let answer = register(
        &gw,
        &json!({
            "client_name": "Claude Desktop",
            "redirect_uris": ["http://127.0.0.1/callback", "http://localhost/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token", "authorization_code"],
            "response_types": ["code"],
            "scope": "mcp openid",
            "client_uri": "https://claude.ai",
            "software_id": "claude",
            "contacts": ["ops@example.com"],
            "unknown_field": {"ignored": true},
        }),
    )
    .await;
    assert_ok(&answer, "registration");
    let client_id = str_field(&answer, "client_id").to_owned();
    assert_eq!(
        answer.get("client_secret"),
        None,
        "public clients get no secret"
    );
    assert_eq!(answer["client_secret_expires_at"], json!(0));
    assert_eq!(
        answer["application_type"],
        json!("native"),
        "all-loopback registrations are native"
    );
    assert_eq!(answer["token_endpoint_auth_method"], json!("none"));
    assert_eq!(
        answer["scope"],
        json!("openid profile email offline_access mcp"),
        "a registered client may step up to every supported scope, whatever it asked for first"
    );
    assert_eq!(answer["client_uri"], json!("https://claude.ai"));
    assert_eq!(answer["contacts"], json!(["ops@example.com"]));
    assert_eq!(answer.get("unknown_field"), None);
    assert!(answer["client_id_issued_at"].is_i64());
    let row = admin
        .query_one(
            "SELECT registered_dynamically, grant_types, expires_at IS NULL FROM oauth.list_clients() WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    let mut grant_types: Vec<String> = row.get(1);
    grant_types.sort();
    assert_eq!(grant_types, vec!["authorization_code", "refresh_token"]);
    assert!(row.get::<_, bool>(2), "no TTL configured");

    let client = TestClient {
        id: client_id,
        secret: None,
        redirect_uri: "http://127.0.0.1:51515/callback".into(),
        spec: ClientSpec::public_native(),
    };
    let t = tokens_for(&gw, &client, &unique("user")).await;
    assert_ok(
        &rotate(&gw, &client, str_field(&t, "refresh_token")).await,
        "rotation",
    );
}

#[tokio::test]
async fn confidential_web_registration_returns_a_working_secret() {
    let gw = gateway().await;
    let answer = register(&gw, &json!({"redirect_uris": ["https://app.example/cb"]})).await;
    assert_ok(&answer, "registration");
    assert_eq!(answer["application_type"], json!("web"));
    assert_eq!(
        answer["token_endpoint_auth_method"],
        json!("client_secret_basic")
    );
    assert_eq!(
        answer["client_name"],
        json!("app.example"),
        "name defaults to the redirect host"
    );
    let secret = str_field(&answer, "client_secret").to_owned();
    assert_eq!(secret.len(), 43);
    let scopes: Value = gw
        .query_one("SELECT oauth.settings()->'scopes_supported'", &[])
        .await
        .unwrap()
        .get(0);
    let expected: Vec<&str> = scopes
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        answer["scope"],
        json!(expected.join(" ")),
        "scope defaults to every supported scope"
    );
    let client = TestClient {
        id: str_field(&answer, "client_id").to_owned(),
        secret: Some(secret),
        redirect_uri: "https://app.example/cb".into(),
        spec: ClientSpec::default(),
    };
    tokens_for(&gw, &client, &unique("user")).await;
    let private_scheme = register(
        &gw,
        &json!({"redirect_uris": ["com.example.app:/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_ok(&private_scheme, "private-use scheme");
    assert_eq!(private_scheme["application_type"], json!("native"));
}

#[tokio::test]
async fn registration_checks_every_field_for_type_and_value() {
    let gw = gateway().await;
    let ok = |extra: Value| {
        let mut m = json!({"redirect_uris": ["https://app.example/cb"]});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                m.as_object_mut().unwrap().remove(k);
            } else {
                m[k] = v.clone();
            }
        }
        m
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("not an object", json!(["x"]), "invalid_client_metadata"),
        (
            "no redirect_uris",
            ok(json!({"redirect_uris": null})),
            "invalid_redirect_uri",
        ),
        (
            "redirect_uris a string",
            ok(json!({"redirect_uris": "https://app.example/cb"})),
            "invalid_redirect_uri",
        ),
        (
            "redirect_uris with a number",
            ok(json!({"redirect_uris": [1]})),
            "invalid_redirect_uri",
        ),
        (
            "empty redirect_uris",
            ok(json!({"redirect_uris": []})),
            "invalid_redirect_uri",
        ),
        (
            "fragment",
            ok(json!({"redirect_uris": ["https://app.example/cb#x"]})),
            "invalid_redirect_uri",
        ),
        (
            "http web",
            ok(json!({"redirect_uris": ["http://app.example/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            "javascript",
            ok(json!({"redirect_uris": ["javascript:alert(1)"]})),
            "invalid_redirect_uri",
        ),
        (
            "userinfo",
            ok(json!({"redirect_uris": ["https://a@app.example/cb"]})),
            "invalid_redirect_uri",
        ),
        (
            "private scheme for web",
            ok(json!({"redirect_uris": ["myapp:/cb"], "application_type": "web"})),
            "invalid_redirect_uri",
        ),
        (
            "loopback for web",
            ok(json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"})),
            "invalid_redirect_uri",
        ),
        (
            "auth method type",
            ok(json!({"token_endpoint_auth_method": 1})),
            "invalid_client_metadata",
        ),
        (
            "auth method value",
            ok(json!({"token_endpoint_auth_method": "private_key_jwt"})),
            "invalid_client_metadata",
        ),
        (
            "grant_types type",
            ok(json!({"grant_types": "authorization_code"})),
            "invalid_client_metadata",
        ),
        (
            "grant_types element",
            ok(json!({"grant_types": [1]})),
            "invalid_client_metadata",
        ),
        (
            "implicit",
            ok(json!({"grant_types": ["implicit"]})),
            "invalid_client_metadata",
        ),
        (
            "client_credentials for a public client",
            ok(
                json!({"grant_types": ["authorization_code", "client_credentials"], "token_endpoint_auth_method": "none"}),
            ),
            "invalid_client_metadata",
        ),
        (
            "refresh only",
            ok(json!({"grant_types": ["refresh_token"]})),
            "invalid_client_metadata",
        ),
        (
            "response_types token",
            ok(json!({"response_types": ["code", "token"]})),
            "invalid_client_metadata",
        ),
        (
            "response_types string",
            ok(json!({"response_types": "code"})),
            "invalid_client_metadata",
        ),
        (
            "scope type",
            ok(json!({"scope": ["mcp"]})),
            "invalid_client_metadata",
        ),
        (
            "scope syntax",
            ok(json!({"scope": "mcp  openid"})),
            "invalid_client_metadata",
        ),
        (
            "unsupported scope",
            ok(json!({"scope": "mcp admin"})),
            "invalid_client_metadata",
        ),
        (
            "application_type type",
            ok(json!({"application_type": true})),
            "invalid_client_metadata",
        ),
        (
            "application_type value",
            ok(json!({"application_type": "desktop"})),
            "invalid_client_metadata",
        ),
        (
            "client_name type",
            ok(json!({"client_name": 5})),
            "invalid_client_metadata",
        ),
        (
            "client_name empty",
            ok(json!({"client_name": ""})),
            "invalid_client_metadata",
        ),
        (
            "client_name long",
            ok(json!({"client_name": "n".repeat(201)})),
            "invalid_client_metadata",
        ),
        (
            "client_uri javascript",
            ok(json!({"client_uri": "javascript:alert(1)"})),
            "invalid_client_metadata",
        ),
        (
            "logo_uri relative",
            ok(json!({"logo_uri": "/logo.png"})),
            "invalid_client_metadata",
        ),
        (
            "tos_uri type",
            ok(json!({"tos_uri": 1})),
            "invalid_client_metadata",
        ),
        (
            "policy_uri ftp",
            ok(json!({"policy_uri": "ftp://x.example/p"})),
            "invalid_client_metadata",
        ),
        (
            "software_id long",
            ok(json!({"software_id": "s".repeat(201)})),
            "invalid_client_metadata",
        ),
        (
            "software_version type",
            ok(json!({"software_version": 2})),
            "invalid_client_metadata",
        ),
        (
            "contacts type",
            ok(json!({"contacts": "a@example.com"})),
            "invalid_client_metadata",
        ),
        (
            "contacts too many",
            ok(json!({"contacts": vec!["a@example.com"; 11]})),
            "invalid_client_metadata",
        ),
        (
            "contacts element",
            ok(json!({"contacts": [1]})),
            "invalid_client_metadata",
        ),
        (
            "jwks",
            ok(json!({"jwks": {"keys": []}})),
            "invalid_client_metadata",
        ),
        (
            "jwks_uri",
            ok(json!({"jwks_uri": "https://app.example/jwks"})),
            "invalid_client_metadata",
        ),
    ];
    for (what, metadata, code) in cases {
        let answer = register(&gw, &metadata).await;
        assert_error(&answer, code, what);
        assert_eq!(answer.get("client_id"), None, "{what}");
    }
    let null: Value = gw
        .query_one("SELECT oauth.register_client(NULL)", &[])
        .await
        .unwrap()
        .get(0);
    assert_error(&null, "invalid_client_metadata", "NULL metadata");
}

#[tokio::test]
async fn disabled_registration_is_refused() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    admin
        .execute("SELECT oauth.configure(registration_enabled => false)", &[])
        .await
        .unwrap();
    let gw = db.gateway().await;
    let answer = register(&gw, &json!({"redirect_uris": ["https://app.example/cb"]})).await;
    assert_error(&answer, "access_denied", "registration disabled");
    let count: i64 = admin
        .query_one("SELECT count(*) FROM oauth.clients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[tokio::test]
async fn registered_client_expires_after_its_ttl_and_cleanup_removes_it() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    admin
        .execute(
            "SELECT oauth.configure(registered_client_ttl => '1 hour')",
            &[],
        )
        .await
        .unwrap();
    let gw = db.gateway().await;
    let answer = register(&gw, &json!({"redirect_uris": ["https://app.example/cb"]})).await;
    assert_ok(&answer, "registration");
    let issued = answer["client_id_issued_at"].as_i64().unwrap();
    let expires = answer["client_secret_expires_at"].as_i64().unwrap();
    assert!(
        (3599..=3601).contains(&(expires - issued)),
        "expires {expires} issued {issued}"
    );
    let client = TestClient {
        id: str_field(&answer, "client_id").to_owned(),
        secret: Some(str_field(&answer, "client_secret").to_owned()),
        redirect_uri: "https://app.example/cb".into(),
        spec: ClientSpec::default(),
    };
    let t = tokens_for(&gw, &client, &unique("user")).await;
    let later = "now() + interval '1 hour 1 second'";
    let get: Value = gw
        .query_one(
            &format!("SELECT oauth.get_client($1, {later})"),
            &[&client.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_error(&get, "invalid_client", "expired client");
    let begun: Value = gw
        .query_one(
            &format!("SELECT oauth.begin_authorization($1, {later})"),
            &[&authorize_params(&client, &Pkce::new(), json!({}))],
        )
        .await
        .unwrap()
        .get(0);
    assert_error(
        &begun,
        "invalid_client",
        "authorization by an expired client",
    );
    let rotated: Value = gw
        .query_one(
            &format!("SELECT oauth.rotate_refresh_token($1, $2, $3, NULL, NULL, {later})"),
            &[&client.id, &client.secret, &str_field(&t, "refresh_token")],
        )
        .await
        .unwrap()
        .get(0);
    assert_error(&rotated, "invalid_client", "rotation by an expired client");
    let info: Value = gw
        .query_one(
            &format!("SELECT oauth.userinfo($1, $2, {later})"),
            &[&uuid_field(&t, "grant_id"), &uuid_field(&t, "family_id")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        info,
        json!({"active": false}),
        "tokens of an expired client are inactive"
    );

    let removed: i64 = admin
        .query_one(&format!("SELECT oauth.cleanup({later})"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(removed >= 1);
    let left: i64 = admin
        .query_one("SELECT count(*) FROM oauth.clients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "cleanup removed the expired client");
    let revoked_events: i64 = admin
        .query_one(
            "SELECT count(*) FROM oauth.events WHERE kind = 'client_deleted'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(revoked_events, 1);
}
