//! The Rust building blocks, exercised through SQL as the API functions call them.

use std::collections::HashSet;

use oauth_provider_tests::*;

async fn s256_matches(db: &Client, verifier: Option<&str>, challenge: Option<&str>) -> bool {
    scalar(
        &db,
        "SELECT oauth.pkce_s256_matches($1, $2)",
        &[&verifier, &challenge],
    )
    .await
}

#[tokio::test]
async fn pkce_s256_matches_the_rfc7636_appendix_b_vector() {
    let db = admin().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert!(
        s256_matches(&db, Some(verifier), Some(challenge)).await,
        "RFC 7636 appendix B"
    );
    assert!(
        !s256_matches(
            &db,
            Some("eBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            Some(challenge)
        )
        .await
    );
    // The challenge is not its own verifier (that would be `plain`).
    assert!(!s256_matches(&db, Some(challenge), Some(challenge)).await);
    assert!(!s256_matches(&db, None, Some(challenge)).await);
    assert!(!s256_matches(&db, Some(verifier), None).await);
    // Verifier syntax (RFC 7636 §4.1): 43..128 unreserved characters, even when the digest matches.
    for (verifier, ok) in [
        ("a".repeat(42), false),
        ("a".repeat(43), true),
        ("a~._-".repeat(26)[..128].to_string(), true),
        ("a".repeat(129), false),
        (format!("{} ", "a".repeat(43)), false),
        (format!("{}+", "a".repeat(43)), false),
    ] {
        let pair = Pkce::from_verifier(&verifier);
        assert_eq!(
            s256_matches(&db, Some(&pair.verifier), Some(&pair.challenge)).await,
            ok,
            "verifier {verifier:?}"
        );
    }
}

#[tokio::test]
async fn pkce_challenge_must_be_a_base64url_sha256_digest() {
    let db = admin().await;
    for (challenge, valid) in [
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", true),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c", false),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=", false),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM", false),
        ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c!", false),
        ("", false),
    ] {
        let got: bool = scalar(&db, "SELECT oauth.pkce_challenge_valid($1)", &[&challenge]).await;
        assert_eq!(got, valid, "pkce_challenge_valid({challenge:?})");
    }
}

#[tokio::test]
async fn random_token_is_unpadded_base64url_of_the_requested_size_and_never_repeats() {
    let db = admin().await;
    for (bytes, len) in [(16, 22), (24, 32), (32, 43), (64, 86)] {
        let rows = db
            .query(
                "SELECT oauth.random_token($1) FROM generate_series(1, 2000)",
                &[&bytes],
            )
            .await
            .unwrap();
        let tokens: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(tokens.len(), 2000, "random_token({bytes}) repeated a value");
        for t in &tokens {
            assert_eq!(t.len(), len, "random_token({bytes}) = {t}");
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "not base64url: {t}"
            );
        }
    }
    // Two backends forked from one postmaster must not share a stream.
    let other = admin().await;
    let a: String = scalar(&db, "SELECT oauth.random_token(32)", &[]).await;
    let b: String = scalar(&other, "SELECT oauth.random_token(32)", &[]).await;
    assert_ne!(a, b);
    for bad in [0, 15, 65, -1] {
        let result = db.query_one("SELECT oauth.random_token($1)", &[&bad]).await;
        assert_sqlstate(result, "XX000", &format!("random_token({bad})"));
    }
}

#[tokio::test]
async fn token_hash_is_sha256_and_secure_equal_compares_bytes() {
    let db = admin().await;
    let token = unique("token");
    let hash: Vec<u8> = scalar(&db, "SELECT oauth.token_hash($1)", &[&token]).await;
    assert_eq!(hash, sha256(&token));
    let row = one_row(
        &db,
        "SELECT oauth.secure_equal('\\x0102'::bytea, '\\x0102'::bytea),
                    oauth.secure_equal('\\x0102'::bytea, '\\x0103'::bytea),
                    oauth.secure_equal('\\x0102'::bytea, '\\x010203'::bytea),
                    oauth.secure_equal(NULL, '\\x01'::bytea),
                    oauth.secure_equal(NULL, NULL)",
        &[],
    )
    .await;
    assert!(row.get::<_, bool>(0));
    for i in 1..5 {
        assert!(!row.get::<_, bool>(i), "secure_equal case {i}");
    }
}

