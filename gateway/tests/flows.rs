//! End-to-end flows over real HTTP against a real gateway and a real database.

mod common;

use common::*;
use hyper::StatusCode;
use oauth_gateway::keys::Alg;
use oauth_gateway::{Expectations, verify_access_token};
use serde_json::{Value, json};

fn expect_resource(issuer: &str) -> Expectations<'_> {
    Expectations {
        issuer,
        audience: Some(RESOURCE),
        algorithms: &[
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::EdDSA,
        ],
        validate_exp: true,
    }
}

#[tokio::test]
async fn metadata_is_served_byte_for_byte_at_path_inserted_urls_without_redirects() {
    let gw = Gateway::start_with(Options {
        issuer_path: "/tenant-a",
        ..Options::default()
    })
    .await;
    for path in [
        "/.well-known/oauth-authorization-server/tenant-a",
        "/.well-known/openid-configuration/tenant-a",
        "/tenant-a/.well-known/openid-configuration",
    ] {
        let resp = gw.http.get(&format!("{}{path}", gw.base), &[]).await;
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let doc = resp.json();
        assert_eq!(doc["issuer"], json!(gw.issuer), "issuer byte for byte");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["authorization_response_iss_parameter_supported"],
            json!(true)
        );
        assert_eq!(doc["token_endpoint"], json!(format!("{}/token", gw.issuer)));
        assert_eq!(
            doc["registration_endpoint"],
            json!(format!("{}/register", gw.issuer))
        );
        assert_eq!(
            doc["grant_types_supported"],
            json!([
                "authorization_code",
                "refresh_token",
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code",
                "urn:ietf:params:oauth:grant-type:token-exchange"
            ])
        );
        assert_eq!(
            doc["device_authorization_endpoint"],
            json!(format!("{}/device_authorization", gw.issuer))
        );
        assert_eq!(doc["client_id_metadata_document_supported"], json!(true));
        assert!(
            doc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("mcp"))
        );
    }
    let root = gw
        .http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", gw.base),
            &[],
        )
        .await;
    assert_eq!(
        root.status,
        StatusCode::NOT_FOUND,
        "the root document belongs to another issuer"
    );
    gw.stop().await;
}

