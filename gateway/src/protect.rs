//! The gateway as the protected-resource front door of MCP servers (RFC 9728, RFC 6750, MCP
//! authorization): it checks the bearer token, forwards the request to the upstream without the
//! token and with the verified identity in headers, and streams both bodies unbuffered.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::app::App;
use crate::config::RouteConfig;
use crate::http::{self, BoxError, Req, Resp};

pub type ProxyClient = Client<HttpConnector, hyper::body::Incoming>;

/// Identity headers the upstream may trust: any a client sends is removed first.
const IDENTITY_PREFIX: &str = "x-oauth-";

/// RFC 9110 §7.6.1 hop-by-hop headers, which describe one connection and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The grant's `props`, looked up once per grant and kept briefly (the revoked set, not this
/// cache, decides liveness).
#[derive(Default)]
pub struct PropsCache {
    entries: RwLock<HashMap<Uuid, (Value, Instant)>>,
}

const PROPS_TTL: Duration = Duration::from_secs(60);

/// Tokens whose signature and claims were verified for a route, by SHA-256 of the token: MCP
/// clients present one token for many calls, and a signature check costs more than the rest of a
/// proxied request. Expiry and revocation are still checked on every use.
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<([u8; 32], usize), Value>>,
}

const VERIFIED_CAPACITY: usize = 100_000;

impl VerifiedTokens {
    fn get(&self, key: &([u8; 32], usize)) -> Option<Value> {
        let claims = self
            .entries
            .read()
            .expect("verified lock")
            .get(key)
            .cloned()?;
        let now = jsonwebtoken::get_current_timestamp();
        claims["exp"]
            .as_u64()
            .is_some_and(|exp| exp > now)
            .then_some(claims)
    }

    fn insert(&self, key: ([u8; 32], usize), claims: Value) {
        let mut entries = self.entries.write().expect("verified lock");
        if entries.len() >= VERIFIED_CAPACITY {
            entries.clear();
        }
        entries.insert(key, claims);
    }
}

pub fn route_for<'a>(app: &'a App, path: &str) -> Option<&'a RouteConfig> {
    app.config
        .routes
        .iter()
        .filter(|r| {
            r.prefix == "/" || path == r.prefix || path.starts_with(&format!("{}/", r.prefix))
        })
        .max_by_key(|r| r.prefix.len())
}

pub fn resource_of(app: &App, route: &RouteConfig) -> String {
    route
        .resource
        .clone()
        .unwrap_or_else(|| format!("{}{}", app.config.origin(), route.prefix))
}

pub fn metadata_path(route: &RouteConfig) -> String {
    let suffix = if route.prefix == "/" {
        ""
    } else {
        route.prefix.as_str()
    };
    format!("/.well-known/oauth-protected-resource{suffix}")
}

/// The route whose RFC 9728 metadata lives at `path`.
pub fn route_for_metadata<'a>(app: &'a App, path: &str) -> Option<&'a RouteConfig> {
    app.config.routes.iter().find(|r| metadata_path(r) == path)
}

