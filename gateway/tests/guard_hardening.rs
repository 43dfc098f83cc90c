//! The guard against hostile requests and a failing database: family revocations that stay in
//! their family, paths that climb out of a route, a revocation feed that dies, and identities the
//! upstream must be able to trust.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const LOGIN: &str = "https://app.example/login";
/// The feed connection's `application_name` (db/feed.rs), as `pg_stat_activity` shows it.
const FEED: &str = "oauth-gateway revocation feed";

/// A gateway guarding `/mcp` (scope `mcp`) in front of `upstream`, with consent completed by the
/// application's login page in SQL so tests choose the user and the grant's props.
async fn guarding(upstream: &RecordingUpstream) -> Gateway {
    Gateway::start_with(Options {
        login_url: Some(LOGIN.into()),
        ..Options::guarding(upstream.url.clone(), &["mcp"])
    })
    .await
}

/// One login of a user in a client: its tokens (a family of their own under the user's grant).
struct Session {
    access: String,
    refresh: String,
    client_id: String,
}

/// Authorizes `client_id` for the guarded resource and completes consent for `user` with `props`:
/// the code and the authorization it redeems.
async fn consented_code<'a>(
    gw: &Gateway,
    client_id: &'a str,
    resource: &'a str,
    user: &str,
    props: Value,
) -> (Authorization<'a>, String) {
    let authorization = Authorization {
        scope: "mcp offline_access",
        resource,
        ..Authorization::new(client_id)
    };
    let location = gw.authorize(&authorization).await.location();
    assert!(location.starts_with(&format!("{LOGIN}?")), "{location}");
    let request_id = query_of(&location)["request_id"].clone();
    let redirect: String = gw
        .sql_value(
            "SELECT oauth.issue_code($1, $2, NULL, $3)",
            &[&request_id, &user, &props],
        )
        .await;
    (authorization, query_of(&redirect)["code"].clone())
}

async fn login(gw: &Gateway, client_id: &str, user: &str, props: Value) -> Session {
    let resource = gw.mcp_url();
    let (authorization, code) = consented_code(gw, client_id, &resource, user, props).await;
    let tokens = gw
        .token(&TokenRequest::redeem(&authorization, &code))
        .await
        .ok_json();
    Session {
        access: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh: tokens["refresh_token"].as_str().unwrap().to_owned(),
        client_id: client_id.to_owned(),
    }
}

async fn guard_status(gw: &Gateway, token: &str) -> StatusCode {
    gw.http
        .get(&gw.mcp_url(), &[("authorization", &bearer(token))])
        .await
        .status
}

