//! The revoked set: grants and families revoked within an access token's lifetime, kept current
//! from the extension's revocation feed so the guard refuses a revoked grant's tokens within
//! moments, without a database round trip per proxied request. After a lost connection the set is
//! rebuilt from the backlog before notifications are trusted again.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::db::feed::{FeedError, RevocationFeed};

#[derive(Default)]
pub struct RevokedSet {
    ids: RwLock<HashMap<Uuid, Instant>>,
    synced: AtomicBool,
}

impl RevokedSet {
    /// False until the first resync: the guard answers 503 rather than trust an empty set.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn is_revoked(&self, grant: Option<Uuid>, family: Option<Uuid>) -> bool {
        let ids = self.ids.read().expect("revoked set lock");
        grant.is_some_and(|g| ids.contains_key(&g)) || family.is_some_and(|f| ids.contains_key(&f))
    }

    fn insert_all(&self, ids: impl IntoIterator<Item = Uuid>) {
        let now = Instant::now();
        let mut set = self.ids.write().expect("revoked set lock");
        for id in ids {
            set.insert(id, now);
        }
    }

    /// Forgets revocations older than any token that could still be presented.
    fn prune(&self, horizon: Duration) {
        let now = Instant::now();
        self.ids
            .write()
            .expect("revoked set lock")
            .retain(|_, at| now.duration_since(*at) < horizon);
    }
}

/// Follows the feed forever: connect, LISTEN, resync, apply notifications; reconnect on loss.
pub async fn follow(set: std::sync::Arc<RevokedSet>, database_url: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(&set, &database_url).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(error) => {
                tracing::warn!(%error, "revocation feed interrupted; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn session(set: &RevokedSet, database_url: &str) -> Result<(), FeedError> {
    let mut feed = RevocationFeed::open(database_url).await?;
    // Revocations older than the longest-lived access token cannot matter to the guard.
    let horizon = Duration::from_secs(feed.settings().await?.revocation_horizon);
    let backlog = feed.backlog(horizon).await?;
    set.insert_all(backlog.grants.into_iter().chain(backlog.families));
    set.synced.store(true, Ordering::Release);
    tracing::info!("revocation feed synchronised");
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            revocation = feed.next() => match revocation {
                Some(revocation) => set.insert_all(revocation.grant_id.into_iter().chain(revocation.family_id)),
                None => break,
            },
            _ = prune.tick() => set.prune(horizon + Duration::from_secs(120)),
        }
    }
    Ok(())
}
