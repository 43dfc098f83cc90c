//! HTTP plumbing shared by the endpoints: bodies, forms, client credentials, responses.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use crate::error::{ErrorCode, OAuthError, Rendering};

pub type Req = Request<Incoming>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response bodies are either whole (OAuth endpoints) or streamed (the MCP proxy).
pub type Body = BoxBody<Bytes, BoxError>;
pub type Resp = Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The address the request's connection came from (set by the server on every request).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// How much of a request body is read, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// A client that sends its headers and then trickles (or withholds) its body holds a
    /// connection and a task: it is answered 408 after this long.
    pub read_timeout: std::time::Duration,
}

/// The request body, refused beyond `limits.max_bytes` bytes or `limits.read_timeout`.
pub async fn read_body(req: Req, limits: BodyLimits) -> Result<Bytes, OAuthError> {
    let limit = limits.max_bytes;
    let collect = Limited::new(req.into_body(), limit).collect();
    let Ok(collected) = tokio::time::timeout(limits.read_timeout, collect).await else {
        return Err(
            OAuthError::invalid_request("the request body did not arrive in time")
                .with_status(StatusCode::REQUEST_TIMEOUT),
        );
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(OAuthError::invalid_request(
            format!("request body exceeds {limit} bytes"),
        )),
        Err(_) => Err(OAuthError::invalid_request(
            "request body could not be read",
        )),
    }
}

/// One `application/x-www-form-urlencoded` component, decoded strictly: bytes that are not UTF-8
/// are refused rather than replaced, since no OAuth parameter may contain them, and so is NUL,
/// which no parameter may contain either and PostgreSQL text cannot hold. Every form, query
/// string and Basic credential is decoded here, so nothing unstorable reaches SQL.
pub fn form_decode(component: &[u8]) -> Result<String, OAuthError> {
    let plus_as_space: Vec<u8> = component
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    let decoded = percent_encoding::percent_decode(&plus_as_space)
        .decode_utf8()
        .map_err(|_| OAuthError::invalid_request("parameters must be UTF-8"))?;
    if decoded.contains('\0') {
        return Err(OAuthError::invalid_request(
            "parameters must not contain NUL characters",
        ));
    }
    Ok(decoded.into_owned())
}

/// Whether PostgreSQL's jsonb can hold `value`: it cannot hold NUL (`\u0000`) in a string or an
/// object key, at any depth. (Lone surrogates never get this far: serde_json refuses them.)
pub fn jsonb_storable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(jsonb_storable),
        Value::Object(map) => map
            .iter()
            .all(|(key, item)| !key.contains('\0') && jsonb_storable(item)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
    }
}

/// Parameters of a form or query string, in order, with repeats kept so they can be refused.
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(input: &[u8]) -> Result<Self, OAuthError> {
        let mut params = Vec::new();
        for pair in input.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
            let mut halves = pair.splitn(2, |b| *b == b'=');
            let name = form_decode(halves.next().unwrap_or_default())?;
            let value = form_decode(halves.next().unwrap_or_default())?;
            params.push((name, value));
        }
        Ok(Self(params))
    }

    /// One parameter: absent, or present once (RFC 6749 §3.1: parameters must not repeat).
    /// An empty value counts as absent (§3.1: "treated as if they were omitted").
    pub fn single(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut values = self
            .0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!("{name} is repeated")));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.single(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }

    /// As JSON for the extension: a name maps to its value, or to an array when repeated, so the
    /// extension (which knows whether it may redirect yet) decides what a repeat means. Empty
    /// values are left out, as `single` treats them (RFC 6749 §3.1).
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        for (name, value) in self.0.iter().filter(|(_, v)| !v.is_empty()) {
            match map.get_mut(name) {
                None => {
                    map.insert(name.clone(), Value::String(value.clone()));
                }
                Some(Value::Array(values)) => values.push(Value::String(value.clone())),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, Value::String(value.clone())]);
                }
            }
        }
        Value::Object(map)
    }
}

/// The form body of a POST, which must be `application/x-www-form-urlencoded`.
pub async fn read_form(req: Req, limits: BodyLimits) -> Result<(HeaderMap, Params), OAuthError> {
    let headers = req.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let body = read_body(req, limits).await?;
    Ok((headers, Params::parse(&body)?))
}

