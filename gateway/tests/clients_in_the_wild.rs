//! Replicas of what MCP clients in the wild send, end to end (issue 11 items 5–9): each test sends
//! the exact request shape one client sends and follows it to where the client would next fail
//! (usually the guarded MCP server answering 401).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use oauth_gateway::config::{RouteConfig, ToolScope};
use serde_json::{Value, json};

/// One request as the upstream received it.
#[derive(Clone)]
struct Seen {
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// An MCP server stand-in at `url` (ending in `/mcp`) that answers every request with an empty
/// JSON-RPC result and records headers and body.
struct Upstream {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            log.lock().unwrap().push(Seen {
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
                            )))
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self { url, seen }
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request reached the upstream")
    }
}

/// `pairs` as a query string.
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// GET `/authorize` of the issuer with `pairs` as the client writes them.
async fn authorize(gw: &Gateway, pairs: &[(&str, &str)]) -> Response {
    let url = format!("{}?{}", gw.url("/authorize"), query(pairs));
    gw.http.get(&url, &[]).await
}

/// The built-in consent page `authorize` leads to, approved: where the browser is sent back.
async fn approve(gw: &Gateway, authorized: &Response) -> String {
    assert_eq!(
        authorized.status,
        StatusCode::FOUND,
        "{}",
        authorized.text()
    );
    let page = gw.http.get(&authorized.location(), &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let page = page.text();
    let decided = gw
        .approve(
            &form_field(&page, "request_id"),
            &form_field(&page, "csrf_token"),
        )
        .await;
    assert_eq!(decided.status, StatusCode::SEE_OTHER, "{}", decided.text());
    decided.location()
}

/// A JSON-RPC POST to the guarded `url` with `token` and the extra `headers`.
async fn mcp_post(
    gw: &Gateway,
    url: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Response {
    let mut req = Request::post(url)
        .header("authorization", bearer(token))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    gw.http
        .send(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
}

fn tool_call(name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": {}}})
}

/// `tools/call` of `name` at `url` with `token` and `headers`.
async fn call(
    gw: &Gateway,
    url: &str,
    token: &str,
    name: &str,
    headers: &[(&str, &str)],
) -> Response {
    mcp_post(gw, url, token, headers, &tool_call(name)).await
}

/// Waits until the guard at `url` judges tokens (its revocation feed is in sync), then POSTs.
async fn synced_post(gw: &Gateway, url: &str, token: &str, body: &Value) -> Response {
    gw.wait_synced(url, token).await;
    mcp_post(gw, url, token, &[], body).await
}

/// Stores a fresh copy of the metadata document at `url`, as a gateway does after fetching it.
async fn store_document(gw: &Gateway, url: &str, document: Value) {
    let stored: Value = gw
        .sql_value(
            "SELECT oauth.store_client_document($1, $2, now() + interval '1 hour', now() + interval '1 minute')",
            &[&url, &document],
        )
        .await;
    assert_eq!(stored, json!({}), "{stored}");
}

/// Claude's metadata document: a public client whose one redirect URI is loopback without a port.
const CLAUDE: &str = "https://claude.ai/oauth/mcp-oauth-client-metadata";

#[tokio::test]
async fn claude_with_a_metadata_document_every_scope_and_no_resource_reaches_the_mcp_server() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options::guarding(upstream.url.clone(), &["mcp"])).await;
    store_document(
        &gw,
        CLAUDE,
        json!({
            "client_id": CLAUDE,
            "client_name": "Claude",
            "client_uri": "https://claude.ai",
            "redirect_uris": ["http://localhost/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none"
        }),
    )
    .await;
    // It asks for every scopes_supported value of the server's metadata, offline_access among
    // them, on whatever port its callback listens this time, and names no resource.
    let metadata = gw
        .get_at_root("/.well-known/oauth-authorization-server", &[])
        .await
        .ok_json();
    let every_scope: Vec<&str> = metadata["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(every_scope.contains(&"offline_access"));
    let every_scope = every_scope.join(" ");
    let callback = "http://localhost:61234/callback";
    let pkce = pkce();
    let authorized = authorize(
        &gw,
        &[
            ("response_type", "code"),
            ("client_id", CLAUDE),
            ("redirect_uri", callback),
            ("scope", every_scope.as_str()),
            ("state", "claude-state"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let back = approve(&gw, &authorized).await;
    assert!(back.starts_with(&format!("{callback}?")), "{back}");
    let code = query_of(&back)["code"].clone();
    let tokens = gw
        .token(&TokenRequest {
            grant_type: "authorization_code",
            code: &code,
            code_verifier: &pkce.verifier,
            redirect_uri: callback,
            client_id: CLAUDE,
            ..TokenRequest::default()
        })
        .await
        .ok_json();
    assert_eq!(tokens["scope"], json!(every_scope), "{tokens}");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    // No resource was named and the gateway guards one: the token is for it (it used to carry
    // the issuer as audience, and the MCP server answered 401).
    assert_eq!(gw.claims(access)["aud"], json!(gw.mcp_url()));
    let answered = synced_post(&gw, &gw.mcp_url(), access, &tool_call("whoami")).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());
    gw.stop().await;
}

#[tokio::test]
async fn claude_ai_with_a_client_made_for_it_asks_for_every_scope_and_gets_those_it_may_have() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options::guarding(upstream.url.clone(), &["mcp"])).await;
    // claude.ai's "custom OAuth client": an administrator's confidential client, scope mcp only.
    let callback = "https://claude.ai/api/mcp/auth_callback";
    let client = gw
        .create_client(&NewClient {
            name: "Claude",
            redirect_uris: &[callback],
            scopes: &["mcp"],
            auth_method: "client_secret_post",
            application_type: "web",
            ..NewClient::default()
        })
        .await;
    let pkce = pkce();
    let authorized = authorize(
        &gw,
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", callback),
            ("scope", "openid profile email offline_access mcp"),
            ("state", "s"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    // Until issue 11 this came back to claude.ai as invalid_scope.
    let back = approve(&gw, &authorized).await;
    let code = query_of(&back)["code"].clone();
    let tokens = gw
        .token(&TokenRequest {
            grant_type: "authorization_code",
            code: &code,
            code_verifier: &pkce.verifier,
            redirect_uri: callback,
            client_id: &client.id,
            client_secret: client.secret(),
            ..TokenRequest::default()
        })
        .await
        .ok_json();
    assert_eq!(
        tokens["scope"],
        json!("mcp"),
        "the granted scope is said: {tokens}"
    );
    let access = tokens["access_token"].as_str().unwrap();
    let answered = synced_post(&gw, &gw.mcp_url(), access, &tool_call("whoami")).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());
    gw.stop().await;
}

#[tokio::test]
async fn claude_code_names_the_origin_with_a_slash_as_its_resource_and_reaches_the_mcp_server() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options::guarding(upstream.url.clone(), &["mcp"])).await;
    let prm = gw
        .get_at_root("/.well-known/oauth-protected-resource/mcp", &[])
        .await
        .ok_json();
    assert_eq!(prm["resource"], json!(gw.mcp_url()));
    let callback = "http://localhost:53682/callback";
    let registered = gw
        .register(json!({
            "client_name": "Claude Code (files)",
            "redirect_uris": [callback],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none"
        }))
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let client_id = registered.json()["client_id"].as_str().unwrap().to_owned();
    // Not the metadata's resource: the origin plus "/", at /authorize, /token and on refresh.
    let origin = format!("{}/", gw.base);
    let pkce = pkce();
    let authorized = authorize(
        &gw,
        &[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("redirect_uri", callback),
            ("state", "cc-state"),
            ("scope", "mcp"),
            ("resource", &origin),
        ],
    )
    .await;
    let code = query_of(&approve(&gw, &authorized).await)["code"].clone();
    let tokens = gw
        .token(&TokenRequest {
            grant_type: "authorization_code",
            code: &code,
            code_verifier: &pkce.verifier,
            redirect_uri: callback,
            client_id: &client_id,
            resource: &origin,
            ..TokenRequest::default()
        })
        .await
        .ok_json();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(gw.claims(access)["aud"], json!(gw.mcp_url()));
    let answered = synced_post(&gw, &gw.mcp_url(), access, &tool_call("whoami")).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());

    let refreshed = gw
        .token(&TokenRequest {
            resource: &origin,
            ..TokenRequest::refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        })
        .await
        .ok_json();
    let access = refreshed["access_token"].as_str().unwrap();
    let answered = mcp_post(&gw, &gw.mcp_url(), access, &[], &tool_call("whoami")).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());
    gw.stop().await;
}

