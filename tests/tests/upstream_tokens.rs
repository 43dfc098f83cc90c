//! The upstream provider's sealed tokens (`sql/upstream_tokens.sql`), run by the gateway role:
//! stored for a live session only, linked to the grant consented in that session, replaced only
//! over the version read (compare-and-swap), forgotten with the session they came from, and
//! deleted when neither a live grant nor a live session may use them.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

/// A blob of the smallest possible sealed size and more: the database never looks inside.
fn blob(fill: u8) -> Vec<u8> {
    vec![fill; 40]
}

async fn session(gw: &Client, user: &str) -> (String, Uuid) {
    let started: Value = scalar(
        gw,
        "SELECT oauth.start_session($1, 'https://idp.example', $1, now())",
        &[&user],
    )
    .await;
    (
        str_field(&started, "secret").to_owned(),
        uuid_field(&started, "session_id"),
    )
}

async fn store(gw: &Client, set: Uuid, session: Uuid, sealed: &[u8]) -> Value {
    scalar(
        gw,
        "SELECT oauth.store_upstream_tokens($1, $2, 'default', $3, 'key-1')",
        &[&set, &session, &sealed],
    )
    .await
}

/// Consent in the session: the grant's id.
async fn consent(gw: &Client, client: &TestClient, secret: &str) -> Uuid {
    let begun = begin_authorization(gw, &authorize_params(client, &Pkce::new(), json!({}))).await;
    let answer: Value = scalar(
        gw,
        "SELECT oauth.continue_authorization($1, $2, NULL, true, false)",
        &[&str_field(&begun, "request_id"), &secret],
    )
    .await;
    assert_eq!(answer["action"], json!("redirect"), "{answer}");
    let user: String = scalar(
        &admin().await,
        "SELECT user_id FROM oauth.browser_sessions WHERE secret_hash = oauth.token_hash($1)",
        &[&secret],
    )
    .await;
    scalar(
        &admin().await,
        "SELECT grant_id FROM oauth.grants WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        &[&user, &client.id],
    )
    .await
}

