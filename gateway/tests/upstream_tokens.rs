//! The upstream provider's tokens kept for the guarded MCP server (`store_tokens`,
//! `upstream_token_header`), against a real oidc-provider that issues refresh tokens, rotates them
//! at each use, and issues access tokens living 20 s (less than the gateway's 30 s margin, so every
//! guarded call refreshes); and several upstreams with the sign-in choice page.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::upstream::*;
use common::*;
use http_body_util::BodyExt;
use hyper::{Request, Response as HyperResponse, StatusCode};
use hyper_util::rt::TokioIo;
use oauth_gateway::config::RouteConfig;
use oauth_gateway::upstream::UpstreamConfig;
use serde_json::{Value, json};

const HEADER: &str = "x-upstream-access-token";

/// An MCP server stand-in that answers with the headers it received.
async fn start_echo() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or(""))))
                            .collect();
                        let body = http_body_util::Full::new(Bytes::from(
                            json!({ "headers": headers }).to_string(),
                        ))
                        .map_err(|n: Infallible| match n {})
                        .boxed();
                        Ok::<_, Infallible>(
                            HyperResponse::builder()
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap(),
                        )
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}/mcp")
}

fn keeping_tokens(config: UpstreamConfig) -> UpstreamConfig {
    UpstreamConfig {
        store_tokens: true,
        token_encryption_key: Some(oauth_gateway::keyring::Kek::generate()),
        ..config
    }
}

async fn gateway_keeping_tokens(upstream: &Upstream, echo: String) -> Gateway {
    let config = keeping_tokens(upstream.openid());
    let gateway = Gateway::start_with(Options {
        routes: vec![RouteConfig {
            prefix: "/mcp".into(),
            upstream: echo,
            scopes: vec!["mcp".into()],
            upstream_token_header: Some("X-Upstream-Access-Token".into()),
            ..RouteConfig::default()
        }],
        adjust: Some(Box::new(move |c| {
            c.dev_user = None;
            c.upstream = Some(config);
        })),
        ..Options::default()
    })
    .await;
    upstream.configure(&gateway).await;
    gateway
}

