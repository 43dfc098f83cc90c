//! Sign-in through an upstream identity provider, the gateway as a strict relying party: an
//! OpenID provider found by its issuer (discovery, JWKS, a verified ID token), or a plain OAuth
//! 2.0 provider by explicit endpoints whose userinfo names the user (GitHub's shape). The
//! browser-facing steps are in `endpoints::signin`; this is the protocol with the upstream and
//! the rule turning its claims into a user of this server.

mod tokens;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::RwLock;
use url::Url;

pub use crate::outbound::url_allowed;
use crate::outbound::{Answer, Fetch};
pub use tokens::{IssuedTokens, Sealer, Unusable, UpstreamTokens};

/// `[upstream]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// An OpenID provider's issuer: its endpoints and keys come from discovery, and its ID
    /// tokens are verified. Unset: a plain OAuth 2.0 provider, by the three endpoints below.
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// `client_secret_basic` (the default) or `client_secret_post`.
    pub token_endpoint_auth_method: String,
    pub scopes: Vec<String>,
    /// The claim that becomes the user id: `sub` by default; `email` only counts when the
    /// provider says `email_verified` is true.
    pub user_claim: String,
    /// When set, only users whose verified email is at one of these domains may sign in.
    pub allowed_email_domains: Vec<String>,
    /// When set, only users whose claim (a string or an array of strings, e.g. `groups`) holds one
    /// of the values may sign in.
    pub required_claim: Option<RequiredClaim>,
    /// Claims kept with the session and passed as the grant's `props` (what the guarded MCP
    /// server receives about the user).
    pub props_claims: Vec<String>,
    /// The provider's name on the pages.
    pub display_name: Option<String>,
    /// Tests and local development: a provider on a loopback address over plain http.
    pub allow_http: bool,
    /// A PEM bundle trusted besides the public web roots.
    pub extra_ca_file: Option<PathBuf>,
    /// How long a browser session lasts, in seconds.
    pub session_lifetime: u64,
    /// Each request to the provider, in seconds.
    pub timeout: u64,
    /// Keep the provider's access and refresh tokens (sealed, `oauth.upstream_tokens`) so that
    /// routes with `upstream_token_header` hand the current access token to their MCP server.
    pub store_tokens: bool,
    /// The key sealing them (32 bytes, base64; `oauth-gateway keys kek` prints one); without it,
    /// a key derived from `key_encryption_key`.
    pub token_encryption_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredClaim {
    pub name: String,
    pub values: Vec<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            authorization_endpoint: None,
            token_endpoint: None,
            userinfo_endpoint: None,
            client_id: String::new(),
            client_secret: None,
            token_endpoint_auth_method: "client_secret_basic".into(),
            scopes: vec!["openid".into(), "email".into(), "profile".into()],
            user_claim: "sub".into(),
            allowed_email_domains: Vec::new(),
            required_claim: None,
            props_claims: vec!["email".into(), "name".into(), "groups".into()],
            display_name: None,
            allow_http: false,
            extra_ca_file: None,
            session_lifetime: 12 * 3600,
            timeout: 10,
            store_tokens: false,
            token_encryption_key: None,
        }
    }
}

impl UpstreamConfig {
    pub fn is_openid(&self) -> bool {
        self.issuer.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        let url = |name: &str, value: &str| -> Result<(), String> {
            let parsed = Url::parse(value).map_err(|e| format!("upstream.{name}: {e}"))?;
            if !url_allowed(&parsed, self.allow_http) || parsed.fragment().is_some() {
                return Err(format!(
                    "upstream.{name} must be an https URL (http only to a loopback address with allow_http)"
                ));
            }
            Ok(())
        };
        if self.client_id.is_empty() {
            return Err("upstream.client_id is required".into());
        }
        match &self.issuer {
            Some(issuer) => url("issuer", issuer)?,
            None => {
                if self.authorization_endpoint.is_none()
                    || self.token_endpoint.is_none()
                    || self.userinfo_endpoint.is_none()
                {
                    return Err("upstream: set issuer (OpenID Connect) or all of authorization_endpoint, token_endpoint and userinfo_endpoint (OAuth 2.0)".into());
                }
            }
        }
        for (name, value) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("userinfo_endpoint", &self.userinfo_endpoint),
        ] {
            if let Some(value) = value {
                url(name, value)?;
            }
        }
        match self.token_endpoint_auth_method.as_str() {
            "client_secret_basic" | "client_secret_post" if self.client_secret.is_some() => {}
            "client_secret_basic" | "client_secret_post" => {
                return Err("upstream.client_secret is required".into());
            }
            other => {
                return Err(format!(
                    "upstream.token_endpoint_auth_method {other:?}: client_secret_basic or client_secret_post"
                ));
            }
        }
        if self.is_openid() && !self.scopes.iter().any(|s| s == "openid") {
            return Err("upstream.scopes must include openid for an OpenID provider".into());
        }
        if self.user_claim.is_empty() {
            return Err("upstream.user_claim must name a claim".into());
        }
        if !(60..=90 * 86400).contains(&self.session_lifetime) {
            return Err("upstream.session_lifetime is between 60 seconds and 90 days".into());
        }
        if let Some(key) = &self.token_encryption_key {
            crate::keyring::Kek::parse(key)
                .map_err(|e| format!("upstream.token_encryption_key: {e}"))?;
        }
        Ok(())
    }
}

