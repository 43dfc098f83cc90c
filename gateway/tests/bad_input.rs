//! A battery of malformed requests against every endpoint: each gets a 4xx (an OAuth error JSON,
//! or an error page on the browser endpoints), never a 5xx, a panic or a redirect to an
//! unregistered URI.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use rand::{Rng, SeedableRng};

const ENDPOINTS: [&str; 12] = [
    "/authorize",
    "/par",
    "/consent",
    "/token",
    "/register",
    "/register/no-such-client",
    "/device_authorization",
    "/device",
    "/revoke",
    "/introspect",
    "/userinfo",
    "/.well-known/jwks.json",
];

fn bodies(rng: &mut rand::rngs::StdRng) -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![
        ("application/x-www-form-urlencoded", b"".to_vec()),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=authorization_code&grant_type=refresh_token".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=%FF%FE&client_id=%C3%28".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=%zz&code=%".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=refresh_token&refresh_token=&client_id=".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=client_credentials&client_id=x".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=authorization_code&code=x&code_verifier=short&client_id=x".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"token=a.b.c&client_id=x".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&device_code=&client_id=x"
                .to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a.b.c&subject_token_type=x&client_id=x"
                .to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c&client_id=x"
                .to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"user_code=%00%FF&csrf_token=&decision=approve".to_vec(),
        ),
        (
            "application/x-www-form-urlencoded",
            b"token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.&client_id=x".to_vec(),
        ),
        ("application/x-www-form-urlencoded", vec![b'a'; 200 * 1024]),
        (
            "application/json",
            br#"{"grant_type":"refresh_token"}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"redirect_uris":[null, 1, {}]}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"redirect_uris":["https://good@evil.example/cb"]}"#.to_vec(),
        ),
        ("application/json", br#"[]"#.to_vec()),
        ("application/json", b"\xff\xfe{".to_vec()),
        ("text/plain", b"hello".to_vec()),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\n\r\n--x--".to_vec(),
        ),
    ];
    for _ in 0..20 {
        let len = rng.gen_range(0..512);
        let random: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        out.push(("application/x-www-form-urlencoded", random.clone()));
        out.push(("application/json", random));
    }
    out
}

