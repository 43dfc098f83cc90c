//! The token endpoint's code redemption (RFC 6749 §4.1.3, RFC 7636 §4.6, RFC 8707).

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

const RESOURCE: &str = "https://mcp.example/mcp";
/// A well-formed verifier that belongs to no test's code (RFC 7636 appendix B).
const SOMEONE_ELSES_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[tokio::test]
async fn exchange_returns_everything_the_gateway_needs_to_mint_tokens() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let user = unique("user");
    let props = json!({"plan": "pro"});
    let auth = Authorize {
        params: json!({"nonce": "n-0S6", "resource": RESOURCE}),
        props: props.clone(),
        ..Authorize::new(&client)
    }
    .run(&gw, &user)
    .await;
    let answer = Exchange {
        resource: Some(RESOURCE),
        ..auth.exchange()
    }
    .run(&gw)
    .await;
    assert_ok(&answer, "exchange");
    let grant_id = uuid_field(&answer, "grant_id");
    let family_id = uuid_field(&answer, "family_id");
    assert_eq!(answer["user_id"], json!(user));
    assert_eq!(answer["client_id"], json!(client.id));
    assert_eq!(answer["scope"], json!("openid mcp"));
    assert_eq!(answer["resource"], json!(RESOURCE));
    assert_eq!(answer["nonce"], json!("n-0S6"));
    assert_eq!(answer["props"], props);
    assert_eq!(answer["access_token_ttl"], json!(3600));
    let refresh = str_field(&answer, "refresh_token");
    // 52 bytes, base64url: the family, generation 0 and 32 random bytes (refresh_chain.rs).
    assert_eq!(refresh.len(), 70);
    let family_named: uuid::Uuid =
        scalar(&admin, "SELECT oauth.refresh_token_family($1)", &[&refresh]).await;
    assert_eq!(family_named, family_id, "the token names its family");
    let expires_in = answer["refresh_expires_in"].as_i64().unwrap();
    assert!(
        (30 * 86400 - 5..=30 * 86400).contains(&expires_in),
        "{expires_in}"
    );
    let auth_time = answer["auth_time"].as_i64().unwrap();
    let db_now: f64 = scalar(&admin, "SELECT date_part('epoch', now())", &[]).await;
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
    let grant_of_family: uuid::Uuid = scalar(
        &admin,
        "SELECT grant_id FROM oauth.refresh_families WHERE family_id = $1",
        &[&family_id],
    )
    .await;
    assert_eq!(grant_of_family, grant_id);
    let row = one_row(
        &admin,
        "SELECT family_id, redeemed_at IS NOT NULL FROM oauth.codes WHERE code_hash = $1",
        &[&sha256(&auth.code)],
    )
    .await;
    let redeemed: (Option<uuid::Uuid>, bool) = (row.get(0), row.get(1));
    assert_eq!(
        redeemed,
        (Some(family_id), true),
        "the code records what it issued"
    );

    assert!(is_active(
        &introspect_claims(&gw, &client, grant_id, Some(family_id)).await
    ));
    let info: Value = scalar(
        &gw,
        "SELECT oauth.userinfo($1, $2)",
        &[&grant_id, &family_id],
    )
    .await;
    assert_eq!(info["active"], json!(true));
    assert_eq!(info["user_id"], json!(user));
    assert_eq!(info["props"], props);
}

#[tokio::test]
async fn client_without_the_refresh_grant_gets_no_refresh_token() {
    let admin = admin().await;
    let client = create_client_with(&admin, |spec| {
        spec.grant_types = vec!["authorization_code".into()];
    })
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
    let (admin, client) = admin_with_client().await;
    let user = unique("user");

    // Before the code is looked at: the code survives.
    let auth = authorize(&admin, &client, &user).await;
    for (what, request, error) in [
        (
            "no code",
            Exchange {
                code: None,
                ..auth.exchange()
            },
            "invalid_request",
        ),
        (
            "empty code",
            Exchange {
                code: Some(""),
                ..auth.exchange()
            },
            "invalid_request",
        ),
        (
            "no verifier",
            Exchange {
                verifier: None,
                ..auth.exchange()
            },
            "invalid_request",
        ),
        (
            "unknown code",
            Exchange {
                code: Some("not-a-code"),
                ..auth.exchange()
            },
            "invalid_grant",
        ),
    ] {
        assert_error(&request.run(&admin).await, error, what);
    }
    assert_ok(
        &auth.exchange().run(&admin).await,
        "code survived the request errors",
    );

    // After: a failed check burns the code, so a verifier cannot be guessed.
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(authorize(&admin, &client, &user).await);
    }
    let [a, b, c, d, e]: [Authorized; 5] = codes.try_into().unwrap();
    let with_slash = format!("{}/", c.redirect_uri);
    for (what, auth, request, error) in [
        (
            "wrong verifier",
            &a,
            Exchange {
                verifier: Some(SOMEONE_ELSES_VERIFIER),
                ..a.exchange()
            },
            "invalid_grant",
        ),
        (
            "verifier that is the challenge",
            &b,
            Exchange {
                verifier: Some(&b.pkce.challenge),
                ..b.exchange()
            },
            "invalid_grant",
        ),
        (
            "different redirect_uri",
            &c,
            Exchange {
                redirect_uri: Some(&with_slash),
                ..c.exchange()
            },
            "invalid_grant",
        ),
        (
            "redirect_uri omitted although sent",
            &d,
            Exchange {
                redirect_uri: None,
                ..d.exchange()
            },
            "invalid_grant",
        ),
        (
            "resource added at the token endpoint",
            &e,
            Exchange {
                resource: Some(RESOURCE),
                ..e.exchange()
            },
            "invalid_target",
        ),
    ] {
        assert_error(&request.run(&admin).await, error, what);
        assert_error(
            &auth.exchange().run(&admin).await,
            "invalid_grant",
            &format!("{what}: the code is burnt"),
        );
    }
}

