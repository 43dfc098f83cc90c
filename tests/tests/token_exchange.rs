//! RFC 8693 token exchange in SQL: only under a policy, never wider than the subject and the
//! policy, bound to the subject's grant and family, and revocable by the client that received it.

use std::time::Duration;

use oauth_provider_tests::*;
use serde_json::{Value, json};

const SERVED: &str = "https://files.example.com/mcp";
const TARGET: &str = "https://calendar.example.com/mcp";

struct Subject {
    grant_id: uuid::Uuid,
    family_id: uuid::Uuid,
    scope: String,
}

/// A user's tokens from a code flow asking for `scope`, as the subject of an exchange, with the
/// user and the client the user's tokens were issued to.
async fn subject_with_scope(
    admin: &Client,
    gw: &Client,
    scope: &str,
) -> (Subject, String, TestClient) {
    let app = confidential_client(admin).await;
    let user = unique("user");
    let tokens = Authorize {
        params: json!({"scope": scope}),
        props: json!({"plan": "team"}),
        ..Authorize::new(&app)
    }
    .run(gw, &user)
    .await
    .exchange()
    .run(gw)
    .await;
    assert_ok(&tokens, "subject code flow");
    let subject = Subject {
        grant_id: uuid_field(&tokens, "grant_id"),
        family_id: uuid_field(&tokens, "family_id"),
        scope: str_field(&tokens, "scope").to_owned(),
    };
    (subject, user, app)
}

/// The subject of a default code flow (scope `openid mcp`).
async fn subject(admin: &Client, gw: &Client) -> Subject {
    subject_with_scope(admin, gw, "openid mcp").await.0
}

/// `oauth.set_token_exchange_policy`: `client_id` may exchange tokens for [`SERVED`] into tokens
/// for `target`, within `scopes` (`None`: no ceiling).
async fn set_policy(
    db: &Client,
    client_id: &str,
    target: &str,
    scopes: Option<&[&str]>,
) -> Result<u64, tokio_postgres::Error> {
    db.execute(
        "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3], $4)",
        &[&client_id, &SERVED, &target, &scopes],
    )
    .await
}

/// A confidential client with a policy to exchange [`SERVED`] tokens for [`TARGET`] ones.
async fn server_with_policy(admin: &Client, scopes: Option<&[&str]>) -> TestClient {
    let server = confidential_client(admin).await;
    set_policy(admin, &server.id, TARGET, scopes).await.unwrap();
    server
}

/// `oauth.exchange_token` by `client` of `subject`; `TokenExchange::new` asks for a token for
/// [`TARGET`] from one for [`SERVED`], with the subject's scope.
struct TokenExchange<'a> {
    client: &'a TestClient,
    subject: &'a Subject,
    subject_audience: &'a str,
    audience: Option<&'a str>,
    scope: Option<&'a str>,
    subject_jti: Option<Uuid>,
}

impl<'a> TokenExchange<'a> {
    fn new(client: &'a TestClient, subject: &'a Subject) -> Self {
        TokenExchange {
            client,
            subject,
            subject_audience: SERVED,
            audience: Some(TARGET),
            scope: None,
            subject_jti: None,
        }
    }

    fn scope(self, scope: &'a str) -> Self {
        TokenExchange {
            scope: Some(scope),
            ..self
        }
    }

    async fn run(&self, gw: &Client) -> Value {
        scalar(
            gw,
            "SELECT oauth.exchange_token($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &self.client.id,
                &self.client.secret(),
                &self.subject.grant_id,
                &self.subject.family_id,
                &self.subject_audience,
                &self.subject.scope,
                &self.audience,
                &self.scope,
                &self.subject_jti,
            ],
        )
        .await
    }
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
    let server = server_with_policy(&admin, None).await;

    let exchanged = TokenExchange::new(&server, &subject).run(&gw).await;
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
    let narrow = TokenExchange::new(&server, &subject)
        .scope("mcp")
        .run(&gw)
        .await;
    assert_eq!(str_field(&narrow, "scope"), "mcp");
    let events: i64 = event_count(&admin, "token_exchanged", "client_id", &server.id).await;
    assert_eq!(events, 2);

    // A policy's scope ceiling applies; removing the policy ends exchanges.
    set_policy(&admin, &server.id, TARGET, Some(&["profile"]))
        .await
        .unwrap();
    assert_error(
        &TokenExchange::new(&server, &subject)
            .scope("mcp")
            .run(&gw)
            .await,
        "invalid_scope",
        "above the ceiling",
    );
    assert!(remove_policy(&admin, &server.id).await);
    assert_error(
        &TokenExchange::new(&server, &subject).run(&gw).await,
        "unauthorized_client",
        "policy removed",
    );
}