#[tokio::test]
async fn mcp_remote_reads_the_metadata_and_registers_at_the_root_when_the_issuer_has_a_path() {
    let gw = Gateway::start_with(Options {
        issuer_path: "/oauth",
        ..Options::default()
    })
    .await;
    assert_ne!(gw.issuer, gw.base);
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/oauth",
    ] {
        let metadata = gw.get_at_root(path, &[]).await;
        assert_eq!(metadata.status, StatusCode::OK, "{path}");
        let metadata = metadata.json();
        assert_eq!(metadata["issuer"], json!(gw.issuer), "{path}");
        assert_eq!(
            metadata["registration_endpoint"],
            json!(gw.url("/register")),
            "{path}"
        );
    }
    // mcp-remote posts to the origin's /register whatever registration_endpoint says.
    let registered = gw
        .http
        .post_raw(
            &format!("{}/register", gw.base),
            "application/json",
            json!({
                "redirect_uris": ["http://localhost:3334/oauth/callback"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "client_name": "MCP CLI Proxy",
                "client_uri": "https://github.com/modelcontextprotocol/mcp-cli"
            })
            .to_string(),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{}",
        registered.text()
    );
    let registration = registered.json();
    let client_id = registration["client_id"].as_str().unwrap();
    assert_eq!(
        registration["registration_client_uri"],
        json!(gw.url(&format!("/register/{client_id}"))),
        "managed under the issuer's path"
    );
    // Nothing else moves to the root.
    assert_eq!(
        gw.get_at_root("/.well-known/jwks.json", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    gw.stop().await;
}

/// A client_credentials token of `machine` for `resource`.
async fn client_token(gw: &Gateway, machine: &Credentials, resource: &str) -> Response {
    gw.token(&TokenRequest {
        grant_type: "client_credentials",
        scope: "mcp",
        resource,
        authorization: &machine.basic(),
        ..TokenRequest::default()
    })
    .await
}

#[tokio::test]
async fn an_unknown_resource_is_refused_at_authorize_and_token_instead_of_401_at_the_server() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options::guarding(upstream.url.clone(), &["mcp"])).await;
    let unknown = "https://unknown.example/mcp";
    // A registered client learns it on the server's error page (its redirect URIs are unvetted).
    let registered = gw
        .register(json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
        .await;
    let registered_id = registered.json()["client_id"].as_str().unwrap().to_owned();
    let refused = gw
        .authorize(&Authorization {
            resource: unknown,
            ..Authorization::new(&registered_id)
        })
        .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert!(
        refused
            .text()
            .contains("resource is not one this server issues tokens for"),
        "{}",
        refused.text()
    );
    // An administrator's client at its redirect URI.
    let vetted = gw.public_client(&["mcp"]).await;
    let refused = gw
        .authorize(&Authorization {
            resource: unknown,
            ..Authorization::new(&vetted)
        })
        .await;
    assert_eq!(refused.status, StatusCode::FOUND);
    assert_eq!(query_of(&refused.location())["error"], "invalid_target");

    let machine = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    client_token(&gw, &machine, unknown).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_target",
        "/token",
    );
    let guarded = gw.mcp_url();
    let issued = client_token(&gw, &machine, &guarded).await.ok_json();
    let answered = synced_post(
        &gw,
        &guarded,
        issued["access_token"].as_str().unwrap(),
        &tool_call("whoami"),
    )
    .await;
    assert_eq!(answered.status, StatusCode::OK);
    gw.stop().await;
}

