//! Refresh-token rotation (RFC 6749 §6, OAuth 2.1 §4.3.1): one live token per family, narrowing,
//! resource binding, reuse detection, expiry and the optional grace window.

use oauth_provider_tests::serde_json::json;
use oauth_provider_tests::*;

#[tokio::test]
async fn rotation_hands_out_a_successor_and_retires_the_presented_token() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let user = unique("user");
    let first = tokens_for(&gw, &client, &user).await;
    let family_id = uuid_field(&first, "family_id");
    let r0 = str_field(&first, "refresh_token").to_owned();
    let second = rotate(&gw, &client, &r0).await;
    assert_ok(&second, "rotation");
    let r1 = str_field(&second, "refresh_token").to_owned();
    assert_ne!(r0, r1);
    assert_eq!(second["family_id"], first["family_id"]);
    assert_eq!(second["grant_id"], first["grant_id"]);
    assert_eq!(second["user_id"], json!(user));
    assert_eq!(second["scope"], first["scope"]);
    assert_eq!(
        second["nonce"],
        json!(null),
        "nonce belongs to the code exchange only"
    );
    assert_eq!(second["auth_time"], first["auth_time"]);
    assert!(
        second["refresh_expires_in"].as_i64().unwrap()
            <= first["refresh_expires_in"].as_i64().unwrap(),
        "rotation does not extend the family"
    );

    let family = family_row(&admin, family_id).await;
    assert_eq!(family.current_hash, Some(sha256(&r1)));
    assert_eq!(family.previous_hash, Some(sha256(&r0)));
    assert_eq!(family.generation, 1);
    assert_eq!(
        family.token_count, 0,
        "no row per token: the family row is all"
    );
    assert!(is_active(&introspect_refresh(&gw, &client, &r1).await));
    assert!(
        !is_active(&introspect_refresh(&gw, &client, &r0).await),
        "rotated token is inactive"
    );

    let third = rotate(&gw, &client, &r1).await;
    assert_ok(&third, "second rotation");
    assert_eq!(family_row(&admin, family_id).await.generation, 2);
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_family_and_the_grant() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let first = tokens_for(&admin, &client, &user).await;
    let family_id = uuid_field(&first, "family_id");
    let grant_id = uuid_field(&first, "grant_id");
    // A second family under the same grant (another device).
    let other = tokens_for(&admin, &client, &user).await;
    assert_eq!(uuid_field(&other, "grant_id"), grant_id);

    let r0 = str_field(&first, "refresh_token").to_owned();
    let r1 = str_field(&rotate(&admin, &client, &r0).await, "refresh_token").to_owned();
    let reuse = rotate_after_grace(&admin, &client, &r0).await;
    assert_error(&reuse, "invalid_grant", "reuse");

    let family = family_row(&admin, family_id).await;
    assert!(family.revoked);
    assert_eq!(
        family.revoked_reason.as_deref(),
        Some("refresh_token_reused")
    );
    assert_eq!(family.current_hash, None);
    assert!(
        !grant_live(&admin, grant_id).await,
        "reuse revokes the grant"
    );
    assert!(
        family_row(&admin, uuid_field(&other, "family_id"))
            .await
            .revoked,
        "and every family of it"
    );
    assert_error(
        &rotate(&admin, &client, &r1).await,
        "invalid_grant",
        "the successor is dead too",
    );
    assert_error(
        &rotate(&admin, &client, str_field(&other, "refresh_token")).await,
        "invalid_grant",
        "other family",
    );
    assert!(!is_active(
        &introspect_claims(&admin, &client, grant_id, Some(family_id)).await
    ));
    assert!(user_grant_ids(&admin, &user).await.is_empty());
    let reused_events: i64 = event_count(&admin, "refresh_reused", "family_id", &family_id).await;
    assert_eq!(reused_events, 1);

    // Consenting again starts a new grant; the old tokens stay dead.
    let fresh = tokens_for(&admin, &client, &user).await;
    assert_ne!(uuid_field(&fresh, "grant_id"), grant_id);
    assert_error(
        &rotate(&admin, &client, &r1).await,
        "invalid_grant",
        "old token after re-consent",
    );
}

