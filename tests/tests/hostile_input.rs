//! What an attacker controls: input that reaches functions before any authentication (its cost is
//! bounded, and it is refused the way malformed input is), redirect URIs anyone can register,
//! resources a client leaves out, and fetches of metadata documents that fail.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::{Client, admin, at, changed, gateway, register, scalar, unique};

/// 16,000 distinct three-character scope tokens: 64 KB that an unbounded, quadratic parser spent
/// about 350 ms of backend CPU on per call.
fn sixteen_thousand_distinct_tokens() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let n = ALPHABET.len();
    (0..16_000)
        .map(|i| {
            [i / (n * n) % n, i / n % n, i % n]
                .iter()
                .map(|&k| ALPHABET[k] as char)
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A valid authorization request (PKCE S256, response_type=code) with `fields` changed.
async fn begin(db: &Client, fields: Value) -> Value {
    let valid = json!({
        "response_type": "code",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        "state": "s",
    });
    scalar(
        db,
        "SELECT oauth.begin_authorization($1)",
        &[&changed(&valid, fields)],
    )
    .await
}

/// A client registered by anyone (RFC 7591), public, redirecting to `redirect_uri`.
async fn registered_by_anyone(db: &Client, redirect_uri: &str) -> String {
    let answer = register(
        db,
        &json!({"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none"}),
    )
    .await;
    answer["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

#[tokio::test]
async fn oversized_scope_strings_are_refused_as_malformed_before_any_lookup() {
    let db = admin().await;
    let hostile = sixteen_thousand_distinct_tokens();

    let parsed: Option<Vec<String>> =
        scalar(&db, "SELECT oauth.parse_scope($1)", &[&hostile]).await;
    assert!(
        parsed.is_none(),
        "the parser refuses instead of deduplicating 16,000 tokens (it returned {} tokens)",
        parsed.map_or(0, |tokens| tokens.len())
    );

    let registered = register(
        &db,
        &json!({
            "client_name": unique("hostile"),
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "scope": hostile,
        }),
    )
    .await;
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

    let client_id = registered_by_anyone(&db, "http://127.0.0.1/callback").await;
    let rotated: Value = scalar(
        &db,
        "SELECT oauth.rotate_refresh_token($1, NULL, 'not-a-token', $2, NULL)",
        &[&client_id, &hostile],
    )
    .await;
    assert_eq!(
        rotated,
        json!({"error": "invalid_scope", "error_description": "scope is malformed"}),
        "a refresh request is refused on its scope before its token is looked up"
    );
}

#[tokio::test]
async fn errors_before_the_user_acted_never_go_to_redirect_uris_no_administrator_vetted() {
    let db = gateway().await;
    let evil = "https://evil.example/cb";
    let dynamic = registered_by_anyone(&db, evil).await;
    let document_id = format!("https://{}.example/client.json", unique("doc"));
    let document = json!({"client_id": document_id, "client_name": "Doc", "redirect_uris": [evil],
                          "token_endpoint_auth_method": "none"});
    let stored: Value = scalar(
        &db,
        "SELECT oauth.store_client_document($1, $2, now() + interval '1 hour', now() + interval '1 minute')",
        &[&document_id, &document],
    )
    .await;
    assert!(stored["error"].is_null(), "{stored}");
    let malformed_scope = |client_id: &str, redirect_uri: &str| json!({"client_id": client_id, "redirect_uri": redirect_uri, "scope": "mcp  two-spaces"});

    for (what, client_id) in [
        ("registered by anyone", &dynamic),
        ("metadata document", &document_id),
    ] {
        let answer = begin(&db, malformed_scope(client_id, evil)).await;
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

    let vetted: String = scalar(
        &admin().await,
        "SELECT client_id FROM oauth.create_client($1, '{https://vetted.example/cb}', '{mcp}', 'none')",
        &[&unique("vetted")],
    )
    .await;
    let answer = begin(&db, malformed_scope(&vetted, "https://vetted.example/cb")).await;
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
    let began = begin(&db, json!({"client_id": dynamic, "redirect_uri": evil})).await;
    let request_id = began["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{began}"));
    let denied: String = scalar(&db, "SELECT oauth.deny_authorization($1)", &[&request_id]).await;
    assert!(
        denied.starts_with("https://evil.example/cb?error=access_denied"),
        "{denied}"
    );
}

#[tokio::test]
async fn a_private_use_scheme_redirect_names_no_host_on_the_consent_screen() {
    let db = gateway().await;
    let redirect_uri = "x-evil://claude.ai/cb";
    let client_id = registered_by_anyone(&db, redirect_uri).await;
    let began = begin(
        &db,
        json!({"client_id": client_id, "redirect_uri": redirect_uri}),
    )
    .await;
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

/// A client_credentials grant for a new machine client allowed `resources`, asking for none.
async fn machine_token_without_resource(db: &Client, resources: &[&str]) -> Value {
    let row = admin()
        .await
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client($1, '{}', '{mcp}', \
             grant_types => '{client_credentials}', allowed_resources => $2)",
            &[&unique("machine"), &resources],
        )
        .await
        .unwrap();
    let (client_id, secret): (String, String) = (row.get(0), row.get(1));
    scalar(
        db,
        "SELECT oauth.client_credentials_grant($1, $2, NULL, NULL)",
        &[&client_id, &secret],
    )
    .await
}

#[tokio::test]
async fn leaving_out_resource_never_escapes_a_clients_allowed_resources() {
    let db = gateway().await;
    let issued = machine_token_without_resource(&db, &["https://mcp.example.com/mcp"]).await;
    assert_eq!(
        issued["resource"],
        json!("https://mcp.example.com/mcp"),
        "a client allowed one resource gets it, not a token without audience: {issued}"
    );
    let several = ["https://a.example.com/mcp", "https://b.example.com/mcp"];
    let refused = machine_token_without_resource(&db, &several).await;
    assert_eq!(refused["error"], json!("invalid_target"), "{refused}");

    // The code flow decides the same at /authorize, before the user is asked.
    let restricted: String = scalar(
        &admin().await,
        "SELECT client_id FROM oauth.create_client($1, '{https://app.example/cb}', '{mcp}', 'none', \
         allowed_resources => $2)",
        &[&unique("restricted"), &several.as_slice()],
    )
    .await;
    let began = begin(
        &db,
        json!({"client_id": restricted, "redirect_uri": "https://app.example/cb"}),
    )
    .await;
    assert_eq!(began["error"], json!("invalid_target"), "{began}");
}

#[tokio::test]
async fn a_document_whose_refetch_fails_keeps_its_last_good_copy_for_at_most_a_day() {
    let db = gateway().await;
    let url = format!("https://{}.example/client.json", unique("stale"));
    let redirect = "https://stale.example/cb";
    let document = json!({"client_id": url, "redirect_uris": [redirect], "token_endpoint_auth_method": "none"});
    let stored: Value = scalar(
        &db,
        "SELECT oauth.store_client_document($1, $2, $3::text::timestamptz, $4::text::timestamptz, $5::text::timestamptz)",
        &[&url, &document, &at(3600), &at(60), &at(0)],
    )
    .await;
    assert_eq!(stored, json!({}));
    let fail = async |retry_at: i64, now: i64| {
        db.execute(
            "SELECT oauth.record_client_document_failure($1, 'could not connect', $2::text::timestamptz, $3::text::timestamptz)",
            &[&url, &at(retry_at), &at(now)],
        )
        .await
        .unwrap();
    };
    let authorize_at = async |seconds: i64| -> Value {
        let request = json!({
            "response_type": "code", "client_id": url, "redirect_uri": redirect,
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
        });
        scalar(
            &db,
            "SELECT oauth.begin_authorization($1, $2::text::timestamptz)",
            &[&request, &at(seconds)],
        )
        .await
    };

    // Stale after an hour; the refetch fails: the good copy serves until the retry.
    fail(7260, 7200).await;
    let answer = authorize_at(7230).await;
    assert!(
        answer["request_id"].is_string(),
        "the last good copy serves: {answer}"
    );
    let answer = authorize_at(7260).await;
    assert_eq!(
        answer["fetch_client_document"],
        json!(url),
        "then it is fetched again: {answer}"
    );

    // A day after the last good fetch, a failure refuses the client until its retry.
    fail(86_460, 86_401).await;
    let answer = authorize_at(86_430).await;
    assert_eq!(answer["error"], json!("invalid_client"), "{answer}");
}
