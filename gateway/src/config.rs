//! Gateway configuration: a TOML file, overridden by environment variables and flags (see main.rs).
//! Protocol settings (TTLs, scopes, registration policy) live in the database (`oauth.configure`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::keys::Alg;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub path: PathBuf,
    pub alg: Alg,
    pub kid: Option<String>,
}

/// An MCP server (or any HTTP service) the gateway protects: requests under `prefix` need a valid
/// access token for `resource` with `scopes`, and are forwarded to `upstream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix on the gateway, e.g. `/mcp`; `/` protects everything the OAuth endpoints leave.
    pub prefix: String,
    /// Base URL the remainder of the path is appended to.
    pub upstream: String,
    #[serde(default = "default_route_scopes")]
    pub scopes: Vec<String>,
    /// The RFC 8707 resource identifier tokens must be issued for; default: the route's public URL.
    pub resource: Option<String>,
}

fn default_route_scopes() -> Vec<String> {
    vec!["mcp".into()]
}

/// Client ID Metadata Documents: how `https://` client ids are fetched and cached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CimdConfig {
    pub enabled: bool,
    /// Tests only: accept documents served from loopback addresses (every other private,
    /// link-local or special-purpose address stays refused).
    pub allow_loopback: bool,
    /// A PEM bundle trusted besides the public web roots (tests: a local CA).
    pub extra_ca_file: Option<PathBuf>,
    /// When non-empty, only these client-id hosts (`host` or `*.suffix`) are fetched.
    pub allowed_hosts: Vec<String>,
    /// Client-id hosts never fetched (`host` or `*.suffix`); wins over `allowed_hosts`.
    pub denied_hosts: Vec<String>,
    pub max_document_bytes: usize,
    /// Connect, TLS, request and body together.
    #[serde(with = "seconds")]
    pub fetch_timeout: Duration,
    /// Freshness when the response names none, and the bounds a `max-age` is clamped to.
    #[serde(with = "seconds")]
    pub default_cache: Duration,
    #[serde(with = "seconds")]
    pub min_cache: Duration,
    #[serde(with = "seconds")]
    pub max_cache: Duration,
    /// How long a failed fetch or an invalid document is remembered before the next attempt.
    #[serde(with = "seconds")]
    pub negative_cache: Duration,
    /// Fetches per client-id host per minute, per gateway process.
    pub per_host_fetches_per_minute: usize,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_loopback: false,
            extra_ca_file: None,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
            max_document_bytes: 10 * 1024,
            fetch_timeout: Duration::from_secs(5),
            default_cache: Duration::from_secs(3600),
            min_cache: Duration::from_secs(300),
            max_cache: Duration::from_secs(24 * 3600),
            negative_cache: Duration::from_secs(60),
            per_host_fetches_per_minute: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The issuer identifier, byte for byte as clients will compare it (may have a path).
    pub issuer: String,
    pub listen: SocketAddr,
    pub database_url: String,
    pub pool_size: usize,
    /// How long a request waits for a database connection before answering 503.
    #[serde(with = "seconds")]
    pub pool_wait: Duration,
    /// Signing keys; the first signs, all are published and accepted.
    pub keys: Vec<KeyConfig>,
    /// `aud` of access tokens requested without a `resource`.
    pub default_audience: Option<String>,
    /// An application's own login/consent page; the browser arrives with `?request_id=…` and the
    /// application completes with `oauth.issue_code` / `oauth.deny_authorization`.
    pub login_url: Option<String>,
    /// Built-in consent page: request header carrying the authenticated user id, set by a trusted
    /// authenticating proxy in front of the gateway.
    pub trusted_user_header: Option<String>,
    /// Development only: allow `dev_user` as the user of the built-in consent page.
    pub dev_mode: bool,
    pub dev_user: Option<String>,
    /// Development/benchmark only: the consent page approves at once for `dev_user`.
    pub dev_auto_approve: bool,
    /// Origins allowed by CORS on metadata, JWKS, token, register and revoke (`*` for any).
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// Protected routes (the gateway as the MCP servers' front door).
    pub routes: Vec<RouteConfig>,
    /// How long the proxy waits for an upstream's response headers (streams may then run on).
    #[serde(with = "seconds")]
    pub upstream_timeout: Duration,
    pub cimd: CimdConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            database_url: "host=127.0.0.1 port=54315 user=oauth_gateway_login dbname=oauth_dev"
                .into(),
            pool_size: 32,
            pool_wait: Duration::from_secs(2),
            keys: Vec::new(),
            default_audience: None,
            login_url: None,
            trusted_user_header: None,
            dev_mode: false,
            dev_user: None,
            dev_auto_approve: false,
            cors_origins: vec!["*".into()],
            max_body_bytes: 64 * 1024,
            routes: Vec::new(),
            upstream_timeout: Duration::from_secs(30),
            cimd: CimdConfig::default(),
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks what can be checked before touching the network.
    pub fn validate(&self) -> Result<(), String> {
        let issuer = url::Url::parse(&self.issuer).map_err(|e| format!("issuer: {e}"))?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err("issuer must not have a query or fragment".into());
        }
        if issuer.scheme() != "https" && !self.dev_mode && !is_loopback(&issuer) {
            return Err("issuer must be https (or loopback, or dev_mode)".into());
        }
        if self.keys.is_empty() {
            return Err(
                "at least one signing key is required (oauth-gateway keys generate)".into(),
            );
        }
        if (self.dev_user.is_some() || self.dev_auto_approve) && !self.dev_mode {
            return Err("dev_user and dev_auto_approve require dev_mode".into());
        }
        if self.dev_auto_approve && self.dev_user.is_none() {
            return Err("dev_auto_approve needs dev_user".into());
        }
        for route in &self.routes {
            if !route.prefix.starts_with('/')
                || (route.prefix.len() > 1 && route.prefix.ends_with('/'))
            {
                return Err(format!(
                    "route prefix {:?} must start with / and not end with /",
                    route.prefix
                ));
            }
            let upstream = url::Url::parse(&route.upstream)
                .map_err(|e| format!("route upstream {}: {e}", route.upstream))?;
            if upstream.scheme() != "http" {
                return Err(format!(
                    "route upstream {}: only http upstreams are supported",
                    route.upstream
                ));
            }
        }
        Ok(())
    }

    /// The public origin (scheme://host[:port]) of the issuer.
    pub fn origin(&self) -> String {
        url::Url::parse(&self.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    /// The issuer's path without a trailing slash ("" for an origin issuer): endpoints live under it.
    pub fn base_path(&self) -> String {
        url::Url::parse(&self.issuer)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// `issuer` + `path`, without doubling the slash.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer.trim_end_matches('/'), path)
    }
}

fn is_loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

mod seconds {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn the_example_configuration_parses_and_validates() {
        let config = Config::from_toml(include_str!("../oauth-gateway.example.toml")).unwrap();
        config.validate().unwrap();
        assert_eq!(config.keys.len(), 2);
        assert_eq!(
            config.default_audience.as_deref(),
            Some("https://mcp.example.com/mcp")
        );
        assert_eq!(config.routes.len(), 1);
        assert_eq!(config.cimd.max_document_bytes, 10240);
        assert!(!config.cimd.allow_loopback);
    }
}