#[tokio::test]
async fn scope_may_narrow_on_refresh_but_never_widen() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let auth = Authorize {
        params: json!({"scope": "openid mcp email"}),
        ..Authorize::new(&client)
    }
    .run(&admin, &user)
    .await;
    let first = auth.exchange().run(&admin).await;
    let r0 = str_field(&first, "refresh_token").to_owned();

    let narrowed = Rotate {
        scope: Some("mcp"),
        ..Rotate::of(&client, &r0)
    }
    .run(&admin)
    .await;
    assert_ok(&narrowed, "narrowing");
    assert_eq!(narrowed["scope"], json!("mcp"));
    let r1 = str_field(&narrowed, "refresh_token").to_owned();

    for (what, scope, code) in [
        ("widening", "mcp profile", "invalid_scope"),
        ("unknown scope", "admin", "invalid_scope"),
        ("malformed", "mcp  email", "invalid_scope"),
    ] {
        let answer = Rotate {
            scope: Some(scope),
            ..Rotate::of(&client, &r1)
        }
        .run(&admin)
        .await;
        assert_error(&answer, code, what);
    }
    // Refused requests neither rotated nor revoked: the token still works, for the whole grant.
    let family = family_row(&admin, uuid_field(&first, "family_id")).await;
    assert!(!family.revoked);
    assert_eq!(family.current_hash, Some(sha256(&r1)));
    let full = rotate(&admin, &client, &r1).await;
    assert_ok(&full, "no scope asks for everything granted");
    assert_eq!(full["scope"], json!("openid mcp email"));
}

#[tokio::test]
async fn resource_binding_is_preserved_across_rotation() {
    let (admin, client) = admin_with_client().await;
    let resource = "https://mcp.example/mcp";
    let user = unique("user");
    let auth = Authorize {
        params: json!({"resource": resource}),
        ..Authorize::new(&client)
    }
    .run(&admin, &user)
    .await;
    let first = auth.exchange().run(&admin).await;
    let r0 = str_field(&first, "refresh_token").to_owned();

    let other = Rotate {
        resource: Some("https://evil.example/mcp"),
        ..Rotate::of(&client, &r0)
    }
    .run(&admin)
    .await;
    assert_error(&other, "invalid_target", "another resource");
    let same = Rotate {
        resource: Some(resource),
        ..Rotate::of(&client, &r0)
    }
    .run(&admin)
    .await;
    assert_ok(&same, "the bound resource repeated");
    assert_eq!(same["resource"], json!(resource));
    let omitted = rotate(&admin, &client, str_field(&same, "refresh_token")).await;
    assert_ok(&omitted, "resource omitted");
    assert_eq!(
        omitted["resource"],
        json!(resource),
        "binding kept when omitted"
    );

    // A token without a binding cannot acquire one.
    let unbound = tokens_for(&admin, &client, &unique("user")).await;
    let answer = Rotate {
        resource: Some(resource),
        ..Rotate::of(&client, str_field(&unbound, "refresh_token"))
    }
    .run(&admin)
    .await;
    assert_error(&answer, "invalid_target", "adding a resource on refresh");
}

#[tokio::test]
async fn rotation_errors_have_their_codes_and_revoke_nothing() {
    let (admin, client) = admin_with_client().await;
    let other = confidential_client(&admin).await;
    let first = tokens_for(&admin, &client, &unique("user")).await;
    let token = str_field(&first, "refresh_token").to_owned();
    let presented = Rotate::of(&client, &token);
    for (what, request, code) in [
        (
            "wrong secret",
            Rotate {
                client_secret: Some("wrong"),
                ..presented
            },
            "invalid_client",
        ),
        (
            "no secret",
            Rotate {
                client_secret: None,
                ..presented
            },
            "invalid_client",
        ),
        (
            "unknown client",
            Rotate {
                client_id: "no-such-client",
                client_secret: Some("x"),
                ..presented
            },
            "invalid_client",
        ),
        (
            "no token",
            Rotate {
                refresh_token: None,
                ..presented
            },
            "invalid_request",
        ),
        (
            "empty token",
            Rotate {
                refresh_token: Some(""),
                ..presented
            },
            "invalid_request",
        ),
        (
            "unknown token",
            Rotate {
                refresh_token: Some("not-a-token"),
                ..presented
            },
            "invalid_grant",
        ),
        (
            "another client's token",
            Rotate {
                client_id: &other.id,
                client_secret: other.secret(),
                ..presented
            },
            "invalid_grant",
        ),
    ] {
        assert_error(&request.run(&admin).await, code, what);
    }
    let family = family_row(&admin, uuid_field(&first, "family_id")).await;
    assert!(
        !family.revoked,
        "a foreign client presenting the token does not revoke it"
    );
    assert_ok(
        &rotate(&admin, &client, &token).await,
        "token still rotates",
    );
}

