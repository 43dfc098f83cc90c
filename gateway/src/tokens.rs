//! The access tokens this gateway issues (RFC 9068), as typed claims, and their verification for
//! the gateway's own endpoints and the guard.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::jwt::{self, Expectations, VerifyError};
use crate::keys::Keys;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    /// The grant the token stands for; its family when it came with a refresh token.
    pub grant_id: Option<Uuid>,
    pub family_id: Option<Uuid>,
    /// RFC 8693 §4.1: who acts on the subject's behalf (nested for delegation chains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
    /// RFC 9449 §6.1: the DPoP key the token is bound to; such a token is refused as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// RFC 7800 confirmation, by JWK SHA-256 thumbprint (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ')
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    /// The DPoP key thumbprint the token is bound to.
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.cnf.as_ref().map(|c| c.jkt.as_str())
    }

    /// The jti as the extension keys revoked tokens by (this gateway mints UUIDs).
    pub fn jti_uuid(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.jti).ok()
    }
}

/// Verifies access tokens signed by this deployment's keys for its issuer.
#[derive(Clone)]
pub struct TokenVerifier {
    pub issuer: String,
    pub keys: Arc<Keys>,
}

impl TokenVerifier {
    /// `audience: None` accepts any audience (the authorization server's own endpoints);
    /// `validate_exp: false` is for revocation, where an expired token may still be named.
    pub fn verify(
        &self,
        token: &str,
        audience: Option<&str>,
        validate_exp: bool,
    ) -> Result<AccessClaims, VerifyError> {
        let expect = Expectations {
            issuer: &self.issuer,
            audience,
            algorithms: &jwt::ASYMMETRIC,
            validate_exp,
        };
        let claims = jwt::verify_access_token(token, &self.keys.load(), &expect)?;
        serde_json::from_value(claims).map_err(|e| VerifyError::Invalid(format!("claims: {e}")))
    }
}
