//! What the token endpoint answers to a request it cannot serve, whatever the grant: always an
//! RFC 6749 §5.2 error.

mod common;

use common::*;
use hyper::StatusCode;

/// How a case reaches the token endpoint.
enum Sent<'a> {
    Get,
    Body {
        content_type: &'a str,
        body: &'a str,
    },
    Form(TokenRequest<'a>),
}

#[tokio::test]
async fn token_endpoint_answers_every_failure_with_an_rfc6749_error() {
    let gw = Gateway::start().await;
    let public_id = gw.public_client(&["mcp"]).await;
    let confidential = gw.confidential_client(&["mcp"]).await;
    let right_secret = confidential.basic();
    let wrong_secret = basic(&confidential.id, "wrong");
    let huge = "a".repeat(70 * 1024);
    let unknown_refresh = TokenRequest {
        grant_type: "refresh_token",
        refresh_token: "x",
        ..TokenRequest::default()
    };

    let cases = [
        (
            "a GET",
            Sent::Get,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a JSON body",
            Sent::Body {
                content_type: "application/json",
                body: r#"{"grant_type":"refresh_token"}"#,
            },
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "an unknown grant type",
            Sent::Form(TokenRequest {
                grant_type: "password",
                client_id: &public_id,
                ..TokenRequest::default()
            }),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            "no grant type",
            Sent::Form(TokenRequest {
                client_id: &public_id,
                ..TokenRequest::default()
            }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a repeated parameter",
            Sent::Form(TokenRequest {
                grant_type: "authorization_code",
                client_id: &public_id,
                repeated: &[("grant_type", "authorization_code")],
                ..TokenRequest::default()
            }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a wrong client secret",
            Sent::Form(TokenRequest {
                authorization: &wrong_secret,
                ..unknown_refresh.clone()
            }),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            "two client authentication methods",
            Sent::Form(TokenRequest {
                client_secret: confidential.secret(),
                authorization: &right_secret,
                ..unknown_refresh.clone()
            }),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a 70 KiB form",
            Sent::Form(TokenRequest::refresh(&public_id, &huge)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a form that is not UTF-8",
            Sent::Body {
                content_type: FORM,
                body: "grant_type=%FF",
            },
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (what, sent, status, error) in &cases {
        let resp = match sent {
            Sent::Get => gw.get("/token").await,
            Sent::Body { content_type, body } => {
                gw.http
                    .post_raw(&gw.url("/token"), *content_type, body.to_string())
                    .await
            }
            Sent::Form(request) => gw.token(request).await,
        };
        resp.assert_error(*status, error, what);
    }

    // A wrong verifier fails, and the failed attempt burned the code: even the right verifier
    // cannot use it now.
    let authorization = Authorization::new(&public_id);
    let code = gw.code(&authorization).await;
    let wrong_verifier = pkce().verifier;
    let bad = gw
        .token(&TokenRequest {
            code_verifier: &wrong_verifier,
            ..TokenRequest::redeem(&authorization, &code)
        })
        .await;
    assert_eq!(bad.oauth_error(), "invalid_grant");
    let burned = gw.token(&TokenRequest::redeem(&authorization, &code)).await;
    assert_eq!(burned.oauth_error(), "invalid_grant");
    gw.stop().await;
}
