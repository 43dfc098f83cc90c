//! RFC 7662 token introspection for authenticated confidential clients (resource servers). A
//! revoked grant or family answers `active: false` at once: the extension is asked every time.

use hyper::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};
use crate::tokens::AccessClaims;

pub async fn handle(app: &App, req: Req) -> Resp {
    http::json_or_error(StatusCode::OK, respond(app, req).await)
}

/// RFC 7662 §2.2 for an access token of ours: its claims (but not `act`).
#[derive(Serialize)]
struct ActiveAccessToken {
    active: bool,
    token_type: &'static str,
    iss: String,
    sub: String,
    aud: String,
    client_id: String,
    scope: String,
    exp: u64,
    iat: u64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_id: Option<uuid::Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    family_id: Option<uuid::Uuid>,
    /// RFC 9449 §6.2: the DPoP key a bound token needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<crate::tokens::Confirmation>,
}

impl From<AccessClaims> for ActiveAccessToken {
    fn from(claims: AccessClaims) -> Self {
        Self {
            active: true,
            token_type: if claims.cnf.is_some() {
                "DPoP"
            } else {
                "Bearer"
            },
            iss: claims.iss,
            sub: claims.sub,
            aud: claims.aud,
            client_id: claims.client_id,
            scope: claims.scope,
            exp: claims.exp,
            iat: claims.iat,
            jti: claims.jti,
            grant_id: claims.grant_id,
            family_id: claims.family_id,
            cnf: claims.cnf,
        }
    }
}

async fn respond(app: &App, req: Req) -> Result<Value, OAuthError> {
    http::require_post(&req, "introspection")?;
    let (client, params) = http::read_client_form(req, app.config.body_limits()).await?;
    crate::client_keys::ensure(app, &client).await?;
    let token = params.required("token")?;
    params.single("token_type_hint")?;
    let inactive = json!({ "active": false });
    if token.split('.').count() == 3 {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = app.tokens.verify(token, None, false).ok();
        let grant = claims.as_ref().and_then(|c| c.grant_id);
        let family = claims.as_ref().and_then(|c| c.family_id);
        let jti = claims.as_ref().and_then(|c| c.jti_uuid());
        // Without a grant this still authenticates the caller: an unauthenticated probe learns nothing.
        let live = app
            .db
            .introspect(&client, None, grant, family, jti)
            .await
            .map_err(|e| client.challenged(e))?;
        return Ok(match claims {
            Some(claims) if grant.is_some() && live.active && claims.exp > now => {
                json!(ActiveAccessToken::from(claims))
            }
            _ => inactive,
        });
    }
    let live = app
        .db
        .introspect(&client, Some(token), None, None, None)
        .await
        .map_err(|e| client.challenged(e))?;
    if !live.active {
        return Ok(inactive);
    }
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "iss": app.config.issuer,
        "sub": live.user_id,
        "client_id": live.client_id,
        "scope": live.scope,
        "exp": live.exp,
        "iat": live.iat,
        "aud": live.resource,
    }))
}
