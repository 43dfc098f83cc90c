//! `grant_type=authorization_code` (RFC 6749 §4.1.3 with PKCE, RFC 7636 §4.5).

use serde_json::Value;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{ClientCredentials, Params};

pub async fn exchange(
    app: &App,
    client: &ClientCredentials,
    params: &Params,
) -> Result<Value, OAuthError> {
    let code = params.required("code")?;
    let verifier = params.required("code_verifier")?;
    let redirect_uri = params.single("redirect_uri")?;
    let resource = params.single("resource")?;
    let issued = app
        .db
        .call_ok(
            "SELECT oauth.exchange_code($1, $2, $3, $4, $5, $6)",
            &[
                &client.client_id,
                &client.secret,
                &code,
                &verifier,
                &redirect_uri,
                &resource,
            ],
        )
        .await?;
    Ok(super::token_response(app, &issued, true))
}
