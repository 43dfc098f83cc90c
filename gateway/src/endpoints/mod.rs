//! Routing: which handler answers which path, under an issuer that may have a path.

mod apps;
mod authorize;
mod consent;
mod device;
mod introspect;
pub mod metadata;
mod pages;
mod par;
mod register;
mod revoke;
mod sessions;
mod signin;
mod token;
mod userinfo;

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::json;

pub use device::USER_CODE_MISS_WINDOW;

use crate::app::App;
use crate::config::Limited;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Req, Resp};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Metadata,
    Jwks,
    Authorize,
    PushedAuthorization,
    Consent,
    Token,
    Register,
    RegistrationConfiguration,
    DeviceAuthorization,
    Device,
    Revoke,
    Introspect,
    Userinfo,
    Login,
    LoginCallback,
    Logout,
    ConnectedApps,
    Sessions,
}

impl Route {
    /// The route's name in metrics: bounded, unlike paths.
    fn name(self) -> &'static str {
        match self {
            Route::Metadata => "metadata",
            Route::Jwks => "jwks",
            Route::Authorize => "authorize",
            Route::PushedAuthorization => "par",
            Route::Consent => "consent",
            Route::Token => "token",
            Route::Register => "register",
            Route::RegistrationConfiguration => "registration_configuration",
            Route::DeviceAuthorization => "device_authorization",
            Route::Device => "device",
            Route::Revoke => "revoke",
            Route::Introspect => "introspect",
            Route::Userinfo => "userinfo",
            Route::Login => "login",
            Route::LoginCallback => "login_callback",
            Route::Logout => "logout",
            Route::ConnectedApps => "connected_apps",
            Route::Sessions => "sessions",
        }
    }

    /// The route's `[rate_limits]` table, if it is limited.
    fn limited(self) -> Option<Limited> {
        Some(match self {
            Route::Token => Limited::Token,
            Route::Authorize | Route::PushedAuthorization => Limited::Authorize,
            Route::Register => Limited::Register,
            Route::DeviceAuthorization => Limited::DeviceAuthorization,
            Route::Introspect => Limited::Introspect,
            Route::Revoke => Limited::Revoke,
            Route::Consent => Limited::Consent,
            Route::Device => Limited::Device,
            _ => return None,
        })
    }

    /// Browser-based MCP clients call these cross-origin; authorize and consent are navigations
    /// and must stay same-origin.
    fn allows_cors(self) -> bool {
        matches!(
            self,
            Route::Metadata
                | Route::Jwks
                | Route::Token
                | Route::PushedAuthorization
                | Route::Register
                | Route::RegistrationConfiguration
                | Route::Revoke
        )
    }
}

fn route(app: &App, path: &str) -> Option<Route> {
    let base = app.config.base_path();
    // RFC 8414 §3.1 path insertion, plus OIDC's `<issuer>/.well-known/openid-configuration`.
    if path == format!("/.well-known/oauth-authorization-server{base}")
        || path == format!("/.well-known/openid-configuration{base}")
        || path == format!("{base}/.well-known/openid-configuration")
        || path == format!("{base}/.well-known/oauth-authorization-server")
    {
        return Some(Route::Metadata);
    }
    // mcp-remote reads the metadata at the origin's root and registers at `/register` there,
    // whatever the issuer's path and the metadata's registration_endpoint say. Both are served
    // there too: the same document and the same endpoint, so nothing is offered that the issuer's
    // own URLs do not offer. A client that checks the document's issuer against the URL it built
    // (RFC 8414 §3.3) builds the path-inserted URL, which still answers.
    if !base.is_empty() {
        match path {
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
                return Some(Route::Metadata);
            }
            "/register" if app.registration_enabled() => return Some(Route::Register),
            _ => {}
        }
    }
    let rest = path.strip_prefix(base.as_str())?;
    Some(match rest {
        "/.well-known/jwks.json" => Route::Jwks,
        "/authorize" => Route::Authorize,
        "/par" => Route::PushedAuthorization,
        "/consent" => Route::Consent,
        "/token" => Route::Token,
        "/register" if app.registration_enabled() => Route::Register,
        "/device_authorization" => Route::DeviceAuthorization,
        "/device" => Route::Device,
        "/revoke" => Route::Revoke,
        // Registered clients stay manageable while new registrations are switched off.
        other
            if other
                .strip_prefix("/register/")
                .is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            Route::RegistrationConfiguration
        }
        "/introspect" => Route::Introspect,
        "/userinfo" => Route::Userinfo,
        "/login" if app.has_upstream() => Route::Login,
        "/login/callback" if app.has_upstream() => Route::LoginCallback,
        "/logout" if app.has_upstream() => Route::Logout,
        "/account/apps" => Route::ConnectedApps,
        "/account/sessions" if app.has_upstream() => Route::Sessions,
        _ => return None,
    })
}

