//! PgBouncer in transaction pooling mode between the gateway and PostgreSQL: every endpoint works
//! with `statement_cache = false` (no named prepared statements, which PgBouncer before 1.21
//! cannot carry across the server connections it hands out per transaction) and
//! `statement_timeout = 0` (no startup options, which PgBouncer refuses), while the revocation
//! feed LISTENs on its own direct connection (`feed_database_url`).
//!
//! The pooler is Debian's `pgbouncer` (scripts/setup installs it), started per test in a temporary
//! directory with two server connections for the gateway's eight, so calls of different gateway
//! connections share server sessions and any reliance on session state shows.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use serde_json::json;

/// Where scripts/setup's Debian package puts it; `OAUTH_TEST_PGBOUNCER` names another.
fn pgbouncer_binary() -> PathBuf {
    let path: PathBuf = std::env::var_os("OAUTH_TEST_PGBOUNCER")
        .map(Into::into)
        .unwrap_or_else(|| "/usr/sbin/pgbouncer".into());
    assert!(
        path.is_file(),
        "{} not found: these tests need PgBouncer (Debian package `pgbouncer`, which scripts/setup \
         installs; or set OAUTH_TEST_PGBOUNCER)",
        path.display()
    );
    path
}

/// A PgBouncer process in transaction pooling mode in front of the test cluster.
struct Bouncer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Bouncer {
    async fn start() -> Self {
        let binary = pgbouncer_binary();
        let target: tokio_postgres::Config = std::env::var("OAUTH_TEST_GATEWAY_DATABASE_URL")
            .expect("OAUTH_TEST_GATEWAY_DATABASE_URL must be set (scripts/test sets it)")
            .parse()
            .unwrap();
        let host = match &target.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("a TCP host for the test cluster, not {other:?}"),
        };
        let server_port = target.get_ports().first().copied().unwrap_or(5432);
        let user = target
            .get_user()
            .unwrap_or("oauth_gateway_login")
            .to_owned();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("oauth-pgbouncer-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        // Two server connections per database for the gateway's eight: sessions are shared.
        let ini = format!(
            "[databases]\n\
             * = host={host} port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 2\n\
             max_client_conn = 200\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).unwrap();
        std::fs::write(dir.join("userlist.txt"), format!("\"{user}\" \"\"\n")).unwrap();
        let mut command = Command::new(binary);
        // PgBouncer will not run as root; it drops to the cluster's owner, who must write its log.
        if is_root() {
            let owned = Command::new("chown")
                .args(["-R", "postgres:", &dir.display().to_string()])
                .status()
                .unwrap();
            assert!(owned.success(), "chown {}", dir.display());
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Self { child, port, dir };
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pgbouncer did not listen on {port}: {}",
                bouncer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bouncer
    }

    /// A connection string for `user` and `db_name` through the pooler.
    fn url(&self, user: &str, db_name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={db_name}",
            self.port
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

fn gateway_user() -> String {
    let target: tokio_postgres::Config = std::env::var("OAUTH_TEST_GATEWAY_DATABASE_URL")
        .unwrap()
        .parse()
        .unwrap();
    target.get_user().unwrap().to_owned()
}

/// A gateway whose pool goes through `bouncer` (its feed directly to the cluster, when
/// `statement_cache` is off), guarding an upstream that records what reaches it.
async fn gateway_behind(bouncer: &Bouncer, statement_cache: bool, upstream: String) -> Gateway {
    let db_name = format!("gw_{}", random_suffix());
    let direct = format!(
        "{} dbname={db_name}",
        std::env::var("OAUTH_TEST_GATEWAY_DATABASE_URL").unwrap()
    );
    Gateway::start_with(Options {
        database_url_override: Some(bouncer.url(&gateway_user(), &db_name)),
        db_name: Some(db_name),
        adjust: Some(Box::new(move |config| {
            config.statement_cache = statement_cache;
            config.statement_timeout = Duration::ZERO;
            config.feed_database_url = Some(direct);
        })),
        ..Options::guarding(upstream, &["mcp"])
    })
    .await
}

#[tokio::test]
async fn every_endpoint_works_through_pgbouncer_in_transaction_mode() {
    let bouncer = Bouncer::start().await;
    let upstream = RecordingUpstream::start().await;
    let gw = gateway_behind(&bouncer, false, upstream.url.clone()).await;
    let resource = gw.mcp_url();

    // Metadata and keys (the settings come from the database through the pooler).
    let metadata = gw.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata.ok_json()["issuer"], json!(gw.issuer));
    assert_eq!(
        gw.get("/.well-known/jwks.json").await.status,
        StatusCode::OK
    );

    // Dynamic registration, and reading the registration back (RFC 7591, 7592).
    let registered = gw
        .register(json!({
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "scope": "mcp openid",
            "client_name": "Through the pooler",
        }))
        .await
        .json_if(StatusCode::CREATED);
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let read_back = gw
        .http
        .get(
            registered["registration_client_uri"].as_str().unwrap(),
            &[(
                "authorization",
                &bearer(registered["registration_access_token"].as_str().unwrap()),
            )],
        )
        .await;
    assert_eq!(read_back.ok_json()["client_id"], json!(client_id));

    // Authorize, the consent page, the code exchange.
    let authorization = Authorization {
        resource: &resource,
        scope: "mcp openid",
        ..Authorization::new(&client_id)
    };
    let tokens = gw.code_flow(&authorization).await.ok_json();
    assert!(tokens["id_token"].is_string());

    // Refresh, several times, from parallel requests too (each a transaction of its own).
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let rotated = gw.refresh(&client_id, &refresh).await.ok_json();
        refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
    }
    let parallel = at_once(8, |_| {
        let (http, url, client_id, refresh) = (
            Http::new(),
            gw.url("/token"),
            client_id.clone(),
            refresh.clone(),
        );
        async move {
            http.token_at(&url, &TokenRequest::refresh(&client_id, &refresh))
                .await
                .ok_json()["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    })
    .await;
    assert!(parallel.iter().all(|t| *t == parallel[0]), "one successor");
    let access = gw.refresh(&client_id, &parallel[0]).await.ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Userinfo and introspection.
    let userinfo = gw
        .http
        .get(&gw.url("/userinfo"), &[("authorization", &bearer(&access))])
        .await;
    assert_eq!(userinfo.ok_json()["sub"], json!("alice"));
    let resource_server = gw.confidential_client(&["mcp"]).await.basic();
    let live = gw.introspect(&access, &resource_server).await;
    assert_eq!(live["active"], json!(true), "{live}");

    // The guard: a live token passes; the grant revoked in SQL is refused within a second,
    // through the feed's direct connection.
    gw.wait_synced(&resource, &access).await;
    let forwarded = upstream.count();
    let passed = gw
        .http
        .get(&resource, &[("authorization", &bearer(&access))])
        .await;
    assert_eq!(passed.status, StatusCode::OK, "{}", passed.text());
    assert_eq!(upstream.count(), forwarded + 1);
    gw.revoke_grant(live["grant_id"].as_str().unwrap()).await;
    gw.wait_refused(
        &resource,
        &access,
        Duration::from_secs(1),
        "the guard still accepted a token a second after its grant was revoked",
    )
    .await;
    assert_eq!(
        gw.introspect(&access, &resource_server).await,
        json!({"active": false})
    );

    // Revocation (RFC 7009) of a new family's refresh token, which then no longer refreshes.
    let tokens = gw.code_flow(&authorization).await.ok_json();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let revoked = gw
        .post("/revoke", &[("token", refresh), ("client_id", &client_id)])
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert_eq!(
        gw.refresh(&client_id, refresh).await.oauth_error(),
        "invalid_grant"
    );

    // The device flow's first step and page.
    let device_client = gw
        .create_client(&NewClient::machine("none", &[DEVICE_GRANT]))
        .await;
    let device = gw
        .post(
            "/device_authorization",
            &[("client_id", &device_client.id), ("scope", "mcp")],
        )
        .await
        .ok_json();
    let page = gw
        .http
        .get(device["verification_uri_complete"].as_str().unwrap(), &[])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());

    // Nothing PostgreSQL logged as a failure of the pooler's sessions.
    assert!(
        !bouncer.log().contains("prepared statement"),
        "{}",
        bouncer.log()
    );
    gw.stop().await;
}

/// Why `statement_cache = false` exists: with named statements, gateway connections sharing a
/// server session through the pooler trip over each other's statement names.
#[tokio::test]
async fn named_statements_fail_through_pgbouncer_in_transaction_mode() {
    let bouncer = Bouncer::start().await;
    let gw = gateway_behind(&bouncer, true, unreachable_upstream()).await;
    let statuses = at_once(16, |i| {
        let (http, url) = (Http::new(), gw.url("/register"));
        async move {
            let metadata = json!({"redirect_uris": [REDIRECT], "client_name": format!("c{i}")});
            http.post_raw(&url, "application/json", metadata.to_string())
                .await
                .status
        }
    })
    .await;
    assert!(
        statuses.contains(&StatusCode::INTERNAL_SERVER_ERROR),
        "named statements passed the pooler: {statuses:?}"
    );
    gw.stop().await;
}
