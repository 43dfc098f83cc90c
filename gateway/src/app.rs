//! What every request handler shares: configuration, keys, the pool, and the database's settings.

use std::sync::RwLock;

use ring::hmac;
use serde_json::Value;

use crate::config::Config;
use crate::db::Db;
use crate::keys::KeySet;

pub struct App {
    pub config: Config,
    pub keys: KeySet,
    pub db: Db,
    /// `oauth.settings()` (scopes, registration switch) for metadata, refreshed in the background
    /// so an operator's `oauth.configure` reaches every gateway without a restart.
    pub settings: RwLock<Value>,
    /// Binds consent forms to their request and user. Derived from the signing key, so every
    /// gateway sharing the keys accepts every other gateway's forms.
    pub csrf_key: hmac::Key,
    /// Grants and families revoked recently, from the database's revocation feed (proxy checks).
    pub revoked: std::sync::Arc<crate::revoked::RevokedSet>,
    pub props: crate::protect::PropsCache,
    pub verified: crate::protect::VerifiedTokens,
    pub proxy: crate::protect::ProxyClient,
    /// Fetches Client ID Metadata Documents (TLS roots, per-host budget).
    pub cimd: crate::cimd::Fetcher,
    /// Wrong user codes entered per signed-in user on the device verification page.
    pub user_code_misses: crate::budget::Budget,
}

impl App {
    pub fn registration_enabled(&self) -> bool {
        self.settings.read().expect("settings lock")["registration_enabled"]
            .as_bool()
            .unwrap_or(false)
    }

    pub fn scopes_supported(&self) -> Vec<String> {
        self.settings.read().expect("settings lock")["scopes_supported"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl App {
    /// Verifies an access token this gateway issued (any audience; `validate_exp` off for
    /// revocation, where an expired token may still be named).
    pub fn verify_own_token(
        &self,
        token: &str,
        audience: Option<&str>,
        validate_exp: bool,
    ) -> Result<Value, crate::jwt::VerifyError> {
        let expect = crate::jwt::Expectations {
            issuer: &self.config.issuer,
            audience,
            algorithms: &crate::jwt::ASYMMETRIC,
            validate_exp,
        };
        crate::jwt::verify_access_token(token, &self.keys, &expect)
    }
}
