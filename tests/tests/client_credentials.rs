//! grant_type=client_credentials in SQL: the client is the subject, one grant per client, scope
//! and audience bounded by its registration.

use oauth_provider_tests::*;
use serde_json::Value;

async fn machine_client(db: &Client) -> TestClient {
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

/// `oauth.client_credentials_grant`; `Grant::of(&client)` authenticates with the client's secret
/// and asks for no particular scope or resource.
struct Grant<'a> {
    client: &'a TestClient,
    secret: Option<&'a str>,
    scope: Option<&'a str>,
    resource: Option<&'a str>,
}

impl<'a> Grant<'a> {
    fn of(client: &'a TestClient) -> Self {
        let secret = client.secret();
        let (scope, resource) = (None, None);
        Grant {
            client,
            secret,
            scope,
            resource,
        }
    }

    async fn run(&self, db: &Client) -> Value {
        let sql = "SELECT oauth.client_credentials_grant($1, $2, $3, $4)";
        let Grant {
            client,
            secret,
            scope,
            resource,
        } = self;
        scalar(db, sql, &[&client.id, secret, scope, resource]).await
    }
}

#[tokio::test]
async fn a_machine_client_gets_tokens_for_itself_within_its_registration() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = machine_client(&admin).await;
    let answer = Grant {
        scope: Some("mcp"),
        resource: Some("https://mcp.example.com/mcp"),
        ..Grant::of(&client)
    }
    .run(&gw)
    .await;
    assert_ok(&answer, "client_credentials");
    assert_eq!(str_field(&answer, "user_id"), client.id);
    assert_eq!(str_field(&answer, "subject_type"), "client");
    assert!(answer["refresh_token"].is_null());
    assert!(answer["family_id"].is_null());
    let grant = uuid_field(&answer, "grant_id");
    // No scope asked: the configured defaults the client is allowed (mcp).
    let default = Grant::of(&client).run(&gw).await;
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
            &Grant {
                scope,
                resource,
                ..Grant::of(&client)
            }
            .run(&gw)
            .await,
            error,
            &format!("{scope:?} {resource:?}"),
        );
    }
    assert_error(
        &Grant {
            secret: Some("wrong"),
            ..Grant::of(&client)
        }
        .run(&gw)
        .await,
        "invalid_client",
        "wrong secret",
    );
    let code_client = confidential_client(&admin).await;
    assert_error(
        &Grant::of(&code_client).run(&gw).await,
        "unauthorized_client",
        "no grant type",
    );

    // The client's grant is no user's: it is not listed as one, and revoking it ends its tokens.
    let listed: i64 = row_count(&admin, "oauth.list_user_grants($1)", &[&client.id]).await;
    assert_eq!(listed, 0);
    execute(&admin, "SELECT oauth.revoke_grant($1)", &[&grant]).await;
    let claims = introspect_claims(&gw, &client, grant, None).await;
    assert!(!is_active(&claims));
    let next = Grant::of(&client).run(&gw).await;
    assert_ne!(
        uuid_field(&next, "grant_id"),
        grant,
        "a new grant after revocation"
    );
    // Deleting the client revokes the grant too.
    let live = uuid_field(&next, "grant_id");
    execute(&admin, "SELECT oauth.delete_client($1)", &[&client.id]).await;
    let revoked: i64 = row_count(&admin, "oauth.events WHERE kind = 'grant_revoked' AND grant_id = $1 AND detail->>'reason' = 'client_deleted'", &[&live]).await;
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
    // Every connection is open before any asks, so that the first requests really overlap.
    let mut connections = Vec::new();
    for _ in 0..16 {
        connections.push(gateway().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(connections.len()));
    let mut tasks = Vec::new();
    for db in connections {
        let (client, barrier) = (client.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            uuid_field(&Grant::of(&client).run(&db).await, "grant_id")
        }));
    }
    let mut grants = std::collections::BTreeSet::new();
    for t in tasks {
        grants.insert(t.await.unwrap());
    }
    assert_eq!(grants.len(), 1, "{grants:?}");
    let live: i64 = row_count(
        &admin,
        "oauth.grants WHERE client_id = $1 AND revoked_at IS NULL",
        &[&client.id],
    )
    .await;
    assert_eq!(live, 1);
}

#[tokio::test]
async fn requested_scopes_are_granted_as_asked_and_the_defaults_when_none_are_asked() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = create_client(
        &admin,
        ClientSpec {
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["mcp".into(), "profile".into(), "email".into()],
            ..ClientSpec::default()
        },
    )
    .await;
    for (asked, granted) in [
        (Some("profile mcp"), "profile mcp"),
        (Some("email"), "email"),
        (Some("mcp email profile"), "mcp email profile"),
        (None, "mcp"),
        (Some(""), "mcp"),
    ] {
        let answer = Grant {
            scope: asked,
            ..Grant::of(&client)
        }
        .run(&gw)
        .await;
        assert_ok(&answer, &format!("{asked:?}"));
        assert_eq!(str_field(&answer, "scope"), granted, "{asked:?}");
        assert!(answer["resource"].is_null(), "no resource asked");
        assert!(answer["nonce"].is_null());
    }
    assert_error(
        &Grant {
            scope: Some("mcp openid"),
            ..Grant::of(&client)
        }
        .run(&gw)
        .await,
        "invalid_scope",
        "a scope the client is not allowed",
    );

    // A client allowed none of the default scopes must name its scope.
    let narrow = create_client(
        &admin,
        ClientSpec {
            grant_types: vec!["client_credentials".into()],
            scopes: vec!["profile".into()],
            ..ClientSpec::default()
        },
    )
    .await;
    assert_error(
        &Grant::of(&narrow).run(&gw).await,
        "invalid_scope",
        "no default scope allowed",
    );
    assert_ok(
        &Grant {
            scope: Some("profile"),
            ..Grant::of(&narrow)
        }
        .run(&gw)
        .await,
        "named scope",
    );
}