#[tokio::test]
async fn the_slash_variant_of_an_origin_resource_is_the_same_resource() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options {
        routes: vec![RouteConfig {
            prefix: "/".into(),
            upstream: upstream.url.clone(),
            ..RouteConfig::default()
        }],
        ..Options::default()
    })
    .await;
    // The route's resource is the origin with its "/"; the client writes the origin without.
    let prm = gw
        .get_at_root("/.well-known/oauth-protected-resource", &[])
        .await
        .ok_json();
    assert_eq!(prm["resource"], json!(format!("{}/", gw.base)));
    let client_id = gw.public_client(&["mcp"]).await;
    let authorization = Authorization {
        resource: &gw.base,
        scope: "mcp",
        ..Authorization::new(&client_id)
    };
    let code = gw.code(&authorization).await;
    let tokens = gw
        .token(&TokenRequest {
            resource: &gw.base,
            ..TokenRequest::redeem(&authorization, &code)
        })
        .await
        .ok_json();
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(gw.claims(access)["aud"], json!(format!("{}/", gw.base)));
    let answered = synced_post(&gw, &format!("{}/", gw.base), access, &tool_call("x")).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());
    gw.stop().await;
}

/// An access token for the guarded `/mcp` with `scope`, by a public client allowed it.
async fn token_with(gw: &Gateway, scope: &str) -> String {
    let scopes: Vec<&str> = scope.split(' ').collect();
    let client_id = gw.public_client(&scopes).await;
    let resource = gw.mcp_url();
    let tokens = gw
        .code_flow(&Authorization {
            resource: &resource,
            scope,
            ..Authorization::new(&client_id)
        })
        .await
        .ok_json();
    tokens["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn offline_access_stays_out_of_the_challenge_and_mcp_headers_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options::guarding(
        upstream.url.clone(),
        &["mcp", "offline_access"],
    ))
    .await;
    let anonymous = gw.http.get(&gw.mcp_url(), &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let challenge = anonymous.header("www-authenticate").unwrap();
    assert!(challenge.ends_with(", scope=\"mcp\""), "{challenge}");
    let prm = gw
        .get_at_root("/.well-known/oauth-protected-resource/mcp", &[])
        .await
        .ok_json();
    assert_eq!(prm["scopes_supported"], json!(["mcp"]));

    // A token without offline_access is what such a route needs.
    let token = token_with(&gw, "mcp").await;
    gw.wait_synced(&gw.mcp_url(), &token).await;
    let headers = [("mcp-method", "tools/call"), ("mcp-name", "read_file")];
    let answered = mcp_post(
        &gw,
        &gw.mcp_url(),
        &token,
        &headers,
        &tool_call("read_file"),
    )
    .await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text());
    let seen = upstream.last();
    assert_eq!(seen.headers["mcp-method"], "tools/call");
    assert_eq!(seen.headers["mcp-name"], "read_file");
    assert_eq!(seen.body, tool_call("read_file").to_string());
    gw.stop().await;
}

