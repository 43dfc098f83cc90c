//! Revocation (grant, client, RFC 7009 token), introspection (RFC 7662), userinfo and the
//! `oauth_revocations` notification feed.

use std::time::Duration;

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

async fn revoke_token(
    db: &Client,
    client: &TestClient,
    token: Option<&str>,
    grant: Option<Uuid>,
    family: Option<Uuid>,
) -> Value {
    scalar(
        db,
        "SELECT oauth.revoke_token($1, $2, $3, $4, $5)",
        &[&client.id, &client.secret, &token, &grant, &family],
    )
    .await
}

async fn userinfo(db: &Client, grant: Uuid, family: Option<Uuid>) -> Value {
    scalar(db, "SELECT oauth.userinfo($1, $2)", &[&grant, &family]).await
}

#[tokio::test]
async fn revoke_grant_revokes_its_families_codes_and_access_token_claims() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let user = unique("user");
    let a = tokens_for(&gw, &client, &user).await;
    let b = tokens_for(&gw, &client, &user).await;
    let pending = authorize(&gw, &client, &user).await;
    let grant_id = uuid_field(&a, "grant_id");
    let (fa, fb) = (uuid_field(&a, "family_id"), uuid_field(&b, "family_id"));
    assert!(is_active(
        &introspect_claims(&gw, &client, grant_id, Some(fa)).await
    ));
    assert!(is_active(
        &introspect_claims(&gw, &client, grant_id, None).await
    ));
    assert_eq!(
        userinfo(&gw, grant_id, Some(fa)).await["active"],
        json!(true)
    );

    let revoked: bool = scalar(
        &admin,
        "SELECT oauth.revoke_grant($1, 'user asked')",
        &[&grant_id],
    )
    .await;
    assert!(revoked);
    for family in [fa, fb] {
        let row = family_row(&admin, family).await;
        assert!(row.revoked);
        assert_eq!(row.revoked_reason.as_deref(), Some("user asked"));
        assert!(!is_active(
            &introspect_claims(&gw, &client, grant_id, Some(family)).await
        ));
        assert_eq!(
            userinfo(&gw, grant_id, Some(family)).await,
            json!({"active": false})
        );
    }
    assert!(!is_active(
        &introspect_claims(&gw, &client, grant_id, None).await
    ));
    assert!(!is_active(
        &introspect_refresh(&gw, &client, str_field(&a, "refresh_token")).await
    ));
    assert_error(
        &rotate(&gw, &client, str_field(&b, "refresh_token")).await,
        "invalid_grant",
        "rotation",
    );
    assert_error(
        &exchange(&gw, &client, &pending).await,
        "invalid_grant",
        "pending code",
    );
    assert!(user_grant_ids(&admin, &user).await.is_empty());
    assert!(
        !revoke_grant(&admin, grant_id).await,
        "a revoked grant is not live"
    );
    let unknown: bool = scalar(&admin, "SELECT oauth.revoke_grant(gen_random_uuid())", &[]).await;
    assert!(!unknown);
    let events: i64 = event_count(&admin, "grant_revoked", "grant_id", &grant_id).await;
    assert_eq!(events, 1);
}

#[tokio::test]
async fn delete_client_makes_every_token_of_it_inactive() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let observer = confidential_client(&admin).await;
    let user = unique("user");
    let t = tokens_for(&gw, &client, &user).await;
    let pending = authorize(&gw, &client, &user).await;
    let grant_id = uuid_field(&t, "grant_id");
    let family_id = uuid_field(&t, "family_id");
    assert!(delete_client(&admin, &client.id).await);
    assert!(!is_active(
        &introspect_claims(&gw, &observer, grant_id, Some(family_id)).await
    ));
    assert_eq!(
        userinfo(&gw, grant_id, Some(family_id)).await,
        json!({"active": false})
    );
    assert!(!is_active(
        &introspect_refresh(&gw, &observer, str_field(&t, "refresh_token")).await
    ));
    assert_error(
        &rotate(&gw, &client, str_field(&t, "refresh_token")).await,
        "invalid_client",
        "rotation",
    );
    assert_error(
        &exchange(&gw, &client, &pending).await,
        "invalid_client",
        "pending code",
    );
    for table in [
        "grants",
        "codes",
        "authorization_requests",
        "refresh_families",
    ] {
        let left: i64 = scalar(
            &admin,
            &format!("SELECT count(*) FROM oauth.{table} WHERE client_id = $1"),
            &[&client.id],
        )
        .await;
        assert_eq!(left, 0, "{table} rows of the deleted client");
    }
    let events: Vec<String> = column(
        &admin,
        "SELECT kind FROM oauth.events WHERE client_id = $1 ORDER BY event_id",
        &[&client.id],
    )
    .await;
    assert!(
        events.ends_with(&["grant_revoked".to_string(), "client_deleted".to_string()]),
        "{events:?}"
    );
}

