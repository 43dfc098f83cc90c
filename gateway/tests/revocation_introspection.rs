//! Revocation (RFC 7009, and of a grant in SQL) as introspection (RFC 7662) and userinfo see it,
//! with consent completed by the application's own login page in SQL.

mod common;

use common::*;
use hyper::StatusCode;
use serde_json::json;

/// Authorizes through the application's login page, which completes consent for `bob` with
/// `oauth.issue_code(request_id, 'bob', ...)` (`further` the arguments after the user): the
/// token response.
async fn tokens_via_login_page(
    gw: &Gateway,
    login_url: &str,
    authorization: &Authorization<'_>,
    further: &str,
) -> serde_json::Value {
    let location = gw.authorize(authorization).await.location();
    assert!(
        location.starts_with(&format!("{login_url}?request_id=")),
        "{location}"
    );
    let request_id = query_of(&location)["request_id"].clone();
    let redirect: String = gw
        .sql_value(
            &format!("SELECT oauth.issue_code($1, 'bob'{further})"),
            &[&request_id],
        )
        .await;
    let code = &query_of(&redirect)["code"];
    gw.token(&TokenRequest::redeem(authorization, code))
        .await
        .json()
}

#[tokio::test]
async fn revocation_and_grant_revocation_are_seen_at_once_by_introspection_and_userinfo() {
    let login_url = "https://app.example.com/login";
    let gw = Gateway::start_with(Options {
        login_url: Some(login_url.to_owned()),
        ..Options::default()
    })
    .await;
    let client_id = gw.public_client(&["openid", "email", "mcp"]).await;
    let resource_server = gw.confidential_client(&["mcp"]).await.basic();

    // The application's own login page completes consent in SQL, with props for the resource server.
    let with_email = Authorization {
        scope: "openid email mcp",
        ..Authorization::new(&client_id)
    };
    let props = ", NULL, '{\"email\": \"bob@example.com\", \"email_verified\": true}'";
    let tokens = tokens_via_login_page(&gw, login_url, &with_email, props).await;
    let access = tokens["access_token"].as_str().unwrap();
    let userinfo = async || {
        gw.http
            .get(&gw.url("/userinfo"), &[("authorization", &bearer(access))])
            .await
    };

    let info = userinfo().await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    assert_eq!(
        info.json(),
        json!({"sub": "bob", "email": "bob@example.com", "email_verified": true})
    );
    let no_token = gw.get("/userinfo").await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);

    // RFC 7009 from the client itself: revoking the access token kills its family.
    let revoked = gw
        .post("/revoke", &[("token", access), ("client_id", &client_id)])
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(
        gw.introspect(access, &resource_server).await,
        json!({"active": false})
    );
    assert_eq!(userinfo().await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
            .await
            .oauth_error(),
        "invalid_grant"
    );

    // An application revoking the grant in SQL: a fresh family of the same grant dies at once.
    let mcp_only = Authorization {
        scope: "mcp",
        ..Authorization::new(&client_id)
    };
    let tokens = tokens_via_login_page(&gw, login_url, &mcp_only, "").await;
    let access = tokens["access_token"].as_str().unwrap();
    let live = gw.introspect(access, &resource_server).await;
    assert_eq!(live["active"], json!(true));
    assert_eq!(live["sub"], "bob");
    gw.revoke_grant(live["grant_id"].as_str().unwrap()).await;
    assert_eq!(
        gw.introspect(access, &resource_server).await,
        json!({"active": false})
    );

    // A public client may not introspect.
    let public_probe = gw
        .post(
            "/introspect",
            &[("token", access), ("client_id", &client_id)],
        )
        .await;
    assert_eq!(public_probe.oauth_error(), "invalid_client");
    gw.stop().await;
}
