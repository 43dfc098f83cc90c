//! `grant_type=client_credentials` (RFC 6749 §4.4): a confidential client's token for itself;
//! scope and audience are limited by its registration (decided in the extension).

use serde_json::Value;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{ClientCredentials, Params};

pub async fn issue(
    app: &App,
    client: &ClientCredentials,
    params: &Params,
) -> Result<Value, OAuthError> {
    let scope = params.single("scope")?;
    let resource = params.single("resource")?;
    let issued = app
        .db
        .call_ok(
            "SELECT oauth.client_credentials_grant($1, $2, $3, $4)",
            &[&client.client_id, &client.secret, &scope, &resource],
        )
        .await?;
    Ok(super::token_response(app, &issued, false))
}
