//! Browser sessions (sign-in through an upstream provider) and the step after /authorize:
//! start_session/get_session/end_session/list_user_sessions, and continue_authorization's
//! prompt=login|none, max_age and remembered consent, run by the gateway role.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

async fn start(gw: &Client, user: &str, auth_time_ago: &str) -> Value {
    scalar(
        gw,
        "SELECT oauth.start_session($1, 'https://idp.example', $2, now() - $3::text::interval,
                                    '{pwd}', '{\"email\": \"a@example.com\"}')",
        &[&user, &format!("sub-{user}"), &auth_time_ago],
    )
    .await
}

async fn get(gw: &Client, secret: &str) -> Option<Value> {
    scalar(gw, "SELECT oauth.get_session($1)", &[&secret]).await
}

async fn continue_with(
    gw: &Client,
    request_id: &str,
    secret: Option<&str>,
    remember: bool,
) -> Value {
    scalar(
        gw,
        "SELECT oauth.continue_authorization($1, $2, NULL, false, $3)",
        &[&request_id, &secret, &remember],
    )
    .await
}

#[tokio::test]
async fn a_session_is_found_by_its_secret_only_while_live_and_listed_for_its_user() {
    let gw = gateway().await;
    let admin = admin().await;
    let user = unique("user");
    let started = start(&gw, &user, "1 minute").await;
    let secret = str_field(&started, "secret").to_owned();
    let session_id = uuid_field(&started, "session_id");
    let stored: Vec<u8> = scalar(
        &admin,
        "SELECT secret_hash FROM oauth.browser_sessions WHERE session_id = $1",
        &[&session_id],
    )
    .await;
    assert_eq!(
        stored,
        sha256(&secret),
        "only the secret's digest is stored"
    );

    let found = get(&gw, &secret).await.expect("live session");
    assert_eq!(found["user_id"], json!(user));
    assert_eq!(found["upstream_subject"], json!(format!("sub-{user}")));
    assert_eq!(found["claims"]["email"], json!("a@example.com"));
    assert_eq!(found["amr"], json!(["pwd"]));
    assert!(get(&gw, "not-a-secret").await.is_none());

    let second = start(&gw, &user, "0 seconds").await;
    let listed: Vec<uuid::Uuid> = column(
        &gw,
        "SELECT session_id FROM oauth.list_user_sessions($1)",
        &[&user],
    )
    .await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], uuid_field(&second, "session_id"), "newest first");

    let ended: bool = scalar(&gw, "SELECT oauth.end_session($1)", &[&session_id]).await;
    assert!(ended);
    let again: bool = scalar(&gw, "SELECT oauth.end_session($1)", &[&session_id]).await;
    assert!(!again, "a session ends once");
    assert!(
        get(&gw, &secret).await.is_none(),
        "an ended session signs no one in"
    );

    // Expiry: the same secret a day later.
    let second_secret = str_field(&second, "secret").to_owned();
    let later: Option<Value> = scalar(
        &gw,
        "SELECT oauth.get_session($1, now() + interval '1 day')",
        &[&second_secret],
    )
    .await;
    assert!(later.is_none(), "sessions expire (12 hours by default)");

    let everywhere: i32 = scalar(&admin, "SELECT oauth.end_user_sessions($1)", &[&user]).await;
    assert_eq!(everywhere, 1);
    assert_eq!(
        row_count(&gw, "oauth.list_user_sessions($1)", &[&user]).await,
        0
    );
}

/// The sessions page's "Sign out" button: a user ends their own session only; another user's
/// session id ends nothing, and an ended or expired session is not ended twice.
#[tokio::test]
async fn a_user_ends_only_their_own_session() {
    let gw = gateway().await;
    let (alice, mallory) = (unique("alice"), unique("mallory"));
    let alices = start(&gw, &alice, "1 minute").await;
    let alices_id = uuid_field(&alices, "session_id");
    let end = |user: String, session_id: uuid::Uuid, at: &'static str| {
        let gw = &gw;
        async move {
            scalar::<bool>(
                gw,
                "SELECT oauth.end_user_session($1, $2, now() + $3::text::interval)",
                &[&user, &session_id, &at],
            )
            .await
        }
    };
    assert!(
        !end(mallory.clone(), alices_id, "0 seconds").await,
        "not mallory's"
    );
    assert!(
        get(&gw, str_field(&alices, "secret")).await.is_some(),
        "alice is still signed in"
    );
    assert!(
        !end(alice.clone(), alices_id, "1 day").await,
        "expired by then"
    );
    assert!(end(alice.clone(), alices_id, "0 seconds").await);
    assert!(get(&gw, str_field(&alices, "secret")).await.is_none());
    assert!(
        !end(alice.clone(), alices_id, "0 seconds").await,
        "ends once"
    );
    let mallorys = start(&gw, &mallory, "1 minute").await;
    assert!(!end(alice, uuid_field(&mallorys, "session_id"), "0 seconds").await);
    assert!(get(&gw, str_field(&mallorys, "secret")).await.is_some());
}

