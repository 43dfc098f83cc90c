//! The device authorization grant (RFC 8628): `/device_authorization` hands a device its codes;
//! `/device` is where the user enters the user code and approves, on the built-in page or the
//! application's own (`login_url?user_code=…`, completing with `oauth.approve_device_authorization`).

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::consent::{self, Approval};
use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Params, Req, Resp, escape_html};

pub async fn authorization(app: &App, req: Req) -> Resp {
    match begin(app, req).await {
        Ok(body) => http::json_no_store(StatusCode::OK, &body),
        Err(e) => http::error(&e),
    }
}

async fn begin(app: &App, req: Req) -> Result<Value, OAuthError> {
    if req.method() != Method::POST {
        return Err(OAuthError::invalid_request(
            "the device authorization endpoint accepts POST only",
        ));
    }
    let (headers, params) = http::read_form(req, app.config.max_body_bytes).await?;
    let client = http::client_credentials(&headers, &params)?;
    let scope = params.single("scope")?;
    let resource = params.single("resource")?;
    let mut answer = app
        .db
        .call_ok(
            "SELECT oauth.begin_device_authorization($1, $2, $3, $4)",
            &[&client.client_id, &client.secret, &scope, &resource],
        )
        .await
        .map_err(|mut e| {
            e.basic_challenge = client.via_basic;
            e
        })?;
    let verification_uri = app.config.endpoint("/device");
    let user_code = answer["user_code"].as_str().unwrap_or_default().to_owned();
    answer["verification_uri_complete"] = Value::String(format!(
        "{verification_uri}?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("user_code", &user_code)
            .finish()
    ));
    answer["verification_uri"] = Value::String(verification_uri);
    Ok(answer)
}

/// Wrong user codes a signed-in user may enter per window: a user code has ~34.6 bits, so
/// guessing must be made slow (RFC 8628 §5.1). An application's own page (`login_url`) keeps its own.
pub const USER_CODE_MISSES: usize = 10;
pub const USER_CODE_MISS_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

fn too_many_misses(app: &App, user: &str) -> Option<Resp> {
    (!app.user_code_misses.remaining(user, USER_CODE_MISSES)).then(|| {
        http::error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "Too many codes that did not match. Wait a few minutes, then enter the code your device shows.",
        )
    })
}

/// Counts an unknown, expired or decided code against the user, then shows the failure.
fn code_failure(app: &App, user: &str, e: &OAuthError) -> Resp {
    if e.code == "not_found" {
        app.user_code_misses.spend(user, USER_CODE_MISSES);
    }
    consent::failure_page(e)
}

/// The form field as the user typed it, in the extension's canonical form (what CSRF binds to).
fn normalize_user_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

pub async fn verification(app: &App, req: Req) -> Resp {
    match *req.method() {
        Method::GET => show(app, req).await,
        Method::POST => decide(app, req).await,
        _ => http::error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Use GET or POST.",
        ),
    }
}

fn entry_form(app: &App) -> Resp {
    http::html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Connect a device</title></head>\
             <body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
             <h1>Connect a device</h1><p>Enter the code your device shows.</p>\
             <form method=\"get\" action=\"{action}\">\
             <input name=\"user_code\" autocomplete=\"off\" autocapitalize=\"characters\" \
             placeholder=\"XXXX-XXXX\" maxlength=\"20\" required> \
             <button type=\"submit\">Continue</button></form></body></html>",
            action = escape_html(&app.config.endpoint("/device")),
        ),
    )
}

fn done_page(approved: bool) -> Resp {
    let (title, detail) = if approved {
        ("Device connected", "You can return to your device.")
    } else {
        ("Request denied", "The device was not given access.")
    };
    http::error_page(StatusCode::OK, title, detail)
}

async fn show(app: &App, req: Req) -> Resp {
    let params = match Params::parse(req.uri().query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return consent::failure_page(&e),
    };
    let typed = match params.single("user_code") {
        Ok(Some(code)) if !code.trim().is_empty() => code.to_owned(),
        Ok(_) => return entry_form(app),
        Err(e) => return consent::failure_page(&e),
    };
    if let Some(login_url) = &app.config.login_url {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("user_code", &typed)
            .finish();
        let separator = if login_url.contains('?') { '&' } else { '?' };
        return http::redirect(
            &format!("{login_url}{separator}{encoded}"),
            StatusCode::FOUND,
        );
    }
    let Some(user) = consent::current_user(app, req.headers()) else {
        return consent::sign_in_required();
    };
    if let Some(refused) = too_many_misses(app, &user) {
        return refused;
    }
    let user_code = normalize_user_code(&typed);
    if app.config.dev_auto_approve {
        return match approve(app, &user_code, &user).await {
            Ok(()) => done_page(true),
            Err(e) => code_failure(app, &user, &e),
        };
    }
    let rows = match app
        .db
        .query(
            "SELECT client_name, client_id, scopes, resource \
               FROM oauth.get_device_authorization($1)",
            &[&user_code],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return code_failure(app, &user, &e),
    };
    let Some(row) = rows.first() else {
        return code_failure(app, &user, &OAuthError::new("not_found", "no such code"));
    };
    let page = Approval {
        client_name: row.get(0),
        client_id: row.get(1),
        scopes: row.get(2),
        resource: row.get(3),
        loopback_only: false,
        destination: None,
        action: app.config.endpoint("/device"),
        hidden: ("user_code", user_code.clone()),
        csrf: consent::csrf_token(app, "device", &user_code, &user),
    };
    http::html(StatusCode::OK, page.render(&user))
}

async fn approve(app: &App, user_code: &str, user: &str) -> Result<(), OAuthError> {
    app.db
        .query(
            "SELECT oauth.approve_device_authorization($1, $2)",
            &[&user_code, &user],
        )
        .await
        .map(|_| ())
}

async fn decide(app: &App, req: Req) -> Resp {
    let Some(user) = consent::current_user(app, req.headers()) else {
        return consent::sign_in_required();
    };
    let params = match http::read_form(req, app.config.max_body_bytes).await {
        Ok((_, p)) => p,
        Err(e) => return consent::failure_page(&e),
    };
    let fields = (|| {
        Ok::<_, OAuthError>((
            params.required("user_code")?,
            params.required("csrf_token")?,
            params.required("decision")?,
        ))
    })();
    let (typed, csrf, decision) = match fields {
        Ok(f) => f,
        Err(e) => return consent::failure_page(&e),
    };
    if let Some(refused) = too_many_misses(app, &user) {
        return refused;
    }
    let user_code = normalize_user_code(typed);
    if !consent::csrf_valid(app, "device", &user_code, &user, csrf) {
        return http::error_page(
            StatusCode::FORBIDDEN,
            "Request not accepted",
            "The form was not issued to you for this code.",
        );
    }
    let outcome = match decision {
        "approve" => approve(app, &user_code, &user).await.map(|()| true),
        "deny" => app
            .db
            .query("SELECT oauth.deny_device_authorization($1)", &[&user_code])
            .await
            .map(|_| false),
        _ => Err(OAuthError::invalid_request(
            "decision must be approve or deny",
        )),
    };
    match outcome {
        Ok(approved) => done_page(approved),
        Err(e) => code_failure(app, &user, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_user_code;

    #[test]
    fn typed_codes_normalize_like_the_extension() {
        assert_eq!(normalize_user_code("bcdf-ghjk"), "BCDFGHJK");
        assert_eq!(normalize_user_code(" BCDF GHJK "), "BCDFGHJK");
        assert_eq!(normalize_user_code("bcdfghjk"), "BCDFGHJK");
    }
}
