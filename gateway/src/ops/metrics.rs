//! The gateway's metrics (prometheus-client, OpenMetrics text). Every label comes from a closed
//! set: route names (not paths), status codes, grant types, outcomes. No token, secret, client
//! id, user id or address is ever a label.
//!
//! Components own the metrics only they can see (the pool's wait, the feed's notifications, the
//! fetcher's outcomes, the limiter's refusals) and this registry holds clones of them; what is a
//! state rather than an event (pool size, feed lag) is read when scraped.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::app::App;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, Resp};

pub type Label = [(&'static str, &'static str); 1];
pub type Labels2 = [(&'static str, &'static str); 2];

/// What the extension answers when an earlier refresh token comes back (sql/tokens.sql,
/// `oauth.rotate_refresh_token`): the one failure that revokes a family and its grant.
const REFRESH_REUSE: &str = "refresh token was already used; the grant has been revoked";

/// Request latencies: 0.5 ms to about 16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<[(&'static str, Cow<'static, str>); 2], Counter>,
    latency: Family<Label, Histogram, fn() -> Histogram>,
    tokens_issued: Family<Label, Counter>,
    refresh_reuse: Counter,
    revocations: Family<Label, Counter>,
    guard: Family<Label, Counter>,
    pool_connections: Family<Label, Gauge>,
    pool_max: Gauge,
    feed_synced: Gauge,
    feed_contact_age: Gauge<f64, AtomicU64>,
    revoked_entries: Gauge,
    pub cleanup_runs: Family<Label, Counter>,
    pub cleanup_rows: Counter,
    pub cleanup_duration: Histogram,
}

/// The parts whose own metrics are registered here.
pub struct Sources {
    pub pool_wait: Histogram,
    pub fetches: Family<Labels2, Counter>,
    pub rejected: Family<Labels2, Counter>,
    pub feed: Option<crate::guard::FeedCounters>,
}

