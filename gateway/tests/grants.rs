//! The grants beyond the code flow, over real HTTP: client_credentials, the device flow
//! (RFC 8628), token exchange (RFC 8693), and the RFC 7592 client configuration endpoint.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const OTHER_RESOURCE: &str = "https://calendar.example.com/mcp";

async fn create_client(
    gw: &Gateway,
    method: &str,
    grant_types: &[&str],
    redirect_uris: &[&str],
) -> (String, Option<String>) {
    let grant_types: Vec<String> = grant_types.iter().map(|s| s.to_string()).collect();
    let redirect_uris: Vec<String> = redirect_uris.iter().map(|s| s.to_string()).collect();
    let row = gw
        .admin
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client('Machine', $1, '{mcp,profile,openid,offline_access}', $2, $3, 'native')",
            &[&redirect_uris, &method, &grant_types],
        )
        .await
        .expect("create_client");
    (row.get(0), row.get(1))
}

async fn introspect(gw: &Gateway, id: &str, secret: &str, token: &str) -> Value {
    gw.http
        .post_form(
            &gw.url("/introspect"),
            &[("token", token)],
            &[("authorization", &basic(id, secret))],
        )
        .await
        .json()
}

#[tokio::test]
async fn client_credentials_issue_a_client_token_until_its_grant_is_revoked() {
    let gw = Gateway::start().await;
    let (id, secret) =
        create_client(&gw, "client_secret_basic", &["client_credentials"], &[]).await;
    let secret = secret.unwrap();
    let auth = basic(&id, &secret);

    let resp = gw
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("scope", "mcp"),
                ("resource", RESOURCE),
            ],
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.json();
    assert!(
        body.get("refresh_token").is_none(),
        "no user, no refresh token"
    );
    assert!(body.get("id_token").is_none());
    let token = body["access_token"].as_str().unwrap();
    let claims = gw
        .app
        .verify_own_token(token, Some(RESOURCE), true)
        .unwrap();
    assert_eq!(claims["sub"], json!(id), "the client is the subject");
    assert_eq!(claims["client_id"], json!(id));
    assert_eq!(claims["scope"], "mcp");
    assert_eq!(
        introspect(&gw, &id, &secret, token).await["active"],
        json!(true)
    );

    // A user-only scope, another client's audience, no grant type, a wrong secret: each refused.
    let openid = gw
        .token(
            &[("grant_type", "client_credentials"), ("scope", "openid")],
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(
        (openid.status, openid.oauth_error().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_scope")
    );
    let wrong = gw
        .token(
            &[("grant_type", "client_credentials")],
            &[("authorization", &basic(&id, "nope"))],
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.oauth_error().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Basic realm=\"oauth\"")
    );
    let (code_client, code_secret) = gw.client(false, &["mcp"]).await;
    let not_allowed = gw
        .token(
            &[("grant_type", "client_credentials")],
            &[("authorization", &basic(&code_client, &code_secret.unwrap()))],
        )
        .await;
    assert_eq!(not_allowed.oauth_error(), "unauthorized_client");

    // Another client cannot revoke the token (no effect, no error: RFC 7009 §2.2); the client
    // itself can, which ends its grant; its next request opens a new one.
    let (other, other_secret) =
        create_client(&gw, "client_secret_basic", &["client_credentials"], &[]).await;
    let revoke = |auth: String, token: String| {
        let gw = &gw;
        async move {
            gw.http
                .post_form(
                    &gw.url("/revoke"),
                    &[("token", &token)],
                    &[("authorization", &auth)],
                )
                .await
        }
    };
    let foreign = revoke(basic(&other, &other_secret.unwrap()), token.to_owned()).await;
    assert_eq!(foreign.status, StatusCode::OK, "{}", foreign.text());
    assert_eq!(
        introspect(&gw, &id, &secret, token).await["active"],
        json!(true)
    );
    let own = revoke(auth.clone(), token.to_owned()).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text());
    assert_eq!(
        introspect(&gw, &id, &secret, token).await["active"],
        json!(false)
    );
    let renewed = gw
        .token(
            &[("grant_type", "client_credentials"), ("resource", RESOURCE)],
            &[("authorization", &auth)],
        )
        .await
        .json();
    let token = renewed["access_token"].as_str().unwrap();
    assert_eq!(
        introspect(&gw, &id, &secret, token).await["active"],
        json!(true)
    );

    // Revoking the client's grant kills the tokens already issued; the next request opens a new grant.
    let grant_id: uuid::Uuid = gw
        .admin
        .query_one(
            "SELECT grant_id FROM oauth.grants WHERE client_id = $1 AND subject_type = 'client' AND revoked_at IS NULL",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    gw.admin
        .execute("SELECT oauth.revoke_grant($1)", &[&grant_id])
        .await
        .unwrap();
    assert_eq!(
        introspect(&gw, &id, &secret, token).await["active"],
        json!(false)
    );
    let again = gw
        .token(
            &[("grant_type", "client_credentials")],
            &[("authorization", &auth)],
        )
        .await
        .json();
    let new_claims = gw
        .app
        .verify_own_token(again["access_token"].as_str().unwrap(), None, true)
        .unwrap();
    assert_ne!(new_claims["grant_id"], json!(grant_id.to_string()));
    gw.stop().await;
}