fn allowed_origin(app: &App, req: &Req) -> Option<HeaderValue> {
    let origin = req.headers().get(header::ORIGIN)?;
    let origins = &app.config.cors_origins;
    if origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let text = origin.to_str().ok()?;
    origins.iter().any(|o| o == text).then(|| origin.clone())
}

/// The answer to a CORS preflight; without an allowed origin, one the browser will refuse.
fn preflight(cors: Option<HeaderValue>) -> Resp {
    let mut resp = http::empty(StatusCode::NO_CONTENT);
    if let Some(origin) = cors {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, MCP-Protocol-Version"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// Every request of the public listener: measured, and rate-limited where its route is
/// (`ops::observe`), then answered.
pub async fn dispatch(app: &std::sync::Arc<App>, req: Req) -> Resp {
    let path = req.uri().path();
    if path == "/readyz" {
        return crate::ops::health::readyz(app).await;
    }
    let (endpoint, limited) = match route(app, path) {
        Some(route) => (route.name(), route.limited()),
        None if path == "/healthz" => ("healthz", None),
        None if app.guard.serves_metadata(path) => ("protected_resource_metadata", None),
        None if app.guard.guards(path) => ("guard", None),
        None => ("not_found", None),
    };
    crate::ops::observe(app, req, endpoint, limited, |req| respond(app, req)).await
}

async fn respond(app: &App, req: Req) -> Resp {
    // Liveness for load balancers and process supervisors: answers without touching the database.
    if req.uri().path() == "/healthz" {
        return http::json(StatusCode::OK, &json!({"status": "ok"}));
    }
    let Some(route) = route(app, req.uri().path()) else {
        return match app.guard.respond(req).await {
            Some(resp) => resp,
            None => http::error(&OAuthError::new(ErrorCode::NotFound, "no such endpoint")),
        };
    };
    let cors = if route.allows_cors() {
        allowed_origin(app, &req)
    } else {
        None
    };
    if req.method() == Method::OPTIONS && route.allows_cors() {
        return preflight(cors);
    }
    let mut resp = match route {
        Route::Metadata | Route::Jwks
            if req.method() != Method::GET && req.method() != Method::HEAD =>
        {
            http::error(
                &OAuthError::invalid_request("use GET").with_status(StatusCode::METHOD_NOT_ALLOWED),
            )
        }
        Route::Metadata => metadata::serve_document(app),
        Route::Jwks => metadata::serve_jwks(app),
        Route::Authorize => authorize::handle(app, req).await,
        Route::PushedAuthorization => par::handle(app, req).await,
        Route::Consent => consent::handle(app, req).await,
        Route::Token => token::handle(app, req).await,
        Route::Register => register::handle(app, req).await,
        Route::RegistrationConfiguration => {
            let path = req.uri().path().to_owned();
            let client_id = path.rsplit('/').next().unwrap_or_default();
            register::configure(app, req, client_id).await
        }
        Route::DeviceAuthorization => device::authorization(app, req).await,
        Route::Device => device::verification(app, req).await,
        Route::Revoke => revoke::handle(app, req).await,
        Route::Introspect => introspect::handle(app, req).await,
        Route::Userinfo => userinfo::handle(app, req).await,
        Route::Login => signin::login(app, req).await,
        Route::LoginCallback => signin::callback(app, req).await,
        Route::Logout => signin::logout(app, req).await,
        Route::ConnectedApps => apps::handle(app, req).await,
        Route::Sessions => sessions::handle(app, req).await,
    };
    // A failure page described without the deployment's texts gets them now.
    if let Some(pending) = resp.extensions_mut().remove::<crate::views::Pending>() {
        let page = app.views.message(&pending.title, &pending.detail);
        if let Ok(csp) = HeaderValue::from_str(&page.csp) {
            resp.headers_mut().insert("content-security-policy", csp);
        }
        *resp.body_mut() = http::full(page.body);
    }
    if let Some(origin) = cors {
        resp.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        resp.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}
