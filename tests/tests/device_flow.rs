//! RFC 8628 in SQL: codes, the user's decision, polling discipline (time passed as `now`), single
//! redemption under concurrency, expiry and cleanup.

use oauth_provider_tests::*;
use serde_json::Value;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
async fn device_client(db: &Client, with_refresh: bool) -> TestClient {
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

async fn begin(db: &Client, client: &TestClient, scope: Option<&str>, now: &str) -> Value {
    scalar(
        &db,
        "SELECT oauth.begin_device_authorization($1, $2, $3, NULL, $4::text::timestamptz)",
        &[&client.id, &client.secret(), &scope, &now],
    )
    .await
}

async fn poll(db: &Client, client: &TestClient, device_code: &str, now: &str) -> Value {
    scalar(
        &db,
        "SELECT oauth.poll_device_authorization($1, $2, $3, $4::text::timestamptz)",
        &[&client.id, &client.secret(), &device_code, &now],
    )
    .await
}

async fn approve(
    db: &Client,
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
    let interval: i32 = scalar(
        &admin,
        "SELECT poll_interval FROM oauth.device_authorizations WHERE device_code_hash = $1",
        &[&sha256(&code)],
    )
    .await;
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
    let shown = one_row(
        &gw,
        "SELECT client_id, scopes FROM oauth.get_device_authorization($1, $2::text::timestamptz)",
        &[&typed, &at(5)],
    )
    .await;
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

async fn list_user_grant(admin: &Client, user: &str, grant_id: uuid::Uuid) -> bool {
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
    execute(
        &gw,
        "SELECT oauth.deny_device_authorization($1, $2::text::timestamptz)",
        &[&str_field(&denied, "user_code"), &at(1)],
    )
    .await;
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
    execute(&admin, "SELECT oauth.revoke_grant($1)", &[&grant_id]).await;
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
    let refused = scalar::<Value>(
        &gw,
        "SELECT oauth.begin_device_authorization($1, $2, NULL, NULL)",
        &[&code_only.id, &code_only.secret()],
    )
    .await;
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
            scalar::<i64>(
                &admin,
                "SELECT oauth.cleanup($1::text::timestamptz)",
                &[&now],
            )
            .await
        }
    };
    // Counted in the table: the same cleanup also removes this database's events, which are
    // past their retention at these times.
    let left = async || -> i64 { row_count(&admin, "oauth.device_authorizations", &[]).await };
    cleanup(at(599)).await;
    assert_eq!(left().await, 1, "still pending");
    assert!(cleanup(at(600)).await >= 1);
    assert_eq!(left().await, 0);
}

async fn get_device(db: &Client, typed: &str, now: &str) -> Result<String, tokio_postgres::Error> {
    db.query_one(
        "SELECT client_id FROM oauth.get_device_authorization($1, $2::text::timestamptz)",
        &[&typed, &now],
    )
    .await
    .map(|r| r.get(0))
}

async fn deny(db: &Client, user_code: &str, now: &str) -> Result<u64, tokio_postgres::Error> {
    db.execute(
        "SELECT oauth.deny_device_authorization($1, $2::text::timestamptz)",
        &[&user_code, &now],
    )
    .await
}

#[tokio::test]
async fn user_codes_are_eight_consonants_shown_as_two_groups_of_four() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let alphabet = "BCDFGHJKLMNPQRSTVWXZ";
    let mut seen = std::collections::HashSet::new();
    for _ in 0..25 {
        let started = begin(&gw, &client, None, &at(0)).await;
        assert_ok(&started, "begin");
        assert_eq!(started["expires_in"], 600, "{started}");
        assert_eq!(started["interval"], 5, "{started}");
        assert_eq!(str_field(&started, "device_code").len(), 43);
        let user_code = str_field(&started, "user_code");
        let (left, right) = user_code
            .split_once('-')
            .unwrap_or_else(|| panic!("no dash in {user_code}"));
        assert!(
            left.len() == 4
                && right.len() == 4
                && left
                    .chars()
                    .chain(right.chars())
                    .all(|c| alphabet.contains(c)),
            "{user_code}"
        );
        assert!(seen.insert(user_code.to_owned()), "repeated {user_code}");
        let stored: String = scalar(
            &admin,
            "SELECT user_code FROM oauth.device_authorizations WHERE device_code_hash = $1",
            &[&sha256(str_field(&started, "device_code"))],
        )
        .await;
        assert_eq!(stored, format!("{left}{right}"), "stored without the dash");
    }
}