#[tokio::test]
async fn parse_scope_follows_rfc6749_section_3_3() {
    let db = admin().await;
    for (input, expected) in [
        (Some("mcp openid mcp"), Some(vec!["mcp", "openid"])),
        (Some(""), Some(vec![])),
        (None, Some(vec![])),
        (Some("a!#[]~"), Some(vec!["a!#[]~"])),
        (Some("mcp  openid"), None),
        (Some(" mcp"), None),
        (Some("mcp "), None),
        (Some("a\"b"), None),
        (Some("a\\b"), None),
        (Some("é"), None),
        (Some("a\tb"), None),
    ] {
        let got: Option<Vec<String>> = scalar(&db, "SELECT oauth.parse_scope($1)", &[&input]).await;
        let expected: Option<Vec<String>> =
            expected.map(|v| v.into_iter().map(String::from).collect());
        assert_eq!(got, expected, "parse_scope({input:?})");
    }
}

async fn redirect_problem(db: &Client, uri: &str, app_type: &str) -> Option<String> {
    scalar(
        &db,
        "SELECT oauth.redirect_uri_problem($1, $2)",
        &[&uri, &app_type],
    )
    .await
}

#[tokio::test]
async fn redirect_uri_registration_accepts_https_native_loopback_and_private_schemes() {
    let db = admin().await;
    for (uri, app_type) in [
        ("https://app.example/cb", "web"),
        ("https://app.example", "web"),
        ("https://app.example:8443/cb?x=1", "web"),
        ("https://app.example/cb", "native"),
        ("http://127.0.0.1/callback", "native"),
        ("http://127.0.0.1:3000/callback", "native"),
        ("http://[::1]:3000/callback", "native"),
        ("http://localhost:3000/cb", "native"),
        (
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "native",
        ),
        ("com.example.app:/oauth2redirect", "native"),
    ] {
        assert_eq!(
            redirect_problem(&db, uri, app_type).await,
            None,
            "{uri} ({app_type}) should be accepted"
        );
    }
}

#[tokio::test]
async fn redirect_uri_registration_refuses_non_canonical_userinfo_fragments_and_dangerous_schemes()
{
    let db = admin().await;
    for (uri, app_type) in [
        ("HTTPS://app.example/cb", "web"),               // scheme case
        ("https://APP.example/cb", "web"),               // host case
        ("https://evil%2Eexample/cb", "web"),            // encoded host
        ("https://good.example@evil.example/cb", "web"), // userinfo
        ("https://user:pw@app.example/cb", "web"),
        ("https://app.example/cb#frag", "web"),
        ("https://app.example/a/../cb", "web"), // dot segments
        ("https://app.example:443/cb", "web"),  // default port
        ("https://app.example/c b", "web"),
        ("/relative/cb", "web"),
        ("", "web"),
        ("http://app.example/cb", "web"), // plain http off loopback
        ("http://app.example/cb", "native"),
        ("http://127.0.0.1:3000/cb", "web"), // loopback only for native
        ("http://127.0.0.1.evil.example/cb", "native"),
        ("http://127.0.0.1:99999/cb", "native"),
        ("myapp:/cb", "web"), // private-use scheme only for native
        ("javascript:alert(1)", "native"),
        ("data:text/html,hi", "native"),
        ("file:///etc/passwd", "native"),
        ("vbscript:msgbox", "native"),
    ] {
        assert!(
            redirect_problem(&db, uri, app_type).await.is_some(),
            "{uri:?} ({app_type}) must be refused"
        );
    }
    let long = format!("https://app.example/{}", "a".repeat(2000));
    assert!(
        redirect_problem(&db, &long, "web").await.is_some(),
        "over 2000 characters"
    );
}

