//! What the browser pages share (consent, device verification, the account pages): the signed-in
//! user, the CSRF token that binds a form to one decision and one user, and the failure pages (their
//! markup and texts are `views`').
//!
//! The user is the browser's session where an upstream provider signs people in, whoever a trusted
//! authenticating proxy names in `trusted_user_header`, or in development the configured `dev_user`. Pages can never be framed (clickjacking; `http::html`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use ring::hmac;

use crate::app::App;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Params, PeerAddr, Req, Resp};
use crate::views::{AccountNav, Key, Text};

/// The signed-in user. The user header counts only from a trusted proxy's address, and only when
/// it came as one line: behind a proxy that appends its line, a repeat means the client sent one
/// of its own, and which is whose cannot be told. A header that does not count signs the request
/// out (it is not passed over for `dev_user`).
pub async fn current_user(app: &App, req: &Req) -> Option<String> {
    // Signed in through the upstream provider: the browser's live session.
    if app.has_upstream()
        && let Some(user) = super::signin::session_user(app, req.headers()).await
    {
        return Some(user);
    }
    if let Some(name) = &app.config.trusted_user_header {
        let mut lines = req.headers().get_all(name.as_str()).iter();
        if let Some(line) = lines.next() {
            let from_trusted_proxy = req
                .extensions()
                .get::<PeerAddr>()
                .is_some_and(|peer| app.trusted_proxies.iter().any(|r| r.contains(peer.0.ip())));
            if lines.next().is_some() || !from_trusted_proxy {
                tracing::warn!(header = %name, from_trusted_proxy, "user header refused");
                return None;
            }
            let user = line.to_str().ok()?.trim();
            return (!user.is_empty() && user.len() <= 255).then(|| user.to_owned());
        }
    }
    if app.config.dev_mode {
        app.config.dev_user.clone()
    } else {
        None
    }
}

/// Which page a form token is for: a consent token cannot approve a device, nor the reverse.
#[derive(Clone, Copy)]
pub enum Purpose {
    Consent,
    Device,
    /// Revoking a grant on the connected-apps page.
    Apps,
    /// Signing out on the sessions page.
    Sessions,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Consent => "consent",
            Purpose::Device => "device",
            Purpose::Apps => "apps",
            Purpose::Sessions => "sessions",
        }
    }
}

fn csrf_message(purpose: Purpose, subject: &str, user: &str) -> String {
    format!("{}\0{subject}\0{user}", purpose.label())
}

/// A form token binding one decision (`subject`: request id or user code) to one user.
pub fn csrf_token(app: &App, purpose: Purpose, subject: &str, user: &str) -> String {
    let tag = hmac::sign(
        &app.csrf_key,
        csrf_message(purpose, subject, user).as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

pub fn csrf_valid(app: &App, purpose: Purpose, subject: &str, user: &str, presented: &str) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else {
        return false;
    };
    hmac::verify(
        &app.csrf_key,
        csrf_message(purpose, subject, user).as_bytes(),
        &tag,
    )
    .is_ok()
}

/// A failure page in the deployment's words, carrying its error as `http::error` does (metrics).
fn refusal(error: OAuthError, title: Key, detail: Key) -> Resp {
    let mut resp = http::page_error(error.status(), title.into(), detail.into());
    resp.extensions_mut().insert(error);
    resp
}

pub fn sign_in_required() -> Resp {
    refusal(
        OAuthError::new(ErrorCode::LoginRequired, "no authenticated user")
            .with_status(StatusCode::UNAUTHORIZED),
        Key::sign_in_required_title,
        Key::sign_in_required_detail,
    )
}

/// An account page opened by nobody signed in: where the gateway signs people in itself, the
/// sign-in, returning to the page; otherwise the page saying a sign-in is needed.
pub fn sign_in_first(app: &App, req: &Req) -> Resp {
    if !app.has_upstream() || req.method() != hyper::Method::GET {
        return sign_in_required();
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("return_to", req.uri().path())
        .finish();
    http::redirect(
        &format!("{}?{query}", app.config.endpoint("/login")),
        StatusCode::SEE_OTHER,
    )
}

/// The links between the account pages; the sessions page exists where sessions do.
pub fn account_nav(app: &App) -> AccountNav {
    AccountNav {
        apps: app.config.endpoint("/account/apps"),
        sessions: app
            .has_upstream()
            .then(|| app.config.endpoint("/account/sessions")),
    }
}

/// A form that was not issued to this user for this decision.
pub fn form_not_accepted() -> Resp {
    refusal(
        OAuthError::new(ErrorCode::AccessDenied, "form not issued to this user"),
        Key::form_not_accepted_title,
        Key::form_not_accepted_detail,
    )
}

pub fn method_not_allowed() -> Resp {
    refusal(
        OAuthError::new(ErrorCode::MethodNotAllowed, "use GET or POST"),
        Key::method_not_allowed_title,
        Key::method_not_allowed_detail,
    )
}

/// The database is out of reach or failed: nothing the user can fix.
pub fn unavailable(e: &OAuthError) -> Resp {
    http::error(&e.clone().as_page(Key::unavailable_title))
}

/// A failed step of a browser page: expired requests, bad input, an unavailable database.
pub fn failure(e: &OAuthError) -> Resp {
    match e.code {
        ErrorCode::NotFound => refusal(
            e.clone().with_status(StatusCode::BAD_REQUEST),
            Key::request_expired_title,
            Key::request_expired_detail,
        ),
        ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError => unavailable(e),
        _ if e.status() == StatusCode::REQUEST_TIMEOUT => {
            http::error(&e.clone().as_page(Key::timed_out_title))
        }
        _ => http::error(
            &e.clone()
                .with_status(StatusCode::BAD_REQUEST)
                .as_page(Key::invalid_request_title),
        ),
    }
}

/// A page that is not an error (a decision recorded).
pub fn message(title: impl Into<Text>, detail: impl Into<Text>) -> Resp {
    http::page_error(StatusCode::OK, title.into(), detail.into())
}

/// The query string's parameters.
pub fn query(req: &Req) -> Result<Params, OAuthError> {
    Params::parse(req.uri().query().unwrap_or("").as_bytes())
}

/// The form's fields, each required once.
pub async fn form_fields<const N: usize>(
    app: &App,
    req: Req,
    names: [&str; N],
) -> Result<[String; N], OAuthError> {
    let (_, params) = http::read_form(req, app.config.body_limits()).await?;
    let mut values = [const { String::new() }; N];
    for (value, name) in values.iter_mut().zip(names) {
        *value = params.required(name)?.to_owned();
    }
    Ok(values)
}
