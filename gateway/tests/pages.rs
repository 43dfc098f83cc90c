//! The pages over real HTTP: every page's Content-Security-Policy and that it loads nothing from
//! elsewhere, escaping of what clients name themselves, logos only for vetted clients, the
//! deployment's strings and branding (error pages included), connected apps (a user revokes only
//! their own grants, with a form issued to them), and the sessions page (a user signs out only
//! their own browsers, one at a time or everywhere) against a real OpenID provider.

mod common;

use common::upstream::*;
use common::*;
use hyper::StatusCode;
use serde_json::json;

/// Asserts a page's headers and that everything it references is on this server (or `allowed`).
fn assert_self_contained(page: &Response, issuer: &str, allowed: &[&str], what: &str) {
    let csp = page
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(csp.starts_with("default-src 'none';"), "{what}: {csp}");
    for directive in [
        "style-src 'sha256-",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(page.header("cache-control"), Some("no-store"), "{what}");
    let html = page.text();
    assert!(
        html.starts_with("<!DOCTYPE html><html lang=\""),
        "{what}: {html}"
    );
    assert!(html.contains("name=\"viewport\""), "{what}");
    assert!(!html.contains("<script"), "{what}: {html}");
    assert!(
        !html.contains(" style=\""),
        "{what}: inline style attributes need unsafe-inline"
    );
    for attribute in ["src=\"", "href=\"", "action=\"", "url("] {
        for (i, _) in html.match_indices(attribute) {
            let target = &html[i + attribute.len()..];
            assert!(
                target.starts_with(issuer) || allowed.iter().any(|a| target.starts_with(a)),
                "{what}: {attribute}{} points elsewhere",
                &target[..target.len().min(60)]
            );
        }
    }
}

#[tokio::test]
async fn every_page_is_self_contained_under_its_csp_and_escapes_what_clients_say() {
    let gw = Gateway::start().await;
    let issuer = gw.issuer.clone();

    // A dynamically registered client names itself with markup and a logo: escaped, no logo.
    let registered = gw
        .register(json!({
            "client_name": "<script>alert(1)</script> Notes",
            "redirect_uris": [CALLBACK],
            "token_endpoint_auth_method": "none",
            "logo_uri": "https://evil.example/logo.png",
        }))
        .await
        .json();
    let client_id = registered["client_id"].as_str().unwrap();
    let consent = gw
        .authorize(&Authorization::new(client_id))
        .await
        .location();
    let page = gw.http.get(&consent, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    assert_self_contained(&page, &issuer, &[], "consent");
    let html = page.text();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt; Notes"),
        "{html}"
    );
    assert!(
        !html.contains("evil.example"),
        "no logo for a client nobody vetted"
    );
    // The decision may redirect to the client's origin, and only there.
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("form-action 'self' http://127.0.0.1:51234;"),
        "{:?}",
        page.header("content-security-policy")
    );

    // An administrator's client with an https logo: shown, and allowed by origin.
    let vetted: String = gw
        .sql_value(
            "SELECT client_id FROM oauth.create_client('Vetted', ARRAY[$1], '{mcp}', 'none', \
             '{authorization_code,refresh_token}', 'native', NULL, \
             '{\"logo_uri\": \"https://logos.example/vetted.png\"}')",
            &[&CALLBACK],
        )
        .await;
    let consent = gw.authorize(&Authorization::new(&vetted)).await.location();
    let page = gw.http.get(&consent, &[]).await;
    assert_self_contained(
        &page,
        &issuer,
        &["https://logos.example/"],
        "vetted consent",
    );
    assert!(
        page.text()
            .contains("src=\"https://logos.example/vetted.png\"")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("img-src https://logos.example;")
    );

    // The device pages, the connected apps, and failures.
    let entry = gw.get("/device").await;
    assert_self_contained(&entry, &issuer, &[], "device entry");
    assert!(entry.text().contains("<label for=\"user_code\">"));
    let device_client = gw
        .create_client(&NewClient::machine("none", &[DEVICE_GRANT]))
        .await
        .id;
    let codes = gw
        .post(
            "/device_authorization",
            &[("client_id", device_client.as_str()), ("scope", "mcp")],
        )
        .await
        .ok_json();
    let approve = gw
        .http
        .get(codes["verification_uri_complete"].as_str().unwrap(), &[])
        .await;
    assert_self_contained(&approve, &issuer, &[], "device approval");
    let apps = gw.get("/account/apps").await;
    assert_eq!(apps.status, StatusCode::OK);
    assert_self_contained(&apps, &issuer, &[], "connected apps");
    // No provider signs anyone in here: no sessions page, and no link to one.
    assert!(!apps.text().contains("<nav"), "{}", apps.text());
    assert_eq!(
        gw.get("/account/sessions").await.status,
        StatusCode::NOT_FOUND
    );
    let failures = [
        (
            gw.get("/consent?request_id=gone").await,
            StatusCode::BAD_REQUEST,
            "no longer valid",
        ),
        (
            gw.get("/consent").await,
            StatusCode::BAD_REQUEST,
            "Invalid request",
        ),
        (
            gw.get("/device?user_code=WRONG-CODE").await,
            StatusCode::BAD_REQUEST,
            "no longer valid",
        ),
        (
            gw.get("/authorize?client_id=nobody").await,
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
        ),
        (
            gw.post(
                "/consent",
                &[
                    ("request_id", "x"),
                    ("csrf_token", "x"),
                    ("decision", "approve"),
                ],
            )
            .await,
            StatusCode::FORBIDDEN,
            "Request not accepted",
        ),
        (
            gw.post("/account/apps", &[("grant_id", "x"), ("csrf_token", "x")])
                .await,
            StatusCode::FORBIDDEN,
            "Request not accepted",
        ),
    ];
    for (page, status, says) in failures {
        assert_eq!(page.status, status, "{says}: {}", page.text());
        assert!(page.text().contains(says), "{says}: {}", page.text());
        assert_self_contained(&page, &issuer, &[], says);
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_deployment_translates_and_brands_every_page_errors_included() {
    let gw = Gateway::start_with(Options {
        adjust: Some(Box::new(|config: &mut oauth_gateway::config::Config| {
            config.branding.name = Some("Beispiel GmbH".into());
            config.branding.primary_color = "#005f73".into();
            config.strings.lang = "de".into();
            config.strings.consent_heading = "{client} möchte auf Ihr Konto zugreifen".into();
            config.strings.allow = "Erlauben".into();
            config.strings.request_expired_title = "Diese Anmeldung ist abgelaufen".into();
            config
                .scope_descriptions
                .insert("mcp".into(), "Werkzeuge in Ihrem Namen nutzen".into());
        })),
        ..Options::default()
    })
    .await;
    let client_id = gw.public_client(&["mcp"]).await;
    let consent = gw
        .authorize(&Authorization::new(&client_id))
        .await
        .location();
    let html = gw.http.get(&consent, &[]).await.text();
    assert!(html.contains("<html lang=\"de\">"), "{html}");
    assert!(
        html.contains("<em>Test client</em> möchte auf Ihr Konto zugreifen"),
        "{html}"
    );
    assert!(html.contains(">Erlauben</button>"), "{html}");
    assert!(html.contains("Werkzeuge in Ihrem Namen nutzen"), "{html}");
    assert!(html.contains("Beispiel GmbH"), "{html}");
    assert!(html.contains("--brand:#005f73"), "{html}");
    let expired = gw.get("/consent?request_id=gone").await;
    assert_eq!(expired.status, StatusCode::BAD_REQUEST);
    let html = expired.text();
    assert!(
        html.contains("<h1>Diese Anmeldung ist abgelaufen</h1>"),
        "{html}"
    );
    assert!(
        html.contains("Beispiel GmbH"),
        "error pages carry the branding: {html}"
    );
    gw.stop().await;
}

#[test]
fn branding_is_validated_at_start() {
    let base = oauth_gateway::config::Config {
        keys: vec![oauth_gateway::config::KeyConfig {
            path: "/dev/null".into(),
            alg: oauth_gateway::keys::Alg::ES256,
            kid: None,
        }],
        ..Default::default()
    };
    assert!(base.validate().is_ok());
    let mut bad = base.clone();
    bad.branding.logo_url = Some("http://cdn.example/logo.png".into());
    assert!(bad.validate().unwrap_err().contains("logo_url"));
    let mut bad = base.clone();
    bad.branding.primary_color = "red; background:url(x)".into();
    assert!(bad.validate().unwrap_err().contains("primary_color"));
    let mut bad = base;
    bad.strings.signed_in_as = "Angemeldet.".into();
    assert!(bad.validate().unwrap_err().contains("signed_in_as"));
}

#[tokio::test]
async fn connected_apps_list_the_users_grants_and_revoke_only_their_own() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization::new(&client_id);
    let tokens = gw.code_flow(&authorization).await.ok_json();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    // Bob's grant to the same client (consent completed by an application for bob).
    let pending = gw
        .authorize(&Authorization::new(&client_id))
        .await
        .location();
    let request_id = query_of(&pending)["request_id"].clone();
    gw.admin
        .execute("SELECT oauth.issue_code($1, 'bob')", &[&request_id])
        .await
        .unwrap();
    let bobs_grant: String = gw
        .sql_value(
            "SELECT grant_id::text FROM oauth.grants WHERE user_id = 'bob' AND revoked_at IS NULL",
            &[],
        )
        .await;

    let page = gw.get("/account/apps").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.text();
    assert_eq!(
        html.matches("<section").count(),
        1,
        "alice sees her grant only: {html}"
    );
    assert!(html.contains("<h2 id=\"app-"), "{html}");
    assert!(html.contains("Test client"));
    assert!(html.contains(RESOURCE));
    assert!(
        html.contains("<time datetime=\""),
        "granted and last used: {html}"
    );
    assert!(!html.contains(&bobs_grant));
    let grant_id = form_field(&html, "grant_id");
    let csrf = form_field(&html, "csrf_token");

    // Alice's form token does not carry over to bob's grant.
    let forged = gw
        .post(
            "/account/apps",
            &[("grant_id", &bobs_grant), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    // Nor does the database revoke another user's grant for her, whatever the form says.
    let theirs: bool = gw
        .sql_value(
            "SELECT oauth.revoke_connected_app('alice', $1::text::uuid)",
            &[&bobs_grant],
        )
        .await;
    assert!(!theirs);

    let revoked = gw
        .post(
            "/account/apps",
            &[("grant_id", &grant_id), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.text());
    assert_eq!(revoked.location(), gw.url("/account/apps"));
    let after = gw.get("/account/apps").await.text();
    assert!(after.contains("No application is connected"), "{after}");
    let refreshed = gw.refresh(&client_id, refresh).await;
    refreshed.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "revoked grant");
    let reason: String = gw
        .sql_value(
            "SELECT revoked_reason FROM oauth.grants WHERE grant_id = $1::text::uuid",
            &[&grant_id],
        )
        .await;
    assert_eq!(reason, "revoked_by_user");
    let bobs_live: bool = gw
        .sql_value(
            "SELECT revoked_at IS NULL FROM oauth.grants WHERE grant_id = $1::text::uuid",
            &[&bobs_grant],
        )
        .await;
    assert!(bobs_live);
    gw.stop().await;
}

#[tokio::test]
async fn last_used_is_the_last_time_tokens_were_issued_under_the_grant() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization::new(&client_id);
    let code = gw.code(&authorization).await;
    let unused: Option<String> = gw
        .sql_value(
            "SELECT last_used_at::text FROM oauth.list_connected_apps('alice')",
            &[],
        )
        .await;
    assert_eq!(unused, None, "a code not yet exchanged: no tokens issued");
    assert!(gw.get("/account/apps").await.text().contains("Not yet"));
    let tokens = gw
        .token(&TokenRequest::redeem(&authorization, &code))
        .await
        .ok_json();
    let exchanged: bool = gw
        .sql_value(
            "SELECT last_used_at = (SELECT created_at FROM oauth.refresh_families LIMIT 1) \
               FROM oauth.list_connected_apps('alice')",
            &[],
        )
        .await;
    assert!(exchanged);
    gw.refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        .await
        .ok_json();
    let rotated: bool = gw
        .sql_value(
            "SELECT last_used_at = (SELECT rotated_at FROM oauth.refresh_families LIMIT 1) \
               FROM oauth.list_connected_apps('alice')",
            &[],
        )
        .await;
    assert!(rotated);
    gw.stop().await;
}

/// Opens `path` in `browser` signed in as nobody: the gateway sends it to the provider, `user`
/// signs in there, and the browser comes back to `path`; the page.
async fn sign_in_at(
    browser: &mut Browser,
    gateway: &Gateway,
    upstream: &Upstream,
    path: &str,
    user: &str,
) -> Response {
    let (_, to_provider) = browser.navigate(&gateway.url(path), &upstream.issuer).await;
    let callback = sign_in_upstream(browser, &to_provider.location(), user).await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, StatusCode::SEE_OTHER, "{}", back.text());
    assert_eq!(back.location(), gateway.url(path));
    let page = browser.get(&back.location()).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    page
}

/// The sessions listed on a page: (session id, whether it is the browser's own).
fn listed_sessions(html: &str) -> Vec<(String, bool)> {
    html.split("<section")
        .skip(1)
        .map(|section| {
            let id = section
                .split("id=\"session-")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a session heading")
                .to_owned();
            (id, section.contains(">This browser</h2>"))
        })
        .collect()
}

/// Where a browser is sent when it is signed in as nobody: to sign in.
async fn assert_signed_out(browser: &mut Browser, gateway: &Gateway, what: &str) {
    let page = browser.get(&gateway.url("/account/sessions")).await;
    assert_eq!(
        page.status,
        StatusCode::SEE_OTHER,
        "{what}: {}",
        page.text()
    );
    assert_eq!(
        page.location(),
        gateway.url("/login?return_to=%2Faccount%2Fsessions"),
        "{what}"
    );
}

#[tokio::test]
async fn the_sessions_page_signs_out_the_users_own_browsers_one_at_a_time_or_everywhere() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream, upstream.openid()).await;
    let client_id = gateway.public_client(&["openid", "mcp"]).await;
    let live = |user: &'static str| {
        let gateway = &gateway;
        async move {
            gateway
                .sql_value::<i64>(
                    "SELECT count(*) FROM oauth.list_user_sessions($1)",
                    &[&user],
                )
                .await
        }
    };
    // Alice signs in from four browsers, bob from one; each starts at the sessions page.
    let mut alice = Vec::new();
    for _ in 0..4 {
        let mut browser = Browser::new();
        sign_in_at(
            &mut browser,
            &gateway,
            &upstream,
            "/account/sessions",
            "alice",
        )
        .await;
        alice.push(browser);
    }
    let mut bob = Browser::new();
    let bobs_page = sign_in_at(&mut bob, &gateway, &upstream, "/account/sessions", "bob").await;
    let bobs_session = listed_sessions(&bobs_page.text())[0].0.clone();
    let bobs_csrf = form_field(&bobs_page.text(), "csrf_token");

    let page = alice[0].get(&gateway.url("/account/sessions")).await;
    assert_self_contained(&page, &gateway.issuer, &[], "sessions");
    let html = page.text();
    let sessions = listed_sessions(&html);
    assert_eq!(
        sessions.len(),
        4,
        "alice's four browsers, not bob's: {html}"
    );
    assert_eq!(sessions.iter().filter(|(_, own)| *own).count(), 1, "{html}");
    assert!(!html.contains(&bobs_session));
    let provider = upstream.issuer.trim_start_matches("http://");
    assert!(html.contains(provider), "signed in through: {html}");
    assert!(html.contains("<code>pwd</code>"), "how: {html}");
    assert!(html.contains("<time datetime=\""), "{html}");
    assert!(
        html.contains("aria-label=\"Sign out this browser\""),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<a href=\"{}\" aria-current=\"page\">",
            gateway.url("/account/sessions")
        )),
        "{html}"
    );
    let apps = alice[0].get(&gateway.url("/account/apps")).await.text();
    assert!(
        apps.contains(&format!(
            "<a href=\"{}\">",
            gateway.url("/account/sessions")
        )),
        "connected apps link to the sessions: {apps}"
    );
    let csrf = form_field(&html, "csrf_token");
    let sessions_url = gateway.url("/account/sessions");

    // Bob's session, named in alice's form with her token: not hers, not ended.
    let theirs = alice[0]
        .post(
            &sessions_url,
            &[("session", &bobs_session), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::SEE_OTHER, "{}", theirs.text());
    assert_eq!(theirs.location(), sessions_url);
    // Nor with bob's token, which was issued to him.
    let forged = alice[0]
        .post(
            &sessions_url,
            &[("session", &bobs_session), ("csrf_token", &bobs_csrf)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text());
    assert_eq!(live("bob").await, 1);
    assert_eq!(bob.get(&sessions_url).await.status, StatusCode::OK);

    // Another of her browsers, from the first: that one is signed out, the first is not.
    let mut fourth = alice.pop().unwrap();
    let fourths = listed_sessions(&fourth.get(&sessions_url).await.text())
        .into_iter()
        .find(|(_, own)| *own)
        .unwrap()
        .0;
    let ended = alice[0]
        .post(
            &sessions_url,
            &[("session", &fourths), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER, "{}", ended.text());
    assert_signed_out(&mut fourth, &gateway, "the browser signed out from another").await;
    assert_eq!(
        listed_sessions(&alice[0].get(&sessions_url).await.text()).len(),
        3
    );

    // The third signs itself out: its cookie goes too.
    let mut third = alice.pop().unwrap();
    let page = third.get(&sessions_url).await.text();
    let own = listed_sessions(&page)
        .into_iter()
        .find(|(_, own)| *own)
        .unwrap()
        .0;
    let out = third
        .post(
            &sessions_url,
            &[
                ("session", &own),
                ("csrf_token", &form_field(&page, "csrf_token")),
            ],
        )
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text());
    assert!(out.text().contains("<h1>Signed out</h1>"), "{}", out.text());
    assert!(third.cookie(&gateway.base, "oauth_session").is_none());
    assert_signed_out(&mut third, &gateway, "the browser that signed itself out").await;

    // Signed in, an authorization goes straight to the consent page.
    let authorization = Authorization::new(&client_id);
    let start = format!("{}?{}", gateway.url("/authorize"), authorization.query());
    let (at, consent) = alice[0].navigate(&start, &upstream.issuer).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.text());
    assert!(at.starts_with(&gateway.url("/consent?")), "{at}");

    // Sign out everywhere: both of alice's remaining browsers, none of bob's.
    assert_eq!(live("alice").await, 2);
    let everywhere = alice[0]
        .post(
            &sessions_url,
            &[("session", "everywhere"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(everywhere.status, StatusCode::OK, "{}", everywhere.text());
    assert_self_contained(&everywhere, &gateway.issuer, &[], "signed out everywhere");
    assert!(everywhere.text().contains("Signed out everywhere"));
    assert!(alice[0].cookie(&gateway.base, "oauth_session").is_none());
    assert_eq!(live("alice").await, 0);
    assert_eq!(live("bob").await, 1);
    let mut second = alice.pop().unwrap();
    assert_signed_out(&mut second, &gateway, "the other browser").await;
    // The next authorization asks for sign-in again, at the provider.
    let again = start_authorization(&mut alice[0], &gateway, &authorization, &upstream).await;
    assert!(again.starts_with(&upstream.issuer), "{again}");
    // A form of the ended session's page signs out nobody: without a session there is no user.
    let stale = second
        .post(
            &sessions_url,
            &[("session", "everywhere"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.text());
    assert_eq!(live("bob").await, 1);
    gateway.stop().await;
}
