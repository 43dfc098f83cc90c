//! Releases: the install scripts of released versions never change, and a database created at an
//! earlier release updates to the current one (`ALTER EXTENSION oauth_provider UPDATE`) without
//! losing a row, with every code, refresh token, secret and registration token it issued still
//! working, and ends up with the same catalog as a fresh install.
//!
//! These tests speak raw SQL on purpose: they exercise the earlier releases' functions, which
//! the shared helpers (written against the current API) need not keep matching.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::tokio_postgres::{self, Client};
use oauth_provider_tests::{TempDb, dump_and_restore, unique};
use sha2::{Digest, Sha256};

/// Every released install script and the SHA-256 it was released with. A release adds a line; no
/// line ever changes.
const RELEASED: [(&str, &str); 3] = [
    (
        "oauth_provider--0.1.0.sql",
        "e2f27e8c9670288164748663ffe02311ddab77a3d18c3e8c000ccbf1d3d82908",
    ),
    (
        "oauth_provider--0.2.0.sql",
        "d2d686f89adf1cc06bafe9cd11dc5b4bbd40898dc95fa1078a3a632c9bd8d58d",
    ),
    (
        "oauth_provider--0.3.0.sql",
        "f60bc389d37770cd6d28744758c9e286686d67a997df2b7774c831ac3bb61199",
    ),
];

/// The releases a user may still be on, from each of which the upgrade tests start.
const EARLIER_RELEASES: [&str; 3] = ["0.1.0", "0.2.0", "0.3.0"];

/// The release this tree builds (the workspace version, which pgrx uses as the extension version).
const CURRENT_RELEASE: &str = env!("CARGO_PKG_VERSION");

fn sql_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn released_install_scripts_never_change() {
    let released = sql_dir().join("released");
    let mut on_disk: Vec<String> = std::fs::read_dir(&released)
        .unwrap_or_else(|e| panic!("{}: {e}", released.display()))
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = RELEASED.iter().map(|(name, _)| name.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "sql/released holds exactly the released install scripts"
    );
    for (name, digest) in RELEASED {
        let text = std::fs::read(released.join(name)).unwrap();
        assert_eq!(
            sha256_hex(&text),
            digest,
            "{name} was released and must never change: ship the change as an upgrade script"
        );
    }
}

#[test]
fn every_released_version_has_an_upgrade_path_to_the_current_one() {
    let scripts: Vec<String> = std::fs::read_dir(sql_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| {
            name.strip_prefix("oauth_provider--")?
                .strip_suffix(".sql")
                .map(str::to_owned)
        })
        .collect();
    for (name, _) in RELEASED {
        let mut version = name
            .strip_prefix("oauth_provider--")
            .and_then(|n| n.strip_suffix(".sql"))
            .unwrap()
            .to_owned();
        let mut steps = 0;
        while version != CURRENT_RELEASE {
            let next = scripts
                .iter()
                .find_map(|s| s.strip_prefix(&format!("{version}--")))
                .unwrap_or_else(|| {
                    panic!("no upgrade script from {version} (towards {CURRENT_RELEASE})")
                });
            version = next.to_owned();
            steps += 1;
            assert!(steps < 100, "upgrade scripts form a cycle");
        }
    }
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = format!("{}{}", unique("verifier"), "x".repeat(40));
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

fn field<'a>(answer: &'a Value, name: &str) -> &'a str {
    answer[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {answer}"))
}

fn query_param(location: &str, name: &str) -> String {
    let url = url::Url::parse(location).unwrap_or_else(|e| panic!("{location}: {e}"));
    url.query_pairs()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {location}"))
}

