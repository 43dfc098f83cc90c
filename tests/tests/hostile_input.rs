//! Input an attacker controls reaches some functions before any authentication: its cost is
//! bounded, and it is refused the way malformed input is.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::{admin, unique};

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
