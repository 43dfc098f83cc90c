//! RFC 8414 / OpenID Connect Discovery metadata and the JWKS. What the server supports is what
//! the extension enforces (its settings); the endpoints' URLs are this gateway's.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::app::App;
use crate::db::Settings;
use crate::error::OAuthError;
use crate::http::{self, Resp};
use crate::keys::Alg;

pub fn document(app: &App, settings: &Settings) -> Value {
    let c = &app.config;
    let mut doc = json!({
        "issuer": c.issuer,
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": c.endpoint("/token"),
        "revocation_endpoint": c.endpoint("/revoke"),
        "introspection_endpoint": c.endpoint("/introspect"),
        "userinfo_endpoint": c.endpoint("/userinfo"),
        "jwks_uri": c.endpoint("/.well-known/jwks.json"),
        "scopes_supported": settings.scopes_supported,
        "response_types_supported": settings.response_types_supported,
        "response_modes_supported": settings.response_modes_supported,
        "grant_types_supported": settings.grant_types_supported,
        "device_authorization_endpoint": c.endpoint("/device_authorization"),
        "pushed_authorization_request_endpoint": c.endpoint("/par"),
        "require_pushed_authorization_requests": settings.require_pushed_authorization_requests,
        // The extension takes https client ids for documents; this gateway fetches them only while
        // its fetcher is on, and must not promise what it would refuse.
        "client_id_metadata_document_supported": settings.client_id_metadata_document_supported && c.cimd.enabled,
        "token_endpoint_auth_methods_supported": settings.token_endpoint_auth_methods_supported,
        "revocation_endpoint_auth_methods_supported": settings.revocation_endpoint_auth_methods_supported,
        "introspection_endpoint_auth_methods_supported": settings.introspection_endpoint_auth_methods_supported,
        "token_endpoint_auth_signing_alg_values_supported": settings.token_endpoint_auth_signing_alg_values_supported,
        "revocation_endpoint_auth_signing_alg_values_supported": settings.revocation_endpoint_auth_signing_alg_values_supported,
        "introspection_endpoint_auth_signing_alg_values_supported": settings.introspection_endpoint_auth_signing_alg_values_supported,
        "code_challenge_methods_supported": settings.code_challenge_methods_supported,
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": app.keys.load().algs().into_iter().map(Alg::name).collect::<Vec<_>>(),
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "preferred_username", "email", "email_verified"],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
    });
    // RP-Initiated Logout 1.0 §2.1: sessions exist when users sign in through the upstream provider.
    if app.has_upstream()
        && let Some(fields) = doc.as_object_mut()
    {
        fields.insert("end_session_endpoint".into(), json!(c.endpoint("/logout")));
    }
    // RFC 9449 §5.1: only when tokens are bound to DPoP keys.
    if settings.dpop_supported
        && let Some(fields) = doc.as_object_mut()
    {
        fields.insert(
            "dpop_signing_alg_values_supported".into(),
            json!(settings.dpop_signing_alg_values_supported),
        );
    }
    if settings.registration_enabled
        && let Some(fields) = doc.as_object_mut()
    {
        fields.insert(
            "registration_endpoint".into(),
            json!(c.endpoint("/register")),
        );
    }
    if !settings.authorization_grant_profiles_supported.is_empty()
        && let Some(fields) = doc.as_object_mut()
    {
        fields.insert(
            "authorization_grant_profiles_supported".into(),
            json!(settings.authorization_grant_profiles_supported),
        );
    }
    doc
}

pub fn serve_document(app: &App) -> Resp {
    // Until the database has answered once, what this server supports is unknown: a document
    // claiming nothing would be cached by clients for the document's lifetime.
    let Some(settings) = app.settings() else {
        return http::error(&OAuthError::unavailable());
    };
    let mut resp = http::json(StatusCode::OK, &document(app, &settings));
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        "public, max-age=300".parse().expect("literal"),
    );
    resp
}

/// The JWKS, cacheable for `jwks_max_age`: a key is published longer than that before it signs
/// (its publish lead), so a relying party's cached copy always holds the key of a new token.
pub fn serve_jwks(app: &App) -> Resp {
    let mut resp = http::json(StatusCode::OK, &app.keys.load().jwks());
    let cache = format!("public, max-age={}", app.config.jwks_max_age.as_secs());
    resp.headers_mut()
        .insert(hyper::header::CACHE_CONTROL, cache.parse().expect("digits"));
    resp
}
