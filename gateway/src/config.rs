//! Gateway configuration: a TOML file, overridden by environment variables and flags (see main.rs).
//! Protocol settings (TTLs, scopes, registration policy) live in the database (`oauth.configure`).

use std::net::{IpAddr, SocketAddr};
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
    /// Scopes some MCP requests need beyond `scopes`, by JSON-RPC method and tool (or prompt,
    /// or resource) name.
    #[serde(default)]
    pub tool_scopes: Vec<ToolScope>,
    /// The header carrying the signed-in user's current access token at the upstream identity
    /// provider (`store_tokens`), e.g. `X-Upstream-Access-Token`; a client's own copy is removed.
    #[serde(default)]
    pub upstream_token_header: Option<String>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            prefix: "/mcp".into(),
            upstream: String::new(),
            scopes: default_route_scopes(),
            resource: None,
            tool_scopes: Vec::new(),
            upstream_token_header: None,
        }
    }
}

/// `{ method = "tools/call", name = "delete_*", scopes = ["mcp:write"] }`: a request whose
/// JSON-RPC method matches `method` and whose `params.name` (or `params.uri`) matches `name` (any
/// name when omitted) needs `scopes` too. `*` in a pattern matches any run of characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolScope {
    pub method: String,
    pub name: Option<String>,
    pub scopes: Vec<String>,
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
    /// The revocation feed's own connection (it LISTENs, which a pooler in transaction mode
    /// cannot carry): a direct connection string to the database; unset, `database_url`.
    pub feed_database_url: Option<String>,
    /// Named prepared statements, prepared once per connection (the fastest). Off behind a pooler
    /// in transaction mode without prepared-statement support (PgBouncer before 1.21, or without
    /// `max_prepared_statements`): every call is then one unnamed statement.
    pub statement_cache: bool,
    pub pool_size: usize,
    /// How long a request waits for a database connection before answering 503.
    #[serde(with = "seconds")]
    pub pool_wait: Duration,
    /// Signing keys from files; the first signs, all are published and accepted. Or, instead,
    /// `key_encryption_key`: the keys live in the database, shared by every gateway.
    pub keys: Vec<KeyConfig>,
    /// The key (32 bytes, base64; `oauth-gateway keys kek`) that seals the signing keys kept in
    /// the database (`oauth.signing_keys`), held by every gateway of the deployment and nowhere
    /// else. With it, keys rotate with `oauth-gateway keys add|promote|drop`.
    pub key_encryption_key: Option<String>,
    /// How often a gateway reloads the shared signing keys: a promoted key signs everywhere within
    /// this long.
    #[serde(with = "seconds")]
    pub keys_reload_interval: Duration,
    /// How long relying parties may cache the JWKS (`Cache-Control: max-age`). A new key's
    /// publish lead must be longer than this plus `keys_reload_interval`.
    #[serde(with = "seconds")]
    pub jwks_max_age: Duration,
    /// `aud` of access tokens requested without a `resource`.
    pub default_audience: Option<String>,
    /// An application's own login/consent page; the browser arrives with `?request_id=…` and the
    /// application completes with `oauth.issue_code` / `oauth.deny_authorization`.
    pub login_url: Option<String>,
    /// Built-in consent page: request header carrying the authenticated user id, set by a trusted
    /// authenticating proxy in front of the gateway.
    pub trusted_user_header: Option<String>,
    /// Addresses (`ip` or `ip/prefix`) of the proxies allowed to set `trusted_user_header`; from
    /// any other peer the header is ignored. Unset: loopback only (a proxy on the same host).
    pub trusted_proxies: Option<Vec<String>>,
    /// Keys the consent and device forms' CSRF tokens; unset, it is derived from the signing key,
    /// so gateways sharing keys accept each other's forms either way.
    pub csrf_secret: Option<String>,
    /// Development only: allow `dev_user` as the user of the built-in consent page.
    pub dev_mode: bool,
    pub dev_user: Option<String>,
    /// Development/benchmark only: the consent page approves at once for `dev_user`.
    pub dev_auto_approve: bool,
    /// Origins allowed by CORS on metadata, JWKS, token, register and revoke (`*` for any).
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    /// How long a client may take to send a request body once its headers arrived (408 after).
    #[serde(with = "seconds")]
    pub body_read_timeout: Duration,
    /// Connections served at once; beyond it a connection is answered 503 and closed.
    pub max_connections: usize,
    /// Every statement of the gateway's database connections is cancelled after this long (503),
    /// set as a startup option; zero sets none, leaving the role's (a pooler refuses the option).
    #[serde(with = "seconds")]
    pub statement_timeout: Duration,
    /// Protected routes (the gateway as the MCP servers' front door).
    pub routes: Vec<RouteConfig>,
    /// Scopes that include others, for the guard: `{ "mcp:admin" = ["mcp:write"], "mcp:write" =
    /// ["mcp:read"] }` lets a token with `mcp:admin` through where `mcp:read` is needed.
    pub scope_hierarchy: std::collections::BTreeMap<String, Vec<String>>,
    /// How long the proxy waits for an upstream's response headers (streams may then run on).
    #[serde(with = "seconds")]
    pub upstream_timeout: Duration,
    pub cimd: CimdConfig,
    /// Sign-in through an upstream identity provider (OpenID Connect or plain OAuth 2.0): the
    /// pages' users are whoever it authenticated, held in browser sessions (`[upstream]`).
    pub upstream: Option<crate::upstream::UpstreamConfig>,
    /// Several providers to choose from at sign-in (`[upstreams.<name>]`), besides or instead of
    /// `[upstream]` (which is named `default`).
    pub upstreams: std::collections::BTreeMap<String, crate::upstream::UpstreamConfig>,
    /// Skip the consent page when the signed-in user's live grant for the client already holds
    /// the requested scopes and resource (never for loopback or private-use-scheme clients).
    pub remember_consent: bool,
    /// RFC 9449 §8: DPoP proofs must carry a nonce this server handed out (`DPoP-Nonce`), at the
    /// token endpoint and the guard, so a proof made ahead of time is worthless. DPoP itself is
    /// the extension's setting (`oauth.configure(dpop_supported => true)`).
    pub dpop_require_nonce: bool,
    /// Concurrent refreshes coalesced into one database call (`db::batch`).
    pub refresh_batching: crate::db::RefreshBatching,
    /// The audit feed's webhook (`ops::webhook`); off without a url.
    pub audit_webhook: crate::ops::webhook::WebhookConfig,
    /// The pages' name, colour and logo.
    pub branding: crate::views::Branding,
    /// The pages' texts, for a deployment to translate or reword (`views::Strings`).
    pub strings: crate::views::Strings,
    /// What each scope lets an application do, in the user's words, on consent and connected-apps
    /// pages (the built-in scopes have defaults).
    pub scope_descriptions: std::collections::BTreeMap<String, String>,
    /// Where Prometheus metrics (`/metrics`), `/healthz` and `/readyz` are served, apart from the
    /// public listener; off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// `text` (the default) or `json`: one JSON object per line.
    pub log_format: LogFormat,
    pub rate_limits: RateLimits,
    /// How often a gateway runs `oauth.cleanup` (one gateway at a time, by an advisory lock);
    /// zero: never (an administrator's cron does it).
    #[serde(with = "seconds")]
    pub cleanup_interval: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Requests per minute allowed on one endpoint per client (`client_id` as sent, before
/// authentication) and per source address; unset, the endpoint's default (`RateLimits::resolve`);
/// 0 switches a limit off. Each gateway process counts for itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointLimits {
    pub per_client: Option<u32>,
    pub per_address: Option<u32>,
}

