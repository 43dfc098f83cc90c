//! RFC 7009 token revocation. Access tokens are ours to verify (signature only: an expired token
//! may still be revoked); refresh tokens are opaque and go to the extension as they are.

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};

/// The grant and family an access token names, if it is one of ours.
pub fn access_token_ids(app: &App, token: &str) -> Option<(uuid::Uuid, Option<uuid::Uuid>, Value)> {
    let claims = app.verify_own_token(token, None, false).ok()?;
    let grant = claims["grant_id"].as_str()?.parse().ok()?;
    let family = claims["family_id"].as_str().and_then(|f| f.parse().ok());
    Some((grant, family, claims))
}

pub async fn handle(app: &App, req: Req) -> Resp {
    match respond(app, req).await {
        Ok(()) => http::empty(StatusCode::OK),
        Err(e) => http::error(&e),
    }
}

async fn respond(app: &App, req: Req) -> Result<(), OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError::invalid_request(
            "the revocation endpoint accepts POST only",
        ));
    }
    let (headers, params) = http::read_form(req, app.config.max_body_bytes).await?;
    let client = http::client_credentials(&headers, &params)?;
    let token = params.required("token")?;
    params.single("token_type_hint")?;
    let (refresh, grant, family) = match access_token_ids(app, token) {
        Some((grant, family, _)) => (None, Some(grant), family),
        None => (Some(token), None, None),
    };
    app.db
        .call_ok(
            "SELECT oauth.revoke_token($1, $2, $3, $4, $5)",
            &[&client.client_id, &client.secret, &refresh, &grant, &family],
        )
        .await
        .map_err(|mut e| {
            e.basic_challenge = client.via_basic;
            e
        })?;
    Ok(())
}