/// Why a sign-in failed. `Unavailable`: the provider could not be reached (the user may retry);
/// `Refused`: the provider or its answer was refused (an error page, never a server error).
#[derive(Debug, Clone)]
pub enum Failure {
    Unavailable(String),
    Refused(String),
    /// Authenticated, but not allowed to sign in here (allow rules).
    NotAllowed(NotAllowed),
}

/// Which allow rule an account does not meet: the page says it in the deployment's words
/// (`views::strings`, `not_allowed_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAllowed {
    EmailUnverified,
    EmailDomain,
    /// The claim (e.g. `groups`) that holds none of the required values.
    Claim(String),
}

/// The provider's endpoints, from discovery or configuration.
#[derive(Debug)]
pub struct Metadata {
    /// The issuer ID tokens and RFC 9207 `iss` parameters must carry (OpenID only).
    pub issuer: Option<String>,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub userinfo_endpoint: Option<Url>,
    pub jwks_uri: Option<Url>,
    /// RFC 9207 §3: the provider says it sends `iss`; then a response without one is refused.
    pub iss_parameter_supported: bool,
}

/// Who signed in, as this server will know them.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub issuer: String,
    pub subject: String,
    pub auth_time: Option<i64>,
    pub amr: Vec<String>,
    pub props: Map<String, Value>,
    /// The provider's tokens, when `store_tokens` (else never kept in memory past the sign-in).
    pub tokens: Option<IssuedTokens>,
}

type Cached<T> = RwLock<Option<(Instant, Arc<T>)>>;

const METADATA_TTL: Duration = Duration::from_secs(3600);
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// A key set is fetched again for an unknown `kid` (rotation), at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(10);
/// How far from now an ID token's `iat` may be.
const LEEWAY: u64 = 60;
const MAX_ID_TOKEN_AGE: u64 = 600;

pub struct Provider {
    /// The configuration's name for it (`default` for `[upstream]`), as sealed token sets name it.
    pub name: String,
    pub config: UpstreamConfig,
    /// Seals and opens its tokens, when `store_tokens`.
    pub sealer: Option<Sealer>,
    fetch: Fetch,
    metadata: Cached<Metadata>,
    jwks: Cached<Value>,
}

fn parse_url(what: &str, value: Option<&str>) -> Result<Url, Failure> {
    value
        .and_then(|v| Url::parse(v).ok())
        .ok_or_else(|| Failure::Refused(format!("the provider's {what} is not a URL")))
}

impl Provider {
    /// `kek`: the deployment's key-encryption key, from which the tokens' key is derived when the
    /// upstream names no `token_encryption_key` of its own.
    pub fn new(
        name: &str,
        config: UpstreamConfig,
        kek: Option<&crate::keyring::Kek>,
    ) -> Result<Self, String> {
        config.validate()?;
        let fetch = Fetch::new(
            config.extra_ca_file.as_deref(),
            config.allow_http,
            Duration::from_secs(config.timeout.max(1)),
        )?;
        let sealer = if config.store_tokens {
            let material = match (&config.token_encryption_key, kek) {
                (Some(key), _) => crate::keyring::Kek::parse(key)?.material().to_vec(),
                (None, Some(kek)) => kek.material().to_vec(),
                (None, None) => {
                    return Err(format!(
                        "upstream {name}: store_tokens needs token_encryption_key (or key_encryption_key)"
                    ));
                }
            };
            Some(Sealer::derive(&material))
        } else {
            None
        };
        Ok(Self {
            name: name.to_owned(),
            sealer,
            config,
            fetch,
            metadata: RwLock::default(),
            jwks: RwLock::default(),
        })
    }

