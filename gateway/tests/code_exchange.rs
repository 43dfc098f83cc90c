//! The code flow to its tokens over real HTTP: a registered public client end to end, a
//! replayed code, and a confidential OpenID client with its ID token and refreshes.

mod common;

use common::*;
use hyper::StatusCode;
use oauth_gateway::keys::Alg;
use serde_json::json;

#[tokio::test]
async fn public_client_registers_completes_pkce_code_flow_and_rotates_refresh_tokens() {
    let gw = Gateway::start().await;
    let registered = gw
        .register(json!({"client_name": "SDK client", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}))
        .await;
    assert_eq!(registered.header("cache-control"), Some("no-store"));
    let client = registered.json_if(StatusCode::CREATED);
    assert!(client.get("client_secret").is_none());
    let client_id = client["client_id"].as_str().unwrap();

    let resp = gw
        .code_flow(&Authorization {
            scope: "mcp",
            ..Authorization::new(client_id)
        })
        .await;
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let tokens = resp.ok_json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp");
    let claims = gw
        .verify(tokens["access_token"].as_str().unwrap(), Some(RESOURCE))
        .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["aud"], RESOURCE);

    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let second_refresh = gw.refresh(client_id, &first_refresh).await.ok_json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first_refresh, second_refresh);

    // Presented again at once (a parallel tool call's refresh), it gets the same successor.
    let again = gw.refresh(client_id, &first_refresh).await.ok_json();
    assert_eq!(
        again["refresh_token"].as_str(),
        Some(second_refresh.as_str())
    );

    // Reuse of the rotated token once the window is over (here switched off): refused, and the
    // whole family (including its successor) dies.
    gw.admin
        .batch_execute("SELECT oauth.configure(refresh_reuse_grace => '0')")
        .await
        .unwrap();
    let reused = gw.refresh(client_id, &first_refresh).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(reused.oauth_error(), "invalid_grant");
    let successor = gw.refresh(client_id, &second_refresh).await;
    assert_eq!(successor.oauth_error(), "invalid_grant");
    gw.stop().await;
}

#[tokio::test]
async fn replayed_code_is_refused_and_revokes_the_tokens_it_issued() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let resource_server = gw.confidential_client(&["mcp"]).await.basic();
    let authorization = Authorization::new(&client_id);
    let code = gw.code(&authorization).await;
    let redeem = TokenRequest::redeem(&authorization, &code);
    let tokens = gw.token(&redeem).await.json();
    let access = tokens["access_token"].as_str().unwrap();
    let active = gw.introspect(access, &resource_server).await;
    assert_eq!(active["active"], json!(true), "{active}");

    let replay = gw.token(&redeem).await;
    assert_eq!(replay.oauth_error(), "invalid_grant");
    assert_eq!(
        gw.introspect(access, &resource_server).await,
        json!({"active": false})
    );
    let refresh = gw
        .refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refresh.oauth_error(), "invalid_grant");
    gw.stop().await;
}

#[tokio::test]
async fn confidential_client_gets_an_id_token_with_nonce_and_at_hash() {
    let gw = Gateway::start_with(Options {
        algs: vec![Alg::RS256],
        ..Options::default()
    })
    .await;
    let client = gw.confidential_client(&["openid", "mcp"]).await;
    let authorization = Authorization {
        scope: "openid mcp",
        nonce: "n-0S6_WzA2Mj",
        ..Authorization::new(&client.id)
    };
    let code = gw.code(&authorization).await;
    // client_secret_basic for the code, so no client_id in the form.
    let tokens = gw
        .token(&TokenRequest {
            client_id: "",
            authorization: &client.basic(),
            ..TokenRequest::redeem(&authorization, &code)
        })
        .await
        .ok_json();
    let id_token = tokens["id_token"]
        .as_str()
        .expect("id_token when openid is granted");
    let payload = jwt_segment(id_token, 1);
    assert_eq!(payload["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(payload["aud"], json!(client.id));
    assert_eq!(payload["iss"], json!(gw.issuer));
    assert_eq!(
        payload["at_hash"],
        json!(oauth_gateway::jwt::at_hash(
            Alg::RS256,
            tokens["access_token"].as_str().unwrap()
        ))
    );
    assert!(payload["auth_time"].is_u64());

    // client_secret_post works too, for the refresh.
    let narrowed = gw
        .token(&TokenRequest {
            client_secret: client.secret(),
            scope: "mcp",
            ..TokenRequest::refresh(&client.id, tokens["refresh_token"].as_str().unwrap())
        })
        .await
        .ok_json();
    assert_eq!(narrowed["scope"], "mcp", "narrowed scope");
    let widened = gw
        .token(&TokenRequest {
            client_secret: client.secret(),
            scope: "mcp email",
            ..TokenRequest::refresh(&client.id, narrowed["refresh_token"].as_str().unwrap())
        })
        .await;
    assert_eq!(widened.oauth_error(), "invalid_scope");
    gw.stop().await;
}
