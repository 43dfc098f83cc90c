//! grant_type=client_credentials in SQL: the client is the subject, one grant per client, scope
//! and audience bounded by its registration.

use oauth_provider_tests::*;
use serde_json::Value;

async fn machine_client(db: &tokio_postgres::Client) -> TestClient {
    create_client(
        db,
        ClientSpec {
            grant_types: vec!["client_credentials".into()],
            allowed_resources: Some(vec!["https://mcp.example.com/mcp".into()]),
            scopes: vec!["mcp".into(), "openid".into(), "offline_access".into()],
            ..ClientSpec::default()
        },
    )
    .await
}

async fn issue(
    db: &tokio_postgres::Client,
    client: &TestClient,
    secret: Option<&str>,
    scope: Option<&str>,
    resource: Option<&str>,
) -> Value {
    db.query_one(
        "SELECT oauth.client_credentials_grant($1, $2, $3, $4)",
        &[&client.id, &secret, &scope, &resource],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_machine_client_gets_tokens_for_itself_within_its_registration() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = machine_client(&admin).await;
    let answer = issue(
        &gw,
        &client,
        client.secret(),
        Some("mcp"),
        Some("https://mcp.example.com/mcp"),
    )
    .await;
    assert_ok(&answer, "client_credentials");
    assert_eq!(str_field(&answer, "user_id"), client.id);
    assert_eq!(str_field(&answer, "subject_type"), "client");
    assert!(answer["refresh_token"].is_null());
    assert!(answer["family_id"].is_null());
    let grant = uuid_field(&answer, "grant_id");
    // No scope asked: the configured defaults the client is allowed (mcp).
    let default = issue(&gw, &client, client.secret(), None, None).await;
    assert_eq!(str_field(&default, "scope"), "mcp");
    assert_eq!(
        uuid_field(&default, "grant_id"),
        grant,
        "one grant per client"
    );

    for (scope, resource, error) in [
        (Some("openid"), None, "invalid_scope"),
        (Some("offline_access"), None, "invalid_scope"),
        (Some("email"), None, "invalid_scope"),
        (Some("mcp  mcp"), None, "invalid_scope"),
        (None, Some("https://other.example/mcp"), "invalid_target"),
        (None, Some("relative/path"), "invalid_target"),
    ] {
        assert_error(
            &issue(&gw, &client, client.secret(), scope, resource).await,
            error,
            &format!("{scope:?} {resource:?}"),
        );
    }
    assert_error(
        &issue(&gw, &client, Some("wrong"), None, None).await,
        "invalid_client",
        "wrong secret",
    );
    let code_client = confidential_client(&admin).await;
    assert_error(
        &issue(&gw, &code_client, code_client.secret(), None, None).await,
        "unauthorized_client",
        "no grant type",
    );

    // The client's grant is no user's: it is not listed as one, and revoking it ends its tokens.
    let listed: i64 = admin
        .query_one(
            "SELECT count(*) FROM oauth.list_user_grants($1)",
            &[&client.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(listed, 0);
    admin
        .execute("SELECT oauth.revoke_grant($1)", &[&grant])
        .await
        .unwrap();
    let claims = introspect_claims(&gw, &client, grant, None).await;
    assert!(!is_active(&claims));
    let next = issue(&gw, &client, client.secret(), None, None).await;
    assert_ne!(
        uuid_field(&next, "grant_id"),
        grant,
        "a new grant after revocation"
    );
    // Deleting the client revokes the grant too.
    let live = uuid_field(&next, "grant_id");
    admin
        .execute("SELECT oauth.delete_client($1)", &[&client.id])
        .await
        .unwrap();
    let revoked: i64 = admin
        .query_one(
            "SELECT count(*) FROM oauth.events WHERE kind = 'grant_revoked' AND grant_id = $1 AND detail->>'reason' = 'client_deleted'",
            &[&live],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        revoked, 1,
        "deleting the client revoked (and notified) its grant"
    );
}

#[tokio::test]
async fn public_clients_cannot_hold_the_client_credentials_grant() {
    let admin = admin().await;
    let spec = ClientSpec {
        grant_types: vec!["client_credentials".into()],
        ..ClientSpec::public_native()
    };
    assert_sqlstate(
        try_create_client(&admin, &spec).await,
        "OA408",
        "public client_credentials client",
    );
}

#[tokio::test]
async fn concurrent_first_requests_of_one_client_converge_on_one_grant() {
    let admin = admin().await;
    let client = machine_client(&admin).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let db = gateway().await;
            uuid_field(
                &issue(&db, &client, client.secret(), None, None).await,
                "grant_id",
            )
        }));
    }
    let mut grants = std::collections::BTreeSet::new();
    for t in tasks {
        grants.insert(t.await.unwrap());
    }
    assert_eq!(grants.len(), 1, "{grants:?}");
    let live: i64 = admin
        .query_one(
            "SELECT count(*) FROM oauth.grants WHERE client_id = $1 AND revoked_at IS NULL",
            &[&client.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 1);
}
