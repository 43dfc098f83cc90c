//! RFC 7662 token introspection for authenticated confidential clients (resource servers). A
//! revoked grant or family answers `active: false` at once: the extension is asked every time.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};

pub async fn handle(app: &App, req: Req) -> Resp {
    match respond(app, req).await {
        Ok(body) => http::json_no_store(StatusCode::OK, &body),
        Err(e) => http::error(&e),
    }
}

async fn respond(app: &App, req: Req) -> Result<Value, OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError::invalid_request(
            "the introspection endpoint accepts POST only",
        ));
    }
    let (headers, params) = http::read_form(req, app.config.max_body_bytes).await?;
    let client = http::client_credentials(&headers, &params)?;
    let token = params.required("token")?;
    params.single("token_type_hint")?;
    let challenge = |mut e: OAuthError| {
        e.basic_challenge = client.via_basic;
        e
    };
    let sql = "SELECT oauth.introspect($1, $2, $3, $4, $5)";
    if token.split('.').count() == 3 {
        let now = jsonwebtoken::get_current_timestamp();
        let Some((grant, family, claims)) = super::revoke::access_token_ids(app, token) else {
            // Still authenticate the caller: an unauthenticated probe learns nothing.
            let none: Option<&str> = None;
            let nil: Option<uuid::Uuid> = None;
            app.db
                .call_ok(sql, &[&client.client_id, &client.secret, &none, &nil, &nil])
                .await
                .map_err(challenge)?;
            return Ok(json!({ "active": false }));
        };
        let none: Option<&str> = None;
        let live = app
            .db
            .call_ok(
                sql,
                &[
                    &client.client_id,
                    &client.secret,
                    &none,
                    &Some(grant),
                    &family,
                ],
            )
            .await
            .map_err(challenge)?;
        if live["active"] != json!(true) || claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
            return Ok(json!({ "active": false }));
        }
        let mut answer = json!({ "active": true, "token_type": "Bearer" });
        for claim in [
            "iss",
            "sub",
            "aud",
            "client_id",
            "scope",
            "exp",
            "iat",
            "jti",
            "grant_id",
            "family_id",
        ] {
            if !claims[claim].is_null() {
                answer[claim] = claims[claim].clone();
            }
        }
        return Ok(answer);
    }
    let nil: Option<uuid::Uuid> = None;
    let live = app
        .db
        .call_ok(
            sql,
            &[&client.client_id, &client.secret, &Some(token), &nil, &nil],
        )
        .await
        .map_err(challenge)?;
    if live["active"] != json!(true) {
        return Ok(json!({ "active": false }));
    }
    Ok(json!({
        "active": true,
        "token_type": "refresh_token",
        "iss": app.config.issuer,
        "sub": live["user_id"],
        "client_id": live["client_id"],
        "scope": live["scope"],
        "exp": live["exp"],
        "iat": live["iat"],
        "aud": live["resource"],
    }))
}
