//! Settings, cleanup, DROP/CREATE EXTENSION and pg_dump/restore, each in a throw-away database.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

#[tokio::test]
async fn configure_changes_settings_and_null_keeps_them() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let defaults: Value = scalar(&admin, "SELECT oauth.settings()", &[]).await;
    assert_eq!(defaults["issuer"], json!("http://127.0.0.1:8080"));
    assert_eq!(defaults["code_ttl"], json!(60));
    assert_eq!(
        defaults["refresh_reuse_grace"],
        json!(5),
        "parallel refreshes within 5 s get one successor"
    );
    assert_eq!(defaults["registration_enabled"], json!(true));
    let changed: Value = scalar(
        &admin,
        "SELECT oauth.configure(issuer => 'https://auth.example', access_token_ttl => '5 minutes', code_ttl => '30 seconds')",
        &[],
    )
    .await;
    assert_eq!(changed["issuer"], json!("https://auth.example"));
    assert_eq!(changed["access_token_ttl"], json!(300));
    assert_eq!(changed["code_ttl"], json!(30));
    let kept: Value = scalar(
        &admin,
        "SELECT oauth.configure(default_scopes => '{openid}')",
        &[],
    )
    .await;
    assert_eq!(
        kept["issuer"],
        json!("https://auth.example"),
        "NULL keeps the value"
    );
    assert_eq!(kept["default_scopes"], json!(["openid"]));

    for (what, sql, code) in [
        (
            "issuer with query",
            "SELECT oauth.configure(issuer => 'https://a.example/?x=1')",
            "OA400",
        ),
        (
            "issuer with fragment",
            "SELECT oauth.configure(issuer => 'https://a.example/#x')",
            "OA400",
        ),
        (
            "issuer not http",
            "SELECT oauth.configure(issuer => 'urn:x')",
            "OA400",
        ),
        (
            "code_ttl over 10 minutes",
            "SELECT oauth.configure(code_ttl => '11 minutes')",
            "23514",
        ),
        (
            "grace over a minute",
            "SELECT oauth.configure(refresh_reuse_grace => '2 minutes')",
            "23514",
        ),
    ] {
        assert_sqlstate(admin.query_one(sql, &[]).await, code, what);
    }

    // The issuer goes out as `iss` and the TTLs to the token response.
    let client = confidential_client(&admin).await;
    let auth = Authorize {
        params: json!({"scope": "openid"}),
        ..Authorize::new(&client)
    }
    .run(&admin, &unique("user"))
    .await;
    assert_eq!(
        parse_redirect(&auth.location).param("iss"),
        "https://auth.example"
    );
    let t = exchange(&admin, &client, &auth).await;
    assert_eq!(t["access_token_ttl"], json!(300));
    let expires: bool = scalar(
        &admin,
        "SELECT expires_at = created_at + interval '30 seconds' FROM oauth.codes WHERE code_hash = $1",
        &[&sha256(&auth.code)],
    )
    .await;
    assert!(expires, "code_ttl applies");
    let begun = Authorize {
        params: json!({"scope": null}),
        ..Authorize::new(&client)
    }
    .begin(&admin)
    .await;
    let scopes: Vec<String> = scalar(
        &admin,
        "SELECT scopes FROM oauth.get_authorization_request($1)",
        &[&str_field(&begun, "request_id")],
    )
    .await;
    assert_eq!(scopes, vec!["openid"], "default_scopes applies");
}

#[tokio::test]
async fn cleanup_removes_expired_rows_and_returns_how_many() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    // Events have their own retention (tests/tests/events.rs); past 30 days they would count too.
    let _: Value = scalar(
        &admin,
        "SELECT oauth.configure(event_retention => '1 year')",
        &[],
    )
    .await;
    let client = confidential_client(&admin).await;
    // One pending request, one unredeemed code, one family (with a redeemed code), one revoked grant with a family.
    let _pending = Authorize::new(&client).begin(&admin).await;
    let _unredeemed = authorize(&admin, &client, "user-a").await;
    let live = tokens_for(&admin, &client, "user-b").await;
    let revoked = tokens_for(&admin, &client, "user-c").await;
    revoke_grant(&admin, uuid_field(&revoked, "grant_id")).await;
    let count = |table: &'static str| {
        let admin = &admin;
        async move { scalar::<i64>(admin, &format!("SELECT count(*) FROM oauth.{table}"), &[]).await }
    };
    // The revoke deleted user-c's... nothing unredeemed; so: 1 request, 3 codes, 2 families, 3 grants.
    assert_eq!(count("authorization_requests").await, 1);
    assert_eq!(count("codes").await, 3);
    assert_eq!(count("refresh_families").await, 2);
    assert_eq!(count("grants").await, 3);

    let nothing: i64 = scalar(&admin, "SELECT oauth.cleanup()", &[]).await;
    assert_eq!(nothing, 0, "nothing has expired yet");

    // 11 minutes: request and codes expired.
    let removed: i64 = cleanup_in(&admin, "11 minutes").await;
    assert_eq!(removed, 4, "1 request + 3 codes");
    assert_eq!(count("authorization_requests").await, 0);
    assert_eq!(count("codes").await, 0);
    assert_eq!(count("refresh_families").await, 2);

    // 8 days: the revoked family and grant are past their audit retention.
    let removed: i64 = cleanup_in(&admin, "8 days").await;
    assert_eq!(removed, 2, "revoked family + revoked grant");
    assert_eq!(count("grants").await, 2);
    assert_ok(
        &rotate(&admin, &client, str_field(&live, "refresh_token")).await,
        "live family untouched",
    );

    // 31 days: the live family expired; grants stay (consent does not expire).
    let removed: i64 = cleanup_in(&admin, "31 days").await;
    assert_eq!(removed, 1, "the expired family");
    assert_eq!(count("refresh_families").await, 0);
    assert_eq!(
        count("refresh_tokens").await,
        0,
        "tokens cascade with their family"
    );
    assert_eq!(count("grants").await, 2);
    let again: i64 = cleanup_in(&admin, "31 days").await;
    assert_eq!(again, 0);

    // Batches: batch_size bounds each kind of row per call.
    for _ in 0..5 {
        Authorize::new(&client).begin(&admin).await;
    }
    let first: i64 = scalar(
        &admin,
        "SELECT oauth.cleanup(now() + interval '11 minutes', 2)",
        &[],
    )
    .await;
    assert_eq!(first, 2);
    let mut total = first;
    loop {
        let n: i64 = scalar(
            &admin,
            "SELECT oauth.cleanup(now() + interval '11 minutes', 2)",
            &[],
        )
        .await;
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 5);
}

