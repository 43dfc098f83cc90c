//! A primary failover under refresh load. On this machine, in a temporary directory: a primary and
//! a hot standby (streaming replication, `synchronous_commit = on`, the standby the one name in
//! `synchronous_standby_names`), and a gateway whose connection string lists both hosts with
//! `target_session_attrs=read-write`. Chains of refreshes run; the primary is killed
//! (`pg_ctl stop -m immediate`) and, a moment later, the standby promoted. The gateway must answer
//! 503 (never 500, never hang) while there is no primary, recover by itself once there is one, lose
//! no token a client received (synchronous replication), never leave two live successors, and its
//! revocation feed must follow the new primary.
//!
//! It measures times, so scripts/test runs it alone (`--ignored`, one thread).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use oauth_gateway::Config;
use oauth_gateway::config::{KeyConfig, RouteConfig};
use oauth_gateway::keys::Alg;
use serde_json::Value;

const CHAINS: usize = 6;
/// Longer than any answer may take: the gateway waits `pool_wait` (1 s) at most, then says 503.
const HANG: Duration = Duration::from_secs(5);

fn pg_bin(program: &str) -> String {
    let bin = std::env::var("OAUTH_TEST_PG_BIN")
        .expect("OAUTH_TEST_PG_BIN must be set (scripts/test sets it)");
    format!("{bin}/{program}")
}