#[tokio::test]
async fn revoke_token_revokes_a_refresh_family_of_the_calling_client_only() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let other = confidential_client(&admin).await;
    let user = unique("user");
    let t = tokens_for(&gw, &client, &user).await;
    let keep = tokens_for(&gw, &client, &user).await;
    let token = str_field(&t, "refresh_token");
    let family_id = uuid_field(&t, "family_id");

    let wrong_secret = client.with_secret(Some("wrong"));
    assert_error(
        &revoke_token(&gw, &wrong_secret, Some(token), None, None).await,
        "invalid_client",
        "bad client auth",
    );
    // Foreign and unknown tokens: success without effect (RFC 7009 §2.2).
    assert_eq!(
        revoke_token(&gw, &other, Some(token), None, None).await,
        json!({})
    );
    assert_eq!(
        revoke_token(
            &gw,
            &other,
            None,
            Some(uuid_field(&t, "grant_id")),
            Some(family_id)
        )
        .await,
        json!({})
    );
    assert_eq!(
        revoke_token(&gw, &client, Some("unknown-token"), None, None).await,
        json!({})
    );
    assert_eq!(
        revoke_token(&gw, &client, None, None, None).await,
        json!({})
    );
    assert!(!family_row(&admin, family_id).await.revoked);

    assert_eq!(
        revoke_token(&gw, &client, Some(token), None, None).await,
        json!({})
    );
    let row = family_row(&admin, family_id).await;
    assert!(row.revoked);
    assert_eq!(row.revoked_reason.as_deref(), Some("revoked_by_client"));
    assert_error(
        &rotate(&gw, &client, token).await,
        "invalid_grant",
        "revoked token",
    );
    assert!(!is_active(
        &introspect_claims(&gw, &client, uuid_field(&t, "grant_id"), Some(family_id)).await
    ));
    // Only that family: the grant and its other family live on.
    assert!(grant_live(&admin, uuid_field(&t, "grant_id")).await);
    assert_ok(
        &rotate(&gw, &client, str_field(&keep, "refresh_token")).await,
        "other family",
    );
    // Revoking again is still success.
    assert_eq!(
        revoke_token(&gw, &client, Some(token), None, None).await,
        json!({})
    );
}

#[tokio::test]
async fn revoke_token_with_access_token_claims_revokes_that_family() {
    let (admin, client) = admin_with_client().await;
    let t = tokens_for(&admin, &client, &unique("user")).await;
    let (grant_id, family_id) = (uuid_field(&t, "grant_id"), uuid_field(&t, "family_id"));
    // The family must belong to the named grant.
    assert_eq!(
        revoke_token(&admin, &client, None, Some(Uuid::new_v4()), Some(family_id)).await,
        json!({})
    );
    assert!(!family_row(&admin, family_id).await.revoked);
    assert_eq!(
        revoke_token(&admin, &client, None, Some(grant_id), Some(family_id)).await,
        json!({})
    );
    assert!(family_row(&admin, family_id).await.revoked);
    assert!(!is_active(
        &introspect_claims(&admin, &client, grant_id, Some(family_id)).await
    ));
    assert!(!is_active(
        &introspect_refresh(&admin, &client, str_field(&t, "refresh_token")).await
    ));
}

