//! Races over HTTP: one code, one refresh token, one device code, revoke against refresh, and
//! consent for one user and client, each hammered by 100 clients.

mod common;

use std::sync::Arc;

use common::*;
use hyper::StatusCode;
use serde_json::json;

const CLIENTS: usize = 100;

/// `pairs` POSTed to the token endpoint by 100 clients at once.
async fn hammer(gw: &Arc<Gateway>, pairs: Vec<(String, String)>) -> Vec<Response> {
    at_once(|_| {
        let (gw, pairs) = (gw.clone(), pairs.clone());
        async move {
            let refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            gw.token(&refs, &[]).await
        }
    })
    .await
}

fn tally(responses: &[Response]) -> (usize, usize) {
    for r in responses {
        assert!(!r.status.is_server_error(), "{} {}", r.status, r.text());
    }
    let ok = responses
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let invalid_grant = responses
        .iter()
        .filter(|r| r.status == StatusCode::BAD_REQUEST && r.oauth_error() == "invalid_grant")
        .count();
    (ok, invalid_grant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_presented_by_100_clients_at_once_is_redeemed_at_most_once() {
    let gw = Arc::new(Gateway::start().await);
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let p = pkce();
    let code = gw.code(&client_id, &p, &[]).await;
    let pairs = vec![
        ("grant_type".to_owned(), "authorization_code".to_owned()),
        ("code".to_owned(), code),
        ("code_verifier".to_owned(), p.verifier.clone()),
        (
            "redirect_uri".to_owned(),
            "http://127.0.0.1:51234/callback".to_owned(),
        ),
        ("client_id".to_owned(), client_id.clone()),
    ];
    let responses = hammer(&gw, pairs).await;
    let (ok, invalid_grant) = tally(&responses);
    assert!(ok <= 1, "{ok} redemptions of one code");
    assert_eq!(ok + invalid_grant, CLIENTS);
    // The replays revoked whatever the winner got.
    if let Some(winner) = responses.iter().find(|r| r.status == StatusCode::OK) {
        let refresh = winner.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            gw.refresh(&client_id, &refresh).await.oauth_error(),
            "invalid_grant"
        );
    }
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_token_presented_by_100_clients_at_once_never_has_two_live_successors() {
    let gw = Arc::new(Gateway::start().await);
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let p = pkce();
    let code = gw.code(&client_id, &p, &[]).await;
    let tokens = gw.exchange(&client_id, None, &code, &p).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let pairs = vec![
        ("grant_type".to_owned(), "refresh_token".to_owned()),
        ("refresh_token".to_owned(), refresh),
        ("client_id".to_owned(), client_id.clone()),
    ];
    let responses = hammer(&gw, pairs).await;
    let (ok, invalid_grant) = tally(&responses);
    assert!(ok <= 1, "{ok} rotations of one token");
    assert_eq!(ok + invalid_grant, CLIENTS);
    // Every successor handed out is dead: the concurrent reuse revoked the family and the grant.
    for winner in responses.iter().filter(|r| r.status == StatusCode::OK) {
        let successor = winner.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            gw.refresh(&client_id, &successor).await.oauth_error(),
            "invalid_grant"
        );
    }
    let live: i64 = gw
        .admin
        .query_one("SELECT count(*) FROM oauth.refresh_families WHERE client_id = $1 AND revoked_at IS NULL", &[&client_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_racing_refresh_leaves_no_live_token() {
    let gw = Arc::new(Gateway::start().await);
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    for _ in 0..10 {
        let p = pkce();
        let code = gw.code(&client_id, &p, &[]).await;
        let tokens = gw.exchange(&client_id, None, &code, &p).await.json();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        let revoke = {
            let gw = gw.clone();
            let (refresh, client_id) = (refresh.clone(), client_id.clone());
            tokio::spawn(async move {
                gw.http
                    .post_form(
                        &gw.url("/revoke"),
                        &[("token", &refresh), ("client_id", &client_id)],
                        &[],
                    )
                    .await
            })
        };
        let rotated = gw.refresh(&client_id, &refresh).await;
        assert_eq!(revoke.await.unwrap().status, StatusCode::OK);
        assert!(!rotated.status.is_server_error());
        if rotated.status == StatusCode::OK {
            // Rotation won the race: revoking the (now old) token must still have killed the family.
            let successor = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
            assert_eq!(
                gw.refresh(&client_id, &successor).await.oauth_error(),
                "invalid_grant"
            );
        }
    }
    let live: i64 = gw
        .admin
        .query_one("SELECT count(*) FROM oauth.refresh_families WHERE client_id = $1 AND revoked_at IS NULL", &[&client_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "{}", json!({"live_families": live}));
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_approved_device_code_polled_by_100_clients_at_once_yields_tokens_at_most_once() {
    const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
    let gw = Arc::new(Gateway::start().await);
    let client_id: String = gw
        .admin
        .query_one(
            "SELECT client_id FROM oauth.create_client('TV', '{}', '{mcp}', 'none', ARRAY[$1, 'refresh_token'])",
            &[&DEVICE_GRANT],
        )
        .await
        .unwrap()
        .get(0);
    let started = gw
        .http
        .post_form(
            &gw.url("/device_authorization"),
            &[("client_id", &client_id)],
            &[],
        )
        .await
        .json();
    gw.admin
        .execute(
            "SELECT oauth.approve_device_authorization($1, 'alice')",
            &[&started["user_code"].as_str().unwrap()],
        )
        .await
        .unwrap();
    let pairs = vec![
        ("grant_type".to_owned(), DEVICE_GRANT.to_owned()),
        (
            "device_code".to_owned(),
            started["device_code"].as_str().unwrap().to_owned(),
        ),
        ("client_id".to_owned(), client_id.clone()),
    ];
    let responses = hammer(&gw, pairs).await;
    let (ok, invalid_grant) = tally(&responses);
    assert!(ok <= 1, "{ok} redemptions of one device code");
    assert_eq!(ok + invalid_grant, CLIENTS);
    let families: i64 = gw
        .admin
        .query_one(
            "SELECT count(*) FROM oauth.refresh_families WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        families, ok as i64,
        "one family per success, none half-made"
    );
    if let Some(winner) = responses.iter().find(|r| r.status == StatusCode::OK) {
        let refresh = winner.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            gw.refresh(&client_id, &refresh).await.oauth_error(),
            "invalid_grant",
            "the replays revoked what the winner got"
        );
    }
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

/// Runs `call(i)` for `i` in `0..CLIENTS`, all released at once.
async fn at_once<F, Fut>(call: F) -> Vec<Response>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Response> + Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let barrier = barrier.clone();
            let request = call(i);
            tokio::spawn(async move {
                barrier.wait().await;
                request.await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent_given_by_one_user_to_one_client_100_times_at_once_converges_on_one_grant() {
    let gw = Arc::new(Gateway::start().await);
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let mut pending = Vec::new();
    for _ in 0..CLIENTS {
        let p = pkce();
        let (request_id, csrf) = gw.consent_form(&client_id, &p, &[]).await;
        pending.push((p, request_id, csrf));
    }
    let responses = at_once(|i| {
        let gw = gw.clone();
        let (request_id, csrf) = (pending[i].1.clone(), pending[i].2.clone());
        async move { gw.approve(&request_id, &csrf).await }
    })
    .await;
    for (r, (p, _, _)) in responses.iter().zip(&pending) {
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        let code = query_of(&r.location())["code"].clone();
        let tokens = gw.exchange(&client_id, None, &code, p).await;
        assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    }
    let row = gw
        .admin
        .query_one(
                "SELECT (SELECT count(*) FROM oauth.grants WHERE client_id = $1 AND user_id = 'alice'),
                        (SELECT count(*) FROM oauth.refresh_families f
                          WHERE f.client_id = $1
                            AND f.grant_id <> (SELECT grant_id FROM oauth.grants WHERE client_id = $1))",
                &[&client_id],
            )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        1,
        "one consent record per user and client"
    );
    assert_eq!(row.get::<_, i64>(1), 0, "every family hangs off that grant");
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_authorization_request_approved_100_times_at_once_yields_one_code() {
    let gw = Arc::new(Gateway::start().await);
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let p = pkce();
    let (request_id, csrf) = gw.consent_form(&client_id, &p, &[]).await;
    let responses = at_once(|_| {
        let gw = gw.clone();
        let (request_id, csrf) = (request_id.clone(), csrf.clone());
        async move { gw.approve(&request_id, &csrf).await }
    })
    .await;
    let mut codes = Vec::new();
    for r in &responses {
        assert!(!r.status.is_server_error(), "{} {}", r.status, r.text());
        match r.status {
            StatusCode::SEE_OTHER => codes.push(query_of(&r.location())["code"].clone()),
            status => assert_eq!(status, StatusCode::BAD_REQUEST, "{}", r.text()),
        }
    }
    assert_eq!(codes.len(), 1, "one request, one code");
    let tokens = gw.exchange(&client_id, None, &codes[0], &p).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let issued: i64 = gw
        .admin
        .query_one(
            "SELECT count(*) FROM oauth.codes WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(issued, 1);
    Arc::try_unwrap(gw).ok().unwrap().stop().await;
}
