//! Client ID Metadata Documents, the database's side: when begin_authorization asks for a fetch,
//! what a stored document becomes, and that failures are remembered and then forgotten.

use oauth_provider_tests::*;
use serde_json::{Value, json};

fn document_url() -> String {
    format!("https://{}.example/oauth/client.json", unique("cli"))
}

async fn begin(gw: &tokio_postgres::Client, client_id: &str, redirect_uri: &str) -> Value {
    let pkce = Pkce::new();
    begin_authorization(
        gw,
        &json!({
            "client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code",
            "code_challenge": pkce.challenge, "code_challenge_method": "S256", "scope": "mcp",
        }),
    )
    .await
}

async fn store(
    gw: &tokio_postgres::Client,
    client_id: &str,
    document: &Value,
    fresh_for: &str,
) -> Value {
    gw.query_one(
        "SELECT oauth.store_client_document($1, $2, now() + $3::text::interval, now() + interval '1 minute')",
        &[&client_id, document, &fresh_for],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test]
async fn a_stored_document_makes_a_public_client_until_it_goes_stale() {
    let gw = gateway().await;
    let url = document_url();
    let asked = begin(&gw, &url, "http://127.0.0.1:4567/callback").await;
    assert_eq!(asked["fetch_client_document"], json!(url));
    assert_eq!(asked["redirect"], json!(false));

    let document = json!({"client_id": url, "client_name": "CLI", "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"]});
    assert_eq!(store(&gw, &url, &document, "1 hour").await, json!({}));
    // A port-less loopback registration matches any port (RFC 8252 §7.3).
    let begun = begin(&gw, &url, "http://127.0.0.1:4567/callback").await;
    assert_ok(&begun, "authorization with a stored document");
    let loopback_only: bool = gw
        .query_one(
            "SELECT loopback_only FROM oauth.get_authorization_request($1)",
            &[&str_field(&begun, "request_id")],
        )
        .await
        .unwrap()
        .get(0);
    assert!(loopback_only);
    let refused = begin(&gw, &url, "https://elsewhere.example/callback").await;
    assert_error(&refused, "invalid_request", "unlisted redirect URI");
    assert_eq!(refused["redirect"], json!(false));

    assert_eq!(store(&gw, &url, &document, "0 seconds").await, json!({}));
    assert_eq!(
        begin(&gw, &url, "http://127.0.0.1:4567/callback").await["fetch_client_document"],
        json!(url),
        "stale: fetch again"
    );
}

#[tokio::test]
async fn invalid_documents_are_refused_remembered_and_then_forgotten_by_cleanup() {
    let db = TempDb::create().await;
    let (admin, gw) = (db.admin().await, db.gateway().await);
    let url = document_url();
    for (document, reason) in [
        (
            json!({"client_id": "https://other.example/c.json", "redirect_uris": ["http://127.0.0.1/cb"]}),
            "differs from its URL",
        ),
        (
            json!({"client_id": url, "redirect_uris": ["http://127.0.0.1/cb"], "client_secret": "x"}),
            "secret",
        ),
        (
            json!({"client_id": url, "redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "client_secret_post"}),
            "token_endpoint_auth_method",
        ),
        (json!({"client_id": url}), "redirect URI"),
        (json!(["not", "an", "object"]), "JSON object"),
    ] {
        let answer = store(&gw, &url, &document, "1 hour").await;
        assert!(
            answer["error_description"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{answer}"
        );
        let cached = begin(&gw, &url, "http://127.0.0.1/cb").await;
        assert_error(&cached, "invalid_client", reason);
        assert!(
            cached["error_description"]
                .as_str()
                .unwrap()
                .contains(reason)
        );
    }
    let row = admin
        .query_one("SELECT consecutive_failures, (SELECT count(*) FROM oauth.clients WHERE client_id = $1) FROM oauth.client_documents WHERE client_id = $1", &[&url])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 5);
    assert_eq!(row.get::<_, i64>(1), 0, "no client was made");

    gw.execute(
        "SELECT oauth.record_client_document_failure($1, 'timed out', now() + interval '1 minute')",
        &[&document_url()],
    )
    .await
    .unwrap();
    let kept: i64 = admin
        .query_one("SELECT oauth.cleanup(now())", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0, "negative entries stay while they are fresh");
    let removed: i64 = admin
        .query_one("SELECT oauth.cleanup(now() + interval '2 minutes')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(removed, 2);
    assert_sqlstate(
        gw.execute("SELECT oauth.record_client_document_failure('http://plain.example/c.json', 'x', now())", &[]).await,
        "OA400",
        "not a document URL",
    );
}
