//! RFC 7591 dynamic client registration and the RFC 7592 client configuration endpoint
//! (`/register/{client_id}`, bearer = the registration access token); every field is checked by
//! the extension (`oauth.register_client`, `oauth.update_registration`).

use hyper::header::{self, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};

pub async fn handle(app: &App, req: Req) -> Resp {
    match register(app, req).await {
        Ok(registered) => http::json_no_store(StatusCode::CREATED, &registered),
        Err(e) => http::error(&e),
    }
}

async fn register(app: &App, req: Req) -> Result<Value, OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError::invalid_request(
            "the registration endpoint accepts POST only",
        ));
    }
    let metadata = read_metadata(app, req).await?;
    let registered = app
        .db
        .call_ok("SELECT oauth.register_client($1)", &[&metadata])
        .await?;
    Ok(with_configuration_uri(app, registered))
}

async fn read_metadata(app: &App, req: Req) -> Result<Value, OAuthError> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(OAuthError::invalid_request(
            "the registration request must be application/json",
        ));
    }
    let body = http::read_body(req, app.config.max_body_bytes).await?;
    serde_json::from_slice(&body).map_err(|_| {
        OAuthError::new(
            "invalid_client_metadata",
            "the request body is not valid JSON",
        )
    })
}

/// RFC 3986 unreserved characters stay as they are; everything else in a client id is encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn configuration_uri(app: &App, client_id: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(client_id, PATH_SEGMENT);
    app.config.endpoint(&format!("/register/{encoded}"))
}

fn with_configuration_uri(app: &App, mut registration: Value) -> Value {
    if let Some(client_id) = registration["client_id"].as_str() {
        registration["registration_client_uri"] = json!(configuration_uri(app, client_id));
    }
    registration
}

/// RFC 7592 §2: read (GET), replace (PUT) or delete (DELETE) the registration of `client_id`.
pub async fn configure(app: &App, req: Req, encoded_client_id: &str) -> Resp {
    let Ok(client_id) = percent_encoding::percent_decode_str(encoded_client_id).decode_utf8()
    else {
        return invalid_token();
    };
    let client_id = client_id.into_owned();
    let Some(token) = http::bearer_token(req.headers()).map(str::to_owned) else {
        return invalid_token();
    };
    let outcome = match *req.method() {
        Method::GET => app
            .db
            .call_ok(
                "SELECT oauth.read_registration($1, $2)",
                &[&client_id, &token],
            )
            .await
            .map(|r| (StatusCode::OK, Some(r))),
        Method::PUT => match read_metadata(app, req).await {
            Ok(metadata) => app
                .db
                .call_ok(
                    "SELECT oauth.update_registration($1, $2, $3)",
                    &[&client_id, &token, &metadata],
                )
                .await
                .map(|r| (StatusCode::OK, Some(r))),
            Err(e) => Err(e),
        },
        Method::DELETE => app
            .db
            .call_ok(
                "SELECT oauth.delete_registration($1, $2)",
                &[&client_id, &token],
            )
            .await
            .map(|_| (StatusCode::NO_CONTENT, None)),
        _ => Err(OAuthError::new(
            "method_not_allowed",
            "use GET, PUT or DELETE",
        )),
    };
    match outcome {
        Ok((status, Some(body))) => http::json_no_store(status, &with_configuration_uri(app, body)),
        Ok((status, None)) => {
            let mut resp = http::empty(status);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) if e.code == "invalid_token" => invalid_token(),
        Err(e) => http::error(&e),
    }
}

/// RFC 7592 §2 / RFC 6750 §3.1: an unknown client and a wrong token look the same.
fn invalid_token() -> Resp {
    let mut resp = http::error(&OAuthError::new(
        "invalid_token",
        "the registration access token is invalid for this client",
    ));
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    resp
}
