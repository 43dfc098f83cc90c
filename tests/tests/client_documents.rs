//! Client ID Metadata Documents, the SQL side: an https client_id makes begin_authorization ask the
//! gateway to fetch the document; the database validates what was fetched, keeps a public client
//! for it, and caches the copy (until fresh_until) or the failure (until retry_at). Time is passed
//! as `now`, so freshness and negative caching are tested without sleeping.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

/// A fresh document URL (the client_id) on a host of its own.
fn document_url() -> String {
    format!(
        "https://app-{}.example/oauth/client.json",
        Uuid::new_v4().simple()
    )
}

/// A valid document for `url`: a public native client with the two loopback redirect URIs MCP
/// clients register.
fn document(url: &str) -> Value {
    json!({
        "client_id": url,
        "client_name": "Document Client",
        "client_uri": "https://app.example",
        "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

/// The document for `url` that `changes` describe: the valid [`document`] with the changes applied
/// (a `null` removes a field), or, when `changes` is no JSON object, `changes` itself.
fn document_with(url: &str, changes: &Value) -> Value {
    changed(&document(url), changes.clone())
}

async fn store(
    db: &Client,
    url: &str,
    document: &Value,
    fresh_until: i64,
    retry_at: i64,
    now: i64,
) -> Value {
    scalar(
        db,
        "SELECT oauth.store_client_document($1, $2, $3::text::timestamptz, $4::text::timestamptz, $5::text::timestamptz)",
        &[&url, document, &at(fresh_until), &at(retry_at), &at(now)],
    )
    .await
}

async fn record_failure(
    db: &Client,
    url: &str,
    failure: &str,
    retry_at: Option<i64>,
    now: i64,
) -> Result<u64, tokio_postgres::Error> {
    db.execute(
        "SELECT oauth.record_client_document_failure($1, $2, $3::text::timestamptz, $4::text::timestamptz)",
        &[&url, &failure, &retry_at.map(at), &at(now)],
    )
    .await
}

/// The test client a document describes, presenting `redirect_uri`.
fn document_client(url: &str, redirect_uri: &str) -> TestClient {
    TestClient {
        id: url.to_owned(),
        secret: None,
        redirect_uri: redirect_uri.to_owned(),
        spec: ClientSpec::public_native(),
    }
}

/// begin_authorization at `now` by the document client `url`, presenting `redirect_uri`.
async fn begin_at(db: &Client, url: &str, redirect_uri: &str, now: i64) -> Value {
    let client = document_client(url, redirect_uri);
    begin_request_at(db, &Authorize::new(&client), now).await
}

/// begin_authorization of `request` at `now`.
async fn begin_request_at(db: &Client, request: &Authorize<'_>, now: i64) -> Value {
    scalar(
        db,
        "SELECT oauth.begin_authorization($1, $2::text::timestamptz)",
        &[&request.request(), &at(now)],
    )
    .await
}

#[track_caller]
fn assert_fetch(answer: &Value, url: &str, what: &str) {
    assert_eq!(
        answer,
        &json!({"fetch_client_document": url, "redirect": false}),
        "{what}: expected a request to fetch the document"
    );
}

async fn client_count(admin: &Client, client_id: &str) -> i64 {
    row_count(&admin, "oauth.clients WHERE client_id = $1", &[&client_id]).await
}

/// (failure, consecutive_failures) of the document's cache row.
async fn cache_row(admin: &Client, url: &str) -> (Option<String>, i32) {
    let row = admin
        .query_one(
            "SELECT failure, consecutive_failures FROM oauth.client_documents WHERE client_id = $1",
            &[&url],
        )
        .await
        .unwrap_or_else(|e| panic!("no client_documents row for {url}: {e:?}"));
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn an_unknown_https_client_id_makes_begin_authorization_ask_for_its_document() {
    let (admin, gw) = (admin().await, gateway().await);
    let url = document_url();
    let answer = begin_at(&gw, &url, "http://127.0.0.1:5000/callback", 0).await;
    assert_fetch(&answer, &url, "no document stored yet");
    assert_eq!(
        client_count(&admin, &url).await,
        0,
        "asking creates no client"
    );

    // A non-URL client_id that is unknown is simply unknown.
    let nobody = document_client(&unique("nobody"), "http://127.0.0.1/callback");
    let plain = Authorize::new(&nobody).begin(&gw).await;
    assert_error(&plain, "invalid_client", "unknown plain client_id");
}

#[tokio::test]
async fn a_stored_document_becomes_a_public_client_that_completes_a_code_flow() {
    let (admin, gw) = (admin().await, gateway().await);
    let url = document_url();
    let stored = store(&gw, &url, &document(&url), 3600, 3600, 0).await;
    assert_eq!(stored, json!({}), "a valid document is accepted");

    let row = one_row(
        &admin,
        "SELECT client_name, token_endpoint_auth_method, application_type, redirect_uris, metadata,
                    registered_dynamically
               FROM oauth.list_clients() WHERE client_id = $1",
        &[&url],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "Document Client");
    assert_eq!(row.get::<_, String>(1), "none");
    assert_eq!(
        row.get::<_, String>(2),
        "native",
        "all-loopback documents are native"
    );
    assert_eq!(
        row.get::<_, Vec<String>>(3),
        vec!["http://localhost/callback", "http://127.0.0.1/callback"]
    );
    let metadata: Value = row.get(4);
    assert_eq!(metadata["metadata_document"], json!(true), "{metadata}");
    assert_eq!(metadata["client_uri"], json!("https://app.example"));
    assert!(!row.get::<_, bool>(5));
    assert_eq!(cache_row(&admin, &url).await, (None, 0));
    let secret: Option<Vec<u8>> = scalar(
        &admin,
        "SELECT secret_hash FROM oauth.clients WHERE client_id = $1",
        &[&url],
    )
    .await;
    assert_eq!(secret, None, "a document client has no secret");

    // The code flow, on a loopback port the document does not name (RFC 8252 §7.3).
    let redirect = "http://127.0.0.1:50123/callback";
    let client = document_client(&url, redirect);
    let request = Authorize::new(&client);
    let begun = begin_request_at(&gw, &request, 10).await;
    assert_ok(&begun, "begin_authorization with a stored document");
    assert_eq!(str_field(&begun, "client_id"), url);
    assert_eq!(str_field(&begun, "client_name"), "Document Client");
    let auth = request.redirected(consent_to(&gw, &begun).await);
    let location = &auth.location;
    assert!(location.starts_with(&format!("{redirect}?")), "{location}");
    let tokens = auth.exchange().run(&gw).await;
    assert_ok(&tokens, "exchange_code by a document client");
    assert_eq!(str_field(&tokens, "client_id"), url);
    assert!(tokens["refresh_token"].is_string());
}

#[tokio::test]
async fn loopback_entries_of_a_document_match_any_port_and_nothing_else() {
    let gw = gateway().await;
    let url = document_url();
    assert_eq!(
        store(&gw, &url, &document(&url), 3600, 3600, 0).await,
        json!({})
    );
    for (uri, ok) in [
        ("http://localhost/callback", true),
        ("http://localhost:3000/callback", true),
        ("http://127.0.0.1/callback", true),
        ("http://127.0.0.1:65535/callback", true),
        ("http://[::1]:3000/callback", false),
        ("http://localhost:3000/other", false),
        ("http://localhost:3000/callback/", false),
        ("https://localhost:3000/callback", false),
        ("http://127.0.0.1:99999/callback", false),
        ("http://evil.example/callback", false),
    ] {
        let answer = begin_at(&gw, &url, uri, 10).await;
        if ok {
            assert_ok(&answer, uri);
        } else {
            assert_error(&answer, "invalid_request", uri);
            assert_eq!(answer["redirect"], json!(false), "{uri}");
        }
    }
}

#[tokio::test]
async fn a_document_past_fresh_until_is_fetched_again_and_a_refetch_updates_the_client() {
    let (admin, gw) = (admin().await, gateway().await);
    let url = document_url();
    let redirect = "http://127.0.0.1:4000/callback";
    assert_eq!(
        store(&gw, &url, &document(&url), 3600, 60, 0).await,
        json!({})
    );
    assert_ok(
        &begin_at(&gw, &url, redirect, 3599).await,
        "one second before fresh_until",
    );
    assert_fetch(
        &begin_at(&gw, &url, redirect, 3600).await,
        &url,
        "at fresh_until",
    );
    assert_fetch(
        &begin_at(&gw, &url, redirect, 7200).await,
        &url,
        "long after fresh_until",
    );

    // The refetched document replaces the client's metadata; the client id stays.
    let renamed = document_with(
        &url,
        &json!({"client_name": "Renamed", "redirect_uris": ["http://127.0.0.1/cb2"], "client_uri": null}),
    );
    assert_eq!(
        store(&gw, &url, &renamed, 10_800, 3660, 3660).await,
        json!({})
    );
    let row = one_row(
        &admin,
        "SELECT client_name, redirect_uris, metadata FROM oauth.list_clients() WHERE client_id = $1",
        &[&url],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "Renamed");
    assert_eq!(row.get::<_, Vec<String>>(1), vec!["http://127.0.0.1/cb2"]);
    assert_eq!(
        row.get::<_, Value>(2),
        json!({"metadata_document": true}),
        "fields the new document dropped are gone"
    );
    assert_error(
        &begin_at(&gw, &url, redirect, 3700).await,
        "invalid_request",
        "a redirect URI the new document no longer lists",
    );
    assert_ok(
        &begin_at(&gw, &url, "http://127.0.0.1:4000/cb2", 3700).await,
        "the new redirect URI",
    );
    assert_eq!(client_count(&admin, &url).await, 1);
}

#[tokio::test]
async fn invalid_documents_are_rejected_and_negatively_cached_until_retry_at() {
    let (admin, gw) = (admin().await, gateway().await);
    let metadata = "invalid_client_metadata";
    let redirect_uri = "invalid_redirect_uri";
    let device_only = json!(["urn:ietf:params:oauth:grant-type:device_code"]);
    let client_credentials = json!(["authorization_code", "client_credentials"]);
    let cases = [
        (
            "not a JSON object",
            json!(["not", "an", "object"]),
            metadata,
        ),
        (
            "client_id differs from the URL",
            json!({"client_id": "https://other.example/c.json"}),
            metadata,
        ),
        ("client_id missing", json!({"client_id": null}), metadata),
        (
            "client_secret present",
            json!({"client_secret": "s3cret"}),
            metadata,
        ),
        (
            "client_secret_expires_at present",
            json!({"client_secret_expires_at": 0}),
            metadata,
        ),
        (
            "client_secret_basic",
            json!({"token_endpoint_auth_method": "client_secret_basic"}),
            metadata,
        ),
        (
            "private_key_jwt",
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            metadata,
        ),
        (
            "redirect_uris missing",
            json!({"redirect_uris": null}),
            redirect_uri,
        ),
        (
            "redirect_uris missing, device grant only",
            json!({"redirect_uris": null, "grant_types": device_only}),
            redirect_uri,
        ),
        (
            "plain http redirect URI",
            json!({"redirect_uris": ["http://app.example/cb"]}),
            redirect_uri,
        ),
        (
            "client_credentials for a public client",
            json!({"grant_types": client_credentials}),
            metadata,
        ),
    ];
    for (what, changes, code) in cases {
        let url = document_url();
        let invalid = document_with(&url, &changes);
        let answer = store(&gw, &url, &invalid, 3600, 300, 0).await;
        assert_error(&answer, code, what);
        assert_eq!(
            client_count(&admin, &url).await,
            0,
            "{what}: no client is made"
        );
        let (failure, failures) = cache_row(&admin, &url).await;
        assert_eq!(
            failure.as_deref(),
            answer["error_description"].as_str(),
            "{what}: the failure is recorded"
        );
        assert_eq!(failures, 1, "{what}");

        // Until retry_at every authorization is refused without another fetch; then it may try again.
        let refused = begin_at(&gw, &url, "http://127.0.0.1/callback", 299).await;
        assert_error(&refused, "invalid_client", what);
        assert_eq!(refused["redirect"], json!(false), "{what}");
        assert_fetch(
            &begin_at(&gw, &url, "http://127.0.0.1/callback", 300).await,
            &url,
            what,
        );
        // Another failure counts.
        store(&gw, &url, &invalid, 3600, 600, 300).await;
        assert_eq!(cache_row(&admin, &url).await.1, 2, "{what}");
    }
}

#[tokio::test]
async fn store_client_document_refuses_ids_that_are_not_https_urls() {
    let gw = gateway().await;
    for id in ["http://app.example/c.json", "app.example/c.json", ""] {
        let answer = store(&gw, id, &json!({"client_id": id}), 3600, 300, 0).await;
        assert_error(&answer, "invalid_request", id);
        assert_sqlstate(
            record_failure(&gw, id, "timeout", Some(300), 0).await,
            "OA400",
            id,
        );
    }
}

#[tokio::test]
async fn a_recorded_fetch_failure_refuses_the_client_until_retry_at_and_a_valid_store_clears_it() {
    let (admin, gw) = (admin().await, gateway().await);
    let url = document_url();
    let redirect = "http://127.0.0.1:7000/callback";
    record_failure(&gw, &url, "fetch timed out", Some(120), 0)
        .await
        .unwrap();
    let refused = begin_at(&gw, &url, redirect, 60).await;
    assert_error(&refused, "invalid_client", "while the failure is cached");
    // Why no document came is the operator's (it is in client_documents.failure): the browser's
    // page would otherwise tell a closed port from a timeout from a 404.
    assert_eq!(
        str_field(&refused, "error_description"),
        "the client's metadata document could not be fetched",
        "{refused}"
    );
    assert_fetch(
        &begin_at(&gw, &url, redirect, 120).await,
        &url,
        "at retry_at",
    );
    record_failure(&gw, &url, "HTTP 500", Some(300), 120)
        .await
        .unwrap();
    assert_eq!(
        cache_row(&admin, &url).await,
        (Some("HTTP 500".into()), 2),
        "consecutive failures are counted"
    );
    // No retry_at: the next authorization may fetch at once.
    record_failure(&gw, &url, "HTTP 503", None, 130)
        .await
        .unwrap();
    assert_fetch(
        &begin_at(&gw, &url, redirect, 130).await,
        &url,
        "no retry_at",
    );

    assert_eq!(
        store(&gw, &url, &document(&url), 4000, 400, 140).await,
        json!({})
    );
    assert_eq!(cache_row(&admin, &url).await, (None, 0));
    assert_ok(
        &begin_at(&gw, &url, redirect, 150).await,
        "after a good fetch",
    );

    // A once-good client whose refetch fails keeps its last good copy until retry_at (issue 10,
    // item 9: refusing it let anyone who can make a fetch fail lock its users out).
    record_failure(&gw, &url, "TLS error", Some(4500), 4000)
        .await
        .unwrap();
    assert_ok(
        &begin_at(&gw, &url, redirect, 4100).await,
        "failed refetch: the stale copy serves",
    );
    assert_fetch(
        &begin_at(&gw, &url, redirect, 4500).await,
        &url,
        "retry_at of the failed refetch",
    );
    assert_eq!(
        client_count(&admin, &url).await,
        1,
        "the client row stays for its tokens"
    );
}

#[tokio::test]
async fn a_document_cannot_take_over_an_administrator_client_with_the_same_https_id() {
    let (admin, gw) = (admin().await, gateway().await);
    let url = document_url();
    // create_client draws random ids, so an https id can only come from the table itself.
    execute(
        &admin,
        "INSERT INTO oauth.clients (client_id, secret_hash, client_name, redirect_uris, allowed_scopes,
                                        token_endpoint_auth_method, application_type, created_at, updated_at)
             VALUES ($1, oauth.token_hash('admin-secret'), 'Admin Client', '{https://admin.example/cb}',
                     '{mcp}', 'client_secret_basic', 'web', now(), now())",
        &[&url],
    )
    .await;
    let answer = store(&gw, &url, &document(&url), 3600, 300, 0).await;
    assert_error(
        &answer,
        "invalid_client",
        "document for an administrator's id",
    );
    let row = one_row(
        &admin,
        "SELECT client_name, redirect_uris, token_endpoint_auth_method, metadata,
                    secret_hash = oauth.token_hash('admin-secret')
               FROM oauth.clients WHERE client_id = $1",
        &[&url],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "Admin Client");
    assert_eq!(
        row.get::<_, Vec<String>>(1),
        vec!["https://admin.example/cb"]
    );
    assert_eq!(row.get::<_, String>(2), "client_secret_basic");
    assert_eq!(row.get::<_, Value>(3), json!({}));
    assert!(row.get::<_, bool>(4), "the secret is untouched");

    // The administrator's client is not a document client: it authorizes as registered, without a
    // fetch, and neither a missing nor a failed document locks it out.
    let admin_client = TestClient {
        id: url.clone(),
        secret: Some("admin-secret".into()),
        redirect_uri: "https://admin.example/cb".into(),
        spec: ClientSpec::default(),
    };
    let request = Authorize {
        params: json!({"scope": "mcp", "nonce": null}),
        ..Authorize::new(&admin_client)
    };
    let begun = begin_request_at(&gw, &request, 10).await;
    assert_ok(&begun, "administrator's https client");
    let tokens = tokens_for_scoped(&gw, &admin_client).await;
    assert_eq!(str_field(&tokens, "client_id"), url);
}

/// A code flow for `client` asking only for mcp.
async fn tokens_for_scoped(db: &Client, client: &TestClient) -> Value {
    let auth = Authorize {
        params: json!({"scope": "mcp"}),
        ..Authorize::new(client)
    }
    .run(db, &unique("user"))
    .await;
    let answer = exchange(db, client, &auth).await;
    assert_ok(&answer, "exchange_code");
    answer
}

#[tokio::test]
async fn loopback_only_is_true_exactly_when_every_redirect_uri_is_loopback() {
    let (admin, gw) = (admin().await, gateway().await);
    let loopback_doc = document_url();
    assert_eq!(
        store(&gw, &loopback_doc, &document(&loopback_doc), 3600, 300, 0).await,
        json!({})
    );
    let mixed_doc = document_url();
    let mixed = document_with(
        &mixed_doc,
        &json!({"redirect_uris": ["http://127.0.0.1/callback", "com.example.app:/cb"],
                "application_type": "native"}),
    );
    assert_eq!(
        store(&gw, &mixed_doc, &mixed, 3600, 300, 0).await,
        json!({})
    );
    let web_doc = document_url();
    let web = document_with(
        &web_doc,
        &json!({"redirect_uris": ["https://web.example/cb"]}),
    );
    assert_eq!(store(&gw, &web_doc, &web, 3600, 300, 0).await, json!({}));

    let loopback_only = |request_id: String| {
        let gw = &gw;
        async move {
            scalar::<bool>(
                gw,
                "SELECT loopback_only FROM oauth.get_authorization_request($1, $2::text::timestamptz)",
                &[&request_id, &at(20)],
            )
            .await
        }
    };
    for (url, redirect, expected) in [
        (&loopback_doc, "http://localhost:9999/callback", true),
        (&mixed_doc, "http://127.0.0.1:9999/callback", false),
        (&web_doc, "https://web.example/cb", false),
    ] {
        let begun = begin_at(&gw, url, redirect, 10).await;
        assert_ok(&begun, redirect);
        assert_eq!(
            loopback_only(str_field(&begun, "request_id").to_owned()).await,
            expected,
            "{url} via {redirect}"
        );
    }

    // The same rule for administrator-created clients.
    for (spec, expected) in [
        (ClientSpec::public_native(), true),
        (
            ClientSpec {
                redirect_uris: vec![
                    "http://127.0.0.1/callback".into(),
                    "http://[::1]/callback".into(),
                ],
                ..ClientSpec::public_native()
            },
            true,
        ),
        (
            ClientSpec {
                redirect_uris: vec![
                    "http://127.0.0.1/callback".into(),
                    "https://app.example/cb".into(),
                ],
                ..ClientSpec::public_native()
            },
            false,
        ),
        (ClientSpec::default(), false),
    ] {
        let client = create_client(&admin, spec).await;
        let begun = Authorize::new(&client).begin(&gw).await;
        assert_ok(&begun, &client.redirect_uri);
        let flag = loopback_only_now(&gw, &begun).await;
        assert_eq!(flag, expected, "{:?}", client.spec.redirect_uris);
    }
}

// Tests with the database clock (`now()`), and cleanup of negative entries.

async fn begin_now(gw: &Client, client_id: &str, redirect_uri: &str) -> Value {
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

async fn store_for(gw: &Client, client_id: &str, document: &Value, fresh_for: &str) -> Value {
    scalar(
        gw,
        "SELECT oauth.store_client_document($1, $2, now() + $3::text::interval, now() + interval '1 minute')",
        &[&client_id, document, &fresh_for],
    )
    .await
}

/// The consent screen's `loopback_only` of the request `begun` started.
async fn loopback_only_now(gw: &Client, begun: &Value) -> bool {
    scalar(
        gw,
        "SELECT loopback_only FROM oauth.get_authorization_request($1)",
        &[&str_field(begun, "request_id")],
    )
    .await
}

#[tokio::test]
async fn a_stored_document_makes_a_public_client_until_it_goes_stale() {
    let gw = gateway().await;
    let url = document_url();
    let asked = begin_now(&gw, &url, "http://127.0.0.1:4567/callback").await;
    assert_eq!(asked["fetch_client_document"], json!(url));
    assert_eq!(asked["redirect"], json!(false));

    let document = json!({"client_id": url, "client_name": "CLI", "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"]});
    assert_eq!(store_for(&gw, &url, &document, "1 hour").await, json!({}));
    // A port-less loopback registration matches any port (RFC 8252 §7.3).
    let begun = begin_now(&gw, &url, "http://127.0.0.1:4567/callback").await;
    assert_ok(&begun, "authorization with a stored document");
    assert!(loopback_only_now(&gw, &begun).await);
    let refused = begin_now(&gw, &url, "https://elsewhere.example/callback").await;
    assert_error(&refused, "invalid_request", "unlisted redirect URI");
    assert_eq!(refused["redirect"], json!(false));

    assert_eq!(
        store_for(&gw, &url, &document, "0 seconds").await,
        json!({})
    );
    assert_eq!(
        begin_now(&gw, &url, "http://127.0.0.1:4567/callback").await["fetch_client_document"],
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
        let answer = store_for(&gw, &url, &document, "1 hour").await;
        assert!(
            answer["error_description"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{answer}"
        );
        let cached = begin_now(&gw, &url, "http://127.0.0.1/cb").await;
        assert_error(&cached, "invalid_client", reason);
        assert!(
            cached["error_description"]
                .as_str()
                .unwrap()
                .contains(reason)
        );
    }
    let row = one_row(
        &admin,
        "SELECT consecutive_failures, (SELECT count(*) FROM oauth.clients WHERE client_id = $1) FROM oauth.client_documents WHERE client_id = $1",
        &[&url],
    )
    .await;
    assert_eq!(row.get::<_, i32>(0), 5);
    assert_eq!(row.get::<_, i64>(1), 0, "no client was made");

    execute(
        &gw,
        "SELECT oauth.record_client_document_failure($1, 'timed out', now() + interval '1 minute')",
        &[&document_url()],
    )
    .await;
    let kept = cleanup_at(&admin, "0 seconds").await;
    assert_eq!(kept, 0, "negative entries stay while they are fresh");
    assert_eq!(cleanup_at(&admin, "2 minutes").await, 2);
    assert_sqlstate(
        gw.execute("SELECT oauth.record_client_document_failure('http://plain.example/c.json', 'x', now())", &[]).await,
        "OA400",
        "not a document URL",
    );
}

async fn cleanup_at(admin: &Client, later: &str) -> i64 {
    scalar(
        admin,
        "SELECT oauth.cleanup(now() + $1::text::interval)",
        &[&later],
    )
    .await
}

#[tokio::test]
async fn cleanup_forgets_document_clients_without_a_live_grant_once_stale_past_retention() {
    let db = TempDb::create().await;
    let (admin, gw) = (db.admin().await, db.gateway().await);
    let (unused, consented) = (document_url(), document_url());
    for url in [&unused, &consented] {
        let document = json!({"client_id": url, "client_name": "CLI", "redirect_uris": ["http://127.0.0.1/callback"]});
        assert_eq!(store_for(&gw, url, &document, "1 hour").await, json!({}));
    }
    let begun = begin_now(&gw, &consented, "http://127.0.0.1:4567/callback").await;
    assert_ok(&begun, "authorization by a document client");
    consent_to(&gw, &begun).await;

    // Stale for less than the retention (7 days by default): both stay.
    cleanup_at(&admin, "7 days").await;
    assert_eq!(client_count(&admin, &unused).await, 1);
    assert_eq!(client_count(&admin, &consented).await, 1);

    // Past it: the client nobody consented to goes, with its cached copy; the other is a user's grant.
    cleanup_at(&admin, "7 days 2 hours").await;
    assert_eq!(client_count(&admin, &unused).await, 0);
    assert_eq!(client_count(&admin, &consented).await, 1);
    let cached: i64 = row_count(
        &admin,
        "oauth.client_documents WHERE client_id = $1",
        &[&unused],
    )
    .await;
    assert_eq!(cached, 0);
    assert_eq!(
        begin_now(&gw, &unused, "http://127.0.0.1:4567/callback").await["fetch_client_document"],
        json!(unused),
        "the next authorization fetches the document again"
    );

    // Once the user revokes the grant, the client follows it out after the retention.
    execute(
        &admin,
        "SELECT oauth.revoke_grant(grant_id) FROM oauth.grants WHERE client_id = $1",
        &[&consented],
    )
    .await;
    cleanup_at(&admin, "7 days 2 hours").await;
    assert_eq!(client_count(&admin, &consented).await, 0);
}

#[tokio::test]
async fn a_deleted_document_client_is_fetched_again_not_served_from_its_cached_copy() {
    let (admin, gw) = (admin().await, gateway().await);
    let url = document_url();
    let document = json!({"client_id": url, "redirect_uris": ["http://127.0.0.1/callback"]});
    assert_eq!(store_for(&gw, &url, &document, "1 hour").await, json!({}));
    delete_client(&admin, &url).await;
    assert_eq!(
        begin_now(&gw, &url, "http://127.0.0.1:4567/callback").await["fetch_client_document"],
        json!(url)
    );
}