async fn json_call(
    db: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Value {
    db.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

const REDIRECT: &str = "https://app.example/callback";

/// What a user of an earlier release has: clients, a grant with a live refresh family, an
/// unredeemed code, a dynamically registered client and its registration token, a pending device
/// authorization.
struct Issued {
    client_id: String,
    secret: String,
    code: String,
    code_verifier: String,
    refresh_token: String,
    registered_client_id: String,
    registration_access_token: String,
    machine_id: String,
    machine_secret: String,
    device_code: String,
    user_code: String,
    public_client_id: String,
}

async fn authorize(db: &Client, client_id: &str, user: &str) -> (String, Pkce) {
    let pkce = pkce();
    let params = json!({
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "mcp offline_access",
        "state": "s1",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    });
    let began = json_call(db, "SELECT oauth.begin_authorization($1)", &[&params]).await;
    let request_id = field(&began, "request_id").to_owned();
    let location: String = db
        .query_one("SELECT oauth.issue_code($1, $2)", &[&request_id, &user])
        .await
        .unwrap()
        .get(0);
    (query_param(&location, "code"), pkce)
}

async fn exchange(db: &Client, client_id: &str, secret: &str, code: &str, verifier: &str) -> Value {
    json_call(
        db,
        "SELECT oauth.exchange_code($1, $2, $3, $4, $5, NULL)",
        &[&client_id, &secret, &code, &verifier, &REDIRECT],
    )
    .await
}

async fn rotate(db: &Client, client_id: &str, secret: &str, refresh_token: &str) -> Value {
    json_call(
        db,
        "SELECT oauth.rotate_refresh_token($1, $2, $3, NULL, NULL)",
        &[&client_id, &secret, &refresh_token],
    )
    .await
}

async fn issue_at_earlier_release(db: &Client) -> Issued {
    db.batch_execute(
        "SELECT oauth.configure(issuer => 'https://upgrade.example', scopes_supported => '{mcp,offline_access,openid}', \
         registration_enabled => true)",
    )
    .await
    .unwrap();
    let row = db
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client('Upgraded app', $1, '{mcp,offline_access,openid}')",
            &[&vec![REDIRECT]],
        )
        .await
        .unwrap();
    let (client_id, secret): (String, String) = (row.get(0), row.get(1));

    let (code, pkce_for_refresh) = authorize(db, &client_id, "alice").await;
    let tokens = exchange(db, &client_id, &secret, &code, &pkce_for_refresh.verifier).await;
    let refresh_token = field(&tokens, "refresh_token").to_owned();
    // A second user whose code is issued but not yet redeemed when the update runs.
    let (code, pkce) = authorize(db, &client_id, "bob").await;

    let registered = json_call(
        db,
        "SELECT oauth.register_client($1)",
        &[&json!({
            "client_name": "Registered before the update",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
        })],
    )
    .await;

    let row = db
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client('Machine', '{}', '{mcp}', \
             grant_types => '{client_credentials}')",
            &[],
        )
        .await
        .unwrap();
    let (machine_id, machine_secret): (String, String) = (row.get(0), row.get(1));
    let machine = json_call(
        db,
        "SELECT oauth.client_credentials_grant($1, $2, NULL, NULL)",
        &[&machine_id, &machine_secret],
    )
    .await;
    field(&machine, "grant_id");

    let row = db
        .query_one(
            "SELECT client_id FROM oauth.create_client('Device', '{}', '{mcp}', 'none', \
             '{urn:ietf:params:oauth:grant-type:device_code,refresh_token}', 'native')",
            &[],
        )
        .await
        .unwrap();
    let public_client_id: String = row.get(0);
    let device = json_call(
        db,
        "SELECT oauth.begin_device_authorization($1, NULL, 'mcp', NULL)",
        &[&public_client_id],
    )
    .await;

    Issued {
        client_id,
        secret,
        code,
        code_verifier: pkce.verifier,
        refresh_token,
        registered_client_id: field(&registered, "client_id").to_owned(),
        registration_access_token: field(&registered, "registration_access_token").to_owned(),
        machine_id,
        machine_secret,
        device_code: field(&device, "device_code").to_owned(),
        user_code: field(&device, "user_code").to_owned(),
        public_client_id,
    }
}

/// Rows per table of schema oauth: what "nothing is lost" is checked against.
async fn row_counts(db: &Client) -> Vec<(String, i64)> {
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'oauth' AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut counts = Vec::new();
    for table in tables {
        let count: i64 = db
            .query_one(&format!("SELECT count(*) FROM oauth.{table}"), &[])
            .await
            .unwrap()
            .get(0);
        counts.push((table, count));
    }
    counts
}

/// The counts of the tables in `before` (tables a release adds start empty and are not compared).
async fn row_counts_of(db: &Client, before: &[(String, i64)]) -> Vec<(String, i64)> {
    row_counts(db)
        .await
        .into_iter()
        .filter(|(table, _)| before.iter().any(|(t, _)| t == table))
        .collect()
}