#[tokio::test]
async fn exchanges_outside_the_policy_or_of_dead_subjects_are_refused() {
    let (admin, gw) = (admin().await, gateway().await);
    let subject = subject(&admin, &gw).await;
    let server = server_with_policy(&admin, None).await;
    let valid = TokenExchange::new(&server, &subject);
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
        let request = TokenExchange {
            subject_audience,
            audience,
            scope,
            ..valid
        };
        assert_error(
            &request.run(&gw).await,
            error,
            &format!("{subject_audience} {audience:?} {scope:?}"),
        );
    }
    let wrong_secret = server.with_secret(Some("nope"));
    assert_error(
        &TokenExchange::new(&wrong_secret, &subject).run(&gw).await,
        "invalid_client",
        "wrong secret",
    );
    let no_policy = confidential_client(&admin).await;
    assert_error(
        &TokenExchange::new(&no_policy, &subject).run(&gw).await,
        "unauthorized_client",
        "no policy",
    );

    // The subject's family revoked (the user's client signed out): nothing more to exchange.
    execute(
        &admin,
        "UPDATE oauth.refresh_families SET revoked_at = now() WHERE family_id = $1",
        &[&subject.family_id],
    )
    .await;
    assert_error(
        &TokenExchange::new(&server, &subject).run(&gw).await,
        "invalid_request",
        "revoked family",
    );

    // Public clients may not be given a policy.
    let public = create_client(&admin, ClientSpec::public_native()).await;
    assert_sqlstate(
        set_policy(&admin, &public.id, TARGET, None).await,
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

#[tokio::test]
async fn the_exchanged_token_speaks_for_the_user_to_the_target_and_is_recorded_as_such() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, user, app) = subject_with_scope(&admin, &gw, "mcp profile").await;
    let server = server_with_policy(&admin, None).await;
    let exchanged = TokenExchange::new(&server, &subject)
        .scope("mcp")
        .run(&gw)
        .await;
    assert_ok(&exchanged, "exchange");
    assert_eq!(
        str_field(&exchanged, "user_id"),
        user,
        "the user's, not the server's"
    );
    assert_eq!(
        str_field(&exchanged, "client_id"),
        server.id,
        "issued to the exchanging client"
    );
    assert_ne!(server.id, app.id);
    assert_eq!(str_field(&exchanged, "subject_type"), "user");
    assert_eq!(str_field(&exchanged, "resource"), TARGET);
    assert_eq!(str_field(&exchanged, "scope"), "mcp");
    assert_eq!(exchanged["props"], json!({"plan": "team"}));
    assert!(exchanged.get("act").is_none(), "{exchanged}");
    assert!(exchanged["refresh_token"].is_null());
    assert!(exchanged["nonce"].is_null());

    let event = one_row(
        &admin,
        "SELECT user_id, grant_id, family_id, detail FROM oauth.events
              WHERE kind = 'token_exchanged' AND client_id = $1",
        &[&server.id],
    )
    .await;
    assert_eq!(event.get::<_, String>(0), user);
    assert_eq!(event.get::<_, uuid::Uuid>(1), subject.grant_id);
    assert_eq!(event.get::<_, uuid::Uuid>(2), subject.family_id);
    assert_eq!(
        event.get::<_, Value>(3),
        json!({"subject_audience": SERVED, "audience": TARGET, "scopes": ["mcp"]})
    );

    // Bound to the subject: live while the user's family is, dead once the app revokes it.
    assert!(is_active(
        &introspect_claims(&gw, &server, subject.grant_id, Some(subject.family_id)).await
    ));
    let revoked: Value = scalar(
        &gw,
        "SELECT oauth.revoke_token($1, $2, NULL, $3, $4)",
        &[&app.id, &app.secret, &subject.grant_id, &subject.family_id],
    )
    .await;
    assert_eq!(revoked, json!({}));
    assert!(!is_active(
        &introspect_claims(&gw, &server, subject.grant_id, Some(subject.family_id)).await
    ));
    assert_error(
        &TokenExchange::new(&server, &subject).run(&gw).await,
        "invalid_request",
        "the subject's family was revoked",
    );
}

