//! Client ID Metadata Documents: fetching the JSON document an `https://` client_id names, with the
//! guards a server needs when strangers choose the URL it fetches (SSRF): https only, every
//! resolved address checked and the vetted one connected to (no DNS rebinding), no redirects, a
//! size cap, one deadline, per-host and global budgets. Validation and the shared (negative) cache
//! are the extension's (`oauth.store_client_document`, `oauth.record_client_document_failure`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::budget::Budget;
use crate::config::CimdConfig;
use crate::db::Db;
use crate::error::{ErrorCode, OAuthError};

/// Fetches a minute across all hosts, per process, for each of unknown and known documents: with
/// wildcard DNS every name has a fresh per-host budget, so only a global one bounds the fan-out.
/// A constant while config.rs is edited elsewhere; meant to become `cimd.global_fetches_per_minute`.
pub const GLOBAL_FETCHES_PER_MINUTE: usize = 60;

/// How many client_ids this process remembers as known (fetched and stored successfully). Only
/// successful fetches, which the global budget paces, add to it; once full, further documents are
/// budgeted as unknown. Meant to become `cimd.max_known_documents`.
const MAX_KNOWN_DOCUMENTS: usize = 10_000;

/// What the browser is told when no answer came back (no address, no connection, no TLS, an HTTP
/// error status): one description for all, or the error page would tell an outsider which ports
/// and services the gateway can reach. The precise reason goes to the log and the database.
const NOT_FETCHED: &str = "the client's metadata document could not be fetched";

pub struct Fetcher {
    config: CimdConfig,
    /// Where fetched documents (and failures) are stored, for every gateway.
    db: Db,
    tls: TlsConnector,
    /// Fetches in the last minute by "known|unknown host": strangers' URLs on a host cannot spend
    /// what the documents of clients already known there need to be refreshed when stale.
    per_host: Budget,
    /// Fetches in the last minute across all hosts, by "known" and "unknown".
    global: Budget,
    /// Client ids whose documents this process fetched and stored successfully: the database
    /// has a client row for them, and a refetch means the copy went stale. The extension's answer
    /// (`fetch_client_document`) does not tell a first fetch from a refetch, hence this set.
    known: Mutex<HashSet<String>>,
    /// Refreshes under way, by client_id: the authorizations of one new client that arrive together
    /// share one fetch (and one unit of the host's budget).
    in_flight: Mutex<HashMap<String, Arc<Flight>>>,
    /// Fetches by kind (document, jwks) and outcome, for the metrics.
    pub fetches: Family<[(&'static str, &'static str); 2], Counter>,
}

/// One refresh of one document, awaited by every authorization that needs it.
type Flight = OnceCell<Result<(), OAuthError>>;

/// A document and how long it may be served from the cache.
#[derive(Debug)]
pub struct Fetched {
    pub document: Value,
    pub fresh_for: Duration,
}

impl Fetcher {
    pub fn new(config: CimdConfig, db: Db) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = &config.extra_ca_file {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cimd.extra_ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("cimd.extra_ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("cimd.extra_ca_file {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            config,
            db,
            tls: TlsConnector::from(Arc::new(tls)),
            per_host: Budget::new(Duration::from_secs(60)),
            global: Budget::new(Duration::from_secs(60)),
            known: Mutex::default(),
            in_flight: Mutex::default(),
            fetches: Family::default(),
        })
    }

    /// Counts one fetch of `kind` (document, jwks): fetched, not_fetched, unusable or
    /// budget_exhausted.
    pub fn count(&self, kind: &'static str, outcome: &'static str) {
        self.fetches
            .get_or_create(&[("kind", kind), ("outcome", outcome)])
            .inc();
    }