/// A client's POST to a back-channel endpoint: who it says it is, and its parameters.
pub async fn read_client_form(
    req: Req,
    limits: BodyLimits,
) -> Result<(ClientCredentials, Params), OAuthError> {
    let (headers, params) = read_form(req, limits).await?;
    let client = client_credentials(&headers, &params)?;
    Ok((client, params))
}

/// The back-channel endpoints answer another method than POST with `invalid_request` (400).
pub fn require_post(req: &Req, endpoint: &str) -> Result<(), OAuthError> {
    if req.method() == hyper::Method::POST {
        Ok(())
    } else {
        Err(OAuthError::invalid_request(format!(
            "the {endpoint} endpoint accepts POST only"
        )))
    }
}

pub struct ClientCredentials {
    pub client_id: String,
    /// The secret, or for `private_key_jwt` the client assertion: the extension tells them apart
    /// by the client's registered method.
    pub secret: Option<String>,
    pub via_basic: bool,
    /// The client authenticated with a JWT assertion (RFC 7523 §2.2), carried in `secret`.
    pub via_assertion: bool,
}

impl ClientCredentials {
    /// The client assertion, when the client presented one.
    pub fn assertion(&self) -> Option<&str> {
        self.secret.as_deref().filter(|_| self.via_assertion)
    }

    /// `error` as this client is answered: challenged with Basic when it used Basic.
    pub fn challenged(&self, error: OAuthError) -> OAuthError {
        error.with_basic_challenge(self.via_basic)
    }
}

/// Client authentication per RFC 6749 §2.3: HTTP Basic (form-encoded id and secret), the secret in
/// the body, or a JWT assertion (RFC 7523 §2.2); exactly one. A public client sends only
/// `client_id`.
pub fn client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    let client = parse_client_credentials(headers, params)?;
    // The one place every back-channel endpoint learns its client: its rate limit is counted
    // here, before the database is asked anything.
    crate::ops::client_named(
        &client.client_id,
        params.single("grant_type").ok().flatten(),
    )?;
    Ok(client)
}

fn parse_client_credentials(
    headers: &HeaderMap,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    let body_id = params.single("client_id")?;
    let body_secret = params.single("client_secret")?;
    let assertion_type = params.single("client_assertion_type")?;
    let assertion = params.single("client_assertion")?;
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
    let invalid_client =
        |d: &str| OAuthError::new(ErrorCode::InvalidClient, d).with_basic_challenge(true);
    if assertion_type.is_some() || assertion.is_some() {
        if basic.is_some() || body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        return assertion_credentials(body_id, assertion_type, assertion);
    }
    if let Some(encoded) = basic {
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        let decoded = STANDARD
            .decode(encoded)
            .map_err(|_| invalid_client("malformed Basic credentials"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| invalid_client("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| invalid_client("malformed Basic credentials"))?;
        let decode = |s: &str| {
            form_decode(s.as_bytes()).map_err(|_| invalid_client("malformed Basic credentials"))
        };
        let id = decode(id)?;
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the Basic credentials",
            ));
        }
        return Ok(ClientCredentials {
            client_id: id,
            secret: Some(decode(secret)?),
            via_basic: true,
            via_assertion: false,
        });
    }
    match body_id {
        Some(id) => Ok(ClientCredentials {
            client_id: id.to_owned(),
            secret: body_secret.map(str::to_owned),
            via_basic: false,
            via_assertion: false,
        }),
        None => Err(invalid_client("client authentication is required")),
    }
}

