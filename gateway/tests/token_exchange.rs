//! Token exchange (RFC 8693) over real HTTP: an MCP server trades the user's token for one meant
//! for another server, within the policy the administrator set.

mod common;

use common::*;
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