#[tokio::test]
async fn the_verification_page_finds_a_code_however_the_user_types_it() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let started = begin(&gw, &client, None, &at(0)).await;
    let user_code = str_field(&started, "user_code");
    let (left, right) = user_code.split_once('-').unwrap();
    for typed in [
        user_code.to_owned(),
        user_code.to_lowercase(),
        format!("{left}{right}"),
        format!("{}{}", left.to_lowercase(), right),
        format!("{left} {right}"),
        format!("  {left}-{right}  "),
        format!("{}-{}", &user_code[..2], &user_code[2..].replace('-', "")),
        format!("{left}--{right}"),
        format!("{left}\t{right}"),
    ] {
        assert_eq!(
            get_device(&gw, &typed, &at(1)).await.unwrap(),
            client.id,
            "typed {typed:?}"
        );
    }
    for typed in [
        format!("{left}{}", &right[..3]),
        format!("{left}{right}B"),
        format!("{right}{left}"),
        String::new(),
    ] {
        if typed == format!("{left}{right}") {
            continue; // swapped halves are the same code when both halves are equal
        }
        assert_sqlstate(get_device(&gw, &typed, &at(1)).await, "OA411", &typed);
    }
    assert_sqlstate(
        get_device(&gw, user_code, &at(600)).await,
        "OA411",
        "after expiry",
    );
}

#[tokio::test]
async fn a_client_without_refresh_token_gets_only_an_access_token_from_the_device_flow() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let started = begin(&gw, &client, Some("mcp"), &at(0)).await;
    let user = unique("user");
    approve(&gw, str_field(&started, "user_code"), &user, &at(3))
        .await
        .unwrap();
    let tokens = poll(&gw, &client, str_field(&started, "device_code"), &at(5)).await;
    assert_ok(&tokens, "poll");
    assert!(tokens["refresh_token"].is_null(), "{tokens}");
    assert_eq!(str_field(&tokens, "scope"), "mcp");
    assert_eq!(str_field(&tokens, "user_id"), user);
    assert_eq!(str_field(&tokens, "client_id"), client.id);
    let family = family_row(&admin, uuid_field(&tokens, "family_id")).await;
    assert!(!family.revoked);
    assert_eq!(family.token_count, 0, "no refresh token was stored");
}

#[tokio::test]
async fn polling_at_the_interval_is_pending_and_slow_down_names_the_new_interval() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let code = str_field(&begin(&gw, &client, None, &at(0)).await, "device_code").to_owned();
    assert_error(
        &poll(&gw, &client, &code, &at(0)).await,
        "authorization_pending",
        "first",
    );
    assert_error(
        &poll(&gw, &client, &code, &at(5)).await,
        "authorization_pending",
        "exactly 5 s later",
    );
    let slow = poll(&gw, &client, &code, &at(9)).await;
    assert_error(&slow, "slow_down", "4 s later");
    assert_eq!(slow["interval"], 10, "{slow}");
    assert_error(
        &poll(&gw, &client, &code, &at(19)).await,
        "authorization_pending",
        "after waiting the new interval",
    );
    assert_error(
        &poll(&gw, &client, &code, &at(29)).await,
        "authorization_pending",
        "the interval stays 10 s",
    );
    let faster = poll(&gw, &client, &code, &at(30)).await;
    assert_error(&faster, "slow_down", "1 s later");
    assert_eq!(faster["interval"], 15, "{faster}");

    // Once approved, the next poll gets the tokens whatever the interval.
    let user_code: String = scalar(
        &admin,
        "SELECT user_code FROM oauth.device_authorizations WHERE device_code_hash = $1",
        &[&sha256(&code)],
    )
    .await;
    approve(&gw, &user_code, &unique("user"), &at(31))
        .await
        .unwrap();
    assert_ok(
        &poll(&gw, &client, &code, &at(32)).await,
        "poll after approval",
    );
}