#[tokio::test]
async fn scopes_beyond_the_subject_token_are_refused() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, _) = subject_with_scope(&admin, &gw, "mcp").await;
    let server = server_with_policy(&admin, None).await;
    for scope in ["profile", "mcp profile", "email"] {
        assert_error(
            &TokenExchange::new(&server, &subject)
                .scope(scope)
                .run(&gw)
                .await,
            "invalid_scope",
            scope,
        );
    }
    assert_eq!(
        str_field(
            &TokenExchange::new(&server, &subject).run(&gw).await,
            "scope"
        ),
        "mcp",
        "no scope asked: the subject's"
    );
}

#[tokio::test]
async fn the_policy_caps_the_scopes_of_exchanged_tokens() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, _) = subject_with_scope(&admin, &gw, "mcp profile email").await;
    let server = server_with_policy(&admin, Some(&["mcp", "email"])).await;
    assert_eq!(
        str_field(
            &TokenExchange::new(&server, &subject).run(&gw).await,
            "scope"
        ),
        "mcp email",
        "no scope asked: the subject's within the policy"
    );
    assert_eq!(
        str_field(
            &TokenExchange::new(&server, &subject)
                .scope("email")
                .run(&gw)
                .await,
            "scope"
        ),
        "email"
    );
    assert_error(
        &TokenExchange::new(&server, &subject)
            .scope("profile")
            .run(&gw)
            .await,
        "invalid_scope",
        "in the subject, outside the policy",
    );
    // A policy and a subject with nothing in common leave nothing to exchange.
    let (narrow, _, _) = subject_with_scope(&admin, &gw, "profile").await;
    assert_error(
        &TokenExchange::new(&server, &narrow).run(&gw).await,
        "invalid_scope",
        "empty intersection",
    );
}

#[tokio::test]
async fn openid_and_offline_access_are_never_delegated() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, _) = subject_with_scope(&admin, &gw, "openid offline_access mcp").await;
    // Even a policy that lists them does not delegate them.
    let server = server_with_policy(&admin, Some(&["openid", "offline_access", "mcp"])).await;
    assert_eq!(
        str_field(
            &TokenExchange::new(&server, &subject).run(&gw).await,
            "scope"
        ),
        "mcp"
    );
    for scope in [
        "openid",
        "offline_access",
        "mcp openid",
        "offline_access mcp",
    ] {
        assert_error(
            &TokenExchange::new(&server, &subject)
                .scope(scope)
                .run(&gw)
                .await,
            "invalid_scope",
            scope,
        );
    }
    let (user_only, _, _) = subject_with_scope(&admin, &gw, "openid offline_access").await;
    assert_error(
        &TokenExchange::new(&server, &user_only).run(&gw).await,
        "invalid_scope",
        "a subject with only user-bound scopes",
    );
}

#[tokio::test]
async fn a_revoked_grant_or_a_family_of_another_grant_is_no_subject() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, _) = subject_with_scope(&admin, &gw, "mcp").await;
    let (other, _, _) = subject_with_scope(&admin, &gw, "mcp").await;
    let server = server_with_policy(&admin, None).await;
    let mixed = Subject {
        grant_id: subject.grant_id,
        family_id: other.family_id,
        scope: subject.scope.clone(),
    };
    assert_error(
        &TokenExchange::new(&server, &mixed).run(&gw).await,
        "invalid_request",
        "family of another grant",
    );
    let unknown = Subject {
        grant_id: Uuid::new_v4(),
        family_id: subject.family_id,
        scope: subject.scope.clone(),
    };
    assert_error(
        &TokenExchange::new(&server, &unknown).run(&gw).await,
        "invalid_request",
        "unknown grant",
    );
    assert_ok(
        &TokenExchange::new(&server, &subject).run(&gw).await,
        "before revocation",
    );
    revoke_grant(&admin, subject.grant_id).await;
    assert_error(
        &TokenExchange::new(&server, &subject).run(&gw).await,
        "invalid_request",
        "revoked grant",
    );
    let null_grant: Value = scalar(
        &gw,
        "SELECT oauth.exchange_token($1, $2, NULL, NULL, $3, 'mcp', $4, NULL)",
        &[&server.id, &server.secret, &SERVED, &TARGET],
    )
    .await;
    assert_error(&null_grant, "invalid_request", "no subject grant");
}