/// RFC 7521 §4.2 with RFC 7523 §2.2: the client is the one the assertion names (its `iss`, read
/// here unverified only to know whom to ask; the extension verifies it), and a `client_id` sent
/// beside it must be that client. A failed assertion is `invalid_client` (§4.2.1).
fn assertion_credentials(
    body_id: Option<&str>,
    assertion_type: Option<&str>,
    assertion: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    let invalid_client = |d: &str| OAuthError::new(ErrorCode::InvalidClient, d);
    let (Some(assertion_type), Some(assertion)) = (assertion_type, assertion) else {
        return Err(OAuthError::invalid_request(
            "client_assertion and client_assertion_type go together",
        ));
    };
    if assertion_type != oauth_rules::client_assertion::ASSERTION_TYPE {
        return Err(invalid_client(&format!(
            "client_assertion_type must be {}",
            oauth_rules::client_assertion::ASSERTION_TYPE
        )));
    }
    let issuer = oauth_rules::client_assertion::unverified_issuer(assertion)
        .filter(|iss| !iss.is_empty())
        .ok_or_else(|| {
            invalid_client("client_assertion is not a signed JWT naming its client (iss)")
        })?;
    if body_id.is_some_and(|id| id != issuer) {
        return Err(invalid_client(
            "client_id differs from the client the assertion names",
        ));
    }
    Ok(ClientCredentials {
        client_id: issuer,
        secret: Some(assertion.to_owned()),
        via_basic: false,
        via_assertion: true,
    })
}

/// The bearer token of an `Authorization: Bearer` header (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    match access_token(headers)? {
        (TokenScheme::Bearer, token) => Some(token),
        (TokenScheme::Dpop, _) => None,
    }
}

/// How an access token is presented: RFC 6750 §2.1 or RFC 9449 §7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScheme {
    Bearer,
    Dpop,
}

/// The access token in the Authorization header, and its scheme (case-insensitive, RFC 9110 §11.1).
pub fn access_token(headers: &HeaderMap) -> Option<(TokenScheme, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        TokenScheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        TokenScheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token.trim())).filter(|(_, t)| !t.is_empty())
}

fn base(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder().status(status)
}

pub fn json(status: StatusCode, body: &Value) -> Resp {
    base(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(body.to_string()))
        .expect("static response parts")
}

/// JSON that must never be cached: token, introspection, registration and every OAuth error.
pub fn json_no_store(status: StatusCode, body: &Value) -> Resp {
    let mut resp = json(status, body);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Every error response: how it looks is what the error says (`OAuthError::rendering`).
pub fn error(err: &OAuthError) -> Resp {
    let status = err.status();
    let mut resp = match &err.rendering {
        Rendering::Page { title } => {
            page_error(status, title.clone(), err.description.clone().into())
        }
        _ => json_no_store(status, &err.body()),
    };
    // What the error was, for the request metrics (never rendered).
    resp.extensions_mut().insert(err.clone());
    let retry_after = err
        .retry_after
        .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
    if let Some(seconds) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    let headers = resp.headers_mut();
    if let Some(nonce) = err
        .dpop_nonce
        .as_deref()
        .and_then(|n| HeaderValue::from_str(n).ok())
    {
        headers.insert("dpop-nonce", nonce);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("WWW-Authenticate, DPoP-Nonce"),
        );
    }
    match &err.rendering {
        // RFC 6749 §5.2: a failed client authentication by Basic is answered with its challenge.
        Rendering::Json {
            basic_challenge: true,
        } if err.code == ErrorCode::InvalidClient => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"oauth\""),
            );
        }
        Rendering::Bearer(challenge) => {
            if let Ok(value) = HeaderValue::from_str(&challenge.header_value(err)) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
            // Browser-based MCP clients must read the challenge to find the resource's metadata.
            if challenge.resource_metadata.is_some() && err.dpop_nonce.is_none() {
                headers.insert(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    HeaderValue::from_static("WWW-Authenticate"),
                );
            }
        }
        _ => {}
    }
    resp
}

/// A JSON answer that must not be cached, or the error.
pub fn json_or_error(status: StatusCode, outcome: Result<Value, OAuthError>) -> Resp {
    match outcome {
        Ok(body) => json_no_store(status, &body),
        Err(e) => error(&e),
    }
}

pub fn redirect(location: &str, status: StatusCode) -> Resp {
    match HeaderValue::from_str(location) {
        Ok(value) => base(status)
            .header(header::LOCATION, value)
            .header(header::CACHE_CONTROL, "no-store")
            .body(full(Bytes::new()))
            .expect("static response parts"),
        Err(_) => error(&OAuthError::server_error()),
    }
}

pub fn empty(status: StatusCode) -> Resp {
    base(status)
        .header(header::CACHE_CONTROL, "no-store")
        .body(full(Bytes::new()))
        .expect("static response parts")
}

