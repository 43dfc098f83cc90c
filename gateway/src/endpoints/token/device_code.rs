//! `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4): the device polls;
//! pending, slow_down, denial, expiry and single use are decided in the extension.

use serde_json::Value;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{ClientCredentials, Params};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub async fn poll(
    app: &App,
    client: &ClientCredentials,
    params: &Params,
) -> Result<Value, OAuthError> {
    let device_code = params.required("device_code")?;
    let issued = app
        .db
        .call_ok(
            "SELECT oauth.poll_device_authorization($1, $2, $3)",
            &[&client.client_id, &client.secret, &device_code],
        )
        .await?;
    Ok(super::token_response(app, &issued, true))
}