#[tokio::test]
async fn policies_are_set_replaced_and_removed_by_the_administrator_only() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, _) = subject_with_scope(&admin, &gw, "mcp").await;
    let server = server_with_policy(&admin, None).await;
    let elsewhere = "https://elsewhere.example/mcp";
    // Setting again replaces the policy.
    set_policy(&admin, &server.id, elsewhere, None)
        .await
        .unwrap();
    assert_error(
        &TokenExchange::new(&server, &subject).run(&gw).await,
        "invalid_target",
        "the replaced target",
    );
    assert_ok(
        &TokenExchange {
            audience: Some(elsewhere),
            ..TokenExchange::new(&server, &subject)
        }
        .run(&gw)
        .await,
        "the new target",
    );
    assert_eq!(policy_count(&admin, &server.id).await, 1);

    for (sql, code, what) in [
        (
            "SELECT oauth.set_token_exchange_policy('no-such-client', ARRAY['https://a.example'], ARRAY['https://b.example'])",
            "OA411",
            "unknown client",
        ),
        (
            "SELECT oauth.set_token_exchange_policy($1, ARRAY['https://a.example'], '{}')",
            "OA400",
            "no target",
        ),
        (
            "SELECT oauth.set_token_exchange_policy($1, ARRAY['https://a.example', NULL], ARRAY['https://b.example'])",
            "OA400",
            "NULL audience",
        ),
        (
            "SELECT oauth.set_token_exchange_policy($1, ARRAY['https://a.example'], ARRAY['https://b.example'], '{admin}')",
            "OA405",
            "unsupported scope",
        ),
    ] {
        assert_sqlstate(try_execute_with(&admin, sql, &server.id).await, code, what);
    }
    // The gateway cannot grant itself exchanges.
    assert_sqlstate(
        set_policy(&gw, &server.id, TARGET, None).await,
        "42501",
        "gateway setting a policy",
    );

    assert!(remove_policy(&admin, &server.id).await);
    assert!(
        !remove_policy(&admin, &server.id).await,
        "nothing left to remove"
    );
    let kinds: Vec<String> = column(
        &admin,
        "SELECT kind FROM oauth.events WHERE client_id = $1 AND kind LIKE 'token_exchange_policy%'
              ORDER BY event_id",
        &[&server.id],
    )
    .await;
    assert_eq!(
        kinds,
        vec![
            "token_exchange_policy_set",
            "token_exchange_policy_set",
            "token_exchange_policy_removed"
        ]
    );

    // Deleting the client removes its policy.
    let doomed = server_with_policy(&admin, None).await;
    delete_client(&admin, &doomed.id).await;
    let left = policy_count(&admin, &doomed.id).await;
    assert_eq!(left, 0);
}

async fn remove_policy(admin: &Client, client_id: &str) -> bool {
    scalar(
        admin,
        "SELECT oauth.remove_token_exchange_policy($1)",
        &[&client_id],
    )
    .await
}

async fn policy_count(admin: &Client, client_id: &str) -> i64 {
    row_count(
        admin,
        "oauth.token_exchange_policies WHERE client_id = $1",
        &[&client_id],
    )
    .await
}

/// The claims of an access token as the gateway passes them on: what the extension issued, and
/// the jti the gateway minted into the JWT.
struct AccessToken {
    grant_id: Uuid,
    family_id: Option<Uuid>,
    client_id: String,
    jti: Uuid,
}

impl AccessToken {
    fn minted(issued: &Value) -> Self {
        AccessToken {
            grant_id: uuid_field(issued, "grant_id"),
            family_id: issued["family_id"]
                .as_str()
                .map(|id| id.parse().expect("family_id is a uuid")),
            client_id: str_field(issued, "client_id").to_owned(),
            jti: Uuid::new_v4(),
        }
    }

    /// Another token of the same grant and family, issued to `client_id`.
    fn sibling(&self, client_id: &str) -> Self {
        AccessToken {
            grant_id: self.grant_id,
            family_id: self.family_id,
            client_id: client_id.to_owned(),
            jti: Uuid::new_v4(),
        }
    }
}

