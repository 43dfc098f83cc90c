//! What every request handler shares: configuration, keys, the database contract, the database's
//! settings, and the parts built from them (the guard, the metadata-document fetcher).

use std::sync::{Arc, RwLock};

use ring::hmac;

use crate::config::Config;
use crate::db::{Db, Settings};
use crate::keys::Keys;
use crate::tokens::TokenVerifier;

pub struct App {
    pub config: Config,
    /// The signing keys in use (replaced whole when shared keys rotate: take them once per use).
    pub keys: Arc<Keys>,
    /// Opens the signing keys kept in the database; `None` with key files.
    pub kek: Option<Arc<crate::keyring::Kek>>,
    pub db: Db,
    /// Refresh requests, coalesced into batches under load (`db::batch`).
    pub refreshes: crate::db::RefreshBatcher,
    /// Code exchanges, coalesced the same way.
    pub exchanges: crate::db::ExchangeBatcher,
    /// The extension's settings (scopes, registration switch, capabilities) for metadata, refreshed in
    /// the background so an operator's `oauth.configure` reaches every gateway without a restart;
    /// `None` until the database has answered once.
    pub settings: RwLock<Option<Arc<Settings>>>,
    /// Binds consent forms to their request and user. Derived from `csrf_secret` or the signing
    /// key's bytes (never a signature: ECDSA's are randomized), so every gateway sharing the keys
    /// accepts every other gateway's forms.
    pub csrf_key: hmac::Key,
    /// DPoP proofs: the replay cache and the nonces (shared with the guard).
    pub dpop: Arc<crate::dpop::Dpop>,
    /// Peers allowed to name the user in `trusted_user_header`.
    pub trusted_proxies: Vec<crate::config::IpRange>,
    /// Verifies the access tokens this deployment issued (token exchange, revocation,
    /// introspection, userinfo).
    pub tokens: TokenVerifier,
    /// The protected routes' reverse proxy.
    pub guard: crate::guard::Guard,
    /// Fetches Client ID Metadata Documents (TLS roots, per-host budget).
    pub cimd: crate::cimd::Fetcher,
    /// Fetches private_key_jwt clients' key sets (through `cimd`).
    pub client_keys: crate::client_keys::ClientKeys,
    /// The pages, with the deployment's branding, texts and scope descriptions.
    pub views: Arc<crate::views::Views>,
    /// Sign-in through upstream identity providers (`[upstream]`, `[upstreams.*]`), in the order
    /// the choice page lists them.
    pub upstreams: Vec<Arc<crate::upstream::Provider>>,
    /// Wrong user codes entered per signed-in user on the device verification page.
    pub user_code_misses: crate::budget::Budget,
    /// Requests per client and per address (`[rate_limits]`).
    pub limiter: crate::ops::limits::Limiter,
    pub metrics: crate::ops::metrics::Metrics,
    /// The readiness probe's recent database check.
    pub probe: crate::ops::health::Probe,
}

impl App {
    pub fn settings(&self) -> Option<Arc<Settings>> {
        self.settings.read().expect("settings lock").clone()
    }

    /// Whether people sign in through an upstream provider (and so hold browser sessions).
    pub fn has_upstream(&self) -> bool {
        !self.upstreams.is_empty()
    }

    /// The provider configured under `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<crate::upstream::Provider>> {
        self.upstreams.iter().find(|p| p.name == name)
    }

    pub fn registration_enabled(&self) -> bool {
        self.settings().is_some_and(|s| s.registration_enabled)
    }
}
