//! One RFC 6749 §5.2-shaped error for every endpoint, mapped to HTTP in exactly one place.

use hyper::StatusCode;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: String,
    pub description: String,
    /// Set when the client authenticated (or should have) with HTTP Basic: RFC 6749 §5.2 asks for
    /// a `WWW-Authenticate` challenge on 401.
    pub basic_challenge: bool,
}

impl OAuthError {
    pub fn new(code: &str, description: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            description: description.into(),
            basic_challenge: false,
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub fn unavailable() -> Self {
        Self::new(
            "temporarily_unavailable",
            "the authorization server is temporarily unavailable",
        )
    }

    pub fn server_error() -> Self {
        Self::new(
            "server_error",
            "the authorization server encountered an unexpected condition",
        )
    }

    /// The extension's expected-failure object `{"error", "error_description"}`, if `value` is one.
    pub fn from_sql_result(value: &Value) -> Option<Self> {
        let code = value.get("error")?.as_str()?;
        let description = value
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        Some(Self::new(code, description))
    }

    /// The OAuth error behind an `OAxxx` SQLSTATE raised by an application-side function.
    pub fn from_sqlstate(sqlstate: &str, message: &str) -> Option<Self> {
        let code = match sqlstate {
            "OA400" => "invalid_request",
            "OA401" => "invalid_client",
            "OA402" => "invalid_grant",
            "OA403" => "unauthorized_client",
            "OA404" => "unsupported_grant_type",
            "OA405" => "invalid_scope",
            "OA406" => "invalid_target",
            "OA407" => "access_denied",
            "OA408" => "invalid_client_metadata",
            "OA409" => "invalid_redirect_uri",
            "OA410" => "unsupported_response_type",
            "OA411" => "not_found",
            "OA412" => "invalid_token",
            _ => return None,
        };
        Some(Self::new(code, message))
    }

    pub fn status(&self) -> StatusCode {
        match self.code.as_str() {
            "invalid_client" | "invalid_token" => StatusCode::UNAUTHORIZED,
            "access_denied" | "insufficient_scope" => StatusCode::FORBIDDEN,
            "not_found" => StatusCode::NOT_FOUND,
            "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn body(&self) -> Value {
        serde_json::json!({ "error": self.code, "error_description": self.description })
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}
