//! Signing keys kept in the database (`key_encryption_key`) and rotated with the
//! `oauth-gateway keys` commands while two gateways serve: the next key is published before it
//! signs, both gateways switch to it by themselves, a relying party that cached the JWKS before
//! the switch verifies the new tokens, tokens signed before it stay valid at the guard and at
//! introspection, the old key cannot be dropped while they may live, and a forced drop (after a
//! compromise) makes them fail everywhere.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use oauth_gateway::keyring::Kek;
use serde_json::Value;

/// Runs `oauth-gateway keys …` against the gateway's database as its administrator.
fn keys_command(gw: &Gateway, kek: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_oauth-gateway"))
        .arg("keys")
        .args(args)
        .env(
            "OAUTH_ADMIN_DATABASE_URL",
            format!(
                "{} dbname={}",
                std::env::var("OAUTH_TEST_DATABASE_URL").expect("OAUTH_TEST_DATABASE_URL"),
                gw.db_name
            ),
        )
        .env("OAUTH_KEY_ENCRYPTION_KEY", kek)
        .output()
        .expect("run oauth-gateway keys")
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "oauth-gateway keys failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn kid_of(token: &str) -> String {
    jwt_segment(token, 0)["kid"].as_str().unwrap().to_owned()
}

/// Verifies `token` with a JWKS as a relying party holds it (no refetch).
fn verifies_with(jwks: &Value, token: &str) -> bool {
    let kid = kid_of(token);
    let Some(jwk) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
    else {
        return false;
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

#[tokio::test]
async fn keys_rotate_across_gateways_without_breaking_a_token_or_a_cached_jwks() {
    let upstream = RecordingUpstream::start().await;
    let gw = Gateway::start_with(Options::guarding(upstream.url.clone(), &["mcp"])).await;
    let kek = Kek::generate();

    // The deployment's first key: no relying party can have cached a JWKS without it.
    let first = succeeded(&keys_command(
        &gw,
        &kek,
        &["add", "--alg", "ES256", "--lead", "0", "--promote"],
    ));
    assert!(first.contains("promoted"), "{first}");

    let shared_keys = |config: &mut oauth_gateway::config::Config| {
        config.keys = Vec::new();
        config.key_encryption_key = Some(kek.clone());
        config.keys_reload_interval = Duration::from_millis(500);
        config.jwks_max_age = Duration::from_secs(2);
    };
    let (one, one_base) = gw.second_with(shared_keys).await;
    let (two, two_base) = gw.second_with(shared_keys).await;

    let machine = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    let auth = machine.basic();
    let resource = gw.mcp_url();
    let token_from = async |base: &str| {
        let resp = gw
            .http
            .token_at(
                &format!("{base}/token"),
                &TokenRequest {
                    grant_type: "client_credentials",
                    authorization: &auth,
                    scope: "mcp",
                    resource: &resource,
                    ..TokenRequest::default()
                },
            )
            .await;
        resp.ok_json()["access_token"].as_str().unwrap().to_owned()
    };
    let jwks_of = async |base: &str| {
        let resp = gw
            .http
            .get(&format!("{base}/.well-known/jwks.json"), &[])
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(
            resp.header("cache-control"),
            Some("public, max-age=2"),
            "cacheable for jwks_max_age"
        );
        resp.json()
    };
    let introspected = async |base: &str, token: &str| {
        gw.http
            .post_form(
                &format!("{base}/introspect"),
                &[("token", token)],
                &[("authorization", &auth)],
            )
            .await
            .json()["active"]
            .clone()
    };

    let old_token = token_from(&one_base).await;
    let old_kid = kid_of(&old_token);
    assert_eq!(
        kid_of(&token_from(&two_base).await),
        old_kid,
        "one key for both"
    );
    let before = jwks_of(&one_base).await;
    assert_eq!(kids(&before), [old_kid.clone()]);
    gw.wait_synced(&format!("{one_base}/mcp"), &old_token).await;

    // A lead shorter than a cached JWKS can live is refused once a key is in use.
    let refused = keys_command(
        &gw,
        &kek,
        &[
            "add",
            "--alg",
            "ES256",
            "--lead",
            "1",
            "--jwks-max-age",
            "2",
            "--keys-reload-interval",
            "1",
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--lead 3"));

    // The next key, published with a lead of 4 s (2 s of caching, 1 s of reload, a margin).
    let added = succeeded(&keys_command(
        &gw,
        &kek,
        &[
            "add",
            "--alg",
            "ES256",
            "--lead",
            "4",
            "--jwks-max-age",
            "2",
            "--keys-reload-interval",
            "1",
        ],
    ));
    let new_kid = added
        .split_whitespace()
        .nth(3)
        .expect("added ES256 key <kid>")
        .to_owned();
    let published = Instant::now();
    assert_ne!(new_kid, old_kid);
    // Published on both gateways within a reload; the relying party caches this set.
    let cached = loop {
        let (a, b) = (jwks_of(&one_base).await, jwks_of(&two_base).await);
        if kids(&a).len() == 2 && kids(&b).len() == 2 {
            break a;
        }
        assert!(
            published.elapsed() < Duration::from_secs(3),
            "next key not published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(kids(&cached).contains(&new_kid));
    assert_eq!(
        kid_of(&token_from(&one_base).await),
        old_kid,
        "published, not signing"
    );

    let promoted = succeeded(&keys_command(&gw, &kek, &["promote", &new_kid]));
    assert!(promoted.contains("signs from"), "{promoted}");
    // Both gateways switch by themselves once its lead has passed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (new_one, new_two) = loop {
        let (a, b) = (token_from(&one_base).await, token_from(&two_base).await);
        if kid_of(&a) == new_kid && kid_of(&b) == new_kid {
            break (a, b);
        }
        assert!(Instant::now() < deadline, "the promoted key never signed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        published.elapsed() >= Duration::from_secs(4),
        "signed before its lead ran out"
    );
    assert!(
        verifies_with(&cached, &new_one) && verifies_with(&cached, &new_two),
        "a JWKS cached before the switch verifies the new key's tokens"
    );
    assert!(!verifies_with(&before, &new_one), "(the check can fail)");

    // Tokens signed before the switch stay valid: at introspection and at the guard.
    assert_eq!(introspected(&two_base, &old_token).await, true);
    let guarded = gw
        .http
        .get(
            &format!("{two_base}/mcp"),
            &[("authorization", &bearer(&old_token))],
        )
        .await;
    assert_eq!(guarded.status, StatusCode::OK);
    assert!(kids(&jwks_of(&two_base).await).contains(&old_kid));

    let listed = succeeded(&keys_command(&gw, &kek, &["list"]));
    let state_of = |kid: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(kid))
            .and_then(|l| l.split('\t').nth(2))
            .map(str::to_owned)
    };
    assert_eq!(state_of(&old_kid).as_deref(), Some("retired"), "{listed}");
    assert_eq!(state_of(&new_kid).as_deref(), Some("current"), "{listed}");

    // Not droppable while its tokens may live; forced (a leaked key), its tokens fail everywhere.
    let early = keys_command(&gw, &kek, &["drop", &old_kid]);
    assert!(!early.status.success());
    let early = String::from_utf8_lossy(&early.stderr);
    assert!(early.contains("may be in use until"), "{early}");
    succeeded(&keys_command(&gw, &kek, &["drop", &old_kid, "--force"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while kids(&jwks_of(&one_base).await).contains(&old_kid)
        || kids(&jwks_of(&two_base).await).contains(&old_kid)
    {
        assert!(
            Instant::now() < deadline,
            "the dropped key stayed published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(introspected(&one_base, &old_token).await, false);
    gw.wait_refused(
        &format!("{two_base}/mcp"),
        &old_token,
        Duration::from_secs(2),
        "a token of the dropped key still passed the guard",
    )
    .await;
    assert_eq!(introspected(&one_base, &new_one).await, true);

    one.shutdown(Duration::from_secs(1)).await;
    two.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_gateway_refuses_to_start_with_another_key_encryption_key_or_no_current_key() {
    let gw = Gateway::start().await;
    let kek = Kek::generate();
    let with = |kek: String| {
        move |config: &mut oauth_gateway::config::Config| {
            config.keys = Vec::new();
            config.key_encryption_key = Some(kek);
        }
    };
    let build = async |kek: String| {
        let mut config = gw.config.clone();
        with(kek)(&mut config);
        oauth_gateway::build(config).await.err()
    };
    let none = build(kek.clone()).await.expect("no key in the database");
    assert!(none.contains("no signing key is current"), "{none}");
    succeeded(&keys_command(
        &gw,
        &kek,
        &["add", "--lead", "0", "--promote"],
    ));
    assert!(build(kek.clone()).await.is_none(), "starts with its key");
    let wrong = build(Kek::generate()).await.expect("another kek");
    assert!(wrong.contains("sealed with key-encryption key"), "{wrong}");
    // The database holds the private key sealed: useless without the gateways' key.
    let row = gw
        .admin
        .query_one(
            "SELECT kid, sealed_private_key FROM oauth.signing_keys",
            &[],
        )
        .await
        .unwrap();
    let (kid, sealed): (String, Vec<u8>) = (row.get(0), row.get(1));
    use oauth_gateway::keys::{Alg, SigningKey};
    assert!(SigningKey::from_pkcs8(&sealed, Alg::ES256, None).is_err());
    assert!(SigningKey::from_pkcs8(&sealed[12..], Alg::ES256, None).is_err());
    let opened = Kek::parse(&kek).unwrap().open(&kid, &sealed).unwrap();
    assert_eq!(
        SigningKey::from_pkcs8(&opened, Alg::ES256, None)
            .unwrap()
            .kid,
        kid,
        "the kid is the key's thumbprint"
    );
    gw.stop().await;
}
