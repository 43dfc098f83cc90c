//! Replicas of what MCP clients in the wild send, at the extension's level: the exact registration
//! bodies, then an authorization to each kind of redirect URI they registered; what Claude, Claude
//! Code and ChatGPT ask for (scopes, resources, one metadata document for every user).

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

/// Runs one authorization to `redirect_uri` and redeems its code; the token response.
async fn authorize_and_redeem(db: &Client, registered: &Value, redirect_uri: &str) -> Value {
    let client = TestClient::registered(registered, redirect_uri);
    let authorized = authorize(db, &client, &unique("user")).await;
    assert!(
        authorized.location.starts_with(redirect_uri),
        "{} returns to {redirect_uri}",
        authorized.location
    );
    authorized.exchange().run(db).await
}

/// Registers `body` as the client sends it, then completes an authorization at each of `uses`.
async fn registers_as_native_and_completes_at(db: &Client, body: Value, uses: &[&str]) {
    let registered = register(db, &body).await;
    assert!(registered["error"].is_null(), "{registered}");
    assert_eq!(registered["application_type"], json!("native"));
    for redirect_uri in uses {
        let tokens = authorize_and_redeem(db, &registered, redirect_uri).await;
        assert!(
            tokens["refresh_token"].is_string(),
            "{redirect_uri}: {tokens}"
        );
    }
}

#[tokio::test]
async fn cursor_registers_a_private_scheme_an_https_and_a_loopback_redirect_uri_without_application_type()
 {
    let body = json!({
        "client_name": "Cursor",
        "token_endpoint_auth_method": "none",
        "redirect_uris": [
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "https://www.cursor.com/agents/mcp/oauth/callback",
            "http://localhost:8787/callback"
        ],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]
    });
    let uses = [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
        "http://localhost:49152/callback",
    ];
    registers_as_native_and_completes_at(&gateway().await, body, &uses).await;
}