async fn extension_version(db: &Client) -> String {
    db.query_one(
        "SELECT extversion FROM pg_extension WHERE extname = 'oauth_provider'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn database_at_release(release: &str) -> TempDb {
    let db = TempDb::create_with(false).await;
    db.admin()
        .await
        .batch_execute(&format!(
            "CREATE EXTENSION oauth_provider VERSION '{release}'"
        ))
        .await
        .unwrap_or_else(|e| {
            panic!("CREATE EXTENSION at {release} (scripts/setup installs sql/released): {e:?}")
        });
    db
}

/// Everything issued before the update still works after it, through the current functions.
async fn assert_issued_still_works(db: &Client, issued: &Issued, what: &str) {
    let tokens = exchange(
        db,
        &issued.client_id,
        &issued.secret,
        &issued.code,
        &issued.code_verifier,
    )
    .await;
    assert!(
        tokens["refresh_token"].is_string(),
        "{what}: a code issued before redeems: {tokens}"
    );

    let introspected = json_call(
        db,
        "SELECT oauth.introspect($1, $2, $3, NULL, NULL)",
        &[&issued.client_id, &issued.secret, &issued.refresh_token],
    )
    .await;
    assert_eq!(
        introspected["active"],
        json!(true),
        "{what}: a refresh token issued before is active: {introspected}"
    );
    let history_before: i64 = db
        .query_one("SELECT count(*) FROM oauth.refresh_tokens", &[])
        .await
        .unwrap()
        .get(0);
    let rotated = rotate(db, &issued.client_id, &issued.secret, &issued.refresh_token).await;
    let successor = field(&rotated, "refresh_token").to_owned();
    // 0.3.0 rotates an earlier token into a chained one (it names its family; no row is added).
    assert_eq!(
        successor.len(),
        70,
        "{what}: a chained successor: {rotated}"
    );
    let rotated_again = rotate(db, &issued.client_id, &issued.secret, &successor).await;
    let history_after: i64 = db
        .query_one("SELECT count(*) FROM oauth.refresh_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        history_before, history_after,
        "{what}: rotation writes no token rows"
    );
    assert!(
        rotated_again["refresh_token"].is_string(),
        "{what}: its successor rotates too: {rotated_again}"
    );
    let replay = rotate(db, &issued.client_id, &issued.secret, &issued.refresh_token).await;
    assert_eq!(
        replay["error"],
        json!("invalid_grant"),
        "{what}: replaying the token issued before is still detected: {replay}"
    );

    let registration = json_call(
        db,
        "SELECT oauth.read_registration($1, $2)",
        &[
            &issued.registered_client_id,
            &issued.registration_access_token,
        ],
    )
    .await;
    assert_eq!(
        registration["client_id"],
        json!(issued.registered_client_id),
        "{what}: the registration access token still reads its registration: {registration}"
    );

    let machine = json_call(
        db,
        "SELECT oauth.client_credentials_grant($1, $2, NULL, NULL)",
        &[&issued.machine_id, &issued.machine_secret],
    )
    .await;
    assert!(
        machine["grant_id"].is_string(),
        "{what}: a client secret issued before still authenticates: {machine}"
    );

    let pending = db
        .query_one(
            "SELECT canonical_user_code FROM oauth.get_device_authorization($1)",
            &[&issued.user_code],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: the pending device authorization is there: {e:?}"));
    let canonical: String = pending.get(0);
    assert_eq!(canonical, issued.user_code.replace('-', ""));
    db.execute(
        "SELECT oauth.approve_device_authorization($1, 'carol')",
        &[&issued.user_code],
    )
    .await
    .unwrap();
    let polled = json_call(
        db,
        "SELECT oauth.poll_device_authorization($1, NULL, $2)",
        &[&issued.public_client_id, &issued.device_code],
    )
    .await;
    assert!(
        polled["refresh_token"].is_string(),
        "{what}: a device code issued before completes: {polled}"
    );
}

#[tokio::test]
async fn a_database_at_an_earlier_release_updates_losing_nothing_and_its_tokens_keep_working() {
    for release in EARLIER_RELEASES {
        updates_losing_nothing(release).await;
    }
}

async fn updates_losing_nothing(release: &str) {
    let source = database_at_release(release).await;
    let admin = source.admin().await;
    assert_eq!(extension_version(&admin).await, release);
    let issued = issue_at_earlier_release(&admin).await;
    let before = row_counts(&admin).await;

    admin
        .batch_execute("ALTER EXTENSION oauth_provider UPDATE")
        .await
        .unwrap_or_else(|e| panic!("ALTER EXTENSION oauth_provider UPDATE: {e:?}"));
    assert_eq!(extension_version(&admin).await, CURRENT_RELEASE);
    assert_eq!(
        row_counts_of(&admin, &before).await,
        before,
        "the update keeps every row of every table"
    );
    // What the update added answers for the data that was there.
    let settings = json_call(&admin, "SELECT oauth.settings()", &[]).await;
    assert_eq!(settings["issuer"], json!("https://upgrade.example"));
    assert!(settings["grant_types_supported"].is_array(), "{settings}");

    // pg_dump and restore of the updated database, then the tokens work in the copy as well.
    let restored = dump_and_restore(&source, "custom").await;
    let copy = restored.admin().await;
    assert_eq!(extension_version(&copy).await, CURRENT_RELEASE);
    assert_eq!(
        row_counts_of(&copy, &before).await,
        before,
        "the restored copy of the updated database has every row"
    );

    assert_issued_still_works(&admin, &issued, &format!("database updated from {release}")).await;
    assert_issued_still_works(
        &copy,
        &issued,
        &format!("restored copy of the database updated from {release}"),
    )
    .await;
}

/// The catalog of schema `oauth`: every function with its definition and privileges, every
/// column, constraint and index, and the extension's member count.
async fn catalog(db: &Client) -> Vec<String> {
    let queries = [
        "SELECT format('function %s: %s acl=%s', p.oid::regprocedure, pg_get_functiondef(p.oid), \
                (SELECT array_agg(a ORDER BY a::text) FROM unnest(coalesce(p.proacl, '{}')) a)) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'oauth'",
        "SELECT format('column %s.%s %s default=%s nullable=%s', table_name, column_name, data_type, \
                column_default, is_nullable) \
           FROM information_schema.columns WHERE table_schema = 'oauth'",
        "SELECT format('constraint %s on %s: %s', conname, conrelid::regclass, pg_get_constraintdef(oid)) \
           FROM pg_constraint WHERE connamespace = 'oauth'::regnamespace",
        "SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'oauth'",
        "SELECT format('table %s acl=%s', c.oid::regclass, \
                (SELECT array_agg(a ORDER BY a::text) FROM unnest(coalesce(c.relacl, '{}')) a)) \
           FROM pg_class c WHERE c.relnamespace = 'oauth'::regnamespace",
        "SELECT format('extension members: %s', count(*)) FROM pg_depend \
          WHERE refobjid = (SELECT oid FROM pg_extension WHERE extname = 'oauth_provider') AND deptype = 'e'",
    ];
    let mut lines = Vec::new();
    for query in queries {
        for row in db.query(query, &[]).await.unwrap() {
            lines.push(row.get::<_, String>(0));
        }
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn an_updated_database_has_the_catalog_of_a_fresh_install() {
    let fresh = TempDb::create().await;
    let fresh_admin = fresh.admin().await;
    assert_eq!(extension_version(&fresh_admin).await, CURRENT_RELEASE);
    let fresh = catalog(&fresh_admin).await;
    for release in EARLIER_RELEASES {
        let updated = database_at_release(release).await;
        let updated_admin = updated.admin().await;
        updated_admin
            .batch_execute("ALTER EXTENSION oauth_provider UPDATE")
            .await
            .unwrap_or_else(|e| {
                panic!("ALTER EXTENSION oauth_provider UPDATE from {release}: {e:?}")
            });
        let updated = catalog(&updated_admin).await;
        let only_updated: Vec<&String> = updated.iter().filter(|l| !fresh.contains(l)).collect();
        let only_fresh: Vec<&String> = fresh.iter().filter(|l| !updated.contains(l)).collect();
        assert!(
            only_updated.is_empty() && only_fresh.is_empty(),
            "the upgrade scripts from {release} must produce what a fresh install does\n\
             only after the update:\n{only_updated:#?}\nonly in a fresh install:\n{only_fresh:#?}"
        );
    }
}