#[tokio::test]
async fn jwks_lists_every_key_and_the_first_signs() {
    let gw = Gateway::start_with(Options {
        algs: vec![Alg::ES256, Alg::RS256, Alg::EdDSA],
        ..Options::default()
    })
    .await;
    let jwks = gw
        .http
        .get(&gw.url("/.well-known/jwks.json"), &[])
        .await
        .json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for (key, (alg, kty)) in keys
        .iter()
        .zip([("ES256", "EC"), ("RS256", "RSA"), ("EdDSA", "OKP")])
    {
        assert_eq!(key["alg"], alg);
        assert_eq!(key["kty"], kty);
        assert_eq!(key["use"], "sig");
        assert!(key["kid"].is_string());
        assert!(key.get("d").is_none(), "no private material");
    }
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let pkce = pkce();
    let code = gw.code(&client_id, &pkce, &[]).await;
    let tokens = gw.exchange(&client_id, None, &code, &pkce).await.json();
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            tokens["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], keys[0]["kid"]);
    assert_eq!(header["typ"], "at+jwt");
    gw.stop().await;
}

#[tokio::test]
async fn public_client_registers_completes_pkce_code_flow_and_rotates_refresh_tokens() {
    let gw = Gateway::start().await;
    let registered = gw
        .http
        .post_raw(
            &gw.url("/register"),
            "application/json",
            json!({"client_name": "SDK client", "redirect_uris": ["http://127.0.0.1/callback"], "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]}).to_string(),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    assert_eq!(registered.header("cache-control"), Some("no-store"));
    let client = registered.json();
    assert!(client.get("client_secret").is_none());
    let client_id = client["client_id"].as_str().unwrap();

    let pkce = pkce();
    let code = gw.code(client_id, &pkce, &[("scope", "mcp")]).await;
    let resp = gw.exchange(client_id, None, &code, &pkce).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let tokens = resp.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp");
    let claims = verify_access_token(
        tokens["access_token"].as_str().unwrap(),
        gw.keys(),
        &expect_resource(&gw.issuer),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["aud"], RESOURCE);

    let first_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rotated = gw.refresh(client_id, &first_refresh).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    let second_refresh = rotated.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first_refresh, second_refresh);

    // Reuse of the rotated token: refused, and the whole family (including its successor) dies.
    let reused = gw.refresh(client_id, &first_refresh).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(reused.oauth_error(), "invalid_grant");
    let successor = gw.refresh(client_id, &second_refresh).await;
    assert_eq!(successor.oauth_error(), "invalid_grant");
    gw.stop().await;
}

#[tokio::test]
async fn authorization_errors_redirect_only_to_validated_uris_and_carry_iss() {
    let gw = Gateway::start().await;
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let p = pkce();

    let unknown = gw.authorize("no-such-client", &p, &[]).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(unknown.header("location").is_none());
    assert!(unknown.text().contains("unknown client"));

    for evil in [
        "https://evil.example/callback",
        "http://127.0.0.1/callback/",
        "http://127.0.0.1:8080/Callback",
        "http://good@127.0.0.1/callback",
    ] {
        let resp = gw
            .authorize(&client_id, &p, &[("redirect_uri", evil)])
            .await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{evil}");
        assert!(
            resp.header("location").is_none(),
            "never redirect to {evil}"
        );
        assert!(
            resp.header("content-security-policy")
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }

    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "admin")], "invalid_scope"),
        (
            vec![("resource", "https://mcp.example.com/mcp#frag")],
            "invalid_target",
        ),
        (vec![("resource", "/relative")], "invalid_target"),
    ] {
        let resp = gw.authorize(&client_id, &p, &extra).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{extra:?}");
        let location = resp.location();
        assert!(
            location.starts_with("http://127.0.0.1:51234/callback?"),
            "{location}"
        );
        let q = query_of(&location);
        assert_eq!(q["error"], error, "{extra:?}");
        assert_eq!(q["state"], "xyz-state");
        assert_eq!(q["iss"], gw.issuer, "RFC 9207 iss on errors too");
    }

    // A repeated parameter after the redirect URI is validated: invalid_request back to the client.
    let url = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge={}&code_challenge_method=S256&scope=mcp&scope=mcp&state=s",
        gw.url("/authorize"),
        p.challenge
    );
    let repeated = gw.http.get(&url, &[]).await;
    assert_eq!(query_of(&repeated.location())["error"], "invalid_request");
    gw.stop().await;
}

#[tokio::test]
async fn loopback_redirect_uris_match_on_any_port_rfc8252() {
    let gw = Gateway::start().await;
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let p = pkce();
    for port in ["1024", "51234", "65535"] {
        let redirect = format!("http://127.0.0.1:{port}/callback");
        let resp = gw
            .authorize(&client_id, &p, &[("redirect_uri", &redirect)])
            .await;
        assert_eq!(resp.status, StatusCode::FOUND);
        assert!(
            resp.location().starts_with(&gw.url("/consent?request_id=")),
            "{port}"
        );
    }
    let other_host = gw
        .authorize(
            &client_id,
            &p,
            &[("redirect_uri", "http://localhost:51234/callback")],
        )
        .await;
    assert_eq!(other_host.status, StatusCode::BAD_REQUEST);
    gw.stop().await;
}

#[tokio::test]
async fn consent_page_is_unframeable_and_refuses_forged_forms() {
    let gw = Gateway::start().await;
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let p = pkce();
    let resp = gw.authorize(&client_id, &p, &[]).await;
    let consent_url = resp.location();
    let page = gw.http.get(&consent_url, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let html = page.text();
    assert!(
        html.contains("Test client")
            && html.contains("127.0.0.1")
            && html.contains("mcp")
            && html.contains(RESOURCE)
    );
    let request_id = query_of(&consent_url)["request_id"].clone();
    let forged = gw
        .http
        .post_form(
            &gw.url("/consent"),
            &[
                ("request_id", &request_id),
                ("csrf_token", "AAAA"),
                ("decision", "approve"),
            ],
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.header("location").is_none());
    // Denial goes back to the client as access_denied with state and iss.
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    let csrf = html[start..].split('"').next().unwrap();
    let denied = gw
        .http
        .post_form(
            &gw.url("/consent"),
            &[
                ("request_id", &request_id),
                ("csrf_token", csrf),
                ("decision", "deny"),
            ],
            &[],
        )
        .await;
    let q = query_of(&denied.location());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "xyz-state");
    assert_eq!(q["iss"], gw.issuer);
    gw.stop().await;
}