struct DevicePage {
    user_code: String,
    csrf: String,
}

async fn open_device_page(gw: &Gateway, verification_uri_complete: &str) -> DevicePage {
    let page = gw.http.get(verification_uri_complete, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let text = page.text();
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = text
            .find(&marker)
            .unwrap_or_else(|| panic!("{name} in page"))
            + marker.len();
        text[start..].split('"').next().unwrap().to_owned()
    };
    DevicePage {
        user_code: field("user_code"),
        csrf: field("csrf_token"),
    }
}

async fn poll(gw: &Gateway, client_id: &str, device_code: &str) -> common::Response {
    gw.token(
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", device_code),
            ("client_id", client_id),
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn device_flow_polls_pending_then_slow_down_then_tokens_once() {
    let gw = Gateway::start().await;
    let (id, _) = create_client(&gw, "none", &[DEVICE_GRANT, "refresh_token"], &[]).await;
    let started = gw
        .http
        .post_form(
            &gw.url("/device_authorization"),
            &[("client_id", &id), ("scope", "mcp")],
            &[],
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.text());
    assert_eq!(started.header("cache-control"), Some("no-store"));
    let started = started.json();
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    let user_code = started["user_code"].as_str().unwrap();
    assert!(
        user_code.len() == 9
            && user_code.chars().enumerate().all(|(i, c)| if i == 4 {
                c == '-'
            } else {
                "BCDFGHJKLMNPQRSTVWXZ".contains(c)
            }),
        "{user_code}"
    );
    assert_eq!(started["verification_uri"], json!(gw.url("/device")));
    assert_eq!(started["interval"], json!(5));
    assert!(started["expires_in"].as_u64().unwrap() >= 60);

    let pending = poll(&gw, &id, &device_code).await;
    assert_eq!(
        (pending.status, pending.oauth_error().as_str()),
        (StatusCode::BAD_REQUEST, "authorization_pending")
    );
    assert_eq!(
        poll(&gw, &id, &device_code).await.oauth_error(),
        "slow_down",
        "polled within the interval"
    );

    // The user types the code in lower case with a space: the page still finds it.
    let entry = gw.http.get(&gw.url("/device"), &[]).await;
    assert!(entry.text().contains("name=\"user_code\""));
    let typed = user_code.to_lowercase().replace('-', " ");
    let page = open_device_page(
        &gw,
        &format!(
            "{}?user_code={}",
            gw.url("/device"),
            typed.replace(' ', "+")
        ),
    )
    .await;
    let forged = gw
        .http
        .post_form(
            &gw.url("/device"),
            &[
                ("user_code", &page.user_code),
                ("csrf_token", "AAAA"),
                ("decision", "approve"),
            ],
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let approved = gw
        .http
        .post_form(
            &gw.url("/device"),
            &[
                ("user_code", &page.user_code),
                ("csrf_token", &page.csrf),
                ("decision", "approve"),
            ],
            &[],
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text());
    assert!(approved.text().contains("Device connected"));

    let tokens = poll(&gw, &id, &device_code).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let tokens = tokens.json();
    let claims = gw
        .app
        .verify_own_token(tokens["access_token"].as_str().unwrap(), None, true)
        .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "mcp");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(
        gw.refresh(&id, refresh).await.status,
        StatusCode::OK,
        "device tokens refresh"
    );

    // Single use: a replayed device code fails and revokes what it issued.
    assert_eq!(
        poll(&gw, &id, &device_code).await.oauth_error(),
        "invalid_grant"
    );
    let revoked: bool = gw
        .admin
        .query_one("SELECT revoked_at IS NOT NULL FROM oauth.refresh_families WHERE family_id = $1::text::uuid", &[&claims["family_id"].as_str().unwrap()])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    gw.stop().await;
}

#[tokio::test]
async fn device_flow_denied_by_the_user_answers_access_denied() {
    let gw = Gateway::start().await;
    let (id, _) = create_client(&gw, "none", &[DEVICE_GRANT], &[]).await;
    let started = gw
        .http
        .post_form(&gw.url("/device_authorization"), &[("client_id", &id)], &[])
        .await
        .json();
    let page = open_device_page(&gw, started["verification_uri_complete"].as_str().unwrap()).await;
    let denied = gw
        .http
        .post_form(
            &gw.url("/device"),
            &[
                ("user_code", &page.user_code),
                ("csrf_token", &page.csrf),
                ("decision", "deny"),
            ],
            &[],
        )
        .await;
    assert!(denied.text().contains("Request denied"));
    assert_eq!(
        poll(&gw, &id, started["device_code"].as_str().unwrap())
            .await
            .oauth_error(),
        "access_denied"
    );
    // The decided code is gone from the page.
    let again = gw
        .http
        .get(started["verification_uri_complete"].as_str().unwrap(), &[])
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    let (code_only, _) = gw.client(true, &["mcp"]).await;
    let refused = gw
        .http
        .post_form(
            &gw.url("/device_authorization"),
            &[("client_id", &code_only)],
            &[],
        )
        .await;
    assert_eq!(refused.oauth_error(), "unauthorized_client");
    let get = gw.http.get(&gw.url("/device_authorization"), &[]).await;
    assert_eq!(get.oauth_error(), "invalid_request");
    gw.stop().await;
}

#[tokio::test]
async fn token_exchange_narrows_audience_and_scope_and_names_the_actor() {
    let gw = Gateway::start().await;
    // The user authorizes an MCP client for the first MCP server (RESOURCE).
    let (user_client, _) = gw.client(true, &["mcp", "profile", "offline_access"]).await;
    let pkce = pkce();
    let code = gw
        .code(
            &user_client,
            &pkce,
            &[("scope", "mcp profile offline_access")],
        )
        .await;
    let user_tokens = gw.exchange(&user_client, None, &code, &pkce).await.json();
    let subject = user_tokens["access_token"].as_str().unwrap().to_owned();
    let subject_claims = gw
        .app
        .verify_own_token(&subject, Some(RESOURCE), true)
        .unwrap();

    // That MCP server is a confidential client allowed to exchange its tokens for the calendar's.
    let (server, server_secret) =
        create_client(&gw, "client_secret_basic", &["client_credentials"], &[]).await;
    let server_secret = server_secret.unwrap();
    gw.admin
        .execute(
            "SELECT oauth.set_token_exchange_policy($1, ARRAY[$2], ARRAY[$3], '{mcp}')",
            &[&server, &RESOURCE, &OTHER_RESOURCE],
        )
        .await
        .unwrap();
    let auth = basic(&server, &server_secret);
    let exchange = |extra: Vec<(&'static str, String)>| {
        let mut pairs: Vec<(&str, String)> = vec![
            ("grant_type", EXCHANGE_GRANT.into()),
            ("subject_token", subject.clone()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.into()),
            ("resource", OTHER_RESOURCE.into()),
        ];
        for (k, v) in extra {
            pairs.retain(|(name, _)| *name != k);
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        let auth = auth.clone();
        let gw = &gw;
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            gw.token(&pairs, &[("authorization", &auth)]).await
        }
    };

    let resp = exchange(vec![]).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let body = resp.json();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert!(body.get("refresh_token").is_none());
    let exchanged = body["access_token"].as_str().unwrap().to_owned();
    let claims = gw
        .app
        .verify_own_token(&exchanged, Some(OTHER_RESOURCE), true)
        .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], json!(server));
    assert_eq!(claims["act"], json!({"sub": server}));
    assert_eq!(
        claims["scope"], "mcp",
        "the policy's ceiling, never offline_access"
    );
    assert_eq!(claims["grant_id"], subject_claims["grant_id"]);
    assert!(claims["exp"].as_u64() <= subject_claims["exp"].as_u64());
    // The token for the first server is refused where the exchanged one is meant to go, and vice versa.
    assert!(
        gw.app
            .verify_own_token(&exchanged, Some(RESOURCE), true)
            .is_err()
    );

    for (extra, error) in [
        (
            vec![("resource", "https://elsewhere.example/mcp".to_string())],
            "invalid_target",
        ),
        (vec![("scope", "profile".to_string())], "invalid_scope"),
        (
            vec![(
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:jwt".to_string(),
            )],
            "invalid_request",
        ),
        (
            vec![("subject_token", "not-a-token".to_string())],
            "invalid_request",
        ),
        (vec![("resource", String::new())], "invalid_request"),
        (vec![("actor_token", "x".to_string())], "invalid_request"),
    ] {
        let what = format!("{extra:?}");
        assert_eq!(exchange(extra).await.oauth_error(), error, "{what}");
    }
    // A client without a policy may not exchange at all.
    let (other, other_secret) =
        create_client(&gw, "client_secret_basic", &["client_credentials"], &[]).await;
    let refused = gw
        .token(
            &[
                ("grant_type", EXCHANGE_GRANT),
                ("subject_token", &subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
                ("audience", OTHER_RESOURCE),
            ],
            &[("authorization", &basic(&other, &other_secret.unwrap()))],
        )
        .await;
    assert_eq!(refused.oauth_error(), "unauthorized_client");

    // The user revokes the app: the subject can no longer be exchanged and the exchanged token dies with it.
    gw.admin
        .execute(
            "SELECT oauth.revoke_grant($1::text::uuid)",
            &[&subject_claims["grant_id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(exchange(vec![]).await.oauth_error(), "invalid_request");
    assert_eq!(
        introspect(&gw, &server, &server_secret, &exchanged).await["active"],
        json!(false)
    );
    gw.stop().await;
}

async fn with_bearer(
    gw: &Gateway,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> common::Response {
    let mut b = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    gw.http.send(b.body(Full::new(body)).unwrap()).await
}

#[tokio::test]
async fn registered_client_reads_updates_and_deletes_its_registration_rfc7592() {
    let gw = Gateway::start().await;
    let registered = gw
        .http
        .post_raw(
            &gw.url("/register"),
            "application/json",
            json!({"client_name": "CLI", "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none"}).to_string(),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let registered = registered.json();
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let token = registered["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let uri = registered["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(uri, gw.url(&format!("/register/{client_id}")));

    let read = with_bearer(&gw, "GET", &uri, &token, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    assert_eq!(read.header("cache-control"), Some("no-store"));
    let read = read.json();
    assert_eq!(read["client_name"], "CLI");
    assert!(
        read.get("registration_access_token").is_none(),
        "shown once, at registration"
    );

    let wrong = with_bearer(&gw, "GET", &uri, "not-the-token", None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    let unknown = with_bearer(
        &gw,
        "GET",
        &gw.url("/register/no-such-client"),
        &token,
        None,
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.text()),
        (wrong.status, wrong.text()),
        "unknown client looks like a wrong token"
    );
    let no_bearer = gw.http.get(&uri, &[]).await;
    assert_eq!(no_bearer.status, StatusCode::UNAUTHORIZED);

    let updated = with_bearer(
        &gw,
        "PUT",
        &uri,
        &token,
        Some(json!({"client_id": client_id, "client_name": "CLI v2", "redirect_uris": ["http://127.0.0.1/cb2"], "token_endpoint_auth_method": "none"})),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    assert_eq!(
        updated.json()["redirect_uris"],
        json!(["http://127.0.0.1/cb2"])
    );
    let missing_id = with_bearer(
        &gw,
        "PUT",
        &uri,
        &token,
        Some(json!({"redirect_uris": ["http://127.0.0.1/cb"]})),
    )
    .await;
    assert_eq!(missing_id.oauth_error(), "invalid_client_metadata");
    let bad_redirect = with_bearer(
        &gw,
        "PUT",
        &uri,
        &token,
        Some(json!({"client_id": client_id, "redirect_uris": ["http://evil.example/cb"], "token_endpoint_auth_method": "none"})),
    )
    .await;
    assert_eq!(bad_redirect.oauth_error(), "invalid_redirect_uri");

    let deleted = with_bearer(&gw, "DELETE", &uri, &token, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        with_bearer(&gw, "GET", &uri, &token, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let gone: i64 = gw
        .admin
        .query_one(
            "SELECT count(*) FROM oauth.clients WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    gw.stop().await;
}

#[tokio::test]
async fn guessing_user_codes_is_stopped_after_ten_misses() {
    let gw = Gateway::start().await;
    let (id, _) = create_client(&gw, "none", &[DEVICE_GRANT], &[]).await;
    let started = gw
        .http
        .post_form(&gw.url("/device_authorization"), &[("client_id", &id)], &[])
        .await
        .json();
    for guess in 0..10 {
        let miss = gw
            .http
            .get(
                &format!("{}?user_code=BCDF-{guess:04}", gw.url("/device")),
                &[],
            )
            .await;
        assert_eq!(miss.status, StatusCode::BAD_REQUEST, "guess {guess}");
    }
    // Even the right code is refused now: the user must wait out the window.
    let refused = gw
        .http
        .get(started["verification_uri_complete"].as_str().unwrap(), &[])
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.text().contains("Too many attempts"));
    gw.stop().await;
}
