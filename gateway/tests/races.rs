//! Races over HTTP: one code, one refresh token, revoke against refresh, hammered by 100 clients.

mod common;

use std::sync::Arc;

use common::*;
use hyper::StatusCode;
use serde_json::json;

const CLIENTS: usize = 100;

async fn hammer(gw: &Arc<Gateway>, pairs: Vec<(String, String)>) -> Vec<Response> {
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let gw = gw.clone();
            let pairs = pairs.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let refs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                barrier.wait().await;
                gw.token(&refs, &[]).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
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
