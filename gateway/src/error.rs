//! One closed set of OAuth errors for every response the gateway makes, each with its HTTP status
//! and how it is rendered (rendering itself is `http::error`, the one place that writes headers).

use hyper::StatusCode;
use serde_json::Value;

/// The error codes of RFC 6749 §4.1.2.1/§5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8628 §3.5,
/// RFC 9101 §10.2 (a pushed request's request_uri, RFC 9126), RFC 9449 §12.2 (DPoP) and OpenID
/// Connect Core §3.1.2.6 that the gateway or the extension answers with, plus the gateway's
/// own `not_found`, `method_not_allowed` and the guard's `upstream_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    InvalidClientMetadata,
    InvalidRedirectUri,
    UnsupportedResponseType,
    InvalidToken,
    InsufficientScope,
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    LoginRequired,
    RequestNotSupported,
    InvalidRequestUri,
    InvalidDpopProof,
    UseDpopNonce,
    NotFound,
    MethodNotAllowed,
    TemporarilyUnavailable,
    ServerError,
    UpstreamUnavailable,
}

impl ErrorCode {
    const ALL: [ErrorCode; 26] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::InvalidTarget,
        Self::AccessDenied,
        Self::InvalidClientMetadata,
        Self::InvalidRedirectUri,
        Self::UnsupportedResponseType,
        Self::InvalidToken,
        Self::InsufficientScope,
        Self::AuthorizationPending,
        Self::SlowDown,
        Self::ExpiredToken,
        Self::LoginRequired,
        Self::RequestNotSupported,
        Self::InvalidRequestUri,
        Self::InvalidDpopProof,
        Self::UseDpopNonce,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::TemporarilyUnavailable,
        Self::ServerError,
        Self::UpstreamUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::LoginRequired => "login_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::InvalidRequestUri => "invalid_request_uri",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// The extension's error name, or `server_error` (logged) for a name this gateway does not know:
    /// an answer it cannot classify must not reach the client as something it is not.
    pub fn from_extension(name: &str) -> Self {
        Self::parse(name).unwrap_or_else(|| {
            tracing::error!(error = name, "the extension answered an unknown error code");
            Self::ServerError
        })
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidClient | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::AccessDenied | Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 6750 §3 `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// RFC 9728 §5.1: where the protected resource's metadata is (the guard's routes).
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
    /// How much of the error the challenge names: nothing when the request carried no token
    /// (RFC 6750 §3.1).
    pub names: ChallengeNames,
    /// RFC 9449 §7.1: a `DPoP` challenge instead, naming the proof algorithms accepted.
    pub dpop_algs: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChallengeNames {
    #[default]
    Nothing,
    Code,
    CodeAndDescription,
}

impl BearerChallenge {
    pub fn header_value(&self, error: &OAuthError) -> String {
        let mut attributes = Vec::new();
        if let Some(algs) = &self.dpop_algs {
            attributes.push(format!("algs=\"{algs}\""));
        }
        if let Some(url) = &self.resource_metadata {
            attributes.push(format!("resource_metadata=\"{url}\""));
        }
        if let Some(scope) = &self.scope {
            attributes.push(format!("scope=\"{scope}\""));
        }
        if self.names != ChallengeNames::Nothing {
            attributes.push(format!("error=\"{}\"", error.code));
        }
        if self.names == ChallengeNames::CodeAndDescription {
            attributes.push(format!("error_description=\"{}\"", error.description));
        }
        let scheme = if self.dpop_algs.is_some() {
            "DPoP"
        } else {
            "Bearer"
        };
        if attributes.is_empty() {
            scheme.to_owned()
        } else {
            format!("{scheme} {}", attributes.join(", "))
        }
    }
}

/// How an error reaches the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendering {
    /// An RFC 6749 §5.2 JSON body; `WWW-Authenticate: Basic` on a client-authentication failure
    /// when `basic_challenge` (RFC 6749 §5.2).
    Json { basic_challenge: bool },
    /// A JSON body with an RFC 6750 §3 challenge.
    Bearer(BearerChallenge),
    /// An HTML page for a browser (authorization, consent and device pages).
    Page { title: crate::views::Text },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// Set where an endpoint answers with another status than the code's own (405 pages, the
    /// guard's 504, 400 for a request that is no longer valid).
    status: Option<StatusCode>,
    pub rendering: Rendering,
    /// Seconds the client should wait before trying again (`Retry-After`): rate limits, and 1 on
    /// every 503.
    pub retry_after: Option<u64>,
    /// RFC 9449 §8: a nonce the client must put in its next DPoP proof (`DPoP-Nonce`).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            status: None,
            rendering: Rendering::Json {
                basic_challenge: false,
            },
            retry_after: None,
            dpop_nonce: None,
        }
    }

    /// A rate limit's refusal: 429 (RFC 6585 §4) with `Retry-After`, under the RFC 6749 code a
    /// client already knows to retry later, `temporarily_unavailable`.
    pub fn too_many_requests(wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut error = Self::new(
            ErrorCode::TemporarilyUnavailable,
            format!("too many requests; try again in {seconds} s"),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS);
        error.retry_after = Some(seconds.max(1));
        error
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the authorization server is temporarily unavailable",
        )
    }

    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the authorization server encountered an unexpected condition",
        )
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// Challenges with HTTP Basic when the client authenticated (or should have) that way.
    pub fn with_basic_challenge(mut self, basic: bool) -> Self {
        self.rendering = Rendering::Json {
            basic_challenge: basic,
        };
        self
    }

    pub fn with_bearer_challenge(mut self, challenge: BearerChallenge) -> Self {
        self.rendering = Rendering::Bearer(challenge);
        self
    }

    /// A page titled `title` (one of the deployment's strings, `views::Key`, or words).
    pub fn as_page(mut self, title: impl Into<crate::views::Text>) -> Self {
        self.rendering = Rendering::Page {
            title: title.into(),
        };
        self
    }

    pub fn is_unavailable_or_server_error(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }

    pub fn body(&self) -> Value {
        serde_json::json!({ "error": self.code.as_str(), "error_description": self.description })
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_from_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(
            ErrorCode::from_extension("no_such_error"),
            ErrorCode::ServerError
        );
    }

    #[test]
    fn bearer_challenges_name_what_they_are_asked_to() {
        let error = OAuthError::new(ErrorCode::InvalidToken, "expired");
        let bare = BearerChallenge::default();
        assert_eq!(bare.header_value(&error), "Bearer");
        let guard = BearerChallenge {
            resource_metadata: Some("https://rs/.well-known/oauth-protected-resource".into()),
            scope: Some("mcp".into()),
            names: ChallengeNames::CodeAndDescription,
            dpop_algs: None,
        };
        assert_eq!(
            guard.header_value(&error),
            "Bearer resource_metadata=\"https://rs/.well-known/oauth-protected-resource\", \
             scope=\"mcp\", error=\"invalid_token\", error_description=\"expired\""
        );
    }
}
