//! Faults that need the whole cluster: the database stops and comes back under a running gateway.
//! It restarts the shared test cluster, so scripts/test runs it alone (`--ignored`, one thread).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use oauth_gateway::config::RouteConfig;

fn pg_ctl(action: &str) {
    let bin = std::env::var("OAUTH_TEST_PG_BIN")
        .expect("OAUTH_TEST_PG_BIN must be set (scripts/test sets it)");
    let data = std::env::var("OAUTH_TEST_PG_DATA")
        .expect("OAUTH_TEST_PG_DATA must be set (scripts/test sets it)");
    let status = std::process::Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            &format!("{bin}/pg_ctl"),
            "-D",
            &data,
            "-w",
            "-t",
            "60",
            "-m",
            "fast",
            action,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run pg_ctl");
    assert!(status.success(), "pg_ctl {action}");
}

#[tokio::test]
#[ignore = "restarts the shared cluster; scripts/test runs it alone"]
async fn the_gateway_fails_fast_while_the_database_is_down_and_recovers_by_itself() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    drop(upstream);
    let gw = Gateway::start_with(Options {
        routes: vec![RouteConfig {
            prefix: "/mcp".into(),
            upstream: format!("http://{upstream_addr}/mcp"),
            scopes: vec!["mcp".into()],
            resource: None,
        }],
        ..Options::default()
    })
    .await;
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let resource = format!("{}/mcp", gw.base);
    let p = pkce();
    let code = gw.code(&client_id, &p, &[("resource", &resource)]).await;
    let tokens = gw.exchange(&client_id, None, &code, &p).await.json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    // The feed has synchronised once the proxy stops answering 503 (the upstream is down: 502).
    let started = Instant::now();
    while gw
        .http
        .get(&resource, &[("authorization", &bearer)])
        .await
        .status
        == StatusCode::SERVICE_UNAVAILABLE
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "feed never synchronised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    pg_ctl("stop");
    let t = Instant::now();
    let down = gw.refresh(&client_id, &refresh).await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "a request waited {:?} on a dead database",
        t.elapsed()
    );
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.oauth_error(), "temporarily_unavailable");
    assert_eq!(down.header("retry-after"), Some("1"));

    pg_ctl("start");
    // The pool reconnects by itself; the refresh token committed before the outage still works.
    let t = Instant::now();
    let rotated = loop {
        let resp = gw.refresh(&client_id, &refresh).await;
        if resp.status != StatusCode::SERVICE_UNAVAILABLE {
            break resp;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no recovery after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());

    // The revocation feed reconnected and resynchronised: a revocation after the restart is seen.
    let admin = connect(&format!(
        "{} dbname={}",
        std::env::var("OAUTH_TEST_DATABASE_URL").unwrap(),
        gw.db_name
    ))
    .await;
    let claims = gw
        .app
        .verify_own_token(tokens["access_token"].as_str().unwrap(), None, true)
        .unwrap();
    let grant: uuid::Uuid = claims["grant_id"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    admin
        .execute("SELECT oauth.revoke_grant($1)", &[&grant])
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let status = gw
            .http
            .get(&resource, &[("authorization", &bearer)])
            .await
            .status;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "revocation not seen after the restart ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}