/// The rate-limited endpoints, by their `[rate_limits.<name>]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limited {
    Token,
    Authorize,
    Register,
    DeviceAuthorization,
    Introspect,
    Revoke,
    Consent,
    Device,
}

impl Limited {
    pub const ALL: [Limited; 8] = [
        Self::Token,
        Self::Authorize,
        Self::Register,
        Self::DeviceAuthorization,
        Self::Introspect,
        Self::Revoke,
        Self::Consent,
        Self::Device,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::Register => "register",
            Self::DeviceAuthorization => "device_authorization",
            Self::Introspect => "introspect",
            Self::Revoke => "revoke",
            Self::Consent => "consent",
            Self::Device => "device",
        }
    }

    /// (per client, per address) per minute. Generous: a client refreshing from many parallel
    /// tool calls, or a company behind one NAT address, stays far below them; a script trying
    /// secrets, codes or registrations does not. Pages and `/register` have no client to count.
    pub fn defaults(self) -> (u32, u32) {
        match self {
            Self::Token => (600, 1200),
            Self::Authorize => (300, 600),
            Self::Register => (0, 60),
            Self::DeviceAuthorization => (120, 300),
            Self::Introspect => (6000, 6000),
            Self::Revoke => (600, 1200),
            Self::Consent => (0, 300),
            Self::Device => (0, 120),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Keys (clients, addresses) tracked per gateway; beyond it, new keys share one budget per
    /// endpoint and kind, so memory stays bounded whatever a flood of invented ids does.
    pub max_tracked_keys: usize,
    pub token: EndpointLimits,
    pub authorize: EndpointLimits,
    pub register: EndpointLimits,
    pub device_authorization: EndpointLimits,
    pub introspect: EndpointLimits,
    pub revoke: EndpointLimits,
    pub consent: EndpointLimits,
    pub device: EndpointLimits,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            max_tracked_keys: 100_000,
            token: Default::default(),
            authorize: Default::default(),
            register: Default::default(),
            device_authorization: Default::default(),
            introspect: Default::default(),
            revoke: Default::default(),
            consent: Default::default(),
            device: Default::default(),
        }
    }
}

