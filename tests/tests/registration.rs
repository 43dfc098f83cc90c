//! RFC 7591 dynamic client registration through the gateway role.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

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
    let row = one_row(
        &admin,
        "SELECT registered_dynamically, grant_types, expires_at IS NULL FROM oauth.list_clients() WHERE client_id = $1",
        &[&client_id],
    )
    .await;
    assert!(row.get::<_, bool>(0));
    let mut grant_types: Vec<String> = row.get(1);
    grant_types.sort();
    assert_eq!(grant_types, vec!["authorization_code", "refresh_token"]);
    assert!(row.get::<_, bool>(2), "no TTL configured");

    let client = TestClient::registered(&answer, "http://127.0.0.1:51515/callback");
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
    let scopes: Value = scalar(&gw, "SELECT oauth.settings()->'scopes_supported'", &[]).await;
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
    let client = TestClient::registered(&answer, "https://app.example/cb");
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
    let valid = json!({"redirect_uris": ["https://app.example/cb"]});
    let (metadata, redirect_uri) = ("invalid_client_metadata", "invalid_redirect_uri");
    let refused_as_invalid_redirect_uri = vec![
        ("no redirect_uris", json!({"redirect_uris": null})),
        (
            "redirect_uris a string",
            json!({"redirect_uris": "https://app.example/cb"}),
        ),
        ("redirect_uris with a number", json!({"redirect_uris": [1]})),
        ("empty redirect_uris", json!({"redirect_uris": []})),
        (
            "fragment",
            json!({"redirect_uris": ["https://app.example/cb#x"]}),
        ),
        (
            "http web",
            json!({"redirect_uris": ["http://app.example/cb"]}),
        ),
        (
            "javascript",
            json!({"redirect_uris": ["javascript:alert(1)"]}),
        ),
        (
            "userinfo",
            json!({"redirect_uris": ["https://a@app.example/cb"]}),
        ),
        (
            "private scheme for web",
            json!({"redirect_uris": ["myapp:/cb"], "application_type": "web"}),
        ),
        (
            "loopback for web",
            json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "web"}),
        ),
    ];
    let refused_as_invalid_metadata = vec![
        ("not an object", json!(["x"])),
        ("auth method type", json!({"token_endpoint_auth_method": 1})),
        (
            "auth method value",
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
        ),
        (
            "grant_types type",
            json!({"grant_types": "authorization_code"}),
        ),
        ("grant_types element", json!({"grant_types": [1]})),
        ("implicit", json!({"grant_types": ["implicit"]})),
        (
            "client_credentials for a public client",
            json!({"grant_types": ["authorization_code", "client_credentials"], "token_endpoint_auth_method": "none"}),
        ),
        ("refresh only", json!({"grant_types": ["refresh_token"]})),
        (
            "response_types token",
            json!({"response_types": ["code", "token"]}),
        ),
        ("response_types string", json!({"response_types": "code"})),
        ("scope type", json!({"scope": ["mcp"]})),
        ("scope syntax", json!({"scope": "mcp  openid"})),
        ("unsupported scope", json!({"scope": "mcp admin"})),
        ("application_type type", json!({"application_type": true})),
        (
            "application_type value",
            json!({"application_type": "desktop"}),
        ),
        ("client_name type", json!({"client_name": 5})),
        ("client_name empty", json!({"client_name": ""})),
        ("client_name long", json!({"client_name": "n".repeat(201)})),
        (
            "client_uri javascript",
            json!({"client_uri": "javascript:alert(1)"}),
        ),
        ("logo_uri relative", json!({"logo_uri": "/logo.png"})),
        ("tos_uri type", json!({"tos_uri": 1})),
        ("policy_uri ftp", json!({"policy_uri": "ftp://x.example/p"})),
        ("software_id long", json!({"software_id": "s".repeat(201)})),
        ("software_version type", json!({"software_version": 2})),
        ("contacts type", json!({"contacts": "a@example.com"})),
        (
            "contacts too many",
            json!({"contacts": vec!["a@example.com"; 11]}),
        ),
        ("contacts element", json!({"contacts": [1]})),
        ("jwks", json!({"jwks": {"keys": []}})),
        ("jwks_uri", json!({"jwks_uri": "https://app.example/jwks"})),
        (
            "post_logout_redirect_uris string",
            json!({"post_logout_redirect_uris": "https://app.example/bye"}),
        ),
        (
            "post_logout_redirect_uris element",
            json!({"post_logout_redirect_uris": [1]}),
        ),
        (
            "post_logout_redirect_uri http web",
            json!({"post_logout_redirect_uris": ["http://app.example/bye"]}),
        ),
        (
            "post_logout_redirect_uri fragment",
            json!({"post_logout_redirect_uris": ["https://app.example/bye#x"]}),
        ),
        (
            "post_logout_redirect_uri javascript",
            json!({"post_logout_redirect_uris": ["javascript:alert(1)"]}),
        ),
        (
            "post_logout_redirect_uris too many",
            json!({"post_logout_redirect_uris": vec!["https://app.example/bye"; 21]}),
        ),
    ];
    for (code, cases) in [
        (redirect_uri, refused_as_invalid_redirect_uri),
        (metadata, refused_as_invalid_metadata),
    ] {
        for (what, changes) in cases {
            let answer = register(&gw, &changed(&valid, changes)).await;
            assert_error(&answer, code, what);
            assert_eq!(answer.get("client_id"), None, "{what}");
        }
    }
    let null: Value = scalar(&gw, "SELECT oauth.register_client(NULL)", &[]).await;
    assert_error(&null, "invalid_client_metadata", "NULL metadata");
}

