//! The device authorization grant (RFC 8628): `/device_authorization` hands a device its codes;
//! `/device` is where the user enters the user code and approves, on the built-in page or the
//! application's own (`login_url?user_code=…`, completing with `oauth.approve_device_authorization`).

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::pages::{self, Purpose};
use crate::app::App;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Req, Resp};
use crate::views::{Approval, Key};

pub async fn authorization(app: &App, req: Req) -> Resp {
    http::json_or_error(StatusCode::OK, begin(app, req).await)
}

async fn begin(app: &App, req: Req) -> Result<Value, OAuthError> {
    http::require_post(&req, "device authorization")?;
    let (client, params) = http::read_client_form(req, app.config.body_limits()).await?;
    crate::client_keys::ensure(app, &client).await?;
    let scope = params.single("scope")?;
    let resource = params.single("resource")?;
    let codes = app
        .db
        .begin_device_authorization(&client, scope, resource)
        .await
        .map_err(|e| client.challenged(e))?;
    let verification_uri = app.config.endpoint("/device");
    let complete = form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", &codes.user_code)
        .finish();
    Ok(json!({
        "device_code": codes.device_code,
        "user_code": codes.user_code,
        "expires_in": codes.expires_in,
        "interval": codes.interval,
        "verification_uri_complete": format!("{verification_uri}?{complete}"),
        "verification_uri": verification_uri,
    }))
}

/// Wrong user codes a signed-in user may enter per window: a user code has ~34.6 bits, so
/// guessing must be made slow (RFC 8628 §5.1). An application's own page (`login_url`) keeps its own.
pub const USER_CODE_MISSES: usize = 10;
pub const USER_CODE_MISS_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

fn too_many_misses(app: &App, user: &str) -> Option<Resp> {
    (!app.user_code_misses.remaining(user, USER_CODE_MISSES)).then(|| {
        let mut resp = http::page_error(
            StatusCode::TOO_MANY_REQUESTS,
            Key::too_many_attempts_title.into(),
            Key::too_many_attempts_detail.into(),
        );
        resp.extensions_mut().insert(
            OAuthError::new(ErrorCode::SlowDown, "too many wrong user codes")
                .with_status(StatusCode::TOO_MANY_REQUESTS),
        );
        resp
    })
}

/// Counts an unknown, expired or decided code against the user, then shows the failure.
fn code_failure(app: &App, user: &str, e: &OAuthError) -> Resp {
    if e.code == ErrorCode::NotFound {
        app.user_code_misses.spend(user, USER_CODE_MISSES);
    }
    pages::failure(e)
}

pub async fn verification(app: &App, req: Req) -> Resp {
    match *req.method() {
        Method::GET => show(app, req).await,
        Method::POST => decide(app, req).await,
        _ => pages::method_not_allowed(),
    }
}

fn entry_form(app: &App) -> Resp {
    http::page(
        StatusCode::OK,
        app.views.device_entry(&app.config.endpoint("/device")),
    )
}

fn done_page(approved: bool) -> Resp {
    if approved {
        pages::message(Key::device_connected_title, Key::device_connected_detail)
    } else {
        pages::message(Key::device_denied_title, Key::device_denied_detail)
    }
}

async fn show(app: &App, req: Req) -> Resp {
    let typed = match pages::query(&req).and_then(|p| Ok(p.single("user_code")?.map(str::to_owned)))
    {
        Ok(Some(code)) if !code.trim().is_empty() => code,
        Ok(_) => return entry_form(app),
        Err(e) => return pages::failure(&e),
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
    let Some(user) = pages::current_user(app, &req).await else {
        return pages::sign_in_required();
    };
    if let Some(refused) = too_many_misses(app, &user) {
        return refused;
    }
    if app.config.dev_auto_approve {
        return match app.db.approve_device_authorization(&typed, &user).await {
            Ok(()) => done_page(true),
            Err(e) => code_failure(app, &user, &e),
        };
    }
    let request = match app.db.get_device_authorization(&typed).await {
        Ok(Some(request)) => request,
        Ok(None) => {
            let unknown = OAuthError::new(ErrorCode::NotFound, "no such code");
            return code_failure(app, &user, &unknown);
        }
        Err(e) => return code_failure(app, &user, &e),
    };
    // The form binds to the code as the extension spells it, whatever the user typed.
    let user_code = request.canonical_user_code;
    let logo_uri = match app.db.client_logo_uri(&request.client_id).await {
        Ok(logo) => logo,
        Err(e) => return pages::failure(&e),
    };
    let page = Approval {
        client_name: request.client_name,
        client_id: request.client_id,
        logo_uri,
        scopes: request.scopes,
        resource: request.resource,
        loopback_only: false,
        destination: None,
        action: app.config.endpoint("/device"),
        csrf: pages::csrf_token(app, Purpose::Device, &user_code, &user),
        hidden: ("user_code", user_code),
    };
    http::page(StatusCode::OK, app.views.approval(&page, &user))
}

async fn decide(app: &App, req: Req) -> Resp {
    let Some(user) = pages::current_user(app, &req).await else {
        return pages::sign_in_required();
    };
    // The hidden field carries the canonical code the page was rendered for.
    let [user_code, csrf, decision] =
        match pages::form_fields(app, req, ["user_code", "csrf_token", "decision"]).await {
            Ok(fields) => fields,
            Err(e) => return pages::failure(&e),
        };
    if let Some(refused) = too_many_misses(app, &user) {
        return refused;
    }
    if !pages::csrf_valid(app, Purpose::Device, &user_code, &user, &csrf) {
        return pages::form_not_accepted();
    }
    let outcome = match decision.as_str() {
        "approve" => app
            .db
            .approve_device_authorization(&user_code, &user)
            .await
            .map(|()| true),
        "deny" => app
            .db
            .deny_device_authorization(&user_code)
            .await
            .map(|()| false),
        _ => Err(OAuthError::invalid_request(
            "decision must be approve or deny",
        )),
    };
    match outcome {
        Ok(approved) => done_page(approved),
        Err(e) => code_failure(app, &user, &e),
    }
}
