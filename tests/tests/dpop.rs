//! DPoP bindings kept by the extension (RFC 9449 §5): a public client's refresh family is bound to
//! the key of the proof that came with the code exchange, and only a proof by that key rotates it;
//! a client registered with `dpop_bound_access_tokens` gets nothing without a proof; the
//! deployment switch. (The proofs themselves are checked by the gateway: tests/clients/dpop.test.mjs.)

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::tokio_postgres::Client;
use oauth_provider_tests::*;

/// Two RFC 7638 thumbprints (their shape is all the extension checks).
const KEY_A: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
const KEY_B: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

async fn dpop_database() -> (TempDb, Client) {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "dpop_supported => true").await;
    (db, admin)
}

async fn exchange_with(db: &Client, auth: &Authorized, jkt: Option<&str>) -> Value {
    scalar(
        db,
        "SELECT oauth.exchange_code($1, $2, $3, $4, $5, NULL, dpop_jkt => $6)",
        &[
            &auth.client_id,
            &auth.client_secret,
            &auth.code,
            &auth.pkce.verifier,
            &auth.redirect_uri,
            &jkt,
        ],
    )
    .await
}

async fn rotate_with(
    db: &Client,
    client: &TestClient,
    token: &str,
    jkt: Option<&str>,
    seconds_later: i64,
) -> Value {
    scalar(
        db,
        "SELECT oauth.rotate_refresh_token($1, $2, $3, NULL, NULL,
                now() + make_interval(secs => $4), dpop_jkt => $5)",
        &[
            &client.id,
            &client.secret(),
            &token,
            &(seconds_later as f64),
            &jkt,
        ],
    )
    .await
}

async fn family_key(db: &Client, family: uuid::Uuid) -> Option<String> {
    scalar(
        db,
        "SELECT dpop_jkt FROM oauth.refresh_families WHERE family_id = $1",
        &[&family],
    )
    .await
}

#[tokio::test]
async fn a_public_clients_refresh_tokens_rotate_only_with_a_proof_by_their_key() {
    let (_db, admin) = dpop_database().await;
    let client = create_client(&admin, ClientSpec::public_native()).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    let first = exchange_with(&admin, &auth, Some(KEY_A)).await;
    assert_ok(&first, "exchange with a DPoP key");
    let family = uuid_field(&first, "family_id");
    let grant = uuid_field(&first, "grant_id");
    assert_eq!(family_key(&admin, family).await.as_deref(), Some(KEY_A));
    let r0 = str_field(&first, "refresh_token").to_owned();

    // The live token without a proof, or with another key: refused, and nothing is revoked (the
    // key's holder still has it).
    for jkt in [None, Some(KEY_B)] {
        let refused = rotate_with(&admin, &client, &r0, jkt, 0).await;
        assert_error(
            &refused,
            "invalid_grant",
            "rotation without the family's key",
        );
        assert!(str_field(&refused, "error_description").contains("DPoP"));
    }
    assert!(!family_row(&admin, family).await.revoked);
    let second = rotate_with(&admin, &client, &r0, Some(KEY_A), 0).await;
    assert_ok(&second, "rotation with the family's key");
    assert_eq!(family_key(&admin, family).await.as_deref(), Some(KEY_A));

    // Within the grace window the retired token gets the live successor again, with the key only;
    // presented with another key it is reuse, and the family and grant are revoked.
    let again = rotate_with(&admin, &client, &r0, Some(KEY_A), 1).await;
    assert_eq!(again["refresh_token"], second["refresh_token"]);
    let stolen = rotate_with(&admin, &client, &r0, Some(KEY_B), 1).await;
    assert_error(
        &stolen,
        "invalid_grant",
        "the retired token with another key",
    );
    assert!(family_row(&admin, family).await.revoked);
    assert!(!grant_live(&admin, grant).await);
}

#[tokio::test]
async fn a_confidential_clients_refresh_tokens_are_not_bound() {
    let (_db, admin) = dpop_database().await;
    let client = confidential_client(&admin).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    let first = exchange_with(&admin, &auth, Some(KEY_A)).await;
    assert_ok(&first, "exchange with a DPoP key");
    assert_eq!(
        family_key(&admin, uuid_field(&first, "family_id")).await,
        None
    );
    let token = str_field(&first, "refresh_token");
    assert_ok(
        &rotate_with(&admin, &client, token, None, 0).await,
        "rotation by client authentication alone",
    );
}