#[tokio::test]
async fn resource_may_be_repeated_but_not_changed_at_the_token_endpoint() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let bound = Authorize {
        params: json!({"resource": RESOURCE}),
        ..Authorize::new(&client)
    };
    let auth = bound.run(&admin, &user).await;
    let answer = Exchange {
        resource: Some("https://mcp.example/other"),
        ..auth.exchange()
    }
    .run(&admin)
    .await;
    assert_error(&answer, "invalid_target", "changed resource");
    let auth = bound.run(&admin, &user).await;
    let answer = auth.exchange().run(&admin).await;
    assert_ok(&answer, "resource omitted at the token endpoint");
    assert_eq!(
        answer["resource"],
        json!(RESOURCE),
        "binding comes from the authorization request"
    );
}

#[tokio::test]
async fn code_issued_to_another_client_is_refused_and_cannot_be_redeemed_afterwards() {
    let admin = admin().await;
    let owner = confidential_client(&admin).await;
    let thief = confidential_client(&admin).await;
    let auth = authorize(&admin, &owner, &unique("user")).await;
    let answer = auth.exchange().by(&thief).run(&admin).await;
    assert_error(&answer, "invalid_grant", "foreign code");
    assert_error(
        &auth.exchange().run(&admin).await,
        "invalid_grant",
        "a code presented by another client is burnt",
    );
}

#[tokio::test]
async fn replayed_code_revokes_the_family_it_issued() {
    let (admin, client) = admin_with_client().await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    let first = auth.exchange().run(&admin).await;
    assert_ok(&first, "first redemption");
    let family_id = uuid_field(&first, "family_id");
    let grant_id = uuid_field(&first, "grant_id");
    let replay = auth.exchange().run(&admin).await;
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
    let events: i64 = event_count(&admin, "code_replayed", "family_id", &family_id).await;
    assert_eq!(events, 1);
}

#[tokio::test]
async fn replay_by_another_client_revokes_nothing() {
    let (admin, client) = admin_with_client().await;
    let other = confidential_client(&admin).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    let first = auth.exchange().run(&admin).await;
    assert_ok(&first, "redemption");
    let replay = auth.exchange().by(&other).run(&admin).await;
    assert_error(&replay, "invalid_grant", "foreign replay");
    let family = family_row(&admin, uuid_field(&first, "family_id")).await;
    assert!(!family.revoked);
    assert_ok(
        &rotate(&admin, &client, str_field(&first, "refresh_token")).await,
        "tokens stay usable",
    );
}

#[tokio::test]
async fn code_expires_after_code_ttl() {
    let (admin, client) = admin_with_client().await;
    for (what, redeemed_after, error) in [
        ("expired code", "61 seconds", Some("invalid_grant")),
        ("code just before expiry", "59 seconds", None),
    ] {
        let auth = authorize(&admin, &client, &unique("user")).await;
        let now = db_time_in(&admin, redeemed_after).await;
        let answer = Exchange {
            now: Some(&now),
            ..auth.exchange()
        }
        .run(&admin)
        .await;
        match error {
            Some(error) => assert_error(&answer, error, what),
            None => assert_ok(&answer, what),
        }
    }
}

#[tokio::test]
async fn code_of_a_revoked_grant_cannot_be_redeemed() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let auth = authorize(&admin, &client, &user).await;
    let grant_id = user_grant_ids(&admin, &user).await[0];
    assert!(revoke_grant(&admin, grant_id).await);
    assert_error(
        &auth.exchange().run(&admin).await,
        "invalid_grant",
        "code of a revoked grant",
    );
}

#[tokio::test]
async fn client_that_may_not_use_the_code_grant_cannot_redeem() {
    let (admin, client) = admin_with_client().await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    execute(
        &admin,
        "UPDATE oauth.clients SET grant_types = '{refresh_token}' WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    assert_error(
        &auth.exchange().run(&admin).await,
        "unauthorized_client",
        "exchange",
    );
}
