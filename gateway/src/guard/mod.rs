//! The gateway as the protected-resource front door of MCP servers (RFC 9728, RFC 6750, MCP
//! authorization): it checks the bearer token, forwards the request to the upstream without the
//! token and with the verified identity in headers, and streams both bodies unbuffered.
//!
//! A request passes four steps: authenticate (a valid token for this resource), authorise (not
//! revoked, the route's scopes and those its `tool_scopes` give the request, the grant still
//! live), rewrite, forward.

mod caches;
mod forward;
mod path;
mod revoked;
mod tools;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::RouteConfig;
use crate::db::Db;
use crate::error::{BearerChallenge, ChallengeNames, ErrorCode, OAuthError};
use crate::http::{self, BodyLimits, Req, Resp, TokenScheme};
use crate::tokens::{AccessClaims, TokenVerifier};
pub use revoked::{FeedCounters, FeedState};

/// How much of a request body the guard reads to learn what a route's `tool_scopes` need: MCP
/// tool calls carry arguments, far more than an OAuth form.
const INSPECTED_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Not a scope a resource can require: OIDC's request for refresh tokens, which access tokens
/// for an MCP server need not carry, so the guard neither asks for it (401 and 403 challenges,
/// RFC 9728 metadata) nor demands it.
const OFFLINE_ACCESS: &str = "offline_access";

pub struct Guard {
    routes: Vec<RouteConfig>,
    /// Where this gateway is reached (RFC 9728 metadata URLs, default resource identifiers).
    origin: String,
    issuer: String,
    verifier: TokenVerifier,
    db: Db,
    upstream_timeout: Duration,
    verified: caches::VerifiedTokens,
    props: caches::PropsCache,
    revoked: Arc<revoked::RevokedSet>,
    client: forward::ProxyClient,
    /// For each scope of `scope_hierarchy`, every scope it includes.
    implied: HashMap<String, HashSet<String>>,
    body_limits: BodyLimits,
    /// Whether the routes' resources are listed in the database (`declare_resources`).
    declared: AtomicBool,
    /// The signed-in users' tokens at the upstream identity provider, for routes with
    /// `upstream_token_header`.
    upstream_tokens: Option<Arc<crate::upstream::UpstreamTokens>>,
    /// Checks the DPoP proofs that DPoP-bound tokens come with (RFC 9449 §7).
    dpop: Option<Arc<crate::dpop::Dpop>>,
}

/// A request that passed authentication and authorisation: who it is from.
struct Identity {
    claims: AccessClaims,
    grant: Uuid,
    props: Value,
}

impl Identity {
    /// The identity headers, or `None` when a value cannot be a header value (control
    /// characters): props are JSON, written in ASCII so any props can be.
    fn headers(self) -> Option<Vec<(&'static str, HeaderValue)>> {
        // The extension gives a client_credentials grant the client itself as its user
        // (`oauth._client_grant`: user_id = client_id), and access tokens carry no subject type.
        // A user's token has sub = client_id only when a user is named exactly like the client
        // holding the token, which then can pass for no one but that client.
        let subject_type = if self.claims.sub == self.claims.client_id {
            "client"
        } else {
            "user"
        };
        [
            ("x-oauth-subject", self.claims.sub),
            ("x-oauth-subject-type", subject_type.to_owned()),
            ("x-oauth-client-id", self.claims.client_id),
            ("x-oauth-scope", self.claims.scope),
            ("x-oauth-grant-id", self.grant.to_string()),
            ("x-oauth-props", ascii_json(&self.props)),
        ]
        .into_iter()
        .map(|(name, value)| Some((name, HeaderValue::from_bytes(value.as_bytes()).ok()?)))
        .collect()
    }
}

