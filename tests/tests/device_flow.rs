//! RFC 8628 in SQL: codes, the user's decision, polling discipline (time passed as `now`), single
//! redemption under concurrency, expiry and cleanup.

use oauth_provider_tests::*;
use serde_json::Value;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// `seconds` after 2030-01-01T00:00:00Z (within January), as a timestamptz literal.
fn at(seconds: i64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    format!(
        "2030-01-{:02} {:02}:{:02}:{:02}+00",
        days + 1,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

async fn device_client(db: &tokio_postgres::Client, with_refresh: bool) -> TestClient {
    let mut grant_types = vec![DEVICE_GRANT.to_string()];
    if with_refresh {
        grant_types.push("refresh_token".into());
    }
    create_client(
        db,
        ClientSpec {
            grant_types,
            ..ClientSpec::public_native()
        },
    )
    .await
}

async fn begin(
    db: &tokio_postgres::Client,
    client: &TestClient,
    scope: Option<&str>,
    now: &str,
) -> Value {
    db.query_one(
        "SELECT oauth.begin_device_authorization($1, $2, $3, NULL, $4::text::timestamptz)",
        &[&client.id, &client.secret(), &scope, &now],
    )
    .await
    .unwrap()
    .get(0)
}

async fn poll(
    db: &tokio_postgres::Client,
    client: &TestClient,
    device_code: &str,
    now: &str,
) -> Value {
    db.query_one(
        "SELECT oauth.poll_device_authorization($1, $2, $3, $4::text::timestamptz)",
        &[&client.id, &client.secret(), &device_code, &now],
    )
    .await
    .unwrap()
    .get(0)
}

async fn approve(
    db: &tokio_postgres::Client,
    user_code: &str,
    user: &str,
    now: &str,
) -> Result<uuid::Uuid, tokio_postgres::Error> {
    db.query_one(
        "SELECT oauth.approve_device_authorization($1, $2, now => $3::text::timestamptz)",
        &[&user_code, &user, &now],
    )
    .await
    .map(|r| r.get(0))
}

#[tokio::test]
async fn polling_faster_than_the_interval_slows_the_device_down_by_five_seconds_each_time() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let started = begin(&gw, &client, Some("mcp"), &at(0)).await;
    assert_ok(&started, "begin");
    assert_eq!(started["interval"], 5);
    assert_eq!(started["expires_in"], 600);
    let code = str_field(&started, "device_code").to_owned();

    assert_error(
        &poll(&gw, &client, &code, &at(0)).await,
        "authorization_pending",
        "first poll",
    );
    assert_error(
        &poll(&gw, &client, &code, &at(3)).await,
        "slow_down",
        "3 s after",
    );
    // The interval is now 10 s: 8 s later is still too early, and makes it 15.
    assert_error(
        &poll(&gw, &client, &code, &at(11)).await,
        "slow_down",
        "8 s after, interval 10",
    );
    assert_error(
        &poll(&gw, &client, &code, &at(26)).await,
        "authorization_pending",
        "15 s after, interval 15",
    );
    let interval: i32 = admin
        .query_one(
            "SELECT poll_interval FROM oauth.device_authorizations WHERE device_code_hash = $1",
            &[&sha256(&code)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(interval, 15);
}

#[tokio::test]
async fn an_approved_device_code_gives_tokens_once_and_a_replay_revokes_them() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, true).await;
    let started = begin(&gw, &client, Some("mcp openid"), &at(0)).await;
    let (code, user_code) = (
        str_field(&started, "device_code").to_owned(),
        str_field(&started, "user_code").to_owned(),
    );
    assert!(
        user_code.len() == 9 && &user_code[4..5] == "-",
        "{user_code}"
    );

    // The verification page finds the code however the user types it.
    let typed = format!(" {} ", user_code.to_lowercase().replace('-', " "));
    let shown = gw
        .query_one("SELECT client_id, scopes FROM oauth.get_device_authorization($1, $2::text::timestamptz)", &[&typed, &at(5)])
        .await
        .unwrap();
    assert_eq!(shown.get::<_, String>(0), client.id);
    assert_eq!(
        shown.get::<_, Vec<String>>(1),
        vec!["mcp".to_string(), "openid".to_string()]
    );
    let user = unique("user");
    assert_sqlstate(
        gw.query_one("SELECT oauth.approve_device_authorization($1, $2, '{mcp,email}', now => $3::text::timestamptz)", &[&user_code, &user, &at(5)]).await,
        "OA405",
        "more than requested",
    );
    let grant_id = approve(&gw, &typed, &user, &at(6)).await.unwrap();
    assert_sqlstate(
        approve(&gw, &user_code, &user, &at(7)).await,
        "OA411",
        "decided already",
    );

    let tokens = poll(&gw, &client, &code, &at(8)).await;
    assert_ok(&tokens, "poll after approval");
    assert_eq!(uuid_field(&tokens, "grant_id"), grant_id);
    assert_eq!(str_field(&tokens, "user_id"), user);
    assert!(tokens["refresh_token"].is_string());
    let family = uuid_field(&tokens, "family_id");
    assert!(list_user_grant(&admin, &user, grant_id).await);

    assert_error(
        &poll(&gw, &client, &code, &at(20)).await,
        "invalid_grant",
        "replayed device code",
    );
    let row = family_row(&admin, family).await;
    assert!(row.revoked, "the replay revoked the family");
    assert_eq!(row.revoked_reason.as_deref(), Some("device_code_replayed"));
}

async fn list_user_grant(admin: &tokio_postgres::Client, user: &str, grant_id: uuid::Uuid) -> bool {
    admin
        .query("SELECT grant_id FROM oauth.list_user_grants($1)", &[&user])
        .await
        .unwrap()
        .iter()
        .any(|r| r.get::<_, uuid::Uuid>(0) == grant_id)
}

#[tokio::test]
async fn denial_expiry_foreign_clients_and_revoked_grants_each_get_their_error() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let other = device_client(&admin, false).await;

    let denied = begin(&gw, &client, None, &at(0)).await;
    gw.execute(
        "SELECT oauth.deny_device_authorization($1, $2::text::timestamptz)",
        &[&str_field(&denied, "user_code"), &at(1)],
    )
    .await
    .unwrap();
    assert_error(
        &poll(&gw, &client, str_field(&denied, "device_code"), &at(10)).await,
        "access_denied",
        "denied",
    );
    assert_error(
        &poll(&gw, &other, str_field(&denied, "device_code"), &at(20)).await,
        "invalid_grant",
        "another client's code",
    );

    let expired = begin(&gw, &client, None, &at(0)).await;
    assert_error(
        &poll(&gw, &client, str_field(&expired, "device_code"), &at(601)).await,
        "expired_token",
        "after expires_in",
    );
    assert_sqlstate(
        approve(&gw, str_field(&expired, "user_code"), "u", &at(601)).await,
        "OA411",
        "approving an expired code",
    );

    let revoked = begin(&gw, &client, None, &at(0)).await;
    let grant_id = approve(
        &gw,
        str_field(&revoked, "user_code"),
        &unique("user"),
        &at(1),
    )
    .await
    .unwrap();
    admin
        .execute("SELECT oauth.revoke_grant($1)", &[&grant_id])
        .await
        .unwrap();
    assert_error(
        &poll(&gw, &client, str_field(&revoked, "device_code"), &at(10)).await,
        "invalid_grant",
        "grant revoked before the poll",
    );

    assert_error(
        &poll(&gw, &client, "no-such-code", &at(10)).await,
        "invalid_grant",
        "unknown code",
    );
    let code_only = confidential_client(&admin).await;
    let refused = gw
        .query_one(
            "SELECT oauth.begin_device_authorization($1, $2, NULL, NULL)",
            &[&code_only.id, &code_only.secret()],
        )
        .await
        .unwrap()
        .get::<_, Value>(0);
    assert_error(
        &refused,
        "unauthorized_client",
        "client without the device grant",
    );
    let scope = begin(&gw, &client, Some("admin"), &at(0)).await;
    assert_error(&scope, "invalid_scope", "scope outside the client's");
}