#[tokio::test]
async fn client_without_the_refresh_grant_cannot_rotate() {
    let (admin, client) = admin_with_client().await;
    let first = tokens_for(&admin, &client, &unique("user")).await;
    execute(
        &admin,
        "SELECT oauth.update_client($1, grant_types => '{authorization_code}')",
        &[&client.id],
    )
    .await;
    let answer = rotate(&admin, &client, str_field(&first, "refresh_token")).await;
    assert_error(&answer, "unauthorized_client", "refresh grant removed");
}

#[tokio::test]
async fn refresh_family_expires_after_refresh_token_ttl_without_sliding() {
    let (admin, client) = admin_with_client().await;
    let first = tokens_for(&admin, &client, &unique("user")).await;
    let r0 = str_field(&first, "refresh_token").to_owned();
    let later = db_time_in(&admin, "29 days").await;
    let rotated = Rotate::of(&client, &r0).at(&later).run(&admin).await;
    assert_ok(&rotated, "29 days in");
    let expires_in = rotated["refresh_expires_in"].as_i64().unwrap();
    assert!(
        expires_in <= 86400,
        "the family's absolute lifetime is kept: {expires_in}"
    );
    let beyond = db_time_in(&admin, "30 days 1 second").await;
    let r1 = str_field(&rotated, "refresh_token").to_owned();
    let answer = Rotate::of(&client, &r1).at(&beyond).run(&admin).await;
    assert_error(&answer, "invalid_grant", "expired family");
    let family = family_row(&admin, uuid_field(&first, "family_id")).await;
    assert!(!family.revoked, "expiry is not reuse");
    let answer: oauth_provider_tests::serde_json::Value = scalar(
        &admin,
        "SELECT oauth.introspect($1, $2, $3, NULL, NULL, now => $4::text::timestamptz)",
        &[&client.id, &client.secret, &r1, &beyond],
    )
    .await;
    assert!(!is_active(&answer));
}

#[tokio::test]
async fn within_the_grace_window_a_retired_token_gets_the_same_successor_and_then_reuse_revokes() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "refresh_reuse_grace => '10 seconds'").await;
    let client = confidential_client(&admin).await;
    let first = tokens_for(&admin, &client, &unique("user")).await;
    let family_id = uuid_field(&first, "family_id");
    let t0: String = scalar(&admin, "SELECT now()::text", &[]).await;
    let at = |secs: i64| {
        let (t0, admin) = (t0.clone(), &admin);
        async move {
            scalar::<String>(
                admin,
                "SELECT ($1::text::timestamptz + make_interval(secs => $2))::text",
                &[&t0, &(secs as f64)],
            )
            .await
        }
    };
    let rotate_at = |token: &str, secs: i64| {
        let (client, admin, token, at) = (&client, &admin, token.to_owned(), &at);
        async move {
            let now = at(secs).await;
            Rotate::of(client, &token).at(&now).run(admin).await
        }
    };

    let a = str_field(&first, "refresh_token").to_owned();
    let b = rotate_at(&a, 1).await;
    assert_ok(&b, "A -> B");
    let b = str_field(&b, "refresh_token").to_owned();
    // The response with B was lost (or a parallel call lost the race); A comes back within the
    // window and gets B again: the one live token, nothing new issued, nothing written.
    let again = rotate_at(&a, 5).await;
    assert_ok(&again, "A again within the grace window");
    assert_eq!(str_field(&again, "refresh_token"), b, "the same successor");
    let family = family_row(&admin, family_id).await;
    assert_eq!(family.current_hash, Some(sha256(&b)), "one live token: B");
    assert_eq!(family.generation, 1, "no rotation happened");
    assert!(!family.revoked);
    // B rotates as usual.
    let c = rotate_at(&b, 6).await;
    assert_ok(&c, "B -> C");
    // A is now two rotations behind: reuse, even inside the window.
    let wide = rotate_at(&a, 7).await;
    assert_error(&wide, "invalid_grant", "A after B rotated");
    assert!(family_row(&admin, family_id).await.revoked);

    // Second family: after the window, the retired token is reuse.
    let second = tokens_for(&admin, &client, &unique("user")).await;
    let f2 = uuid_field(&second, "family_id");
    let a2 = str_field(&second, "refresh_token").to_owned();
    assert_ok(&rotate_at(&a2, 1).await, "A2 -> B2");
    let late = rotate_at(&a2, 12).await;
    assert_error(&late, "invalid_grant", "A2 after the grace window");
    let family = family_row(&admin, f2).await;
    assert!(family.revoked);
    assert_eq!(
        family.revoked_reason.as_deref(),
        Some("refresh_token_reused")
    );

    // Third family: a retry that asks for more than was granted is reuse, not a retry.
    let third = tokens_for(&admin, &client, &unique("user")).await;
    let f3 = uuid_field(&third, "family_id");
    let a3 = str_field(&third, "refresh_token").to_owned();
    assert_ok(&rotate_at(&a3, 1).await, "A3 -> B3");
    let two = at(2).await;
    let widening = Rotate {
        scope: Some("openid mcp profile"),
        ..Rotate::of(&client, &a3).at(&two)
    }
    .run(&admin)
    .await;
    assert_error(&widening, "invalid_grant", "a widening retry is reuse");
    assert!(family_row(&admin, f3).await.revoked);
    drop(admin);
}

