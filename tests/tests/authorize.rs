//! The authorization endpoint: begin_authorization, the consent screen's data, issue_code and
//! deny_authorization, run by the gateway role as in production.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

#[tokio::test]
async fn begin_authorization_holds_the_request_the_consent_screen_shows() {
    let admin = admin().await;
    let gw = gateway().await;
    let with_uri = ClientSpec {
        metadata: json!({"client_uri": "https://app.example/about"}),
        ..Default::default()
    };
    let client = create_client(&admin, with_uri).await;
    let begun = Authorize {
        params: json!({"resource": "https://mcp.example/mcp", "prompt": "consent", "scope": "mcp openid mcp"}),
        ..Authorize::new(&client)
    }
    .begin(&gw)
    .await;
    assert_ok(&begun, "begin_authorization");
    assert_eq!(begun["client_id"], json!(client.id));
    assert_eq!(begun["client_name"], json!(client.spec.name));
    assert_eq!(begun["prompt"], json!("consent"));
    let request_id = str_field(&begun, "request_id");
    assert!(
        request_id.len() >= 32,
        "request ids are unguessable: {request_id}"
    );

    let row = one_row(
        &gw,
        "SELECT client_id, client_name, client_uri, scopes, resource, redirect_uri, redirect_host, prompt,
                    expires_at > now() + interval '9 minutes' AND expires_at <= now() + interval '10 minutes'
               FROM oauth.get_authorization_request($1)",
        &[&request_id],
    )
    .await;
    assert_eq!(row.get::<_, String>(0), client.id);
    assert_eq!(row.get::<_, String>(1), client.spec.name);
    assert_eq!(
        row.get::<_, Option<String>>(2).as_deref(),
        Some("https://app.example/about")
    );
    assert_eq!(
        row.get::<_, Vec<String>>(3),
        vec!["mcp", "openid"],
        "duplicates collapse"
    );
    assert_eq!(
        row.get::<_, Option<String>>(4).as_deref(),
        Some("https://mcp.example/mcp")
    );
    assert_eq!(row.get::<_, String>(5), client.redirect_uri);
    let host = client
        .redirect_uri
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some(host));
    assert_eq!(row.get::<_, Option<String>>(7).as_deref(), Some("consent"));
    assert!(row.get::<_, bool>(8), "request lives 10 minutes");
}

#[tokio::test]
async fn unknown_authorization_request_is_not_found() {
    let db = admin().await;
    for (what, sql) in [
        (
            "get_authorization_request",
            "SELECT * FROM oauth.get_authorization_request('nope')",
        ),
        ("issue_code", "SELECT oauth.issue_code('nope', 'user')"),
        (
            "deny_authorization",
            "SELECT oauth.deny_authorization('nope')",
        ),
    ] {
        assert_sqlstate(db.query(sql, &[]).await, "OA411", what);
    }
}

#[tokio::test]
async fn errors_before_the_redirect_uri_is_validated_are_never_redirected() {
    let admin = admin().await;
    let gw = gateway().await;
    let two_uris = ClientSpec {
        redirect_uris: vec!["https://a.example/cb".into(), "https://b.example/cb".into()],
        ..Default::default()
    };
    let client = create_client(&admin, two_uris).await;
    let loopback = create_client(&admin, ClientSpec::public_native()).await;
    let pkce = Pkce::new();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("not an object", json!(["client_id"]), "invalid_request"),
        (
            "no client_id",
            authorize_params(&client, &pkce, json!({"client_id": null})),
            "invalid_request",
        ),
        (
            "empty client_id",
            authorize_params(&client, &pkce, json!({"client_id": ""})),
            "invalid_request",
        ),
        (
            "repeated client_id",
            authorize_params(&client, &pkce, json!({"client_id": [client.id, client.id]})),
            "invalid_request",
        ),
        (
            "unknown client",
            authorize_params(&client, &pkce, json!({"client_id": "no-such-client"})),
            "invalid_client",
        ),
        (
            "unregistered redirect_uri",
            authorize_params(
                &client,
                &pkce,
                json!({"redirect_uri": "https://evil.example/cb"}),
            ),
            "invalid_request",
        ),
        (
            "repeated redirect_uri",
            authorize_params(
                &client,
                &pkce,
                json!({"redirect_uri": ["https://a.example/cb", "https://a.example/cb"]}),
            ),
            "invalid_request",
        ),
        (
            "redirect_uri omitted with two registered",
            authorize_params(&client, &pkce, json!({"redirect_uri": null})),
            "invalid_request",
        ),
        (
            "redirect_uri omitted with a loopback registration",
            authorize_params(&loopback, &pkce, json!({"redirect_uri": null})),
            "invalid_request",
        ),
        (
            "invalid response_type with a bad redirect_uri",
            authorize_params(
                &client,
                &pkce,
                json!({"response_type": "token", "redirect_uri": "https://evil.example/"}),
            ),
            "invalid_request",
        ),
    ];
    for (what, params, code) in cases {
        let answer = begin_authorization(&gw, &params).await;
        assert_error(&answer, code, what);
        assert_eq!(
            answer["redirect"],
            json!(false),
            "{what}: must not redirect: {answer}"
        );
        assert!(
            answer.get("location").is_none(),
            "{what}: no location: {answer}"
        );
    }
    let null_params: Value = scalar(&gw, "SELECT oauth.begin_authorization(NULL)", &[]).await;
    assert_error(&null_params, "invalid_request", "NULL params");
    assert_eq!(null_params["redirect"], json!(false));
}