/// RFC 7009 of an access token by `client`, the token expiring `expires_in` from now (an
/// interval, negative once expired).
async fn revoke_access(
    db: &Client,
    client: &TestClient,
    token: &AccessToken,
    expires_in: &str,
) -> Value {
    scalar(
        db,
        "SELECT oauth.revoke_token($1, $2, NULL, $3, $4, $5, $6, now() + $7::text::interval)",
        &[
            &client.id,
            &client.secret,
            &token.grant_id,
            &token.family_id,
            &token.jti,
            &token.client_id,
            &expires_in,
        ],
    )
    .await
}

async fn introspect_access(db: &Client, client: &TestClient, token: &AccessToken) -> Value {
    scalar(
        db,
        "SELECT oauth.introspect($1, $2, NULL, $3, $4, $5)",
        &[
            &client.id,
            &client.secret,
            &token.grant_id,
            &token.family_id,
            &token.jti,
        ],
    )
    .await
}

async fn userinfo_of(db: &Client, token: &AccessToken) -> Value {
    scalar(
        db,
        "SELECT oauth.userinfo($1, $2, $3)",
        &[&token.grant_id, &token.family_id, &token.jti],
    )
    .await
}

#[tokio::test]
async fn the_client_that_received_an_exchanged_token_revokes_that_token_alone() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, app) = subject_with_scope(&admin, &gw, "mcp").await;
    let server = server_with_policy(&admin, None).await;
    let exchanged = TokenExchange::new(&server, &subject).run(&gw).await;
    assert_ok(&exchanged, "exchange");
    let token = AccessToken::minted(&exchanged);
    assert_eq!(token.client_id, server.id);
    let users_token = token.sibling(&app.id);
    assert!(is_active(&introspect_access(&gw, &server, &token).await));

    // Only the client the token was issued to may revoke it (RFC 7009 §2.1): anyone else's
    // request succeeds without effect (§2.2), the user's own client included.
    let other = confidential_client(&admin).await;
    for client in [&app, &other] {
        assert_eq!(
            revoke_access(&gw, client, &token, "1 hour").await,
            json!({}),
            "{}",
            client.id
        );
    }
    assert_error(
        &revoke_access(&gw, &server.with_secret(Some("wrong")), &token, "1 hour").await,
        "invalid_client",
        "bad client auth",
    );
    assert!(is_active(&introspect_access(&gw, &server, &token).await));

    assert_eq!(
        revoke_access(&gw, &server, &token, "1 hour").await,
        json!({})
    );
    assert!(!is_active(&introspect_access(&gw, &server, &token).await));
    assert!(!is_active(&introspect_access(&gw, &app, &token).await));
    assert_eq!(userinfo_of(&gw, &token).await, json!({"active": false}));

    // The user's grant and family, and the tokens the user's client holds, live on.
    assert!(!family_row(&admin, subject.family_id).await.revoked);
    assert!(grant_live(&admin, subject.grant_id).await);
    assert!(is_active(&introspect_access(&gw, &app, &users_token).await));
    assert_eq!(userinfo_of(&gw, &users_token).await["active"], json!(true));
    let again = TokenExchange::new(&server, &subject).run(&gw).await;
    assert_ok(&again, "a new exchange of the live subject");
    assert!(is_active(
        &introspect_access(&gw, &server, &AccessToken::minted(&again)).await
    ));

    // Recorded once; revoking again succeeds without effect.
    assert_eq!(
        revoke_access(&gw, &server, &token, "1 hour").await,
        json!({})
    );
    let event = one_row(
        &admin,
        "SELECT user_id, grant_id, family_id, detail FROM oauth.events
          WHERE kind = 'access_token_revoked' AND client_id = $1",
        &[&server.id],
    )
    .await;
    assert_eq!(event.get::<_, Uuid>(1), subject.grant_id);
    assert_eq!(event.get::<_, Option<Uuid>>(2), Some(subject.family_id));
    assert_eq!(
        event.get::<_, Value>(3),
        json!({"jti": token.jti, "reason": "revoked_by_client"})
    );
}

