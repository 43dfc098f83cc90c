//! The authorization endpoint (RFC 6749 §4.1.1): validation is the extension's
//! (`oauth.begin_authorization`); this hands the browser on to the consent step, back to the client
//! with an error the extension says is safe to redirect, or to an error page.

use hyper::{Method, StatusCode};

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Params, Req, Resp};

pub async fn handle(app: &App, req: Req) -> Resp {
    let params = match *req.method() {
        Method::GET => Params::parse(req.uri().query().unwrap_or("").as_bytes()),
        Method::POST => http::read_form(req, app.config.max_body_bytes)
            .await
            .map(|(_, p)| p),
        _ => {
            return http::error_page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                "Use GET or POST.",
            );
        }
    };
    let params = match params {
        Ok(params) => params,
        Err(e) => {
            return http::error_page(
                StatusCode::BAD_REQUEST,
                "Invalid authorization request",
                &e.description,
            );
        }
    };
    let params = params.to_json();
    let mut answer = match begin(app, &params).await {
        Ok(answer) => answer,
        Err(e) => return unavailable_page(&e),
    };
    // A URL client_id whose document the database has no fresh copy of: fetch it, then ask again.
    if let Some(client_id) = answer["fetch_client_document"].as_str() {
        if let Err(e) = crate::cimd::refresh(app, client_id).await {
            return match e.code.as_str() {
                "temporarily_unavailable" | "server_error" => unavailable_page(&e),
                _ => http::error_page(
                    StatusCode::BAD_REQUEST,
                    "Invalid authorization request",
                    &e.description,
                ),
            };
        }
        answer = match begin(app, &params).await {
            Ok(answer) => answer,
            Err(e) => return unavailable_page(&e),
        };
    }
    if let Some(error) = OAuthError::from_sql_result(&answer) {
        if answer["redirect"].as_bool() == Some(true)
            && let Some(location) = answer["location"].as_str()
        {
            return http::redirect(location, StatusCode::FOUND);
        }
        // Never redirect to a URI the extension has not validated: show the error here instead.
        return http::error_page(
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
            &error.description,
        );
    }
    let Some(request_id) = answer["request_id"].as_str() else {
        return http::error_page(
            StatusCode::BAD_REQUEST,
            "Invalid authorization request",
            "the client's metadata document could not be used",
        );
    };
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", request_id)
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

async fn begin(app: &App, params: &serde_json::Value) -> Result<serde_json::Value, OAuthError> {
    app.db
        .call("SELECT oauth.begin_authorization($1)", &[params])
        .await
}

pub fn unavailable_page(e: &OAuthError) -> Resp {
    let status = e.status();
    http::error_page(status, "Temporarily unavailable", &e.description)
}
