//! The token endpoint (RFC 6749 §3.2): the extension decides each grant, this module mints the
//! JWTs for what it decided.

mod jwt_bearer;
mod token_exchange;

use hyper::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::db::Issued;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Req, Resp};
use crate::jwt;
use crate::keys::Alg;
use crate::tokens::{AccessClaims, Confirmation};

pub async fn handle(app: &App, req: Req) -> Resp {
    let mut resp = http::json_or_error(StatusCode::OK, respond(app, req).await);
    // RFC 9449 §8.2: a fresh nonce with every answer, so a client rarely meets use_dpop_nonce.
    if dpop_supported(app)
        && let Some(nonce) = app.dpop.nonce()
        && let Ok(value) = hyper::header::HeaderValue::from_str(&nonce)
    {
        resp.headers_mut().insert("dpop-nonce", value);
    }
    resp
}

fn dpop_supported(app: &App) -> bool {
    app.settings().is_some_and(|s| s.dpop_supported)
}

/// RFC 9449 §5: the thumbprint of the key whose proof came with the token request, when this
/// deployment binds tokens to DPoP keys (otherwise the header is ignored, §5.1, and the tokens are
/// bearer tokens).
fn dpop_key(app: &App, headers: &hyper::HeaderMap) -> Result<Option<String>, OAuthError> {
    if !dpop_supported(app) {
        return Ok(None);
    }
    let url = app.config.endpoint("/token");
    Ok(app
        .dpop
        .check(headers, "POST", &url, None)?
        .map(|proof| proof.jkt))
}

const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Every grant type this endpoint serves.
const GRANT_TYPES: [&str; 6] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    DEVICE_CODE,
    token_exchange::GRANT_TYPE,
    jwt_bearer::GRANT_TYPE,
];

async fn respond(app: &App, req: Req) -> Result<Value, OAuthError> {
    http::require_post(&req, "token")?;
    let (headers, params) = http::read_form(req, app.config.body_limits()).await?;
    let grant_type = params.required("grant_type")?;
    let client = http::client_credentials(&headers, &params)?;
    let jkt = dpop_key(app, &headers)?;
    let jkt = jkt.as_deref();
    crate::client_keys::ensure(app, &client).await?;
    let db = &app.db;
    // An ID token is issued where a user signed in (RFC 6749 §4.1.3 with PKCE, RFC 8628 §3.4), not
    // on refresh (rotation per OAuth 2.1 §4.3.1) or for a client's own token (RFC 6749 §4.4).
    let (issued, with_id_token) = match grant_type {
        "authorization_code" => {
            let request = crate::db::ExchangeRequest {
                client_id: client.client_id.clone(),
                secret: client.secret.clone(),
                code: params.required("code")?.to_owned(),
                code_verifier: params.required("code_verifier")?.to_owned(),
                redirect_uri: params.single("redirect_uri")?.map(str::to_owned),
                resource: params.single("resource")?.map(str::to_owned),
                dpop_jkt: jkt.map(str::to_owned),
            };
            (app.exchanges.decide(request).await, true)
        }
        "refresh_token" => {
            let refresh_token = params.required("refresh_token")?;
            let scope = params.single("scope")?;
            let resource = params.single("resource")?;
            let request = crate::db::RefreshRequest {
                client_id: client.client_id.clone(),
                secret: client.secret.clone(),
                refresh_token: refresh_token.to_owned(),
                scope: scope.map(str::to_owned),
                resource: resource.map(str::to_owned),
                dpop_jkt: jkt.map(str::to_owned),
            };
            (app.refreshes.decide(request).await, false)
        }
        "client_credentials" => {
            let scope = params.single("scope")?;
            let resource = params.single("resource")?;
            let issued = db.client_credentials_grant(&client, scope, resource, jkt);
            (issued.await, false)
        }
        // Pending, slow_down, denial, expiry and single use are the extension's.
        DEVICE_CODE => {
            let device_code = params.required("device_code")?;
            (
                db.poll_device_authorization(&client, device_code, jkt)
                    .await,
                true,
            )
        }
        token_exchange::GRANT_TYPE => {
            return token_exchange::exchange(app, &client, &params)
                .await
                .map_err(|e| client.challenged(e));
        }
        jwt_bearer::GRANT_TYPE => {
            return jwt_bearer::grant(app, &client, &params)
                .await
                .map_err(|e| client.challenged(e));
        }
        _ => {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type must be one of {}", GRANT_TYPES.join(", ")),
            ));
        }
    };
    let issued = issued.map_err(|e| client.challenged(e))?;
    Ok(token_response(app, &issued, with_id_token, jkt))
}

