//! Faults that need the whole cluster: the database stops and comes back under a running gateway.
//! It restarts the shared test cluster, so scripts/test runs it alone (`--ignored`, one thread).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;

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
    let gw = Gateway::start_with(Options::guarding(unreachable_upstream(), &["mcp"])).await;
    let client_id = gw.public_client(&["mcp"]).await;
    let resource = gw.mcp_url();
    let tokens = gw
        .code_flow(&Authorization {
            resource: &resource,
            ..Authorization::new(&client_id)
        })
        .await
        .json();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let access = tokens["access_token"].as_str().unwrap();
    // The feed has synchronised once the proxy stops answering 503 (the upstream is down: 502).
    gw.wait_synced(&resource, access).await;

    pg_ctl("stop");
    let t = Instant::now();
    let down = gw.refresh(&client_id, &refresh).await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "a request waited {:?} on a dead database",
        t.elapsed()
    );
    down.assert_temporarily_unavailable();

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
    // (The harness's own administrator connection died with the restart.)
    let admin = gw.admin_connection().await;
    let grant = gw.claims(access)["grant_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    admin
        .execute("SELECT oauth.revoke_grant($1::text::uuid)", &[&grant])
        .await
        .unwrap();
    gw.wait_refused(
        &resource,
        access,
        Duration::from_secs(6),
        "revocation not seen after the restart",
    )
    .await;
    gw.stop().await;
}