pub fn metadata(app: &App, route: &RouteConfig) -> Resp {
    let scopes: Vec<&String> = route
        .scopes
        .iter()
        .filter(|s| *s != "offline_access")
        .collect();
    let mut resp = http::json(
        StatusCode::OK,
        &json!({
            "resource": resource_of(app, route),
            "authorization_servers": [app.config.issuer],
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

fn challenge(
    app: &App,
    route: &RouteConfig,
    status: StatusCode,
    error: Option<(&str, &str)>,
) -> Resp {
    let mut value = format!(
        "Bearer resource_metadata=\"{}{}\", scope=\"{}\"",
        app.config.origin(),
        metadata_path(route),
        route.scopes.join(" ")
    );
    let body = match error {
        Some((code, description)) => {
            value.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
            json!({ "error": code, "error_description": description })
        }
        None => {
            json!({ "error": "invalid_token", "error_description": "an access token is required" })
        }
    };
    let mut resp = http::json_no_store(status, &body);
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate"),
    );
    resp
}

async fn props_of(
    app: &App,
    grant: Uuid,
    family: Option<Uuid>,
) -> Result<Option<Value>, crate::error::OAuthError> {
    if let Some((props, at)) = app.props.entries.read().expect("props lock").get(&grant)
        && at.elapsed() < PROPS_TTL
    {
        return Ok(Some(props.clone()));
    }
    let live = app
        .db
        .call("SELECT oauth.userinfo($1, $2)", &[&Some(grant), &family])
        .await?;
    if live["active"] != json!(true) {
        return Ok(None);
    }
    let props = live["props"].clone();
    app.props
        .entries
        .write()
        .expect("props lock")
        .insert(grant, (props.clone(), Instant::now()));
    Ok(Some(props))
}

pub async fn handle(app: &App, mut req: Req, route: &RouteConfig) -> Resp {
    if req
        .uri()
        .query()
        .is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token"))
    {
        return challenge(
            app,
            route,
            StatusCode::BAD_REQUEST,
            Some((
                "invalid_request",
                "tokens are accepted in the Authorization header only",
            )),
        );
    }
    let token = match req.headers().get(header::AUTHORIZATION) {
        None => return challenge(app, route, StatusCode::UNAUTHORIZED, None),
        Some(_) => match http::bearer_token(req.headers()) {
            Some(token) => token.to_owned(),
            None => {
                return challenge(
                    app,
                    route,
                    StatusCode::BAD_REQUEST,
                    Some(("invalid_request", "use the Bearer scheme")),
                );
            }
        },
    };
    let resource = resource_of(app, route);

    let route_index = app
        .config
        .routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .unwrap_or(usize::MAX);
    let cache_key: ([u8; 32], usize) = (Sha256::digest(token.as_bytes()).into(), route_index);
    let claims = match app.verified.get(&cache_key) {
        Some(claims) => claims,
        None => match app.verify_own_token(&token, Some(&resource), true) {
            Ok(claims) => {
                app.verified.insert(cache_key, claims.clone());
                claims
            }
            Err(e) => {
                return challenge(
                    app,
                    route,
                    StatusCode::UNAUTHORIZED,
                    Some(("invalid_token", &e.to_string())),
                );
            }
        },
    };
    let grant: Option<Uuid> = claims["grant_id"].as_str().and_then(|s| s.parse().ok());
    let family: Option<Uuid> = claims["family_id"].as_str().and_then(|s| s.parse().ok());
    let Some(grant) = grant else {
        return challenge(
            app,
            route,
            StatusCode::UNAUTHORIZED,
            Some(("invalid_token", "the token names no grant")),
        );
    };
    if !app.revoked.is_synced() {
        return http::error(&crate::error::OAuthError::unavailable());
    }
    if app.revoked.is_revoked(Some(grant), family) {
        return challenge(
            app,
            route,
            StatusCode::UNAUTHORIZED,
            Some(("invalid_token", "the token has been revoked")),
        );
    }
    let granted: Vec<&str> = claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .collect();
    if !route.scopes.iter().all(|s| granted.contains(&s.as_str())) {
        return challenge(
            app,
            route,
            StatusCode::FORBIDDEN,
            Some((
                "insufficient_scope",
                "the token lacks a scope this resource needs",
            )),
        );
    }
    let props = match props_of(app, grant, family).await {
        Ok(Some(props)) => props,
        Ok(None) => {
            return challenge(
                app,
                route,
                StatusCode::UNAUTHORIZED,
                Some(("invalid_token", "the token has been revoked")),
            );
        }
        Err(e) => return http::error(&e),
    };

    // Rewrite the request for the upstream.
    let path = req.uri().path();
    let rest = if route.prefix == "/" {
        path
    } else {
        &path[route.prefix.len()..]
    };
    let mut target = format!("{}{}", route.upstream.trim_end_matches('/'), rest);
    if target.is_empty() || (rest.is_empty() && route.upstream.ends_with('/')) {
        target.push('/');
    }
    if let Some(q) = req.uri().query() {
        target.push('?');
        target.push_str(q);
    }
    let Ok(uri) = target.parse::<hyper::Uri>() else {
        return challenge(
            app,
            route,
            StatusCode::BAD_REQUEST,
            Some(("invalid_request", "malformed request target")),
        );
    };
    let host = req.headers().get(header::HOST).cloned();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(IDENTITY_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    let identity = [
        (
            "x-oauth-subject",
            claims["sub"].as_str().unwrap_or_default().to_owned(),
        ),
        (
            "x-oauth-client-id",
            claims["client_id"].as_str().unwrap_or_default().to_owned(),
        ),
        (
            "x-oauth-scope",
            claims["scope"].as_str().unwrap_or_default().to_owned(),
        ),
        ("x-oauth-grant-id", grant.to_string()),
        ("x-oauth-props", props.to_string()),
    ];
    for (name, value) in identity {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if app.config.issuer.starts_with("https") {
            "https"
        } else {
            "http"
        }),
    );
    *req.uri_mut() = uri;
    *req.version_mut() = hyper::Version::HTTP_11;

    let upstream =
        match tokio::time::timeout(app.config.upstream_timeout, app.proxy.request(req)).await {
            Err(_) => {
                return gateway_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not answer in time",
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, upstream = %route.upstream, "upstream request failed");
                return gateway_error(StatusCode::BAD_GATEWAY, "the upstream could not be reached");
            }
            Ok(Ok(resp)) => resp,
        };
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Resp::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn gateway_error(status: StatusCode, description: &str) -> Resp {
    http::json_no_store(
        status,
        &json!({ "error": "upstream_unavailable", "error_description": description }),
    )
}

pub fn new_client() -> ProxyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}
