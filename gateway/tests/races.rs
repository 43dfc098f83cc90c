//! Races over HTTP: one code, one refresh token, one device code, revoke against refresh, and
//! consent for one user and client, each hammered by 100 clients.

mod common;

use std::sync::Arc;

use common::*;
use hyper::StatusCode;
use serde_json::json;

const CLIENTS: usize = 100;

/// The form `body` POSTed to the token endpoint by 100 clients at once, which must end in at
/// most one success (`what` names it) and invalid_grant for the rest, nothing failing on the
/// server: the responses and the number of successes.
async fn hammer_once(gw: &Arc<Gateway>, body: String, what: &str) -> (Vec<Response>, usize) {
    let responses = at_once(CLIENTS, |_| {
        let (gw, body) = (gw.clone(), body.clone());
        async move { gw.http.post_raw(&gw.url("/token"), FORM, body).await }
    })
    .await;
    for r in &responses {
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
    assert!(ok <= 1, "{ok} {what}");
    assert_eq!(ok + invalid_grant, CLIENTS);
    (responses, ok)
}

/// Every refresh token the successful responses handed out is dead: the concurrent replays
/// revoked what the winners got.
async fn assert_winners_revoked(gw: &Gateway, client_id: &str, responses: &[Response]) {
    for winner in responses.iter().filter(|r| r.status == StatusCode::OK) {
        let refresh = winner.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            gw.refresh(client_id, &refresh).await.oauth_error(),
            "invalid_grant",
            "the replays revoked what the winner got"
        );
    }
}

