//! The client_credentials grant over real HTTP: a machine client's own token, what it may not
//! ask for, and how its grant ends (RFC 7009 from the client, or in SQL).

mod common;

use common::*;
use hyper::StatusCode;
use serde_json::json;

#[tokio::test]
async fn client_credentials_issue_a_client_token_until_its_grant_is_revoked() {
    let gw = Gateway::start().await;
    let machine = NewClient::machine("client_secret_basic", &["client_credentials"]);
    let client = gw.create_client(&machine).await;
    let auth = client.basic();
    let as_client = TokenRequest {
        grant_type: "client_credentials",
        authorization: &auth,
        ..TokenRequest::default()
    };
    let active = async |token: &str| gw.introspect(token, &auth).await["active"].clone();

    let resp = gw
        .token(&TokenRequest {
            scope: "mcp",
            resource: RESOURCE,
            ..as_client.clone()
        })
        .await;
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.ok_json();
    assert!(
        body.get("refresh_token").is_none(),
        "no user, no refresh token"
    );
    assert!(body.get("id_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let claims = gw.verify(token, Some(RESOURCE)).unwrap();
    assert_eq!(claims["sub"], json!(client.id), "the client is the subject");
    assert_eq!(claims["client_id"], json!(client.id));
    assert_eq!(claims["scope"], "mcp");
    assert_eq!(active(token).await, json!(true));

    // A user-only scope, a wrong secret, a client without the grant type: each refused.
    let wrong_secret = basic(&client.id, "nope");
    let code_client = gw.confidential_client(&["mcp"]).await.basic();
    let refusals = [
        (
            "a user-only scope",
            TokenRequest {
                scope: "openid",
                ..as_client.clone()
            },
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            "a wrong secret",
            TokenRequest {
                authorization: &wrong_secret,
                ..as_client.clone()
            },
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "a client of the code flow",
            TokenRequest {
                authorization: &code_client,
                ..as_client.clone()
            },
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
        ),
    ];
    for (what, request, status, error) in &refusals {
        let resp = gw.token(request).await;
        resp.assert_error(*status, error, what);
        if *status == StatusCode::UNAUTHORIZED {
            let challenge = resp.header("www-authenticate");
            assert_eq!(challenge, Some("Basic realm=\"oauth\""), "{what}");
        }
    }

    // Another client cannot revoke the token (no effect, no error: RFC 7009 §2.2); the client
    // itself can, which ends its grant; its next request opens a new one.
    let other = gw.create_client(&machine).await.basic();
    let foreign = gw.revoke(token, &other).await;
    assert_eq!(foreign.status, StatusCode::OK, "{}", foreign.text());
    assert_eq!(active(token).await, json!(true));
    let own = gw.revoke(token, &auth).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    assert_eq!(active(token).await, json!(false));
    let renewed = gw
        .token(&TokenRequest {
            resource: RESOURCE,
            ..as_client.clone()
        })
        .await
        .json();
    let token = renewed["access_token"].as_str().unwrap();
    assert_eq!(active(token).await, json!(true));

    // Revoking the client's grant kills the tokens already issued; the next request opens a new grant.
    let grant_id: uuid::Uuid = gw
        .sql_value(
            "SELECT grant_id FROM oauth.grants WHERE client_id = $1 AND subject_type = 'client' AND revoked_at IS NULL",
            &[&client.id],
        )
        .await;
    gw.revoke_grant(&grant_id.to_string()).await;
    assert_eq!(active(token).await, json!(false));
    let again = gw.token(&as_client).await.json();
    let new_claims = gw.claims(again["access_token"].as_str().unwrap());
    assert_ne!(new_claims["grant_id"], json!(grant_id.to_string()));
    gw.stop().await;
}
