//! RFC 7591 dynamic client registration; every field is checked by `oauth.register_client`.

use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};

pub async fn handle(app: &App, req: Req) -> Resp {
    match respond(app, req).await {
        Ok(registered) => http::json_no_store(StatusCode::CREATED, &registered),
        Err(e) => http::error(&e),
    }
}

async fn respond(app: &App, req: Req) -> Result<Value, OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError::invalid_request(
            "the registration endpoint accepts POST only",
        ));
    }
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
    let metadata: Value = serde_json::from_slice(&body).map_err(|_| {
        OAuthError::new(
            "invalid_client_metadata",
            "the request body is not valid JSON",
        )
    })?;
    app.db
        .call_ok("SELECT oauth.register_client($1)", &[&metadata])
        .await
}
