//! The token endpoint (RFC 6749 §3.2): one module per grant type; the extension decides, this
//! module mints the JWTs for what it decided.

mod authorization_code;
mod refresh_token;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, ClientCredentials, Req, Resp};
use crate::jwt;

pub async fn handle(app: &App, req: Req) -> Resp {
    match respond(app, req).await {
        Ok(body) => http::json_no_store(StatusCode::OK, &body),
        Err(e) => http::error(&e),
    }
}

async fn respond(app: &App, req: Req) -> Result<Value, OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError::new(
            "invalid_request",
            "the token endpoint accepts POST only",
        ));
    }
    let (headers, params) = http::read_form(req, app.config.max_body_bytes).await?;
    let grant_type = params.required("grant_type")?;
    let client = http::client_credentials(&headers, &params)?;
    let outcome = match grant_type {
        "authorization_code" => authorization_code::exchange(app, &client, &params).await,
        "refresh_token" => refresh_token::rotate(app, &client, &params).await,
        _ => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "grant_type must be authorization_code or refresh_token",
            ));
        }
    };
    outcome.map_err(|e| with_challenge(e, &client))
}

fn with_challenge(mut e: OAuthError, client: &ClientCredentials) -> OAuthError {
    if e.code == "invalid_client" {
        e.basic_challenge = client.via_basic;
    }
    e
}

/// The token response for what the extension issued: an RFC 9068 access token, the refresh token
/// the extension minted, and an ID token when `openid` was granted in a code exchange.
pub fn token_response(app: &App, issued: &Value, with_id_token: bool) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let ttl = issued["access_token_ttl"].as_u64().unwrap_or(3600);
    let key = app.keys.signing();
    let audience = issued["resource"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| app.config.default_audience.clone())
        .unwrap_or_else(|| app.config.issuer.clone());
    let scope = issued["scope"].as_str().unwrap_or_default();
    let claims = json!({
        "iss": app.config.issuer,
        "sub": issued["user_id"],
        "aud": audience,
        "client_id": issued["client_id"],
        "scope": scope,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "exp": now + ttl,
        "grant_id": issued["grant_id"],
        "family_id": issued["family_id"],
    });
    let access_token = jwt::sign(key, "at+jwt", &claims);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    });
    if let Some(refresh) = issued["refresh_token"].as_str() {
        body["refresh_token"] = json!(refresh);
    }
    if with_id_token && scope.split(' ').any(|s| s == "openid") {
        let mut id_claims = json!({
            "iss": app.config.issuer,
            "sub": issued["user_id"],
            "aud": issued["client_id"],
            "azp": issued["client_id"],
            "iat": now,
            "exp": now + ttl,
            "auth_time": issued["auth_time"],
            "at_hash": jwt::at_hash(key.alg, &access_token),
        });
        if let Some(nonce) = issued["nonce"].as_str() {
            id_claims["nonce"] = json!(nonce);
        }
        body["id_token"] = json!(jwt::sign(key, "JWT", &id_claims));
    }
    body
}
