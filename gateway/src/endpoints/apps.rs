//! "Connected apps" (`<issuer>/account/apps`): the signed-in user's live grants, each with a
//! revoke button. Revoking is `oauth.revoke_connected_app`, which revokes through
//! `oauth.revoke_grant` only a grant of this user; the form is bound to the grant and the user
//! (CSRF, `pages::csrf_token`).

use hyper::{Method, StatusCode};
use uuid::Uuid;

use super::pages::{self, Purpose};
use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};
use crate::views::ConnectedApp;

pub async fn handle(app: &App, req: Req) -> Resp {
    let Some(user) = pages::current_user(app, &req).await else {
        return pages::sign_in_first(app, &req);
    };
    match *req.method() {
        Method::GET => show(app, &user).await,
        Method::POST => revoke(app, req, &user).await,
        _ => pages::method_not_allowed(),
    }
}

async fn show(app: &App, user: &str) -> Resp {
    let grants = match app.db.list_connected_apps(user).await {
        Ok(grants) => grants,
        Err(e) => return pages::failure(&e),
    };
    let apps: Vec<ConnectedApp> = grants
        .into_iter()
        .map(|grant| ConnectedApp {
            csrf: pages::csrf_token(app, Purpose::Apps, &grant.grant_id.to_string(), user),
            grant,
        })
        .collect();
    let action = app.config.endpoint("/account/apps");
    http::page(
        StatusCode::OK,
        app.views
            .connected_apps(user, &apps, &action, &pages::account_nav(app)),
    )
}

async fn revoke(app: &App, req: Req, user: &str) -> Resp {
    let [grant_id, csrf] = match pages::form_fields(app, req, ["grant_id", "csrf_token"]).await {
        Ok(fields) => fields,
        Err(e) => return pages::failure(&e),
    };
    if !pages::csrf_valid(app, Purpose::Apps, &grant_id, user, &csrf) {
        return pages::form_not_accepted();
    }
    let Ok(grant) = Uuid::parse_str(&grant_id) else {
        return pages::failure(&OAuthError::invalid_request("grant_id is not a grant"));
    };
    // Already revoked (another tab, the application) ends on the same list: the grant is gone.
    match app.db.revoke_connected_app(user, grant).await {
        Ok(_) => http::redirect(&app.config.endpoint("/account/apps"), StatusCode::SEE_OTHER),
        Err(e) => pages::failure(&e),
    }
}
