//! The request as the upstream sees it (no token, the verified identity in headers, no
//! hop-by-hop headers), and forwarding it with both bodies streamed unbuffered.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::config::RouteConfig;
use crate::http::{BoxError, PeerAddr, Resp};

/// A request body on its way upstream: streamed as it arrives, or whole when the guard had to
/// read it (a route's `tool_scopes`).
pub type ProxyBody = Either<Incoming, Full<Bytes>>;
pub type ProxyReq = hyper::Request<ProxyBody>;
pub type ProxyClient = Client<HttpConnector, ProxyBody>;

pub fn streamed(body: Incoming) -> ProxyBody {
    Either::Left(body)
}

pub fn whole(body: Bytes) -> ProxyBody {
    Either::Right(Full::new(body))
}

pub fn new_client() -> ProxyClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
}

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

/// Where the client says it connected from and through what: a client can write anything there,
/// so none of it is passed on; `X-Forwarded-For` is the address this gateway was reached from.
const CLIENT_FORWARDING: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// The upstream URL for `path` (dot-segments removed) and `query` under `route`, or `None` when
/// it does not parse.
pub fn upstream_uri(route: &RouteConfig, path: &str, query: Option<&str>) -> Option<hyper::Uri> {
    let rest = if route.prefix == "/" {
        path
    } else {
        &path[route.prefix.len()..]
    };
    let mut target = format!("{}{}", route.upstream.trim_end_matches('/'), rest);
    if target.is_empty() || (rest.is_empty() && route.upstream.ends_with('/')) {
        target.push('/');
    }
    if let Some(q) = query {
        target.push('?');
        target.push_str(q);
    }
    target.parse().ok()
}

/// Replaces what the client sent about itself with what the guard verified.
pub fn rewrite(
    req: &mut ProxyReq,
    uri: hyper::Uri,
    identity: Vec<(&'static str, HeaderValue)>,
    https: bool,
) {
    let host = req.headers().get(header::HOST).cloned();
    let peer = req.extensions().get::<PeerAddr>().copied();
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
    for name in CLIENT_FORWARDING {
        headers.remove(name);
    }
    if let Some(PeerAddr(peer)) = peer
        && let Ok(address) = HeaderValue::from_str(&peer.ip().to_string())
    {
        headers.insert(HeaderName::from_static("x-forwarded-for"), address);
    }
    for (name, value) in identity {
        headers.insert(HeaderName::from_static(name), value);
    }
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    *req.uri_mut() = uri;
    *req.version_mut() = hyper::Version::HTTP_11;
}

/// The upstream's response as the client gets it.
pub fn downstream(upstream: hyper::Response<hyper::body::Incoming>) -> Resp {
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
