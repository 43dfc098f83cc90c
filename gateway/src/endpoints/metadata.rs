//! RFC 8414 / OpenID Connect Discovery metadata and the JWKS.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::app::App;
use crate::http::{self, Resp};

pub fn document(app: &App) -> Value {
    let c = &app.config;
    let auth_methods = json!(["client_secret_basic", "client_secret_post", "none"]);
    let mut doc = json!({
        "issuer": c.issuer,
        "authorization_endpoint": c.endpoint("/authorize"),
        "token_endpoint": c.endpoint("/token"),
        "revocation_endpoint": c.endpoint("/revoke"),
        "introspection_endpoint": c.endpoint("/introspect"),
        "userinfo_endpoint": c.endpoint("/userinfo"),
        "jwks_uri": c.endpoint("/.well-known/jwks.json"),
        "scopes_supported": app.scopes_supported(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": super::token::GRANT_TYPES,
        "device_authorization_endpoint": c.endpoint("/device_authorization"),
        "client_id_metadata_document_supported": true,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [app.keys.signing().alg.name()],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "name", "preferred_username", "email", "email_verified"],
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "prompt_values_supported": ["login", "consent", "select_account"],
    });
    if app.registration_enabled() {
        doc["registration_endpoint"] = json!(c.endpoint("/register"));
    }
    doc
}

pub fn serve_document(app: &App) -> Resp {
    let mut resp = http::json(StatusCode::OK, &document(app));
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        "public, max-age=300".parse().expect("literal"),
    );
    resp
}

pub fn serve_jwks(app: &App) -> Resp {
    let mut resp = http::json(StatusCode::OK, &app.keys.jwks());
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        "public, max-age=300".parse().expect("literal"),
    );
    resp
}