async fn for_grant(gw: &Client, grant: Uuid) -> Option<(Uuid, String, Vec<u8>, i64)> {
    gw.query(
        "SELECT token_set_id, user_id, sealed, version FROM oauth.upstream_tokens_for_grant($1)",
        &[&grant],
    )
    .await
    .unwrap()
    .first()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

async fn sets_of(admin: &Client, user: &str) -> i64 {
    scalar(
        admin,
        "SELECT count(*) FROM oauth.upstream_tokens WHERE user_id = $1",
        &[&user],
    )
    .await
}

#[tokio::test]
async fn tokens_follow_the_session_into_its_grants_and_are_replaced_only_over_the_version_read() {
    let gw = gateway().await;
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let (secret, session_id) = session(&gw, &user).await;
    let set = Uuid::new_v4();

    let stored = store(&gw, set, session_id, &blob(1)).await;
    assert_ok(&stored, "stored");
    assert_eq!(stored["user_id"], json!(user), "the session names the user");
    assert_error(
        &store(&gw, set, session_id, &blob(1)).await,
        "invalid_request",
        "an id is used once",
    );
    assert_error(
        &store(&gw, Uuid::new_v4(), session_id, &[0u8; 5]).await,
        "invalid_request",
        "too small to be sealed",
    );
    assert_error(
        &store(&gw, Uuid::new_v4(), Uuid::new_v4(), &blob(1)).await,
        "invalid_request",
        "no such session",
    );

    let grant = consent(&gw, &client, &secret).await;
    let (found, owner, sealed, version) = for_grant(&gw, grant).await.expect("linked");
    assert_eq!(
        (found, owner.as_str(), sealed, version),
        (set, user.as_str(), blob(1), 1)
    );

    // One refresh at a time across gateways: a claim on the version read, until released,
    // replaced, or its lease runs out.
    let claim =
        "SELECT oauth.claim_upstream_refresh($1, $2, '15 seconds', now() + $3::text::interval)";
    let first: bool = scalar(&gw, claim, &[&set, &1i64, &"0 seconds"]).await;
    let second: bool = scalar(&gw, claim, &[&set, &1i64, &"1 second"]).await;
    let stale: bool = scalar(&gw, claim, &[&set, &0i64, &"1 minute"]).await;
    let after_lease: bool = scalar(&gw, claim, &[&set, &1i64, &"16 seconds"]).await;
    assert_eq!(
        (first, second, stale, after_lease),
        (true, false, false, true)
    );
    let released: bool = scalar(
        &gw,
        "SELECT oauth.release_upstream_refresh($1, 1, now() + interval '17 seconds')",
        &[&set],
    )
    .await;
    assert!(released);
    let again: bool = scalar(&gw, claim, &[&set, &1i64, &"18 seconds"]).await;
    assert!(again, "released: the next request may try");

    // Compare-and-swap: the version read wins once; a writer holding it afterwards loses.
    let replaced: Option<i64> = scalar(
        &gw,
        "SELECT oauth.replace_upstream_tokens($1, 1, $2, 'key-1')",
        &[&set, &blob(2)],
    )
    .await;
    assert_eq!(replaced, Some(2));
    let lost: Option<i64> = scalar(
        &gw,
        "SELECT oauth.replace_upstream_tokens($1, 1, $2, 'key-1')",
        &[&set, &blob(3)],
    )
    .await;
    assert_eq!(
        lost, None,
        "a refresh from version 1 cannot overwrite version 2"
    );
    assert_eq!(for_grant(&gw, grant).await.unwrap().2, blob(2));
    let stale_forget: bool =
        scalar(&gw, "SELECT oauth.forget_upstream_tokens($1, 1)", &[&set]).await;
    assert!(!stale_forget, "nor delete it");

    // Another client consented in the same session shares the set (one refresh token upstream).
    let other_client = confidential_client(&admin).await;
    let other_grant = consent(&gw, &other_client, &secret).await;
    assert_eq!(for_grant(&gw, other_grant).await.unwrap().0, set);

    // Revoking one grant unlinks it; the set stays for the other grant and the live session.
    let revoked: bool = scalar(&admin, "SELECT oauth.revoke_grant($1)", &[&grant]).await;
    assert!(revoked);
    assert!(for_grant(&gw, grant).await.is_none());
    assert_eq!(sets_of(&admin, &user).await, 1);
    // Ending the session leaves it to the live grant; revoking that one too deletes it.
    let ended: bool = scalar(&gw, "SELECT oauth.end_session($1)", &[&session_id]).await;
    assert!(ended);
    assert_eq!(sets_of(&admin, &user).await, 1);
    let _: bool = scalar(&admin, "SELECT oauth.revoke_grant($1)", &[&other_grant]).await;
    assert_eq!(
        sets_of(&admin, &user).await,
        0,
        "nothing may use them any more"
    );
}

#[tokio::test]
async fn a_refused_refresh_token_forgets_the_set_and_ends_its_session() {
    let gw = gateway().await;
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let (secret, session_id) = session(&gw, &user).await;
    let set = Uuid::new_v4();
    assert_ok(&store(&gw, set, session_id, &blob(1)).await, "stored");
    let grant = consent(&gw, &client, &secret).await;

    let forgotten: bool = scalar(&gw, "SELECT oauth.forget_upstream_tokens($1, 1)", &[&set]).await;
    assert!(forgotten);
    assert!(for_grant(&gw, grant).await.is_none());
    let live: Option<Value> = scalar(&gw, "SELECT oauth.get_session($1)", &[&secret]).await;
    assert!(live.is_none(), "the next authorization signs in again");
    let grant_live: bool = scalar(
        &admin,
        "SELECT revoked_at IS NULL FROM oauth.grants WHERE grant_id = $1",
        &[&grant],
    )
    .await;
    assert!(
        grant_live,
        "the grant itself is the user's consent, and stays"
    );
}

#[tokio::test]
async fn a_new_sign_in_brings_its_tokens_to_the_existing_grant() {
    let gw = gateway().await;
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let user = unique("user");
    let (first_secret, first_session) = session(&gw, &user).await;
    let first = Uuid::new_v4();
    assert_ok(&store(&gw, first, first_session, &blob(1)).await, "stored");
    let grant = consent(&gw, &client, &first_secret).await;
    let _: bool = scalar(&gw, "SELECT oauth.end_session($1)", &[&first_session]).await;

    let (second_secret, second_session) = session(&gw, &user).await;
    let second = Uuid::new_v4();
    assert_ok(
        &store(&gw, second, second_session, &blob(2)).await,
        "stored",
    );
    assert_eq!(
        consent(&gw, &client, &second_secret).await,
        grant,
        "the same grant"
    );
    assert_eq!(for_grant(&gw, grant).await.unwrap().0, second);
    let old: i64 = scalar(
        &admin,
        "SELECT count(*) FROM oauth.upstream_tokens WHERE token_set_id = $1",
        &[&first],
    )
    .await;
    assert_eq!(
        old, 0,
        "the first sign-in's set is used by nothing any more"
    );
}

/// oauth.cleanup: a set whose session expired and that no grant uses goes with the session; one a
/// live grant uses stays (the grant's MCP calls still need it), whatever became of its session.
#[tokio::test]
async fn cleanup_removes_sets_no_grant_uses_once_their_session_expired() {
    let db = TempDb::create().await;
    let (gw, admin) = (db.gateway().await, db.admin().await);
    let client = create_client(&admin, ClientSpec::default()).await;
    let (user, other) = (unique("user"), unique("user"));
    let (secret, used_session) = session(&gw, &user).await;
    assert_ok(
        &store(&gw, Uuid::new_v4(), used_session, &blob(1)).await,
        "store",
    );
    let begun = begin_authorization(&gw, &authorize_params(&client, &Pkce::new(), json!({}))).await;
    let answer: Value = scalar(
        &gw,
        "SELECT oauth.continue_authorization($1, $2, NULL, true, false)",
        &[&str_field(&begun, "request_id"), &secret],
    )
    .await;
    assert_eq!(answer["action"], json!("redirect"), "{answer}");
    let grant: Uuid = scalar(
        &admin,
        "SELECT grant_id FROM oauth.grants WHERE user_id = $1 AND revoked_at IS NULL",
        &[&user],
    )
    .await;
    let (_, unused_session) = session(&gw, &other).await;
    assert_ok(
        &store(&gw, Uuid::new_v4(), unused_session, &blob(2)).await,
        "store",
    );

    let _: i64 = scalar(
        &admin,
        "SELECT oauth.cleanup(now() + interval '1 hour')",
        &[],
    )
    .await;
    assert_eq!(
        (sets_of(&admin, &user).await, sets_of(&admin, &other).await),
        (1, 1),
        "sessions live"
    );
    let _: i64 = scalar(
        &admin,
        "SELECT oauth.cleanup(now() + interval '13 hours')",
        &[],
    )
    .await;
    assert_eq!(
        (sets_of(&admin, &user).await, sets_of(&admin, &other).await),
        (1, 0),
        "the grant's set stays; the other went with its session"
    );
    assert!(for_grant(&gw, grant).await.is_some());
}