impl Metrics {
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "oauth_http_requests",
            "Requests answered, by endpoint (route name) and status",
            requests.clone(),
        );
        let latency: Family<Label, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "oauth_http_request_duration_seconds",
            "Time to the response's headers, by endpoint",
            latency.clone(),
        );
        let tokens_issued = Family::default();
        registry.register(
            "oauth_tokens_issued",
            "Token responses, by grant type",
            tokens_issued.clone(),
        );
        let refresh_reuse = Counter::default();
        registry.register(
            "oauth_refresh_token_reuse",
            "Refresh tokens presented again after their rotation (each revoked its family and grant)",
            refresh_reuse.clone(),
        );
        let revocations = Family::default();
        registry.register(
            "oauth_revocations",
            "Revocations this gateway caused, by reason (client_request: RFC 7009 requests answered; refresh_token_reused)",
            revocations.clone(),
        );
        let guard = Family::default();
        registry.register(
            "oauth_guard_decisions",
            "Requests to guarded routes, by decision (allowed, unauthorized, forbidden, bad_request, unavailable, upstream_failed)",
            guard.clone(),
        );
        let pool_connections = Family::default();
        registry.register(
            "oauth_db_pool_connections",
            "Database pool connections, by state (idle, in_use)",
            pool_connections.clone(),
        );
        let pool_max = Gauge::default();
        registry.register(
            "oauth_db_pool_max_connections",
            "The pool's size limit (pool_size)",
            pool_max.clone(),
        );
        registry.register(
            "oauth_db_pool_wait_seconds",
            "Time requests waited for a pooled connection",
            sources.pool_wait,
        );
        registry.register(
            "oauth_client_fetches",
            "Client metadata documents and jwks_uri key sets fetched, by kind and outcome",
            sources.fetches,
        );
        registry.register(
            "oauth_rate_limited",
            "Requests refused by a rate limit (429), by endpoint and key (client, address)",
            sources.rejected,
        );
        let feed_synced = Gauge::default();
        registry.register(
            "oauth_revocation_feed_synchronised",
            "1 while the guard's revoked set is synchronised with the database (0: the guard answers 503)",
            feed_synced.clone(),
        );
        let feed_contact_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oauth_revocation_feed_lag_seconds",
            "Seconds since the revocation feed last heard from the database (heartbeat every 2 s): how stale the revoked set may be",
            feed_contact_age.clone(),
        );
        let revoked_entries = Gauge::default();
        registry.register(
            "oauth_revoked_set_entries",
            "Grants, families and access tokens in the guard's revoked set",
            revoked_entries.clone(),
        );
        if let Some(feed) = sources.feed {
            registry.register(
                "oauth_revocation_feed_resyncs",
                "Times the revoked set was rebuilt from the backlog (start, and after each lost connection)",
                feed.resyncs,
            );
            registry.register(
                "oauth_revocation_feed_notifications",
                "Revocations heard on the feed, by kind (grant, family, access_token)",
                feed.heard,
            );
        }
        let cleanup_runs = Family::default();
        registry.register(
            "oauth_cleanup_runs",
            "Scheduled oauth.cleanup attempts, by outcome (ran; skipped: another gateway holds the lock; failed)",
            cleanup_runs.clone(),
        );
        let cleanup_rows = Counter::default();
        registry.register(
            "oauth_cleanup_rows_removed",
            "Rows oauth.cleanup removed on this gateway's runs",
            cleanup_rows.clone(),
        );
        let cleanup_duration = Histogram::new(exponential_buckets(0.001, 4.0, 10));
        registry.register(
            "oauth_cleanup_duration_seconds",
            "Duration of this gateway's cleanup runs",
            cleanup_duration.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tokens_issued,
            refresh_reuse,
            revocations,
            guard,
            pool_connections,
            pool_max,
            feed_synced,
            feed_contact_age,
            revoked_entries,
            cleanup_runs,
            cleanup_rows,
            cleanup_duration,
        }
    }

    /// One answered request. `endpoint` is a route name; the error, if any, is the one
    /// `http::error` rendered (a response extension).
    pub fn record(
        &self,
        endpoint: &'static str,
        resp: &Resp,
        took: Duration,
        grant_type: Option<&'static str>,
    ) {
        let status = resp.status();
        self.requests
            .get_or_create(&[
                ("endpoint", Cow::Borrowed(endpoint)),
                ("status", Cow::Owned(status.as_u16().to_string())),
            ])
            .inc();
        self.latency
            .get_or_create(&[("endpoint", endpoint)])
            .observe(took.as_secs_f64());
        let error = resp.extensions().get::<OAuthError>();
        match endpoint {
            "token" if status == StatusCode::OK => {
                if let Some(grant_type) = grant_type {
                    self.tokens_issued
                        .get_or_create(&[("grant_type", grant_type)])
                        .inc();
                }
            }
            "token"
                if error.is_some_and(|e| {
                    e.code == ErrorCode::InvalidGrant && e.description == REFRESH_REUSE
                }) =>
            {
                self.refresh_reuse.inc();
                self.revocations
                    .get_or_create(&[("reason", "refresh_token_reused")])
                    .inc();
            }
            "revoke" if status == StatusCode::OK => {
                self.revocations
                    .get_or_create(&[("reason", "client_request")])
                    .inc();
            }
            "guard" => {
                let decision = match error.map(|_| status) {
                    None => "allowed",
                    Some(StatusCode::UNAUTHORIZED) => "unauthorized",
                    Some(StatusCode::FORBIDDEN) => "forbidden",
                    Some(StatusCode::SERVICE_UNAVAILABLE) => "unavailable",
                    Some(s) if s.is_server_error() => "upstream_failed",
                    Some(_) => "bad_request",
                };
                self.guard.get_or_create(&[("decision", decision)]).inc();
            }
            _ => {}
        }
    }

    /// The scrape: states read now, then every metric as OpenMetrics text.
    pub fn exposition(&self, app: &App) -> Resp {
        let pool = app.db.pool_status();
        let idle = pool.available as i64;
        self.pool_connections
            .get_or_create(&[("state", "idle")])
            .set(idle);
        self.pool_connections
            .get_or_create(&[("state", "in_use")])
            .set(pool.size as i64 - idle);
        self.pool_max.set(pool.max_size as i64);
        if let Some(feed) = app.guard.feed_state() {
            self.feed_synced.set(i64::from(feed.synced));
            self.feed_contact_age.set(
                feed.since_contact
                    .map_or(f64::INFINITY, |d| d.as_secs_f64()),
            );
            self.revoked_entries.set(feed.revoked as i64);
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            return http::error(&OAuthError::server_error());
        }
        let mut resp = hyper::Response::new(http::full(text));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

/// The label of a grant type this gateway serves, or `None`.
pub fn grant_type_label(grant_type: &str) -> Option<&'static str> {
    Some(match grant_type {
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        "client_credentials" => "client_credentials",
        "urn:ietf:params:oauth:grant-type:device_code" => "device_code",
        "urn:ietf:params:oauth:grant-type:token-exchange" => "token_exchange",
        _ => return None,
    })
}
