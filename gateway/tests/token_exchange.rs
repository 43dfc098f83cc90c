//! Token exchange (RFC 8693) over real HTTP: an MCP server trades the user's token for one meant
//! for another server, within the policy the administrator set.

mod common;

use std::time::Duration;

use common::*;
use hyper::StatusCode;
use oauth_gateway::config::RouteConfig;
use serde_json::json;

const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const OTHER_RESOURCE: &str = "https://calendar.example.com/mcp";

#[tokio::test]
async fn token_exchange_narrows_audience_and_scope_and_names_the_actor() {
    let gw = Gateway::start().await;
    // The user authorizes an MCP client for the first MCP server (RESOURCE).
    let user_client = gw
        .public_client(&["mcp", "profile", "offline_access"])
        .await;
    let user_tokens = gw
        .code_flow(&Authorization {
            scope: "mcp profile offline_access",
            ..Authorization::new(&user_client)
        })
        .await
        .json();
    let subject = user_tokens["access_token"].as_str().unwrap();
    let subject_claims = gw.verify(subject, Some(RESOURCE)).unwrap();

    // That MCP server is a confidential client allowed to exchange its tokens for the calendar's.
    let machine = NewClient::machine("client_secret_basic", &["client_credentials"]);
    let server = gw.create_client(&machine).await;
    gw.admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3], '{mcp}')",
            &[&server.id, &RESOURCE, &OTHER_RESOURCE],
        )
        .await
        .unwrap();
    let server_auth = server.basic();
    let exchange = TokenRequest {
        grant_type: EXCHANGE_GRANT,
        subject_token: subject,
        subject_token_type: ACCESS_TOKEN_TYPE,
        resource: OTHER_RESOURCE,
        authorization: &server_auth,
        ..TokenRequest::default()
    };

    let body = gw.token(&exchange).await.ok_json();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert!(body.get("refresh_token").is_none());
    let exchanged = body["access_token"].as_str().unwrap();
    let claims = gw.verify(exchanged, Some(OTHER_RESOURCE)).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], json!(server.id));
    assert_eq!(claims["act"], json!({"sub": server.id}));
    assert_eq!(
        claims["scope"], "mcp",
        "the policy's ceiling, never offline_access"
    );
    assert_eq!(claims["grant_id"], subject_claims["grant_id"]);
    assert!(claims["exp"].as_u64() <= subject_claims["exp"].as_u64());
    // The token for the first server is refused where the exchanged one is meant to go, and vice versa.
    assert!(gw.verify(exchanged, Some(RESOURCE)).is_err());

    let no_policy = gw.create_client(&machine).await.basic();
    let refusals = [
        (
            "a resource outside the policy",
            TokenRequest {
                resource: "https://elsewhere.example/mcp",
                ..exchange.clone()
            },
            "invalid_target",
        ),
        (
            "a scope outside the policy",
            TokenRequest {
                scope: "profile",
                ..exchange.clone()
            },
            "invalid_scope",
        ),
        (
            "a JWT subject token type",
            TokenRequest {
                subject_token_type: "urn:ietf:params:oauth:token-type:jwt",
                ..exchange.clone()
            },
            "invalid_request",
        ),
        (
            "a subject that is not a token",
            TokenRequest {
                subject_token: "not-a-token",
                ..exchange.clone()
            },
            "invalid_request",
        ),
        (
            "no resource",
            TokenRequest {
                resource: "",
                ..exchange.clone()
            },
            "invalid_request",
        ),
        (
            "an actor token",
            TokenRequest {
                actor_token: "x",
                ..exchange.clone()
            },
            "invalid_request",
        ),
        (
            "a client without a policy",
            TokenRequest {
                resource: "",
                audience: OTHER_RESOURCE,
                authorization: &no_policy,
                ..exchange.clone()
            },
            "unauthorized_client",
        ),
    ];
    for (what, request, error) in &refusals {
        assert_eq!(gw.token(request).await.oauth_error(), *error, "{what}");
    }

    // The user revokes the app: the subject can no longer be exchanged and the exchanged token dies with it.
    gw.revoke_grant(subject_claims["grant_id"].as_str().unwrap())
        .await;
    assert_eq!(gw.token(&exchange).await.oauth_error(), "invalid_request");
    assert_eq!(
        gw.introspect(exchanged, &server_auth).await["active"],
        json!(false)
    );
    gw.stop().await;
}

/// The revocation feed's `application_name` (db/feed.rs), which the relay freezes.
const FEED: &str = "oauth-gateway revocation feed";