#[tokio::test]
async fn disabled_registration_is_refused() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "registration_enabled => false").await;
    let gw = db.gateway().await;
    let answer = register(&gw, &json!({"redirect_uris": ["https://app.example/cb"]})).await;
    assert_error(&answer, "access_denied", "registration disabled");
    let count: i64 = row_count(&admin, "oauth.clients", &[]).await;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn registered_client_expires_after_its_ttl_and_cleanup_removes_it() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "registered_client_ttl => '1 hour'").await;
    let gw = db.gateway().await;
    let answer = register(&gw, &json!({"redirect_uris": ["https://app.example/cb"]})).await;
    assert_ok(&answer, "registration");
    let issued = answer["client_id_issued_at"].as_i64().unwrap();
    let expires = answer["client_secret_expires_at"].as_i64().unwrap();
    assert!(
        (3599..=3601).contains(&(expires - issued)),
        "expires {expires} issued {issued}"
    );
    let client = TestClient::registered(&answer, "https://app.example/cb");
    let t = tokens_for(&gw, &client, &unique("user")).await;
    let later = "now() + interval '1 hour 1 second'";
    let get: Value = scalar(
        &gw,
        &format!("SELECT oauth.get_client($1, {later})"),
        &[&client.id],
    )
    .await;
    assert_error(&get, "invalid_client", "expired client");
    let begun: Value = scalar(
        &gw,
        &format!("SELECT oauth.begin_authorization($1, {later})"),
        &[&authorize_params(&client, &Pkce::new(), json!({}))],
    )
    .await;
    assert_error(
        &begun,
        "invalid_client",
        "authorization by an expired client",
    );
    let rotated: Value = scalar(
        &gw,
        &format!("SELECT oauth.rotate_refresh_token($1, $2, $3, NULL, NULL, {later})"),
        &[&client.id, &client.secret, &str_field(&t, "refresh_token")],
    )
    .await;
    assert_error(&rotated, "invalid_client", "rotation by an expired client");
    let info: Value = scalar(
        &gw,
        &format!("SELECT oauth.userinfo($1, $2, now => {later})"),
        &[&uuid_field(&t, "grant_id"), &uuid_field(&t, "family_id")],
    )
    .await;
    assert_eq!(
        info,
        json!({"active": false}),
        "tokens of an expired client are inactive"
    );

    let removed: i64 = scalar(&admin, &format!("SELECT oauth.cleanup({later})"), &[]).await;
    assert!(removed >= 1);
    let left: i64 = row_count(&admin, "oauth.clients", &[]).await;
    assert_eq!(left, 0, "cleanup removed the expired client");
    let revoked_events: i64 =
        row_count(&admin, "oauth.events WHERE kind = 'client_deleted'", &[]).await;
    assert_eq!(revoked_events, 1);
}

