//! A gateway killed with SIGKILL in the middle of traffic leaves nothing half done: every call is
//! one transaction in the extension, so each code is either unused or fully exchanged, and every
//! live family's current token is a recorded one.

mod common;

use std::time::Duration;

use common::*;
use hyper::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_traffic_leaves_every_code_and_family_consistent() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    // Codes and refresh tokens minted through the in-process gateway, spent through the victim.
    let mut redemptions = Vec::new();
    let mut refresh_tokens = Vec::new();
    for i in 0..40 {
        let authorization = Authorization::new(&client_id);
        let code = gw.code(&authorization).await;
        let redeem = TokenRequest::redeem(&authorization, &code);
        if i % 2 == 0 {
            redemptions.push(redeem.body());
        } else {
            let tokens = gw.token(&redeem).await.json();
            refresh_tokens.push(tokens["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    let (mut victim, base) = gw.spawn_process().await;
    let token_url = format!("{base}/token");
    let mut tasks = Vec::new();
    for body in redemptions {
        let url = token_url.clone();
        tasks.push(tokio::spawn(async move {
            Http::new().post_raw(&url, FORM, body).await.status
        }));
    }
    for refresh in refresh_tokens {
        let (url, client_id) = (token_url.clone(), client_id.clone());
        tasks.push(tokio::spawn(async move {
            let http = Http::new();
            let mut token = refresh;
            let mut last = StatusCode::OK;
            for _ in 0..50 {
                let resp = http
                    .token_at(&url, &TokenRequest::refresh(&client_id, &token))
                    .await;
                last = resp.status;
                if resp.status != StatusCode::OK {
                    break;
                }
                token = resp.json()["refresh_token"].as_str().unwrap().to_owned();
            }
            last
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    victim.kill().expect("SIGKILL");
    victim.wait().unwrap();
    for task in tasks {
        // Requests cut off by the kill fail on the client side; the task itself must not panic.
        let _ = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("client task hung");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let one = async |sql: &str| gw.sql_value::<i64>(sql, &[&client_id]).await;
    assert_eq!(
        one("SELECT count(*) FROM oauth.codes c WHERE c.client_id = $1 AND c.redeemed_at IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM oauth.refresh_families f WHERE f.family_id = c.family_id)").await,
        0,
        "a redeemed (valid) code always has the family it opened"
    );
    assert_eq!(
        one("SELECT count(*) FROM oauth.codes c WHERE c.client_id = $1 AND c.redeemed_at IS NULL AND c.family_id IS NOT NULL").await,
        0,
        "no code is half redeemed"
    );
    assert_eq!(
        one("SELECT count(*) FROM oauth.refresh_families f WHERE f.client_id = $1 AND f.revoked_at IS NULL
               AND (f.current_hash IS NULL OR f.generation < 0)").await,
        0,
        "no live family lost its token"
    );
    gw.stop().await;
}