#[tokio::test]
async fn decided_or_expired_codes_cannot_be_decided_again() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let user = unique("user");

    let approved = begin(&gw, &client, None, &at(0)).await;
    let approved_code = str_field(&approved, "user_code");
    approve(&gw, approved_code, &user, &at(1)).await.unwrap();
    assert_sqlstate(
        get_device(&gw, approved_code, &at(2)).await,
        "OA411",
        "shown after approval",
    );
    assert_sqlstate(
        deny(&gw, approved_code, &at(2)).await,
        "OA411",
        "deny after approve",
    );
    assert_sqlstate(
        approve(&gw, approved_code, &user, &at(2)).await,
        "OA411",
        "approve twice",
    );

    let denied = begin(&gw, &client, None, &at(0)).await;
    let denied_code = str_field(&denied, "user_code");
    deny(&gw, denied_code, &at(1)).await.unwrap();
    assert_sqlstate(
        approve(&gw, denied_code, &user, &at(2)).await,
        "OA411",
        "approve after deny",
    );
    assert_sqlstate(deny(&gw, denied_code, &at(2)).await, "OA411", "deny twice");
    assert_sqlstate(
        get_device(&gw, denied_code, &at(2)).await,
        "OA411",
        "shown after denial",
    );

    let expired = begin(&gw, &client, None, &at(0)).await;
    let expired_code = str_field(&expired, "user_code");
    assert_sqlstate(
        deny(&gw, expired_code, &at(600)).await,
        "OA411",
        "deny at expiry",
    );
    assert_sqlstate(
        approve(&gw, expired_code, &user, &at(600)).await,
        "OA411",
        "approve at expiry",
    );
    assert_sqlstate(
        deny(&gw, "BCDF-GHJK", &at(1)).await,
        "OA411",
        "unknown code",
    );
    assert_error(
        &poll(&gw, &client, str_field(&expired, "device_code"), &at(600)).await,
        "expired_token",
        "polled at expiry",
    );
    // An approved code that was not polled in time has expired too.
    let late = begin(&gw, &client, None, &at(0)).await;
    approve(&gw, str_field(&late, "user_code"), &user, &at(1))
        .await
        .unwrap();
    assert_error(
        &poll(&gw, &client, str_field(&late, "device_code"), &at(700)).await,
        "expired_token",
        "approved but polled after expiry",
    );
}

#[tokio::test]
async fn approval_grants_a_non_empty_subset_of_the_requested_scopes() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = device_client(&admin, false).await;
    let started = begin(&gw, &client, Some("mcp profile"), &at(0)).await;
    let user_code = str_field(&started, "user_code");
    let user = unique("user");
    for (scopes, what) in [
        (vec!["mcp", "email"], "more than requested"),
        (vec![], "nothing"),
    ] {
        assert_sqlstate(
            gw.query_one(
                "SELECT oauth.approve_device_authorization($1, $2, $3, now => $4::text::timestamptz)",
                &[&user_code, &user, &scopes, &at(1)],
            )
            .await,
            "OA405",
            what,
        );
    }
    assert_sqlstate(
        gw.query_one(
            "SELECT oauth.approve_device_authorization($1, '', now => $2::text::timestamptz)",
            &[&user_code, &at(1)],
        )
        .await,
        "OA400",
        "empty user id",
    );
    // The refusals left the code pending: the user can still approve part of it.
    let grant_id: uuid::Uuid = scalar(
        &gw,
        "SELECT oauth.approve_device_authorization($1, $2, '{profile}', '{\"tier\": \"pro\"}', $3::text::timestamptz)",
        &[&user_code, &user, &at(2)],
    )
    .await;
    let tokens = poll(&gw, &client, str_field(&started, "device_code"), &at(5)).await;
    assert_eq!(str_field(&tokens, "scope"), "profile");
    assert_eq!(uuid_field(&tokens, "grant_id"), grant_id);
    assert_eq!(tokens["props"], serde_json::json!({"tier": "pro"}));
    let event: i64 = row_count(
        &admin,
        "oauth.events WHERE kind = 'consent_granted' AND grant_id = $1
                AND detail->>'flow' = 'device'",
        &[&grant_id],
    )
    .await;
    assert_eq!(event, 1);

    // A second device authorization of the same user widens the one live grant.
    let again = begin(&gw, &client, Some("mcp"), &at(10)).await;
    let same = approve(&gw, str_field(&again, "user_code"), &user, &at(11))
        .await
        .unwrap();
    assert_eq!(same, grant_id, "one live grant per user and client");
}