#[tokio::test]
async fn errors_after_the_redirect_uri_is_validated_go_back_with_state_and_iss() {
    let admin = admin().await;
    let gw = gateway().await;
    let mcp_only = ClientSpec {
        allowed_resources: Some(vec!["https://mcp.example/mcp".into()]),
        scopes: vec!["mcp".into()],
        ..Default::default()
    };
    let client = create_client(&admin, mcp_only).await;
    let issuer = issuer(&gw).await;
    let pkce = Pkce::new();
    let long = "x".repeat(2049);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no response_type",
            json!({"response_type": null}),
            "invalid_request",
        ),
        (
            "response_type token",
            json!({"response_type": "token"}),
            "unsupported_response_type",
        ),
        (
            "response_type code id_token",
            json!({"response_type": "code id_token"}),
            "unsupported_response_type",
        ),
        (
            "response_mode fragment",
            json!({"response_mode": "fragment"}),
            "invalid_request",
        ),
        (
            "no code_challenge",
            json!({"code_challenge": null}),
            "invalid_request",
        ),
        (
            "no method (plain)",
            json!({"code_challenge_method": null}),
            "invalid_request",
        ),
        (
            "plain",
            json!({"code_challenge_method": "plain"}),
            "invalid_request",
        ),
        (
            "short challenge",
            json!({"code_challenge": "abc"}),
            "invalid_request",
        ),
        (
            "malformed scope",
            json!({"scope": "mcp  openid"}),
            "invalid_scope",
        ),
        (
            "no requested scope allowed",
            json!({"scope": "openid email"}),
            "invalid_scope",
        ),
        (
            "unsupported scope",
            json!({"scope": "root"}),
            "invalid_scope",
        ),
        (
            "relative resource",
            json!({"resource": "/mcp"}),
            "invalid_target",
        ),
        (
            "resource with fragment",
            json!({"resource": "https://mcp.example/mcp#x"}),
            "invalid_target",
        ),
        (
            "resource not allowed",
            json!({"resource": "https://other.example/mcp"}),
            "invalid_target",
        ),
        (
            "prompt unknown",
            json!({"prompt": "bogus"}),
            "invalid_request",
        ),
        // prompt=none alone is decided with the browser's session (oauth.continue_authorization, sessions.rs).
        (
            "max_age not a number",
            json!({"max_age": "-1"}),
            "invalid_request",
        ),
        (
            "prompt login none",
            json!({"prompt": "login none"}),
            "login_required",
        ),
        (
            "request object",
            json!({"request": "eyJ..."}),
            "request_not_supported",
        ),
        (
            "repeated scope",
            json!({"scope": ["mcp", "mcp"]}),
            "invalid_request",
        ),
        (
            "repeated resource",
            json!({"resource": ["https://mcp.example/mcp", "https://mcp.example/mcp"]}),
            "invalid_request",
        ),
        (
            "non-string parameter",
            json!({"nonce": 5}),
            "invalid_request",
        ),
        (
            "over-long parameter",
            json!({"nonce": long}),
            "invalid_request",
        ),
    ];
    for (what, extra, code) in cases {
        let valid = authorize_params(&client, &pkce, json!({"scope": "mcp"}));
        let params = changed(&valid, extra);
        let answer = begin_authorization(&gw, &params).await;
        assert_error(&answer, code, what);
        assert_eq!(answer["redirect"], json!(true), "{what}: {answer}");
        assert_eq!(answer["redirect_uri"], json!(client.redirect_uri), "{what}");
        assert_eq!(answer["state"], params["state"], "{what}");
        assert_eq!(answer["iss"], json!(issuer), "{what}");
        let redirect = parse_redirect(str_field(&answer, "location"));
        assert_eq!(redirect.base, client.redirect_uri, "{what}");
        assert_eq!(redirect.param("error"), code, "{what}");
        assert!(!redirect.param("error_description").is_empty());
        assert_eq!(
            redirect.param("state"),
            params["state"].as_str().unwrap(),
            "{what}"
        );
        assert_eq!(redirect.param("iss"), issuer, "{what}");
        assert!(!redirect.params.contains_key("code"), "{what}");
    }
    // Scopes the client may not have beside one it may: RFC 6749 §3.3 lets the server ignore part
    // of a request, and claude.ai asks for every supported scope whatever the client may have, so
    // the request goes on for the scopes it may have (once an error, issue 11 item 5).
    let partly = begin_authorization(
        &gw,
        &authorize_params(&client, &pkce, json!({"scope": "mcp openid"})),
    )
    .await;
    assert_ok(
        &partly,
        "a request for mcp openid by a client that may have mcp",
    );
    let asked: Vec<String> = scalar(
        &gw,
        "SELECT scopes FROM oauth.get_authorization_request($1)",
        &[&str_field(&partly, "request_id")],
    )
    .await;
    assert_eq!(asked, ["mcp"]);
    // A repeated state cannot be echoed, so the error goes back without one.
    let mut params = authorize_params(&client, &pkce, json!({"scope": "mcp"}));
    params["state"] = json!(["a", "b"]);
    let answer = begin_authorization(&gw, &params).await;
    assert_error(&answer, "invalid_request", "repeated state");
    assert_eq!(answer["redirect"], json!(true));
    assert!(
        !parse_redirect(str_field(&answer, "location"))
            .params
            .contains_key("state")
    );
}