async fn live_families(gw: &Gateway, client_id: &str) -> i64 {
    gw.sql_value(
        "SELECT count(*) FROM oauth.refresh_families WHERE client_id = $1 AND revoked_at IS NULL",
        &[&client_id],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_presented_by_100_clients_at_once_is_redeemed_at_most_once() {
    let gw = Gateway::start_shared().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization::new(&client_id);
    let code = gw.code(&authorization).await;
    let (responses, _) = hammer_once(
        &gw,
        TokenRequest::redeem(&authorization, &code).body(),
        "redemptions of one code",
    )
    .await;
    assert_winners_revoked(&gw, &client_id, &responses).await;
    Gateway::stop_shared(gw).await;
}

/// MCP clients refresh from parallel tool calls: one refresh token presented by 100 clients at
/// once, with the default settings, gets 100 × 200 and one successor for all, and the grant lives.
/// The same token ten seconds later, past the window, is reuse: family and grant are revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_token_presented_by_100_clients_at_once_gets_one_successor_for_all() {
    let gw = Gateway::start_shared().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let tokens = gw.code_flow(&Authorization::new(&client_id)).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let body = TokenRequest::refresh(&client_id, &refresh).body();
    let responses = at_once(CLIENTS, |_| {
        let (gw, body) = (gw.clone(), body.clone());
        async move { gw.http.post_raw(&gw.url("/token"), FORM, body).await }
    })
    .await;
    let mut successors = std::collections::BTreeSet::new();
    for r in &responses {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        successors.insert(r.json()["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(successors.len(), 1, "one live successor: {successors:?}");
    let successor = successors.into_iter().next().unwrap();
    let live: i64 = gw
        .sql_value(
            "SELECT count(*) FROM oauth.refresh_families f JOIN oauth.grants g USING (grant_id)
              WHERE f.client_id = $1 AND f.revoked_at IS NULL AND g.revoked_at IS NULL AND f.generation = 1",
            &[&client_id],
        )
        .await;
    assert_eq!(
        live, 1,
        "the family rotated once and it and its grant are live"
    );

    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert_eq!(
        gw.refresh(&client_id, &refresh).await.oauth_error(),
        "invalid_grant",
        "the burst's token ten seconds later is reuse"
    );
    assert_eq!(
        live_families(&gw, &client_id).await,
        0,
        "the family is revoked"
    );
    assert_eq!(
        gw.refresh(&client_id, &successor).await.oauth_error(),
        "invalid_grant",
        "and with it the successor the burst got"
    );
    let live_grants: i64 = gw
        .sql_value(
            "SELECT count(*) FROM oauth.grants WHERE client_id = $1 AND revoked_at IS NULL",
            &[&client_id],
        )
        .await;
    assert_eq!(live_grants, 0, "and the grant");
    Gateway::stop_shared(gw).await;
}

/// With the grace window switched off (refresh_reuse_grace 0), the strict rule: one rotation
/// wins, every other presentation is reuse, and what the winner got is dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_grace_window_one_token_presented_by_100_clients_never_has_two_live_successors() {
    let gw = Gateway::start_shared().await;
    gw.admin
        .batch_execute("SELECT oauth.configure(refresh_reuse_grace => '0')")
        .await
        .unwrap();
    let client_id = gw.public_client(&["mcp"]).await;
    let tokens = gw.code_flow(&Authorization::new(&client_id)).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (responses, _) = hammer_once(
        &gw,
        TokenRequest::refresh(&client_id, refresh).body(),
        "rotations of one token",
    )
    .await;
    // Every successor handed out is dead: the concurrent reuse revoked the family and the grant.
    assert_winners_revoked(&gw, &client_id, &responses).await;
    assert_eq!(live_families(&gw, &client_id).await, 0);
    Gateway::stop_shared(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_racing_refresh_leaves_no_live_token() {
    let gw = Gateway::start_shared().await;
    let client_id = gw.public_client(&["mcp"]).await;
    for _ in 0..10 {
        let tokens = gw.code_flow(&Authorization::new(&client_id)).await.json();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        let revoke = {
            let gw = gw.clone();
            let (refresh, client_id) = (refresh.clone(), client_id.clone());
            tokio::spawn(async move {
                gw.post("/revoke", &[("token", &refresh), ("client_id", &client_id)])
                    .await
            })
        };
        let rotated = gw.refresh(&client_id, &refresh).await;
        assert_eq!(revoke.await.unwrap().status, StatusCode::OK);
        assert!(!rotated.status.is_server_error());
        // If rotation won the race, revoking the (now old) token must still have killed the family.
        assert_winners_revoked(&gw, &client_id, std::slice::from_ref(&rotated)).await;
    }
    let live = live_families(&gw, &client_id).await;
    assert_eq!(live, 0, "{}", json!({"live_families": live}));
    Gateway::stop_shared(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_approved_device_code_polled_by_100_clients_at_once_yields_tokens_at_most_once() {
    let gw = Gateway::start_shared().await;
    let client_id = gw
        .create_client(&NewClient {
            name: "TV",
            redirect_uris: &[],
            grant_types: &[DEVICE_GRANT, "refresh_token"],
            application_type: "web",
            ..NewClient::default()
        })
        .await
        .id;
    let started = gw
        .post("/device_authorization", &[("client_id", &client_id)])
        .await
        .json();
    gw.admin
        .execute(
            "SELECT oauth.approve_device_authorization($1, 'alice')",
            &[&started["user_code"].as_str().unwrap()],
        )
        .await
        .unwrap();
    let poll = TokenRequest {
        grant_type: DEVICE_GRANT,
        device_code: started["device_code"].as_str().unwrap(),
        client_id: &client_id,
        ..TokenRequest::default()
    };
    let (responses, ok) = hammer_once(&gw, poll.body(), "redemptions of one device code").await;
    assert_eq!(
        gw.rows_of_client("refresh_families", &client_id).await,
        ok as i64,
        "one family per success, none half-made"
    );
    assert_winners_revoked(&gw, &client_id, &responses).await;
    Gateway::stop_shared(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consent_given_by_one_user_to_one_client_100_times_at_once_converges_on_one_grant() {
    let gw = Gateway::start_shared().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let mut pending = Vec::new();
    for _ in 0..CLIENTS {
        let authorization = Authorization::new(&client_id);
        let (request_id, csrf) = gw.consent_form(&authorization).await;
        pending.push((authorization, request_id, csrf));
    }
    let responses = at_once(CLIENTS, |i| {
        let gw = gw.clone();
        let (request_id, csrf) = (pending[i].1.clone(), pending[i].2.clone());
        async move { gw.approve(&request_id, &csrf).await }
    })
    .await;
    for (r, (authorization, _, _)) in responses.iter().zip(&pending) {
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        let code = query_of(&r.location())["code"].clone();
        let tokens = gw.token(&TokenRequest::redeem(authorization, &code)).await;
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
    Gateway::stop_shared(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_authorization_request_approved_100_times_at_once_yields_one_code() {
    let gw = Gateway::start_shared().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization::new(&client_id);
    let (request_id, csrf) = gw.consent_form(&authorization).await;
    let responses = at_once(CLIENTS, |_| {
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
    let tokens = gw
        .token(&TokenRequest::redeem(&authorization, &codes[0]))
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    assert_eq!(gw.rows_of_client("codes", &client_id).await, 1);
    Gateway::stop_shared(gw).await;
}
