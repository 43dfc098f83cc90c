//! OIDC Core §5.3 UserInfo: the subject and, by granted scope, claims from the grant's `props`
//! (which the application supplied with `oauth.issue_code`).

use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use serde_json::{Map, Value};

use crate::app::App;
use crate::error::{BearerChallenge, ChallengeNames, ErrorCode, OAuthError};
use crate::http::{self, Req, Resp, TokenScheme};

const PROFILE_CLAIMS: [&str; 8] = [
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "nickname",
    "picture",
    "locale",
    "zoneinfo",
];

const EMAIL_CLAIMS: [&str; 2] = ["email", "email_verified"];

/// RFC 6750 §3.1: the challenge names the error, except when no token was presented at all.
fn bearer_error(code: ErrorCode, description: &str, names: ChallengeNames) -> OAuthError {
    OAuthError::new(code, description).with_bearer_challenge(BearerChallenge {
        names,
        ..BearerChallenge::default()
    })
}

pub async fn handle(app: &App, req: Req) -> Resp {
    match respond(app, req).await {
        Ok(info) => {
            let mut resp = http::json(StatusCode::OK, &Value::Object(info));
            resp.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(e) => http::error(&e),
    }
}

async fn respond(app: &App, req: Req) -> Result<Map<String, Value>, OAuthError> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(OAuthError::invalid_request("use GET or POST"));
    }
    let Some((scheme, token)) = http::access_token(req.headers()) else {
        return Err(bearer_error(
            ErrorCode::InvalidToken,
            "a bearer access token is required",
            ChallengeNames::Nothing,
        ));
    };
    let named = ChallengeNames::CodeAndDescription;
    let claims = app
        .tokens
        .verify(token, None, true)
        .map_err(|e| bearer_error(ErrorCode::InvalidToken, &e.to_string(), named))?;
    // RFC 9449 §7: a bound token only with a proof by its key; an unbound one only as Bearer.
    match (scheme, claims.dpop_jkt()) {
        (TokenScheme::Bearer, None) => {}
        (TokenScheme::Dpop, Some(jkt)) => {
            let url = app.config.endpoint("/userinfo");
            let proof = app
                .dpop
                .check(req.headers(), req.method().as_str(), &url, Some(token))?;
            if proof.is_none_or(|p| p.jkt != jkt) {
                return Err(bearer_error(
                    ErrorCode::InvalidDpopProof,
                    "a DPoP proof made with the token's key is required",
                    named,
                )
                .with_status(StatusCode::UNAUTHORIZED));
            }
        }
        _ => {
            return Err(bearer_error(
                ErrorCode::InvalidToken,
                "the token's scheme does not match its binding (DPoP-bound tokens use DPoP)",
                named,
            ));
        }
    }
    if !claims.has_scope("openid") {
        return Err(bearer_error(
            ErrorCode::InsufficientScope,
            "the openid scope is required",
            named,
        ));
    }
    let live = app
        .db
        .userinfo(claims.grant_id, claims.family_id, claims.jti_uuid())
        .await?
        .ok_or_else(|| {
            bearer_error(
                ErrorCode::InvalidToken,
                "the grant behind this token has been revoked",
                named,
            )
        })?;
    let mut info = Map::new();
    info.insert("sub".into(), Value::String(live.user_id));
    let mut released: Vec<&str> = Vec::new();
    if claims.has_scope("profile") {
        released.extend(PROFILE_CLAIMS);
    }
    if claims.has_scope("email") {
        released.extend(EMAIL_CLAIMS);
    }
    for name in released {
        if let Some(value) = live.props.get(name) {
            info.insert(name.to_owned(), value.clone());
        }
    }
    Ok(info)
}