impl RateLimits {
    /// Every limit off (benchmarks, tests that send thousands of requests from one address).
    pub fn off() -> Self {
        let off = EndpointLimits {
            per_client: Some(0),
            per_address: Some(0),
        };
        Self {
            token: off,
            authorize: off,
            register: off,
            device_authorization: off,
            introspect: off,
            revoke: off,
            consent: off,
            device: off,
            ..Self::default()
        }
    }

    /// The limits a gateway applies. In development mode (`dev_mode`: the built-in user, consent
    /// approved by configuration) a deployment that configured none gets none: that mode drives
    /// the gateway from test harnesses and load generators, thousands of requests a second from one
    /// address and one client; configured limits apply in every mode.
    pub fn effective(&self, dev_mode: bool) -> Self {
        if dev_mode && *self == Self::default() {
            Self::off()
        } else {
            self.clone()
        }
    }

    /// (per client, per address) per minute for `endpoint`: configured, else its default.
    pub fn resolve(&self, endpoint: Limited) -> (u32, u32) {
        let set = match endpoint {
            Limited::Token => self.token,
            Limited::Authorize => self.authorize,
            Limited::Register => self.register,
            Limited::DeviceAuthorization => self.device_authorization,
            Limited::Introspect => self.introspect,
            Limited::Revoke => self.revoke,
            Limited::Consent => self.consent,
            Limited::Device => self.device,
        };
        let (client, address) = endpoint.defaults();
        (
            set.per_client.unwrap_or(client),
            set.per_address.unwrap_or(address),
        )
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            listen: "127.0.0.1:8080".parse().expect("literal address"),
            database_url: "host=127.0.0.1 port=54315 user=oauth_gateway_login dbname=oauth_dev"
                .into(),
            feed_database_url: None,
            statement_cache: true,
            pool_size: 32,
            pool_wait: Duration::from_secs(2),
            keys: Vec::new(),
            key_encryption_key: None,
            keys_reload_interval: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(300),
            default_audience: None,
            login_url: None,
            trusted_user_header: None,
            trusted_proxies: None,
            csrf_secret: None,
            dev_mode: false,
            dev_user: None,
            dev_auto_approve: false,
            cors_origins: vec!["*".into()],
            max_body_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            statement_timeout: Duration::from_secs(5),
            routes: Vec::new(),
            scope_hierarchy: Default::default(),
            upstream_timeout: Duration::from_secs(30),
            cimd: CimdConfig::default(),
            upstream: None,
            upstreams: Default::default(),
            remember_consent: false,
            dpop_require_nonce: false,
            refresh_batching: Default::default(),
            audit_webhook: Default::default(),
            branding: Default::default(),
            strings: Default::default(),
            scope_descriptions: Default::default(),
            metrics_listen: None,
            log_format: LogFormat::Text,
            rate_limits: RateLimits::default(),
            cleanup_interval: Duration::from_secs(300),
        }
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks what can be checked before touching the network.
    pub fn validate(&self) -> Result<(), String> {
        self.audit_webhook.validate()?;
        let issuer = url::Url::parse(&self.issuer).map_err(|e| format!("issuer: {e}"))?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err("issuer must not have a query or fragment".into());
        }
        if issuer.scheme() != "https" && !self.dev_mode && !is_loopback(&issuer) {
            return Err("issuer must be https (or loopback, or dev_mode)".into());
        }
        match (self.keys.is_empty(), &self.key_encryption_key) {
            (true, None) => {
                return Err(
                    "a signing key is required: key files (oauth-gateway keys generate), \
                     or key_encryption_key for keys kept in the database (oauth-gateway keys kek)"
                        .into(),
                );
            }
            (false, Some(_)) => {
                return Err("signing keys come from files or from the database \
                     (key_encryption_key), not both"
                    .into());
            }
            (true, Some(kek)) => {
                crate::keyring::Kek::parse(kek).map_err(|e| format!("key_encryption_key: {e}"))?;
                if self.keys_reload_interval.is_zero() {
                    return Err("keys_reload_interval must be at least one second".into());
                }
            }
            (false, None) => {}
        }
        if (self.dev_user.is_some() || self.dev_auto_approve) && !self.dev_mode {
            return Err("dev_user and dev_auto_approve require dev_mode".into());
        }
        if self.dev_auto_approve && self.dev_user.is_none() {
            return Err("dev_auto_approve needs dev_user".into());
        }
        self.trusted_proxy_ranges()?;
        self.views()?;
        if self.csrf_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err("csrf_secret must have at least 32 characters".into());
        }
        // Without a statement cache the gateway is behind a transaction pooler, where the feed's
        // LISTEN would hear nothing while the guard trusted it.
        if !self.statement_cache && self.feed_database_url.is_none() && !self.routes.is_empty() {
            return Err(
                "statement_cache = false (a pooler in transaction mode) needs \
                 feed_database_url, a direct connection for the revocation feed"
                    .into(),
            );
        }
        self.validate_upstreams()?;
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
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
            // Clients ask for it as their RFC 8707 `resource`, and the gateway lists it in the
            // database as one (oauth.declare_resources), which refuses anything else.
            if let Some(resource) = &route.resource
                && !is_resource_indicator(resource)
            {
                return Err(format!(
                    "route {}: resource {resource:?} must be an absolute http(s) URL without a fragment",
                    route.prefix
                ));
            }
            for rule in &route.tool_scopes {
                if rule.method.is_empty() || rule.name.as_ref().is_some_and(String::is_empty) {
                    return Err(format!(
                        "route {}: a tool_scopes rule needs a method (and a non-empty name, if any)",
                        route.prefix
                    ));
                }
                if rule.scopes.is_empty()
                    || rule.scopes.iter().any(|s| s.is_empty() || s.contains(' '))
                {
                    return Err(format!(
                        "route {}: tool_scopes for {} need scope names",
                        route.prefix, rule.method
                    ));
                }
            }
        }
        Ok(())
    }

    /// The peers allowed to name the user in `trusted_user_header`: `trusted_proxies`, or by
    /// default loopback only (an authenticating proxy on the same host).
    pub fn trusted_proxy_ranges(&self) -> Result<Vec<IpRange>, String> {
        match &self.trusted_proxies {
            Some(entries) => entries.iter().map(|e| IpRange::parse(e)).collect(),
            None => Ok(vec![
                IpRange::parse("127.0.0.0/8")?,
                IpRange::parse("::1/128")?,
            ]),
        }
    }

    /// The pages as configured (branding, strings and scope descriptions checked).
    pub fn views(&self) -> Result<crate::views::Views, String> {
        crate::views::Views::new(
            &self.issuer,
            &self.branding,
            &self.strings,
            &self.scope_descriptions,
        )
    }

    pub fn body_limits(&self) -> crate::http::BodyLimits {
        crate::http::BodyLimits {
            max_bytes: self.max_body_bytes,
            read_timeout: self.body_read_timeout,
        }
    }

    /// Where the revocation feed connects: `feed_database_url`, else `database_url`.
    pub fn feed_database_url(&self) -> &str {
        self.feed_database_url
            .as_deref()
            .unwrap_or(&self.database_url)
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

/// An address block, `ip/prefix` (or one address, `ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("trusted_proxies: {text:?} is not an IP address or CIDR block");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| invalid())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(invalid)?,
            None => bits,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is in the block; an IPv4-mapped IPv6 peer (a dual-stack listener) counts as
    /// its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let masked = |bytes: &[u8], prefix: u8| -> Vec<u8> {
            bytes
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let keep = (prefix as usize).saturating_sub(i * 8).min(8);
                    if keep == 0 {
                        0
                    } else {
                        b & (0xffu8 << (8 - keep))
                    }
                })
                .collect()
        };
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(&net.octets(), self.prefix) == masked(&ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(&net.octets(), self.prefix) == masked(&ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether `text` can be an RFC 8707 resource indicator here: an absolute http(s) URL without a
/// fragment (the extension's `resource_problem` decides; this is the part a configuration can get
/// wrong).
/// The name `[upstream]` goes by among `[upstreams.*]` (and in sealed token sets).
pub const DEFAULT_UPSTREAM: &str = "default";

impl Config {
    /// Every sign-in provider, `[upstream]` first (as `default`), then `[upstreams.*]` by name.
    pub fn all_upstreams(&self) -> Vec<(String, crate::upstream::UpstreamConfig)> {
        self.upstream
            .iter()
            .map(|u| (DEFAULT_UPSTREAM.to_owned(), u.clone()))
            .chain(self.upstreams.iter().map(|(n, u)| (n.clone(), u.clone())))
            .collect()
    }

    fn validate_upstreams(&self) -> Result<(), String> {
        if self.upstream.is_some() && self.upstreams.contains_key(DEFAULT_UPSTREAM) {
            return Err(format!(
                "[upstream] is named {DEFAULT_UPSTREAM:?}: [upstreams.{DEFAULT_UPSTREAM}] would be a second one"
            ));
        }
        let mut providers = std::collections::BTreeSet::new();
        let mut keeps_tokens = false;
        for (name, upstream) in self.all_upstreams() {
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "upstreams.{name}: a name is 1 to 64 letters, digits, - or _"
                ));
            }
            upstream
                .validate()
                .map_err(|e| format!("upstreams.{name}: {e}"))?;
            // A session records its provider by issuer (or authorization endpoint): two providers
            // sharing one could not be told apart on the sessions page.
            let provider = upstream
                .issuer
                .clone()
                .or(upstream.authorization_endpoint.clone())
                .unwrap_or_default();
            if !providers.insert(provider) {
                return Err(format!(
                    "upstreams.{name}: another upstream has the same issuer (or authorization endpoint)"
                ));
            }
            if upstream.store_tokens {
                keeps_tokens = true;
                if upstream.token_encryption_key.is_none() && self.key_encryption_key.is_none() {
                    return Err(format!(
                        "upstreams.{name}: store_tokens needs token_encryption_key (or key_encryption_key)"
                    ));
                }
            }
        }
        for route in &self.routes {
            let Some(name) = &route.upstream_token_header else {
                continue;
            };
            let lower = name.to_ascii_lowercase();
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || lower.starts_with("x-oauth-")
                || [
                    "authorization",
                    "cookie",
                    "host",
                    "content-length",
                    "content-type",
                ]
                .contains(&lower.as_str())
            {
                return Err(format!(
                    "route {}: upstream_token_header {name:?} must be a header name of its own \
                     (not an x-oauth-* identity header or one HTTP gives a meaning)",
                    route.prefix
                ));
            }
            if !keeps_tokens {
                return Err(format!(
                    "route {}: upstream_token_header needs an upstream with store_tokens = true",
                    route.prefix
                ));
            }
        }
        Ok(())
    }
}