/// Consent in a browser already at the consent page's URL (`consent_url`), to the client's tokens.
async fn consent_and_redeem(
    browser: &mut Browser,
    gateway: &Gateway,
    authorization: &Authorization<'_>,
    consent_url: &str,
) -> Value {
    let page = browser.get(consent_url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let decided = browser
        .post(
            &gateway.url("/consent"),
            &[
                ("request_id", &form_field(&page.text(), "request_id")),
                ("csrf_token", &form_field(&page.text(), "csrf_token")),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
    let code = query_of(&decided.location())["code"].clone();
    gateway
        .token(&TokenRequest::redeem(authorization, &code))
        .await
        .ok_json()
}

/// The whole authorization through the upstream sign-in as `user`: the client's access token.
async fn connect(
    browser: &mut Browser,
    gateway: &Gateway,
    upstream: &Upstream,
    client_id: &str,
    user: &str,
) -> String {
    let resource = gateway.mcp_url();
    let authorization = Authorization {
        scope: "mcp",
        resource: &resource,
        ..Authorization::new(client_id)
    };
    let upstream_url = start_authorization(browser, gateway, &authorization, upstream).await;
    let callback = sign_in_upstream(browser, &upstream_url, user).await;
    let signed_in = browser.get(&callback).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.text()
    );
    let tokens = consent_and_redeem(browser, gateway, &authorization, &signed_in.location()).await;
    tokens["access_token"].as_str().unwrap().to_owned()
}

/// A guarded call with a client's own copy of the header: what the MCP server received.
async fn call(http: &Http, url: &str, token: &str) -> Response {
    http.get(
        url,
        &[
            ("authorization", &bearer(token)),
            ("x-upstream-access-token", "forged-by-the-client"),
        ],
    )
    .await
}

fn handed_on(resp: &Response) -> Option<String> {
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp.json()["headers"][HEADER].as_str().map(str::to_owned)
}

/// The provider's userinfo with the token the MCP server received: it is the provider's, live,
/// and the user's.
async fn userinfo_subject(upstream: &Upstream, token: &str) -> Value {
    let resp = Http::new()
        .get(
            &format!("{}/me", upstream.issuer),
            &[("authorization", &bearer(token))],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    resp.json()["sub"].clone()
}

async fn version(gateway: &Gateway) -> i64 {
    gateway
        .sql_value(
            "SELECT coalesce(max(version), 0) FROM oauth.upstream_tokens",
            &[],
        )
        .await
}

#[tokio::test]
async fn the_mcp_server_gets_the_users_current_upstream_token_refreshed_and_never_the_clients() {
    let upstream =
        Upstream::start_with(&[("REFRESH_TOKENS", "1"), ("ACCESS_TOKEN_TTL", "20")]).await;
    let gateway = gateway_keeping_tokens(&upstream, start_echo().await).await;
    let client_id = gateway.public_client(&["mcp"]).await;
    let mut browser = Browser::new();
    let token = connect(&mut browser, &gateway, &upstream, &client_id, "alice").await;
    gateway.wait_synced(&gateway.mcp_url(), &token).await;

    // Stored sealed: one set, bound to alice's session and linked to her grant.
    let (sets, links): (i64, i64) = (
        gateway
            .sql_value(
                "SELECT count(*) FROM oauth.upstream_tokens WHERE user_id = 'alice'",
                &[],
            )
            .await,
        gateway
            .sql_value("SELECT count(*) FROM oauth.grant_upstream_tokens", &[])
            .await,
    );
    assert_eq!((sets, links), (1, 1));

    let before = version(&gateway).await;
    let first = handed_on(&call(&gateway.http, &gateway.mcp_url(), &token).await)
        .expect("the upstream token is handed on");
    assert_ne!(first, "forged-by-the-client");
    assert_eq!(userinfo_subject(&upstream, &first).await, "alice");
    assert_eq!(
        version(&gateway).await,
        before + 1,
        "refreshed (20 s < the 30 s margin)"
    );
    let sealed: Vec<u8> = gateway
        .sql_value("SELECT sealed FROM oauth.upstream_tokens", &[])
        .await;
    assert!(
        !sealed.windows(first.len()).any(|w| w == first.as_bytes()),
        "the database holds the token sealed"
    );

    // Each refresh rotates the provider's refresh token; the next call refreshes again with it.
    let second = handed_on(&call(&gateway.http, &gateway.mcp_url(), &token).await).unwrap();
    assert_ne!(second, first);
    assert_eq!(userinfo_subject(&upstream, &second).await, "alice");
    assert_eq!(version(&gateway).await, before + 2);

    // Concurrent calls of one grant: the calls waiting on a refresh take its result instead of
    // refreshing again (each refresh here is one token handed on, and one version). A call
    // arriving once a refresh is over refreshes anew (20 s tokens are never fresh), hence no
    // exact count; without the single flight, each call would refresh, and all but one would
    // present a refresh token the provider had just rotated away.
    let url = gateway.mcp_url();
    let calls = (0..8).map(|_| call(&gateway.http, &url, &token));
    let answers = futures_util::future::join_all(calls).await;
    let handed: std::collections::BTreeSet<String> =
        answers.iter().map(|r| handed_on(r).unwrap()).collect();
    assert!(handed.len() < 8, "refreshes were shared: {}", handed.len());
    let after_burst = version(&gateway).await;
    assert_eq!(after_burst - (before + 2), handed.len() as i64);
    for token in &handed {
        assert_eq!(userinfo_subject(&upstream, token).await, "alice");
    }

    // Another gateway of the deployment continues from the set the first one left.
    let (second_gateway, second_base) = gateway.second().await;
    let second_url = format!("{second_base}/mcp");
    gateway.wait_synced(&second_url, &token).await;
    let left = version(&gateway).await;
    assert!(left > after_burst);
    let elsewhere = handed_on(&call(&gateway.http, &second_url, &token).await).unwrap();
    assert_eq!(userinfo_subject(&upstream, &elsewhere).await, "alice");
    assert_eq!(version(&gateway).await, left + 1);

    // Both gateways at once: one refresh at a time across them (a claim in the database), so the
    // provider never sees a rotated refresh token twice (it would take that for reuse and revoke).
    let both: Vec<String> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                url.clone()
            } else {
                second_url.clone()
            }
        })
        .collect();
    let answers =
        futures_util::future::join_all(both.iter().map(|u| call(&gateway.http, u, &token))).await;
    let handed: std::collections::BTreeSet<String> =
        answers.iter().map(|r| handed_on(r).unwrap()).collect();
    for token in &handed {
        assert_eq!(userinfo_subject(&upstream, token).await, "alice");
    }
    second_gateway
        .shutdown(std::time::Duration::from_secs(2))
        .await;

    // A grant holding no upstream tokens (its sign-in kept none) is forwarded without the
    // header, and never with the client's.
    let (grant, set): (uuid::Uuid, uuid::Uuid) = (
        gateway
            .sql_value("SELECT grant_id FROM oauth.grant_upstream_tokens", &[])
            .await,
        gateway
            .sql_value("SELECT token_set_id FROM oauth.grant_upstream_tokens", &[])
            .await,
    );
    gateway
        .admin
        .execute("DELETE FROM oauth.grant_upstream_tokens", &[])
        .await
        .unwrap();
    assert_eq!(
        handed_on(&call(&gateway.http, &gateway.mcp_url(), &token).await),
        None
    );
    gateway
        .admin
        .execute(
            "INSERT INTO oauth.grant_upstream_tokens (grant_id, token_set_id) VALUES ($1, $2)",
            &[&grant, &set],
        )
        .await
        .unwrap();

    // Revoking the grant unlinks its tokens; ending the session then deletes them.
    gateway.revoke_grant(&grant.to_string()).await;
    let links: i64 = gateway
        .sql_value("SELECT count(*) FROM oauth.grant_upstream_tokens", &[])
        .await;
    assert_eq!(links, 0);
    gateway
        .admin
        .execute("SELECT oauth.end_user_sessions('alice')", &[])
        .await
        .unwrap();
    let sets: i64 = gateway
        .sql_value("SELECT count(*) FROM oauth.upstream_tokens", &[])
        .await;
    assert_eq!(sets, 0, "nothing may use them any more");
    gateway.stop().await;
}

