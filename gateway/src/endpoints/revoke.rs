//! RFC 7009 token revocation. Access tokens are ours to verify (signature only: an expired token
//! may still be revoked); refresh tokens are opaque and go to the extension as they are.

use hyper::StatusCode;

use crate::app::App;
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
    let access = app
        .tokens
        .verify(token, None, false)
        .ok()
        .and_then(|claims| Some((claims.grant_id?, claims.family_id)));
    let outcome = match access {
        Some((grant, family)) => {
            app.db
                .revoke_token(&client, None, Some(grant), family)
                .await
        }
        None => app.db.revoke_token(&client, Some(token), None, None).await,
    };
    outcome.map_err(|e| client.challenged(e))
}