#[tokio::test]
async fn vs_code_registers_a_loopback_and_an_https_redirect_uri_and_uses_another_port_when_busy() {
    let body = json!({
        "client_name": "Visual Studio Code",
        "token_endpoint_auth_method": "none",
        "redirect_uris": ["http://127.0.0.1:33418/", "https://vscode.dev/redirect"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"]
    });
    let uses = [
        "http://127.0.0.1:33418/",
        "http://127.0.0.1:33419/",
        "https://vscode.dev/redirect",
    ];
    registers_as_native_and_completes_at(&gateway().await, body, &uses).await;
}

#[tokio::test]
async fn a_client_that_says_it_is_web_still_cannot_register_loopback_or_private_scheme_uris() {
    let db = gateway().await;
    for uri in [
        "http://127.0.0.1:33418/",
        "cursor://anysphere.cursor-mcp/oauth/callback",
    ] {
        let refused = register(
            &db,
            &json!({
                "application_type": "web",
                "token_endpoint_auth_method": "none",
                "redirect_uris": [uri, "https://app.example/cb"],
            }),
        )
        .await;
        assert_eq!(
            refused["error"],
            json!("invalid_redirect_uri"),
            "{uri}: {refused}"
        );
    }
    let plain_http = register(
        &db,
        &json!({
            "token_endpoint_auth_method": "none",
            "redirect_uris": ["http://app.example/cb", "http://127.0.0.1/cb"],
        }),
    )
    .await;
    assert_eq!(
        plain_http["error"],
        json!("invalid_redirect_uri"),
        "http off loopback stays refused for native clients too: {plain_http}"
    );
}

// Issue 11 items 5, 7 and 9: what Claude, Claude Code and ChatGPT send, as the extension sees it.
// Tests that list resources (global state) run in a database of their own.

/// Every value of the default `scopes_supported`: what claude.ai asks for, whatever the client
/// may have.
const EVERY_SUPPORTED_SCOPE: &str = "openid profile email offline_access mcp";

/// `oauth.exchange_code` as the gateway calls it: the resource passed through
/// `oauth.canonical_resource`.
async fn exchange_as_the_gateway(db: &Client, auth: &Authorized, resource: Option<&str>) -> Value {
    scalar(
        db,
        "SELECT oauth.exchange_code($1, $2, $3, $4, $5, oauth.canonical_resource($6))",
        &[
            &auth.client_id,
            &auth.client_secret,
            &auth.code,
            &auth.pkce.verifier,
            &auth.redirect_uri,
            &resource,
        ],
    )
    .await
}

/// `oauth.rotate_refresh_token` as the gateway calls it.
async fn refresh_as_the_gateway(
    db: &Client,
    client: &TestClient,
    refresh_token: &str,
    resource: Option<&str>,
) -> Value {
    scalar(
        db,
        "SELECT oauth.rotate_refresh_token($1, $2, $3, NULL, oauth.canonical_resource($4))",
        &[&client.id, &client.secret, &refresh_token, &resource],
    )
    .await
}

/// Lists `resources` as a gateway guarding them does when it starts.
async fn declare(db: &TempDb, resources: &[&str]) {
    let resources: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
    execute(
        &db.gateway().await,
        "SELECT oauth.declare_resources($1)",
        &[&resources],
    )
    .await;
}

/// The scopes and resource of the pending request `begun`, as the consent page reads them.
async fn pending(db: &Client, begun: &Value) -> (Vec<String>, Option<String>) {
    let row = one_row(
        db,
        "SELECT scopes, resource FROM oauth.get_authorization_request($1)",
        &[&str_field(begun, "request_id")],
    )
    .await;
    (row.get(0), row.get(1))
}

/// claude.ai with a client an administrator made for it (its "custom OAuth client" settings):
/// it asks for every scope the server supports, and omits `resource`.
async fn claude_ai_client(admin: &Client, scopes: &[&str]) -> TestClient {
    create_client_with(admin, |spec| {
        spec.name = "Claude".into();
        spec.redirect_uris = vec!["https://claude.ai/api/mcp/auth_callback".into()];
        spec.scopes = scopes.iter().map(|s| s.to_string()).collect();
    })
    .await
}

#[tokio::test]
async fn claude_asks_for_every_supported_scope_and_gets_those_its_client_may_have() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = claude_ai_client(&admin, &["mcp"]).await;
    let request = Authorize {
        params: json!({"scope": EVERY_SUPPORTED_SCOPE, "nonce": null}),
        ..Authorize::new(&client)
    };
    // RFC 6749 §3.3: the server may grant less than asked and says so in the token response.
    let begun = request.begin(&gw).await;
    assert_ok(&begun, "a request for more scopes than the client may have");
    assert_eq!(
        pending(&gw, &begun).await.0,
        ["mcp"],
        "the consent page asks for mcp only"
    );
    let tokens = request
        .run(&gw, &unique("user"))
        .await
        .exchange()
        .run(&gw)
        .await;
    assert_ok(&tokens, "exchange");
    assert_eq!(tokens["scope"], json!("mcp"), "{tokens}");

    let nothing_allowed = Authorize {
        params: json!({"scope": "openid profile"}),
        ..Authorize::new(&client)
    };
    assert_error(
        &nothing_allowed.begin(&gw).await,
        "invalid_scope",
        "none of the requested scopes is allowed",
    );
}

#[tokio::test]
async fn claude_asks_for_offline_access_and_refresh_tokens_follow_the_grant_types() {
    let (admin, gw) = (admin().await, gateway().await);
    let refreshing = claude_ai_client(&admin, &["mcp", "offline_access"]).await;
    let tokens = Authorize {
        params: json!({"scope": "mcp offline_access", "nonce": null}),
        ..Authorize::new(&refreshing)
    }
    .run(&gw, &unique("user"))
    .await
    .exchange()
    .run(&gw)
    .await;
    assert_eq!(tokens["scope"], json!("mcp offline_access"), "{tokens}");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");

    let code_only = create_client_with(&admin, |spec| {
        spec.grant_types = vec!["authorization_code".into()];
    })
    .await;
    let tokens = Authorize {
        params: json!({"scope": "mcp offline_access", "nonce": null}),
        ..Authorize::new(&code_only)
    }
    .run(&gw, &unique("user"))
    .await
    .exchange()
    .run(&gw)
    .await;
    assert_ok(
        &tokens,
        "offline_access for a client without the refresh_token grant",
    );
    assert!(
        tokens["refresh_token"].is_null(),
        "offline_access does not add a grant type: {tokens}"
    );
}

