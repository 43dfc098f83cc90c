//! A battery of malformed requests against every endpoint: each gets a 4xx (an OAuth error JSON,
//! or an error page on the browser endpoints), never a 5xx, a panic or a redirect to an
//! unregistered URI.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use rand::{Rng, SeedableRng};

const ENDPOINTS: [&str; 11] = [
    "/authorize",
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