#[tokio::test]
async fn a_provider_out_of_reach_is_a_503_and_a_refused_refresh_a_401_then_sign_in_again() {
    let mut upstream =
        Upstream::start_with(&[("REFRESH_TOKENS", "1"), ("ACCESS_TOKEN_TTL", "20")]).await;
    let gateway = gateway_keeping_tokens(&upstream, start_echo().await).await;
    let client_id = gateway.public_client(&["mcp"]).await;
    let mut browser = Browser::new();
    let token = connect(&mut browser, &gateway, &upstream, &client_id, "alice").await;
    gateway.wait_synced(&gateway.mcp_url(), &token).await;

    // The provider out of reach: try again later (503, Retry-After), not a 401 that would send the
    // client through an authorization the provider cannot serve either; the tokens are kept.
    upstream.stop();
    let refused = call(&gateway.http, &gateway.mcp_url(), &token).await;
    assert_eq!(
        (refused.status, refused.oauth_error()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable".to_owned()
        ),
        "provider unreachable"
    );
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );
    let sets: i64 = gateway
        .sql_value("SELECT count(*) FROM oauth.upstream_tokens", &[])
        .await;
    assert_eq!(sets, 1, "kept: the provider may answer again");

    // A provider that no longer knows the refresh token (its tokens lived in memory):
    // invalid_grant, so the set is forgotten and the session built on it ends.
    upstream.restart().await;
    let refused = call(&gateway.http, &gateway.mcp_url(), &token).await;
    assert_eq!(
        (refused.status, refused.oauth_error()),
        (StatusCode::UNAUTHORIZED, "invalid_token".to_owned()),
        "refresh token refused"
    );
    let (sets, sessions): (i64, i64) = (
        gateway
            .sql_value("SELECT count(*) FROM oauth.upstream_tokens", &[])
            .await,
        gateway
            .sql_value(
                "SELECT count(*) FROM oauth.browser_sessions WHERE ended_at IS NULL",
                &[],
            )
            .await,
    );
    assert_eq!((sets, sessions), (0, 0));

    // Authorizing again asks for a sign-in, which brings new tokens to the (same) grant.
    let token = connect(&mut browser, &gateway, &upstream, &client_id, "alice").await;
    let handed = handed_on(&call(&gateway.http, &gateway.mcp_url(), &token).await).unwrap();
    assert_eq!(userinfo_subject(&upstream, &handed).await, "alice");
    gateway.stop().await;
}

