//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an MCP server exchanges
//! a user's access token for one with a narrower audience and scope, to call another service on
//! the user's behalf. The gateway verifies the subject token; the extension applies the client's
//! exchange policy and checks the subject's grant is live.

use serde_json::{Value, json};

use crate::app::App;
use crate::db::SubjectToken;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{ClientCredentials, Params};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

pub async fn exchange(
    app: &App,
    client: &ClientCredentials,
    params: &Params,
) -> Result<Value, OAuthError> {
    let subject_token = params.required("subject_token")?;
    if params.required("subject_token_type")? != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    if params
        .single("requested_token_type")?
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::invalid_request(format!(
            "requested_token_type must be {ACCESS_TOKEN_TYPE}"
        )));
    }
    // The authenticated client is the actor; a separate actor token would name a second party
    // this server has no policy for.
    if params.single("actor_token")?.is_some() || params.single("actor_token_type")?.is_some() {
        return Err(OAuthError::invalid_request("actor_token is not supported"));
    }
    let audience = match (params.single("resource")?, params.single("audience")?) {
        (Some(r), Some(a)) if r != a => {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "resource and audience name different targets; ask for one",
            ));
        }
        (Some(target), _) | (None, Some(target)) => Some(target),
        (None, None) => None,
    };
    let scope = params.single("scope")?;
    let subject = app
        .tokens
        .verify(subject_token, None, true)
        .map_err(|_| OAuthError::invalid_request("subject_token is invalid or expired"))?;
    let subject_token = SubjectToken {
        grant_id: subject.grant_id,
        family_id: subject.family_id,
        audience: Some(&subject.aud),
        scope: Some(&subject.scope),
        jti: subject.jti_uuid(),
    };
    let issued = app
        .db
        .exchange_token(client, &subject_token, audience, scope)
        .await?;
    // Delegation chains nest: the previous actor stays visible under the new one.
    let act = match subject.act {
        Some(previous) => json!({ "sub": client.client_id, "act": previous }),
        None => json!({ "sub": client.client_id }),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let (access_token, expires_in) =
        super::access_token(app, &issued, now, Some(act), Some(subject.exp), None);
    Ok(json!({
        "access_token": access_token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": issued.scope,
    }))
}