    /// The outcome label of a fetch's result.
    pub fn outcome<T>(result: &Result<T, FetchError>) -> &'static str {
        match result {
            Ok(_) => "fetched",
            Err(FetchError::NotFetched(_)) => "not_fetched",
            Err(FetchError::Unusable(_)) => "unusable",
        }
    }

    /// GETs the document, within `config.fetch_timeout` overall.
    pub async fn fetch(&self, url: &Url) -> Result<Fetched, FetchError> {
        let config = &self.config;
        match tokio::time::timeout(config.fetch_timeout, self.fetch_unbounded(url, config)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Unusable(format!(
                "no complete answer within {} s",
                config.fetch_timeout.as_secs_f64()
            ))),
        }
    }

    async fn fetch_unbounded(&self, url: &Url, config: &CimdConfig) -> Result<Fetched, FetchError> {
        use FetchError::{NotFetched, Unusable};
        let host = url
            .host_str()
            .ok_or(NotFetched("the URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let mut tcp = None;
        for address in vetted_addresses(host, port, config.allow_loopback).await? {
            if let Ok(stream) = TcpStream::connect(address).await {
                tcp = Some(stream);
                break;
            }
        }
        let tcp = tcp.ok_or_else(|| NotFetched("could not connect".into()))?;
        let _ = tcp.set_nodelay(true);
        let name = match url.host() {
            Some(url::Host::Domain(d)) => ServerName::try_from(d.to_owned()),
            Some(url::Host::Ipv4(ip)) => Ok(ServerName::IpAddress(IpAddr::V4(ip).into())),
            Some(url::Host::Ipv6(ip)) => Ok(ServerName::IpAddress(IpAddr::V6(ip).into())),
            None => return Err(NotFetched("the URL has no host".into())),
        }
        .map_err(|_| NotFetched("the host is not a valid TLS server name".into()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| NotFetched(format!("TLS handshake failed: {e}")))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|_| NotFetched("HTTP handshake failed".into()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let request = Request::get(path)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "oauth_provider-gateway")
            .body(Empty::<Bytes>::new())
            .map_err(|_| NotFetched("could not build the request".into()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| NotFetched("the request failed".into()))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Unusable(format!(
                "answered {status}; redirects are not followed"
            )));
        }
        if status != StatusCode::OK {
            return Err(NotFetched(format!("answered {status}")));
        }
        if !is_json(response.headers().get(header::CONTENT_TYPE)) {
            return Err(Unusable(
                "the document is not served as application/json".into(),
            ));
        }
        let fresh_for = freshness(response.headers().get(header::CACHE_CONTROL), config);
        let body = Limited::new(response.into_body(), config.max_document_bytes)
            .collect()
            .await
            .map_err(|_| {
                Unusable(format!(
                    "the document is larger than {} bytes or was cut off",
                    config.max_document_bytes
                ))
            })?
            .to_bytes();
        let document = serde_json::from_slice(&body)
            .map_err(|_| Unusable("the document is not valid JSON".into()))?;
        Ok(Fetched {
            document,
            fresh_for,
        })
    }
}

/// Why a fetch gave no document. The reason is logged and recorded either way; the browser is
/// shown it only for `Unusable`.
#[derive(Debug)]
pub enum FetchError {
    /// No HTTP answer, or an error status: the browser is told `NOT_FETCHED` only.
    NotFetched(String),
    /// The address is refused, or an answer came but is not a document (redirect, content type,
    /// size, JSON, deadline): said as is, to help the client's author.
    Unusable(String),
}

impl FetchError {
    /// Why, for the log and the database's negative cache.
    pub fn reason(&self) -> &str {
        match self {
            FetchError::NotFetched(reason) | FetchError::Unusable(reason) => reason,
        }
    }

    /// What the browser is told.
    pub fn shown(&self) -> &str {
        match self {
            FetchError::NotFetched(_) => NOT_FETCHED,
            FetchError::Unusable(reason) => reason,
        }
    }
}

/// The URL of an acceptable client id, or why not: a metadata-document URL by the extension's
/// rule (`oauth_rules`), from a host this deployment's policy allows.
pub fn check_client_id(client_id: &str, config: &CimdConfig) -> Result<Url, String> {
    if let Some(problem) = oauth_rules::client_id::document_url_problem(client_id) {
        return Err(problem.into());
    }
    let url = Url::parse(client_id).map_err(|_| "the client_id is not a URL".to_owned())?;
    let host = url.host_str().ok_or("the client_id URL has no host")?;
    let host = host.to_ascii_lowercase();
    if config
        .denied_hosts
        .iter()
        .any(|pattern| host_matches(pattern, &host))
    {
        return Err(format!("clients from {host} are not accepted"));
    }
    if !config.allowed_hosts.is_empty()
        && !config
            .allowed_hosts
            .iter()
            .any(|pattern| host_matches(pattern, &host))
    {
        return Err(format!("clients from {host} are not accepted"));
    }
    Ok(url)
}

/// `pattern` is a host or `*.suffix` (which matches subdomains, not the suffix itself).
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern == host,
    }
}

