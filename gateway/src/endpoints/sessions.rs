//! "Where you are signed in" (`<issuer>/account/sessions`, where an upstream provider signs people
//! in): the signed-in user's live browser sessions (`oauth.list_user_sessions`), each with a
//! sign-out button, and "sign out everywhere" (`oauth.end_user_sessions`).
//!
//! A form names a session id; `oauth.end_user_session` ends it only when it is the signed-in user's.
//! The forms' CSRF token is bound to the user (and this page), not to a session: it proves the form
//! was issued to this user, the extension decides what they may end.

use hyper::{Method, StatusCode};
use uuid::Uuid;

use super::pages::{self, Purpose};
use super::signin;
use crate::app::App;
use crate::db::Session;
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};
use crate::views::{EVERYWHERE, Key, SessionEntry};

pub async fn handle(app: &App, req: Req) -> Resp {
    let current = signin::current_session(app, req.headers()).await;
    let user = match &current {
        Some(session) => Some(session.user_id.clone()),
        None => pages::current_user(app, &req).await,
    };
    let Some(user) = user else {
        return pages::sign_in_first(app, &req);
    };
    match *req.method() {
        Method::GET => show(app, &user, current.as_ref()).await,
        Method::POST => sign_out(app, req, &user, current.as_ref()).await,
        _ => pages::method_not_allowed(),
    }
}

fn form_token(app: &App, user: &str) -> String {
    pages::csrf_token(app, Purpose::Sessions, "", user)
}

async fn show(app: &App, user: &str, current: Option<&Session>) -> Resp {
    let sessions = match app.db.list_user_sessions(user).await {
        Ok(sessions) => sessions,
        Err(e) => return pages::failure(&e),
    };
    let entries: Vec<SessionEntry> = sessions
        .into_iter()
        .map(|session| SessionEntry {
            current: current.is_some_and(|c| c.session_id == session.session_id),
            session,
        })
        .collect();
    http::page(
        StatusCode::OK,
        app.views.sessions(
            user,
            &entries,
            &form_token(app, user),
            &app.config.endpoint("/account/sessions"),
            &pages::account_nav(app),
        ),
    )
}

async fn sign_out(app: &App, req: Req, user: &str, current: Option<&Session>) -> Resp {
    let [session, csrf] = match pages::form_fields(app, req, ["session", "csrf_token"]).await {
        Ok(fields) => fields,
        Err(e) => return pages::failure(&e),
    };
    if !pages::csrf_valid(app, Purpose::Sessions, "", user, &csrf) {
        return pages::form_not_accepted();
    }
    if session == EVERYWHERE {
        return match app.db.end_user_sessions(user).await {
            Ok(ended) => {
                tracing::info!(%user, ended, "signed out everywhere");
                signin::forget_session(
                    app,
                    pages::message(
                        Key::signed_out_everywhere_title,
                        Key::signed_out_everywhere_detail,
                    ),
                )
            }
            Err(e) => pages::failure(&e),
        };
    }
    let Ok(session_id) = Uuid::parse_str(&session) else {
        return pages::failure(&OAuthError::invalid_request("session is not a session"));
    };
    let ended = match app.db.end_user_session(user, session_id).await {
        Ok(ended) => ended,
        Err(e) => return pages::failure(&e),
    };
    // Not the user's, or already ended (another tab, the application): nothing of theirs ended,
    // and the list shows what is live.
    if ended {
        tracing::info!(session = %session_id, "signed out from the sessions page");
        if current.is_some_and(|c| c.session_id == session_id) {
            return signin::forget_session(
                app,
                pages::message(Key::signed_out_title, Key::signed_out_detail),
            );
        }
    }
    http::redirect(
        &app.config.endpoint("/account/sessions"),
        StatusCode::SEE_OTHER,
    )
}
