//! The gateway at its edges: several processes sharing keys, the authenticating proxy in front of
//! it, and clients or statements that hold its resources too long.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;

const USER_HEADER: &str = "x-remote-user";

fn socket_addr(base: &str) -> SocketAddr {
    base.trim_start_matches("http://").parse().unwrap()
}

/// The consent page's GET for `request_id`, with the user header lines `users` in order, sent from
/// the local address `from`.
fn consent_request(request_id: &str, users: &[&str]) -> Vec<u8> {
    let mut request = format!("GET /consent?request_id={request_id} HTTP/1.1\r\nhost: gateway\r\n");
    for user in users {
        request.push_str(&format!("{USER_HEADER}: {user}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    request.into_bytes()
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// A second gateway whose built-in pages know the user only from [`USER_HEADER`], set by a proxy
/// at one of `trusted_proxies` (unset: the default).
async fn behind_proxy(
    gw: &Gateway,
    trusted_proxies: Option<Vec<String>>,
) -> (oauth_gateway::ServerHandle, SocketAddr) {
    let (handle, base) = gw
        .second_with(|config| {
            config.trusted_user_header = Some(USER_HEADER.into());
            config.trusted_proxies = trusted_proxies;
            config.dev_mode = false;
            config.dev_user = None;
        })
        .await;
    (handle, socket_addr(&base))
}

#[tokio::test]
async fn a_consent_form_served_by_one_es256_gateway_is_accepted_by_another() {
    let gw = Gateway::start().await;
    let (second, second_base) = gw.second().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization::new(&client_id);
    let (request_id, csrf) = gw.consent_form(&authorization).await;
    let decided = gw
        .http
        .post_form(
            &format!("{second_base}/consent"),
            &[
                ("request_id", &request_id),
                ("csrf_token", &csrf),
                ("decision", "approve"),
            ],
            &[],
        )
        .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
    assert!(decided.location().starts_with(CALLBACK));
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn repeated_trusted_user_header_lines_are_refused_as_a_sign_in_failure() {
    let gw = Gateway::start().await;
    let (second, addr) = behind_proxy(&gw, None).await;
    let request_id = gw.pending_request_id().await;
    let within = Duration::from_secs(5);
    let once = raw_exchange(addr, None, &consent_request(&request_id, &["bob"]), within).await;
    assert!(status_line(&once).contains(" 200 "), "{once}");
    // Behind a proxy that appends its line, the first one is the client's own.
    let twice = consent_request(&request_id, &["mallory", "bob"]);
    let answer = raw_exchange(addr, None, &twice, within).await;
    assert!(status_line(&answer).contains(" 401 "), "{answer}");
    assert!(answer.contains("Sign-in required"), "{answer}");
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_user_header_from_an_address_not_among_trusted_proxies_is_treated_as_signed_out() {
    let gw = Gateway::start().await;
    let proxy: IpAddr = "127.0.0.2".parse().unwrap();
    let (second, addr) = behind_proxy(&gw, Some(vec![format!("{proxy}/32")])).await;
    let request_id = gw.pending_request_id().await;
    let request = consent_request(&request_id, &["bob"]);
    let within = Duration::from_secs(5);
    let from_proxy = raw_exchange(addr, Some(proxy), &request, within).await;
    assert!(status_line(&from_proxy).contains(" 200 "), "{from_proxy}");
    assert!(from_proxy.contains("<strong>bob</strong>"), "{from_proxy}");
    let direct = raw_exchange(addr, None, &request, within).await;
    assert!(status_line(&direct).contains(" 401 "), "{direct}");
    assert!(direct.contains("Sign-in required"), "{direct}");
    second.shutdown(Duration::from_secs(1)).await;

    // By default only a proxy on the same host is trusted: loopback is.
    let (default, addr) = behind_proxy(&gw, None).await;
    let from_loopback = raw_exchange(addr, Some(proxy), &request, within).await;
    assert!(
        status_line(&from_loopback).contains(" 200 "),
        "{from_loopback}"
    );
    default.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_statement_running_longer_than_statement_timeout_is_cancelled_and_answered_503() {
    let gw = Gateway::start().await;
    let client = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    let (second, base) = gw
        .second_with(|config| config.statement_timeout = Duration::from_secs(1))
        .await;
    let request = TokenRequest {
        grant_type: "client_credentials",
        authorization: &client.basic(),
        ..TokenRequest::default()
    };
    let token_url = format!("{base}/token");
    gw.http.token_at(&token_url, &request).await.ok_json();
    // Another session holds the clients table: every token request's statement waits on it.
    let locker = gw.admin_connection().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE oauth.clients IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let waited = tokio::time::timeout(
        Duration::from_secs(10),
        gw.http.token_at(&token_url, &request),
    )
    .await;
    let elapsed = started.elapsed();
    locker.batch_execute("ROLLBACK").await.unwrap();
    let resp = waited.expect("the statement was not cancelled within 10 s");
    resp.assert_temporarily_unavailable();
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    gw.http.token_at(&token_url, &request).await.ok_json();
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_body_read_timeout_is_answered_408() {
    let gw = Gateway::start().await;
    let (second, base) = gw
        .second_with(|config| config.body_read_timeout = Duration::from_secs(1))
        .await;
    for (path, content_type) in [
        ("/token", FORM),
        ("/register", "application/json"),
        ("/consent", FORM),
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: {content_type}\r\ncontent-length: 100\r\n\r\ngrant_type="
        );
        let started = Instant::now();
        let answer = raw_exchange(
            socket_addr(&base),
            None,
            request.as_bytes(),
            Duration::from_secs(5),
        )
        .await;
        assert!(status_line(&answer).contains(" 408 "), "{path}: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "{path}");
    }
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn connections_beyond_max_connections_are_answered_503_until_one_closes() {
    let gw = Gateway::start().await;
    let (second, base) = gw.second_with(|config| config.max_connections = 3).await;
    let addr = socket_addr(&base);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let healthz = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n";
    let within = Duration::from_secs(3);
    let refused = raw_exchange(addr, None, b"", within).await;
    assert!(status_line(&refused).contains(" 503 "), "{refused:?}");
    assert!(
        refused.to_ascii_lowercase().contains("retry-after: 1"),
        "{refused}"
    );
    // A freed slot serves the next connection.
    held.pop();
    let started = Instant::now();
    loop {
        let answer = raw_exchange(addr, None, healthz, within).await;
        if status_line(&answer).contains(" 200 ") {
            break;
        }
        assert!(started.elapsed() < within, "never served again: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}