/// Resolves `host` to the addresses to connect to, refusing the host when any of them is one an
/// outsider must not make us reach (an attacker controls both the name and its DNS records, so
/// one bad record condemns the name). Connecting to these, not re-resolving, defeats rebinding.
async fn vetted_addresses(
    host: &str,
    port: u16,
    allow_loopback: bool,
) -> Result<Vec<SocketAddr>, FetchError> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        // Whether a name resolves (with the gateway's resolver, which may know internal names) is
        // not the browser's to learn.
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| FetchError::NotFetched(format!("{host} does not resolve")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(FetchError::NotFetched(format!("{host} does not resolve")));
    }
    for address in &addresses {
        let ip = address.ip();
        if is_forbidden(ip) && !(allow_loopback && is_loopback(ip)) {
            return Err(FetchError::Unusable(format!(
                "{host} resolves to a private or special-purpose address"
            )));
        }
    }
    Ok(addresses)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Addresses that are not on the public Internet: private, loopback, link-local, shared (CGNAT),
/// multicast, broadcast, unspecified, documentation, reserved, and IPv6 forms that embed them.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (b & 0xc0) == 64)
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches whatever IPv4 address it embeds.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let embedded = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return is_forbidden_v4(embedded);
    }
    // Transition prefixes are refused whole rather than by the IPv4 address they embed: 6to4
    // (2002::/16) and Teredo (2001::/32, whose client address is obfuscated and whose relays
    // decide where it goes) reach IPv4 space through relays we do not control, and local-use NAT64
    // (64:ff9b:1::/48) translates by a site's own rule. No client's document needs to live there.
    let transition = s[0] == 0x2002
        || (s[0] == 0x2001 && s[1] == 0)
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1);
    transition
        || ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || s[0..6] == [0, 0, 0, 0, 0, 0]
}

