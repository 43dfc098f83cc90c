//! Requests to services the operator configured: the upstream identity provider (discovery, key
//! set, token and userinfo endpoints) and the audit webhook. Each is the operator's choice, not a
//! stranger's, so there is no address policy here as for metadata documents; https with the public
//! web roots (plus an optional CA file), http only to a loopback address when `allow_http` (tests,
//! local development). One deadline per request, a size cap, no redirects.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

/// Discovery documents, key sets and token responses are small; a megabyte is generous.
const MAX_BODY: usize = 1024 * 1024;

pub struct Fetch {
    tls: TlsConnector,
    allow_http: bool,
    timeout: Duration,
}

/// What the upstream answered.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .ok()
            .filter(serde_json::Value::is_object)
    }
}

/// Whether `url` may be fetched: https, or http to a loopback host when allowed.
pub fn url_allowed(url: &Url, allow_http: bool) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => allow_http && is_loopback_host(url),
        _ => false,
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

impl Fetch {
    pub fn new(
        extra_ca_file: Option<&std::path::Path>,
        allow_http: bool,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = extra_ca_file {
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("upstream.extra_ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("upstream.extra_ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("upstream.extra_ca_file {}: {e}", path.display()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(tls)),
            allow_http,
            timeout,
        })
    }

    pub async fn get(&self, url: &Url, bearer: Option<&str>) -> Result<Answer, String> {
        let mut headers = Vec::new();
        if let Some(token) = bearer {
            headers.push((header::AUTHORIZATION, format!("Bearer {token}")));
        }
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    /// POSTs a form (`application/x-www-form-urlencoded`), with HTTP Basic when `basic` is set.
    pub async fn post_form(
        &self,
        url: &Url,
        form: String,
        basic: Option<String>,
    ) -> Result<Answer, String> {
        let mut headers = vec![(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".to_owned(),
        )];
        if let Some(credentials) = basic {
            headers.push((header::AUTHORIZATION, format!("Basic {credentials}")));
        }
        self.send(Method::POST, url, headers, Bytes::from(form))
            .await
    }

    /// POSTs `body` with `headers` (the audit webhook's signed batches).
    pub async fn post(
        &self,
        url: &Url,
        headers: Vec<(header::HeaderName, String)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        self.send(Method::POST, url, headers, body).await
    }

    async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: Vec<(header::HeaderName, String)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        match tokio::time::timeout(
            self.timeout,
            self.send_unbounded(method, url, headers, body),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Err(format!(
                "no complete answer within {} s",
                self.timeout.as_secs_f64()
            )),
        }
    }

    async fn send_unbounded(
        &self,
        method: Method,
        url: &Url,
        headers: Vec<(header::HeaderName, String)>,
        body: Bytes,
    ) -> Result<Answer, String> {
        if !url_allowed(url, self.allow_http) {
            return Err(format!("{url} is not an https URL"));
        }
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = match literal.parse::<IpAddr>() {
            Ok(ip) => TcpStream::connect((ip, port)).await,
            Err(_) => TcpStream::connect((host.as_str(), port)).await,
        }
        .map_err(|e| format!("could not connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut target = url.path().to_owned();
        if let Some(query) = url.query() {
            target.push('?');
            target.push_str(query);
        }
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "oauth_provider-gateway");
        for (name, value) in headers {
            let value = HeaderValue::from_str(&value).map_err(|_| "a header is not valid")?;
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| "could not build the request")?;
        if url.scheme() == "https" {
            let name = match url.host() {
                Some(url::Host::Domain(d)) => ServerName::try_from(d.to_owned())
                    .map_err(|_| "the host is not a valid TLS server name")?,
                Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(IpAddr::V4(ip).into()),
                Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(IpAddr::V6(ip).into()),
                None => return Err("the URL has no host".into()),
            };
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {host} failed: {e}"))?;
            exchange(tls, request).await
        } else {
            exchange(tcp, request).await
        }
    }
}

async fn exchange<IO>(io: IO, request: Request<Full<Bytes>>) -> Result<Answer, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| format!("the answer is larger than {MAX_BODY} bytes or was cut off"))?
        .to_bytes();
    Ok(Answer { status, body })
}