pub fn is_resource_indicator(text: &str) -> bool {
    url::Url::parse(text)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none())
}

fn is_loopback(url: &url::Url) -> bool {
    matches!(url.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
}

pub(crate) mod seconds {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, IpRange};

    #[test]
    fn several_upstreams_are_named_distinct_and_kept_tokens_need_a_key() {
        let base = || {
            Config::from_toml(
                r#"
                issuer = "https://auth.example"
                [[keys]]
                path = "/dev/null"
                alg = "ES256"
                [upstream]
                issuer = "https://one.example"
                client_id = "gw"
                client_secret = "s"
                [upstreams.two]
                issuer = "https://two.example"
                client_id = "gw"
                client_secret = "s"
                [[routes]]
                prefix = "/mcp"
                upstream = "http://127.0.0.1:9/mcp"
                "#,
            )
            .unwrap()
        };
        let config = base();
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        let names: Vec<String> = config.all_upstreams().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["default", "two"]);

        let mut same_issuer = base();
        same_issuer.upstreams.get_mut("two").unwrap().issuer = Some("https://one.example".into());
        assert!(same_issuer.validate().unwrap_err().contains("same issuer"));
        let mut twice = base();
        let again = twice.upstreams["two"].clone();
        twice.upstreams.insert("default".into(), again);
        assert!(twice.validate().is_err());
        let mut bad_name = base();
        let two = bad_name.upstreams.remove("two").unwrap();
        bad_name.upstreams.insert("two words".into(), two);
        assert!(bad_name.validate().is_err());

        let mut header = base();
        header.routes[0].upstream_token_header = Some("X-Upstream-Access-Token".into());
        assert!(header.validate().unwrap_err().contains("store_tokens"));
        header.upstreams.get_mut("two").unwrap().store_tokens = true;
        assert!(
            header
                .validate()
                .unwrap_err()
                .contains("token_encryption_key")
        );
        header
            .upstreams
            .get_mut("two")
            .unwrap()
            .token_encryption_key = Some(crate::keyring::Kek::generate());
        assert!(header.validate().is_ok(), "{:?}", header.validate());
        for spoofable in ["X-OAuth-Subject", "Authorization", "bad header"] {
            header.routes[0].upstream_token_header = Some(spoofable.into());
            assert!(header.validate().is_err(), "{spoofable}");
        }
    }

    #[test]
    fn trusted_proxy_ranges_match_by_prefix_and_default_to_loopback() {
        let block = IpRange::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.255.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = IpRange::parse("fd00::1").unwrap();
        assert!(one.contains("fd00::1".parse().unwrap()));
        assert!(!one.contains("fd00::2".parse().unwrap()));
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(IpRange::parse("example.com").is_err());
        let defaults = Config::default().trusted_proxy_ranges().unwrap();
        assert!(
            defaults
                .iter()
                .any(|r| r.contains("127.0.0.2".parse().unwrap()))
        );
        assert!(defaults.iter().any(|r| r.contains("::1".parse().unwrap())));
        assert!(
            !defaults
                .iter()
                .any(|r| r.contains("192.168.1.1".parse().unwrap()))
        );
    }

    #[test]
    fn a_route_resource_must_be_a_resource_indicator_and_tool_rules_name_scopes() {
        let config = |route: &str| {
            let mut text = include_str!("../oauth-gateway.example.toml").to_owned();
            text = text.replace("# resource = \"https://auth.example.com/mcp\"", route);
            Config::from_toml(&text).unwrap().validate()
        };
        assert!(config("resource = \"https://auth.example.com/mcp\"").is_ok());
        for bad in [
            "resource = \"/mcp\"",
            "resource = \"https://a.example/mcp#x\"",
            "resource = \"urn:x\"",
        ] {
            assert!(config(bad).is_err(), "{bad}");
        }
        let text = include_str!("../oauth-gateway.example.toml")
            .replace("scopes = [\"mcp:write\"] }", "scopes = [] }");
        assert!(Config::from_toml(&text).unwrap().validate().is_err());
    }

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
        assert_eq!(config.routes[0].tool_scopes.len(), 1);
        assert_eq!(
            config.scope_hierarchy.get("mcp:write"),
            Some(&vec!["mcp".to_owned()])
        );
        assert_eq!(config.cimd.max_document_bytes, 10240);
        assert!(!config.cimd.allow_loopback);
        assert_eq!(config.statement_timeout, std::time::Duration::from_secs(5));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.trusted_proxy_ranges().unwrap().len(), 1);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.log_format, super::LogFormat::Text);
        assert_eq!(
            config.rate_limits.resolve(super::Limited::Token),
            (600, 1200)
        );
        assert_eq!(
            config.rate_limits.resolve(super::Limited::Register),
            super::Limited::Register.defaults()
        );
    }
}
