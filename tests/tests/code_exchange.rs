//! The token endpoint's code redemption (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707).

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

#[tokio::test]
async fn exchange_returns_everything_the_gateway_needs_to_mint_tokens() {
    let admin = admin().await;
    let gw = gateway().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let props = json!({"plan": "pro"});
    let auth = authorize_with(
        &gw,
        &client,
        &user,
        json!({"nonce": "n-0S6", "resource": "https://mcp.example/mcp"}),
        props.clone(),
    )
    .await;
    let answer = exchange_code_at(
        &gw,
        &client.id,
        client.secret(),
        Some(&auth.code),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        Some("https://mcp.example/mcp"),
        None,
    )
    .await;
    assert_ok(&answer, "exchange");
    let grant_id = uuid_field(&answer, "grant_id");
    let family_id = uuid_field(&answer, "family_id");
    assert_eq!(answer["user_id"], json!(user));
    assert_eq!(answer["client_id"], json!(client.id));
    assert_eq!(answer["scope"], json!("openid mcp"));
    assert_eq!(answer["resource"], json!("https://mcp.example/mcp"));
    assert_eq!(answer["nonce"], json!("n-0S6"));
    assert_eq!(answer["props"], props);
    assert_eq!(answer["access_token_ttl"], json!(3600));
    let refresh = str_field(&answer, "refresh_token");
    assert_eq!(refresh.len(), 43);
    let expires_in = answer["refresh_expires_in"].as_i64().unwrap();
    assert!(
        (30 * 86400 - 5..=30 * 86400).contains(&expires_in),
        "{expires_in}"
    );
    let auth_time = answer["auth_time"].as_i64().unwrap();
    let db_now: f64 = admin
        .query_one("SELECT date_part('epoch', now())", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        (auth_time - db_now as i64).abs() < 60,
        "auth_time {auth_time} vs {db_now}"
    );

    let family = family_row(&admin, family_id).await;
    assert_eq!(
        family.current_hash,
        Some(sha256(refresh)),
        "only the digest is stored"
    );
    assert_eq!(family.generation, 0);
    assert!(!family.revoked);
    let grant_of_family: uuid::Uuid = admin
        .query_one(
            "SELECT grant_id FROM oauth.refresh_families WHERE family_id = $1",
            &[&family_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(grant_of_family, grant_id);
    let redeemed: (Option<uuid::Uuid>, bool) = {
        let row = admin
            .query_one(
                "SELECT family_id, redeemed_at IS NOT NULL FROM oauth.codes WHERE code_hash = $1",
                &[&sha256(&auth.code)],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        redeemed,
        (Some(family_id), true),
        "the code records what it issued"
    );

    assert!(is_active(
        &introspect_claims(&gw, &client, grant_id, Some(family_id)).await
    ));
    let info: Value = gw
        .query_one("SELECT oauth.userinfo($1, $2)", &[&grant_id, &family_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(info["active"], json!(true));
    assert_eq!(info["user_id"], json!(user));
    assert_eq!(info["props"], props);
}

#[tokio::test]
async fn client_without_the_refresh_grant_gets_no_refresh_token() {
    let admin = admin().await;
    let client = create_client(
        &admin,
        ClientSpec {
            grant_types: vec!["authorization_code".into()],
            ..Default::default()
        },
    )
    .await;
    let answer = tokens_for(&admin, &client, &unique("user")).await;
    assert_eq!(answer["refresh_token"], Value::Null);
    assert_eq!(answer["refresh_expires_in"], Value::Null);
    assert!(
        answer["family_id"].is_string(),
        "access tokens still belong to a family"
    );
    assert!(answer["nonce"].is_string());
    let family = family_row(&admin, uuid_field(&answer, "family_id")).await;
    assert_eq!(family.current_hash, None);
    assert_eq!(family.token_count, 0);
}

#[tokio::test]
async fn each_exchange_error_has_its_code_and_burns_the_code_after_redemption_starts() {
    let admin = admin().await;
    let client = create_client(
        &admin,
        ClientSpec {
            allowed_resources: None,
            ..Default::default()
        },
    )
    .await;
    let user = unique("user");
    let secret = client.secret();

    // Before the code is looked at: the code survives.
    let auth = authorize(&admin, &client, &user).await;
    let answer = exchange_code_at(
        &admin,
        &client.id,
        secret,
        None,
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        None,
    )
    .await;
    assert_error(&answer, "invalid_request", "no code");
    let answer = exchange_code_at(
        &admin,
        &client.id,
        secret,
        Some(""),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        None,
    )
    .await;
    assert_error(&answer, "invalid_request", "empty code");
    let answer = exchange_code_at(
        &admin,
        &client.id,
        secret,
        Some(&auth.code),
        None,
        Some(&auth.redirect_uri),
        None,
        None,
    )
    .await;
    assert_error(&answer, "invalid_request", "no verifier");
    let answer = exchange_code_at(
        &admin,
        &client.id,
        secret,
        Some("not-a-code"),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        None,
    )
    .await;
    assert_error(&answer, "invalid_grant", "unknown code");
    assert_ok(
        &exchange(&admin, &client, &auth).await,
        "code survived the request errors",
    );

    // After: a failed check burns the code, so a verifier cannot be guessed.
    let cases: Vec<(
        &str,
        Box<dyn Fn(&Authorized) -> (String, Option<String>, Option<String>)>,
        &str,
    )> = vec![
        (
            "wrong verifier",
            Box::new(|a: &Authorized| (Pkce::new().verifier, Some(a.redirect_uri.clone()), None)),
            "invalid_grant",
        ),
        (
            "verifier that is the challenge",
            Box::new(|a: &Authorized| {
                (a.pkce.challenge.clone(), Some(a.redirect_uri.clone()), None)
            }),
            "invalid_grant",
        ),
        (
            "different redirect_uri",
            Box::new(|a: &Authorized| {
                (
                    a.pkce.verifier.clone(),
                    Some(format!("{}/", a.redirect_uri)),
                    None,
                )
            }),
            "invalid_grant",
        ),
        (
            "redirect_uri omitted although sent",
            Box::new(|a: &Authorized| (a.pkce.verifier.clone(), None, None)),
            "invalid_grant",
        ),
        (
            "resource added at the token endpoint",
            Box::new(|a: &Authorized| {
                (
                    a.pkce.verifier.clone(),
                    Some(a.redirect_uri.clone()),
                    Some("https://mcp.example/mcp".into()),
                )
            }),
            "invalid_target",
        ),
    ];
    for (what, wrong, code) in cases {
        let auth = authorize(&admin, &client, &user).await;
        let (verifier, redirect_uri, resource) = wrong(&auth);
        let answer = exchange_code_at(
            &admin,
            &client.id,
            secret,
            Some(&auth.code),
            Some(&verifier),
            redirect_uri.as_deref(),
            resource.as_deref(),
            None,
        )
        .await;
        assert_error(&answer, code, what);
        let retry = exchange(&admin, &client, &auth).await;
        assert_error(
            &retry,
            "invalid_grant",
            &format!("{what}: the code is burnt"),
        );
    }
}

#[tokio::test]
async fn resource_may_be_repeated_but_not_changed_at_the_token_endpoint() {
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let resource = "https://mcp.example/mcp";
    let auth = authorize_with(
        &admin,
        &client,
        &user,
        json!({"resource": resource}),
        json!({}),
    )
    .await;
    let answer = exchange_code_at(
        &admin,
        &client.id,
        client.secret(),
        Some(&auth.code),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        Some("https://mcp.example/other"),
        None,
    )
    .await;
    assert_error(&answer, "invalid_target", "changed resource");
    let auth = authorize_with(
        &admin,
        &client,
        &user,
        json!({"resource": resource}),
        json!({}),
    )
    .await;
    let answer = exchange(&admin, &client, &auth).await;
    assert_ok(&answer, "resource omitted at the token endpoint");
    assert_eq!(
        answer["resource"],
        json!(resource),
        "binding comes from the authorization request"
    );
}

#[tokio::test]
async fn code_issued_to_another_client_is_refused_and_cannot_be_redeemed_afterwards() {
    let admin = admin().await;
    let owner = confidential_client(&admin).await;
    let thief = confidential_client(&admin).await;
    let auth = authorize(&admin, &owner, &unique("user")).await;
    let answer = exchange_code_at(
        &admin,
        &thief.id,
        thief.secret(),
        Some(&auth.code),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        None,
    )
    .await;
    assert_error(&answer, "invalid_grant", "foreign code");
    let retry = exchange(&admin, &owner, &auth).await;
    assert_error(
        &retry,
        "invalid_grant",
        "a code presented by another client is burnt",
    );
}

#[tokio::test]
async fn replayed_code_revokes_the_family_it_issued() {
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let auth = authorize(&admin, &client, &user).await;
    let first = exchange(&admin, &client, &auth).await;
    assert_ok(&first, "first redemption");
    let family_id = uuid_field(&first, "family_id");
    let grant_id = uuid_field(&first, "grant_id");
    let replay = exchange(&admin, &client, &auth).await;
    assert_error(&replay, "invalid_grant", "replay");

    let family = family_row(&admin, family_id).await;
    assert!(family.revoked, "the family the code issued is revoked");
    assert_eq!(family.revoked_reason.as_deref(), Some("code_replayed"));
    assert_eq!(family.current_hash, None);
    let rotated = rotate(&admin, &client, str_field(&first, "refresh_token")).await;
    assert_error(
        &rotated,
        "invalid_grant",
        "refresh token of the replayed code",
    );
    assert!(!is_active(
        &introspect_claims(&admin, &client, grant_id, Some(family_id)).await
    ));
    let events: i64 = admin
        .query_one(
            "SELECT count(*) FROM oauth.events WHERE kind = 'code_replayed' AND family_id = $1",
            &[&family_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
}

#[tokio::test]
async fn replay_by_another_client_revokes_nothing() {
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let other = confidential_client(&admin).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    let first = exchange(&admin, &client, &auth).await;
    assert_ok(&first, "redemption");
    let replay = exchange_code_at(
        &admin,
        &other.id,
        other.secret(),
        Some(&auth.code),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        None,
    )
    .await;
    assert_error(&replay, "invalid_grant", "foreign replay");
    assert!(
        !family_row(&admin, uuid_field(&first, "family_id"))
            .await
            .revoked
    );
    assert_ok(
        &rotate(&admin, &client, str_field(&first, "refresh_token")).await,
        "tokens stay usable",
    );
}

#[tokio::test]
async fn code_expires_after_code_ttl() {
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    let answer = exchange_code_at(
        &admin,
        &client.id,
        client.secret(),
        Some(&auth.code),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        Some(&chrono_later(&admin, "61 seconds").await),
    )
    .await;
    assert_error(&answer, "invalid_grant", "expired code");
    let auth = authorize(&admin, &client, &unique("user")).await;
    let answer = exchange_code_at(
        &admin,
        &client.id,
        client.secret(),
        Some(&auth.code),
        Some(&auth.pkce.verifier),
        Some(&auth.redirect_uri),
        None,
        Some(&chrono_later(&admin, "59 seconds").await),
    )
    .await;
    assert_ok(&answer, "code just before expiry");
}

/// The database clock plus `interval`, as text.
async fn chrono_later(db: &tokio_postgres::Client, interval: &str) -> String {
    db.query_one("SELECT (now() + $1::text::interval)::text", &[&interval])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn code_of_a_revoked_grant_cannot_be_redeemed() {
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let auth = authorize(&admin, &client, &user).await;
    let grant_id: uuid::Uuid = admin
        .query_one("SELECT grant_id FROM oauth.list_user_grants($1)", &[&user])
        .await
        .unwrap()
        .get(0);
    let revoked: bool = admin
        .query_one("SELECT oauth.revoke_grant($1)", &[&grant_id])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    assert_error(
        &exchange(&admin, &client, &auth).await,
        "invalid_grant",
        "code of a revoked grant",
    );
}

#[tokio::test]
async fn client_that_may_not_use_the_code_grant_cannot_redeem() {
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    admin
        .execute(
            "UPDATE oauth.clients SET grant_types = '{refresh_token}' WHERE client_id = $1",
            &[&client.id],
        )
        .await
        .unwrap();
    assert_error(
        &exchange(&admin, &client, &auth).await,
        "unauthorized_client",
        "exchange",
    );
}
