//! RFC 7592 client configuration in SQL: the registration access token handed out by RFC 7591
//! registration reads, replaces and deletes the registration, and nothing else does.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Registers and panics unless it succeeds.
async fn registered(db: &Client, metadata: Value) -> Value {
    let answer = register(db, &metadata).await;
    assert_ok(&answer, &format!("register_client({metadata})"));
    answer
}

async fn read(db: &Client, client_id: &str, token: Option<&str>) -> Value {
    scalar(
        db,
        "SELECT oauth.read_registration($1, $2)",
        &[&client_id, &token],
    )
    .await
}

async fn update(db: &Client, client_id: &str, token: Option<&str>, metadata: &Value) -> Value {
    scalar(
        db,
        "SELECT oauth.update_registration($1, $2, $3)",
        &[&client_id, &token, metadata],
    )
    .await
}

async fn delete(db: &Client, client_id: &str, token: Option<&str>) -> Value {
    scalar(
        db,
        "SELECT oauth.delete_registration($1, $2)",
        &[&client_id, &token],
    )
    .await
}

fn token_of(answer: &Value) -> String {
    str_field(answer, "registration_access_token").to_owned()
}

#[tokio::test]
async fn registration_returns_a_registration_access_token_that_reads_the_registration() {
    let gw = gateway().await;
    let answer = registered(
        &gw,
        json!({
            "client_name": "Managed",
            "redirect_uris": ["https://managed.example/cb"],
            "contacts": ["ops@managed.example"],
        }),
    )
    .await;
    let token = token_of(&answer);
    assert_eq!(token.len(), 43, "32 random bytes, base64url");
    assert!(answer["client_secret"].is_string());
    let client_id = str_field(&answer, "client_id");

    let current = read(&gw, client_id, Some(&token)).await;
    assert_ok(&current, "read with the registration token");
    for field in [
        "client_id",
        "client_name",
        "redirect_uris",
        "grant_types",
        "token_endpoint_auth_method",
        "application_type",
        "scope",
        "contacts",
        "client_id_issued_at",
        "client_secret_expires_at",
    ] {
        assert_eq!(current[field], answer[field], "{field}");
    }
    assert_eq!(
        current.get("client_secret"),
        None,
        "the secret is shown once"
    );
    assert_eq!(
        current.get("registration_access_token"),
        None,
        "so is the registration token"
    );

    // Each registration gets its own token.
    let other = registered(
        &gw,
        json!({"redirect_uris": ["https://managed.example/cb"]}),
    )
    .await;
    assert_ne!(token_of(&other), token);
}

#[tokio::test]
async fn a_wrong_token_and_an_unknown_client_are_indistinguishable() {
    let gw = gateway().await;
    let answer = registered(&gw, json!({"redirect_uris": ["https://app.example/cb"]})).await;
    let client_id = str_field(&answer, "client_id").to_owned();
    let token = token_of(&answer);
    let other = registered(&gw, json!({"redirect_uris": ["https://app.example/cb"]})).await;
    let other_token = token_of(&other);
    let secret = str_field(&answer, "client_secret").to_owned();

    let unknown_client = read(&gw, &unique("nobody"), Some(&token)).await;
    assert_error(&unknown_client, "invalid_token", "unknown client");
    for (what, presented) in [
        ("wrong token", Some("not-the-token".to_owned())),
        ("another client's token", Some(other_token.clone())),
        ("the client secret", Some(secret.clone())),
        ("empty token", Some(String::new())),
        ("no token", None),
    ] {
        assert_eq!(
            read(&gw, &client_id, presented.as_deref()).await,
            unknown_client,
            "{what}: same answer as an unknown client"
        );
    }
    // Update and delete with a wrong token change nothing.
    let refused = update(
        &gw,
        &client_id,
        Some(&other_token),
        &json!({"client_id": client_id, "redirect_uris": ["https://evil.example/cb"]}),
    )
    .await;
    assert_eq!(refused, unknown_client, "update with a wrong token");
    assert_eq!(
        delete(&gw, &client_id, Some(&other_token)).await,
        unknown_client,
        "delete with a wrong token"
    );
    let still = read(&gw, &client_id, Some(&token)).await;
    assert_eq!(still["redirect_uris"], json!(["https://app.example/cb"]));
}

