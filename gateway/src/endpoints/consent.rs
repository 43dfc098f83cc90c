//! The built-in login/consent step, for deployments without their own page (`login_url`).
//!
//! The user is whoever a trusted authenticating proxy names in `trusted_user_header`, or in
//! development the configured `dev_user`. The form is bound to the request and the user by an HMAC
//! token (CSRF), and the page can never be framed (clickjacking).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use ring::hmac;

use crate::app::App;
use crate::error::OAuthError;
use crate::http::{self, Params, Req, Resp, escape_html};

pub(super) fn current_user(app: &App, headers: &HeaderMap) -> Option<String> {
    if let Some(name) = &app.config.trusted_user_header
        && let Some(user) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
    {
        let user = user.trim();
        if !user.is_empty() && user.len() <= 255 {
            return Some(user.to_owned());
        }
    }
    if app.config.dev_mode {
        app.config.dev_user.clone()
    } else {
        None
    }
}

/// A form token binding one decision (`purpose`: which page; `subject`: request id or user code)
/// to one user.
pub(super) fn csrf_token(app: &App, purpose: &str, subject: &str, user: &str) -> String {
    let tag = hmac::sign(
        &app.csrf_key,
        format!("{purpose}\0{subject}\0{user}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

pub(super) fn csrf_valid(
    app: &App,
    purpose: &str,
    subject: &str,
    user: &str,
    presented: &str,
) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else {
        return false;
    };
    hmac::verify(
        &app.csrf_key,
        format!("{purpose}\0{subject}\0{user}").as_bytes(),
        &tag,
    )
    .is_ok()
}

pub(super) fn sign_in_required() -> Resp {
    http::error_page(
        StatusCode::UNAUTHORIZED,
        "Sign-in required",
        "No authenticated user reached this page.",
    )
}

pub(super) fn failure_page(e: &OAuthError) -> Resp {
    match e.code.as_str() {
        "not_found" => http::error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in request is no longer valid",
            "It has expired or was already completed. Go back to the application and start again.",
        ),
        "temporarily_unavailable" | "server_error" => super::authorize::unavailable_page(e),
        _ => http::error_page(StatusCode::BAD_REQUEST, "Invalid request", &e.description),
    }
}

async fn issue_code(app: &App, request_id: &str, user: &str) -> Result<String, OAuthError> {
    let rows = app
        .db
        .query("SELECT oauth.issue_code($1, $2)", &[&request_id, &user])
        .await?;
    rows.first()
        .and_then(|r| r.try_get::<_, String>(0).ok())
        .ok_or_else(OAuthError::server_error)
}

pub async fn handle(app: &App, req: Req) -> Resp {
    let Some(user) = current_user(app, req.headers()) else {
        return sign_in_required();
    };
    match *req.method() {
        Method::GET => show(app, req, &user).await,
        Method::POST => decide(app, req, &user).await,
        _ => http::error_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "Use GET or POST.",
        ),
    }
}

async fn show(app: &App, req: Req, user: &str) -> Resp {
    let params = match Params::parse(req.uri().query().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return failure_page(&e),
    };
    let request_id = match params.required("request_id") {
        Ok(id) => id.to_owned(),
        Err(e) => return failure_page(&e),
    };
    if app.config.dev_auto_approve {
        return match issue_code(app, &request_id, user).await {
            Ok(location) => http::redirect(&location, StatusCode::FOUND),
            Err(e) => failure_page(&e),
        };
    }
    let rows = match app
        .db
        .query(
            "SELECT client_name, client_id, redirect_host, redirect_uri, scopes, resource, loopback_only \
             FROM oauth.get_authorization_request($1)",
            &[&request_id],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return failure_page(&e),
    };
    let Some(row) = rows.first() else {
        return failure_page(&OAuthError::new("not_found", "no such request"));
    };
    let redirect_host: Option<String> = row.get(2);
    let redirect_uri: String = row.get(3);
    let destination = redirect_host.unwrap_or_else(|| {
        redirect_uri
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let page = Approval {
        client_name: row.get(0),
        client_id: row.get(1),
        scopes: row.get(4),
        resource: row.get(5),
        loopback_only: row.get(6),
        destination: Some(destination),
        action: app.config.endpoint("/consent"),
        hidden: ("request_id", request_id.clone()),
        csrf: csrf_token(app, "consent", &request_id, user),
    };
    http::html(StatusCode::OK, page.render(user))
}

/// What the user is asked to approve, on the consent page and the device verification page.
pub(super) struct Approval {
    pub client_name: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub loopback_only: bool,
    /// Where the browser goes after the decision (none for a device).
    pub destination: Option<String>,
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
        let warning = if self.loopback_only {
            "<p style=\"border:2px solid #b00;padding:.5em\"><strong>Caution:</strong> this application \
             returns only to addresses on your own computer (localhost), so any program running here \
             could present itself under this name. Allow only if you have just started it yourself.</p>"
        } else {
            ""
        };
        let destination = self
            .destination
            .as_ref()
            .map(|d| {
                format!(
                    "<p>After you decide you will be sent to <strong>{}</strong>.</p>",
                    escape_html(d)
                )
            })
            .unwrap_or_default();
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

async fn decide(app: &App, req: Req, user: &str) -> Resp {
    let params = match http::read_form(req, app.config.max_body_bytes).await {
        Ok((_, p)) => p,
        Err(e) => return failure_page(&e),
    };
    let fields = (|| {
        Ok::<_, OAuthError>((
            params.required("request_id")?,
            params.required("csrf_token")?,
            params.required("decision")?,
        ))
    })();
    let (request_id, csrf, decision) = match fields {
        Ok(f) => f,
        Err(e) => return failure_page(&e),
    };
    if !csrf_valid(app, "consent", request_id, user, csrf) {
        return http::error_page(
            StatusCode::FORBIDDEN,
            "Request not accepted",
            "The form was not issued to you for this request.",
        );
    }
    let outcome = match decision {
        "approve" => issue_code(app, request_id, user).await,
        "deny" => app
            .db
            .query("SELECT oauth.deny_authorization($1)", &[&request_id])
            .await
            .and_then(|rows| {
                rows.first()
                    .and_then(|r| r.try_get::<_, String>(0).ok())
                    .ok_or_else(OAuthError::server_error)
            }),
        _ => Err(OAuthError::invalid_request(
            "decision must be approve or deny",
        )),
    };
    match outcome {
        Ok(location) => http::redirect(&location, StatusCode::SEE_OTHER),
        Err(e) => failure_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::Approval;

    fn approval(client_id: &str, loopback_only: bool) -> Approval {
        Approval {
            client_name: "Claude <script>".into(),
            client_id: client_id.into(),
            scopes: vec!["mcp".into()],
            resource: Some("https://mcp.example.com/mcp".into()),
            loopback_only,
            destination: Some("app.example".into()),
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
}