/// `application/json` or a JSON-suffixed type (RFC 6839 §3.1): a client's key set is commonly
/// served as `application/jwk-set+json` (RFC 7517 §8.5.1).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// How long a response may be cached: its `max-age`, clamped to the configured bounds; the minimum
/// for `no-store`/`no-cache` (the document is still needed for this authorization).
pub fn freshness(cache_control: Option<&HeaderValue>, config: &CimdConfig) -> Duration {
    let Some(directives) = cache_control.and_then(|v| v.to_str().ok()) else {
        return config
            .default_cache
            .clamp(config.min_cache, config.max_cache);
    };
    let mut max_age = None;
    for directive in directives.split(',') {
        let directive = directive.trim().to_ascii_lowercase();
        if directive == "no-store" || directive == "no-cache" {
            return config.min_cache;
        }
        if let Some(seconds) = directive.strip_prefix("max-age=") {
            max_age = seconds.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
        .map(Duration::from_secs)
        .unwrap_or(config.default_cache)
        .clamp(config.min_cache, config.max_cache)
}

impl Fetcher {
    /// Makes the database's copy of `client_id`'s document fresh: fetch, then store (validated by
    /// the extension) or record the failure. Every refusal is `invalid_client`, shown on an error
    /// page, since the redirect URI cannot be trusted before the document is.
    pub async fn refresh(&self, client_id: &str) -> Result<(), OAuthError> {
        let flight = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .entry(client_id.to_owned())
            .or_default()
            .clone();
        // A caller that goes away mid-fetch hands the fetch to the next one waiting (OnceCell).
        let outcome = flight
            .get_or_init(|| self.fetch_and_store(client_id))
            .await
            .clone();
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        if in_flight
            .get(client_id)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            in_flight.remove(client_id);
        }
        outcome
    }

    async fn fetch_and_store(&self, client_id: &str) -> Result<(), OAuthError> {
        let config = &self.config;
        let refuse = |reason: &str| {
            OAuthError::new(
                ErrorCode::InvalidClient,
                format!("client metadata document unusable: {reason}"),
            )
        };
        if !config.enabled {
            return Err(refuse("client ID metadata documents are not accepted here"));
        }
        let url = check_client_id(client_id, config).map_err(|reason| refuse(&reason))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let known = self.known.lock().expect("known lock").contains(client_id);
        if let Err(exhausted) = self.spend_budget(known, &host) {
            // Not recorded: the budget is this process's, and the host may be fine for the others.
            self.count("document", "budget_exhausted");
            return Err(refuse(exhausted));
        }
        let fetched = self.fetch(&url).await;
        self.count("document", Self::outcome(&fetched));
        match fetched {
            Ok(fetched) => {
                tracing::info!(host = %host, known, "client metadata document fetched");
                self.db
                    .store_client_document(
                        client_id,
                        &fetched.document,
                        fetched.fresh_for,
                        config.negative_cache,
                    )
                    .await
                    .map_err(|e| {
                        if e.is_unavailable_or_server_error() {
                            e
                        } else {
                            refuse(&e.description)
                        }
                    })?;
                let mut known = self.known.lock().expect("known lock");
                if known.len() < MAX_KNOWN_DOCUMENTS {
                    known.insert(client_id.to_owned());
                }
                Ok(())
            }
            Err(failure) => {
                let reason = failure.reason();
                tracing::info!(host = %host, known, %reason, "client metadata document fetch failed");
                self.db
                    .record_client_document_failure(
                        client_id,
                        reason,
                        matches!(failure, FetchError::Unusable(_)),
                        config.negative_cache,
                    )
                    .await?;
                Err(match failure {
                    FetchError::NotFetched(_) => {
                        OAuthError::new(ErrorCode::InvalidClient, failure.shown())
                    }
                    FetchError::Unusable(_) => refuse(failure.shown()),
                })
            }
        }
    }

    /// Spends one fetch of the host's and of the global budget of known or of unknown documents,
    /// or says which is exhausted.
    fn spend_budget(&self, known: bool, host: &str) -> Result<(), &'static str> {
        let class = if known { "known" } else { "unknown" };
        let host_key = format!("{class} {host}");
        let per_host = self.config.per_host_fetches_per_minute;
        if !self.per_host.remaining(&host_key, per_host) {
            return Err("too many fetches from this host; try again in a minute");
        }
        if !self.global.remaining(class, GLOBAL_FETCHES_PER_MINUTE) {
            return Err("too many fetches of client metadata documents; try again in a minute");
        }
        // Concurrent refreshes may pass the checks together; spending re-checks each budget.
        if self.per_host.spend(&host_key, per_host)
            && self.global.spend(class, GLOBAL_FETCHES_PER_MINUTE)
        {
            Ok(())
        } else {
            Err("too many fetches; try again in a minute")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden(text.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
        ] {
            assert!(!forbidden(ip), "{ip} is public");
        }
    }

    #[test]
    fn ipv6_transition_prefixes_are_refused_whole_whatever_they_embed() {
        for ip in [
            // 6to4 (2002::/16) of 127.0.0.1, 10.0.0.1, 169.254.169.254 and of a public address.
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:5db8:d822::1",
            // Teredo (2001::/32): server and (obfuscated) client address of any kind.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:0:7f00:1::1",
            "2001::1",
            // Local-use NAT64 (64:ff9b:1::/48), embedding private and public IPv4 addresses.
            "64:ff9b:1::a00:1",
            "64:ff9b:1::7f00:1",
            "64:ff9b:1::5db8:d822",
            "64:ff9b:1:ffff::1",
        ] {
            assert!(forbidden(ip), "{ip} must be refused");
        }
        // Their neighbours are ordinary public space.
        for ip in ["2001:4860:4860::8888", "2003::1", "64:ff9b::5db8:d822"] {
            assert!(!forbidden(ip), "{ip} is public");
        }
    }

    #[test]
    fn client_ids_must_be_https_urls_with_a_path_and_nothing_else() {
        let config = CimdConfig::default();
        assert!(check_client_id("https://app.example/client.json", &config).is_ok());
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://user@app.example/client.json",
            "https://app.example/client.json?x=1",
            "https://app.example/client.json#f",
            "https://APP.example/client.json",
            "https://app.example/a/../client.json",
        ] {
            assert!(check_client_id(bad, &config).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_policy_allows_and_denies_by_host_or_subdomain() {
        let config = CimdConfig {
            allowed_hosts: vec!["*.example.com".into(), "claude.ai".into()],
            denied_hosts: vec!["evil.example.com".into()],
            ..CimdConfig::default()
        };
        assert!(check_client_id("https://claude.ai/oauth/client.json", &config).is_ok());
        assert!(check_client_id("https://a.example.com/c.json", &config).is_ok());
        assert!(check_client_id("https://example.com/c.json", &config).is_err());
        assert!(check_client_id("https://evil.example.com/c.json", &config).is_err());
        assert!(check_client_id("https://notexample.com/c.json", &config).is_err());
        assert!(check_client_id("https://chatgpt.com/c.json", &config).is_err());
    }

    #[test]
    fn freshness_follows_max_age_within_bounds() {
        let config = CimdConfig::default();
        let header = |v: &'static str| Some(HeaderValue::from_static(v));
        assert_eq!(freshness(None, &config), Duration::from_secs(3600));
        assert_eq!(
            freshness(header("public, max-age=7200").as_ref(), &config),
            Duration::from_secs(7200)
        );
        assert_eq!(
            freshness(header("max-age=5").as_ref(), &config),
            config.min_cache
        );
        assert_eq!(
            freshness(header("max-age=99999999").as_ref(), &config),
            config.max_cache
        );
        assert_eq!(
            freshness(header("no-store").as_ref(), &config),
            config.min_cache
        );
        assert_eq!(
            freshness(header("max-age=abc").as_ref(), &config),
            Duration::from_secs(3600)
        );
    }
}
