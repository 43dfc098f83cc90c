//! Building the gateway and serving HTTP/1.1 with bounded header reads and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use ring::{hkdf, hmac};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::app::App;
use crate::config::Config;
use crate::db::{Db, Settings};
use crate::guard::Guard;
use crate::keys::{Alg, KeySet, Keys, SigningKey};
use crate::tokens::TokenVerifier;

pub struct ServerHandle {
    pub addr: SocketAddr,
    /// Where `/metrics` is served (`metrics_listen`), when it is.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight requests finish (up to `grace`), then returns.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), &mut self.done).await;
    }

    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// The configured key files, or (with `key_encryption_key`) the keys kept in the database.
pub async fn load_keys(
    config: &Config,
    db: &Db,
    kek: Option<&crate::keyring::Kek>,
) -> Result<KeySet, String> {
    let keys = match kek {
        Some(kek) => crate::keyring::load(db, kek).await?,
        None => KeySet::all_signing(
            config
                .keys
                .iter()
                .map(|k| SigningKey::from_file(&k.path, k.alg, k.kid.clone()))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    if keys.keys.is_empty() {
        return Err("no signing keys configured".into());
    }
    // Served anyway (a deployment may have reasons), but relying parties expect RS256 by default.
    if keys.for_alg(Alg::RS256).is_none() {
        tracing::warn!(
            "no RS256 key loaded: OpenID Connect Discovery §3 requires RS256 in \
             id_token_signing_alg_values_supported, and clients registered without \
             id_token_signed_response_alg get ID tokens signed with the first key instead; \
             add one (oauth-gateway keys generate --alg RS256)"
        );
    }
    Ok(keys)
}

async fn read_settings(db: &Db) -> Option<Settings> {
    db.settings().await.ok()
}

pub async fn build(config: Config) -> Result<Arc<App>, String> {
    config.validate()?;
    let db = Db::connect(
        &config.database_url,
        config.pool_size,
        config.pool_wait,
        config.statement_timeout,
        config.statement_cache,
    )?;
    let kek = match &config.key_encryption_key {
        Some(text) => Some(Arc::new(crate::keyring::Kek::parse(text)?)),
        None => None,
    };
    // Shared keys need the database now: without them there is nothing to sign with.
    let keys = Arc::new(Keys::new(load_keys(&config, &db, kek.as_deref()).await?));
    let settings = read_settings(&db).await;
    if let Some(settings) = &settings {
        let db_issuer = &settings.issuer;
        if *db_issuer != config.issuer {
            return Err(format!(
                "the database's issuer is {db_issuer:?} but this gateway's is {:?}; run `oauth-gateway migrate` \
                 or SELECT oauth.configure(issuer => ...)",
                config.issuer
            ));
        }
    } else {
        tracing::warn!("database unreachable at start-up; serving and retrying in the background");
    }
    let cimd = crate::cimd::Fetcher::new(config.cimd.clone(), db.clone())?;
    let tokens = TokenVerifier {
        issuer: config.issuer.clone(),
        keys: keys.clone(),
    };
    let guard = Guard::new(
        config.routes.clone(),
        config.origin(),
        tokens.clone(),
        db.clone(),
        config.upstream_timeout,
        &config.scope_hierarchy,
        config.body_limits(),
    );
    if settings.is_some() {
        guard
            .declare_resources(config.default_audience.as_deref())
            .await;
    }
    let csrf_key = csrf_key(&config, kek.as_deref())?;
    let dpop = Arc::new(crate::dpop::Dpop::new(&csrf_key, config.dpop_require_nonce));
    let refreshes = crate::db::RefreshBatcher::start(db.clone(), config.refresh_batching);
    let exchanges = crate::db::ExchangeBatcher::start(db.clone(), config.refresh_batching);
    let trusted_proxies = config.trusted_proxy_ranges()?;
    let views = Arc::new(config.views()?);
    let limiter = crate::ops::limits::Limiter::new(config.rate_limits.effective(config.dev_mode));
    let metrics = crate::ops::metrics::Metrics::new(crate::ops::metrics::Sources {
        pool_wait: db.wait_histogram(),
        fetches: cimd.fetches.clone(),
        rejected: limiter.rejected.clone(),
        feed: guard.feed_counters(),
    });
    let upstreams = config
        .all_upstreams()
        .into_iter()
        .map(|(name, upstream)| {
            crate::upstream::Provider::new(&name, upstream, kek.as_deref()).map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let guard = guard
        .with_upstream_tokens(crate::upstream::UpstreamTokens::new(&upstreams, db.clone()))
        .with_dpop(dpop.clone());
    Ok(Arc::new(App {
        upstreams,
        config,
        keys,
        kek,
        db,
        refreshes,
        exchanges,
        settings: std::sync::RwLock::new(settings.map(Arc::new)),
        csrf_key,
        dpop,
        trusted_proxies,
        tokens,
        guard,
        cimd,
        client_keys: crate::client_keys::ClientKeys::default(),
        user_code_misses: crate::budget::Budget::new(crate::endpoints::USER_CODE_MISS_WINDOW),
        views,
        limiter,
        metrics,
        probe: Default::default(),
    }))
}

/// The consent forms' key: HKDF over `csrf_secret`, or over the key-encryption key or the first
/// signing key file's private bytes, so it is the same in every process sharing the configuration
/// (a signature would not be: ECDSA's are randomized), survives key rotation when the keys are
/// shared, and reveals nothing about the key it comes from.
fn csrf_key(config: &Config, kek: Option<&crate::keyring::Kek>) -> Result<hmac::Key, String> {
    let material = match (&config.csrf_secret, kek, config.keys.first()) {
        (Some(secret), _, _) => secret.as_bytes().to_vec(),
        (None, Some(kek), _) => kek.material().to_vec(),
        (None, None, Some(key)) => {
            let text =
                std::fs::read(&key.path).map_err(|e| format!("{}: {e}", key.path.display()))?;
            pem::parse(text)
                .map_err(|e| format!("{}: {e}", key.path.display()))?
                .into_contents()
        }
        (None, None, None) => return Err("no signing keys configured".into()),
    };
    let prk =
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"oauth-gateway consent CSRF key v2").extract(&material);
    const INFO: &[&[u8]] = &[b"csrf"];
    let okm = prk
        .expand(INFO, hmac::HMAC_SHA256)
        .map_err(|_| "CSRF key derivation failed".to_owned())?;
    Ok(hmac::Key::from(okm))
}

/// A connection beyond `max_connections`: told to come back (503, Retry-After) and closed. It is
/// refused rather than kept waiting so a flood cannot queue behind held connections, and the
/// client learns at once; the answer is written before the request is read, and what the client
/// sent is drained briefly so closing does not reset the connection under the answer.
async fn refuse_connection(mut stream: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
        content-length: 0\r\nconnection: close\r\n\r\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(BUSY).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

pub async fn serve(app: Arc<App>) -> Result<ServerHandle, String> {
    let listener = TcpListener::bind(app.config.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", app.config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let refresher = tokio::spawn(refresh_settings(app.clone()));
    let feed = app
        .guard
        .follow_revocations(app.config.feed_database_url().to_owned());
    let connections = Arc::new(Semaphore::new(app.config.max_connections));
    let (metrics_addr, operator) = match app.config.metrics_listen {
        Some(at) => {
            let (addr, task) = crate::ops::serve_metrics(app.clone(), at).await?;
            (Some(addr), Some(task))
        }
        None => (None, None),
    };
    let key_reload = app.kek.clone().map(|kek| {
        tokio::spawn(crate::keyring::reload(
            app.db.clone(),
            kek,
            app.keys.clone(),
            app.config.keys_reload_interval,
        ))
    });
    let cleanup = crate::ops::cleanup::schedule(app.clone());
    let webhook = crate::ops::webhook::schedule(app.clone());
    let done = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let Ok(slot) = connections.clone().try_acquire_owned() else {
                        tokio::spawn(refuse_connection(stream));
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let service = service_fn(move |req| {
                        let app = app.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(app, req, peer).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .max_buf_size(64 * 1024)
                        .serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        let _ = conn.await;
                        drop(slot);
                    });
                }
                _ = &mut rx => break,
            }
        }
        drop(listener);
        refresher.abort();
        for task in [feed, operator, cleanup, webhook, key_reload]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    });
    Ok(ServerHandle {
        addr,
        metrics_addr,
        shutdown: Some(tx),
        done,
    })
}

async fn refresh_settings(app: Arc<App>) {
    loop {
        let missing = app.settings().is_none();
        tokio::time::sleep(Duration::from_secs(if missing { 2 } else { 30 })).await;
        if let Some(settings) = read_settings(&app.db).await {
            *app.settings.write().expect("settings lock") = Some(Arc::new(settings));
            // Once, when the database was out of reach at start.
            app.guard
                .declare_resources(app.config.default_audience.as_deref())
                .await;
        }
    }
}

async fn handle(app: Arc<App>, mut req: crate::http::Req, peer: SocketAddr) -> crate::http::Resp {
    // Whether a trusted proxy sent it is the handlers' question (`trusted_user_header`).
    req.extensions_mut().insert(crate::http::PeerAddr(peer));
    let request_id = uuid::Uuid::new_v4();
    // The path only: query strings carry codes and states, which stay out of logs.
    let span = tracing::info_span!("request", id = %request_id, method = %req.method(), path = %req.uri().path(), %peer);
    async move {
        let started = Instant::now();
        let mut resp = crate::endpoints::dispatch(&app, req).await;
        if let Ok(value) = request_id.to_string().parse() {
            resp.headers_mut().insert("x-request-id", value);
        }
        tracing::info!(
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "served"
        );
        resp
    }
    .instrument(span)
    .await
}