/// RFC 7009 revocation of a session's refresh token by its public client: its family ends.
async fn log_out(gw: &Gateway, session: &Session) {
    let resp = gw
        .post(
            "/revoke",
            &[
                ("token", &session.refresh),
                ("client_id", &session.client_id),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

fn claim(gw: &Gateway, token: &str, name: &str) -> String {
    gw.claims(token)[name].as_str().unwrap().to_owned()
}

/// Asserts that within a second the guard and introspection agree on `token`: the guard serves it
/// exactly when introspection calls it active.
async fn assert_agree(gw: &Gateway, resource_server: &str, token: &str, what: &str) {
    let started = Instant::now();
    loop {
        let active = gw.introspect(token, resource_server).await["active"] == json!(true);
        let status = guard_status(gw, token).await;
        let served = status == StatusCode::OK;
        if served == active {
            assert!(
                served || status == StatusCode::UNAUTHORIZED,
                "{what}: {status}"
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: the guard answers {status} to a token introspection calls active={active}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn revoking_one_family_leaves_the_grants_other_families_passing_the_guard_and_active() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let resource_server = gw.confidential_client(&["mcp"]).await.basic();
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let laptop = login(&gw, &client_id, "bob", json!({})).await;
    let phone = login(&gw, &client_id, "bob", json!({})).await;
    assert_eq!(
        claim(&gw, &laptop.access, "grant_id"),
        claim(&gw, &phone.access, "grant_id"),
        "two logins of one user in one client share the grant"
    );
    assert_ne!(
        claim(&gw, &laptop.access, "family_id"),
        claim(&gw, &phone.access, "family_id")
    );
    gw.wait_synced(&gw.mcp_url(), &phone.access).await;

    log_out(&gw, &laptop).await;
    gw.wait_refused(
        &gw.mcp_url(),
        &laptop.access,
        Duration::from_secs(1),
        "a logged-out family still passes the guard",
    )
    .await;
    assert_agree(&gw, &resource_server, &laptop.access, "logged out").await;
    assert_eq!(guard_status(&gw, &phone.access).await, StatusCode::OK);
    assert_agree(&gw, &resource_server, &phone.access, "the other family").await;

    // A replayed code rightly revokes the family it issued, and only that one.
    let resource = gw.mcp_url();
    let (authorization, code) = consented_code(&gw, &client_id, &resource, "bob", json!({})).await;
    let stolen = gw
        .token(&TokenRequest::redeem(&authorization, &code))
        .await
        .ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = gw.token(&TokenRequest::redeem(&authorization, &code)).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.text());
    gw.wait_refused(
        &gw.mcp_url(),
        &stolen,
        Duration::from_secs(1),
        "a replayed code's family still passes the guard",
    )
    .await;
    assert_eq!(guard_status(&gw, &phone.access).await, StatusCode::OK);
    assert_agree(&gw, &resource_server, &phone.access, "after a replay").await;
    assert_agree(&gw, &resource_server, &stolen, "the replayed family").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_family_revocation_takes_effect_within_a_second_while_a_sibling_family_is_busy() {
    let upstream = RecordingUpstream::start().await;
    let gw = std::sync::Arc::new(guarding(&upstream).await);
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let busy = login(&gw, &client_id, "bob", json!({})).await;
    let leaving = login(&gw, &client_id, "bob", json!({})).await;
    gw.wait_synced(&gw.mcp_url(), &busy.access).await;
    assert_eq!(guard_status(&gw, &leaving.access).await, StatusCode::OK);

    // The sibling keeps calling (and the grant's props cached) throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let (gw, stop, token) = (gw.clone(), stop.clone(), busy.access.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                statuses.push(guard_status(&gw, &token).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    log_out(&gw, &leaving).await;
    gw.wait_refused(
        &gw.mcp_url(),
        &leaving.access,
        Duration::from_secs(1),
        "a revoked family passed the guard a second later",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let statuses = caller.await.unwrap();
    assert!(
        statuses.len() > 10 && statuses.iter().all(|s| *s == StatusCode::OK),
        "the busy sibling family was refused: {statuses:?}"
    );
    Gateway::stop_shared(gw).await;
}

#[tokio::test]
async fn guard_and_introspection_agree_on_every_token_through_a_random_sequence_of_revocations() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let resource_server = gw.confidential_client(&["mcp"]).await.basic();
    let clients = [
        gw.public_client(&["mcp", "offline_access"]).await,
        gw.public_client(&["mcp", "offline_access"]).await,
    ];
    let mut sessions = Vec::new();
    for client_id in &clients {
        for _ in 0..2 {
            sessions.push(login(&gw, client_id, "bob", json!({})).await);
        }
    }
    gw.wait_synced(&gw.mcp_url(), &sessions[0].access).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0a1d);
    for step in 0..30 {
        let what = match rng.gen_range(0..100) {
            0..45 => {
                let session = &sessions[rng.gen_range(0..sessions.len())];
                log_out(&gw, session).await;
                "a family revoked"
            }
            45..60 => {
                let session = &sessions[rng.gen_range(0..sessions.len())];
                gw.revoke_grant(&claim(&gw, &session.access, "grant_id"))
                    .await;
                "a grant revoked"
            }
            _ => {
                let client_id = &clients[rng.gen_range(0..clients.len())];
                sessions.push(login(&gw, client_id, "bob", json!({})).await);
                "a new login"
            }
        };
        for (i, session) in sessions.iter().enumerate() {
            let case = format!("step {step} ({what}), session {i}");
            assert_agree(&gw, &resource_server, &session.access, &case).await;
        }
    }
    gw.stop().await;
}

#[tokio::test]
async fn dot_segments_and_encoded_separators_never_reach_the_upstream_and_plain_paths_arrive_unchanged()
 {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let token = login(&gw, &client_id, "bob", json!({})).await.access;
    gw.wait_synced(&gw.mcp_url(), &token).await;
    let send = |path: &str| {
        let url = format!("{}{path}", gw.base);
        let token = token.clone();
        let gw = &gw;
        async move {
            gw.http
                .get(&url, &[("authorization", &bearer(&token))])
                .await
        }
    };

    for (path, arrives_as) in [
        ("/mcp", "/mcp"),
        ("/mcp/", "/mcp/"),
        ("/mcp/a/b?x=1", "/mcp/a/b?x=1"),
        ("/mcp/a%20b?next=/../x", "/mcp/a%20b?next=/../x"),
        ("/mcp/a/../b", "/mcp/b"),
        ("/mcp/./a", "/mcp/a"),
    ] {
        let before = upstream.count();
        let resp = send(path).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
        let received = upstream.received();
        assert_eq!(received.len(), before + 1, "{path}");
        assert_eq!(received[before].target, arrives_as, "{path}");
    }

    let climbing = [
        "/mcp/../x",
        "/mcp/%2e%2e/x",
        "/mcp/%2E%2E/x",
        "/mcp/.%2e/x",
        "/mcp/..%2fx",
        "/mcp/..%2Fx",
        "/mcp/..%5cx",
        "/mcp/..%5Cx",
        "/mcp/a%2fb",
        "/mcp/x/../../y",
        "/mcp/./../x",
        "/mcp/..",
        "/mcp/..;/x",
    ];
    for path in climbing {
        let before = upstream.count();
        let resp = send(path).await;
        assert_eq!(
            (resp.status, resp.oauth_error()),
            (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            "{path}"
        );
        assert_eq!(upstream.count(), before, "{path} reached the upstream");
    }
    gw.stop().await;
}

/// How long a revocation may take to reach a gateway whose feed is live (a NOTIFY's round trip),
/// far below what a reconnection takes.
const NOTIFICATION_DELAY: Duration = Duration::from_millis(100);

/// Terminates the gateway's feed connection to `gw`'s database; true when there was one.
async fn kill_feed(gw: &Gateway, killer: &tokio_postgres::Client) -> bool {
    killer
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
              WHERE application_name = $1 AND datname = $2",
            &[&FEED, &gw.db_name],
        )
        .await
        .map(|row| row.get::<_, i64>(0) > 0)
        .unwrap_or(false)
}

#[tokio::test]
async fn a_killed_revocation_feed_makes_the_guard_refuse_until_it_has_resynchronised() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let session = login(&gw, &client_id, "bob", json!({})).await;
    gw.wait_synced(&gw.mcp_url(), &session.access).await;
    assert_eq!(guard_status(&gw, &session.access).await, StatusCode::OK);

    // The feed is killed again and again for 1.5 s (a failover, an idle-session killer); the
    // grant is revoked in the middle of it.
    let killer = gw.admin_connection().await;
    let killing_from = Instant::now();
    let mut revoked_at = None;
    let mut served_after_revocation = Vec::new();
    while killing_from.elapsed() < Duration::from_millis(1500) {
        kill_feed(&gw, &killer).await;
        if revoked_at.is_none() && killing_from.elapsed() > Duration::from_millis(500) {
            gw.revoke_grant(&claim(&gw, &session.access, "grant_id"))
                .await;
            revoked_at = Some(Instant::now());
        }
        let asked_at = Instant::now();
        let status = guard_status(&gw, &session.access).await;
        if let Some(revoked_at) = revoked_at
            && status == StatusCode::OK
            && asked_at.duration_since(revoked_at) > NOTIFICATION_DELAY
        {
            served_after_revocation.push(asked_at.duration_since(revoked_at));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        served_after_revocation.is_empty(),
        "a revoked grant was served while the feed was down, {served_after_revocation:?} after its revocation"
    );
    gw.wait_refused(
        &gw.mcp_url(),
        &session.access,
        Duration::from_secs(3),
        "the guard did not resynchronise after the feed came back",
    )
    .await;
    let resp = gw
        .http
        .get(
            &gw.mcp_url(),
            &[("authorization", &bearer(&session.access))],
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

#[tokio::test]
async fn a_silently_dead_revocation_feed_is_noticed_and_its_missed_revocations_recovered() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let session = login(&gw, &client_id, "bob", json!({})).await;
    // A second gateway whose feed runs through a relay that can freeze it without closing it.
    let relay = FreezingRelay::start(&gw.db_name, FEED).await;
    let mut config = gw.config.clone();
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.database_url = relay.database_url.clone();
    let second = oauth_gateway::serve(oauth_gateway::build(config).await.unwrap())
        .await
        .unwrap();
    let via_second = format!("http://127.0.0.1:{port}/mcp");
    gw.wait_synced(&via_second, &session.access).await;
    assert_eq!(
        gw.http
            .get(&via_second, &[("authorization", &bearer(&session.access))])
            .await
            .status,
        StatusCode::OK
    );

    relay.freeze();
    gw.revoke_grant(&claim(&gw, &session.access, "grant_id"))
        .await;
    gw.wait_refused(
        &via_second,
        &session.access,
        Duration::from_secs(6),
        "a revocation the frozen feed never delivered is still not known",
    )
    .await;
    second.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_upstream_can_tell_a_client_credentials_subject_from_a_user() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let user = login(&gw, &client_id, "bob", json!({})).await.access;
    gw.wait_synced(&gw.mcp_url(), &user).await;
    let machine = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    let basic = machine.basic();
    let resource = gw.mcp_url();
    let own = gw
        .token(&TokenRequest {
            grant_type: "client_credentials",
            scope: "mcp",
            resource: &resource,
            authorization: &basic,
            ..TokenRequest::default()
        })
        .await
        .ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();

    for (token, subject, subject_type) in [
        (&user, "bob", "user"),
        (&own, machine.id.as_str(), "client"),
    ] {
        assert_eq!(guard_status(&gw, token).await, StatusCode::OK);
        let received = upstream.received().pop().unwrap();
        assert_eq!(received.headers["x-oauth-subject"], subject);
        assert_eq!(received.headers["x-oauth-subject-type"], subject_type);
    }
    gw.stop().await;
}

#[tokio::test]
async fn forwarding_headers_a_client_sends_never_reach_the_upstream() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let token = login(&gw, &client_id, "bob", json!({})).await.access;
    gw.wait_synced(&gw.mcp_url(), &token).await;
    let resp = gw
        .http
        .get(
            &gw.mcp_url(),
            &[
                ("authorization", &bearer(&token)),
                ("x-forwarded-for", "203.0.113.66"),
                ("forwarded", "for=203.0.113.66;proto=https"),
                ("x-real-ip", "203.0.113.66"),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let received = upstream.received().pop().unwrap();
    for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let values: Vec<_> = received.headers.get_all(name).iter().collect();
        assert!(
            values
                .iter()
                .all(|v| !v.to_str().unwrap_or("").contains("203.0.113.66")),
            "{name}: {values:?}"
        );
    }
    assert_eq!(
        received.headers["x-forwarded-for"], "127.0.0.1",
        "the address the gateway was reached from"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_identity_that_is_not_a_valid_header_value_is_refused_never_forwarded_without_it() {
    let upstream = RecordingUpstream::start().await;
    let gw = guarding(&upstream).await;
    let client_id = gw.public_client(&["mcp", "offline_access"]).await;
    let plain = login(&gw, &client_id, "bob", json!({})).await.access;
    gw.wait_synced(&gw.mcp_url(), &plain).await;

    let ringing = login(
        &gw,
        &client_id,
        "bob\u{7}\r\nx-oauth-subject: alice",
        json!({}),
    )
    .await;
    let before = upstream.count();
    let resp = gw
        .http
        .get(
            &gw.mcp_url(),
            &[("authorization", &bearer(&ringing.access))],
        )
        .await;
    assert_eq!(
        (resp.status, resp.oauth_error()),
        (StatusCode::UNAUTHORIZED, "invalid_token".to_owned()),
        "{}",
        resp.text()
    );
    assert!(
        resp.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer ") && c.contains("invalid_token"))
    );
    assert_eq!(upstream.count(), before, "forwarded without its subject");

    // Props are JSON, which can always be written as a header value: they arrive whole.
    let props = json!({"name": "José \u{1}", "team": "ünïcode"});
    let accented = login(&gw, &client_id, "carol", props.clone()).await.access;
    assert_eq!(guard_status(&gw, &accented).await, StatusCode::OK);
    let received = upstream.received().pop().unwrap();
    let forwarded = received
        .headers
        .get("x-oauth-props")
        .expect("the props header")
        .to_str()
        .expect("a visible-ASCII header value");
    assert_eq!(serde_json::from_str::<Value>(forwarded).unwrap(), props);
    assert_eq!(received.headers["x-oauth-subject"], "carol");
    gw.stop().await;
}
