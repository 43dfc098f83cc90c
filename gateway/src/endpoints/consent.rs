//! The built-in login/consent step, for deployments without their own page (`login_url`). The
//! form is bound to the request and the user (CSRF, `pages::csrf_token`).

use hyper::{Method, StatusCode};

use super::pages::{self, Purpose};
use crate::app::App;
use crate::db::NextStep;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Req, Resp};
use crate::views::{Approval, Destination};

pub async fn handle(app: &App, req: Req) -> Resp {
    // Signed in through the upstream provider: the browser's session, and the request bound to
    // the browser that started it (`signin`).
    if app.has_upstream() {
        return super::signin::consent(app, req).await;
    }
    let Some(user) = pages::current_user(app, &req).await else {
        return pages::sign_in_required();
    };
    match *req.method() {
        Method::GET => show(app, req, &user).await,
        Method::POST => decide(app, req, &user, None).await,
        _ => pages::method_not_allowed(),
    }
}

pub(super) async fn show(app: &App, req: Req, user: &str) -> Resp {
    let request_id = match pages::query(&req).and_then(|p| Ok(p.required("request_id")?.to_owned()))
    {
        Ok(id) => id,
        Err(e) => return pages::failure(&e),
    };
    if app.config.dev_auto_approve {
        return match app.db.issue_code(&request_id, user).await {
            Ok(location) => http::redirect(&location, StatusCode::FOUND),
            Err(e) => pages::failure(&e),
        };
    }
    // A user named by the proxy (or dev_user) whose grant already covers the request; with a
    // session, `signin::consent` asked this already.
    if app.config.remember_consent && !app.has_upstream() {
        match app
            .db
            .continue_authorization(&request_id, None, Some(user), false, true)
            .await
        {
            Ok(NextStep::Redirect { location }) => {
                return http::redirect(&location, StatusCode::FOUND);
            }
            Ok(NextStep::Refused(e)) | Err(e) => return pages::failure(&e),
            Ok(_) => {}
        }
    }
    let request = match app.db.get_authorization_request(&request_id).await {
        Ok(Some(request)) => request,
        Ok(None) => {
            return pages::failure(&OAuthError::new(ErrorCode::NotFound, "no such request"));
        }
        Err(e) => return pages::failure(&e),
    };
    // The extension names a host for http(s) redirect URIs only.
    let destination = Destination::of(&request.redirect_uri, request.redirect_host);
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
        loopback_only: request.loopback_only,
        destination: Some(destination),
        action: app.config.endpoint("/consent"),
        csrf: pages::csrf_token(app, Purpose::Consent, &request_id, user),
        hidden: ("request_id", request_id),
    };
    http::page(StatusCode::OK, app.views.approval(&page, user))
}

/// `session`: the browser's session secret, when signed in through the upstream provider; the
/// code's grant then carries the session's auth_time and claims.
pub(super) async fn decide(app: &App, req: Req, user: &str, session: Option<&str>) -> Resp {
    let [request_id, csrf, decision] =
        match pages::form_fields(app, req, ["request_id", "csrf_token", "decision"]).await {
            Ok(fields) => fields,
            Err(e) => return pages::failure(&e),
        };
    if !pages::csrf_valid(app, Purpose::Consent, &request_id, user, &csrf) {
        return pages::form_not_accepted();
    }
    let outcome = match decision.as_str() {
        "approve" => match session {
            None => app.db.issue_code(&request_id, user).await,
            Some(secret) => match app
                .db
                .continue_authorization(&request_id, Some(secret), None, true, false)
                .await
            {
                Ok(NextStep::Redirect { location }) => Ok(location),
                Ok(NextStep::Refused(e)) | Err(e) => Err(e),
                Ok(_) => return pages::sign_in_required(),
            },
        },
        "deny" => app.db.deny_authorization(&request_id).await,
        _ => Err(OAuthError::invalid_request(
            "decision must be approve or deny",
        )),
    };
    match outcome {
        Ok(location) => http::redirect(&location, StatusCode::SEE_OTHER),
        Err(e) => pages::failure(&e),
    }
}
