//! Operating the gateway: request metrics and rate limits (applied around every request by the
//! router, in one place), health and readiness, the metrics listener, scheduled cleanup.

pub mod cleanup;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Limited;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, PeerAddr, Req, Resp};
use limits::KeyKind;

/// What the request's handler tells the router while it runs (a task-local, so that no handler
/// has to carry it): the limited endpoint it serves, and the grant type it was asked for.
struct RequestScope {
    app: Arc<App>,
    limited: Option<Limited>,
    grant_type: Mutex<Option<&'static str>>,
}

tokio::task_local! {
    static SCOPE: Arc<RequestScope>;
}

/// Called where client authentication is parsed (`http::client_credentials`): counts the client
/// against its endpoint's per-client limit, and notes the grant type for the token metrics.
pub fn client_named(client_id: &str, grant_type: Option<&str>) -> Result<(), OAuthError> {
    SCOPE
        .try_with(|scope| {
            if let Some(grant_type) = grant_type.and_then(metrics::grant_type_label) {
                *scope.grant_type.lock().expect("grant type") = Some(grant_type);
            }
            match scope.limited {
                Some(endpoint) => {
                    scope
                        .app
                        .limiter
                        .check(endpoint, KeyKind::Client, client_id.as_bytes())
                }
                None => Ok(()),
            }
        })
        .unwrap_or(Ok(()))
}

/// The router's wrapper around one request: the address limit (and the client limit where the
/// client is in the URL) before the handler, the metrics after it. `endpoint` is the route's name
/// (never the path: the label set stays bounded); `limited` its rate-limit table, if any.
pub async fn observe<F>(
    app: &Arc<App>,
    req: Req,
    endpoint: &'static str,
    limited: Option<Limited>,
    handler: impl FnOnce(Req) -> F,
) -> Resp
where
    F: std::future::Future<Output = Resp>,
{
    let started = Instant::now();
    let scope = Arc::new(RequestScope {
        app: app.clone(),
        limited,
        grant_type: Mutex::new(None),
    });
    let refusal = limited.and_then(|l| refusal(app, &req, l));
    let resp = match refusal {
        Some(refusal) => refusal,
        None => SCOPE.scope(scope.clone(), handler(req)).await,
    };
    let grant_type = *scope.grant_type.lock().expect("grant type");
    app.metrics
        .record(endpoint, &resp, started.elapsed(), grant_type);
    resp
}

/// The 429 for a request over the per-address limit, or at `/authorize` over the per-client one
/// (its client is in the query): JSON, or a page where a browser asked.
fn refusal(app: &App, req: &Req, endpoint: Limited) -> Option<Resp> {
    let error = admit(app, req, endpoint).err()?;
    let error = match endpoint {
        Limited::Authorize | Limited::Consent | Limited::Device => {
            error.as_page("Too many requests")
        }
        _ => error,
    };
    Some(http::error(&error))
}

fn admit(app: &App, req: &Req, endpoint: Limited) -> Result<(), OAuthError> {
    let peer = req
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let source = limits::source_address(peer, req.headers(), &app.trusted_proxies);
    app.limiter
        .check(endpoint, KeyKind::Address, &limits::address_key(source))?;
    if endpoint == Limited::Authorize
        && let Some(client_id) = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "client_id")
                .map(|(_, v)| v.into_owned())
        })
    {
        app.limiter
            .check(endpoint, KeyKind::Client, client_id.as_bytes())?;
    }
    Ok(())
}

/// The metrics listener: `/metrics` (Prometheus text format), `/healthz`, `/readyz`; nothing
/// else. Apart from the public listener so that what it tells (traffic, failures, pool state)
/// is reachable only where the operator binds it.
pub async fn serve_metrics(
    app: Arc<App>,
    at: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = TcpListener::bind(at)
        .await
        .map_err(|e| format!("bind metrics_listen {at}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let app = app.clone();
            let service = service_fn(move |req: Req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(answer_operator(&app, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok((addr, task))
}

async fn answer_operator(app: &App, req: Req) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return http::error(
            &OAuthError::invalid_request("use GET").with_status(StatusCode::METHOD_NOT_ALLOWED),
        );
    }
    match req.uri().path() {
        "/metrics" => app.metrics.exposition(app),
        "/healthz" => health::healthz(),
        "/readyz" => health::readyz(app).await,
        _ => http::error(&OAuthError::new(ErrorCode::NotFound, "no such endpoint")),
    }
}