#[tokio::test]
async fn malformed_requests_to_every_endpoint_get_a_4xx_never_a_5xx() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0a17);
    let mut tried = 0;
    for endpoint in ENDPOINTS {
        for (content_type, body) in bodies(&mut rng) {
            for method in [Method::POST, Method::PUT, Method::DELETE] {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(gw.url(endpoint))
                    .header("content-type", content_type)
                    .header("authorization", "Bearer not-a-token")
                    .body(Full::new(Bytes::from(body.clone())))
                    .unwrap();
                let resp = gw.http.send(req).await;
                tried += 1;
                assert!(
                    resp.status.is_client_error(),
                    "{method} {endpoint} {content_type}: {}",
                    resp.status
                );
                if let Some(location) = resp.header("location") {
                    panic!("{method} {endpoint} redirected to {location}");
                }
            }
        }
    }
    // Query strings on the browser endpoints: repeats, bad encodings, hostile redirect URIs.
    let p = pkce();
    for query in [
        "".to_owned(),
        "client_id=%FF".to_owned(),
        format!(
            "client_id={client_id}&client_id={client_id}&redirect_uri=http://127.0.0.1/callback"
        ),
        format!(
            "client_id={client_id}&redirect_uri=http://127.0.0.1/callback&redirect_uri=https://evil.example/"
        ),
        format!(
            "client_id={client_id}&redirect_uri=https%3A%2F%2Fevil.example%2Fcallback&response_type=code"
        ),
        format!(
            "client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%2FCallback&response_type=code"
        ),
        format!(
            "client_id={client_id}&redirect_uri=http%3A%2F%2F127%252E0%252E0%252E1%2Fcallback&response_type=code"
        ),
        format!(
            "client_id={client_id}&redirect_uri=http%3A%2F%2Fgood%40127.0.0.1%2Fcallback&response_type=code"
        ),
        format!(
            "client_id={client_id}&redirect_uri=javascript:alert(1)&code_challenge={}",
            p.challenge
        ),
        format!("client_id={}&redirect_uri=x", "c".repeat(10_000)),
        "request_id=nope".to_owned(),
        "request_id=".to_owned(),
        "user_code=%FF%FE".to_owned(),
        "user_code=BCDF-GHJK&user_code=BCDF-GHJK".to_owned(),
        format!("user_code={}", "B".repeat(10_000)),
        "client_id=https%3A%2F%2F127.0.0.1%2Fclient.json&redirect_uri=http://127.0.0.1/callback"
            .to_owned(),
        "client_id=https%3A%2F%2F10.0.0.1%2Fclient.json&redirect_uri=http://127.0.0.1/callback"
            .to_owned(),
    ] {
        for endpoint in ["/authorize", "/consent", "/device"] {
            let resp = gw.get(&format!("{endpoint}?{query}")).await;
            tried += 1;
            // Without a user code the device page is its entry form.
            let entry_form = endpoint == "/device" && !query.contains("user_code");
            assert!(
                resp.status.is_client_error() || (entry_form && resp.status == StatusCode::OK),
                "GET {endpoint}?{query}: {}",
                resp.status
            );
            assert!(
                resp.header("location").is_none(),
                "GET {endpoint}?{query} redirected"
            );
        }
    }
    // Oversized headers are refused by the HTTP layer, not answered with a 5xx.
    let huge = "x".repeat(100 * 1024);
    let resp = gw.http.get(&gw.url("/token"), &[("x-huge", &huge)]).await;
    tried += 1;
    assert!(!resp.status.is_server_error(), "{}", resp.status);
    assert!(tried > 1000, "{tried} inputs tried");
    println!("{tried} malformed requests, no 5xx");
    assert_eq!(
        StatusCode::OK,
        gw.get("/.well-known/jwks.json").await.status,
        "still serving"
    );
    gw.stop().await;
}

/// Form values PostgreSQL's text cannot hold (NUL) or that are not UTF-8 (a lone surrogate):
/// refused with the endpoint's 400.
const UNSTORABLE_FORM_VALUES: [&[u8]; 5] = [b"%00", b"a%00b", b"%00%00", b"x\0y", b"%ED%A0%80"];
/// Control characters are storable: refused only where a protocol rule says so, never a 5xx.
const CONTROL_FORM_VALUES: [&[u8]; 5] = [b"%01", b"%1F", b"%7F", b"a%0D%0Ab", b"%09"];
/// JSON string literals jsonb cannot hold (`\u0000`) or that are not Unicode (lone surrogates).
const UNSTORABLE_JSON_STRINGS: [&str; 4] = [r"\u0000", r"a\u0000b", r"\ud800", r"x\udc00"];
const CONTROL_JSON_STRINGS: [&str; 4] = [r"\u0001", r"\u001f", r"\u007f", r"a\r\nb"];

/// A form or query string of `pairs`, values written as they go on the wire (already encoded).
fn raw_form(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
    }
    out
}

fn encoded(value: &str) -> Vec<u8> {
    form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .into_bytes()
}

