//! What the browser pages share (consent, device verification): the signed-in user, the CSRF
//! token that binds a form to one decision and one user, the approval page, and the failure pages.
//!
//! The user is whoever a trusted authenticating proxy names in `trusted_user_header`, or in
//! development the configured `dev_user`. Pages can never be framed (clickjacking; `http::html`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::StatusCode;
use ring::hmac;

use crate::app::App;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Params, PeerAddr, Req, Resp, escape_html};

/// The signed-in user. The user header counts only from a trusted proxy's address, and only when
/// it came as one line: behind a proxy that appends its line, a repeat means the client sent one
/// of its own, and which is whose cannot be told. A header that does not count signs the request
/// out (it is not passed over for `dev_user`).
pub async fn current_user(app: &App, req: &Req) -> Option<String> {
    // Signed in through the upstream provider: the browser's live session.
    if app.upstream.is_some()
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
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Consent => "consent",
            Purpose::Device => "device",
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

pub fn sign_in_required() -> Resp {
    http::error(
        &OAuthError::new(
            ErrorCode::LoginRequired,
            "No authenticated user reached this page.",
        )
        .with_status(StatusCode::UNAUTHORIZED)
        .as_page("Sign-in required"),
    )
}

/// A form that was not issued to this user for this decision.
pub fn form_not_accepted(what: &str) -> Resp {
    http::error(
        &OAuthError::new(
            ErrorCode::AccessDenied,
            format!("The form was not issued to you for this {what}."),
        )
        .as_page("Request not accepted"),
    )
}

pub fn method_not_allowed() -> Resp {
    http::error(
        &OAuthError::new(ErrorCode::MethodNotAllowed, "Use GET or POST.")
            .as_page("Method not allowed"),
    )
}

/// The database is out of reach or failed: nothing the user can fix.
pub fn unavailable(e: &OAuthError) -> Resp {
    http::error(&e.clone().as_page("Temporarily unavailable"))
}

/// A failed step of a browser page: expired requests, bad input, an unavailable database.
pub fn failure(e: &OAuthError) -> Resp {
    match e.code {
        ErrorCode::NotFound => http::error(
            &OAuthError::new(
                ErrorCode::NotFound,
                "It has expired or was already completed. Go back to the application and start again.",
            )
            .with_status(StatusCode::BAD_REQUEST)
            .as_page("This sign-in request is no longer valid"),
        ),
        ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError => unavailable(e),
        _ if e.status() == StatusCode::REQUEST_TIMEOUT => {
            http::error(&e.clone().as_page("Request timed out"))
        }
        _ => http::error(
            &e.clone()
                .with_status(StatusCode::BAD_REQUEST)
                .as_page("Invalid request"),
        ),
    }
}

/// A page that is not an error (a decision recorded).
pub fn message(title: &str, detail: &str) -> Resp {
    http::error_page(StatusCode::OK, title, detail)
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

/// Where the code goes once the user decided.
pub enum Destination {
    /// The host of an http(s) redirect URI.
    Host(String),
    /// A private-use URI scheme (RFC 8252 §7.1): whichever program on the device claimed it. What
    /// follows `scheme://` is the application's own choice and names no one (§8.6).
    Scheme(String),
}

/// What the user is asked to approve, on the consent page and the device verification page.
pub struct Approval {
    pub client_name: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub loopback_only: bool,
    /// Where the browser goes after the decision (none for a device).
    pub destination: Option<Destination>,
    pub action: String,
    /// The form field naming what is decided (request id or user code).
    pub hidden: (&'static str, String),
    pub csrf: String,
}

impl Approval {
    pub fn render(&self, user: &str) -> String {
        // A URL client_id (Client ID Metadata Document) is only as trustworthy as its host: show it
        // first, since the name is whatever the document claims.
        let identity = match self
            .client_id
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next())
        {
            Some(host) => format!(
                "<p>This application is published by <strong style=\"font-size:1.3em\">{}</strong> \
                 (client <code>{}</code>).</p>",
                escape_html(host),
                escape_html(&self.client_id)
            ),
            None => format!(
                "<p>Client <code>{}</code>.</p>",
                escape_html(&self.client_id)
            ),
        };
        let caution = |why: &str| {
            format!(
                "<p style=\"border:2px solid #b00;padding:.5em\"><strong>Caution:</strong> {why} \
                 Allow only if you have just started it yourself.</p>"
            )
        };
        let warning = match &self.destination {
            _ if self.loopback_only => caution(
                "this application returns only to addresses on your own computer (localhost), so any \
                 program running here could present itself under this name.",
            ),
            Some(Destination::Scheme(scheme)) => caution(&format!(
                "this application returns to <strong>{}:</strong> links, which any program on this \
                 device can claim, so it could present itself under this name.",
                escape_html(scheme)
            )),
            _ => String::new(),
        };
        let destination = match &self.destination {
            Some(Destination::Host(host)) => format!(
                "<p>After you decide you will be sent to <strong>{}</strong>.</p>",
                escape_html(host)
            ),
            Some(Destination::Scheme(scheme)) => format!(
                "<p>After you decide you will be sent to the program that opens \
                 <strong>{}:</strong> links on this device.</p>",
                escape_html(scheme)
            ),
            None => String::new(),
        };
        let resource_line = self
            .resource
            .as_ref()
            .map(|r| format!("<p>for the service <strong>{}</strong></p>", escape_html(r)))
            .unwrap_or_default();
        let scope_items: String = self
            .scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape_html(s)))
            .collect();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Allow access?</title></head>\
             <body style=\"font-family:sans-serif;max-width:36em;margin:3em auto\">\
             <h1>Allow <em>{name}</em> to access your account?</h1>\
             {identity}{warning}<p>Signed in as <strong>{user}</strong>.</p>{destination}\
             {resource_line}<p>It asks for:</p><ul>{scope_items}</ul>\
             <form method=\"post\" action=\"{action}\">\
             <input type=\"hidden\" name=\"{field}\" value=\"{value}\">\
             <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button> \
             <button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
             </form></body></html>",
            name = escape_html(&self.client_name),
            user = escape_html(user),
            action = escape_html(&self.action),
            field = self.hidden.0,
            value = escape_html(&self.hidden.1),
            csrf = escape_html(&self.csrf),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Approval, Destination};

    fn approval(client_id: &str, loopback_only: bool) -> Approval {
        Approval {
            client_name: "Claude <script>".into(),
            client_id: client_id.into(),
            scopes: vec!["mcp".into()],
            resource: Some("https://mcp.example.com/mcp".into()),
            loopback_only,
            destination: Some(Destination::Host("app.example".into())),
            action: "https://auth.example/consent".into(),
            hidden: ("request_id", "r1".into()),
            csrf: "c1".into(),
        }
    }

    #[test]
    fn a_metadata_document_client_is_introduced_by_its_host() {
        let page = approval("https://claude.ai/oauth/client.json", false).render("alice");
        assert!(page.contains("published by <strong style=\"font-size:1.3em\">claude.ai</strong>"));
        assert!(!page.contains("Caution"));
        assert!(
            !page.contains("<script>"),
            "client-supplied names are escaped"
        );
    }

    #[test]
    fn a_loopback_only_client_carries_a_warning() {
        let page = approval("abc123", true).render("alice");
        assert!(page.contains("Caution"));
        assert!(page.contains("Client <code>abc123</code>"));
        assert!(!page.contains("published by"));
    }

    #[test]
    fn a_private_use_scheme_is_named_by_its_scheme_with_a_warning() {
        let page = Approval {
            destination: Some(Destination::Scheme("x-evil".into())),
            ..approval("abc123", false)
        }
        .render("alice");
        assert!(page.contains("<strong>x-evil:</strong> links"), "{page}");
        assert!(page.contains("Caution"));
        assert!(!page.contains("app.example"));
    }
}