#[tokio::test]
async fn update_replaces_the_metadata_and_keeps_id_secret_and_registration_token() {
    let (admin, gw) = (admin().await, gateway().await);
    let answer = registered(
        &gw,
        json!({
            "client_name": "Before",
            "redirect_uris": ["https://before.example/cb"],
            "contacts": ["ops@before.example"],
            "client_uri": "https://before.example",
        }),
    )
    .await;
    let client_id = str_field(&answer, "client_id").to_owned();
    let token = token_of(&answer);
    let secret = str_field(&answer, "client_secret").to_owned();

    let updated = update(
        &gw,
        &client_id,
        Some(&token),
        &json!({
            "client_id": client_id,
            "client_secret": secret,
            "client_name": "After",
            "redirect_uris": ["https://after.example/cb"],
            "token_endpoint_auth_method": "client_secret_post",
        }),
    )
    .await;
    assert_ok(&updated, "update_registration");
    assert_eq!(updated["client_id"], json!(client_id));
    assert_eq!(updated["client_name"], json!("After"));
    assert_eq!(
        updated["redirect_uris"],
        json!(["https://after.example/cb"])
    );
    assert_eq!(
        updated["token_endpoint_auth_method"],
        json!("client_secret_post")
    );
    assert_eq!(
        updated["client_id_issued_at"], answer["client_id_issued_at"],
        "same client"
    );
    assert_eq!(updated.get("contacts"), None, "omitted fields are removed");
    assert_eq!(updated.get("client_uri"), None);
    assert_eq!(updated.get("client_secret"), None);
    assert_eq!(read(&gw, &client_id, Some(&token)).await, updated);
    let row = one_row(
        &admin,
        "SELECT client_name, redirect_uris, metadata FROM oauth.list_clients() WHERE client_id = $1",
        &[&client_id],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "After");
    assert_eq!(row.get::<_, Value>(2), json!({}));

    // The old secret still authenticates, at the new redirect URI only.
    let client = TestClient::registered(&answer, "https://after.example/cb");
    tokens_for(&gw, &client, &unique("user")).await;
    let old_uri = TestClient::registered(&answer, "https://before.example/cb");
    let refused =
        begin_authorization(&gw, &authorize_params(&old_uri, &Pkce::new(), json!({}))).await;
    assert_error(&refused, "invalid_request", "the replaced redirect URI");

    // Without a name the host of the first redirect URI names the client, as at registration.
    let renamed = update(
        &gw,
        &client_id,
        Some(&token),
        &json!({"client_id": client_id, "redirect_uris": ["https://third.example/cb"]}),
    )
    .await;
    assert_ok(&renamed, "update without a client_name");
    assert_eq!(renamed["client_name"], json!("third.example"));
    assert_eq!(
        renamed["token_endpoint_auth_method"],
        json!("client_secret_basic"),
        "an omitted method takes its default"
    );
}

