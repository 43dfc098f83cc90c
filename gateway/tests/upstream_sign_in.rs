//! Sign-in through an upstream identity provider, against a real one: oidc-provider (a certified
//! OpenID provider, `common::upstream`), driven like a browser with a cookie jar and form posts. The gateway as a strict
//! relying party (state, nonce, iss, the provider's errors as pages), browser sessions, the
//! request bound to its browser, prompt=none, the plain OAuth 2.0 shape, RP-Initiated Logout.

mod common;

use common::upstream::*;
use common::*;
use hyper::StatusCode;
use oauth_gateway::upstream::{RequiredClaim, UpstreamConfig};
use serde_json::json;

#[tokio::test]
async fn signing_in_through_an_openid_provider_starts_a_session_and_the_consent_is_the_users() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream, upstream.openid()).await;
    let client_id = gateway.public_client(&["openid", "mcp"]).await;
    gateway
        .admin
        .execute(
            "UPDATE oauth.clients SET metadata = metadata || '{\"post_logout_redirect_uris\": [\"https://app.example/bye\"]}' WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap();
    let discovery = gateway
        .get("/.well-known/openid-configuration")
        .await
        .ok_json();
    assert_eq!(
        discovery["end_session_endpoint"],
        json!(gateway.url("/logout"))
    );

    let mut browser = Browser::new();
    let authorization = Authorization {
        scope: "openid mcp",
        nonce: "client-nonce",
        ..Authorization::new(&client_id)
    };
    let upstream_url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    let sent = query_of(&upstream_url);
    assert_eq!(sent["code_challenge_method"], "S256");
    assert_eq!(sent["client_id"], CLIENT_ID);
    assert!(sent["nonce"].len() >= 40 && sent["state"].len() >= 40);
    assert!(browser.cookie(&gateway.base, "oauth_browser").is_some());

    let callback = sign_in_upstream(&mut browser, &upstream_url, "alice").await;
    assert!(
        callback.starts_with(&gateway.url("/login/callback")),
        "{callback}"
    );
    assert_eq!(
        query_of(&callback)["iss"],
        upstream.issuer,
        "RFC 9207 iss sent"
    );
    let signed_in = browser.get(&callback).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.text()
    );
    let set_cookie: Vec<&str> = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let session_cookie = set_cookie
        .iter()
        .find(|c| c.starts_with("oauth_session="))
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    let consent_url = signed_in.location();
    assert!(consent_url.contains("binding="), "{consent_url}");

    // The consent URL in another browser, signed in as someone else: refused.
    let mut other = Browser::new();
    let other_upstream = start_authorization(&mut other, &gateway, &authorization, &upstream).await;
    let other_callback = sign_in_upstream(&mut other, &other_upstream, "bob").await;
    assert_eq!(
        other.get(&other_callback).await.status,
        StatusCode::SEE_OTHER
    );
    let stolen = other.get(&consent_url).await;
    assert_eq!(stolen.status, StatusCode::BAD_REQUEST, "{}", stolen.text());
    assert!(stolen.text().contains("another browser"));

    let page = browser.get(&consent_url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(page.text().contains("alice"));
    let (request_id, csrf) = (
        form_field(&page.text(), "request_id"),
        form_field(&page.text(), "csrf_token"),
    );
    let decided = browser
        .post(
            &gateway.url("/consent"),
            &[
                ("request_id", &request_id),
                ("csrf_token", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
    let code = query_of(&decided.location())["code"].clone();
    let tokens = gateway
        .token(&TokenRequest::redeem(&authorization, &code))
        .await
        .ok_json();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let claims = jwt_segment(&id_token, 1);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "client-nonce");
    let auth_time = claims["auth_time"].as_i64().expect("auth_time");
    let session_auth_time: i64 = gateway
        .sql_value(
            "SELECT extract(epoch FROM auth_time)::int8 FROM oauth.browser_sessions WHERE user_id = 'alice'",
            &[],
        )
        .await;
    assert_eq!(
        auth_time, session_auth_time,
        "the upstream sign-in's auth_time"
    );
    let props: serde_json::Value = gateway
        .sql_value(
            "SELECT props FROM oauth.grants WHERE user_id = 'alice' AND revoked_at IS NULL",
            &[],
        )
        .await;
    assert_eq!(props["email"], "alice@example.com");
    assert_eq!(props["groups"], json!(["mcp-users"]));

    // prompt=login with a live session: the upstream is asked to authenticate again.
    let again = Authorization {
        state: "again",
        ..Authorization::new(&client_id)
    };
    let start = format!(
        "{}?{}&prompt=login",
        gateway.url("/authorize"),
        again.query()
    );
    let (_, resp) = browser.navigate(&start, &upstream.issuer).await;
    assert!(
        resp.location().starts_with(&upstream.issuer),
        "{}",
        resp.location()
    );
    assert_eq!(query_of(&resp.location())["prompt"], "login");

    // RP-Initiated Logout: the ID token as hint, a registered URI, state; the session ends, the grant lives.
    let logout = format!(
        "{}?id_token_hint={id_token}&post_logout_redirect_uri=https%3A%2F%2Fapp.example%2Fbye&state=s1",
        gateway.url("/logout")
    );
    let out = browser.get(&logout).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text());
    assert_eq!(out.location(), "https://app.example/bye?state=s1");
    assert!(browser.cookie(&gateway.base, "oauth_session").is_none());
    let live: i64 = gateway
        .sql_value(
            "SELECT count(*) FROM oauth.browser_sessions WHERE user_id = 'alice' AND ended_at IS NULL",
            &[],
        )
        .await;
    assert_eq!(live, 0);
    let grants: i64 = gateway
        .sql_value(
            "SELECT count(*) FROM oauth.grants WHERE user_id = 'alice' AND revoked_at IS NULL",
            &[],
        )
        .await;
    assert_eq!(grants, 1, "logout ends the session, not the grant");
    // Signed out: the next authorization asks for sign-in again.
    let start = format!("{}?{}", gateway.url("/authorize"), again.query());
    let (_, resp) = browser.navigate(&start, &upstream.issuer).await;
    assert!(resp.location().starts_with(&upstream.issuer));

    // An unregistered post_logout_redirect_uri is not followed.
    let bad = format!(
        "{}?client_id={client_id}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F",
        gateway.url("/logout")
    );
    assert_eq!(other.get(&bad).await.status, StatusCode::BAD_REQUEST);
    // Without a hint, a confirmation form (a link alone signs no one out).
    let confirm = other.get(&gateway.url("/logout")).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .header("content-security-policy")
            .unwrap()
            .starts_with("default-src 'none'; style-src 'sha256-"),
        "the confirmation is a page of the templates: {:?}",
        confirm.header("content-security-policy")
    );
    assert!(
        confirm.text().contains("<h1>Sign out?</h1>"),
        "{}",
        confirm.text()
    );
    assert!(
        confirm
            .text()
            .contains("Signed in as <strong>bob</strong>.")
    );
    let csrf = form_field(&confirm.text(), "csrf_token");
    let out = other
        .post(&gateway.url("/logout"), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text());
    assert!(other.cookie(&gateway.base, "oauth_session").is_none());
}