/// Every string leaf of `value`, each replaced in turn by `PLACEHOLDER`.
fn with_each_string_replaced(value: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::Value;
    match value {
        Value::String(_) => vec![Value::String(PLACEHOLDER.into())],
        Value::Array(items) => (0..items.len())
            .flat_map(|i| {
                with_each_string_replaced(&items[i])
                    .into_iter()
                    .map(move |replaced| (i, replaced))
            })
            .map(|(i, replaced)| {
                let mut copy = items.clone();
                copy[i] = replaced;
                Value::Array(copy)
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .flat_map(|(key, item)| {
                with_each_string_replaced(item)
                    .into_iter()
                    .map(move |replaced| {
                        let mut copy = map.clone();
                        copy.insert(key.clone(), replaced);
                        Value::Object(copy)
                    })
            })
            .collect(),
        _ => Vec::new(),
    }
}

const PLACEHOLDER: &str = "@@hostile@@";

/// `body` with the placeholder string (or key) replaced by the JSON string literal `literal`.
fn hostile_json(body: &serde_json::Value, literal: &str) -> String {
    body.to_string().replace(PLACEHOLDER, literal)
}

#[tokio::test]
async fn values_postgresql_cannot_store_get_the_endpoints_400_in_every_parameter_and_nothing_a_5xx()
{
    let gw = Gateway::start().await;
    let public = gw.public_client(&["mcp"]).await;
    let machine = gw
        .create_client(&NewClient::machine(
            "client_secret_post",
            &["client_credentials"],
        ))
        .await;
    let p = pkce();
    let (request_id, csrf) = gw.consent_form(&Authorization::new(&public)).await;
    let authorize_pairs = vec![
        ("response_type", "code".to_owned()),
        ("client_id", public.clone()),
        ("redirect_uri", CALLBACK.to_owned()),
        ("code_challenge", p.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("state", "s".to_owned()),
        ("resource", RESOURCE.to_owned()),
        ("scope", "mcp".to_owned()),
        ("nonce", "n".to_owned()),
    ];
    let machine_secret = machine.secret().to_owned();
    let authenticated = |mut pairs: Vec<(&'static str, String)>| {
        pairs.push(("client_id", machine.id.clone()));
        pairs.push(("client_secret", machine_secret.clone()));
        pairs
    };
    // (method, path, parameters; a GET sends them as its query)
    let forms: Vec<(&str, &str, Vec<(&str, String)>)> = vec![
        ("GET", "/authorize", authorize_pairs.clone()),
        ("POST", "/authorize", authorize_pairs.clone()),
        // RFC 9126: the same parameters pushed, and a request_uri at /authorize.
        ("POST", "/par", authorize_pairs),
        (
            "GET",
            "/authorize",
            vec![
                ("client_id", public.clone()),
                ("request_uri", "urn:ietf:params:oauth:request_uri:r".into()),
            ],
        ),
        (
            "POST",
            "/token",
            vec![
                ("grant_type", "authorization_code".into()),
                ("code", "c".into()),
                ("code_verifier", p.verifier.clone()),
                ("redirect_uri", CALLBACK.into()),
                ("resource", RESOURCE.into()),
                ("client_id", public.clone()),
            ],
        ),
        (
            "POST",
            "/token",
            authenticated(vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", "r".into()),
                ("scope", "mcp".into()),
                ("resource", RESOURCE.into()),
            ]),
        ),
        (
            "POST",
            "/token",
            authenticated(vec![
                ("grant_type", "client_credentials".into()),
                ("scope", "mcp".into()),
                ("resource", RESOURCE.into()),
            ]),
        ),
        (
            "POST",
            "/token",
            vec![
                ("grant_type", DEVICE_GRANT.into()),
                ("device_code", "d".into()),
                ("client_id", public.clone()),
            ],
        ),
        (
            "POST",
            "/token",
            authenticated(vec![
                ("grant_type", EXCHANGE_GRANT.into()),
                ("subject_token", "a.b.c".into()),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token".into(),
                ),
                ("resource", RESOURCE.into()),
                ("audience", RESOURCE.into()),
                ("scope", "mcp".into()),
            ]),
        ),
        (
            "POST",
            "/token",
            authenticated(vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ),
                ("assertion", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.".into()),
                ("scope", "mcp".into()),
                ("resource", RESOURCE.into()),
            ]),
        ),
        (
            "POST",
            "/revoke",
            authenticated(vec![
                ("token", "t".into()),
                ("token_type_hint", "refresh_token".into()),
            ]),
        ),
        (
            "POST",
            "/introspect",
            authenticated(vec![
                ("token", "t".into()),
                ("token_type_hint", "refresh_token".into()),
            ]),
        ),
        (
            "POST",
            "/device_authorization",
            vec![
                ("client_id", public.clone()),
                ("scope", "mcp".into()),
                ("resource", RESOURCE.into()),
            ],
        ),
        ("GET", "/consent", vec![("request_id", request_id.clone())]),
        (
            "POST",
            "/consent",
            vec![
                ("request_id", request_id.clone()),
                ("csrf_token", csrf.clone()),
                ("decision", "deny".into()),
            ],
        ),
        ("GET", "/device", vec![("user_code", "BCDF-GHJK".into())]),
        (
            "POST",
            "/device",
            vec![
                ("user_code", "BCDF-GHJK".into()),
                ("csrf_token", "c".into()),
                ("decision", "approve".into()),
            ],
        ),
        ("POST", "/userinfo", vec![("access_token", "a.b.c".into())]),
    ];
    let mut tried = 0;
    let mut server_errors = Vec::new();
    // Unstorable inputs not refused with the endpoint's 400.
    let mut not_refused = Vec::new();
    for (method, path, pairs) in &forms {
        let wire: Vec<(&str, Vec<u8>)> = pairs.iter().map(|(n, v)| (*n, encoded(v))).collect();
        // Each parameter in turn, and a parameter whose name carries the value.
        for target in 0..=wire.len() {
            let values = UNSTORABLE_FORM_VALUES
                .iter()
                .map(|v| (v, true))
                .chain(CONTROL_FORM_VALUES.iter().map(|v| (v, false)));
            for (value, unstorable) in values {
                if *method == "GET" && value.contains(&0) {
                    continue; // a raw NUL cannot be written into a request target
                }
                let (name, form) = if target < wire.len() {
                    let mut hostile = wire.clone();
                    hostile[target].1 = value.to_vec();
                    (hostile[target].0, raw_form(&hostile))
                } else {
                    let mut form = raw_form(&wire);
                    form.extend_from_slice(b"&x");
                    form.extend_from_slice(value);
                    form.extend_from_slice(b"=1");
                    ("(a name)", form)
                };
                let resp = if *method == "GET" {
                    let query = String::from_utf8(form).unwrap();
                    gw.get(&format!("{path}?{query}")).await
                } else {
                    gw.http
                        .send(
                            Request::post(gw.url(path))
                                .header("content-type", FORM)
                                .header("authorization", "Bearer a.b.c")
                                .body(Full::new(Bytes::from(form)))
                                .unwrap(),
                        )
                        .await
                };
                tried += 1;
                let what = format!("{method} {path} {name}={}", String::from_utf8_lossy(value));
                if resp.status.is_server_error() {
                    server_errors.push(format!("{what}: {}", resp.status));
                    continue;
                }
                // /userinfo reads only its bearer token: parameters are not its input.
                if unstorable && *path != "/userinfo" {
                    let refused = if resp.header("content-type") == Some("application/json") {
                        resp.status == StatusCode::BAD_REQUEST
                            && resp.oauth_error() == "invalid_request"
                    } else {
                        resp.status == StatusCode::BAD_REQUEST && resp.text().contains("<h1>")
                    };
                    if !refused {
                        not_refused.push(format!("{what}: {} {}", resp.status, resp.text()));
                    }
                }
            }
        }
    }

    // Registration bodies: every string field, and keys at any depth.
    let registered = gw
        .register(
            serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}),
        )
        .await
        .json_if(StatusCode::CREATED);
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    let mut management_token = registered["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let metadata = serde_json::json!({
        "client_id": client_id,
        "redirect_uris": [REDIRECT, "http://127.0.0.1/other"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "application_type": "native",
        "client_name": "Battery",
        "client_uri": "https://app.example/",
        "logo_uri": "https://app.example/logo.png",
        "tos_uri": "https://app.example/tos",
        "policy_uri": "https://app.example/policy",
        "contacts": ["ops@app.example"],
        "scope": "mcp",
        "software_id": "battery",
        "software_version": "1.0",
        "id_token_signed_response_alg": "ES256",
        "extra": {"nested": [{"deeper": "x"}]},
    });
    let mut bodies = with_each_string_replaced(&metadata);
    let mut with_key = |path: &[&str]| {
        let mut body = metadata.clone();
        let mut at = &mut body;
        for step in path {
            at = &mut at[*step];
        }
        at.as_object_mut()
            .unwrap()
            .insert(format!("k{PLACEHOLDER}"), serde_json::json!("v"));
        bodies.push(body);
    };
    with_key(&[]);
    with_key(&["extra"]);
    let mut deep = metadata.clone();
    deep["extra"]["nested"][0]
        .as_object_mut()
        .unwrap()
        .insert(PLACEHOLDER.into(), serde_json::json!(1));
    bodies.push(deep);
    for body in &bodies {
        let literals = UNSTORABLE_JSON_STRINGS
            .iter()
            .map(|l| (l, true))
            .chain(CONTROL_JSON_STRINGS.iter().map(|l| (l, false)));
        for (literal, unstorable) in literals {
            let text = hostile_json(body, literal);
            for (method, path) in [
                ("POST", "/register".to_owned()),
                ("PUT", format!("/register/{client_id}")),
            ] {
                let resp = gw
                    .http
                    .send(
                        Request::builder()
                            .method(method)
                            .uri(gw.url(&path))
                            .header("content-type", "application/json")
                            .header("authorization", bearer(&management_token))
                            .body(Full::new(Bytes::from(text.clone())))
                            .unwrap(),
                    )
                    .await;
                tried += 1;
                let what = format!("{method} {path} {text}");
                if resp.status.is_server_error() {
                    server_errors.push(format!("{what}: {}", resp.status));
                    continue;
                }
                if unstorable
                    && (resp.status != StatusCode::BAD_REQUEST
                        || resp.oauth_error() != "invalid_client_metadata")
                {
                    not_refused.push(format!("{what}: {} {}", resp.status, resp.text()));
                }
                if resp.status == StatusCode::OK
                    && let Some(token) = resp.json()["registration_access_token"].as_str()
                {
                    management_token = token.to_owned();
                }
            }
        }
    }
    // The client id in the management path: an unknown client, never a database error.
    for id in ["%00", "a%00b", "%01", "%ED%A0%80"] {
        for method in ["GET", "PUT", "DELETE"] {
            let resp = gw
                .http
                .send(
                    Request::builder()
                        .method(method)
                        .uri(gw.url(&format!("/register/{id}")))
                        .header("content-type", "application/json")
                        .header("authorization", bearer(&management_token))
                        .body(Full::new(Bytes::from(metadata.to_string())))
                        .unwrap(),
                )
                .await;
            tried += 1;
            if resp.status.is_server_error() {
                server_errors.push(format!("{method} /register/{id}: {}", resp.status));
            } else {
                assert!(
                    resp.status.is_client_error(),
                    "{method} /register/{id}: {}",
                    resp.status
                );
            }
        }
    }
    println!(
        "{tried} inputs PostgreSQL cannot store or with control characters: {} answered 5xx, \
         {} unstorable ones not refused with a 400",
        server_errors.len(),
        not_refused.len()
    );
    assert!(
        server_errors.is_empty(),
        "{} of {tried} answered 5xx:\n{}",
        server_errors.len(),
        server_errors.join("\n")
    );
    assert!(
        not_refused.is_empty(),
        "not refused with a 400:\n{}",
        not_refused.join("\n")
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_three_reproduced_nul_inputs_get_400_not_500() {
    let gw = Gateway::start().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let refresh = gw
        .http
        .post_raw(
            &gw.url("/token"),
            FORM,
            format!("grant_type=refresh_token&refresh_token=%00%00&client_id={client_id}"),
        )
        .await;
    refresh.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "refresh_token=%00%00",
    );
    let authorization = Authorization::new(&client_id);
    let page = gw
        .get(&format!(
            "/authorize?{}&scope=%00%01",
            authorization.query()
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text());
    assert!(page.text().contains("Invalid authorization request"));
    let registration = gw
        .http
        .post_raw(
            &gw.url("/register"),
            "application/json",
            format!(r#"{{"redirect_uris":["{REDIRECT}"],"client_name":"\u0000"}}"#),
        )
        .await;
    registration.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
        "client_name NUL",
    );
    gw.stop().await;
}