/// `value` as JSON in visible ASCII: what is not ASCII (only ever inside strings) as `\u` escapes.
fn ascii_json(value: &Value) -> String {
    let mut ascii = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() && c != '\x7f' {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    ascii
}

impl Guard {
    pub fn new(
        routes: Vec<RouteConfig>,
        origin: String,
        verifier: TokenVerifier,
        db: Db,
        upstream_timeout: Duration,
        scope_hierarchy: &BTreeMap<String, Vec<String>>,
        body_limits: BodyLimits,
    ) -> Self {
        Self {
            routes,
            origin,
            issuer: verifier.issuer.clone(),
            verifier,
            db,
            upstream_timeout,
            verified: Default::default(),
            props: Default::default(),
            revoked: Default::default(),
            client: forward::new_client(),
            implied: tools::implied(scope_hierarchy),
            body_limits: BodyLimits {
                max_bytes: INSPECTED_BODY_BYTES.max(body_limits.max_bytes),
                ..body_limits
            },
            declared: AtomicBool::new(false),
            upstream_tokens: None,
            dpop: None,
        }
    }

    pub fn with_dpop(self, dpop: Arc<crate::dpop::Dpop>) -> Self {
        Self {
            dpop: Some(dpop),
            ..self
        }
    }

    pub fn with_upstream_tokens(self, tokens: crate::upstream::UpstreamTokens) -> Self {
        Self {
            upstream_tokens: Some(Arc::new(tokens)),
            ..self
        }
    }

    /// The resources this gateway guards (RFC 8707 identifiers, one per route).
    pub fn resources(&self) -> Vec<String> {
        self.routes.iter().map(|r| self.resource_of(r)).collect()
    }

    /// Lists the routes' resources and `default_audience` in the database once, so that the
    /// extension issues tokens for them, and for nothing it does not list
    /// (`oauth.declare_resources`). A failure is logged and tried again by the next call.
    pub async fn declare_resources(&self, default_audience: Option<&str>) {
        if self.declared.load(Ordering::Acquire) {
            return;
        }
        let mut resources = self.resources();
        // An audience that is no URL (some deployments name their API "my-api") is no resource a
        // client can ask for; listing it would fail the whole list.
        resources.extend(
            default_audience
                .filter(|a| crate::config::is_resource_indicator(a))
                .map(str::to_owned),
        );
        if resources.is_empty() {
            self.declared.store(true, Ordering::Release);
            return;
        }
        match self.db.declare_resources(&resources).await {
            Ok(()) => self.declared.store(true, Ordering::Release),
            Err(error) => {
                tracing::warn!(%error, "could not list the guarded resources in the database; trying again")
            }
        }
    }

    /// Whether the token carries `scope`, itself or through a scope that includes it.
    fn holds(&self, claims: &AccessClaims, scope: &str) -> bool {
        claims
            .scopes()
            .any(|held| held == scope || self.implied.get(held).is_some_and(|s| s.contains(scope)))
    }

    /// The revocation feed's state, when there are routes to guard (and so a feed).
    pub fn feed_state(&self) -> Option<FeedState> {
        (!self.routes.is_empty()).then(|| self.revoked.state())
    }

    pub fn feed_counters(&self) -> Option<FeedCounters> {
        (!self.routes.is_empty()).then(|| self.revoked.counters.clone())
    }

    /// Whether a request at `path` is the guard's to answer (a route, as written or resolved).
    pub fn guards(&self, path: &str) -> bool {
        self.locate(path).is_some()
    }

    /// Whether `path` is a route's RFC 9728 metadata (not a guarded request).
    pub fn serves_metadata(&self, path: &str) -> bool {
        self.routes.iter().any(|r| metadata_path(r) == path)
    }

    /// Keeps the revoked set current, when there are routes to guard.
    pub fn follow_revocations(&self, database_url: String) -> Option<tokio::task::JoinHandle<()>> {
        (!self.routes.is_empty())
            .then(|| tokio::spawn(revoked::follow(self.revoked.clone(), database_url)))
    }

    /// The guard's answer for a request at `path`, or `None` when no route (or its RFC 9728
    /// metadata) lives there.
    pub async fn respond(&self, req: Req) -> Option<Resp> {
        let path = req.uri().path();
        if let Some(route) = self.routes.iter().find(|r| metadata_path(r) == path) {
            return Some(self.metadata(route));
        }
        let outcome = match self.locate(path)? {
            Ok((at, path)) => self.pass(req, at, &path).await,
            Err(at) => Err(self.refuse(
                &self.routes[at],
                ErrorCode::InvalidRequest,
                "the path leaves the route, or hides a separator or a dot-segment",
            )),
        };
        Some(outcome.unwrap_or_else(|e| http::error(&e)))
    }

    /// The route a request at `path` is for and the path to forward (dot-segments removed), or
    /// `Err` with the route it names as written when, read as the upstream may read it, it leaves
    /// that route or cannot be read safely.
    fn locate(&self, path: &str) -> Option<Result<(usize, String), usize>> {
        let as_written = self.route_for(path);
        let Some(normalized) = path::normalized(path) else {
            return as_written.map(Err);
        };
        match (as_written, self.route_for(&normalized)) {
            (Some(written), Some(resolved)) if written != resolved => Some(Err(written)),
            (Some(written), None) => Some(Err(written)),
            (_, Some(resolved)) => Some(Ok((resolved, normalized))),
            (None, None) => None,
        }
    }

    /// The most specific route whose prefix covers `path`.
    fn route_for(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.prefix == "/" || path == r.prefix || path.starts_with(&format!("{}/", r.prefix))
            })
            .max_by_key(|(_, r)| r.prefix.len())
            .map(|(at, _)| at)
    }

    fn resource_of(&self, route: &RouteConfig) -> String {
        route
            .resource
            .clone()
            .unwrap_or_else(|| format!("{}{}", self.origin, route.prefix))
    }

    fn metadata(&self, route: &RouteConfig) -> Resp {
        let scopes = needed(route);
        let mut resp = http::json(
            StatusCode::OK,
            &json!({
                "resource": self.resource_of(route),
                "authorization_servers": [self.issuer],
                "scopes_supported": scopes,
                "bearer_methods_supported": ["header"],
            }),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        resp
    }

    /// A refusal with the route's challenge (RFC 9728 §5.1: where to learn how to get a token).
    fn refuse(&self, route: &RouteConfig, code: ErrorCode, description: &str) -> OAuthError {
        self.challenge(
            route,
            OAuthError::new(code, description),
            ChallengeNames::CodeAndDescription,
        )
    }

    fn challenge(
        &self,
        route: &RouteConfig,
        error: OAuthError,
        names: ChallengeNames,
    ) -> OAuthError {
        self.challenge_for(route, error, names, &needed(route))
    }

    /// A challenge naming `scopes`: a step-up (RFC 6750 §3.1 insufficient_scope) names every
    /// scope the request needs, so a client asks for all of them at once.
    fn challenge_for(
        &self,
        route: &RouteConfig,
        error: OAuthError,
        names: ChallengeNames,
        scopes: &[&str],
    ) -> OAuthError {
        error.with_bearer_challenge(BearerChallenge {
            resource_metadata: Some(format!("{}{}", self.origin, metadata_path(route))),
            scope: Some(scopes.join(" ")),
            names,
            dpop_algs: None,
        })
    }

    async fn pass(&self, req: Req, at: usize, path: &str) -> Result<Resp, OAuthError> {
        let route = &self.routes[at];
        let claims = self.authenticate(&req, at)?;
        let (mut req, extra) = self.inspect(req, route).await?;
        let identity = self.authorise(route, claims, &extra).await?;
        let grant = identity.grant;
        let uri = forward::upstream_uri(route, path, req.uri().query()).ok_or_else(|| {
            self.refuse(route, ErrorCode::InvalidRequest, "malformed request target")
        })?;
        // RFC 6750 §3.1 invalid_token ("invalid for other reasons"): the token names an identity
        // this resource cannot be told, and forwarding without it would let the upstream take
        // the request for someone else's or for an anonymous one.
        let headers = identity.headers().ok_or_else(|| {
            self.refuse(
                route,
                ErrorCode::InvalidToken,
                "the token names an identity that cannot be passed to the resource",
            )
        })?;
        let upstream_token = self.upstream_token(route, grant).await?;
        forward::rewrite(&mut req, uri, headers, self.issuer.starts_with("https"));
        if let Some(name) = &route.upstream_token_header {
            // Only the guard says what the user's upstream token is: a client's copy goes.
            req.headers_mut().remove(name.as_str());
            if let Some(value) = upstream_token {
                req.headers_mut().insert(
                    hyper::header::HeaderName::from_bytes(name.as_bytes())
                        .expect("validated header name"),
                    value,
                );
            }
        }
        self.forward(req, route).await
    }

    /// The header value for a route with `upstream_token_header`: the grant's current access token
    /// at the upstream provider, refreshed when expired; none when the grant holds no upstream
    /// tokens. A refresh the provider refuses is RFC 6750 invalid_token (the client authorizes
    /// again, and the user signs in again); a provider or database out of reach is a 503.
    async fn upstream_token(
        &self,
        route: &RouteConfig,
        grant: Uuid,
    ) -> Result<Option<HeaderValue>, OAuthError> {
        if route.upstream_token_header.is_none() {
            return Ok(None);
        }
        let Some(tokens) = &self.upstream_tokens else {
            return Ok(None);
        };
        let unusable = || {
            self.refuse(
                route,
                ErrorCode::InvalidToken,
                "the sign-in provider's authorization behind this token has ended; authorize again",
            )
        };
        match tokens.access_token(grant).await {
            Ok(None) => Ok(None),
            Ok(Some(token)) => {
                let mut value = HeaderValue::from_str(&token).map_err(|_| unusable())?;
                value.set_sensitive(true);
                Ok(Some(value))
            }
            Err(crate::upstream::Unusable::Unavailable) => Err(OAuthError::unavailable()),
            Err(crate::upstream::Unusable::Ended) => Err(unusable()),
        }
    }

    /// A token in the Authorization header, valid for this route's resource.
    fn authenticate(&self, req: &Req, at: usize) -> Result<AccessClaims, OAuthError> {
        let route = &self.routes[at];
        if req
            .uri()
            .query()
            .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token"))
        {
            return Err(self.refuse(
                route,
                ErrorCode::InvalidRequest,
                "tokens are accepted in the Authorization header only",
            ));
        }
        if req.headers().get(header::AUTHORIZATION).is_none() {
            let missing = OAuthError::new(ErrorCode::InvalidToken, "an access token is required");
            return Err(self.challenge(route, missing, ChallengeNames::Nothing));
        }
        let (scheme, token) = http::access_token(req.headers()).ok_or_else(|| {
            self.refuse(
                route,
                ErrorCode::InvalidRequest,
                "use the Bearer or DPoP scheme",
            )
        })?;
        let claims = self.verified_claims(route, at, token)?;
        match (scheme, claims.dpop_jkt()) {
            (TokenScheme::Bearer, None) => Ok(claims),
            // RFC 9449 §7.2: a bound token is never a bearer token.
            (TokenScheme::Bearer, Some(_)) => Err(self.dpop_refusal(
                route,
                OAuthError::new(
                    ErrorCode::InvalidToken,
                    "this token is bound to a DPoP key: present it with the DPoP scheme and a proof",
                ),
            )),
            (TokenScheme::Dpop, None) => Err(self.dpop_refusal(
                route,
                OAuthError::new(
                    ErrorCode::InvalidToken,
                    "this token is not bound to a DPoP key: present it with the Bearer scheme",
                ),
            )),
            (TokenScheme::Dpop, Some(jkt)) => {
                self.check_proof(req, token, jkt)
                    .map_err(|e| self.dpop_refusal(route, e))?;
                Ok(claims)
            }
        }
    }

    /// The token's claims, verified for this route's resource (cached per token and route).
    fn verified_claims(
        &self,
        route: &RouteConfig,
        at: usize,
        token: &str,
    ) -> Result<AccessClaims, OAuthError> {
        let cache_key = (Sha256::digest(token.as_bytes()).into(), at);
        // Read before verifying: a set replaced meanwhile leaves this entry stale, not trusted.
        let generation = self.verifier.keys.generation();
        if let Some(claims) = self.verified.get(&cache_key, generation) {
            return Ok(claims);
        }
        let claims = self
            .verifier
            .verify(token, Some(&self.resource_of(route)), true)
            .map_err(|e| self.refuse(route, ErrorCode::InvalidToken, &e.to_string()))?;
        self.verified.insert(cache_key, claims.clone(), generation);
        Ok(claims)
    }

    /// RFC 9449 §7.1: the request's proof is for this request (method, URL as the client
    /// addressed it, the token's hash) and made with the key the token is bound to.
    fn check_proof(&self, req: &Req, token: &str, jkt: &str) -> Result<(), OAuthError> {
        let Some(dpop) = &self.dpop else {
            return Err(OAuthError::unavailable());
        };
        let url = format!("{}{}", self.origin, req.uri().path());
        let proof = dpop
            .check(req.headers(), req.method().as_str(), &url, Some(token))?
            .ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "a DPoP-bound token needs a DPoP proof",
                )
            })?;
        if proof.jkt != jkt {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "the DPoP proof is made with another key than the one the token is bound to",
            ));
        }
        Ok(())
    }

    /// A refusal of a DPoP request with RFC 9449 §7.1's challenge (401, the accepted algorithms);
    /// a server error stays what it is.
    fn dpop_refusal(&self, route: &RouteConfig, error: OAuthError) -> OAuthError {
        if error.is_unavailable_or_server_error() {
            return error;
        }
        let error = error.with_status(StatusCode::UNAUTHORIZED);
        error.with_bearer_challenge(BearerChallenge {
            resource_metadata: Some(format!("{}{}", self.origin, metadata_path(route))),
            scope: Some(needed(route).join(" ")),
            names: ChallengeNames::CodeAndDescription,
            dpop_algs: Some(oauth_rules::dpop::SIGNING_ALGS.join(" ")),
        })
    }

    /// The request as it will be forwarded, and the scopes the route's `tool_scopes` add for it:
    /// a POST on a route with rules is read (bounded) to know which JSON-RPC requests it carries;
    /// anything else streams through untouched.
    async fn inspect(
        &self,
        req: Req,
        route: &RouteConfig,
    ) -> Result<(forward::ProxyReq, Vec<String>), OAuthError> {
        if route.tool_scopes.is_empty() || req.method() != hyper::Method::POST {
            return Ok((req.map(forward::streamed), Vec::new()));
        }
        let (parts, body) = req.into_parts();
        let body = http::read_body(hyper::Request::new(body), self.body_limits)
            .await
            .map_err(|e| self.challenge(route, e, ChallengeNames::CodeAndDescription))?;
        let calls = tools::calls(&body).ok_or_else(|| {
            self.refuse(
                route,
                ErrorCode::InvalidRequest,
                "the body is not a JSON-RPC message",
            )
        })?;
        if let Some(mismatch) = tools::header_mismatch(&parts.headers, &calls) {
            return Err(self.refuse(route, ErrorCode::InvalidRequest, mismatch));
        }
        let extra = tools::scopes_for(&route.tool_scopes, &calls)
            .into_iter()
            .map(str::to_owned)
            .collect();
        Ok((
            hyper::Request::from_parts(parts, forward::whole(body)),
            extra,
        ))
    }

    /// The token's grant is not revoked and still live, and it carries the route's scopes and
    /// `extra` (what the request's tool calls need).
    async fn authorise(
        &self,
        route: &RouteConfig,
        claims: AccessClaims,
        extra: &[String],
    ) -> Result<Identity, OAuthError> {
        let Some(grant) = claims.grant_id else {
            return Err(self.refuse(route, ErrorCode::InvalidToken, "the token names no grant"));
        };
        if !self.revoked.is_synced() {
            return Err(OAuthError::unavailable());
        }
        let revoked = || self.refuse(route, ErrorCode::InvalidToken, "the token has been revoked");
        let jti = claims.jti_uuid();
        if self.revoked.is_revoked(Some(grant), claims.family_id, jti) {
            return Err(revoked());
        }
        let mut scopes = needed(route);
        for scope in extra {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
        if !scopes.iter().all(|s| self.holds(&claims, s)) {
            let lacking = OAuthError::new(
                ErrorCode::InsufficientScope,
                "the token lacks a scope this request needs",
            );
            return Err(self.challenge_for(
                route,
                lacking,
                ChallengeNames::CodeAndDescription,
                &scopes,
            ));
        }
        let props = self
            .props_of(grant, claims.family_id, jti)
            .await?
            .ok_or_else(revoked)?;
        Ok(Identity {
            claims,
            grant,
            props,
        })
    }

    async fn props_of(
        &self,
        grant: Uuid,
        family: Option<Uuid>,
        jti: Option<Uuid>,
    ) -> Result<Option<Value>, OAuthError> {
        if let Some(props) = self.props.get(grant) {
            return Ok(Some(props));
        }
        let Some(live) = self.db.userinfo(Some(grant), family, jti).await? else {
            return Ok(None);
        };
        self.props.insert(grant, live.props.clone());
        Ok(Some(live.props))
    }

    async fn forward(
        &self,
        req: forward::ProxyReq,
        route: &RouteConfig,
    ) -> Result<Resp, OAuthError> {
        match tokio::time::timeout(self.upstream_timeout, self.client.request(req)).await {
            Err(_) => Err(OAuthError::new(
                ErrorCode::UpstreamUnavailable,
                "the upstream did not answer in time",
            )
            .with_status(StatusCode::GATEWAY_TIMEOUT)),
            Ok(Err(error)) => {
                tracing::warn!(%error, upstream = %route.upstream, "upstream request failed");
                Err(OAuthError::new(
                    ErrorCode::UpstreamUnavailable,
                    "the upstream could not be reached",
                ))
            }
            Ok(Ok(resp)) => Ok(forward::downstream(resp)),
        }
    }
}

/// The route's scopes a token must carry and a challenge names: all but offline_access.
fn needed(route: &RouteConfig) -> Vec<&str> {
    route
        .scopes
        .iter()
        .map(String::as_str)
        .filter(|s| *s != OFFLINE_ACCESS)
        .collect()
}

pub fn metadata_path(route: &RouteConfig) -> String {
    let suffix = if route.prefix == "/" {
        ""
    } else {
        route.prefix.as_str()
    };
    format!("/.well-known/oauth-protected-resource{suffix}")
}