#[tokio::test]
async fn token_endpoint_answers_every_failure_with_an_rfc6749_error() {
    let gw = Gateway::start().await;
    let (public_id, _) = gw.client(true, &["mcp"]).await;
    let (conf_id, conf_secret) = gw.client(false, &["mcp"]).await;
    let conf_secret = conf_secret.unwrap();
    let p = pkce();
    let code = gw.code(&public_id, &p, &[]).await;

    let get = gw.http.get(&gw.url("/token"), &[]).await;
    assert_eq!(
        (get.status, get.oauth_error().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let json_body = gw
        .http
        .post_raw(
            &gw.url("/token"),
            "application/json",
            r#"{"grant_type":"refresh_token"}"#,
        )
        .await;
    assert_eq!(json_body.oauth_error(), "invalid_request");
    let unknown_grant = gw
        .token(
            &[("grant_type", "password"), ("client_id", &public_id)],
            &[],
        )
        .await;
    assert_eq!(unknown_grant.oauth_error(), "unsupported_grant_type");
    let missing = gw.token(&[("client_id", &public_id)], &[]).await;
    assert_eq!(missing.oauth_error(), "invalid_request");
    let repeated = gw
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("grant_type", "authorization_code"),
                ("client_id", &public_id),
            ],
            &[],
        )
        .await;
    assert_eq!(repeated.oauth_error(), "invalid_request");
    let wrong_secret = gw
        .token(
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            &[("authorization", &basic(&conf_id, "wrong"))],
        )
        .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_secret.oauth_error(), "invalid_client");
    assert!(
        wrong_secret
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    let two_methods = gw
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_secret", &conf_secret),
            ],
            &[("authorization", &basic(&conf_id, &conf_secret))],
        )
        .await;
    assert_eq!(two_methods.oauth_error(), "invalid_request");

    let wrong_verifier = pkce();
    let bad = gw.exchange(&public_id, None, &code, &wrong_verifier).await;
    assert_eq!(bad.oauth_error(), "invalid_grant");
    // The failed attempt burned the code: even the right verifier cannot use it now.
    let burned = gw.exchange(&public_id, None, &code, &p).await;
    assert_eq!(burned.oauth_error(), "invalid_grant");

    let huge = "a".repeat(70 * 1024);
    let too_big = gw
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &huge),
                ("client_id", &public_id),
            ],
            &[],
        )
        .await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_big.oauth_error(), "invalid_request");
    let not_utf8 = gw
        .http
        .post_raw(
            &gw.url("/token"),
            "application/x-www-form-urlencoded",
            "grant_type=%FF",
        )
        .await;
    assert_eq!(not_utf8.oauth_error(), "invalid_request");
    gw.stop().await;
}

#[tokio::test]
async fn replayed_code_is_refused_and_revokes_the_tokens_it_issued() {
    let gw = Gateway::start().await;
    let (client_id, _) = gw.client(true, &["mcp"]).await;
    let (rs_id, rs_secret) = gw.client(false, &["mcp"]).await;
    let rs_auth = basic(&rs_id, &rs_secret.unwrap());
    let p = pkce();
    let code = gw.code(&client_id, &p, &[]).await;
    let tokens = gw.exchange(&client_id, None, &code, &p).await.json();
    let access = tokens["access_token"].as_str().unwrap();
    let active = gw
        .http
        .post_form(
            &gw.url("/introspect"),
            &[("token", access)],
            &[("authorization", &rs_auth)],
        )
        .await;
    assert_eq!(active.json()["active"], json!(true), "{}", active.text());

    let replay = gw.exchange(&client_id, None, &code, &p).await;
    assert_eq!(replay.oauth_error(), "invalid_grant");
    let after = gw
        .http
        .post_form(
            &gw.url("/introspect"),
            &[("token", access)],
            &[("authorization", &rs_auth)],
        )
        .await;
    assert_eq!(after.json(), json!({"active": false}));
    let refresh = gw
        .refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refresh.oauth_error(), "invalid_grant");
    gw.stop().await;
}