/// A route guarding `prefix`, proxied to `upstream`, for tokens with `mcp`.
fn route(prefix: &str, upstream: &RecordingUpstream) -> RouteConfig {
    RouteConfig {
        prefix: prefix.into(),
        upstream: upstream.url.clone(),
        scopes: vec!["mcp".into()],
        ..RouteConfig::default()
    }
}

async fn guard_status(gw: &Gateway, url: &str, token: &str) -> StatusCode {
    gw.http
        .get(url, &[("authorization", &bearer(token))])
        .await
        .status
}

#[tokio::test]
async fn the_client_that_received_an_exchanged_token_revokes_it_alone_at_every_gateway() {
    // One gateway guards two MCP servers: files at /mcp, calendar at /calendar.
    let upstream = RecordingUpstream::start().await;
    let gw = Gateway::start_with(Options {
        routes: vec![route("/mcp", &upstream), route("/calendar", &upstream)],
        ..Options::default()
    })
    .await;
    let files = gw.mcp_url();
    let calendar = format!("{}/calendar", gw.base);

    // The user's client holds a token for files; files exchanges it to call the calendar.
    let user_client = gw.public_client(&["mcp"]).await;
    let users_token = gw
        .code_flow(&Authorization {
            resource: &files,
            scope: "mcp",
            ..Authorization::new(&user_client)
        })
        .await
        .ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    gw.admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3], '{mcp}')",
            &[&server.id, &files, &calendar],
        )
        .await
        .unwrap();
    let server_auth = server.basic();
    let exchanged = gw
        .token(&TokenRequest {
            grant_type: EXCHANGE_GRANT,
            subject_token: &users_token,
            subject_token_type: ACCESS_TOKEN_TYPE,
            resource: &calendar,
            authorization: &server_auth,
            ..TokenRequest::default()
        })
        .await
        .ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // A second gateway whose revocation feed runs through a relay that can freeze it: what it
    // never hears of must come with its resynchronisation.
    let relay = FreezingRelay::start(&gw.db_name, FEED).await;
    let (second, second_base) = gw
        .second_with(|config| config.database_url = relay.database_url.clone())
        .await;
    let calendar_via_second = format!("{second_base}/calendar");
    gw.wait_synced(&calendar, &exchanged).await;
    gw.wait_synced(&calendar_via_second, &exchanged).await;
    for url in [&calendar, &calendar_via_second] {
        assert_eq!(guard_status(&gw, url, &exchanged).await, StatusCode::OK);
    }
    assert_eq!(
        gw.introspect(&exchanged, &server_auth).await["active"],
        json!(true)
    );

    relay.freeze();
    // Neither the user's client nor a third client may revoke it: success without effect.
    let bystander = gw.confidential_client(&["mcp"]).await.basic();
    assert_eq!(
        gw.post(
            "/revoke",
            &[("token", &exchanged), ("client_id", &user_client)]
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        gw.revoke(&exchanged, &bystander).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.introspect(&exchanged, &server_auth).await["active"],
        json!(true)
    );

    // The client it was issued to revokes it (RFC 7009 §2.1).
    assert_eq!(
        gw.revoke(&exchanged, &server_auth).await.status,
        StatusCode::OK
    );
    assert_eq!(
        gw.introspect(&exchanged, &server_auth).await,
        json!({"active": false})
    );
    gw.wait_refused(
        &calendar,
        &exchanged,
        Duration::from_secs(1),
        "the exchanged token still served a second after its revocation",
    )
    .await;
    // The user's own token, of the same grant and family, still passes and is still active.
    assert_eq!(
        guard_status(&gw, &files, &users_token).await,
        StatusCode::OK
    );
    assert_eq!(
        gw.introspect(&users_token, &server_auth).await["active"],
        json!(true)
    );
    // It is no subject for another exchange either.
    let again = TokenRequest {
        grant_type: EXCHANGE_GRANT,
        subject_token: &exchanged,
        subject_token_type: ACCESS_TOKEN_TYPE,
        resource: &calendar,
        authorization: &server_auth,
        ..TokenRequest::default()
    };
    gw.admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2, $3], ARRAY[$3], '{mcp}')",
            &[&server.id, &files, &calendar],
        )
        .await
        .unwrap();
    assert_eq!(gw.token(&again).await.oauth_error(), "invalid_request");

    // The second gateway never heard the notification; its resynchronisation brings the jti.
    gw.wait_refused(
        &calendar_via_second,
        &exchanged,
        Duration::from_secs(6),
        "a revocation the frozen feed never delivered is still not known",
    )
    .await;
    assert_eq!(
        guard_status(&gw, &format!("{second_base}/mcp"), &users_token).await,
        StatusCode::OK
    );
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}
