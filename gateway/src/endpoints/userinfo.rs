//! OIDC Core §5.3 UserInfo: the subject and, by granted scope, claims from the grant's `props`
//! (which the application supplied with `oauth.issue_code`).

use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};

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

fn bearer_error(code: &str, description: &str) -> Resp {
    let mut resp = http::error(&OAuthError::new(code, description));
    let challenge = format!("Bearer error=\"{code}\", error_description=\"{description}\"");
    resp.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge).expect("ascii challenge"),
    );
    resp
}

pub async fn handle(app: &App, req: Req) -> Resp {
    if req.method() != Method::GET && req.method() != Method::POST {
        return http::error(&OAuthError::invalid_request("use GET or POST"));
    }
    let Some(token) = http::bearer_token(req.headers()) else {
        let mut resp = http::error(&OAuthError::new(
            "invalid_token",
            "a bearer access token is required",
        ));
        resp.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return resp;
    };

    let claims = match app.verify_own_token(token, None, true) {
        Ok(claims) => claims,
        Err(e) => return bearer_error("invalid_token", &e.to_string()),
    };
    let scopes: Vec<&str> = claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    if !scopes.contains(&"openid") {
        return bearer_error("insufficient_scope", "the openid scope is required");
    }
    let grant: Option<uuid::Uuid> = claims["grant_id"].as_str().and_then(|g| g.parse().ok());
    let family: Option<uuid::Uuid> = claims["family_id"].as_str().and_then(|f| f.parse().ok());
    let live = match app
        .db
        .call("SELECT oauth.userinfo($1, $2)", &[&grant, &family])
        .await
    {
        Ok(live) => live,
        Err(e) => return http::error(&e),
    };
    if live["active"] != json!(true) {
        return bearer_error(
            "invalid_token",
            "the grant behind this token has been revoked",
        );
    }
    let props = &live["props"];
    let mut info = json!({ "sub": live["user_id"] });
    let mut copy = |names: &[&str]| {
        for name in names {
            if let Some(value) = props.get(*name) {
                info[*name] = value.clone();
            }
        }
    };
    if scopes.contains(&"profile") {
        copy(&PROFILE_CLAIMS);
    }
    if scopes.contains(&"email") {
        copy(&["email", "email_verified"]);
    }
    let mut resp = http::json(StatusCode::OK, &info);
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    resp
}
