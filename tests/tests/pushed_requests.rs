//! Pushed Authorization Requests (RFC 9126) through the gateway role: oauth.push_authorization_request
//! and /authorize's request_uri (oauth.begin_authorization), single use, bound to its client,
//! short-lived, and "PAR required" per deployment and per client.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

async fn push(db: &Client, client_id: &str, secret: Option<&str>, params: &Value) -> Value {
    scalar(
        db,
        "SELECT oauth.push_authorization_request($1, $2, $3)",
        &[&client_id, &secret, params],
    )
    .await
}

async fn push_at(db: &Client, client: &TestClient, params: &Value) -> Value {
    push(db, &client.id, client.secret(), params).await
}

async fn authorize_by_uri(db: &Client, client_id: &str, request_uri: &str, at: &str) -> Value {
    scalar(
        db,
        "SELECT oauth.begin_authorization($1, now() + $2::text::interval)",
        &[
            &json!({"client_id": client_id, "request_uri": request_uri}),
            &at,
        ],
    )
    .await
}

#[tokio::test]
async fn a_pushed_request_is_authorized_once_by_its_request_uri_and_its_code_redeems() {
    let gw = gateway().await;
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let flow = Authorize::new(&client);
    let mut pushed_params = flow.request();
    pushed_params.as_object_mut().unwrap().remove("client_id");
    let pushed = push_at(&gw, &client, &pushed_params).await;
    assert_ok(&pushed, "push");
    let request_uri = str_field(&pushed, "request_uri").to_owned();
    assert!(
        request_uri.starts_with("urn:ietf:params:oauth:request_uri:") && request_uri.len() > 60,
        "{request_uri}"
    );
    assert_eq!(pushed["expires_in"], json!(90));
    let stored: i64 = scalar(
        &admin,
        "SELECT count(*) FROM oauth.authorization_requests
          WHERE request_uri_hash = $1 AND client_id = $2 AND pushed_until > now()",
        &[&sha256(&request_uri), &client.id],
    )
    .await;
    assert_eq!(stored, 1, "only the request_uri's digest is stored");

    // /authorize with the request_uri; parameters beside it are not the request (RFC 9126 §4).
    let begun: Value = scalar(
        &gw,
        "SELECT oauth.begin_authorization($1)",
        &[&json!({"client_id": client.id, "request_uri": request_uri,
                  "scope": "profile", "redirect_uri": "https://evil.example/cb", "state": "other"})],
    )
    .await;
    assert_ok(&begun, "authorize by request_uri");
    let request_id = str_field(&begun, "request_id").to_owned();
    let scopes: Vec<String> = scalar(
        &admin,
        "SELECT scopes FROM oauth.authorization_requests WHERE request_id = $1",
        &[&request_id],
    )
    .await;
    assert_eq!(scopes, vec!["openid", "mcp"], "the pushed scopes");
    let location = issue_code(&gw, &request_id, &unique("user"), None, &json!({})).await;
    let redirect = parse_redirect(&location);
    assert_eq!(redirect.base, client.redirect_uri);
    assert_eq!(
        redirect.param("state"),
        pushed_params["state"].as_str().unwrap()
    );
    let tokens = exchange(&gw, &client, &flow.redirected(location)).await;
    assert_ok(
        &tokens,
        "the code of a pushed request redeems with the pushed PKCE verifier",
    );

    let again = authorize_by_uri(&gw, &client.id, &request_uri, "0 seconds").await;
    assert_error(&again, "invalid_request_uri", "a request_uri is used once");
    assert_eq!(again["redirect"], json!(false));
}

