//! The token endpoint (RFC 6749 §3.2): one module per grant type; the extension decides, this
//! module mints the JWTs for what it decided.

mod authorization_code;
mod client_credentials;
mod device_code;
mod refresh_token;
mod token_exchange;

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
        "client_credentials" => client_credentials::issue(app, &client, &params).await,
        device_code::GRANT_TYPE => device_code::poll(app, &client, &params).await,
        token_exchange::GRANT_TYPE => token_exchange::exchange(app, &client, &params).await,
        _ => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant_type must be one of {}", GRANT_TYPES.join(", ")),
            ));
        }
    };
    outcome.map_err(|e| with_challenge(e, &client))
}

/// Every grant type the token endpoint serves (metadata lists exactly these).
pub const GRANT_TYPES: [&str; 5] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    device_code::GRANT_TYPE,
    token_exchange::GRANT_TYPE,
];

fn with_challenge(mut e: OAuthError, client: &ClientCredentials) -> OAuthError {
    if e.code == "invalid_client" {
        e.basic_challenge = client.via_basic;
    }
    e
}

/// An RFC 9068 access token for what the extension issued. `act` (RFC 8693 §4.1) names who acts
/// on the subject's behalf; `not_after` caps `exp` (an exchanged token never outlives its subject).
pub fn access_token(
    app: &App,
    issued: &Value,
    now: u64,
    act: Option<&Value>,
    not_after: Option<u64>,
) -> (String, u64) {
    let ttl = issued["access_token_ttl"].as_u64().unwrap_or(3600);
    let exp = not_after.map_or(now + ttl, |limit| limit.min(now + ttl));
    let audience = issued["resource"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| app.config.default_audience.clone())
        .unwrap_or_else(|| app.config.issuer.clone());
    let mut claims = json!({
        "iss": app.config.issuer,
        "sub": issued["user_id"],
        "aud": audience,
        "client_id": issued["client_id"],
        "scope": issued["scope"].as_str().unwrap_or_default(),
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "exp": exp,
        "grant_id": issued["grant_id"],
        "family_id": issued["family_id"],
    });
    if let Some(act) = act {
        claims["act"] = act.clone();
    }
    (
        jwt::sign(app.keys.signing(), "at+jwt", &claims),
        exp.saturating_sub(now),
    )
}

/// The token response for what the extension issued: an RFC 9068 access token, the refresh token
/// the extension minted, and an ID token when `openid` was granted to a user in a code exchange.
pub fn token_response(app: &App, issued: &Value, with_id_token: bool) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let key = app.keys.signing();
    let scope = issued["scope"].as_str().unwrap_or_default();
    let (access_token, expires_in) = access_token(app, issued, now, None, None);
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
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
            "exp": now + expires_in,
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
