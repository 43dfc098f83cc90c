//! Back-pressure and shutdown: an exhausted pool answers 503 after a bounded wait, and SIGTERM
//! lets in-flight requests finish.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;

/// A refresh token whose family row the returned transaction holds locked: rotating it blocks.
async fn blocked_refresh(gw: &Gateway, client_id: &str) -> (String, tokio_postgres::Client) {
    let p = pkce();
    let code = gw.code(client_id, &p, &[]).await;
    let tokens = gw.exchange(client_id, None, &code, &p).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let locker = connect(&format!(
        "{} dbname={}",
        std::env::var("OAUTH_TEST_DATABASE_URL").unwrap(),
        gw.db_name
    ))
    .await;
    locker.batch_execute("BEGIN").await.unwrap();
    let family: uuid::Uuid = tokens_family(&tokens);
    locker
        .execute(
            "SELECT 1 FROM oauth.refresh_families WHERE family_id = $1 FOR UPDATE",
            &[&family],
        )
        .await
        .unwrap();
    (refresh, locker)
}

fn tokens_family(tokens: &serde_json::Value) -> uuid::Uuid {
    let payload = tokens["access_token"]
        .as_str()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    claims["family_id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_with_retry_after_after_a_bounded_wait() {
    let gw = std::sync::Arc::new(
        Gateway::start_with(Options {
            pool_size: 1,
            pool_wait: Duration::from_millis(300),
            ..Options::default()
        })
        .await,
    );
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let (refresh, locker) = blocked_refresh(&gw, &client_id).await;
    // This request takes the only connection and waits on the row lock.
    let holder = {
        let (gw, client_id) = (gw.clone(), client_id.clone());
        tokio::spawn(async move { gw.refresh(&client_id, &refresh).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let starved = gw
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", &client_id),
            ],
            &[],
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(starved.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(starved.oauth_error(), "temporarily_unavailable");
    assert_eq!(starved.header("retry-after"), Some("1"));
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "waited {waited:?}"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        holder.await.unwrap().status,
        StatusCode::OK,
        "the held request completes once the lock goes"
    );
    std::sync::Arc::try_unwrap(gw).ok().unwrap().stop().await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let gw = Gateway::start().await;
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let (refresh, locker) = blocked_refresh(&gw, &client_id).await;
    // A second gateway process on the same database, stopped with SIGTERM while a request is in flight.
    let (mut child, base) = gw.spawn_process().await;
    let in_flight = {
        let http = Http::new();
        let (url, client_id) = (format!("{base}/token"), client_id.clone());
        tokio::spawn(async move {
            http.post_form(
                &url,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &refresh),
                    ("client_id", &client_id),
                ],
                &[],
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the gateway waits for its in-flight request"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, StatusCode::OK, "{}", finished.text());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    gw.stop().await;
}