#[tokio::test]
async fn client_that_may_not_use_the_code_grant_is_unauthorized() {
    let (admin, client) = admin_with_client().await;
    // The API never creates such a client; the rule still holds when a row says so.
    execute(
        &admin,
        "UPDATE oauth.clients SET grant_types = '{refresh_token}' WHERE client_id = $1",
        &[&client.id],
    )
    .await;
    let answer = Authorize::new(&client).begin(&admin).await;
    assert_error(&answer, "unauthorized_client", "begin_authorization");
    assert_eq!(answer["redirect"], json!(true));
}

#[tokio::test]
async fn loopback_redirect_uri_may_use_any_port_rfc8252() {
    let admin = admin().await;
    let gw = gateway().await;
    let loopbacks = ClientSpec {
        redirect_uris: vec![
            "http://127.0.0.1/callback".into(),
            "http://[::1]/callback".into(),
        ],
        ..ClientSpec::public_native()
    };
    let client = create_client(&admin, loopbacks).await;
    for (uri, ok) in [
        ("http://127.0.0.1:49152/callback", true),
        ("http://127.0.0.1:8080/callback", true),
        ("http://127.0.0.1/callback", true),
        ("http://[::1]:33333/callback", true),
        ("http://localhost:49152/callback", false),
        ("http://127.0.0.1:49152/callback/", false),
        ("http://127.0.0.1:49152/CALLBACK", false),
        ("http://127.0.0.1:49152/callback?x=1", false),
        ("http://127.0.0.1:49152@evil.example/callback", false),
        ("https://127.0.0.1:49152/callback", false),
    ] {
        let request = Authorize {
            params: json!({"redirect_uri": uri}),
            ..Authorize::new(&client)
        };
        let answer = request.begin(&gw).await;
        if ok {
            assert_ok(&answer, uri);
            // The code goes back to exactly the presented port, and the exchange must repeat it.
            let auth = request.redirected(consent_to(&gw, &answer).await);
            let location = &auth.location;
            assert!(location.starts_with(&format!("{uri}?")), "{location}");
            let wrong_port = Exchange {
                redirect_uri: Some("http://127.0.0.1:1/callback"),
                ..auth.exchange()
            }
            .run(&gw)
            .await;
            assert_error(&wrong_port, "invalid_grant", "exchange with another port");
        } else {
            assert_error(&answer, "invalid_request", uri);
            assert_eq!(answer["redirect"], json!(false), "{uri}");
        }
    }
}