#[tokio::test]
async fn a_revoked_exchanged_token_is_no_subject_for_a_further_exchange() {
    let (admin, gw) = (admin().await, gateway().await);
    let (subject, _, _) = subject_with_scope(&admin, &gw, "mcp").await;
    let server = server_with_policy(&admin, None).await;
    let token = AccessToken::minted(&TokenExchange::new(&server, &subject).run(&gw).await);
    // The calendar server passes the exchanged token on, exchanged once more.
    let calendar = confidential_client(&admin).await;
    let elsewhere = "https://elsewhere.example/mcp";
    set_policy_for(&admin, &calendar.id, TARGET, elsewhere).await;
    let delegated = Subject {
        grant_id: token.grant_id,
        family_id: subject.family_id,
        scope: "mcp".into(),
    };
    let further = TokenExchange {
        subject_audience: TARGET,
        audience: Some(elsewhere),
        subject_jti: Some(token.jti),
        ..TokenExchange::new(&calendar, &delegated)
    };
    assert_ok(&further.run(&gw).await, "before revocation");
    assert_eq!(
        revoke_access(&gw, &server, &token, "1 hour").await,
        json!({})
    );
    assert_error(
        &further.run(&gw).await,
        "invalid_request",
        "a revoked subject token",
    );
}

#[tokio::test]
async fn a_revoked_exchanged_token_is_announced_resynchronised_and_forgotten_once_expired() {
    let (admin, gw) = (admin().await, gateway().await);
    let (listener, mut notifications) = connect_listening(&gateway_config()).await;
    listener
        .batch_execute("LISTEN oauth_revocations")
        .await
        .unwrap();
    let (subject, _, _) = subject_with_scope(&admin, &gw, "mcp").await;
    let server = server_with_policy(&admin, None).await;
    let issued = TokenExchange::new(&server, &subject).run(&gw).await;
    let (live, expired, far) = (
        AccessToken::minted(&issued),
        AccessToken::minted(&issued),
        AccessToken::minted(&issued),
    );

    assert_eq!(
        revoke_access(&gw, &server, &live, "1 hour").await,
        json!({})
    );
    // Gateways hear the jti alone: one that predates per-token revocation would take a grant_id
    // without a family_id for the revocation of the whole grant.
    assert_eq!(
        next_payload_about(&mut notifications, live.jti).await,
        json!({"jti": live.jti})
    );
    let backlog: Value = scalar(
        &gw,
        "SELECT oauth.revocations(now() - interval '1 minute')",
        &[],
    )
    .await;
    assert!(
        backlog["access_tokens"]
            .as_array()
            .unwrap()
            .contains(&json!(live.jti)),
        "{backlog}"
    );
    assert!(
        !backlog["families"]
            .as_array()
            .unwrap()
            .contains(&json!(subject.family_id)),
        "{backlog}"
    );

    // An expired token may still be revoked; a claimed exp beyond any access token's life is cut
    // to it, so the list stays bounded.
    assert_eq!(
        revoke_access(&gw, &server, &expired, "-1 minute").await,
        json!({})
    );
    assert_eq!(
        revoke_access(&gw, &server, &far, "30 days").await,
        json!({})
    );
    let bounded: bool = scalar(
        &admin,
        "SELECT expires_at <= now() + interval '1 day' FROM oauth.revoked_access_tokens WHERE jti = $1",
        &[&far.jti],
    )
    .await;
    assert!(bounded);
    cleanup_in(&admin, "0 seconds").await;
    assert_eq!(listed(&admin, &expired).await, 0, "expired: forgotten");
    assert_eq!(listed(&admin, &live).await, 1, "still live: kept");
    assert!(!is_active(&introspect_access(&gw, &server, &live).await));
}

/// How many rows list `token` as revoked.
async fn listed(admin: &Client, token: &AccessToken) -> i64 {
    row_count(
        admin,
        "oauth.revoked_access_tokens WHERE jti = $1",
        &[&token.jti],
    )
    .await
}

/// `client_id` may exchange tokens for `subject_audience` into tokens for `target`.
async fn set_policy_for(db: &Client, client_id: &str, subject_audience: &str, target: &str) {
    execute(
        db,
        "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3])",
        &[&client_id, &subject_audience, &target],
    )
    .await;
}

/// The next `oauth_revocations` payload naming `jti` (others come from concurrent tests).
async fn next_payload_about(
    notifications: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    jti: Uuid,
) -> Value {
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
            .await
            .expect("no notification within 10 s")
            .expect("listening connection closed");
        let payload: Value = serde_json::from_str(n.payload()).expect("payload is JSON");
        if payload["jti"] == json!(jti) {
            return payload;
        }
    }
}