/// oauth.cleanup removes expired sessions at once and signed-out ones after the retention.
#[tokio::test]
async fn cleanup_removes_expired_sessions_and_signed_out_ones_after_the_retention() {
    let db = TempDb::create().await;
    let gw = db.gateway().await;
    let admin = db.admin().await;
    let user = unique("user");
    let live = uuid_field(&start(&gw, &user, "1 minute").await, "session_id");
    let signed_out = uuid_field(&start(&gw, &user, "1 minute").await, "session_id");
    let _: bool = scalar(&gw, "SELECT oauth.end_session($1)", &[&signed_out]).await;
    let sessions = |at: &'static str| {
        let admin = &admin;
        async move {
            let _: i64 = scalar(
                admin,
                "SELECT oauth.cleanup(now() + $1::text::interval)",
                &[&at],
            )
            .await;
            column::<uuid::Uuid>(
                admin,
                "SELECT session_id FROM oauth.browser_sessions ORDER BY created_at, session_id",
                &[],
            )
            .await
        }
    };
    let both = sessions("1 hour").await;
    assert_eq!(
        both.len(),
        2,
        "a live and a recently signed-out session stay"
    );
    assert!(both.contains(&live) && both.contains(&signed_out));
    // 12 hours later both expired: the live one is gone with its expiry.
    assert_eq!(sessions("13 hours").await, Vec::<uuid::Uuid>::new());
}

#[tokio::test]
async fn start_session_refuses_bad_input() {
    let gw = gateway().await;
    for (sql, what) in [
        (
            "SELECT oauth.start_session('', 'i', 's', now())",
            "empty user",
        ),
        (
            "SELECT oauth.start_session('u', 'i', 's', now() + interval '1 hour')",
            "future auth_time",
        ),
        (
            "SELECT oauth.start_session('u', 'i', 's', now(), '{}', '[]')",
            "claims not an object",
        ),
        (
            "SELECT oauth.start_session('u', 'i', 's', now(), '{}', '{}', interval '1 year')",
            "lifetime",
        ),
    ] {
        assert_sqlstate(gw.query(sql, &[]).await, "OA400", what);
    }
}