#[tokio::test]
async fn claude_sends_no_resource_and_gets_the_one_resource_this_server_lists() {
    let db = TempDb::create().await;
    let (admin, gw) = (db.admin().await, db.gateway().await);
    let client = claude_ai_client(&admin, &["mcp"]).await;
    let authorize = |scope: &'static str| Authorize {
        params: json!({"scope": scope, "nonce": null}),
        ..Authorize::new(&client)
    };
    declare(&db, &["https://mcp.example.com/mcp"]).await;
    let tokens = authorize(EVERY_SUPPORTED_SCOPE)
        .run(&gw, &unique("user"))
        .await
        .exchange()
        .run(&gw)
        .await;
    assert_eq!(
        tokens["resource"],
        json!("https://mcp.example.com/mcp"),
        "{tokens}"
    );

    // With two, which one is meant cannot be told: no audience, as before (the gateway's default).
    declare(&db, &["https://mcp.example.com/files"]).await;
    let tokens = authorize("mcp")
        .run(&gw, &unique("user"))
        .await
        .exchange()
        .run(&gw)
        .await;
    assert_ok(&tokens, "exchange");
    assert!(tokens["resource"].is_null(), "{tokens}");
}

#[tokio::test]
async fn claude_code_asks_for_the_origin_with_a_slash_and_gets_the_one_resource_under_it() {
    let db = TempDb::create().await;
    let gw = db.gateway().await;
    let registered = register(
        &gw,
        &json!({
            "client_name": "Claude Code (files)",
            "redirect_uris": ["http://localhost:54545/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none"
        }),
    )
    .await;
    let client = TestClient::registered(&registered, "http://localhost:54545/callback");
    declare(&db, &["https://mcp.example.com/mcp"]).await;
    // The protected-resource metadata says https://mcp.example.com/mcp; Claude Code sends the
    // origin plus "/" at /authorize, /token and on refresh.
    let bare_origin = "https://mcp.example.com/";
    let request = Authorize {
        params: json!({"resource": bare_origin, "scope": "mcp", "nonce": null}),
        ..Authorize::new(&client)
    };
    let begun = request.begin(&gw).await;
    assert_ok(&begun, "the bare origin");
    assert_eq!(
        pending(&gw, &begun).await.1.as_deref(),
        Some("https://mcp.example.com/mcp")
    );
    let auth = request.run(&gw, &unique("user")).await;
    let tokens = exchange_as_the_gateway(&gw, &auth, Some(bare_origin)).await;
    assert_ok(&tokens, "the code exchange repeating the bare origin");
    assert_eq!(tokens["resource"], json!("https://mcp.example.com/mcp"));
    let refreshed = refresh_as_the_gateway(
        &gw,
        &client,
        str_field(&tokens, "refresh_token"),
        Some(bare_origin),
    )
    .await;
    assert_ok(&refreshed, "the refresh repeating the bare origin");
    assert_eq!(refreshed["resource"], json!("https://mcp.example.com/mcp"));

    // Two resources under the origin: the bare origin names neither.
    declare(&db, &["https://mcp.example.com/files"]).await;
    assert_error(
        &request.begin(&gw).await,
        "invalid_target",
        "an ambiguous origin",
    );
}

#[tokio::test]
async fn an_unlisted_resource_is_refused_at_authorize_and_token_once_any_is_listed() {
    let db = TempDb::create().await;
    let (admin, gw) = (db.admin().await, db.gateway().await);
    let web = confidential_client(&admin).await;
    let machine = create_client_with(&admin, |spec| {
        spec.scopes = vec!["mcp".into()];
        spec.grant_types = vec!["client_credentials".into()];
    })
    .await;
    let device_grant = vec!["urn:ietf:params:oauth:grant-type:device_code".to_owned()];
    let device = create_client(
        &admin,
        ClientSpec {
            grant_types: device_grant,
            ..ClientSpec::public_native()
        },
    )
    .await;
    let authorize = |resource: &'static str| Authorize {
        params: json!({"resource": resource}),
        ..Authorize::new(&web)
    };
    let machine_token = |resource: &'static str| {
        let (gw, machine) = (&gw, &machine);
        async move {
            scalar::<Value>(
                gw,
                "SELECT oauth.client_credentials_grant($1, $2, 'mcp', $3)",
                &[&machine.id, &machine.secret, &resource],
            )
            .await
        }
    };
    let device_code = |resource: &'static str| {
        let (gw, device) = (&gw, &device);
        async move {
            scalar::<Value>(
                gw,
                "SELECT oauth.begin_device_authorization($1, NULL, 'mcp', $2)",
                &[&device.id, &resource],
            )
            .await
        }
    };
    let unknown = "https://unknown.example/mcp";
    // A fresh install lists nothing, and accepts any resource (as before).
    assert_ok(&authorize(unknown).begin(&gw).await, "nothing listed yet");
    assert_ok(&machine_token(unknown).await, "nothing listed yet");

    declare(
        &db,
        &["https://mcp.example.com/mcp", "https://files.example.com"],
    )
    .await;
    let refused = authorize(unknown).begin(&gw).await;
    assert_error(
        &refused,
        "invalid_target",
        "an unlisted resource at /authorize",
    );
    assert!(
        parse_redirect(str_field(&refused, "location"))
            .param("error")
            .eq("invalid_target"),
        "an administrator's client learns it at its redirect URI: {refused}"
    );
    assert_error(
        &machine_token(unknown).await,
        "invalid_target",
        "client_credentials",
    );
    assert_error(
        &device_code(unknown).await,
        "invalid_target",
        "device authorization",
    );

    // "https://files.example.com" and "https://files.example.com/" are one resource; tokens carry
    // the listed spelling, which is what the resource server compares.
    let tokens = authorize("https://files.example.com/")
        .run(&gw, &unique("user"))
        .await
        .exchange()
        .run(&gw)
        .await;
    assert_eq!(
        tokens["resource"],
        json!("https://files.example.com"),
        "{tokens}"
    );
    let issued = machine_token("https://FILES.example.com:443").await;
    assert_eq!(
        issued["resource"],
        json!("https://files.example.com"),
        "{issued}"
    );
    assert_ok(
        &device_code("https://mcp.example.com/mcp").await,
        "a listed resource",
    );

    // An administrator lists a resource server of the application's own, and removes it again.
    let own = "https://reports.example.com/mcp";
    assert!(scalar::<bool>(&admin, "SELECT oauth.add_resource($1)", &[&own]).await);
    assert!(!scalar::<bool>(&admin, "SELECT oauth.add_resource($1)", &[&own]).await);
    assert_ok(
        &machine_token(own).await,
        "a resource the administrator listed",
    );
    assert!(scalar::<bool>(&admin, "SELECT oauth.remove_resource($1)", &[&own]).await);
    assert_error(
        &machine_token(own).await,
        "invalid_target",
        "a removed resource",
    );

    // A client an administrator restricted to a resource may have it, listed or not.
    let restricted = create_client_with(&admin, |spec| {
        spec.allowed_resources = Some(vec![own.into()]);
    })
    .await;
    let tokens = Authorize {
        params: json!({"resource": own}),
        ..Authorize::new(&restricted)
    }
    .run(&gw, &unique("user"))
    .await
    .exchange()
    .run(&gw)
    .await;
    assert_eq!(tokens["resource"], json!(own), "{tokens}");
}