#[tokio::test]
async fn introspection_of_a_live_refresh_token_describes_it() {
    let (_, client) = admin_with_client().await;
    let gw = gateway().await;
    let user = unique("user");
    let t = Authorize {
        params: json!({"resource": "https://mcp.example/mcp"}),
        props: json!({"k": "v"}),
        ..Authorize::new(&client)
    }
    .run(&gw, &user)
    .await
    .exchange()
    .run(&gw)
    .await;
    let answer = introspect_refresh(&gw, &client, str_field(&t, "refresh_token")).await;
    assert_eq!(answer["active"], json!(true));
    assert_eq!(answer["token_type"], json!("refresh_token"));
    assert_eq!(answer["grant_id"], t["grant_id"]);
    assert_eq!(answer["family_id"], t["family_id"]);
    assert_eq!(answer["user_id"], json!(user));
    assert_eq!(answer["client_id"], json!(client.id));
    assert_eq!(answer["scope"], json!("openid mcp"));
    assert_eq!(answer["resource"], json!("https://mcp.example/mcp"));
    assert_eq!(answer["props"], json!({"k": "v"}));
    assert!(answer["exp"].as_i64().unwrap() > answer["iat"].as_i64().unwrap());

    let claims = introspect_claims(
        &gw,
        &client,
        uuid_field(&t, "grant_id"),
        Some(uuid_field(&t, "family_id")),
    )
    .await;
    assert_eq!(claims["active"], json!(true));
    assert_eq!(claims["token_type"], json!("access_token"));
    assert_eq!(claims["user_id"], json!(user));

    assert_eq!(
        introspect_refresh(&gw, &client, "unknown").await,
        json!({"active": false})
    );
    assert_eq!(
        introspect_claims(&gw, &client, Uuid::new_v4(), None).await,
        json!({"active": false})
    );
    // A family id that belongs to another grant does not make a token live.
    let other = tokens_for(&gw, &client, &unique("user")).await;
    assert_eq!(
        introspect_claims(
            &gw,
            &client,
            uuid_field(&t, "grant_id"),
            Some(uuid_field(&other, "family_id"))
        )
        .await,
        json!({"active": false})
    );
    let bad = client.with_secret(Some("wrong"));
    assert_error(
        &introspect_refresh(&gw, &bad, str_field(&t, "refresh_token")).await,
        "invalid_client",
        "bad auth",
    );
}

#[tokio::test]
async fn revocation_notifies_oauth_revocations_listeners() {
    let admin = admin().await;
    let (listener, mut notifications) = connect_listening(&gateway_config()).await;
    listener
        .batch_execute("LISTEN oauth_revocations")
        .await
        .unwrap();
    let client = confidential_client(&admin).await;

    let t = tokens_for(&admin, &client, &unique("user")).await;
    let (grant_id, family_id) = (uuid_field(&t, "grant_id"), uuid_field(&t, "family_id"));
    assert_eq!(
        revoke_token(
            &admin,
            &client,
            Some(str_field(&t, "refresh_token")),
            None,
            None
        )
        .await,
        json!({})
    );
    let payload = next_payload_for(&mut notifications, grant_id).await;
    assert_eq!(
        payload,
        json!({"grant_id": grant_id, "family_id": family_id})
    );

    revoke_grant(&admin, grant_id).await;
    let payload = next_payload_for(&mut notifications, grant_id).await;
    assert_eq!(payload, json!({"grant_id": grant_id, "family_id": null}));

    // Reuse detection notifies too.
    let t = tokens_for(&admin, &client, &unique("user")).await;
    let grant_id = uuid_field(&t, "grant_id");
    let r0 = str_field(&t, "refresh_token").to_owned();
    assert_ok(&rotate(&admin, &client, &r0).await, "rotation");
    assert_error(
        &rotate_after_grace(&admin, &client, &r0).await,
        "invalid_grant",
        "reuse",
    );
    let first = next_payload_for(&mut notifications, grant_id).await;
    assert_eq!(first["family_id"], t["family_id"]);
    let second = next_payload_for(&mut notifications, grant_id).await;
    assert_eq!(second["family_id"], json!(null));

    // A rolled-back revocation notifies nobody.
    let t = tokens_for(&admin, &client, &unique("user")).await;
    let grant_id = uuid_field(&t, "grant_id");
    admin
        .batch_execute(&format!(
            "BEGIN; SELECT oauth.revoke_grant('{grant_id}'); ROLLBACK"
        ))
        .await
        .unwrap();
    execute(
        &admin,
        "SELECT oauth.revoke_grant($1, 'second')",
        &[&grant_id],
    )
    .await;
    let payload = next_payload_for(&mut notifications, grant_id).await;
    assert_eq!(payload, json!({"grant_id": grant_id, "family_id": null}));
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            next_payload_for(&mut notifications, grant_id)
        )
        .await
        .is_err(),
        "only the committed revocation is announced"
    );
}

/// The next notification about `grant_id` (others come from concurrent tests).
async fn next_payload_for(
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    grant_id: Uuid,
) -> Value {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
            .await
            .expect("no notification within 10 s")
            .expect("listening connection closed");
        assert_eq!(n.channel(), "oauth_revocations");
        let payload: Value =
            oauth_provider_tests::serde_json::from_str(n.payload()).expect("payload is JSON");
        if payload["grant_id"] == json!(grant_id) {
            return payload;
        }
    }
}