#[tokio::test]
async fn a_request_uri_is_bound_to_its_client_and_expires() {
    let gw = gateway().await;
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let other = confidential_client(&admin).await;
    let flow = Authorize::new(&client);
    let pushed = push_at(&gw, &client, &flow.request()).await;
    let request_uri = str_field(&pushed, "request_uri").to_owned();

    let stolen = authorize_by_uri(&gw, &other.id, &request_uri, "0 seconds").await;
    assert_error(
        &stolen,
        "invalid_request_uri",
        "another client's request_uri",
    );
    let late = authorize_by_uri(&gw, &client.id, &request_uri, "91 seconds").await;
    assert_error(&late, "invalid_request_uri", "past expires_in");
    let forged = authorize_by_uri(
        &gw,
        &client.id,
        "urn:ietf:params:oauth:request_uri:x",
        "0 seconds",
    )
    .await;
    assert_error(&forged, "invalid_request_uri", "an unknown request_uri");
    for malformed in [
        json!({"request_uri": request_uri}),
        json!({"client_id": [client.id, client.id], "request_uri": request_uri}),
        json!({"client_id": client.id, "request_uri": [request_uri, request_uri]}),
    ] {
        let answer: Value =
            scalar(&gw, "SELECT oauth.begin_authorization($1)", &[&malformed]).await;
        assert_error(&answer, "invalid_request", &malformed.to_string());
        assert_eq!(answer["redirect"], json!(false));
    }
    // None of that spent it: its client, in time, still may.
    let begun = authorize_by_uri(&gw, &client.id, &request_uri, "80 seconds").await;
    assert_ok(&begun, "the client's own request_uri within expires_in");
    // The pending request lives on from here, not from the push.
    let lives: bool = scalar(
        &admin,
        "SELECT expires_at > now() + interval '80 seconds' + interval '9 minutes'
           FROM oauth.authorization_requests WHERE request_id = $1",
        &[&str_field(&begun, "request_id")],
    )
    .await;
    assert!(lives);
}

#[tokio::test]
async fn pushes_answer_errors_as_json_and_authenticate_the_client() {
    let gw = gateway().await;
    let admin = admin().await;
    let client = confidential_client(&admin).await;
    let public = create_client(&admin, ClientSpec::public_native()).await;
    let valid = Authorize::new(&client).request();

    let cases: Vec<(&str, &str, Option<&str>, Value, &str)> = vec![
        (
            "wrong secret",
            &client.id,
            Some("wrong"),
            valid.clone(),
            "invalid_client",
        ),
        (
            "no secret",
            &client.id,
            None,
            valid.clone(),
            "invalid_client",
        ),
        (
            "unknown client",
            "nobody",
            None,
            changed(&valid, json!({"client_id": "nobody"})),
            "invalid_client",
        ),
        (
            "a public client with a secret",
            &public.id,
            Some("x"),
            changed(
                &valid,
                json!({"client_id": public.id, "redirect_uri": public.redirect_uri}),
            ),
            "invalid_client",
        ),
        (
            "client_id of another client",
            &client.id,
            client.secret(),
            changed(&valid, json!({"client_id": public.id})),
            "invalid_request",
        ),
        (
            "a request_uri pushed",
            &client.id,
            client.secret(),
            changed(
                &valid,
                json!({"request_uri": "urn:ietf:params:oauth:request_uri:x"}),
            ),
            "invalid_request",
        ),
        (
            "unregistered redirect_uri",
            &client.id,
            client.secret(),
            changed(&valid, json!({"redirect_uri": "https://evil.example/cb"})),
            "invalid_request",
        ),
        (
            "no PKCE",
            &client.id,
            client.secret(),
            changed(&valid, json!({"code_challenge": null})),
            "invalid_request",
        ),
        (
            "plain PKCE",
            &client.id,
            client.secret(),
            changed(&valid, json!({"code_challenge_method": "plain"})),
            "invalid_request",
        ),
        (
            "token response",
            &client.id,
            client.secret(),
            changed(&valid, json!({"response_type": "token"})),
            "unsupported_response_type",
        ),
        (
            "unknown scope only",
            &client.id,
            client.secret(),
            changed(&valid, json!({"scope": "admin"})),
            "invalid_scope",
        ),
        (
            "request object",
            &client.id,
            client.secret(),
            changed(&valid, json!({"request": "eyJ.x.y"})),
            "request_not_supported",
        ),
        (
            "parameters not an object",
            &client.id,
            client.secret(),
            json!([1]),
            "invalid_request",
        ),
    ];
    // Other tests store requests meanwhile: count these two clients' only.
    let stored = async || -> i64 {
        scalar(
            &admin,
            "SELECT count(*) FROM oauth.authorization_requests WHERE client_id = ANY($1)",
            &[&vec![client.id.clone(), public.id.clone()]],
        )
        .await
    };
    let before = stored().await;
    for (what, client_id, secret, params, code) in cases {
        let answer = push(&gw, client_id, secret, &params).await;
        assert_error(&answer, code, what);
        let fields: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["error", "error_description"],
            "{what}: JSON only, no redirect"
        );
    }
    assert_eq!(stored().await, before, "a refused push stores nothing");

    // A public client pushes with its client_id alone (PKCE protects its code).
    let public_flow = Authorize::new(&public);
    let pushed = push(&gw, &public.id, None, &public_flow.request()).await;
    assert_ok(&pushed, "a public client's push");
    let begun = authorize_by_uri(
        &gw,
        &public.id,
        str_field(&pushed, "request_uri"),
        "0 seconds",
    )
    .await;
    assert_ok(&begun, "the public client's request_uri");
}