    /// The provider's name on pages.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.config.display_name {
            return name.clone();
        }
        self.config
            .issuer
            .as_deref()
            .or(self.config.authorization_endpoint.as_deref())
            .and_then(|u| Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "the sign-in provider".into())
    }

    async fn get_json(&self, url: &Url, bearer: Option<&str>) -> Result<Value, Failure> {
        let answer = self
            .fetch
            .get(url, bearer)
            .await
            .map_err(Failure::Unavailable)?;
        if answer.status != hyper::StatusCode::OK {
            return Err(Failure::Refused(format!(
                "{} answered {}",
                url.path(),
                answer.status
            )));
        }
        json_of(&answer, url)
    }

    /// Discovery (OpenID Connect Discovery 1.0 §4), cached; the configured endpoints otherwise.
    pub async fn metadata(&self) -> Result<Arc<Metadata>, Failure> {
        if let Some((at, md)) = self.metadata.read().await.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(md.clone());
        }
        let config = &self.config;
        let md = match &config.issuer {
            None => Metadata {
                issuer: None,
                authorization_endpoint: parse_url(
                    "authorization endpoint",
                    config.authorization_endpoint.as_deref(),
                )?,
                token_endpoint: parse_url("token endpoint", config.token_endpoint.as_deref())?,
                userinfo_endpoint: Some(parse_url(
                    "userinfo endpoint",
                    config.userinfo_endpoint.as_deref(),
                )?),
                jwks_uri: None,
                iss_parameter_supported: false,
            },
            Some(issuer) => {
                let url = parse_url(
                    "discovery document",
                    Some(&format!(
                        "{}/.well-known/openid-configuration",
                        issuer.trim_end_matches('/')
                    )),
                )?;
                let doc = self.get_json(&url, None).await?;
                // §4.3: the document's issuer is exactly the one it was found with.
                if doc["issuer"].as_str() != Some(issuer.as_str()) {
                    return Err(Failure::Refused(
                        "the provider's discovery document names another issuer".into(),
                    ));
                }
                let endpoint = |name: &str, configured: &Option<String>| {
                    let value = configured.as_deref().or(doc[name].as_str());
                    let url = parse_url(name, value)?;
                    if !url_allowed(&url, config.allow_http) {
                        return Err(Failure::Refused(format!(
                            "the provider's {name} is not https"
                        )));
                    }
                    Ok(url)
                };
                Metadata {
                    issuer: Some(issuer.clone()),
                    authorization_endpoint: endpoint(
                        "authorization_endpoint",
                        &config.authorization_endpoint,
                    )?,
                    token_endpoint: endpoint("token_endpoint", &config.token_endpoint)?,
                    userinfo_endpoint: match (&config.userinfo_endpoint, &doc["userinfo_endpoint"])
                    {
                        (None, Value::Null) => None,
                        _ => Some(endpoint("userinfo_endpoint", &config.userinfo_endpoint)?),
                    },
                    jwks_uri: Some(endpoint("jwks_uri", &None)?),
                    iss_parameter_supported: doc["authorization_response_iss_parameter_supported"]
                        .as_bool()
                        .unwrap_or(false),
                }
            }
        };
        let md = Arc::new(md);
        *self.metadata.write().await = Some((Instant::now(), md.clone()));
        Ok(md)
    }

    /// Where the browser is sent to sign in (RFC 6749 §4.1.1, PKCE S256, OIDC `nonce`).
    #[allow(clippy::too_many_arguments)]
    pub fn authorization_url(
        &self,
        md: &Metadata,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
        login_hint: Option<&str>,
        force_login: bool,
        max_age: Option<i64>,
    ) -> String {
        let mut url = md.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", code_challenge)
                .append_pair("code_challenge_method", "S256");
            if self.config.is_openid() {
                q.append_pair("nonce", nonce);
                if force_login {
                    q.append_pair("prompt", "login");
                }
                if let Some(max_age) = max_age {
                    q.append_pair("max_age", &max_age.to_string());
                }
            }
            if let Some(hint) = login_hint {
                q.append_pair("login_hint", hint);
            }
        }
        url.into()
    }

    /// Redeems the code and learns who signed in: the verified ID token (OpenID) and the
    /// userinfo response, then the allow rules.
    pub async fn complete(
        &self,
        md: &Metadata,
        code: &str,
        code_verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<Identity, Failure> {
        let (status, tokens) = self
            .token_request(
                md,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", code_verifier),
                ],
            )
            .await?;
        if status != hyper::StatusCode::OK || tokens.get("error").is_some() {
            return Err(Failure::Refused(format!(
                "the provider refused the code: {} {}",
                tokens["error"].as_str().unwrap_or("error"),
                tokens["error_description"].as_str().unwrap_or_default()
            )));
        }
        let access_token = tokens["access_token"]
            .as_str()
            .ok_or_else(|| Failure::Refused("the provider issued no access token".into()))?;
        if !tokens["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
        {
            return Err(Failure::Refused(
                "the provider's token is not a bearer token".into(),
            ));
        }
        let mut claims = Map::new();
        let mut issuer = md
            .issuer
            .clone()
            .unwrap_or_else(|| md.authorization_endpoint.origin().ascii_serialization());
        if self.config.is_openid() {
            let id_token = tokens["id_token"]
                .as_str()
                .ok_or_else(|| Failure::Refused("the provider issued no ID token".into()))?;
            let verified = self.verify_id_token(md, id_token, nonce).await?;
            if let Value::Object(map) = verified {
                claims = map;
            }
            issuer = md.issuer.clone().unwrap_or(issuer);
        }
        if let Some(userinfo_endpoint) = &md.userinfo_endpoint {
            let info = self.get_json(userinfo_endpoint, Some(access_token)).await?;
            // OIDC Core §5.3.2: userinfo about someone else is not used.
            if self.config.is_openid() && info.get("sub") != claims.get("sub") {
                return Err(Failure::Refused(
                    "the provider's userinfo names another subject".into(),
                ));
            }
            if let Value::Object(info) = info {
                for (name, value) in info {
                    claims.entry(name).or_insert(value);
                }
            }
        }
        let mut identity = self.identify(&issuer, &claims)?;
        if self.config.store_tokens {
            identity.tokens = Some(IssuedTokens::from_answer(&tokens, None)?);
        }
        Ok(identity)
    }

    /// A request to the provider's token endpoint, authenticated as the configured client.
    async fn token_request(
        &self,
        md: &Metadata,
        pairs: &[(&str, &str)],
    ) -> Result<(hyper::StatusCode, Value), Failure> {
        let secret = self.config.client_secret.as_deref().unwrap_or_default();
        let post = self.config.token_endpoint_auth_method == "client_secret_post";
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            for (name, value) in pairs {
                form.append_pair(name, value);
            }
            if post {
                form.append_pair("client_id", &self.config.client_id)
                    .append_pair("client_secret", secret);
            }
            form.finish()
        };
        // RFC 6749 §2.3.1: each part form-encoded before joining.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = (!post)
            .then(|| STANDARD.encode(format!("{}:{}", enc(&self.config.client_id), enc(secret))));
        let answer = self
            .fetch
            .post_form(&md.token_endpoint, form, basic)
            .await
            .map_err(Failure::Unavailable)?;
        Ok((answer.status, json_of(&answer, &md.token_endpoint)?))
    }

    /// RFC 6749 §6: new tokens for `current`'s refresh token. `Refused(code)` carries the
    /// provider's error code alone (`invalid_grant`: that refresh token will never work again).
    pub async fn refresh(&self, current: &IssuedTokens) -> Result<IssuedTokens, Failure> {
        let refresh_token = current
            .refresh_token
            .as_deref()
            .ok_or_else(|| Failure::Refused("invalid_grant: no refresh token was issued".into()))?;
        let md = self.metadata().await?;
        let (status, answer) = self
            .token_request(
                &md,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ],
            )
            .await?;
        if status != hyper::StatusCode::OK || answer.get("error").is_some() {
            // The provider's error code only: its description might quote what it was sent.
            let code = answer["error"].as_str().unwrap_or("error");
            let code: String = code
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(if status.is_server_error() {
                Failure::Unavailable(format!("the provider answered {status} to a refresh"))
            } else {
                Failure::Refused(code)
            });
        }
        // RFC 6749 §6: without a new refresh token, the one presented stays valid.
        IssuedTokens::from_answer(&answer, current.refresh_token.as_deref())
    }

    async fn key_set(&self, md: &Metadata, refetch: bool) -> Result<Arc<Value>, Failure> {
        if let Some((at, keys)) = self.jwks.read().await.as_ref() {
            let wanted_fresh = refetch && at.elapsed() >= JWKS_REFETCH;
            if at.elapsed() < JWKS_TTL && !wanted_fresh {
                return Ok(keys.clone());
            }
        }
        let uri = md
            .jwks_uri
            .as_ref()
            .ok_or_else(|| Failure::Refused("the provider publishes no keys".into()))?;
        let keys = Arc::new(self.get_json(uri, None).await?);
        *self.jwks.write().await = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// OIDC Core §3.1.3.7: signature by a key of the provider's set, `iss`, `aud` (and `azp`),
    /// `exp`, `iat`, `nonce`.
    async fn verify_id_token(
        &self,
        md: &Metadata,
        id_token: &str,
        nonce: &str,
    ) -> Result<Value, Failure> {
        let refused = |why: &str| Failure::Refused(format!("the provider's ID token {why}"));
        crate::jwt::install_provider();
        let header = jsonwebtoken::decode_header(id_token).map_err(|_| refused("is not a JWT"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(refused(
                "is signed with an algorithm this server does not accept",
            ));
        }
        let mut key = None;
        for refetch in [false, true] {
            let keys = self.key_set(md, refetch).await?;
            key = find_key(&keys, header.kid.as_deref(), header.alg);
            if key.is_some() {
                break;
            }
        }
        let key = key.ok_or_else(|| refused("is signed by a key the provider does not publish"))?;
        let issuer = md.issuer.as_deref().unwrap_or_default();
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[self.config.client_id.as_str()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => refused("has a bad signature"),
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => refused("has expired"),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => refused("names another issuer"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    refused("is for another client")
                }
                other => refused(&format!("is invalid ({other:?})")),
            })?
            .claims;
        let now = jsonwebtoken::get_current_timestamp();
        let iat = claims["iat"]
            .as_u64()
            .ok_or_else(|| refused("has no iat"))?;
        if iat > now + LEEWAY || iat + MAX_ID_TOKEN_AGE < now {
            return Err(refused("was not issued just now"));
        }
        let several_audiences = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.config.client_id => {
                return Err(refused("was issued to another party (azp)"));
            }
            None if several_audiences => return Err(refused("has several audiences and no azp")),
            _ => {}
        }
        let presented = claims["nonce"].as_str().unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            presented.as_bytes(),
            nonce.as_bytes(),
        )) || presented.is_empty()
        {
            return Err(refused("does not carry this sign-in's nonce"));
        }
        Ok(claims)
    }

    /// The user this server knows, from the provider's claims, if the allow rules admit them.
    pub fn identify(&self, issuer: &str, claims: &Map<String, Value>) -> Result<Identity, Failure> {
        let config = &self.config;
        let text = |name: &str| -> Option<String> {
            match claims.get(name)? {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let subject = text("sub")
            .or_else(|| text("id"))
            .ok_or_else(|| Failure::Refused("the provider named no subject".into()))?;
        let email_verified = claims.get("email_verified") == Some(&Value::Bool(true));
        let user_id = if config.user_claim == "email" {
            if !email_verified {
                return Err(Failure::NotAllowed(NotAllowed::EmailUnverified));
            }
            text("email")
        } else {
            text(&config.user_claim)
        }
        .filter(|u| u.len() <= 255)
        .ok_or_else(|| {
            Failure::Refused(format!(
                "the provider did not send the {} claim",
                config.user_claim
            ))
        })?;
        if !config.allowed_email_domains.is_empty() {
            let domain = text("email")
                .filter(|_| email_verified)
                .and_then(|e| e.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
            if !domain.is_some_and(|d| {
                config
                    .allowed_email_domains
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&d))
            }) {
                return Err(Failure::NotAllowed(NotAllowed::EmailDomain));
            }
        }
        if let Some(rule) = &config.required_claim {
            let held: Vec<&str> = match claims.get(&rule.name) {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !held.iter().any(|h| rule.values.iter().any(|v| v == h)) {
                return Err(Failure::NotAllowed(NotAllowed::Claim(rule.name.clone())));
            }
        }
        let props = config
            .props_claims
            .iter()
            .filter_map(|name| Some((name.clone(), claims.get(name)?.clone())))
            .collect();
        Ok(Identity {
            user_id,
            issuer: issuer.to_owned(),
            subject,
            auth_time: claims.get("auth_time").and_then(Value::as_i64),
            amr: claims
                .get("amr")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            props,
            tokens: None,
        })
    }
}

fn json_of(answer: &Answer, url: &Url) -> Result<Value, Failure> {
    answer
        .json()
        .ok_or_else(|| Failure::Refused(format!("{} did not answer a JSON object", url.path())))
}

/// The key of `keys` the token names (by `kid`, or the only key of its type when it names none).
fn find_key(keys: &Value, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let (kty, crv) = match alg {
        Algorithm::RS256 => ("RSA", None),
        Algorithm::ES256 => ("EC", Some("P-256")),
        Algorithm::EdDSA => ("OKP", Some("Ed25519")),
        _ => return None,
    };
    let candidates: Vec<&Value> = keys["keys"]
        .as_array()?
        .iter()
        .filter(|k| k["kty"] == kty && crv.is_none_or(|c| k["crv"] == c))
        .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
        .filter(|k| match kid {
            Some(kid) => k["kid"] == kid,
            None => true,
        })
        .collect();
    if candidates.len() != 1 {
        return None;
    }
    let k = candidates[0];
    let s = |name: &str| k[name].as_str().unwrap_or_default();
    match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_components(s("n"), s("e")).ok(),
        Algorithm::ES256 => DecodingKey::from_ec_components(s("x"), s("y")).ok(),
        Algorithm::EdDSA => DecodingKey::from_ed_components(s("x")).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider(change: impl FnOnce(&mut UpstreamConfig)) -> Provider {
        let mut config = UpstreamConfig {
            issuer: Some("https://idp.example".into()),
            client_id: "gw".into(),
            client_secret: Some("s".into()),
            ..Default::default()
        };
        change(&mut config);
        Provider::new("default", config, None).unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn email_becomes_the_user_only_when_verified_and_allow_rules_apply() {
        let by_email = provider(|c| c.user_claim = "email".into());
        let unverified = claims(json!({"sub": "1", "email": "a@corp.example"}));
        assert!(matches!(
            by_email.identify("i", &unverified),
            Err(Failure::NotAllowed(NotAllowed::EmailUnverified))
        ));
        let verified = claims(
            json!({"sub": "1", "email": "a@corp.example", "email_verified": true, "groups": ["eng"]}),
        );
        assert_eq!(
            by_email.identify("i", &verified).unwrap().user_id,
            "a@corp.example"
        );
        let domains = provider(|c| c.allowed_email_domains = vec!["corp.example".into()]);
        assert_eq!(domains.identify("i", &verified).unwrap().user_id, "1");
        let other = claims(json!({"sub": "2", "email": "a@else.example", "email_verified": true}));
        assert!(domains.identify("i", &other).is_err());
        let groups = provider(|c| {
            c.required_claim = Some(RequiredClaim {
                name: "groups".into(),
                values: vec!["eng".into()],
            })
        });
        assert!(groups.identify("i", &verified).is_ok());
        assert!(groups.identify("i", &other).is_err());
        let props = groups.identify("i", &verified).unwrap().props;
        assert_eq!(props["email"], "a@corp.example");
        assert_eq!(props["groups"], json!(["eng"]));
    }

    #[test]
    fn configuration_needs_an_issuer_or_three_endpoints_and_https() {
        let ok = UpstreamConfig {
            issuer: Some("https://idp.example".into()),
            client_id: "gw".into(),
            client_secret: Some("s".into()),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let http = UpstreamConfig {
            issuer: Some("http://idp.example".into()),
            ..ok.clone()
        };
        assert!(http.validate().is_err());
        let loopback = UpstreamConfig {
            issuer: Some("http://127.0.0.1:9".into()),
            allow_http: true,
            ..ok.clone()
        };
        assert!(loopback.validate().is_ok());
        let plain = UpstreamConfig {
            issuer: None,
            authorization_endpoint: Some("https://github.com/login/oauth/authorize".into()),
            ..ok.clone()
        };
        assert!(plain.validate().is_err(), "three endpoints");
    }
}