#[tokio::test]
async fn presented_redirect_uri_must_match_exactly_except_the_loopback_port() {
    let db = admin().await;
    let registered = vec![
        "http://127.0.0.1/callback".to_string(),
        "http://[::1]:8000/cb".to_string(),
        "https://app.example/cb".to_string(),
    ];
    for (presented, allowed) in [
        ("https://app.example/cb", true),
        ("http://127.0.0.1/callback", true),
        ("http://127.0.0.1:53124/callback", true),
        ("http://127.0.0.1:1/callback", true),
        ("http://127.0.0.1:65535/callback", true),
        ("http://[::1]/cb", true),
        ("http://[::1]:9/cb", true),
        ("http://127.0.0.1:65536/callback", false),
        ("http://127.0.0.1:/callback", false),
        ("http://127.0.0.1:53124/callback/", false),
        ("http://127.0.0.1:53124/Callback", false),
        ("http://127.0.0.1:53124/callback?x=1", false),
        ("http://127.0.0.1:53124/callback#x", false),
        ("http://localhost:53124/callback", false),
        ("http://127.0.0.1:53124@evil.example/callback", false),
        ("http://127.0.0.1.evil.example/callback", false),
        ("https://127.0.0.1:53124/callback", false),
        ("https://APP.example/cb", false),
        ("HTTPS://app.example/cb", false),
        ("https://app.example/cb/", false),
        ("https://app.example/cb?x=1", false),
        ("https://app.example:8443/cb", false),
        ("https://app%2Eexample/cb", false),
        ("https://user@app.example/cb", false),
        ("https://app.example/cb#", false),
        ("", false),
    ] {
        let got: bool = scalar(
            &db,
            "SELECT oauth.redirect_uri_allowed($1, $2)",
            &[&registered, &presented],
        )
        .await;
        assert_eq!(got, allowed, "redirect_uri_allowed(.., {presented:?})");
    }
    let with_null: bool = scalar(
        &db,
        "SELECT oauth.redirect_uri_allowed(ARRAY[NULL, 'https://a.example/cb'], 'https://a.example/cb')",
        &[],
    )
    .await;
    assert!(with_null);
}

#[tokio::test]
async fn loopback_detection_and_uri_host() {
    let db = admin().await;
    for (uri, loopback, host) in [
        ("http://127.0.0.1:3000/cb", true, Some("127.0.0.1")),
        ("http://localhost/cb", true, Some("localhost")),
        ("http://[::1]:1/cb", true, Some("[::1]")),
        ("https://127.0.0.1/cb", false, Some("127.0.0.1")),
        ("https://app.example/cb", false, Some("app.example")),
        (
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            false,
            Some("anysphere.cursor-retrieval"),
        ),
        ("com.example.app:/cb", false, None),
    ] {
        let row = one_row(
            &db,
            "SELECT oauth.is_loopback_redirect($1), oauth.uri_host($1)",
            &[&uri],
        )
        .await;
        assert_eq!(
            row.get::<_, bool>(0),
            loopback,
            "is_loopback_redirect({uri})"
        );
        assert_eq!(
            row.get::<_, Option<String>>(1).as_deref(),
            host,
            "uri_host({uri})"
        );
    }
}

#[tokio::test]
async fn resource_indicator_must_be_an_absolute_http_uri_without_fragment() {
    let db = admin().await;
    for (uri, ok) in [
        ("https://mcp.example/mcp", true),
        ("https://mcp.example", true),
        ("http://localhost:8080/mcp", true),
        ("https://mcp.example/mcp?tenant=1", true),
        ("https://mcp.example/mcp#frag", false),
        ("/mcp", false),
        ("mcp", false),
        ("urn:example:resource", false),
        ("https://user@mcp.example/mcp", false),
        ("", false),
    ] {
        let problem: Option<String> =
            scalar(&db, "SELECT oauth.resource_problem($1)", &[&uri]).await;
        assert_eq!(
            problem.is_none(),
            ok,
            "resource_problem({uri:?}) = {problem:?}"
        );
    }
}

#[tokio::test]
async fn append_query_form_encodes_and_keeps_the_registered_string() {
    let db = admin().await;
    for (uri, expected) in [
        (
            "https://a.example/cb",
            "https://a.example/cb?code=a+b&state=x%26y%3D%23",
        ),
        (
            "https://a.example/cb?k=v",
            "https://a.example/cb?k=v&code=a+b&state=x%26y%3D%23",
        ),
        (
            "https://a.example/cb?",
            "https://a.example/cb?code=a+b&state=x%26y%3D%23",
        ),
        (
            "https://a.example/cb?k=v&",
            "https://a.example/cb?k=v&code=a+b&state=x%26y%3D%23",
        ),
        ("myapp:/cb", "myapp:/cb?code=a+b&state=x%26y%3D%23"),
    ] {
        let got: String = scalar(
            &db,
            "SELECT oauth.append_query($1, ARRAY['code', 'state', 'skipped'], ARRAY['a b', 'x&y=#', NULL])",
            &[&uri],
        )
        .await;
        assert_eq!(got, expected, "append_query({uri})");
    }
}