#[tokio::test]
async fn device_requests_authenticate_the_client_and_check_its_resources() {
    let (admin, gw) = (admin().await, gateway().await);
    let confidential = create_client(
        &admin,
        ClientSpec {
            grant_types: vec![DEVICE_GRANT.into()],
            allowed_resources: Some(vec!["https://tv.example/mcp".into()]),
            ..ClientSpec::default()
        },
    )
    .await;
    let begin_with = |secret: Option<String>, resource: Option<&'static str>| {
        let (gw, id) = (&gw, confidential.id.clone());
        async move {
            scalar::<Value>(
                &gw,
                "SELECT oauth.begin_device_authorization($1, $2, NULL, $3, $4::text::timestamptz)",
                &[&id, &secret, &resource, &at(0)],
            )
            .await
        }
    };
    let secret = confidential.secret.clone();
    assert_error(&begin_with(None, None).await, "invalid_client", "no secret");
    assert_error(
        &begin_with(Some("wrong".into()), None).await,
        "invalid_client",
        "wrong secret",
    );
    assert_error(
        &begin_with(secret.clone(), Some("https://other.example/mcp")).await,
        "invalid_target",
        "resource not allowed",
    );
    assert_error(
        &begin_with(secret.clone(), Some("tv.example/mcp")).await,
        "invalid_target",
        "malformed resource",
    );
    let started = begin_with(secret.clone(), Some("https://tv.example/mcp")).await;
    assert_ok(&started, "allowed resource");
    let shown = gw
        .query_one(
            "SELECT resource FROM oauth.get_device_authorization($1, $2::text::timestamptz)",
            &[&str_field(&started, "user_code"), &at(1)],
        )
        .await
        .unwrap()
        .get::<_, Option<String>>(0);
    assert_eq!(shown.as_deref(), Some("https://tv.example/mcp"));
    approve(
        &gw,
        str_field(&started, "user_code"),
        &unique("user"),
        &at(1),
    )
    .await
    .unwrap();
    let code = str_field(&started, "device_code");
    let wrong = TestClient {
        secret: Some("wrong".into()),
        ..confidential.clone()
    };
    assert_error(
        &poll(&gw, &wrong, code, &at(5)).await,
        "invalid_client",
        "poll with a wrong secret",
    );
    assert_error(
        &poll(&gw, &confidential, "", &at(5)).await,
        "invalid_request",
        "empty device code",
    );
    let tokens = poll(&gw, &confidential, code, &at(6)).await;
    assert_ok(&tokens, "poll with the secret");
    assert_eq!(str_field(&tokens, "resource"), "https://tv.example/mcp");

    // A public client may not present a secret.
    let public = device_client(&admin, false).await;
    let with_secret = TestClient {
        secret: Some("anything".into()),
        ..public
    };
    assert_error(
        &begin(&gw, &with_secret, None, &at(0)).await,
        "invalid_client",
        "public client with a secret",
    );
}