#[tokio::test]
async fn a_client_registered_for_dpop_gets_nothing_without_a_key_and_keeps_its_code() {
    let (_db, admin) = dpop_database().await;
    let redirect = "http://127.0.0.1/callback";
    let answer = register(
        &admin,
        &json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none",
                "dpop_bound_access_tokens": true}),
    )
    .await;
    assert_eq!(answer["dpop_bound_access_tokens"], json!(true));
    let client = TestClient::registered(&answer, redirect);
    let auth = authorize(&admin, &client, &unique("user")).await;
    let refused = exchange_with(&admin, &auth, None).await;
    assert_error(&refused, "invalid_dpop_proof", "exchange without a key");
    // Refused before the code was looked at: it still redeems, with a key.
    let issued = exchange_with(&admin, &auth, Some(KEY_A)).await;
    assert_ok(&issued, "exchange with a key");
    let token = str_field(&issued, "refresh_token");
    assert_error(
        &rotate_with(&admin, &client, token, None, 0).await,
        "invalid_dpop_proof",
        "rotation without a key",
    );
    for malformed in [
        "",
        "short",
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9X=",
        &"A".repeat(44),
    ] {
        assert_error(
            &rotate_with(&admin, &client, token, Some(malformed), 0).await,
            "invalid_dpop_proof",
            "a malformed thumbprint",
        );
    }
    assert_ok(
        &rotate_with(&admin, &client, token, Some(KEY_A), 0).await,
        "rotation with the key",
    );
}

#[tokio::test]
async fn coalesced_rotations_carry_each_requests_key() {
    let (_db, admin) = dpop_database().await;
    let client = create_client(&admin, ClientSpec::public_native()).await;
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let auth = authorize(&admin, &client, &unique("user")).await;
        let issued = exchange_with(&admin, &auth, Some(KEY_A)).await;
        tokens.push(str_field(&issued, "refresh_token").to_owned());
    }
    let answers: Value = scalar(
        &admin,
        "SELECT oauth.rotate_refresh_tokens($1, $2, $3, $4, $5, dpop_jkts => $6)",
        &[
            &vec![client.id.clone(); 2],
            &vec![None::<String>; 2],
            &tokens,
            &vec![None::<String>; 2],
            &vec![None::<String>; 2],
            &vec![Some(KEY_A), None],
        ],
    )
    .await;
    assert_ok(&answers[0], "the element with the key");
    assert_error(&answers[1], "invalid_grant", "the element without it");
    let uneven = admin
        .query_one(
            "SELECT oauth.rotate_refresh_tokens($1, $2, $3, $4, $5, dpop_jkts => $6)",
            &[
                &vec![client.id.clone()],
                &vec![None::<String>],
                &vec![tokens[1].clone()],
                &vec![None::<String>],
                &vec![None::<String>],
                &vec![Some(KEY_A), Some(KEY_A)],
            ],
        )
        .await;
    assert_eq!(sqlstate(uneven), "OA400");
}

#[tokio::test]
async fn without_the_setting_no_token_is_bound_and_no_client_may_ask() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let settings: Value = scalar(&admin, "SELECT oauth.settings()", &[]).await;
    assert_eq!(settings["dpop_supported"], json!(false));
    assert_eq!(settings["dpop_signing_alg_values_supported"], json!([]));
    let refused = register(
        &admin,
        &json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none",
                "dpop_bound_access_tokens": true}),
    )
    .await;
    assert_error(
        &refused,
        "invalid_client_metadata",
        "dpop_bound_access_tokens while off",
    );
    let not_boolean = register(
        &admin,
        &json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none",
                "dpop_bound_access_tokens": "yes"}),
    )
    .await;
    assert_error(
        &not_boolean,
        "invalid_client_metadata",
        "a string for a boolean",
    );
    let client = create_client(&admin, ClientSpec::public_native()).await;
    let auth = authorize(&admin, &client, &unique("user")).await;
    assert_error(
        &exchange_with(&admin, &auth, Some(KEY_A)).await,
        "invalid_dpop_proof",
        "a key while DPoP is off",
    );

    let on: Value = scalar(
        &admin,
        "SELECT oauth.configure(dpop_supported => true)",
        &[],
    )
    .await;
    assert_eq!(on["dpop_supported"], json!(true));
    let algs = on["dpop_signing_alg_values_supported"].as_array().unwrap();
    assert!(algs.contains(&json!("ES256")) && !algs.contains(&json!("none")));
    assert!(!algs.iter().any(|a| a.as_str().unwrap().starts_with("HS")));
}