/// Runs a PostgreSQL program as `postgres` (a cluster refuses to run as root), failing with its
/// output.
fn as_postgres(program: &str, args: &[&str]) {
    let output = Command::new("runuser")
        .args(["-u", "postgres", "--", &pg_bin(program)])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two clusters in a temporary directory, stopped and removed when dropped.
struct Clusters {
    dir: PathBuf,
    primary_port: u16,
    standby_port: u16,
}

impl Clusters {
    fn data(&self, which: &str) -> String {
        self.dir.join(which).display().to_string()
    }

    fn pg_ctl(&self, which: &str, args: &[&str]) {
        let data = self.data(which);
        let log = self.dir.join(format!("{which}.log")).display().to_string();
        let mut all = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        as_postgres("pg_ctl", &all);
    }

    fn append(&self, file: &str, lines: &str) {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join(file))
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
    }

    /// A primary with the extension, and a synchronous hot standby streaming from it.
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("oauth-failover-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let owned = Command::new("chown")
            .args(["postgres:", &dir.display().to_string()])
            .status()
            .unwrap();
        assert!(owned.success());
        let clusters = Self {
            dir,
            primary_port: free_port(),
            standby_port: free_port(),
        };
        let primary = clusters.data("primary");
        as_postgres(
            "initdb",
            &[
                "-D",
                &primary,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
        );
        let socket_dir = clusters.dir.display();
        clusters.append(
            "primary/postgresql.conf",
            &format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{socket_dir}'\n\
                 synchronous_commit = on\nsynchronous_standby_names = 'standby'\n\
                 wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nmax_connections = 60\n",
                clusters.primary_port
            ),
        );
        clusters.pg_ctl("primary", &["start"]);

        let standby = clusters.data("standby");
        let primary_port = clusters.primary_port.to_string();
        as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary_port,
                "-U",
                "postgres",
                "-D",
                &standby,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        // Its own port; once promoted, no standby of its own to wait for.
        clusters.append(
            "standby/postgresql.conf",
            &format!(
                "port = {}\nsynchronous_standby_names = ''\n",
                clusters.standby_port
            ),
        );
        clusters.append(
            "standby/postgresql.auto.conf",
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby'\n",
                clusters.primary_port
            ),
        );
        clusters.pg_ctl("standby", &["start"]);

        let admin = clusters.admin(clusters.primary_port, "postgres").await;
        let started = Instant::now();
        loop {
            let sync: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication \
                     WHERE application_name = 'standby' AND sync_state = 'sync' AND state = 'streaming'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if sync == 1 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the standby never became synchronous"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        clusters
    }

    async fn admin(&self, port: u16, db: &str) -> tokio_postgres::Client {
        connect(&format!(
            "host=127.0.0.1 port={port} user=postgres dbname={db}"
        ))
        .await
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        for which in ["primary", "standby"] {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--", &pg_bin("pg_ctl"), "-D"])
                .arg(self.dir.join(which))
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One response the load received.
struct Received {
    chain: usize,
    sent: Duration,
    done: Duration,
    /// 0: no answer within [`HANG`].
    status: u16,
    tokens: Option<Value>,
}

/// The whole code flow of the public client `client_id` through the built-in consent page.
async fn code_flow(http: &Http, issuer: &str, client_id: &str, resource: &str) -> Value {
    let authorization = Authorization {
        resource,
        ..Authorization::new(client_id)
    };
    let asked = http
        .get(
            &format!("{issuer}/authorize?{}", authorization.query()),
            &[],
        )
        .await;
    assert_eq!(asked.status, StatusCode::FOUND, "{}", asked.text());
    let page = http.get(&asked.location(), &[]).await.text();
    let decided = http
        .post_form(
            &format!("{issuer}/consent"),
            &[
                ("request_id", &form_field(&page, "request_id")),
                ("csrf_token", &form_field(&page, "csrf_token")),
                ("decision", "approve"),
            ],
            &[],
        )
        .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
    let code = query_of(&decided.location())["code"].clone();
    http.token_at(
        &format!("{issuer}/token"),
        &TokenRequest::redeem(&authorization, &code),
    )
    .await
    .ok_json()
}

/// Refreshes chain `chain` until `stop`, each answer recorded; a 503 is retried with the same token.
async fn refresh_chain(
    chain: usize,
    issuer: String,
    client_id: String,
    mut refresh: String,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<Received> {
    let http = Http::new();
    let url = format!("{issuer}/token");
    let mut received = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let sent = t0.elapsed();
        let answer = tokio::time::timeout(
            HANG,
            http.token_at(&url, &TokenRequest::refresh(&client_id, &refresh)),
        )
        .await;
        let done = t0.elapsed();
        let (status, tokens) = match answer {
            Err(_) => (0, None),
            Ok(resp) if resp.status == StatusCode::OK => (200, Some(resp.json())),
            Ok(resp) => {
                if resp.status == StatusCode::SERVICE_UNAVAILABLE {
                    resp.assert_temporarily_unavailable();
                }
                (resp.status.as_u16(), None)
            }
        };
        if let Some(tokens) = &tokens {
            refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        received.push(Received {
            chain,
            sent,
            done,
            status,
            tokens,
        });
    }
    received
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test]
#[ignore = "measures a failover's timing; scripts/test runs it alone"]
async fn the_gateway_survives_a_primary_failover_under_refresh_load_and_loses_no_token() {
    let clusters = Clusters::start().await;
    let admin = clusters.admin(clusters.primary_port, "postgres").await;
    admin
        .batch_execute("CREATE DATABASE oauth_failover")
        .await
        .unwrap();
    let admin = clusters
        .admin(clusters.primary_port, "oauth_failover")
        .await;
    admin
        .batch_execute(
            "CREATE EXTENSION oauth_provider; \
             CREATE ROLE oauth_gateway_login LOGIN IN ROLE oauth_gateway;",
        )
        .await
        .unwrap();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    admin
        .execute("SELECT oauth.configure(issuer => $1)", &[&base])
        .await
        .unwrap();
    let key_path = clusters.dir.join("es256.pem");
    std::fs::write(&key_path, test_key_pem(Alg::ES256)).unwrap();
    let upstream = RecordingUpstream::start().await;
    let config = Config {
        issuer: base.clone(),
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        database_url: format!(
            "host=127.0.0.1,127.0.0.1 port={},{} user=oauth_gateway_login dbname=oauth_failover \
             target_session_attrs=read-write",
            clusters.primary_port, clusters.standby_port
        ),
        pool_size: 8,
        pool_wait: Duration::from_secs(1),
        keys: vec![KeyConfig {
            path: key_path,
            alg: Alg::ES256,
            kid: None,
        }],
        routes: vec![RouteConfig {
            prefix: "/mcp".into(),
            upstream: upstream.url.clone(),
            ..RouteConfig::default()
        }],
        dev_mode: true,
        dev_user: Some("alice".into()),
        // The load is thousands of refreshes a second from one address.
        rate_limits: oauth_gateway::config::RateLimits::off(),
        ..Config::default()
    };
    let app = oauth_gateway::build(config).await.expect("build gateway");
    let handle = oauth_gateway::serve(app).await.expect("serve");
    let resource = format!("{base}/mcp");
    let http = Http::new();

    // A client per chain: each its own grant, which a reuse revokes alone.
    let mut clients = Vec::new();
    let mut first_tokens = Vec::new();
    for _ in 0..CHAINS {
        let client_id: String = admin
            .query_one(
                "SELECT client_id FROM oauth.create_client('Failover', $1, '{mcp}', 'none', \
                 '{authorization_code,refresh_token}', 'native')",
                &[&vec![REDIRECT]],
            )
            .await
            .unwrap()
            .get(0);
        first_tokens.push(code_flow(&http, &base, &client_id, &resource).await);
        clients.push(client_id);
    }
    let guarded = first_tokens[0]["access_token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while http
        .get(&resource, &[("authorization", &bearer(&guarded))])
        .await
        .status
        != StatusCode::OK
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "feed never synchronised"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Refresh load, then no primary, then the standby promoted.
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = first_tokens
        .iter()
        .enumerate()
        .map(|(chain, tokens)| {
            tokio::spawn(refresh_chain(
                chain,
                base.clone(),
                clients[chain].clone(),
                tokens["refresh_token"].as_str().unwrap().to_owned(),
                t0,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = t0.elapsed();
    clusters.pg_ctl("primary", &["-m", "immediate", "stop"]);
    let stopped = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let promoting = t0.elapsed();
    clusters.pg_ctl("standby", &["promote"]);
    let promoted = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut received = Vec::new();
    for task in load {
        received.extend(task.await.unwrap());
    }

    // Every answer was a token or a 503, in bounded time.
    let odd: Vec<_> = received
        .iter()
        .filter(|r| r.status != 200 && r.status != 503)
        .map(|r| (r.chain, r.status, ms(r.sent), ms(r.done)))
        .collect();
    assert!(
        odd.is_empty(),
        "answers other than 200/503 (chain, status, sent ms, done ms): {odd:?}"
    );
    let slowest = received.iter().map(|r| r.done - r.sent).max().unwrap();
    assert!(
        slowest < Duration::from_secs(3),
        "an answer took {slowest:?}"
    );
    // While there was no primary: 503 only.
    let without_primary: Vec<_> = received
        .iter()
        .filter(|r| r.sent > killed + Duration::from_millis(100) && r.done < promoting)
        .collect();
    assert!(
        !without_primary.is_empty(),
        "no request while there was no primary"
    );
    assert!(
        without_primary.iter().all(|r| r.status == 503),
        "a token was issued with no primary"
    );
    let first_503 = received
        .iter()
        .filter(|r| r.status == 503 && r.done > killed)
        .map(|r| r.done)
        .min()
        .expect("a 503 after the kill");
    let recovered = received
        .iter()
        .filter(|r| r.status == 200 && r.sent >= promoted)
        .map(|r| r.done)
        .min()
        .expect("no token after the promotion");
    let recovery = recovered - promoted;
    assert!(
        recovery < Duration::from_secs(3),
        "recovered {recovery:?} after the promotion"
    );

    // No token lost: each chain's live token is the last one its client received, which rotates.
    let admin = clusters
        .admin(clusters.standby_port, "oauth_failover")
        .await;
    let mut last_refresh = Vec::new();
    let mut last_access = Vec::new();
    for (chain, first) in first_tokens.iter().enumerate() {
        let last = received
            .iter()
            .filter(|r| r.chain == chain)
            .filter_map(|r| r.tokens.as_ref())
            .next_back()
            .unwrap_or(first);
        let refresh = last["refresh_token"].as_str().unwrap().to_owned();
        let access = last["access_token"].as_str().unwrap().to_owned();
        let family = jwt_segment(&access, 1)["family_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (live, holds_last): (i64, bool) = {
            let row = admin
                .query_one(
                    "SELECT count(*) FILTER (WHERE revoked_at IS NULL), \
                            bool_and(current_hash = oauth.token_hash($2)) \
                       FROM oauth.refresh_families WHERE family_id = $1::text::uuid",
                    &[&family, &refresh],
                )
                .await
                .unwrap();
            (row.get(0), row.get::<_, Option<bool>>(1).unwrap_or(false))
        };
        assert_eq!(
            (live, holds_last),
            (1, true),
            "chain {chain}: its family's live token is not the last one received"
        );
        last_refresh.push(refresh);
        last_access.push(access);
    }
    let mut rotated_refresh = Vec::new();
    for (chain, refresh) in last_refresh.iter().enumerate() {
        let rotated = http
            .token_at(
                &format!("{base}/token"),
                &TokenRequest::refresh(&clients[chain], refresh),
            )
            .await;
        assert_eq!(
            rotated.status,
            StatusCode::OK,
            "chain {chain}: {}",
            rotated.text()
        );
        rotated_refresh.push(rotated.json()["refresh_token"].as_str().unwrap().to_owned());
    }

    // The revocation feed follows the new primary: a grant revoked there is refused at the guard.
    let guarded = &last_access[0];
    let passed = http
        .get(&resource, &[("authorization", &bearer(guarded))])
        .await;
    assert_eq!(passed.status, StatusCode::OK, "{}", passed.text());
    let grant = jwt_segment(guarded, 1)["grant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin
        .execute("SELECT oauth.revoke_grant($1::text::uuid)", &[&grant])
        .await
        .unwrap();
    let revoked_at = Instant::now();
    while http
        .get(&resource, &[("authorization", &bearer(guarded))])
        .await
        .status
        != StatusCode::UNAUTHORIZED
    {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "the guard still accepted a grant revoked on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_after = revoked_at.elapsed();

    // A token a chain superseded is recognised as such: reuse, which ends that chain's family.
    let refresh_at = |chain: usize, token: &str| {
        let request = TokenRequest::refresh(&clients[chain], token).body();
        let url = format!("{base}/token");
        async move { Http::new().post_raw(&url, FORM, request).await }
    };
    let oldest = first_tokens[1]["refresh_token"].as_str().unwrap();
    assert_eq!(refresh_at(1, oldest).await.oauth_error(), "invalid_grant");
    assert_eq!(
        refresh_at(1, &rotated_refresh[1]).await.oauth_error(),
        "invalid_grant",
        "the reuse ended the family"
    );
    let other = refresh_at(2, &rotated_refresh[2]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());

    let tokens = received.iter().filter(|r| r.status == 200).count();
    let unavailable = received.iter().filter(|r| r.status == 503).count();
    println!(
        "failover: {CHAINS} chains, {tokens} token responses received, 0 lost, {unavailable} × 503; \
         pg_ctl stop -m immediate took {} ms, the first 503 {} ms after it began; no primary for \
         {} ms; pg_ctl promote took {} ms; the first token {} ms after the promotion ({} ms after \
         the kill); slowest answer {} ms; a grant revoked on the new primary refused by the guard \
         after {refused_after:?}",
        ms(stopped - killed),
        ms(first_503 - killed),
        ms(promoting - killed),
        ms(promoted - promoting),
        ms(recovery),
        ms(recovered - killed),
        ms(slowest),
    );
    handle.shutdown(Duration::from_secs(1)).await;
    drop(clusters);
}

/// A pooled connection that goes silent (its host vanished without closing it, as a machine that
/// loses power does): the call answers 503 once `statement_timeout` and a margin have passed, the
/// connection leaves the pool, and the next call connects afresh. Runs with the other tests.
#[tokio::test]
async fn a_pooled_connection_that_goes_silent_is_dropped_and_its_call_answered_503() {
    let db_name = format!("gw_{}", random_suffix());
    let relay = FreezingRelay::start(&db_name, "oauth-gateway").await;
    let gw = Gateway::start_with(Options {
        database_url_override: Some(relay.database_url.clone()),
        db_name: Some(db_name),
        pool_size: 1,
        adjust: Some(Box::new(|config| {
            config.statement_timeout = Duration::from_secs(1);
        })),
        ..Options::default()
    })
    .await;
    let client_id = gw.public_client(&["mcp"]).await;
    let tokens = gw
        .code_flow(&Authorization::new(&client_id))
        .await
        .ok_json();
    let refresh = tokens["refresh_token"].as_str().unwrap();

    relay.freeze();
    let started = Instant::now();
    let silent = tokio::time::timeout(Duration::from_secs(10), gw.refresh(&client_id, refresh))
        .await
        .expect("the call hung on a connection that went silent");
    silent.assert_temporarily_unavailable();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "503 after {took:?}");
    // Nothing reached the database, so the token is still the live one.
    let fresh = gw.refresh(&client_id, refresh).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text());
    println!("a silent connection answered 503 after {took:?}");
    gw.stop().await;
}