/// HTML for the browser-facing endpoints: never framed, never cached, loading nothing. Pages come
/// from `views` through [`page`], which allows each page's own style.
pub fn html(status: StatusCode, body: String) -> Resp {
    base(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            "content-security-policy",
            "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        .header("x-frame-options", "DENY")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(full(body))
        .expect("static response parts")
}

/// A page of `views`, with the Content-Security-Policy that lets exactly it load (its own style,
/// the configured logos), never framed, never cached.
pub fn page(status: StatusCode, page: crate::views::Page) -> Resp {
    let mut resp = html(status, page.body);
    if let Ok(csp) = HeaderValue::from_str(&page.csp) {
        resp.headers_mut().insert("content-security-policy", csp);
    }
    resp
}

/// A failure page. Rendered here with the default texts and branding; `endpoints::dispatch`
/// renders it again with the deployment's (`views::Pending`), since errors are made without `App`.
pub fn page_error(
    status: StatusCode,
    title: crate::views::Text,
    detail: crate::views::Text,
) -> Resp {
    let mut resp = page(
        status,
        crate::views::Views::fallback().message(&title, &detail),
    );
    resp.extensions_mut()
        .insert(crate::views::Pending { title, detail });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_non_utf8_parameters_are_refused() {
        let p = Params::parse(b"a=1&b=2&a=3").unwrap();
        assert!(p.single("a").is_err());
        assert_eq!(p.single("b").unwrap(), Some("2"));
        assert_eq!(p.to_json(), serde_json::json!({"a": ["1", "3"], "b": "2"}));
        assert!(Params::parse(b"a=%FF").is_err());
        assert!(Params::parse(b"a=%00").is_err());
        assert!(Params::parse(b"a%00=1").is_err());
        assert!(Params::parse(b"a=x\0y").is_err());
        assert_eq!(
            Params::parse(b"a=%01").unwrap().single("a").unwrap(),
            Some("\u{1}")
        );
        assert_eq!(Params::parse(b"a=").unwrap().single("a").unwrap(), None);
    }

    #[test]
    fn json_with_nul_in_a_string_or_key_at_any_depth_is_not_storable() {
        use serde_json::json;
        assert!(jsonb_storable(&json!({"a": ["\u{1}", {"b": 1}]})));
        assert!(!jsonb_storable(&json!({"a": "x\u{0}"})));
        assert!(!jsonb_storable(&json!({"a": [{"b": ["\u{0}"]}]})));
        assert!(!jsonb_storable(&json!({"a": {"k\u{0}": 1}})));
    }

    #[test]
    fn empty_parameters_are_omitted_in_what_the_extension_sees() {
        let p = Params::parse(b"state=&scope=mcp&nonce=").unwrap();
        assert_eq!(p.to_json(), serde_json::json!({"scope": "mcp"}));
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20client:s%3Acret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().unwrap(),
        );
        let creds = client_credentials(&headers, &Params::default()).unwrap();
        assert_eq!(creds.client_id, "my client");
        assert_eq!(creds.secret.as_deref(), Some("s:cret"));
        let both = Params::parse(b"client_secret=x").unwrap();
        assert!(client_credentials(&headers, &both).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Any bytes parse to parameters or to invalid_request; never a panic.
        #[test]
        fn form_parsing_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(params) = Params::parse(&input) {
                for (name, _) in &params.0 {
                    let _ = params.single(name);
                }
                let _ = params.to_json();
            }
        }

        /// Any Authorization header yields credentials or an OAuth error; never a panic.
        #[test]
        fn client_authentication_parsing_never_panics(value in "\\PC{0,200}", body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::AUTHORIZATION, v);
            }
            if let Ok(params) = Params::parse(&body) {
                let _ = client_credentials(&headers, &params);
            }
            let _ = bearer_token(&headers);
        }

        /// Basic credentials round-trip through their form encoding, whatever the characters.
        #[test]
        fn basic_credentials_round_trip(id in "[^:\\x00-\\x1f]{1,40}", secret in "\\PC{0,60}") {
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let mut headers = HeaderMap::new();
            let value = format!("Basic {}", STANDARD.encode(format!("{}:{}", enc(&id), enc(&secret))));
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
            let creds = client_credentials(&headers, &Params::default()).unwrap();
            prop_assert_eq!(creds.client_id, id);
            prop_assert_eq!(creds.secret, Some(secret));
        }
    }
}