#[tokio::test]
async fn confidential_client_gets_an_id_token_with_nonce_and_at_hash() {
    let gw = Gateway::start_with(Options {
        algs: vec![Alg::RS256],
        ..Options::default()
    })
    .await;
    let (client_id, secret) = gw.client(false, &["openid", "mcp"]).await;
    let secret = secret.unwrap();
    let p = pkce();
    let code = gw
        .code(
            &client_id,
            &p,
            &[("scope", "openid mcp"), ("nonce", "n-0S6_WzA2Mj")],
        )
        .await;
    let resp = gw
        .token(
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &p.verifier),
                ("redirect_uri", "http://127.0.0.1:51234/callback"),
            ],
            &[("authorization", &basic(&client_id, &secret))],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let tokens = resp.json();
    let id_token = tokens["id_token"]
        .as_str()
        .expect("id_token when openid is granted");
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            id_token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(payload["aud"], json!(client_id));
    assert_eq!(payload["iss"], json!(gw.issuer));
    assert_eq!(
        payload["at_hash"],
        json!(oauth_gateway::jwt::at_hash(
            Alg::RS256,
            tokens["access_token"].as_str().unwrap()
        ))
    );
    assert!(payload["auth_time"].is_u64());

    // client_secret_post works too, for the refresh.
    let refreshed = gw
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("scope", "mcp"),
            ],
            &[],
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(refreshed.json()["scope"], "mcp", "narrowed scope");
    let widened = gw
        .token(
            &[
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    refreshed.json()["refresh_token"].as_str().unwrap(),
                ),
                ("client_id", &client_id),
                ("client_secret", &secret),
                ("scope", "mcp email"),
            ],
            &[],
        )
        .await;
    assert_eq!(widened.oauth_error(), "invalid_scope");
    gw.stop().await;
}

#[tokio::test]
async fn revocation_and_grant_revocation_are_seen_at_once_by_introspection_and_userinfo() {
    let login_url = "https://app.example.com/login".to_owned();
    let gw = Gateway::start_with(Options {
        login_url: Some(login_url.clone()),
        ..Options::default()
    })
    .await;
    let (client_id, _) = gw.client(true, &["openid", "email", "mcp"]).await;
    let (rs_id, rs_secret) = gw.client(false, &["mcp"]).await;
    let rs_auth = basic(&rs_id, &rs_secret.unwrap());
    let p = pkce();

    // The application's own login page completes consent in SQL, with props for the resource server.
    let resp = gw
        .authorize(&client_id, &p, &[("scope", "openid email mcp")])
        .await;
    let location = resp.location();
    assert!(
        location.starts_with(&format!("{login_url}?request_id=")),
        "{location}"
    );
    let request_id = query_of(&location)["request_id"].clone();
    let redirect: String = gw
        .admin
        .query_one("SELECT oauth.issue_code($1, 'bob', NULL, '{\"email\": \"bob@example.com\", \"email_verified\": true}')", &[&request_id])
        .await
        .unwrap()
        .get(0);
    let code = query_of(&redirect)["code"].clone();
    let tokens = gw.exchange(&client_id, None, &code, &p).await.json();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access}");

    let info = gw
        .http
        .get(&gw.url("/userinfo"), &[("authorization", &bearer)])
        .await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.text());
    assert_eq!(
        info.json(),
        json!({"sub": "bob", "email": "bob@example.com", "email_verified": true})
    );
    let no_token = gw.http.get(&gw.url("/userinfo"), &[]).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);

    // RFC 7009 from the client itself: revoking the access token kills its family.
    let revoked = gw
        .http
        .post_form(
            &gw.url("/revoke"),
            &[("token", &access), ("client_id", &client_id)],
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let introspected = gw
        .http
        .post_form(
            &gw.url("/introspect"),
            &[("token", &access)],
            &[("authorization", &rs_auth)],
        )
        .await;
    assert_eq!(introspected.json(), json!({"active": false}));
    let info_after = gw
        .http
        .get(&gw.url("/userinfo"), &[("authorization", &bearer)])
        .await;
    assert_eq!(info_after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        gw.refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
            .await
            .oauth_error(),
        "invalid_grant"
    );

    // An application revoking the grant in SQL: a fresh family of the same grant dies at once.
    let p2 = pkce();
    let resp = gw.authorize(&client_id, &p2, &[("scope", "mcp")]).await;
    let request_id = query_of(&resp.location())["request_id"].clone();
    let redirect: String = gw
        .admin
        .query_one("SELECT oauth.issue_code($1, 'bob')", &[&request_id])
        .await
        .unwrap()
        .get(0);
    let tokens2 = gw
        .exchange(&client_id, None, &query_of(&redirect)["code"], &p2)
        .await
        .json();
    let access2 = tokens2["access_token"].as_str().unwrap();
    let live = gw
        .http
        .post_form(
            &gw.url("/introspect"),
            &[("token", access2)],
            &[("authorization", &rs_auth)],
        )
        .await
        .json();
    assert_eq!(live["active"], json!(true));
    assert_eq!(live["sub"], "bob");
    let grant: uuid::Uuid = live["grant_id"].as_str().unwrap().parse().unwrap();
    gw.admin
        .execute("SELECT oauth.revoke_grant($1)", &[&grant])
        .await
        .unwrap();
    let dead = gw
        .http
        .post_form(
            &gw.url("/introspect"),
            &[("token", access2)],
            &[("authorization", &rs_auth)],
        )
        .await
        .json();
    assert_eq!(dead, json!({"active": false}));

    // A public client may not introspect.
    let public_probe = gw
        .http
        .post_form(
            &gw.url("/introspect"),
            &[("token", access2), ("client_id", &client_id)],
            &[],
        )
        .await;
    assert_eq!(public_probe.oauth_error(), "invalid_client");
    gw.stop().await;
}