#[tokio::test]
async fn registered_redirect_uri_is_compared_byte_for_byte() {
    let admin = admin().await;
    let client = create_client_with(&admin, |spec| {
        spec.redirect_uris = vec!["https://app.example/cb".into()];
    })
    .await;
    for uri in [
        "https://APP.example/cb",
        "HTTPS://app.example/cb",
        "https://app.example/cb/",
        "https://app.example/CB",
        "https://app.example/cb?x=1",
        "https://app.example:443/cb",
        "https://user@app.example/cb",
        "https://app%2Eexample/cb",
        "https://app.example/cb#frag",
        "https://app.example/./cb",
        "http://app.example/cb",
    ] {
        let answer = Authorize {
            params: json!({"redirect_uri": uri}),
            ..Authorize::new(&client)
        }
        .begin(&admin)
        .await;
        assert_error(&answer, "invalid_request", uri);
        assert_eq!(
            answer["redirect"],
            json!(false),
            "{uri}: never redirect to an unvalidated URI"
        );
    }
}

#[tokio::test]
async fn issue_code_redirects_with_code_state_and_iss_and_records_the_grant() {
    let admin = admin().await;
    let gw = gateway().await;
    let with_query = ClientSpec {
        redirect_uris: vec!["https://app.example/cb?tenant=7".into()],
        ..Default::default()
    };
    let client = create_client(&admin, with_query).await;
    let user = unique("user");
    let params = Authorize {
        params: json!({"state": "s t&a=te", "resource": "https://mcp.example/mcp"}),
        ..Authorize::new(&client)
    }
    .request();
    let begun = begin_authorization(&gw, &params).await;
    let request_id = str_field(&begun, "request_id").to_owned();
    let props = json!({"tenant": 7, "roles": ["reader"]});
    let location = issue_code(&gw, &request_id, &user, None, &props).await;
    let redirect = parse_redirect(&location);
    assert_eq!(redirect.base, "https://app.example/cb");
    assert_eq!(
        redirect.names,
        vec!["tenant", "code", "state", "iss"],
        "registered query kept, then code, state, iss"
    );
    assert_eq!(redirect.param("tenant"), "7");
    assert_eq!(redirect.param("state"), "s t&a=te");
    assert_eq!(redirect.param("code").len(), 43);
    assert_eq!(redirect.param("iss"), issuer(&gw).await);
    // Stored only as a digest.
    let stored: i64 = row_count(
        &admin,
        "oauth.codes WHERE code_hash = $1",
        &[&sha256(redirect.param("code"))],
    )
    .await;
    assert_eq!(stored, 1);

    let grants = admin
        .query("SELECT client_id, client_name, scopes, resource, props FROM oauth.list_user_grants($1)", &[&user])
        .await
        .unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].get::<_, String>(0), client.id);
    assert_eq!(grants[0].get::<_, String>(1), client.spec.name);
    assert_eq!(grants[0].get::<_, Vec<String>>(2), vec!["openid", "mcp"]);
    assert_eq!(
        grants[0].get::<_, Option<String>>(3).as_deref(),
        Some("https://mcp.example/mcp")
    );
    assert_eq!(grants[0].get::<_, Value>(4), props);

    // A request completes once.
    assert_sqlstate(
        gw.query_one("SELECT oauth.issue_code($1, $2)", &[&request_id, &user])
            .await,
        "OA411",
        "second issue_code",
    );
    assert_sqlstate(
        gw.query(
            "SELECT * FROM oauth.get_authorization_request($1)",
            &[&request_id],
        )
        .await,
        "OA411",
        "consumed request",
    );
}