#[tokio::test]
async fn an_allowed_resource_is_carried_into_the_token() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = machine_client(&admin).await;
    let answer = Grant {
        resource: Some("https://mcp.example.com/mcp"),
        ..Grant::of(&client)
    }
    .run(&gw)
    .await;
    assert_ok(&answer, "allowed resource");
    assert_eq!(
        str_field(&answer, "resource"),
        "https://mcp.example.com/mcp"
    );
    for resource in [
        "https://mcp.example.com/mcp/",
        "https://mcp.example.com/mcp#frag",
        "not a uri",
        "",
    ] {
        assert_error(
            &Grant {
                resource: Some(resource),
                ..Grant::of(&client)
            }
            .run(&gw)
            .await,
            "invalid_target",
            resource,
        );
    }
    // A client without allowed_resources may name any well-formed resource.
    let open = create_client(
        &admin,
        ClientSpec {
            grant_types: vec!["client_credentials".into()],
            ..ClientSpec::default()
        },
    )
    .await;
    let anywhere = Grant {
        resource: Some("https://anything.example/mcp"),
        ..Grant::of(&open)
    }
    .run(&gw)
    .await;
    assert_eq!(
        str_field(&anywhere, "resource"),
        "https://anything.example/mcp"
    );
}

#[tokio::test]
async fn a_missing_secret_or_an_unknown_client_is_invalid_client() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = machine_client(&admin).await;
    assert_error(
        &Grant {
            secret: None,
            ..Grant::of(&client)
        }
        .run(&gw)
        .await,
        "invalid_client",
        "no secret",
    );
    assert_error(
        &Grant {
            secret: Some(""),
            ..Grant::of(&client)
        }
        .run(&gw)
        .await,
        "invalid_client",
        "empty secret",
    );
    let unknown = TestClient {
        id: unique("nobody"),
        ..client.clone()
    };
    assert_error(
        &Grant {
            secret: client.secret(),
            ..Grant::of(&unknown)
        }
        .run(&gw)
        .await,
        "invalid_client",
        "unknown client",
    );
    let grants: i64 = row_count(&admin, "oauth.grants WHERE client_id = $1", &[&client.id]).await;
    assert_eq!(grants, 0, "failed requests create no grant");
}

#[tokio::test]
async fn a_client_token_is_active_until_its_grant_is_revoked() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = machine_client(&admin).await;
    let answer = Grant::of(&client).run(&gw).await;
    let grant = uuid_field(&answer, "grant_id");
    let row = one_row(
        &admin,
        "SELECT subject_type, user_id, client_id FROM oauth.grants WHERE grant_id = $1",
        &[&grant],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "client");
    assert_eq!(row.get::<_, String>(1), client.id);
    assert_eq!(row.get::<_, String>(2), client.id);
    let events: i64 = event_count(&admin, "client_grant_created", "grant_id", &grant).await;
    assert_eq!(events, 1);

    let before = introspect_claims(&gw, &client, grant, None).await;
    assert!(is_active(&before), "{before}");
    assert_eq!(str_field(&before, "user_id"), client.id);
    assert_eq!(str_field(&before, "client_id"), client.id);
    let revoked: bool = scalar(&admin, "SELECT oauth.revoke_grant($1)", &[&grant]).await;
    assert!(revoked);
    assert!(!is_active(
        &introspect_claims(&gw, &client, grant, None).await
    ));
    let next = Grant::of(&client).run(&gw).await;
    let new_grant = uuid_field(&next, "grant_id");
    assert_ne!(new_grant, grant, "a revoked grant is never revived");
    assert!(is_active(
        &introspect_claims(&gw, &client, new_grant, None).await
    ));
    assert!(
        !is_active(&introspect_claims(&gw, &client, grant, None).await),
        "the old grant stays dead"
    );
}

#[tokio::test]
async fn a_user_whose_id_equals_the_client_id_keeps_a_grant_of_their_own() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = create_client(
        &admin,
        ClientSpec {
            grant_types: vec![
                "authorization_code".into(),
                "refresh_token".into(),
                "client_credentials".into(),
            ],
            ..ClientSpec::default()
        },
    )
    .await;
    let user_tokens = tokens_for(&gw, &client, &client.id).await;
    let user_grant = uuid_field(&user_tokens, "grant_id");
    let own = Grant::of(&client).run(&gw).await;
    let client_grant = uuid_field(&own, "grant_id");
    assert_ne!(user_grant, client_grant);
    assert_eq!(str_field(&own, "subject_type"), "client");

    let listed: Vec<uuid::Uuid> = column(
        &admin,
        "SELECT grant_id FROM oauth.list_user_grants($1)",
        &[&client.id],
    )
    .await;
    assert_eq!(listed, vec![user_grant], "only the user's grant is listed");
    execute(&admin, "SELECT oauth.revoke_grant($1)", &[&client_grant]).await;
    assert!(
        grant_live(&admin, user_grant).await,
        "the user's grant is another grant"
    );
    assert_ok(
        &rotate(&gw, &client, str_field(&user_tokens, "refresh_token")).await,
        "the user's refresh token still works",
    );
}