/// A rotated token presented again and again must not rotate forever: the window opens at the
/// first rotation and does not move with each retry.
#[tokio::test]
async fn the_grace_window_counts_from_the_first_rotation_not_the_last_retry() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "refresh_reuse_grace => '10 seconds'").await;
    let client = confidential_client(&admin).await;
    let first = tokens_for(&admin, &client, &unique("user")).await;
    let family_id = uuid_field(&first, "family_id");
    let t0: String = scalar(&admin, "SELECT now()::text", &[]).await;
    let a = str_field(&first, "refresh_token").to_owned();
    let mut answers = Vec::new();
    // A rotates at +1 s; retries of A at +8 s (inside the window) and at +14 s (6 s after the
    // last retry, 13 s after the first rotation).
    for secs in [1.0_f64, 8.0, 14.0] {
        let now: String = scalar(
            &admin,
            "SELECT ($1::text::timestamptz + make_interval(secs => $2))::text",
            &[&t0, &secs],
        )
        .await;
        answers.push(Rotate::of(&client, &a).at(&now).run(&admin).await);
    }
    assert_ok(&answers[0], "A -> B at +1 s");
    assert_ok(&answers[1], "A again at +8 s, within 10 s of the rotation");
    assert_eq!(answers[0]["refresh_token"], answers[1]["refresh_token"]);
    assert_error(
        &answers[2],
        "invalid_grant",
        "A at +14 s: 13 s after the first rotation",
    );
    let family = family_row(&admin, family_id).await;
    assert!(family.revoked, "a retry after the window is reuse");
    assert_eq!(
        family.revoked_reason.as_deref(),
        Some("refresh_token_reused")
    );
}

#[tokio::test]
async fn without_a_grace_window_a_retry_is_reuse_even_if_it_started_before_the_rotation() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "refresh_reuse_grace => '0'").await;
    let client = confidential_client(&admin).await;
    for offset in ["0", "-1 second"] {
        let first = tokens_for(&admin, &client, &unique("user")).await;
        let a = str_field(&first, "refresh_token").to_owned();
        let t: String = scalar(&admin, "SELECT now()::text", &[]).await;
        let b = Rotate::of(&client, &a).at(&t).run(&admin).await;
        assert_ok(&b, "rotation");
        // A concurrent request whose transaction began before the rotation committed sees an
        // earlier now(); with the window off that must still be reuse, not a retry.
        let retry_at: String = scalar(
            &admin,
            "SELECT ($1::text::timestamptz + $2::text::interval)::text",
            &[&t, &offset],
        )
        .await;
        let retry = Rotate::of(&client, &a).at(&retry_at).run(&admin).await;
        assert_error(
            &retry,
            "invalid_grant",
            &format!("retry at rotation {offset} without grace"),
        );
        assert!(
            family_row(&admin, uuid_field(&first, "family_id"))
                .await
                .revoked,
            "offset {offset}"
        );
    }
}
