//! Administrator-managed clients: create, update, rotate secret, delete, list, get_client, and
//! client authentication at the token endpoint.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

#[tokio::test]
async fn confidential_client_gets_a_256_bit_secret_stored_only_as_its_sha256() {
    let (db, client) = admin_with_client().await;
    let secret = client
        .secret
        .clone()
        .expect("a confidential client gets a secret");
    assert_eq!(secret.len(), 43, "32 random bytes, base64url");
    let row = one_row(
        &db,
        "SELECT secret_hash, client_name, token_endpoint_auth_method, registered_dynamically, created_at = updated_at
               FROM oauth.clients WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_eq!(row.get::<_, Vec<u8>>(0), sha256(&secret));
    assert_eq!(row.get::<_, String>(1), client.spec.name);
    assert_eq!(row.get::<_, String>(2), "client_secret_basic");
    assert!(!row.get::<_, bool>(3));
    assert!(row.get::<_, bool>(4));
    // The plaintext is nowhere in the database row.
    let leaked: bool = scalar(
        &db,
        "SELECT c::text LIKE '%' || $2 || '%' FROM oauth.clients c WHERE client_id = $1",
        &[&client.id, &secret],
    )
    .await;
    assert!(!leaked);
    let created: i64 = event_count(&db, "client_created", "client_id", &client.id).await;
    assert_eq!(created, 1);
}

#[tokio::test]
async fn public_client_has_no_secret_and_authenticates_without_one() {
    let db = admin().await;
    let client = create_client(&db, ClientSpec::public_native()).await;
    assert_eq!(client.secret, None);
    let hash: Option<Vec<u8>> = scalar(
        &db,
        "SELECT secret_hash FROM oauth.clients WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_eq!(hash, None);
    let user = unique("user");
    let tokens = tokens_for(&db, &client, &user).await;
    assert_eq!(str_field(&tokens, "client_id"), client.id);
    // A public client presenting a secret is not what was registered.
    let auth = authorize(&db, &client, &user).await;
    let answer = Exchange {
        client_secret: Some("some-secret"),
        ..auth.exchange()
    }
    .run(&db)
    .await;
    assert_error(&answer, "invalid_client", "public client with a secret");
}

#[tokio::test]
async fn create_client_client_secret_post_and_metadata_are_kept() {
    let db = admin().await;
    let spec = ClientSpec {
        auth_method: "client_secret_post".into(),
        metadata: json!({"client_uri": "https://app.example", "owner": "team-a"}),
        allowed_resources: Some(vec!["https://mcp.example/mcp".into()]),
        scopes: vec!["mcp".into()],
        ..Default::default()
    };
    let client = create_client(&db, spec).await;
    assert!(client.secret.is_some());
    let row = one_row(
        &db,
        "SELECT client_name, redirect_uris, allowed_scopes, grant_types, token_endpoint_auth_method,
                    application_type, allowed_resources, metadata, registered_dynamically, expires_at IS NULL
               FROM oauth.list_clients() WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), client.spec.name);
    assert_eq!(row.get::<_, Vec<String>>(1), client.spec.redirect_uris);
    assert_eq!(row.get::<_, Vec<String>>(2), vec!["mcp"]);
    assert_eq!(
        row.get::<_, Vec<String>>(3),
        vec!["authorization_code", "refresh_token"]
    );
    assert_eq!(row.get::<_, String>(4), "client_secret_post");
    assert_eq!(row.get::<_, String>(5), "web");
    assert_eq!(
        row.get::<_, Option<Vec<String>>>(6),
        Some(vec!["https://mcp.example/mcp".to_string()])
    );
    assert_eq!(
        row.get::<_, Value>(7),
        json!({"client_uri": "https://app.example", "owner": "team-a"})
    );
    assert!(!row.get::<_, bool>(8));
    assert!(row.get::<_, bool>(9));
}

#[tokio::test]
async fn create_client_refuses_each_bad_field_with_its_sqlstate() {
    let db = admin().await;
    let spec = |change: fn(&mut ClientSpec)| {
        let mut spec = ClientSpec::default();
        change(&mut spec);
        spec
    };
    let cases: Vec<(&str, ClientSpec, &str)> = vec![
        ("empty name", spec(|s| s.name = String::new()), "OA408"),
        ("name over 200", spec(|s| s.name = "n".repeat(201)), "OA408"),
        (
            "metadata not an object",
            spec(|s| s.metadata = json!([1])),
            "OA408",
        ),
        (
            "application_type",
            spec(|s| s.application_type = "desktop".into()),
            "OA408",
        ),
        (
            "auth method",
            spec(|s| s.auth_method = "private_key_jwt".into()),
            "OA408",
        ),
        ("no grant types", spec(|s| s.grant_types = vec![]), "OA408"),
        (
            "refresh only",
            spec(|s| s.grant_types = vec!["refresh_token".into()]),
            "OA408",
        ),
        (
            "implicit",
            spec(|s| s.grant_types = vec!["authorization_code".into(), "implicit".into()]),
            "OA408",
        ),
        (
            "unsupported scope",
            spec(|s| s.scopes = vec!["mcp".into(), "admin".into()]),
            "OA408",
        ),
        (
            "no redirect URIs",
            spec(|s| s.redirect_uris = vec![]),
            "OA409",
        ),
        (
            "21 redirect URIs",
            spec(|s| {
                s.redirect_uris = (0..21)
                    .map(|i| format!("https://a.example/cb{i}"))
                    .collect()
            }),
            "OA409",
        ),
        (
            "fragment",
            spec(|s| s.redirect_uris = vec!["https://a.example/cb#x".into()]),
            "OA409",
        ),
        (
            "http off loopback",
            spec(|s| s.redirect_uris = vec!["http://a.example/cb".into()]),
            "OA409",
        ),
        (
            "loopback for a web client",
            spec(|s| s.redirect_uris = vec!["http://127.0.0.1/cb".into()]),
            "OA409",
        ),
        (
            "non-canonical",
            spec(|s| s.redirect_uris = vec!["https://A.example/cb".into()]),
            "OA409",
        ),
        (
            "javascript",
            ClientSpec {
                redirect_uris: vec!["javascript:alert(1)".into()],
                ..ClientSpec::public_native()
            },
            "OA409",
        ),
        (
            "bad resource",
            spec(|s| s.allowed_resources = Some(vec!["https://mcp.example/#x".into()])),
            "OA408",
        ),
    ];
    for (what, spec, code) in cases {
        assert_sqlstate(try_create_client(&db, &spec).await, code, what);
    }
    // NULL arrays are refused too, with the same codes.
    for (what, arguments, code) in [
        ("NULL redirect_uris", "'x', NULL, '{mcp}'", "OA409"),
        (
            "NULL scopes",
            "'x', '{https://a.example/cb}', NULL",
            "OA408",
        ),
        (
            "NULL redirect URI in the list",
            "'x', ARRAY['https://a.example/cb', NULL], '{mcp}'",
            "OA409",
        ),
    ] {
        let sql = format!("SELECT * FROM oauth.create_client({arguments})");
        assert_sqlstate(db.query_one(&sql, &[]).await, code, what);
    }
    // The error message names the problem and HINT carries the OAuth error code.
    let http = spec(|s| s.redirect_uris = vec!["http://a.example/cb".into()]);
    let err = try_create_client(&db, &http).await.unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert!(
        db_err.message().contains("http://a.example/cb"),
        "{}",
        db_err.message()
    );
    assert_eq!(db_err.hint(), Some("invalid_redirect_uri"));
}

#[tokio::test]
async fn update_client_changes_only_the_given_fields_and_validates_the_result() {
    let (db, client) = admin_with_client().await;
    execute(
        &db,
        "SELECT oauth.update_client($1, client_name => 'Renamed', allowed_scopes => '{mcp}')",
        &[&client.id],
    )
    .await;
    let row = one_row(
        &db,
        "SELECT client_name, allowed_scopes, redirect_uris, updated_at >= created_at FROM oauth.clients WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "Renamed");
    assert_eq!(row.get::<_, Vec<String>>(1), vec!["mcp"]);
    assert_eq!(row.get::<_, Vec<String>>(2), client.spec.redirect_uris);
    // The secret still works.
    let user = unique("user");
    let auth = Authorize {
        params: json!({"scope": "mcp"}),
        ..Authorize::new(&client)
    };
    assert_ok(
        &auth.run(&db, &user).await.exchange().run(&db).await,
        "updated client still authenticates",
    );
    let answer = Authorize {
        params: json!({"scope": "openid"}),
        ..auth
    }
    .begin(&db)
    .await;
    assert_error(&answer, "invalid_scope", "scope removed by update_client");

    for (what, sql, code) in [
        (
            "unknown client",
            "SELECT oauth.update_client('no-such-client', client_name => 'x')",
            "OA411",
        ),
        (
            "empty name",
            "SELECT oauth.update_client($1, client_name => '')",
            "OA408",
        ),
        (
            "bad redirect",
            "SELECT oauth.update_client($1, redirect_uris => '{http://evil.example/cb}')",
            "OA409",
        ),
        (
            "empty redirects",
            "SELECT oauth.update_client($1, redirect_uris => '{}')",
            "OA409",
        ),
        (
            "bad scope",
            "SELECT oauth.update_client($1, allowed_scopes => '{root}')",
            "OA408",
        ),
        (
            "bad grant types",
            "SELECT oauth.update_client($1, grant_types => '{refresh_token}')",
            "OA408",
        ),
        (
            "bad resource",
            "SELECT oauth.update_client($1, allowed_resources => '{ftp://x.example/}')",
            "OA408",
        ),
        (
            "metadata",
            "SELECT oauth.update_client($1, metadata => '\"text\"')",
            "OA408",
        ),
    ] {
        assert_sqlstate(try_execute_with(&db, sql, &client.id).await, code, what);
    }
    let name: String = scalar(
        &db,
        "SELECT client_name FROM oauth.clients WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_eq!(name, "Renamed", "failed updates changed nothing");
}

#[tokio::test]
async fn narrowing_allowed_redirect_uris_stops_new_authorizations_to_the_removed_uri() {
    let db = admin().await;
    let old = "https://old.example/cb".to_string();
    let new = "https://new.example/cb".to_string();
    let client = create_client(
        &db,
        ClientSpec {
            redirect_uris: vec![old.clone(), new.clone()],
            ..Default::default()
        },
    )
    .await;
    execute(
        &db,
        "SELECT oauth.update_client($1, redirect_uris => $2)",
        &[&client.id, &vec![new.clone()]],
    )
    .await;
    let answer = Authorize {
        params: json!({"redirect_uri": old}),
        ..Authorize::new(&client)
    }
    .begin(&db)
    .await;
    assert_error(&answer, "invalid_request", "removed redirect URI");
    assert_eq!(answer["redirect"], json!(false));
}

#[tokio::test]
async fn rotate_client_secret_replaces_the_secret() {
    let (db, client) = admin_with_client().await;
    let user = unique("user");
    let auth = authorize(&db, &client, &user).await;
    let new_secret: String =
        scalar(&db, "SELECT oauth.rotate_client_secret($1)", &[&client.id]).await;
    assert_eq!(new_secret.len(), 43);
    assert_ne!(Some(&new_secret), client.secret.as_ref());
    let old_try = exchange(&db, &client, &auth).await;
    assert_error(&old_try, "invalid_client", "old secret");
    let answer = exchange(&db, &client.with_secret(Some(&new_secret)), &auth).await;
    assert_ok(&answer, "new secret");

    let public = create_client(&db, ClientSpec::public_native()).await;
    assert_sqlstate(
        db.query_one("SELECT oauth.rotate_client_secret($1)", &[&public.id])
            .await,
        "OA411",
        "public client has no secret to rotate",
    );
    assert_sqlstate(
        db.query_one("SELECT oauth.rotate_client_secret('no-such-client')", &[])
            .await,
        "OA411",
        "unknown client",
    );
}

#[tokio::test]
async fn delete_client_answers_whether_it_existed() {
    let (db, client) = admin_with_client().await;
    assert!(delete_client(&db, &client.id).await);
    assert!(!delete_client(&db, &client.id).await);
    let listed: i64 = row_count(
        &db,
        "oauth.list_clients() WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_eq!(listed, 0);
    let get: Value = scalar(&db, "SELECT oauth.get_client($1)", &[&client.id]).await;
    assert_error(&get, "invalid_client", "deleted client");
}

#[tokio::test]
async fn get_client_shows_public_metadata_only() {
    let db = gateway().await;
    let admin = admin().await;
    let with_uri = ClientSpec {
        metadata: json!({"client_uri": "https://app.example"}),
        ..Default::default()
    };
    let client = create_client(&admin, with_uri).await;
    let answer: Value = scalar(&db, "SELECT oauth.get_client($1)", &[&client.id]).await;
    assert_eq!(answer["client_id"], json!(client.id));
    assert_eq!(answer["client_name"], json!(client.spec.name));
    assert_eq!(answer["redirect_uris"], json!(client.spec.redirect_uris));
    assert_eq!(
        answer["scope"],
        json!("openid profile email offline_access mcp")
    );
    assert_eq!(answer["response_types"], json!(["code"]));
    assert_eq!(
        answer["token_endpoint_auth_method"],
        json!("client_secret_basic")
    );
    assert_eq!(answer["client_uri"], json!("https://app.example"));
    assert!(answer["client_id_issued_at"].is_i64());
    let text = answer.to_string();
    assert!(!text.contains("secret_hash") && !text.contains(client.secret().unwrap()));
    let unknown: Value = scalar(&db, "SELECT oauth.get_client('nope')", &[]).await;
    assert_error(&unknown, "invalid_client", "unknown client");
}

#[tokio::test]
async fn token_endpoint_client_authentication_failures_are_invalid_client() {
    let (db, client) = admin_with_client().await;
    let auth = authorize(&db, &client, &unique("user")).await;
    let presented = auth.exchange();
    for (what, request) in [
        (
            "wrong secret",
            Exchange {
                client_secret: Some("not-the-secret"),
                ..presented
            },
        ),
        (
            "no secret",
            Exchange {
                client_secret: None,
                ..presented
            },
        ),
        (
            "empty secret",
            Exchange {
                client_secret: Some(""),
                ..presented
            },
        ),
        (
            "unknown client",
            Exchange {
                client_id: "no-such-client",
                ..presented
            },
        ),
        (
            "empty client id",
            Exchange {
                client_id: "",
                ..presented
            },
        ),
    ] {
        assert_error(&request.run(&db).await, "invalid_client", what);
    }
    // Failed authentication did not burn the code.
    assert_ok(
        &exchange(&db, &client, &auth).await,
        "the right secret still redeems the code",
    );
}
