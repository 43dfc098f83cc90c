//! RFC 7009 token revocation. Access tokens are ours to verify (signature only: an expired token
//! may still be revoked); refresh tokens are opaque and go to the extension as they are.

use std::time::{Duration, UNIX_EPOCH};

use hyper::StatusCode;

use crate::app::App;
use crate::db::RevokedAccessToken;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};

pub async fn handle(app: &App, req: Req) -> Resp {
    match respond(app, req).await {
        Ok(()) => http::empty(StatusCode::OK),
        Err(e) => http::error(&e),
    }
}

async fn respond(app: &App, req: Req) -> Result<(), OAuthError> {
    http::require_post(&req, "revocation")?;
    let (client, params) = http::read_client_form(req, app.config.body_limits()).await?;
    crate::client_keys::ensure(app, &client).await?;
    let token = params.required("token")?;
    params.single("token_type_hint")?;
    let claims = app.tokens.verify(token, None, false).ok();
    // Whose token it is and which one: the extension lets only the client it was issued to
    // revoke it, and an exchanged token (on another client's family) by its jti alone.
    let access = claims.as_ref().and_then(|claims| {
        Some(RevokedAccessToken {
            grant_id: claims.grant_id?,
            family_id: claims.family_id,
            jti: claims.jti_uuid(),
            client_id: &claims.client_id,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    });
    let outcome = match &access {
        Some(access) => app.db.revoke_token(&client, None, Some(access)).await,
        None => app.db.revoke_token(&client, Some(token), None).await,
    };
    outcome.map_err(|e| client.challenged(e))
}