#[tokio::test]
async fn without_a_session_the_user_signs_in_and_prompt_none_answers_login_required() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let begun = Authorize {
        params: json!({"login_hint": "alice@example.com", "max_age": "600"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    let answer = continue_with(&gw, str_field(&begun, "request_id"), None, false).await;
    assert_eq!(answer["action"], json!("login"));
    assert_eq!(answer["login_hint"], json!("alice@example.com"));
    assert_eq!(answer["max_age"], json!(600));
    assert_eq!(answer["force"], json!(false));

    let silent = Authorize {
        params: json!({"prompt": "none", "state": "s1"}),
        ..Authorize::new(&client)
    };
    let begun = silent.begin(&gw).await;
    assert_ok(&begun, "prompt=none is accepted at begin_authorization");
    let answer = continue_with(&gw, str_field(&begun, "request_id"), None, false).await;
    assert_error(&answer, "login_required", "prompt=none without a session");
    let location = parse_redirect(str_field(&answer, "location"));
    assert_eq!(location.param("error"), "login_required");
    assert_eq!(location.param("state"), "s1");
    assert_eq!(location.param("iss"), issuer(&admin).await);
    assert_sqlstate(
        gw.query(
            "SELECT oauth.continue_authorization($1)",
            &[&str_field(&begun, "request_id")],
        )
        .await,
        "OA411",
        "the request ended",
    );
}

#[tokio::test]
async fn prompt_login_and_max_age_ask_an_older_session_to_sign_in_again() {
    let (_admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let user = unique("user");
    let old = start(&gw, &user, "2 hours").await;
    let old_secret = str_field(&old, "secret").to_owned();

    let plain = Authorize::new(&client).begin(&gw).await;
    let answer = continue_with(
        &gw,
        str_field(&plain, "request_id"),
        Some(&old_secret),
        false,
    )
    .await;
    assert_eq!(answer["action"], json!("consent"));
    assert_eq!(answer["user_id"], json!(user));

    let max_age = Authorize {
        params: json!({"max_age": "3600"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    let answer = continue_with(
        &gw,
        str_field(&max_age, "request_id"),
        Some(&old_secret),
        false,
    )
    .await;
    assert_eq!(answer["action"], json!("login"));
    assert_eq!(answer["force"], json!(true), "{answer}");

    let login = Authorize {
        params: json!({"prompt": "login"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    let request_id = str_field(&login, "request_id").to_owned();
    let answer = continue_with(&gw, &request_id, Some(&old_secret), false).await;
    assert_eq!(answer["action"], json!("login"));
    // Signed in again after the request arrived: the consent step, then a code whose grant
    // carries the new session's auth_time and claims.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let fresh = start(&gw, &user, "0 seconds").await;
    let fresh_secret = str_field(&fresh, "secret").to_owned();
    let answer = continue_with(&gw, &request_id, Some(&fresh_secret), false).await;
    assert_eq!(answer["action"], json!("consent"));
    let approved: Value = scalar(
        &gw,
        "SELECT oauth.continue_authorization($1, $2, NULL, true)",
        &[&request_id, &fresh_secret],
    )
    .await;
    assert_eq!(approved["action"], json!("redirect"));
    let code = parse_redirect(str_field(&approved, "location"))
        .param("code")
        .to_owned();
    assert!(!code.is_empty());
    let admin = admin().await;
    let (props, auth_time_matches): (Value, bool) = {
        let row = one_row(
            &admin,
            "SELECT g.props, g.auth_time = s.auth_time FROM oauth.grants g, oauth.browser_sessions s
              WHERE g.user_id = $1 AND g.revoked_at IS NULL AND s.session_id = $2",
            &[&user, &uuid_field(&fresh, "session_id")],
        )
        .await;
        (row.get(0), row.get(1))
    };
    assert_eq!(props["email"], json!("a@example.com"));
    assert!(auth_time_matches, "the grant's auth_time is the session's");
}

#[tokio::test]
async fn consent_is_remembered_only_when_enabled_covered_and_for_a_verifiable_client() {
    let (_admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let user = unique("user");
    let secret = str_field(&start(&gw, &user, "0 seconds").await, "secret").to_owned();
    // A first consent, through the consent step.
    let first = Authorize::new(&client).begin(&gw).await;
    let approved: Value = scalar(
        &gw,
        "SELECT oauth.continue_authorization($1, $2, NULL, true)",
        &[&str_field(&first, "request_id"), &secret],
    )
    .await;
    assert_eq!(approved["action"], json!("redirect"));

    let again = Authorize::new(&client).begin(&gw).await;
    let id = str_field(&again, "request_id").to_owned();
    assert_eq!(
        continue_with(&gw, &id, Some(&secret), false).await["action"],
        json!("consent"),
        "off: asked again"
    );
    let remembered = continue_with(&gw, &id, Some(&secret), true).await;
    assert_eq!(remembered["action"], json!("redirect"), "{remembered}");
    assert!(
        parse_redirect(str_field(&remembered, "location"))
            .param("code")
            .len()
            > 10
    );

    let wider = Authorize {
        params: json!({"scope": "openid mcp email"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    assert_eq!(
        continue_with(&gw, str_field(&wider, "request_id"), Some(&secret), true).await["action"],
        json!("consent"),
        "a scope the grant lacks"
    );
    let forced = Authorize {
        params: json!({"prompt": "consent"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    assert_eq!(
        continue_with(&gw, str_field(&forced, "request_id"), Some(&secret), true).await["action"],
        json!("consent"),
        "prompt=consent"
    );
    let none = Authorize {
        params: json!({"prompt": "none"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    assert_eq!(
        continue_with(&gw, str_field(&none, "request_id"), Some(&secret), true).await["action"],
        json!("redirect"),
        "prompt=none with a session and a covering grant"
    );
    let none = Authorize {
        params: json!({"prompt": "none", "scope": "openid mcp email"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    assert_error(
        &continue_with(&gw, str_field(&none, "request_id"), Some(&secret), true).await,
        "consent_required",
        "prompt=none needing consent",
    );

    // A loopback client: any local program could be it, so the page is always shown.
    let admin = admin().await;
    let native = create_client(&admin, ClientSpec::public_native()).await;
    let first = Authorize::new(&native).begin(&gw).await;
    let _: Value = scalar(
        &gw,
        "SELECT oauth.continue_authorization($1, $2, NULL, true)",
        &[&str_field(&first, "request_id"), &secret],
    )
    .await;
    let again = Authorize::new(&native).begin(&gw).await;
    assert_eq!(
        continue_with(&gw, str_field(&again, "request_id"), Some(&secret), true).await["action"],
        json!("consent"),
        "never remembered for a loopback client"
    );
}

#[tokio::test]
async fn a_user_named_by_a_trusted_proxy_continues_without_a_session() {
    let (_admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let begun = Authorize::new(&client).begin(&gw).await;
    let answer: Value = scalar(
        &gw,
        "SELECT oauth.continue_authorization($1, NULL, 'proxy-user')",
        &[&str_field(&begun, "request_id")],
    )
    .await;
    assert_eq!(answer["action"], json!("consent"));
    assert_eq!(answer["user_id"], json!("proxy-user"));
}