/// A fresh, valid copy of the metadata document at `url` (as the gateway stores a fetched one).
async fn store_document(gw: &Client, url: &str, name: &str, redirect_uri: &str) {
    let document = json!({
        "client_id": url,
        "client_name": name,
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none"
    });
    let stored: Value = scalar(
        gw,
        "SELECT oauth.store_client_document($1, $2, now() + interval '1 hour', now() + interval '1 minute')",
        &[&url, &document],
    )
    .await;
    assert_ok(&stored, "store_client_document");
}

/// ChatGPT: one metadata document, one client_id, for every user.
async fn chatgpt(gw: &Client) -> TestClient {
    let url = format!(
        "https://chatgpt.com/oauth/{}/client.json",
        Uuid::new_v4().simple()
    );
    let redirect_uri = "https://chatgpt.com/connector_platform_oauth_redirect";
    store_document(gw, &url, "ChatGPT", redirect_uri).await;
    TestClient {
        id: url,
        secret: None,
        redirect_uri: redirect_uri.into(),
        spec: ClientSpec::public_native(),
    }
}

#[tokio::test]
async fn a_metadata_document_client_is_named_with_its_host_on_consent_and_in_connected_apps() {
    let (admin, gw) = (admin().await, gateway().await);
    let client = chatgpt(&gw).await;
    let begun = Authorize::new(&client).begin(&gw).await;
    assert_ok(&begun, "begin_authorization");
    let shown: String = scalar(
        &gw,
        "SELECT client_name FROM oauth.get_authorization_request($1)",
        &[&str_field(&begun, "request_id")],
    )
    .await;
    assert_eq!(shown, "ChatGPT (chatgpt.com)");
    let user = unique("user");
    Authorize::new(&client).run(&gw, &user).await;
    let connected: Vec<String> = column(
        &admin,
        "SELECT client_name FROM oauth.list_user_grants($1)",
        &[&user],
    )
    .await;
    assert_eq!(connected, ["ChatGPT (chatgpt.com)"]);

    // Clients that are not documents keep their names.
    let named = create_client_with(&admin, |spec| spec.name = "Nightly sync".into()).await;
    let user = unique("user");
    tokens_for(&gw, &named, &user).await;
    let connected: Vec<String> = column(
        &admin,
        "SELECT client_name FROM oauth.list_user_grants($1)",
        &[&user],
    )
    .await;
    assert_eq!(connected, ["Nightly sync"]);
}