#[tokio::test]
async fn the_relying_party_refuses_bad_state_nonce_iss_and_shows_the_providers_errors() {
    let upstream = Upstream::start().await;
    let config = UpstreamConfig {
        required_claim: Some(RequiredClaim {
            name: "groups".into(),
            values: vec!["mcp-users".into()],
        }),
        ..upstream.openid()
    };
    let gateway = gateway_with(&upstream, config).await;
    let client_id = gateway.public_client(&["openid", "mcp"]).await;
    let authorization = Authorization::new(&client_id);
    let page_status = |resp: &Response| {
        assert!(
            resp.status.is_client_error(),
            "{} {}",
            resp.status,
            resp.text()
        );
        assert!(
            resp.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
    };

    // state changed on the way back.
    let mut browser = Browser::new();
    let url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    let callback = sign_in_upstream(&mut browser, &url, "alice").await;
    let state = query_of(&callback)["state"].clone();
    let tampered = callback.replace(&format!("state={state}"), "state=forged");
    let resp = browser.get(&tampered).await;
    page_status(&resp);

    // iss of another provider (RFC 9207 mix-up).
    let mut browser = Browser::new();
    let url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    let callback = sign_in_upstream(&mut browser, &url, "alice").await;
    let iss = form_urlencoded::byte_serialize(upstream.issuer.as_bytes()).collect::<String>();
    let resp = browser
        .get(&callback.replace(&format!("iss={iss}"), "iss=https%3A%2F%2Fevil.example"))
        .await;
    page_status(&resp);
    assert!(resp.text().contains("iss"), "{}", resp.text());

    // A nonce other than the one this browser's sign-in sent.
    let mut browser = Browser::new();
    let url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    let nonce = query_of(&url)["nonce"].clone();
    let url = url.replace(&format!("nonce={nonce}"), "nonce=someone-elses-nonce");
    let callback = sign_in_upstream(&mut browser, &url, "alice").await;
    let resp = browser.get(&callback).await;
    page_status(&resp);
    assert!(resp.text().contains("nonce"), "{}", resp.text());

    // The provider answers with an error.
    let mut browser = Browser::new();
    let url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    let state = query_of(&url)["state"].clone();
    let error = format!(
        "{}?error=access_denied&error_description=%3Cb%3Enope%3C%2Fb%3E&state={state}&iss={iss}",
        gateway.url("/login/callback")
    );
    let resp = browser.get(&error).await;
    page_status(&resp);
    assert!(resp.text().contains("access_denied"));
    assert!(!resp.text().contains("<b>nope"), "escaped");

    // A callback with no sign-in started in this browser.
    let resp = Browser::new().get(&error).await;
    page_status(&resp);

    // Authenticated upstream but outside the allowed group: refused, no session.
    let mut browser = Browser::new();
    let url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    let callback = sign_in_upstream(&mut browser, &url, "outsider").await;
    let resp = browser.get(&callback).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text());
    assert!(
        resp.text().contains("<h1>You may not sign in here</h1>"),
        "{}",
        resp.text()
    );
    assert!(resp.text().contains("You were signed in, but "));
    assert!(browser.cookie(&gateway.base, "oauth_session").is_none());
}

