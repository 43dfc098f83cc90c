//! What an attacker controls: input that reaches functions before any authentication (its cost is
//! bounded, and it is refused the way malformed input is), and redirect URIs anyone can register.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::tokio_postgres::Client;
use oauth_provider_tests::{admin, gateway, unique};

/// 16,000 distinct three-character scope tokens: 64 KB that an unbounded, quadratic parser spent
/// about 350 ms of backend CPU on per call.
fn sixteen_thousand_distinct_tokens() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..16_000)
        .map(|i| {
            let n = ALPHABET.len();
            [
                ALPHABET[i / (n * n) % n],
                ALPHABET[i / n % n],
                ALPHABET[i % n],
            ]
            .iter()
            .map(|b| *b as char)
            .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn oversized_scope_strings_are_refused_as_malformed_before_any_lookup() {
    let db = admin().await;
    let hostile = sixteen_thousand_distinct_tokens();

    let parsed: Option<Vec<String>> = db
        .query_one("SELECT oauth.parse_scope($1)", &[&hostile])
        .await
        .unwrap()
        .get(0);
    assert!(
        parsed.is_none(),
        "the parser refuses instead of deduplicating 16,000 tokens (it returned {} tokens)",
        parsed.map_or(0, |tokens| tokens.len())
    );

    let registered: Value = db
        .query_one(
            "SELECT oauth.register_client($1)",
            &[&json!({
                "client_name": unique("hostile"),
                "redirect_uris": ["http://127.0.0.1/callback"],
                "token_endpoint_auth_method": "none",
                "scope": hostile,
            })],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        registered["error"],
        json!("invalid_client_metadata"),
        "{registered}"
    );
    assert_eq!(
        registered["error_description"],
        json!("scope is not a space-separated list of scope tokens"),
        "registration reports the scope as malformed"
    );

    let row = db
        .query_one(
            "SELECT client_id FROM oauth.create_client($1, '{http://127.0.0.1/callback}', '{mcp}', 'none', \
             application_type => 'native')",
            &[&unique("hostile-public")],
        )
        .await
        .unwrap();
    let client_id: String = row.get(0);
    let rotated: Value = db
        .query_one(
            "SELECT oauth.rotate_refresh_token($1, NULL, 'not-a-token', $2, NULL)",
            &[&client_id, &hostile],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        rotated,
        json!({"error": "invalid_scope", "error_description": "scope is malformed"}),
        "a refresh request is refused on its scope before its token is looked up"
    );
}

/// `begin_authorization` with an invalid scope (an error found before the user did anything).
async fn authorize_with_invalid_scope(db: &Client, client_id: &str, redirect_uri: &str) -> Value {
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    db.query_one(
        "SELECT oauth.begin_authorization($1)",
        &[&json!({
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "scope": "mcp  two-spaces-make-it-malformed",
            "state": "s",
        })],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn errors_before_the_user_acted_never_go_to_redirect_uris_no_administrator_vetted() {
    let db = gateway().await;
    let evil = "https://evil.example/cb";

    let registered: Value = db
        .query_one(
            "SELECT oauth.register_client($1)",
            &[&json!({"redirect_uris": [evil], "token_endpoint_auth_method": "none"})],
        )
        .await
        .unwrap()
        .get(0);
    let dynamic = registered["client_id"].as_str().unwrap().to_owned();

    let document_id = format!("https://{}.example/client.json", unique("doc"));
    let stored: Value = db
        .query_one(
            "SELECT oauth.store_client_document($1, $2, now() + interval '1 hour', now() + interval '1 minute')",
            &[
                &document_id,
                &json!({"client_id": document_id, "client_name": "Doc", "redirect_uris": [evil],
                        "token_endpoint_auth_method": "none"}),
            ],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored["error"].is_null(), "{stored}");

    for (what, client_id) in [
        ("registered by anyone", &dynamic),
        ("metadata document", &document_id),
    ] {
        let answer = authorize_with_invalid_scope(&db, client_id, evil).await;
        assert_eq!(answer["error"], json!("invalid_scope"), "{what}: {answer}");
        assert_eq!(
            answer["redirect"],
            json!(false),
            "{what}: shown here, not redirected: {answer}"
        );
        assert!(
            answer["location"].is_null(),
            "{what}: no location: {answer}"
        );
    }

    let vetted: String = admin()
        .await
        .query_one(
            "SELECT client_id FROM oauth.create_client($1, $2, '{mcp}', 'none', application_type => 'web')",
            &[&unique("vetted"), &vec!["https://vetted.example/cb"]],
        )
        .await
        .unwrap()
        .get(0);
    let answer = authorize_with_invalid_scope(&db, &vetted, "https://vetted.example/cb").await;
    assert_eq!(
        answer["redirect"],
        json!(true),
        "an administrator's client: {answer}"
    );
    assert!(
        answer["location"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://vetted.example/cb?error=invalid_scope")),
        "{answer}"
    );

    // Once the user decided, the answer goes back to the client as usual.
    let began: Value = db
        .query_one(
            "SELECT oauth.begin_authorization($1)",
            &[&json!({
                "response_type": "code", "client_id": dynamic, "redirect_uri": evil, "state": "s",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
            })],
        )
        .await
        .unwrap()
        .get(0);
    let request_id = began["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{began}"));
    let denied: String = db
        .query_one("SELECT oauth.deny_authorization($1)", &[&request_id])
        .await
        .unwrap()
        .get(0);
    assert!(
        denied.starts_with("https://evil.example/cb?error=access_denied"),
        "{denied}"
    );
}

#[tokio::test]
async fn a_private_use_scheme_redirect_names_no_host_on_the_consent_screen() {
    let db = gateway().await;
    let redirect_uri = "x-evil://claude.ai/cb";
    let registered: Value = db
        .query_one(
            "SELECT oauth.register_client($1)",
            &[&json!({"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"})],
        )
        .await
        .unwrap()
        .get(0);
    let client_id = registered["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{registered}"));
    let began: Value = db
        .query_one(
            "SELECT oauth.begin_authorization($1)",
            &[&json!({
                "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
            })],
        )
        .await
        .unwrap()
        .get(0);
    let request_id = began["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{began}"));
    let row = db
        .query_one(
            "SELECT redirect_uri, redirect_host FROM oauth.get_authorization_request($1)",
            &[&request_id],
        )
        .await
        .unwrap();
    let (uri, host): (String, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(uri, redirect_uri);
    assert_eq!(
        host, None,
        "the app chose the part after x-evil://; it is no destination"
    );
}

/// A machine client of the client_credentials grant allowed `resources`.
async fn machine_client(resources: &[&str]) -> (String, String) {
    let row = admin()
        .await
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client($1, '{}', '{mcp}', \
             grant_types => '{client_credentials}', allowed_resources => $2)",
            &[&unique("machine"), &resources],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn leaving_out_resource_never_escapes_a_clients_allowed_resources() {
    let db = gateway().await;
    let none: Option<&str> = None;

    let (one, secret) = machine_client(&["https://mcp.example.com/mcp"]).await;
    let issued: Value = db
        .query_one(
            "SELECT oauth.client_credentials_grant($1, $2, NULL, $3)",
            &[&one, &secret, &none],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        issued["resource"],
        json!("https://mcp.example.com/mcp"),
        "a client allowed one resource gets it, not a token without audience: {issued}"
    );

    let (several, secret) =
        machine_client(&["https://a.example.com/mcp", "https://b.example.com/mcp"]).await;
    let refused: Value = db
        .query_one(
            "SELECT oauth.client_credentials_grant($1, $2, NULL, $3)",
            &[&several, &secret, &none],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(refused["error"], json!("invalid_target"), "{refused}");

    // The code flow decides the same at /authorize, before the user is asked.
    let row = admin()
        .await
        .query_one(
            "SELECT client_id FROM oauth.create_client($1, '{https://app.example/cb}', '{mcp}', 'none', \
             allowed_resources => '{https://a.example.com/mcp,https://b.example.com/mcp}')",
            &[&unique("restricted")],
        )
        .await
        .unwrap();
    let restricted: String = row.get(0);
    let began: Value = db
        .query_one(
            "SELECT oauth.begin_authorization($1)",
            &[&json!({
                "response_type": "code", "client_id": restricted, "redirect_uri": "https://app.example/cb",
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
            })],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(began["error"], json!("invalid_target"), "{began}");
}

/// Seconds after an arbitrary epoch, as the `now` the functions take.
fn at(seconds: i64) -> String {
    const JANUARY_2030: i64 = 1_893_456_000;
    chrono::DateTime::from_timestamp(JANUARY_2030 + seconds, 0)
        .unwrap()
        .to_rfc3339()
}

async fn authorize_document_client_at(
    db: &Client,
    url: &str,
    redirect: &str,
    seconds: i64,
) -> Value {
    db.query_one(
        "SELECT oauth.begin_authorization($1, ($2::text::timestamptz))",
        &[
            &json!({
                "response_type": "code", "client_id": url, "redirect_uri": redirect,
                "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
            }),
            &at(seconds),
        ],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_document_whose_refetch_fails_keeps_its_last_good_copy_for_at_most_a_day() {
    let db = gateway().await;
    let url = format!("https://{}.example/client.json", unique("stale"));
    let redirect = "https://stale.example/cb";
    let document = json!({"client_id": url, "redirect_uris": [redirect], "token_endpoint_auth_method": "none"});
    let stored: Value = db
        .query_one(
            "SELECT oauth.store_client_document($1, $2, ($3::text::timestamptz), ($4::text::timestamptz), ($5::text::timestamptz))",
            &[&url, &document, &at(3600), &at(60), &at(0)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, json!({}));
    let fail = |retry_at: i64, now: i64| {
        let (db, url) = (&db, &url);
        async move {
            db.execute(
                "SELECT oauth.record_client_document_failure($1, 'could not connect', ($2::text::timestamptz), ($3::text::timestamptz))",
                &[url, &at(retry_at), &at(now)],
            )
            .await
            .unwrap();
        }
    };

    // Stale after an hour; the refetch fails: the good copy serves until the retry.
    fail(7260, 7200).await;
    let answer = authorize_document_client_at(&db, &url, redirect, 7230).await;
    assert!(
        answer["request_id"].is_string(),
        "the last good copy serves: {answer}"
    );
    let answer = authorize_document_client_at(&db, &url, redirect, 7260).await;
    assert_eq!(
        answer["fetch_client_document"],
        json!(url),
        "then it is fetched again: {answer}"
    );

    // A day after the last good fetch, a failure refuses the client until its retry.
    fail(86_460, 86_401).await;
    let answer = authorize_document_client_at(&db, &url, redirect, 86_430).await;
    assert_eq!(answer["error"], json!("invalid_client"), "{answer}");
}