#[tokio::test]
async fn refresh_reuse_on_one_users_device_revokes_only_that_users_grant_of_a_shared_document_client()
 {
    let (admin, gw) = (admin().await, gateway().await);
    let client = chatgpt(&gw).await;
    let (alice, bob) = (unique("alice"), unique("bob"));
    let alices = tokens_for(&gw, &client, &alice).await;
    let bobs = tokens_for(&gw, &client, &bob).await;
    let stolen = str_field(&alices, "refresh_token");
    assert_ok(
        &rotate(&gw, &client, stolen).await,
        "alice's device refreshes",
    );
    let later = db_time_in(&gw, "1 hour").await;
    let reused = Rotate::of(&client, stolen).at(&later).run(&gw).await;
    assert_error(
        &reused,
        "invalid_grant",
        "the rotated token presented again",
    );

    assert!(!grant_live(&admin, uuid_field(&alices, "grant_id")).await);
    assert!(grant_live(&admin, uuid_field(&bobs, "grant_id")).await);
    assert_ok(
        &rotate(&gw, &client, str_field(&bobs, "refresh_token")).await,
        "bob, on the same client_id, refreshes as before",
    );
    assert_eq!(user_grant_ids(&admin, &bob).await.len(), 1);
    assert!(user_grant_ids(&admin, &alice).await.is_empty());
}