/// OIDC Registration §2 `id_token_signed_response_alg`: kept and echoed when it names an algorithm
/// the gateway can sign with, refused otherwise ("none" would make ID tokens forgeable), the same
/// rule for administrators, and told to the gateway in the answers that can carry an ID token.
#[tokio::test]
async fn id_token_signed_response_alg_is_checked_kept_and_told_to_the_gateway() {
    // A database of its own: the shared one may have been created before this rule.
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let gw = db.gateway().await;
    let valid = json!({"redirect_uris": ["https://app.example/cb"]});
    for (what, alg) in [
        ("none", json!("none")),
        ("symmetric", json!("HS256")),
        ("unknown", json!("PS256")),
        ("case", json!("rs256")),
        ("number", json!(256)),
        ("array", json!(["RS256"])),
        ("null", Value::Null),
    ] {
        let mut metadata = valid.clone();
        metadata["id_token_signed_response_alg"] = alg;
        let answer = register(&gw, &metadata).await;
        assert_error(&answer, "invalid_client_metadata", what);
        assert!(
            str_field(&answer, "error_description").contains("id_token_signed_response_alg"),
            "{what}: {answer}"
        );
    }

    for alg in ["RS256", "ES256", "EdDSA"] {
        let answer = register(
            &gw,
            &changed(&valid, json!({"id_token_signed_response_alg": alg})),
        )
        .await;
        assert_ok(&answer, alg);
        assert_eq!(answer["id_token_signed_response_alg"], json!(alg));
        let client_id = str_field(&answer, "client_id");
        let read: Value = scalar(
            &gw,
            "SELECT oauth.read_registration($1, $2)",
            &[&client_id, &str_field(&answer, "registration_access_token")],
        )
        .await;
        assert_eq!(read["id_token_signed_response_alg"], json!(alg));
        let public: Value = scalar(&gw, "SELECT oauth.get_client($1)", &[&client_id]).await;
        assert_eq!(public["id_token_signed_response_alg"], json!(alg));
        let client = TestClient::registered(&answer, "https://app.example/cb");
        let tokens = tokens_for(&gw, &client, &unique("user")).await;
        assert_eq!(tokens["id_token_signed_response_alg"], json!(alg));
        let rotated = rotate(&gw, &client, str_field(&tokens, "refresh_token")).await;
        assert_ok(&rotated, "rotation");
        assert_eq!(
            rotated.get("id_token_signed_response_alg"),
            None,
            "rotation issues no ID token and looks nothing up for one"
        );
    }

    // Registered without it: RS256 (OIDC Registration's default), and nothing is stored.
    let answer = register(&gw, &valid).await;
    assert_eq!(answer.get("id_token_signed_response_alg"), None);
    let plain = TestClient::registered(&answer, "https://app.example/cb");
    let tokens = tokens_for(&gw, &plain, &unique("user")).await;
    assert_eq!(tokens["id_token_signed_response_alg"], json!("RS256"));

    // RFC 7592 update: the same rule.
    let update = changed(
        &valid,
        json!({"client_id": plain.id, "client_secret": plain.secret, "id_token_signed_response_alg": "none"}),
    );
    let refused: Value = scalar(
        &gw,
        "SELECT oauth.update_registration($1, $2, $3)",
        &[
            &plain.id,
            &str_field(&answer, "registration_access_token"),
            &update,
        ],
    )
    .await;
    assert_error(&refused, "invalid_client_metadata", "update to none");

    // Administrators: create_client and update_client check their metadata by the same rule.
    let with_metadata = |metadata: Value| ClientSpec {
        metadata,
        ..ClientSpec::default()
    };
    assert_sqlstate(
        try_create_client(
            &admin,
            &with_metadata(json!({"id_token_signed_response_alg": "none"})),
        )
        .await,
        "OA408",
        "create_client with none",
    );
    let device = create_client(
        &admin,
        ClientSpec {
            grant_types: vec!["urn:ietf:params:oauth:grant-type:device_code".into()],
            ..with_metadata(json!({"id_token_signed_response_alg": "EdDSA", "owner": "team-a"}))
        },
    )
    .await;
    assert_sqlstate(
        admin
            .execute(
                "SELECT oauth.update_client($1, metadata => $2)",
                &[&device.id, &json!({"id_token_signed_response_alg": 256})],
            )
            .await,
        "OA408",
        "update_client with a number",
    );
    let begun: Value = scalar(
        &gw,
        "SELECT oauth.begin_device_authorization($1, $2, 'openid mcp', NULL)",
        &[&device.id, &device.secret],
    )
    .await;
    assert_ok(&begun, "device authorization");
    execute(
        &admin,
        "SELECT oauth.approve_device_authorization($1, 'alice')",
        &[&str_field(&begun, "user_code")],
    )
    .await;
    let polled: Value = scalar(
        &gw,
        "SELECT oauth.poll_device_authorization($1, $2, $3)",
        &[
            &device.id,
            &device.secret,
            &str_field(&begun, "device_code"),
        ],
    )
    .await;
    assert_ok(&polled, "device poll");
    assert_eq!(polled["id_token_signed_response_alg"], json!("EdDSA"));
    execute(
        &admin,
        "SELECT oauth.update_client($1, metadata => $2)",
        &[
            &device.id,
            &json!({"id_token_signed_response_alg": "ES256"}),
        ],
    )
    .await;
    let public: Value = scalar(&gw, "SELECT oauth.get_client($1)", &[&device.id]).await;
    assert_eq!(public["id_token_signed_response_alg"], json!("ES256"));
}