#[tokio::test]
async fn update_refuses_bad_requests_and_leaves_the_registration_as_it_was() {
    let gw = gateway().await;
    let answer = registered(
        &gw,
        json!({"client_name": "Stable", "redirect_uris": ["https://stable.example/cb"]}),
    )
    .await;
    let client_id = str_field(&answer, "client_id").to_owned();
    let token = token_of(&answer);
    let secret = str_field(&answer, "client_secret").to_owned();
    let before = read(&gw, &client_id, Some(&token)).await;
    let base = json!({"client_id": client_id, "redirect_uris": ["https://stable.example/new"]});
    let (metadata, redirect_uri) = ("invalid_client_metadata", "invalid_redirect_uri");
    for (what, changes, code) in [
        ("client_id missing", json!({"client_id": null}), metadata),
        (
            "another client_id",
            json!({"client_id": "someone-else"}),
            metadata,
        ),
        ("client_id not a string", json!({"client_id": 1}), metadata),
        (
            "wrong client_secret",
            json!({"client_secret": "not-the-secret"}),
            metadata,
        ),
        (
            "client_secret not a string",
            json!({"client_secret": 5}),
            metadata,
        ),
        (
            "confidential to public",
            json!({"client_secret": secret, "token_endpoint_auth_method": "none"}),
            metadata,
        ),
        (
            "plain http redirect URI",
            json!({"redirect_uris": ["http://stable.example/cb"]}),
            redirect_uri,
        ),
        (
            "no redirect URI for the code grant",
            json!({"redirect_uris": []}),
            redirect_uri,
        ),
        (
            "refresh_token alone",
            json!({"grant_types": ["refresh_token"]}),
            metadata,
        ),
        (
            "unsupported grant",
            json!({"grant_types": ["implicit"]}),
            metadata,
        ),
        ("not an object", json!(["x"]), metadata),
    ] {
        assert_error(
            &update(&gw, &client_id, Some(&token), &changed(&base, changes)).await,
            code,
            what,
        );
        assert_eq!(
            read(&gw, &client_id, Some(&token)).await,
            before,
            "{what}: unchanged"
        );
    }
    let null: Value = scalar(
        &gw,
        "SELECT oauth.update_registration($1, $2, NULL)",
        &[&client_id, &token],
    )
    .await;
    assert_error(&null, "invalid_client_metadata", "NULL metadata");

    // A public client may not become confidential (it has no secret to keep), whether it asks for
    // a method or omits it (the default is client_secret_basic); it may not send a secret either.
    let public = registered(
        &gw,
        json!({"redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    let (public_id, public_token) = (str_field(&public, "client_id"), token_of(&public));
    for (what, metadata) in [
        (
            "explicit secret method",
            json!({"client_id": public_id, "redirect_uris": ["http://127.0.0.1/callback"],
                   "token_endpoint_auth_method": "client_secret_basic"}),
        ),
        (
            "omitted method",
            json!({"client_id": public_id, "redirect_uris": ["http://127.0.0.1/callback"]}),
        ),
        (
            "a secret sent by a public client",
            json!({"client_id": public_id, "redirect_uris": ["http://127.0.0.1/callback"],
                   "token_endpoint_auth_method": "none", "client_secret": "x"}),
        ),
    ] {
        assert_error(
            &update(&gw, public_id, Some(&public_token), &metadata).await,
            "invalid_client_metadata",
            what,
        );
    }
    let kept = update(
        &gw,
        public_id,
        Some(&public_token),
        &json!({"client_id": public_id, "redirect_uris": ["http://127.0.0.1/other"],
                "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_ok(&kept, "public client stays public");
    assert_eq!(kept["application_type"], json!("native"));
}

#[tokio::test]
async fn delete_registration_revokes_every_grant_and_removes_the_client() {
    let (admin, gw) = (admin().await, gateway().await);
    let answer = registered(&gw, json!({"redirect_uris": ["https://gone.example/cb"]})).await;
    let client = TestClient::registered(&answer, "https://gone.example/cb");
    let token = token_of(&answer);
    let tokens = tokens_for(&gw, &client, &unique("user")).await;
    let grant_id = uuid_field(&tokens, "grant_id");

    assert_eq!(delete(&gw, &client.id, Some(&token)).await, json!({}));
    let revoked: i64 = row_count(&admin, "oauth.events
              WHERE kind = 'grant_revoked' AND grant_id = $1 AND detail->>'reason' = 'client_deleted'", &[&grant_id]).await;
    assert_eq!(revoked, 1, "the grant was revoked (and notified) first");
    let left: i64 = scalar(
        &admin,
        "SELECT (SELECT count(*) FROM oauth.clients WHERE client_id = $1)
                  + (SELECT count(*) FROM oauth.grants WHERE client_id = $1)",
        &[&client.id],
    )
    .await;
    assert_eq!(left, 0, "the client and its grants are gone");
    assert_error(
        &rotate(&gw, &client, str_field(&tokens, "refresh_token")).await,
        "invalid_client",
        "refresh after deregistration",
    );
    assert_error(
        &read(&gw, &client.id, Some(&token)).await,
        "invalid_token",
        "read after delete",
    );
    assert_error(
        &delete(&gw, &client.id, Some(&token)).await,
        "invalid_token",
        "delete twice",
    );
}

#[tokio::test]
async fn an_administrator_created_client_has_no_registration_token_to_manage_it_with() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    for token in [Some(""), Some("anything"), client.secret(), None] {
        assert_error(
            &read(&gw, &client.id, token).await,
            "invalid_token",
            &format!("read {token:?}"),
        );
        assert_error(
            &update(
                &gw,
                &client.id,
                token,
                &json!({"client_id": client.id, "redirect_uris": ["https://evil.example/cb"]}),
            )
            .await,
            "invalid_token",
            &format!("update {token:?}"),
        );
        assert_error(
            &delete(&gw, &client.id, token).await,
            "invalid_token",
            &format!("delete {token:?}"),
        );
    }
    let count: i64 = row_count(
        &admin,
        "oauth.clients WHERE client_id = $1 AND redirect_uris = $2",
        &[&client.id, &client.spec.redirect_uris],
    )
    .await;
    assert_eq!(count, 1, "the administrator's client is untouched");
}

#[tokio::test]
async fn an_expired_registered_client_cannot_be_read_updated_or_deleted() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "registered_client_ttl => '1 hour'").await;
    let gw = db.gateway().await;
    let answer = registered(&gw, json!({"redirect_uris": ["https://ttl.example/cb"]})).await;
    let (client_id, token) = (str_field(&answer, "client_id"), token_of(&answer));
    let at = |offset: &str| format!("now() + interval '{offset}'");
    let read_at = |offset: &'static str| {
        let (gw, token) = (&gw, token.clone());
        let sql = format!("SELECT oauth.read_registration($1, $2, {})", at(offset));
        async move { scalar::<Value>(&gw, &sql, &[&client_id, &token]).await }
    };
    assert_ok(&read_at("59 minutes").await, "before expiry");
    assert_error(
        &read_at("1 hour 1 second").await,
        "invalid_token",
        "read after expiry",
    );
    let later = at("1 hour 1 second");
    let updated: Value = scalar(
        &gw,
        &format!("SELECT oauth.update_registration($1, $2, $3, {later})"),
        &[
            &client_id,
            &token,
            &json!({"client_id": client_id, "redirect_uris": ["https://ttl.example/cb"]}),
        ],
    )
    .await;
    assert_error(&updated, "invalid_token", "update after expiry");
    let deleted: Value = scalar(
        &gw,
        &format!("SELECT oauth.delete_registration($1, $2, {later})"),
        &[&client_id, &token],
    )
    .await;
    assert_error(&deleted, "invalid_token", "delete after expiry");
}

#[tokio::test]
async fn a_public_device_only_client_registers_without_redirect_uris_and_starts_the_device_flow() {
    let gw = gateway().await;
    for grant_types in [vec![DEVICE_GRANT], vec![DEVICE_GRANT, "refresh_token"]] {
        let answer = registered(
            &gw,
            json!({"client_name": "TV", "grant_types": grant_types, "token_endpoint_auth_method": "none"}),
        )
        .await;
        assert_eq!(answer["redirect_uris"], json!([]), "{grant_types:?}");
        assert_eq!(answer.get("client_secret"), None);
        let started: Value = scalar(
            &gw,
            "SELECT oauth.begin_device_authorization($1, NULL, 'mcp', NULL)",
            &[&str_field(&answer, "client_id")],
        )
        .await;
        assert_ok(&started, "device authorization by the registered client");
        // It cannot start a code flow: it has neither the grant nor a redirect URI.
        let client = TestClient::registered(&answer, "http://127.0.0.1/callback");
        assert_error(
            &begin_authorization(&gw, &authorize_params(&client, &Pkce::new(), json!({}))).await,
            "invalid_request",
            "code flow without a redirect URI",
        );
    }
    let unnamed = registered(
        &gw,
        json!({"grant_types": [DEVICE_GRANT], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(unnamed["client_name"], json!("unnamed client"));
}

#[tokio::test]
async fn refresh_token_is_refused_without_a_grant_that_issues_refresh_tokens() {
    let gw = gateway().await;
    for grant_types in [
        json!(["refresh_token"]),
        json!(["refresh_token", "client_credentials"]),
    ] {
        assert_error(
            &register(
                &gw,
                &json!({"grant_types": grant_types, "redirect_uris": ["https://app.example/cb"]}),
            )
            .await,
            "invalid_client_metadata",
            &grant_types.to_string(),
        );
    }
    // The code grant needs a redirect URI; the other grants do not.
    assert_error(
        &register(&gw, &json!({"grant_types": ["authorization_code"]})).await,
        "invalid_redirect_uri",
        "code grant without redirect URIs",
    );
    // Registration is open to anyone, so it may not create machine clients: their tokens would
    // carry no user's approval.
    for grant_types in [
        json!(["client_credentials"]),
        json!(["authorization_code", "client_credentials"]),
    ] {
        let refused = register(
            &gw,
            &json!({"grant_types": grant_types, "redirect_uris": ["https://app.example/cb"]}),
        )
        .await;
        assert_error(
            &refused,
            "invalid_client_metadata",
            &grant_types.to_string(),
        );
        assert!(
            refused["error_description"]
                .as_str()
                .unwrap()
                .contains("administrator"),
            "{refused}"
        );
    }
}
