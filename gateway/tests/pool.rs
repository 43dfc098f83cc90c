//! Back-pressure, availability and shutdown: an unreachable database and an exhausted pool
//! answer 503 quickly (the latter after a bounded wait), and SIGTERM lets in-flight requests
//! finish.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;

/// A refresh token whose family row the returned transaction holds locked: rotating it blocks.
async fn blocked_refresh(gw: &Gateway, client_id: &str) -> (String, tokio_postgres::Client) {
    let tokens = gw.code_flow(&Authorization::new(client_id)).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let family: uuid::Uuid = jwt_segment(tokens["access_token"].as_str().unwrap(), 1)["family_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let locker = gw.admin_connection().await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM oauth.refresh_families WHERE family_id = $1 FOR UPDATE",
            &[&family],
        )
        .await
        .unwrap();
    (refresh, locker)
}

#[tokio::test]
async fn database_unavailable_answers_503_temporarily_unavailable_quickly() {
    let gw = Gateway::start_with(Options {
        database_url_override: Some(format!(
            "host=127.0.0.1 port={} user=nobody dbname=nothing connect_timeout=1",
            free_port()
        )),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let resp = gw.refresh("x", "abc").await;
    assert!(started.elapsed() < Duration::from_secs(5), "fails fast");
    resp.assert_temporarily_unavailable();
    let authorize = gw.authorize(&Authorization::new("x")).await;
    assert_eq!(authorize.status, StatusCode::SERVICE_UNAVAILABLE);
    gw.stop().await;
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_with_retry_after_after_a_bounded_wait() {
    let gw = Arc::new(
        Gateway::start_with(Options {
            pool_size: 1,
            pool_wait: Duration::from_millis(300),
            ..Options::default()
        })
        .await,
    );
    let client_id = gw.public_client(&["mcp"]).await;
    let (refresh, locker) = blocked_refresh(&gw, &client_id).await;
    // This request takes the only connection and waits on the row lock.
    let holder = {
        let (gw, client_id) = (gw.clone(), client_id.clone());
        tokio::spawn(async move { gw.refresh(&client_id, &refresh).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let starved = gw.refresh(&client_id, "x").await;
    let waited = started.elapsed();
    starved.assert_temporarily_unavailable();
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
    Gateway::stop_shared(gw).await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let (refresh, locker) = blocked_refresh(&gw, &client_id).await;
    // A second gateway process on the same database, stopped with SIGTERM while a request is in flight.
    let (mut child, base) = gw.spawn_process().await;
    let in_flight = {
        let (url, body) = (
            format!("{base}/token"),
            TokenRequest::refresh(&client_id, &refresh).body(),
        );
        tokio::spawn(async move { Http::new().post_raw(&url, FORM, body).await })
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