#[tokio::test]
async fn par_may_be_required_by_the_deployment_or_by_a_client() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let gw = db.gateway().await;

    // A client that registered require_pushed_authorization_requests (RFC 9126 §6).
    let registered = register(
        &gw,
        &json!({"redirect_uris": ["https://app.example/cb"], "require_pushed_authorization_requests": true}),
    )
    .await;
    assert_ok(&registered, "registration");
    assert_eq!(
        registered["require_pushed_authorization_requests"],
        json!(true)
    );
    let bad = register(
        &gw,
        &json!({"redirect_uris": ["https://app.example/cb"], "require_pushed_authorization_requests": "yes"}),
    )
    .await;
    assert_error(&bad, "invalid_client_metadata", "not a boolean");

    let strict = create_client(
        &admin,
        ClientSpec {
            metadata: json!({"require_pushed_authorization_requests": true}),
            ..Default::default()
        },
    )
    .await;
    let relaxed = confidential_client(&admin).await;
    let direct = Authorize::new(&strict).begin(&gw).await;
    assert_error(
        &direct,
        "invalid_request",
        "a strict client's request not pushed",
    );
    assert_eq!(
        direct["redirect"],
        json!(true),
        "its client and redirect URI are known: the error goes back to it"
    );
    assert_ok(
        &Authorize::new(&relaxed).begin(&gw).await,
        "other clients as before",
    );
    let pushed = push_at(&gw, &strict, &Authorize::new(&strict).request()).await;
    assert_ok(
        &authorize_by_uri(
            &gw,
            &strict.id,
            str_field(&pushed, "request_uri"),
            "0 seconds",
        )
        .await,
        "the strict client's pushed request",
    );

    let settings: Value = scalar(
        &admin,
        "SELECT oauth.configure(require_pushed_authorization_requests => true, pushed_request_ttl => '30 seconds')",
        &[],
    )
    .await;
    assert_eq!(
        settings["require_pushed_authorization_requests"],
        json!(true)
    );
    assert_eq!(settings["pushed_request_ttl"], json!(30));
    assert_error(
        &Authorize::new(&relaxed).begin(&gw).await,
        "invalid_request",
        "every request must be pushed",
    );
    let pushed = push_at(&gw, &relaxed, &Authorize::new(&relaxed).request()).await;
    assert_eq!(pushed["expires_in"], json!(30));
    assert_error(
        &authorize_by_uri(
            &gw,
            &relaxed.id,
            str_field(&pushed, "request_uri"),
            "31 seconds",
        )
        .await,
        "invalid_request_uri",
        "past the configured lifetime",
    );
    let out_of_range = admin
        .query_one(
            "SELECT oauth.configure(pushed_request_ttl => '1 hour')",
            &[],
        )
        .await;
    assert!(
        out_of_range.is_err(),
        "a request_uri lives at most 10 minutes"
    );
}

/// A client named by its metadata document may push before it ever came to /authorize: the push
/// asks the gateway to fetch the document first, then authenticates the client it describes.
#[tokio::test]
async fn a_metadata_document_client_pushes_once_its_document_is_fetched() {
    let gw = gateway().await;
    let url = format!("https://{}.example/client.json", unique("docs"));
    let document = json!({
        "client_id": url,
        "client_name": "Document Client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let pkce = Pkce::new();
    let params = json!({
        "client_id": url, "response_type": "code", "redirect_uri": "http://127.0.0.1:5000/callback",
        "scope": "mcp", "state": "s", "code_challenge": pkce.challenge, "code_challenge_method": "S256",
    });
    let first = push(&gw, &url, None, &params).await;
    assert_eq!(first, json!({"fetch_client_document": url}));
    let stored: Value = scalar(
        &gw,
        "SELECT oauth.store_client_document($1, $2, now() + interval '1 hour', now() + interval '5 minutes')",
        &[&url, &document],
    )
    .await;
    assert_ok(&stored, "store_client_document");
    let pushed = push(&gw, &url, None, &params).await;
    assert_ok(&pushed, "the push once the document is known");
    let begun = authorize_by_uri(&gw, &url, str_field(&pushed, "request_uri"), "0 seconds").await;
    assert_ok(&begun, "its request_uri");
}