#[tokio::test]
async fn drop_extension_then_create_extension_works() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    confidential_client(&admin).await;
    admin
        .batch_execute("DROP EXTENSION oauth_provider")
        .await
        .expect("DROP EXTENSION");
    // The control file names the schema, so PostgreSQL created it outside the extension and it
    // stays; everything the extension created in it is gone.
    let left: i64 = scalar(
        &admin,
        "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'oauth'::regnamespace)
                  + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'oauth'::regnamespace)",
        &[],
    )
    .await;
    assert_eq!(left, 0, "no table or function outlives the extension");
    admin
        .batch_execute("CREATE EXTENSION oauth_provider")
        .await
        .expect("CREATE EXTENSION again");
    let clients: i64 = row_count(&admin, "oauth.clients", &[]).await;
    assert_eq!(clients, 0);
    // Grants to the existing roles were re-applied, and everything works.
    let gw = db.gateway().await;
    let client = confidential_client(&admin).await;
    let t = tokens_for(&gw, &client, &unique("user")).await;
    assert_ok(
        &rotate(&gw, &client, str_field(&t, "refresh_token")).await,
        "rotation after re-create",
    );
    admin
        .batch_execute("DROP EXTENSION oauth_provider CASCADE; CREATE EXTENSION oauth_provider")
        .await
        .unwrap();
}

#[tokio::test]
async fn pg_dump_and_restore_keep_clients_grants_settings_and_a_restored_refresh_token_rotates() {
    let source = TempDb::create().await;
    let admin = source.admin().await;
    configure(
        &admin,
        "issuer => 'https://restored.example', refresh_reuse_grace => '5 seconds'",
    )
    .await;
    let client = confidential_client(&admin).await;
    let public = create_client(&admin, ClientSpec::public_native()).await;
    let user = unique("user");
    let t = tokens_for(&admin, &client, &user).await;
    let r1 = str_field(
        &rotate(&admin, &client, str_field(&t, "refresh_token")).await,
        "refresh_token",
    )
    .to_owned();
    let tp = tokens_for(&admin, &public, &user).await;
    let revoked = tokens_for(&admin, &client, &unique("user")).await;
    revoke_grant(&admin, uuid_field(&revoked, "grant_id")).await;
    let events_before: i64 = row_count(&admin, "oauth.events", &[]).await;

    for format in ["plain", "custom"] {
        let target = dump_and_restore(&source, format).await;
        let restored = target.admin().await;
        let settings: Value = scalar(&restored, "SELECT oauth.settings()", &[]).await;
        assert_eq!(
            settings["issuer"],
            json!("https://restored.example"),
            "{format}: settings survive"
        );
        assert_eq!(settings["refresh_reuse_grace"], json!(5));
        let clients: Vec<String> = column(
            &restored,
            "SELECT client_id FROM oauth.list_clients() ORDER BY client_id",
            &[],
        )
        .await;
        let mut expected = vec![client.id.clone(), public.id.clone()];
        expected.sort();
        assert_eq!(clients, expected, "{format}: clients survive");
        let grants: i64 = row_count(&restored, "oauth.list_user_grants($1)", &[&user]).await;
        assert_eq!(grants, 2, "{format}: grants survive");
        let events: i64 = row_count(&restored, "oauth.events", &[]).await;
        assert_eq!(events, events_before, "{format}: audit events survive");

        let gw = target.gateway().await;
        // The restored secret, refresh token and family work; the rotated-out token is still reuse.
        let next = rotate(&gw, &client, &r1).await;
        assert_ok(&next, &format!("{format}: restored refresh token rotates"));
        assert_eq!(next["family_id"], t["family_id"]);
        assert_ok(
            &rotate(&gw, &public, str_field(&tp, "refresh_token")).await,
            "public client's token",
        );
        assert!(
            !is_active(
                &introspect_claims(&gw, &client, uuid_field(&revoked, "grant_id"), None).await
            ),
            "revoked stays revoked"
        );
        // New rows do not collide with restored ones (sequence restored).
        let fresh = tokens_for(&gw, &client, &unique("user")).await;
        assert_ok(&fresh, "new flow after restore");
        let events_after: i64 = row_count(&restored, "oauth.events", &[]).await;
        assert!(events_after > events_before);
        assert_error(
            &rotate(&gw, &client, str_field(&t, "refresh_token")).await,
            "invalid_grant",
            "old token is reuse",
        );
        drop(target);
    }
}
