//! The revoked set: grants and families revoked within an access token's lifetime, kept current
//! from the extension's `NOTIFY oauth_revocations` so the proxy refuses a revoked grant's tokens
//! within moments, without a database round trip per proxied request. After a lost connection
//! the set is rebuilt from `oauth.revocations(since)` before notifications are trusted again.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

#[derive(Default)]
pub struct RevokedSet {
    ids: RwLock<HashMap<Uuid, Instant>>,
    synced: AtomicBool,
}

impl RevokedSet {
    /// False until the first resync: the proxy answers 503 rather than trust an empty set.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn is_revoked(&self, grant: Option<Uuid>, family: Option<Uuid>) -> bool {
        let ids = self.ids.read().expect("revoked set lock");
        grant.is_some_and(|g| ids.contains_key(&g)) || family.is_some_and(|f| ids.contains_key(&f))
    }

    fn insert(&self, id: Uuid) {
        self.ids
            .write()
            .expect("revoked set lock")
            .insert(id, Instant::now());
    }

    /// Forgets revocations older than any token that could still be presented.
    fn prune(&self, horizon: Duration) {
        let now = Instant::now();
        self.ids
            .write()
            .expect("revoked set lock")
            .retain(|_, at| now.duration_since(*at) < horizon);
    }

    fn absorb(&self, payload: &Value) {
        for key in ["grant_id", "family_id"] {
            if let Some(id) = payload[key].as_str().and_then(|s| s.parse().ok()) {
                self.insert(id);
            }
        }
    }
}

/// Follows the feed forever: connect, LISTEN, resync, apply notifications; reconnect on loss.
pub async fn follow(set: std::sync::Arc<RevokedSet>, database_url: String, horizon: Duration) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(&set, &database_url, horizon).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(error) => {
                tracing::warn!(%error, "revocation feed interrupted; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn session(
    set: &RevokedSet,
    database_url: &str,
    horizon: Duration,
) -> Result<(), tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = match database_url.parse() {
        Ok(config) => config,
        Err(e) => return Err(e),
    };
    config.connect_timeout(Duration::from_secs(2));
    config.application_name("oauth-gateway revocation feed");
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "revocation feed connection failed");
                    break;
                }
            }
        }
    });
    // LISTEN before reading the backlog, so nothing committed in between is missed.
    client.batch_execute("LISTEN oauth_revocations").await?;
    let since = format!("{} seconds", horizon.as_secs());
    let backlog: Value = client
        .query_one(
            "SELECT oauth.revocations(now() - $1::text::interval)",
            &[&since],
        )
        .await?
        .get(0);
    for key in ["grants", "families"] {
        for id in backlog[key].as_array().into_iter().flatten() {
            if let Some(id) = id.as_str().and_then(|s| s.parse().ok()) {
                set.insert(id);
            }
        }
    }
    set.synced.store(true, Ordering::Release);
    tracing::info!("revocation feed synchronised");
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            payload = rx.recv() => match payload {
                Some(payload) => {
                    if let Ok(value) = serde_json::from_str::<Value>(&payload) {
                        set.absorb(&value);
                    }
                }
                None => break,
            },
            _ = prune.tick() => set.prune(horizon + Duration::from_secs(120)),
        }
    }
    driver.abort();
    drop(client);
    Ok(())
}