#[tokio::test]
async fn issue_code_refuses_bad_input_without_consuming_the_request() {
    let (admin, client) = admin_with_client().await;
    let request = Authorize {
        params: json!({"scope": "openid mcp"}),
        ..Authorize::new(&client)
    };
    let begun = request.begin(&admin).await;
    let request_id = str_field(&begun, "request_id").to_owned();
    let long_user = "u".repeat(256);
    for (what, user, scopes, props, code) in [
        ("empty user", "", None, json!({}), "OA400"),
        (
            "user over 255",
            long_user.as_str(),
            None,
            json!({}),
            "OA400",
        ),
        ("props not an object", "alice", None, json!([1, 2]), "OA400"),
        (
            "scope not requested",
            "alice",
            Some(vec!["openid", "email"]),
            json!({}),
            "OA405",
        ),
        ("no scope", "alice", Some(vec![]), json!({}), "OA405"),
    ] {
        let scopes: Option<Vec<String>> = scopes.map(|v| v.into_iter().map(String::from).collect());
        let result = admin
            .query_one(
                "SELECT oauth.issue_code($1, $2, $3, $4)",
                &[&request_id, &user, &scopes, &props],
            )
            .await;
        assert_sqlstate(result, code, what);
    }
    assert_sqlstate(
        admin
            .query_one("SELECT oauth.issue_code($1, NULL)", &[&request_id])
            .await,
        "OA400",
        "NULL user",
    );
    assert_sqlstate(
        admin
            .query_one(
                "SELECT oauth.issue_code($1, 'alice', ARRAY['mcp', NULL])",
                &[&request_id],
            )
            .await,
        "OA405",
        "NULL scope",
    );
    // Narrowing is allowed, and the request was still there.
    let user = unique("user");
    let location = issue_code(&admin, &request_id, &user, Some(&["mcp"]), &json!({})).await;
    let code = parse_redirect(&location).param("code").to_owned();
    let answer = Exchange {
        code: Some(&code),
        verifier: Some(&request.pkce.verifier),
        redirect_uri: Some(&client.redirect_uri),
        ..Exchange::of(&client)
    }
    .run(&admin)
    .await;
    assert_ok(&answer, "narrowed consent");
    assert_eq!(answer["scope"], json!("mcp"));
}

#[tokio::test]
async fn consenting_again_widens_the_one_live_grant() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let first = Authorize {
        params: json!({"scope": "mcp"}),
        props: json!({"v": 1}),
        ..Authorize::new(&client)
    }
    .run(&admin, &user)
    .await;
    let second = Authorize {
        params: json!({"scope": "email"}),
        props: json!({"v": 2}),
        ..Authorize::new(&client)
    }
    .run(&admin, &user)
    .await;
    let grants = admin
        .query(
            "SELECT grant_id, scopes, props FROM oauth.list_user_grants($1)",
            &[&user],
        )
        .await
        .unwrap();
    assert_eq!(grants.len(), 1, "one live grant per user and client");
    assert_eq!(grants[0].get::<_, Vec<String>>(1), vec!["email", "mcp"]);
    assert_eq!(
        grants[0].get::<_, Value>(2),
        json!({"v": 2}),
        "latest props win"
    );
    // Each code carries only what was consented for it.
    let a = exchange(&admin, &client, &first).await;
    let b = exchange(&admin, &client, &second).await;
    assert_eq!(a["scope"], json!("mcp"));
    assert_eq!(b["scope"], json!("email"));
    assert_eq!(a["grant_id"], b["grant_id"]);
}

#[tokio::test]
async fn consenting_again_without_props_keeps_the_props_recorded_before() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let mcp = Authorize {
        params: json!({"scope": "mcp"}),
        props: json!({"tenant": "acme"}),
        ..Authorize::new(&client)
    };
    mcp.run(&admin, &user).await;
    let begun = mcp.begin(&admin).await;
    let request_id = str_field(&begun, "request_id").to_owned();
    let _: String = scalar(
        &admin,
        "SELECT oauth.issue_code($1, $2)",
        &[&request_id, &user],
    )
    .await;
    let props: Value = scalar(
        &admin,
        "SELECT props FROM oauth.list_user_grants($1)",
        &[&user],
    )
    .await;
    assert_eq!(
        props,
        json!({"tenant": "acme"}),
        "NULL props keep the grant's props"
    );
}

#[tokio::test]
async fn omitted_scope_falls_back_to_the_default_scopes_the_client_may_have() {
    let (admin, client) = admin_with_client().await;
    for scope in [json!(null), json!("")] {
        let begun = Authorize {
            params: json!({"scope": scope}),
            ..Authorize::new(&client)
        }
        .begin(&admin)
        .await;
        assert_ok(&begun, "default scopes");
        let scopes: Vec<String> = scalar(
            &admin,
            "SELECT scopes FROM oauth.get_authorization_request($1)",
            &[&str_field(&begun, "request_id")],
        )
        .await;
        assert_eq!(scopes, vec!["mcp"]);
    }
    let openid_only = ClientSpec {
        scopes: vec!["openid".into()],
        ..Default::default()
    };
    let no_default = create_client(&admin, openid_only).await;
    let answer = Authorize {
        params: json!({"scope": null}),
        ..Authorize::new(&no_default)
    }
    .begin(&admin)
    .await;
    assert_error(&answer, "invalid_scope", "no default scope allowed");
    assert_eq!(answer["redirect"], json!(true));
}

