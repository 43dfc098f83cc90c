//! The authorization endpoint and the built-in consent page over real HTTP: which errors go
//! back to the client and which never leave the server, loopback redirect matching, and the
//! consent form's defences.

mod common;

use common::*;
use hyper::StatusCode;

#[tokio::test]
async fn authorization_errors_redirect_only_to_validated_uris_and_carry_iss() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let request = || Authorization::new(&client_id);

    // Before the redirect URI is validated: an unframeable error page here, never a redirect.
    #[rustfmt::skip]
    let refused_here = [
        ("unknown client", Authorization::new("no-such-client"), Some("unknown client")),
        ("another host", Authorization { redirect_uri: "https://evil.example/callback", ..request() }, None),
        ("another path", Authorization { redirect_uri: "http://127.0.0.1/callback/", ..request() }, None),
        ("another case", Authorization { redirect_uri: "http://127.0.0.1:8080/Callback", ..request() }, None),
        ("user info", Authorization { redirect_uri: "http://good@127.0.0.1/callback", ..request() }, None),
    ];
    for (what, authorization, page_says) in &refused_here {
        let resp = gw.authorize(authorization).await;
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{what}");
        assert!(
            resp.header("location").is_none(),
            "{what}: never redirected"
        );
        assert!(
            resp.header("content-security-policy")
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{what}"
        );
        if let Some(reason) = page_says {
            assert!(resp.text().contains(reason), "{what}: {}", resp.text());
        }
    }

    // After it: the error goes back to the client, with state and the RFC 9207 iss.
    #[rustfmt::skip]
    let redirected = [
        ("no code_challenge", Authorization { pkce: Pkce { challenge: String::new(), ..pkce() }, ..request() }, "invalid_request"),
        ("plain PKCE", Authorization { code_challenge_method: "plain", ..request() }, "invalid_request"),
        ("implicit flow", Authorization { response_type: "token", ..request() }, "unsupported_response_type"),
        ("scope not allowed", Authorization { scope: "admin", ..request() }, "invalid_scope"),
        ("resource with a fragment", Authorization { resource: "https://mcp.example.com/mcp#frag", ..request() }, "invalid_target"),
        ("relative resource", Authorization { resource: "/relative", ..request() }, "invalid_target"),
    ];
    for (what, authorization, error) in &redirected {
        let resp = gw.authorize(authorization).await;
        assert_eq!(resp.status, StatusCode::FOUND, "{what}");
        let location = resp.location();
        assert!(location.starts_with(&format!("{CALLBACK}?")), "{location}");
        let q = query_of(&location);
        assert_eq!(q["error"], *error, "{what}");
        assert_eq!(q["state"], "xyz-state");
        assert_eq!(q["iss"], gw.issuer, "RFC 9207 iss on errors too");
    }

    // A repeated parameter after the redirect URI is validated: invalid_request back to the client.
    let url = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge={}&code_challenge_method=S256&scope=mcp&scope=mcp&state=s",
        gw.url("/authorize"),
        pkce().challenge
    );
    let repeated = gw.http.get(&url, &[]).await;
    assert_eq!(query_of(&repeated.location())["error"], "invalid_request");
    gw.stop().await;
}

#[tokio::test]
async fn loopback_redirect_uris_match_on_any_port_rfc8252() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    for port in ["1024", "51234", "65535"] {
        let redirect_uri = format!("http://127.0.0.1:{port}/callback");
        let resp = gw
            .authorize(&Authorization {
                redirect_uri: &redirect_uri,
                ..Authorization::new(&client_id)
            })
            .await;
        assert_eq!(resp.status, StatusCode::FOUND);
        assert!(
            resp.location().starts_with(&gw.url("/consent?request_id=")),
            "{port}"
        );
    }
    let other_host = gw
        .authorize(&Authorization {
            redirect_uri: "http://localhost:51234/callback",
            ..Authorization::new(&client_id)
        })
        .await;
    assert_eq!(other_host.status, StatusCode::BAD_REQUEST);
    gw.stop().await;
}

#[tokio::test]
async fn consent_page_is_unframeable_and_refuses_forged_forms() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let consent_url = gw
        .authorize(&Authorization::new(&client_id))
        .await
        .location();
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
    let forged = gw.approve(&request_id, "AAAA").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.header("location").is_none());
    // Denial goes back to the client as access_denied with state and iss.
    let denied = gw
        .decide(&request_id, &form_field(&html, "csrf_token"), "deny")
        .await;
    let q = query_of(&denied.location());
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "xyz-state");
    assert_eq!(q["iss"], gw.issuer);
    gw.stop().await;
}

#[tokio::test]
async fn a_private_use_scheme_client_is_shown_by_its_scheme_with_a_warning_not_a_borrowed_host() {
    let gw = Gateway::start().await;
    let registered = gw
        .register(serde_json::json!({
            "client_name": "Claude",
            "redirect_uris": ["x-evil://claude.ai/cb"],
            "token_endpoint_auth_method": "none",
        }))
        .await
        .json();
    let client_id = registered["client_id"].as_str().expect("registered");
    let consent_url = gw
        .authorize(&Authorization {
            redirect_uri: "x-evil://claude.ai/cb",
            ..Authorization::new(client_id)
        })
        .await
        .location();
    let html = gw.http.get(&consent_url, &[]).await.text();
    assert!(html.contains("<strong>x-evil:</strong> links"), "{html}");
    assert!(html.contains("Caution"), "{html}");
    assert!(
        !html.contains("sent to <strong>claude.ai</strong>"),
        "the part after the scheme names no destination: {html}"
    );
    gw.stop().await;
}