#[tokio::test]
async fn registration_checks_each_field() {
    let gw = Gateway::start().await;
    let register = |body: String| async {
        gw.http
            .post_raw(&gw.url("/register"), "application/json", body)
            .await
    };
    for (body, error) in [
        ("not json".to_owned(), "invalid_client_metadata"),
        (json!({"redirect_uris": "https://a.example/cb"}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://a.example/cb#x"]}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://a.example/cb"]}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["http://localhost/cb"], "application_type": "web"}).to_string(), "invalid_redirect_uri"),
        (json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["implicit"]}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "scope": "admin"}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "client_name": 7}).to_string(), "invalid_client_metadata"),
        (json!({"redirect_uris": ["https://a.example/cb"], "logo_uri": "javascript:alert(1)"}).to_string(), "invalid_client_metadata"),
    ] {
        let resp = register(body.clone()).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(resp.oauth_error(), error, "{body}");
    }
    let form = gw
        .http
        .post_form(
            &gw.url("/register"),
            &[("redirect_uris", "https://a.example/cb")],
            &[],
        )
        .await;
    assert_eq!(form.oauth_error(), "invalid_request");
    let ok = register(
        json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Web app"}).to_string(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let body = ok.json();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(
        body["client_secret"].as_str().unwrap().len(),
        43,
        "256-bit secret"
    );
    assert_eq!(body["application_type"], "web");
    gw.stop().await;
}

#[tokio::test]
async fn cors_is_offered_to_browser_clients_but_not_on_authorize() {
    let gw = Gateway::start().await;
    let origin = [("origin", "https://inspector.example")];
    let preflight = gw
        .http
        .send(
            hyper::Request::options(gw.url("/token"))
                .header("origin", "https://inspector.example")
                .header("access-control-request-method", "POST")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert!(
        preflight
            .header("access-control-allow-headers")
            .unwrap()
            .contains("Authorization")
    );
    let meta = gw
        .http
        .get(
            &format!("{}/.well-known/oauth-authorization-server", gw.base),
            &origin,
        )
        .await;
    assert_eq!(meta.header("access-control-allow-origin"), Some("*"));
    let authorize = gw.http.get(&gw.url("/authorize"), &origin).await;
    assert!(authorize.header("access-control-allow-origin").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn database_unavailable_answers_503_temporarily_unavailable_quickly() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = Gateway::start_with(Options {
        database_url_override: Some(format!(
            "host=127.0.0.1 port={closed_port} user=nobody dbname=nothing connect_timeout=1"
        )),
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    let resp = gw
        .token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "abc"),
                ("client_id", "x"),
            ],
            &[],
        )
        .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "fails fast"
    );
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.oauth_error(), "temporarily_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"));
    let authorize = gw.authorize("x", &pkce(), &[]).await;
    assert_eq!(authorize.status, StatusCode::SERVICE_UNAVAILABLE);
    gw.stop().await;
}
