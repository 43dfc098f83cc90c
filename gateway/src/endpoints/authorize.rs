//! The authorization endpoint (RFC 6749 §4.1.1): validation is the extension's
//! (`oauth.begin_authorization`); this hands the browser on to the consent step, back to the client
//! with an error the extension says is safe to redirect, or to an error page.

use hyper::{Method, StatusCode};

use super::pages;
use crate::app::App;
use crate::db::{BeganAuthorization, NextStep};
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};
use crate::views::Key;

fn refused(e: &OAuthError) -> Resp {
    http::error(
        &e.clone()
            .with_status(StatusCode::BAD_REQUEST)
            .as_page(Key::invalid_authorization_request_title),
    )
}

pub async fn handle(app: &App, req: Req) -> Resp {
    // Read before a form body consumes the request: the browser's cookies (the request is bound
    // to this browser) and, without an upstream provider, the user a proxy names (prompt=none).
    let headers = req.headers().clone();
    let proxy_user = if !app.has_upstream() {
        pages::current_user(app, &req).await
    } else {
        None
    };
    let params = match *req.method() {
        Method::GET => pages::query(&req),
        Method::POST => http::read_form(req, app.config.body_limits())
            .await
            .map(|(_, p)| p),
        _ => return pages::method_not_allowed(),
    };
    let params = match params {
        Ok(params) => params.to_json(),
        Err(e) => return refused(&e),
    };
    let mut answer = match app.db.begin_authorization(&params).await {
        Ok(answer) => answer,
        Err(e) => return pages::unavailable(&e),
    };
    // A URL client_id whose document the database has no fresh copy of: fetch it, then ask again.
    if let BeganAuthorization::FetchClientDocument { url } = &answer {
        if let Err(e) = app.cimd.refresh(url).await {
            return if e.is_unavailable_or_server_error() {
                pages::unavailable(&e)
            } else {
                refused(&e)
            };
        }
        answer = match app.db.begin_authorization(&params).await {
            Ok(answer) => answer,
            Err(e) => return pages::unavailable(&e),
        };
    }
    let request_id = match answer {
        BeganAuthorization::Pending { request_id } => request_id,
        BeganAuthorization::Refused {
            location: Some(location),
            ..
        } => return http::redirect(&location, StatusCode::FOUND),
        // Never redirect to a URI the extension has not validated: show the error here instead.
        BeganAuthorization::Refused {
            error,
            location: None,
        } => return refused(&error),
        BeganAuthorization::FetchClientDocument { .. } => {
            return refused(&OAuthError::invalid_request(
                "the client's metadata document could not be used",
            ));
        }
    };
    if app.has_upstream() {
        return super::signin::after_authorize(app, &headers, &request_id);
    }
    // prompt=none: no page may be shown, so the extension answers now, from who is signed in.
    if params.get("prompt").and_then(serde_json::Value::as_str) == Some("none") {
        return match app
            .db
            .continue_authorization(
                &request_id,
                None,
                proxy_user.as_deref(),
                false,
                app.config.remember_consent,
            )
            .await
        {
            Ok(NextStep::Redirect { location }) => http::redirect(&location, StatusCode::FOUND),
            Ok(NextStep::Refused(e)) | Err(e) => refused(&e),
            Ok(NextStep::Consent { .. } | NextStep::Login { .. }) => refused(
                &OAuthError::invalid_request("prompt=none could not be answered"),
            ),
        };
    }
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", &request_id)
        .finish();
    let next = match &app.config.login_url {
        Some(login_url) => format!(
            "{login_url}{}{encoded}",
            if login_url.contains('?') { '&' } else { '?' }
        ),
        None => format!("{}?{encoded}", app.config.endpoint("/consent")),
    };
    http::redirect(&next, StatusCode::FOUND)
}