/// RP-Initiated Logout 1.0 §3.1: a client registers where /logout may send the browser back, and
/// only there (byte for byte, with `state`); an update can change the list.
#[tokio::test]
async fn post_logout_redirect_uris_are_kept_at_registration_and_only_they_are_followed() {
    let gw = gateway().await;
    let answer = register(
        &gw,
        &json!({
            "redirect_uris": ["https://app.example/cb"],
            "post_logout_redirect_uris": ["https://app.example/bye", "https://app.example/bye?from=logout"],
        }),
    )
    .await;
    assert_ok(&answer, "registration");
    assert_eq!(
        answer["post_logout_redirect_uris"],
        json!([
            "https://app.example/bye",
            "https://app.example/bye?from=logout"
        ])
    );
    let client_id = str_field(&answer, "client_id").to_owned();
    let follow = |uri: &'static str, state: Option<&'static str>| {
        let (gw, client_id) = (&gw, client_id.clone());
        async move {
            scalar::<Option<String>>(
                gw,
                "SELECT oauth.post_logout_redirect($1, $2, $3)",
                &[&client_id, &uri, &state],
            )
            .await
        }
    };
    assert_eq!(
        follow("https://app.example/bye", Some("s 1"))
            .await
            .as_deref(),
        Some("https://app.example/bye?state=s+1")
    );
    assert_eq!(
        follow("https://app.example/bye?from=logout", None)
            .await
            .as_deref(),
        Some("https://app.example/bye?from=logout")
    );
    for unregistered in [
        "https://app.example/bye/",
        "https://APP.example/bye",
        "https://evil.example/bye",
        "https://app.example/cb",
    ] {
        assert_eq!(follow(unregistered, None).await, None, "{unregistered}");
    }

    // RFC 7592 update: the new list replaces the old.
    let token = str_field(&answer, "registration_access_token").to_owned();
    let updated: Value = scalar(
        &gw,
        "SELECT oauth.update_registration($1, $2, $3)",
        &[
            &client_id,
            &token,
            &json!({"client_id": client_id, "redirect_uris": ["https://app.example/cb"],
                    "post_logout_redirect_uris": ["https://app.example/signed-out"]}),
        ],
    )
    .await;
    assert_ok(&updated, "update");
    assert_eq!(follow("https://app.example/bye", None).await, None);
    assert_eq!(
        follow("https://app.example/signed-out", None)
            .await
            .as_deref(),
        Some("https://app.example/signed-out")
    );
}