#[tokio::test]
async fn with_two_providers_the_person_chooses_and_the_session_records_which() {
    let first = Upstream::start().await;
    let second = Upstream::start().await;
    let (one, two) = (
        UpstreamConfig {
            display_name: Some("First Provider".into()),
            ..first.openid()
        },
        UpstreamConfig {
            display_name: Some("Second Provider".into()),
            ..second.openid()
        },
    );
    let gateway = Gateway::start_with(Options {
        adjust: Some(Box::new(move |c| {
            c.dev_user = None;
            // Today's single [upstream] keeps working beside named ones.
            c.upstream = Some(one);
            c.upstreams.insert("second".into(), two);
        })),
        ..Options::default()
    })
    .await;
    first.configure(&gateway).await;
    second.configure(&gateway).await;
    let client_id = gateway.public_client(&["mcp"]).await;
    let authorization = Authorization {
        scope: "mcp",
        ..Authorization::new(&client_id)
    };

    let mut browser = Browser::new();
    let start = format!("{}?{}", gateway.url("/authorize"), authorization.query());
    let (_, choice) = browser.navigate(&start, "\u{0}").await;
    assert_eq!(choice.status, StatusCode::OK, "{}", choice.text());
    let page = choice.text();
    assert!(
        page.contains("<h1 id=\"choose-provider\">Sign in</h1>"),
        "{page}"
    );
    assert!(
        page.contains("aria-labelledby=\"choose-provider\""),
        "{page}"
    );
    assert!(page.contains("Sign in with First Provider"));
    assert!(page.contains("Sign in with Second Provider"));
    assert!(
        choice
            .header("content-security-policy")
            .is_some_and(|c| c.starts_with("default-src 'none'")),
    );
    let links: Vec<String> = page
        .split("href=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().replace("&amp;", "&"))
        .filter(|href| href.contains("/login?upstream="))
        .collect();
    assert_eq!(links.len(), 2, "{page}");
    let to_second = links
        .iter()
        .find(|l| l.contains("upstream=second"))
        .unwrap();

    // A tampered carried sign-in is refused, not followed.
    let tampered = browser
        .get(&to_second.replace("continue=", "continue=x"))
        .await;
    assert_eq!(tampered.status, StatusCode::BAD_REQUEST);

    let at_provider = browser.get(to_second).await;
    assert_eq!(
        at_provider.status,
        StatusCode::FOUND,
        "{}",
        at_provider.text()
    );
    assert!(at_provider.location().starts_with(&second.issuer));
    let callback = sign_in_upstream(&mut browser, &at_provider.location(), "carol").await;
    let signed_in = browser.get(&callback).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.text()
    );
    let tokens = consent_and_redeem(
        &mut browser,
        &gateway,
        &authorization,
        &signed_in.location(),
    )
    .await;
    assert!(tokens["access_token"].is_string());
    let issuer: String = gateway
        .sql_value(
            "SELECT upstream_issuer FROM oauth.browser_sessions WHERE user_id = 'carol'",
            &[],
        )
        .await;
    assert_eq!(
        issuer, second.issuer,
        "the session names the provider chosen"
    );

    // The account pages' sign-in offers the same choice; the first provider signs in too.
    let mut other = Browser::new();
    let login = other
        .get(&gateway.url("/login?return_to=/account/apps"))
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let first_link = login
        .text()
        .split("href=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().replace("&amp;", "&"))
        .find(|href| href.contains("upstream=default"))
        .expect("[upstream] is offered as default");
    let at_first = other.get(&first_link).await;
    assert!(at_first.location().starts_with(&first.issuer));
    let callback = sign_in_upstream(&mut other, &at_first.location(), "dave").await;
    let back = other.get(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.text());
    assert!(
        back.location().ends_with("/account/apps"),
        "{}",
        back.location()
    );
    let issuer: String = gateway
        .sql_value(
            "SELECT upstream_issuer FROM oauth.browser_sessions WHERE user_id = 'dave'",
            &[],
        )
        .await;
    assert_eq!(issuer, first.issuer);
    gateway.stop().await;
}