/// An RFC 9068 access token for what the extension issued. `act` (RFC 8693 §4.1) names who acts
/// on the subject's behalf; `not_after` caps `exp` (an exchanged token never outlives its subject);
/// `dpop_jkt` binds it to a DPoP key (RFC 9449 §6.1).
pub fn access_token(
    app: &App,
    issued: &Issued,
    now: u64,
    act: Option<Value>,
    not_after: Option<u64>,
    dpop_jkt: Option<&str>,
) -> (String, u64) {
    let ttl = issued.access_token_ttl;
    let exp = not_after.map_or(now + ttl, |limit| limit.min(now + ttl));
    let audience = issued
        .resource
        .clone()
        .or_else(|| app.config.default_audience.clone())
        .unwrap_or_else(|| app.config.issuer.clone());
    let claims = AccessClaims {
        iss: app.config.issuer.clone(),
        sub: issued.user_id.clone(),
        aud: audience,
        client_id: issued.client_id.clone(),
        scope: issued.scope.clone(),
        jti: uuid::Uuid::new_v4().to_string(),
        iat: now,
        exp,
        grant_id: Some(issued.grant_id),
        family_id: issued.family_id,
        act,
        cnf: dpop_jkt.map(|jkt| Confirmation {
            jkt: jkt.to_owned(),
        }),
    };
    (
        jwt::sign(app.keys.load().signing(), "at+jwt", &json!(claims)),
        exp.saturating_sub(now),
    )
}

/// RFC 6749 §5.1 (and OIDC Core §3.1.3.3 for `id_token`).
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// OIDC Core §2.
#[derive(Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    iat: u64,
    exp: u64,
    auth_time: Option<i64>,
    at_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// The token response for what the extension issued: an RFC 9068 access token (signed by the first
/// key), the refresh token the extension minted, and an ID token when `openid` was granted to a
/// user in a code exchange (signed in the client's `id_token_signed_response_alg`, its `at_hash`
/// with that algorithm's hash). Bound to `dpop_jkt`, the access token is a DPoP token (RFC 9449 §5).
pub fn token_response(
    app: &App,
    issued: &Issued,
    with_id_token: bool,
    dpop_jkt: Option<&str>,
) -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    let (access_token, expires_in) = access_token(app, issued, now, None, None, dpop_jkt);
    let id_token = (with_id_token && issued.scope.split(' ').any(|s| s == "openid")).then(|| {
        // OIDC Registration §2: a client that registered no algorithm gets RS256.
        let alg = issued.id_token_signed_response_alg.unwrap_or(Alg::RS256);
        let keys = app.keys.load();
        let key = keys.id_token_signing(alg);
        let claims = IdClaims {
            iss: &app.config.issuer,
            sub: &issued.user_id,
            aud: &issued.client_id,
            azp: &issued.client_id,
            iat: now,
            exp: now + expires_in,
            auth_time: issued.auth_time,
            at_hash: jwt::at_hash(key.alg, &access_token),
            nonce: issued.nonce.as_deref(),
        };
        jwt::sign(key, "JWT", &json!(claims))
    });
    json!(TokenResponse {
        access_token,
        token_type: if dpop_jkt.is_some() { "DPoP" } else { "Bearer" },
        expires_in,
        scope: &issued.scope,
        refresh_token: issued.refresh_token.as_deref(),
        id_token,
    })
}
