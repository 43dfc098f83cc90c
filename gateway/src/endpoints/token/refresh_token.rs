//! `grant_type=refresh_token` (RFC 6749 §6; rotation per OAuth 2.1 §4.3.1, decided in the extension).

use serde_json::Value;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{ClientCredentials, Params};

pub async fn rotate(
    app: &App,
    client: &ClientCredentials,
    params: &Params,
) -> Result<Value, OAuthError> {
    let refresh_token = params.required("refresh_token")?;
    let scope = params.single("scope")?;
    let resource = params.single("resource")?;
    let issued = app
        .db
        .call_ok(
            "SELECT oauth.rotate_refresh_token($1, $2, $3, $4, $5)",
            &[
                &client.client_id,
                &client.secret,
                &refresh_token,
                &scope,
                &resource,
            ],
        )
        .await?;
    Ok(super::token_response(app, &issued, false))
}