#[tokio::test]
async fn omitted_redirect_uri_uses_the_single_registration_and_then_may_not_be_sent_at_the_token_endpoint_differently()
 {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let without_uri = Authorize {
        params: json!({"redirect_uri": null}),
        ..Authorize::new(&client)
    };
    let auth = without_uri.run(&admin, &user).await;
    assert!(
        auth.location
            .starts_with(&format!("{}?", client.redirect_uri))
    );
    let answer = Exchange {
        redirect_uri: None,
        ..auth.exchange()
    }
    .run(&admin)
    .await;
    assert_ok(&answer, "no redirect_uri at either endpoint");

    let auth = without_uri.run(&admin, &user).await;
    let answer = Exchange {
        redirect_uri: Some("https://x.example/cb"),
        ..auth.exchange()
    }
    .run(&admin)
    .await;
    assert_error(
        &answer,
        "invalid_grant",
        "a different redirect_uri at the token endpoint",
    );
}

#[tokio::test]
async fn deny_authorization_redirects_the_error_with_state_and_iss() {
    let (_, client) = admin_with_client().await;
    let gw = gateway().await;
    let params = Authorize::new(&client).request();
    let begun = begin_authorization(&gw, &params).await;
    let request_id = str_field(&begun, "request_id").to_owned();
    assert_sqlstate(
        gw.query_one(
            "SELECT oauth.deny_authorization($1, 'invalid_grant')",
            &[&request_id],
        )
        .await,
        "OA400",
        "unsupported error code",
    );
    assert_sqlstate(
        gw.query_one("SELECT oauth.deny_authorization($1, NULL)", &[&request_id])
            .await,
        "OA400",
        "NULL error code",
    );
    let location: String = scalar(
        &gw,
        "SELECT oauth.deny_authorization($1, error_description => 'user said no')",
        &[&request_id],
    )
    .await;
    let redirect = parse_redirect(&location);
    assert_eq!(redirect.base, client.redirect_uri);
    assert_eq!(redirect.param("error"), "access_denied");
    assert_eq!(redirect.param("error_description"), "user said no");
    assert_eq!(redirect.param("state"), params["state"].as_str().unwrap());
    assert!(redirect.params.contains_key("iss"));
    assert!(!redirect.params.contains_key("code"));
    assert_sqlstate(
        gw.query_one("SELECT oauth.issue_code($1, 'alice')", &[&request_id])
            .await,
        "OA411",
        "a denied request cannot be completed",
    );

    let begun = Authorize::new(&client).begin(&gw).await;
    let location: String = scalar(
        &gw,
        "SELECT oauth.deny_authorization($1, 'login_required')",
        &[&str_field(&begun, "request_id")],
    )
    .await;
    let redirect = parse_redirect(&location);
    assert_eq!(redirect.param("error"), "login_required");
    assert!(
        !redirect.params.contains_key("error_description"),
        "NULL description is left out"
    );
}

#[tokio::test]
async fn authorization_request_expires_after_its_ttl() {
    let (admin, client) = admin_with_client().await;
    let begun = Authorize::new(&client).begin(&admin).await;
    let request_id = str_field(&begun, "request_id").to_owned();
    let later = "now() + interval '10 minutes 1 second'";
    for (what, sql) in [
        (
            "expired request on the consent screen",
            format!("SELECT * FROM oauth.get_authorization_request($1, {later})"),
        ),
        (
            "issue_code on an expired request",
            format!("SELECT oauth.issue_code($1, 'alice', now => {later})"),
        ),
        (
            "deny on an expired request",
            format!("SELECT oauth.deny_authorization($1, now => {later})"),
        ),
    ] {
        assert_sqlstate(admin.query(&sql, &[&request_id]).await, "OA411", what);
    }
    // Still fine just before expiry.
    let location: String = scalar(
        &admin,
        "SELECT oauth.issue_code($1, 'alice', now => now() + interval '9 minutes')",
        &[&request_id],
    )
    .await;
    assert!(parse_redirect(&location).params.contains_key("code"));
}
