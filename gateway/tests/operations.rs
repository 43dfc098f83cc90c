//! Operating the gateway over real connections: Prometheus metrics on their own listener,
//! readiness, JSON logs without secrets, rate limits (429, Retry-After, X-Forwarded-For from
//! trusted proxies only, one count per gateway), scheduled cleanup on one gateway at a time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use oauth_gateway::config::{Config, EndpointLimits};
use serde_json::Value;

/// The cleanup advisory lock's key (gateway/src/db/cleanup.rs).
const CLEANUP_LOCK: i64 = 0x6f61_7574_6863_6c6e;

fn with(adjust: impl FnOnce(&mut Config) + Send + 'static, options: Options) -> Options {
    Options {
        adjust: Some(Box::new(adjust)),
        ..options
    }
}

fn metrics_at(port: u16) -> Option<std::net::SocketAddr> {
    Some(format!("127.0.0.1:{port}").parse().unwrap())
}

async fn scrape(http: &Http, port: u16) -> String {
    let resp = http
        .get(&format!("http://127.0.0.1:{port}/metrics"), &[])
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    resp.text()
}

/// The value of the sample `series` (name with its labels, as exposed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn metrics_are_served_apart_and_count_requests_tokens_reuse_revocations_and_the_guard() {
    let upstream = RecordingUpstream::start().await;
    let port = free_port();
    let gw = Gateway::start_with(with(
        move |c| c.metrics_listen = metrics_at(port),
        Options::guarding(upstream.url.clone(), &["mcp"]),
    ))
    .await;
    gw.admin
        .execute(
            "SELECT oauth.configure(refresh_reuse_grace => '0 s'::interval)",
            &[],
        )
        .await
        .unwrap();
    let resource = gw.mcp_url();
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization {
        resource: &resource,
        ..Authorization::new(&client_id)
    };
    let tokens = gw.code_flow(&authorization).await.ok_json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    gw.wait_synced(&resource, &access).await;
    let allowed = gw
        .http
        .get(&resource, &[("authorization", &bearer(&access))])
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    let anonymous = gw.http.get(&resource, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    let rotated = gw.refresh(&client_id, &first).await.ok_json();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    let reused = gw.refresh(&client_id, &first).await;
    reused.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "reuse");
    let revoked = gw
        .post("/revoke", &[("token", &second), ("client_id", &client_id)])
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    gw.wait_refused(
        &resource,
        &access,
        Duration::from_secs(3),
        "reuse revokes the grant",
    )
    .await;

    // Not on the public listener.
    assert_eq!(
        gw.get_at_root("/metrics", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let text = scrape(&gw.http, port).await;
    for (series, expected) in [
        (
            "oauth_tokens_issued_total{grant_type=\"authorization_code\"}",
            1.0,
        ),
        (
            "oauth_tokens_issued_total{grant_type=\"refresh_token\"}",
            1.0,
        ),
        ("oauth_refresh_token_reuse_total", 1.0),
        (
            "oauth_revocations_total{reason=\"refresh_token_reused\"}",
            1.0,
        ),
        ("oauth_revocations_total{reason=\"client_request\"}", 1.0),
        (
            "oauth_http_requests_total{endpoint=\"token\",status=\"200\"}",
            2.0,
        ),
        (
            "oauth_http_requests_total{endpoint=\"token\",status=\"400\"}",
            1.0,
        ),
        ("oauth_db_pool_max_connections", 8.0),
        ("oauth_revocation_feed_synchronised", 1.0),
    ] {
        assert_eq!(sample(&text, series), expected, "{series} in\n{text}");
    }
    assert!(sample(&text, "oauth_guard_decisions_total{decision=\"allowed\"}") >= 1.0);
    assert!(
        sample(
            &text,
            "oauth_guard_decisions_total{decision=\"unauthorized\"}"
        ) >= 2.0
    );
    assert!(
        sample(
            &text,
            "oauth_revocation_feed_notifications_total{kind=\"grant\"}"
        ) >= 1.0
    );
    assert!(sample(&text, "oauth_revocation_feed_lag_seconds") < 5.0);
    assert!(sample(&text, "oauth_db_pool_wait_seconds_count") >= 4.0);
    assert!(
        sample(
            &text,
            "oauth_http_request_duration_seconds_count{endpoint=\"token\"}"
        ) >= 3.0
    );
    for secret in [&access, &first, &second, &client_id, &resource] {
        assert!(!text.contains(secret.as_str()), "a label carries {secret}");
    }
    // Paths are not labels: a thousand invented paths add no series.
    for i in 0..20 {
        gw.get_at_root(&format!("/nothing-{i}"), &[]).await;
    }
    let after = scrape(&gw.http, port).await;
    assert!(!after.contains("nothing-"));
    assert_eq!(
        sample(
            &after,
            "oauth_http_requests_total{endpoint=\"not_found\",status=\"404\"}"
        ),
        21.0
    );
    for path in ["/healthz", "/readyz"] {
        let resp = gw
            .http
            .get(&format!("http://127.0.0.1:{port}{path}"), &[])
            .await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
    }
    gw.stop().await;
}

#[tokio::test]
async fn readiness_needs_the_database_and_a_synchronised_feed_while_liveness_does_not() {
    let gw = Gateway::start_with(Options::guarding(unreachable_upstream(), &["mcp"])).await;
    let started = Instant::now();
    loop {
        let ready = gw.get_at_root("/readyz", &[]).await;
        if ready.status == StatusCode::OK {
            assert_eq!(ready.header("cache-control"), Some("no-store"));
            let body = ready.json();
            assert_eq!(body["status"], "ready");
            assert_eq!(body["checks"]["database"], "ok");
            assert_eq!(body["checks"]["revocation_feed"], "ok");
            assert_eq!(body["checks"]["signing_keys"], "ok");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A gateway whose database is out of reach lives, but is not ready.
    let nowhere = format!(
        "host=127.0.0.1 port={} user=oauth_gateway_login dbname=x connect_timeout=1",
        free_port()
    );
    let (handle, base) = gw.second_with(move |c| c.database_url = nowhere).await;
    let live = gw.http.get(&format!("{base}/healthz"), &[]).await;
    assert_eq!(live.status, StatusCode::OK);
    let ready = gw.http.get(&format!("{base}/readyz"), &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = ready.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"], "failing");
    assert_eq!(body["checks"]["revocation_feed"], "failing");
    handle.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

fn token_limits(per_client: u32, per_address: u32) -> impl FnOnce(&mut Config) + Send {
    move |c| {
        c.rate_limits.token = EndpointLimits {
            per_client: Some(per_client),
            per_address: Some(per_address),
        };
    }
}

/// A token request that fails on its own merits (401: no such client) as `client_id`.
async fn token_attempt(http: &Http, base: &str, client_id: &str, forwarded: &str) -> Response {
    let headers: Vec<(&str, &str)> = if forwarded.is_empty() {
        Vec::new()
    } else {
        vec![("x-forwarded-for", forwarded)]
    };
    http.post_form(
        &format!("{base}/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "not-a-token"),
            ("client_id", client_id),
        ],
        &headers,
    )
    .await
}

fn assert_limited_json(resp: &Response) {
    assert_eq!(
        resp.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        resp.text()
    );
    assert_eq!(resp.oauth_error(), "temporarily_unavailable");
    let wait: u64 = resp.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_with_retry_after_json_on_token_and_html_on_pages() {
    let port = free_port();
    let gw = Gateway::start_with(with(
        move |c| {
            token_limits(3, 0)(c);
            c.rate_limits.consent.per_address = Some(2);
            c.metrics_listen = metrics_at(port);
        },
        Options::default(),
    ))
    .await;
    let base = gw.issuer.clone();
    for _ in 0..3 {
        let resp = token_attempt(&gw.http, &base, "client-a", "").await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text());
    }
    assert_limited_json(&token_attempt(&gw.http, &base, "client-a", "").await);
    // The same client authenticating with Basic is the same client.
    let basic = gw
        .http
        .post_form(
            &format!("{base}/token"),
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            &[("authorization", &common::basic("client-a", "secret"))],
        )
        .await;
    assert_limited_json(&basic);
    // Another client has its own budget.
    let other = token_attempt(&gw.http, &base, "client-b", "").await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);

    for _ in 0..2 {
        let page = gw.get("/consent?request_id=nothing").await;
        assert_ne!(page.status, StatusCode::TOO_MANY_REQUESTS);
    }
    let page = gw.get("/consent?request_id=nothing").await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("retry-after").is_some());
    assert_eq!(page.header("cache-control"), Some("no-store"));

    let text = scrape(&gw.http, port).await;
    assert_eq!(
        sample(
            &text,
            "oauth_rate_limited_total{endpoint=\"token\",key=\"client\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "oauth_rate_limited_total{endpoint=\"consent\",key=\"address\"}"
        ),
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn x_forwarded_for_names_the_source_only_when_a_trusted_proxy_sends_it() {
    // Loopback is trusted by default: the test is the proxy, and each forwarded address counts.
    let gw = Gateway::start_with(with(token_limits(0, 2), Options::default())).await;
    let base = gw.issuer.clone();
    for _ in 0..2 {
        let ok = token_attempt(&gw.http, &base, "c", "203.0.113.1").await;
        assert_eq!(ok.status, StatusCode::UNAUTHORIZED);
    }
    assert_limited_json(&token_attempt(&gw.http, &base, "c", "203.0.113.1").await);
    // Only the hop the trusted proxy appended counts, not what the client wrote before it.
    assert_limited_json(&token_attempt(&gw.http, &base, "c", "198.51.100.7, 203.0.113.1").await);
    let other = token_attempt(&gw.http, &base, "c", "203.0.113.2").await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);

    // From a peer that is not a trusted proxy the header is the client's word: ignored.
    let (handle, untrusting) = gw
        .second_with(|c| c.trusted_proxies = Some(vec!["192.0.2.1".into()]))
        .await;
    for forwarded in ["203.0.113.10", "203.0.113.11"] {
        let ok = token_attempt(&gw.http, &untrusting, "c", forwarded).await;
        assert_eq!(ok.status, StatusCode::UNAUTHORIZED);
    }
    assert_limited_json(&token_attempt(&gw.http, &untrusting, "c", "203.0.113.12").await);
    handle.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn each_gateway_counts_its_own_requests_so_n_gateways_allow_n_times_a_limit() {
    let gw = Gateway::start_with(with(token_limits(2, 0), Options::default())).await;
    let (handle, second) = gw.second_with(|_| {}).await;
    let mut answered = Vec::new();
    for base in [gw.issuer.clone(), second.clone()] {
        for _ in 0..3 {
            answered.push(
                token_attempt(&gw.http, &base, "one-client", "")
                    .await
                    .status,
            );
        }
    }
    let limited = |s: &StatusCode| *s == StatusCode::TOO_MANY_REQUESTS;
    assert_eq!(
        answered.iter().filter(|s| !limited(s)).count(),
        4,
        "2 gateways × 2 per minute: {answered:?}"
    );
    assert!(
        limited(&answered[2]) && limited(&answered[5]),
        "{answered:?}"
    );
    handle.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

async fn runs(http: &Http, port: u16, outcome: &str) -> f64 {
    sample(
        &scrape(http, port).await,
        &format!("oauth_cleanup_runs_total{{outcome=\"{outcome}\"}}"),
    )
}

async fn expired_requests(gw: &Gateway) -> i64 {
    gw.sql_value(
        "SELECT count(*) FROM oauth.authorization_requests WHERE expires_at <= now()",
        &[],
    )
    .await
}

#[tokio::test]
async fn cleanup_runs_on_one_gateway_at_a_time_and_another_takes_over_when_it_stops() {
    // The first gateway only holds the database (its cleanup is minutes away); the two that
    // clean every 200 ms are started and stopped here.
    let gw = Gateway::start().await;
    let every = |port: u16| {
        move |c: &mut Config| {
            c.cleanup_interval = Duration::from_millis(200);
            c.metrics_listen = metrics_at(port);
        }
    };
    // Rows to clean: authorization requests that expired.
    let client_id = gw.public_client(&["mcp"]).await;
    for _ in 0..3 {
        let resp = gw.authorize(&Authorization::new(&client_id)).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
    }
    gw.admin
        .execute(
            "UPDATE oauth.authorization_requests SET expires_at = now() - interval '1 s'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(expired_requests(&gw).await, 3);

    // While someone else holds the lock, both gateways skip.
    let holder = gw.admin_connection().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&CLEANUP_LOCK])
        .await
        .unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (a, _) = gw.second_with(every(port_a)).await;
    let (b, _) = gw.second_with(every(port_b)).await;
    let started = Instant::now();
    while runs(&gw.http, port_a, "skipped").await < 2.0
        || runs(&gw.http, port_b, "skipped").await < 2.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no skipped runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        expired_requests(&gw).await,
        3,
        "nobody cleaned under the lock"
    );
    drop(holder);

    // Then exactly one of them takes it, and keeps it.
    let started = Instant::now();
    while expired_requests(&gw).await > 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "nobody cleaned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (ran_a, ran_b) = (
        runs(&gw.http, port_a, "ran").await,
        runs(&gw.http, port_b, "ran").await,
    );
    assert!(
        (ran_a > 0.0) != (ran_b > 0.0),
        "one gateway cleans: a ran {ran_a}, b ran {ran_b}"
    );
    let (leader, leader_port, follower, follower_port) = if ran_a > 0.0 {
        (a, port_a, b, port_b)
    } else {
        (b, port_b, a, port_a)
    };
    let removed = sample(
        &scrape(&gw.http, leader_port).await,
        "oauth_cleanup_rows_removed_total",
    );
    assert_eq!(removed, 3.0);

    // The leader stops: its session ends with it, and the other gateway takes over.
    leader.shutdown(Duration::from_secs(1)).await;
    let started = Instant::now();
    while runs(&gw.http, follower_port, "ran").await == 0.0 {
        assert!(started.elapsed() < Duration::from_secs(5), "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    follower.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

/// The `oauth-gateway` binary with a TOML configuration of `log_format`, its stderr in a file;
/// returns the child, its base URL and the log file.
async fn spawn_logging(
    gw: &Gateway,
    log_format: &str,
) -> (std::process::Child, String, std::path::PathBuf) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("oauth-gw-logs-{}", random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = &gw.config.keys[0];
    let config = format!(
        "issuer = {issuer:?}\nlisten = \"127.0.0.1:{port}\"\ndatabase_url = {db:?}\n\
         dev_mode = true\ndev_user = \"alice\"\nlog_format = \"{log_format}\"\n\
         [[keys]]\npath = {path:?}\nalg = \"ES256\"\n",
        issuer = gw.issuer,
        db = gw.config.database_url,
        path = key.path.display().to_string(),
    );
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join("stderr.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_oauth-gateway"))
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .env("RUST_LOG", "oauth_gateway=debug,info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start oauth-gateway");
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while gw
        .http
        .client_get_ok(&format!("{base}/healthz"))
        .await
        .is_none()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, base, log)
}

/// Traffic full of secrets: a client secret (right and wrong), access tokens in bodies and
/// headers, a code, a verifier and a state in query strings, a refresh token that is not one.
/// Returns every secret sent.
async fn secret_traffic(gw: &Gateway, base: &str) -> Vec<String> {
    let machine = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    let issued = gw
        .http
        .post_form(
            &format!("{base}/token"),
            &[("grant_type", "client_credentials")],
            &[("authorization", &machine.basic())],
        )
        .await
        .ok_json();
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let wrong = gw
        .http
        .post_form(
            &format!("{base}/token"),
            &[("grant_type", "client_credentials")],
            &[(
                "authorization",
                &basic(&machine.id, "wrong-secret-5f2b9c1e"),
            )],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let introspected = gw
        .http
        .post_form(
            &format!("{base}/introspect"),
            &[("token", &access)],
            &[("authorization", &machine.basic())],
        )
        .await
        .ok_json();
    assert_eq!(introspected["active"], true);
    let userinfo = gw
        .http
        .get(
            &format!("{base}/userinfo"),
            &[("authorization", &bearer(&access))],
        )
        .await;
    assert_ne!(userinfo.status, StatusCode::INTERNAL_SERVER_ERROR);
    let authorize = gw
        .http
        .get(
            &format!(
                "{base}/authorize?client_id={}&code=code-7d41a0&code_verifier=verifier-93bb2&state=state-c0ffee",
                machine.id
            ),
            &[],
        )
        .await;
    assert_ne!(authorize.status, StatusCode::INTERNAL_SERVER_ERROR);
    let refresh = gw
        .http
        .post_form(
            &format!("{base}/token"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "refresh-4e8a77d1"),
            ],
            &[("authorization", &machine.basic())],
        )
        .await;
    assert_eq!(refresh.status, StatusCode::BAD_REQUEST);
    let revoked = gw
        .http
        .post_form(
            &format!("{base}/revoke"),
            &[("token", &access)],
            &[("authorization", &machine.basic())],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    vec![
        machine.secret().to_owned(),
        machine.basic(),
        "wrong-secret-5f2b9c1e".into(),
        access.clone(),
        // A JWT's signature alone must not appear either.
        access.rsplit('.').next().unwrap().to_owned(),
        "code-7d41a0".into(),
        "verifier-93bb2".into(),
        "state-c0ffee".into(),
        "refresh-4e8a77d1".into(),
    ]
}

fn assert_no_secret(logs: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the log holds {secret}:\n{logs}"
        );
    }
}

#[tokio::test]
async fn logs_in_text_and_json_hold_no_token_code_or_secret_and_json_lines_parse() {
    let gw = Gateway::start().await;
    for format in ["json", "text"] {
        let (mut child, base, log) = spawn_logging(&gw, format).await;
        let secrets = secret_traffic(&gw, &base).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let logs = std::fs::read_to_string(&log).unwrap();
        assert_no_secret(&logs, &secrets);
        let served = logs.lines().filter(|l| l.contains("served")).count();
        assert!(
            served >= 7,
            "{format}: an access log line per request:\n{logs}"
        );
        if format == "json" {
            for line in logs.lines().filter(|l| !l.trim().is_empty()) {
                let entry: Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(entry["level"].is_string() && entry["timestamp"].is_string());
            }
            let access = logs
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .find(|e| e["fields"]["message"] == "served" && e["span"]["path"] == "/token")
                .expect("an access log line for /token");
            assert!(access["fields"]["status"].is_u64());
            assert!(access["span"]["id"].is_string());
        }
        let _ = std::fs::remove_dir_all(log.parent().unwrap());
    }
    gw.stop().await;
}

/// The default limits hold outside development mode; in development mode (how harnesses and load
/// generators drive a gateway) only configured limits do.
#[tokio::test]
async fn default_limits_apply_outside_development_mode_and_configured_ones_in_every_mode() {
    let gw = Gateway::start().await;
    let attempts = |base: String| {
        let http = Http::new();
        async move {
            let mut limited = 0;
            for _ in 0..1300 {
                let r = token_attempt(&http, &base, "nobody", "").await;
                if r.status == StatusCode::TOO_MANY_REQUESTS {
                    limited += 1;
                }
            }
            limited
        }
    };
    let (dev, dev_base) = gw.second_with(|c| c.rate_limits = Default::default()).await;
    assert_eq!(
        attempts(dev_base).await,
        0,
        "development mode, none configured"
    );
    dev.shutdown(Duration::from_secs(1)).await;

    let (production, production_base) = gw
        .second_with(|c| {
            c.rate_limits = Default::default();
            c.dev_mode = false;
            c.dev_user = None;
        })
        .await;
    assert!(
        attempts(production_base).await >= 600,
        "600 per client per minute by default"
    );
    production.shutdown(Duration::from_secs(1)).await;

    let (configured, configured_base) = gw
        .second_with(|c| {
            c.rate_limits = Default::default();
            token_limits(10, 0)(c);
        })
        .await;
    assert!(
        attempts(configured_base).await >= 1200,
        "configured limits apply in development mode too"
    );
    configured.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}