#[tokio::test]
async fn twenty_connections_polling_one_approved_code_get_exactly_one_token_response() {
    let admin = admin().await;
    let client = device_client(&admin, true).await;
    let started = begin(&admin, &client, None, &at(0)).await;
    approve(
        &admin,
        str_field(&started, "user_code"),
        &unique("user"),
        &at(1),
    )
    .await
    .unwrap();
    let code = str_field(&started, "device_code").to_owned();
    let mut connections = Vec::new();
    for _ in 0..20 {
        connections.push(gateway().await);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(connections.len()));
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|db| {
            let (client, code, barrier) = (client.clone(), code.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                poll(&db, &client, &code, &at(10)).await
            })
        })
        .collect();
    let mut successes = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.get("error").is_none() {
            successes += 1;
        } else {
            assert_error(&answer, "invalid_grant", "a losing poll");
        }
    }
    assert_eq!(successes, 1);
}

#[tokio::test]
async fn cleanup_removes_device_codes_once_they_expire() {
    // Its own database: cleanup at a future `now` would remove other tests' live rows.
    let db = TempDb::create().await;
    let (admin, gw) = (db.admin().await, db.gateway().await);
    let client = device_client(&admin, false).await;
    begin(&gw, &client, None, &at(0)).await;
    let cleanup = |now: String| {
        let admin = &admin;
        async move {
            admin
                .query_one("SELECT oauth.cleanup($1::text::timestamptz)", &[&now])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(cleanup(at(599)).await, 0, "still pending");
    assert_eq!(cleanup(at(600)).await, 1);
    let left: i64 = admin
        .query_one("SELECT count(*) FROM oauth.device_authorizations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
