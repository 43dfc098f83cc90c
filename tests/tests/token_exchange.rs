//! RFC 8693 token exchange in SQL: only under a policy, never wider than the subject and the
//! policy, and bound to the subject's grant and family.

use oauth_provider_tests::*;
use serde_json::Value;

const SERVED: &str = "https://files.example.com/mcp";
const TARGET: &str = "https://calendar.example.com/mcp";

struct Subject {
    grant_id: uuid::Uuid,
    family_id: uuid::Uuid,
    scope: String,
}

async fn subject(admin: &tokio_postgres::Client, gw: &tokio_postgres::Client) -> Subject {
    let app = confidential_client(admin).await;
    let tokens = tokens_for(gw, &app, &unique("user")).await;
    Subject {
        grant_id: uuid_field(&tokens, "grant_id"),
        family_id: uuid_field(&tokens, "family_id"),
        scope: str_field(&tokens, "scope").to_owned(),
    }
}

async fn exchange_token(
    gw: &tokio_postgres::Client,
    client: &TestClient,
    subject: &Subject,
    subject_audience: &str,
    audience: Option<&str>,
    scope: Option<&str>,
) -> Value {
    gw.query_one(
        "SELECT oauth.exchange_token($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &client.id,
            &client.secret(),
            &subject.grant_id,
            &subject.family_id,
            &subject_audience,
            &subject.scope,
            &audience,
            &scope,
        ],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn an_exchanged_token_is_narrower_bound_to_the_subject_and_recorded() {
    let (admin, gw) = (admin().await, gateway().await);
    let subject = subject(&admin, &gw).await;
    assert!(
        subject.scope.contains("mcp") && subject.scope.contains("openid"),
        "{}",
        subject.scope
    );
    let server = confidential_client(&admin).await;
    admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3])",
            &[&server.id, &SERVED, &TARGET],
        )
        .await
        .unwrap();

    let exchanged = exchange_token(&gw, &server, &subject, SERVED, Some(TARGET), None).await;
    assert_ok(&exchanged, "exchange");
    assert_eq!(str_field(&exchanged, "client_id"), server.id);
    assert_eq!(str_field(&exchanged, "resource"), TARGET);
    assert_eq!(uuid_field(&exchanged, "grant_id"), subject.grant_id);
    assert_eq!(uuid_field(&exchanged, "family_id"), subject.family_id);
    assert!(exchanged["refresh_token"].is_null());
    let scopes: Vec<&str> = str_field(&exchanged, "scope").split(' ').collect();
    assert!(
        !scopes.contains(&"openid") && !scopes.contains(&"offline_access"),
        "{scopes:?}"
    );
    let narrow = exchange_token(&gw, &server, &subject, SERVED, Some(TARGET), Some("mcp")).await;
    assert_eq!(str_field(&narrow, "scope"), "mcp");
    let events: i64 = admin
        .query_one(
            "SELECT count(*) FROM oauth.events WHERE kind = 'token_exchanged' AND client_id = $1",
            &[&server.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 2);

    // A policy's scope ceiling applies; removing the policy ends exchanges.
    admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3], '{profile}')",
            &[&server.id, &SERVED, &TARGET],
        )
        .await
        .unwrap();
    assert_error(
        &exchange_token(&gw, &server, &subject, SERVED, Some(TARGET), Some("mcp")).await,
        "invalid_scope",
        "above the ceiling",
    );
    let removed: bool = admin
        .query_one(
            "SELECT oauth.remove_token_exchange_policy($1)",
            &[&server.id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(removed);
    assert_error(
        &exchange_token(&gw, &server, &subject, SERVED, Some(TARGET), None).await,
        "unauthorized_client",
        "policy removed",
    );
}

#[tokio::test]
async fn exchanges_outside_the_policy_or_of_dead_subjects_are_refused() {
    let (admin, gw) = (admin().await, gateway().await);
    let subject = subject(&admin, &gw).await;
    let server = confidential_client(&admin).await;
    admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3])",
            &[&server.id, &SERVED, &TARGET],
        )
        .await
        .unwrap();
    for (subject_audience, audience, scope, error) in [
        (
            "https://elsewhere.example/mcp",
            Some(TARGET),
            None,
            "invalid_request",
        ),
        (
            SERVED,
            Some("https://elsewhere.example/mcp"),
            None,
            "invalid_target",
        ),
        (SERVED, None, None, "invalid_request"),
        (SERVED, Some(TARGET), Some("admin"), "invalid_scope"),
        (
            SERVED,
            Some(TARGET),
            Some("offline_access"),
            "invalid_scope",
        ),
        (SERVED, Some(TARGET), Some("bad  scope"), "invalid_scope"),
    ] {
        assert_error(
            &exchange_token(&gw, &server, &subject, subject_audience, audience, scope).await,
            error,
            &format!("{subject_audience} {audience:?} {scope:?}"),
        );
    }
    let wrong_secret = TestClient {
        secret: Some("nope".into()),
        ..server.clone()
    };
    assert_error(
        &exchange_token(&gw, &wrong_secret, &subject, SERVED, Some(TARGET), None).await,
        "invalid_client",
        "wrong secret",
    );
    let no_policy = confidential_client(&admin).await;
    assert_error(
        &exchange_token(&gw, &no_policy, &subject, SERVED, Some(TARGET), None).await,
        "unauthorized_client",
        "no policy",
    );

    // The subject's family revoked (the user's client signed out): nothing more to exchange.
    admin
        .execute(
            "UPDATE oauth.refresh_families SET revoked_at = now() WHERE family_id = $1",
            &[&subject.family_id],
        )
        .await
        .unwrap();
    assert_error(
        &exchange_token(&gw, &server, &subject, SERVED, Some(TARGET), None).await,
        "invalid_request",
        "revoked family",
    );

    // Public clients may not be given a policy.
    let public = create_client(&admin, ClientSpec::public_native()).await;
    assert_sqlstate(
        admin
            .execute(
                "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3])",
                &[&public.id, &SERVED, &TARGET],
            )
            .await,
        "OA408",
        "public client policy",
    );
    assert_sqlstate(
        admin
            .execute(
                "SELECT oauth.set_token_exchange_policy($1, '{}', ARRAY[$2])",
                &[&server.id, &TARGET],
            )
            .await,
        "OA400",
        "empty subject audiences",
    );
}