#[tokio::test]
async fn a_tool_that_needs_a_scope_asks_for_a_step_up_naming_it_and_the_hierarchy_counts() {
    let upstream = Upstream::start().await;
    let gw = Gateway::start_with(Options::guarding(upstream.url.clone(), &["mcp"])).await;
    gw.admin
        .execute(
            "SELECT oauth.configure(scopes_supported => '{openid,profile,email,offline_access,mcp,mcp:write,mcp:admin}')",
            &[],
        )
        .await
        .unwrap();
    // Deleting tools need mcp:write, which mcp:admin includes.
    let (guard, base) = gw
        .second_with(|config| {
            config.routes[0].tool_scopes = vec![ToolScope {
                method: "tools/call".into(),
                name: Some("delete_*".into()),
                scopes: vec!["mcp:write".into()],
            }];
            config.scope_hierarchy =
                BTreeMap::from([("mcp:admin".to_owned(), vec!["mcp:write".to_owned()])]);
        })
        .await;
    let url = format!("{base}/mcp");
    let reader = token_with(&gw, "mcp").await;
    gw.wait_synced(&url, &reader).await;
    let mirrored = |name: &'static str| [("mcp-method", "tools/call"), ("mcp-name", name)];

    let read = call(&gw, &url, &reader, "read_file", &mirrored("read_file")).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    assert_eq!(upstream.last().headers["mcp-name"], "read_file");
    let seen_before = upstream.seen.lock().unwrap().len();
    let deleting = mirrored("delete_file");
    for (what, headers) in [
        ("with the headers", &deleting[..]),
        ("without headers (before MCP 2026-07-28)", &[][..]),
    ] {
        let refused = call(&gw, &url, &reader, "delete_file", headers).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{what}: {}",
            refused.text()
        );
        let challenge = refused.header("www-authenticate").unwrap();
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(challenge.contains("scope=\"mcp mcp:write\""), "{challenge}");
    }
    // Headers naming a harmless tool do not carry a call of another past the guard.
    let disguised = call(&gw, &url, &reader, "delete_file", &mirrored("read_file")).await;
    assert_eq!(
        disguised.status,
        StatusCode::BAD_REQUEST,
        "{}",
        disguised.text()
    );
    assert_eq!(upstream.seen.lock().unwrap().len(), seen_before);

    for scope in ["mcp mcp:write", "mcp mcp:admin"] {
        let writer = token_with(&gw, scope).await;
        let deleted = call(&gw, &url, &writer, "delete_file", &mirrored("delete_file")).await;
        assert_eq!(
            deleted.status,
            StatusCode::OK,
            "{scope}: {}",
            deleted.text()
        );
    }
    assert_eq!(upstream.last().body, tool_call("delete_file").to_string());
    guard.shutdown(std::time::Duration::from_secs(2)).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_consent_page_names_a_metadata_document_client_with_its_host() {
    let gw = Gateway::start().await;
    let chatgpt = "https://chatgpt.com/oauth/client-metadata.json";
    let callback = "https://chatgpt.com/connector_platform_oauth_redirect";
    store_document(
        &gw,
        chatgpt,
        json!({
            "client_id": chatgpt,
            "client_name": "ChatGPT",
            "redirect_uris": [callback],
            "token_endpoint_auth_method": "none"
        }),
    )
    .await;
    let pkce = pkce();
    let authorized = authorize(
        &gw,
        &[
            ("response_type", "code"),
            ("client_id", chatgpt),
            ("redirect_uri", callback),
            ("scope", "mcp"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    assert_eq!(
        authorized.status,
        StatusCode::FOUND,
        "{}",
        authorized.text()
    );
    let page = gw.http.get(&authorized.location(), &[]).await.text();
    assert!(
        page.contains("Allow <em>ChatGPT (chatgpt.com)</em>"),
        "{page}"
    );
    gw.stop().await;
}