#[tokio::test]
async fn prompt_none_without_a_session_answers_login_required_to_the_client() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream, upstream.openid()).await;
    let client_id = gateway.public_client(&["openid", "mcp"]).await;
    let mut browser = Browser::new();
    let start = format!(
        "{}?{}&prompt=none",
        gateway.url("/authorize"),
        Authorization::new(&client_id).query()
    );
    let (_, resp) = browser.navigate(&start, CALLBACK).await;
    let back = query_of(&resp.location());
    assert_eq!(back["error"], "login_required");
    assert_eq!(back["state"], "xyz-state");
    assert_eq!(back["iss"], gateway.issuer);
}

#[tokio::test]
async fn a_plain_oauth2_provider_signs_users_in_by_its_userinfo() {
    let upstream = Upstream::start().await;
    // GitHub's shape: three endpoints, no discovery, no ID token verified; the user from userinfo.
    let config = UpstreamConfig {
        issuer: None,
        authorization_endpoint: Some(format!("{}/auth", upstream.issuer)),
        token_endpoint: Some(format!("{}/token", upstream.issuer)),
        userinfo_endpoint: Some(format!("{}/me", upstream.issuer)),
        user_claim: "email".into(),
        ..upstream.openid()
    };
    let gateway = gateway_with(&upstream, config).await;
    let client_id = gateway.public_client(&["mcp"]).await;
    let mut browser = Browser::new();
    let authorization = Authorization::new(&client_id);
    let url = start_authorization(&mut browser, &gateway, &authorization, &upstream).await;
    assert!(!query_of(&url).contains_key("nonce"));
    let callback = sign_in_upstream(&mut browser, &url, "carol").await;
    let resp = browser.get(&callback).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER, "{}", resp.text());
    let page = browser.get(&resp.location()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert!(
        page.text().contains("carol@example.com"),
        "the verified email is the user"
    );
}
