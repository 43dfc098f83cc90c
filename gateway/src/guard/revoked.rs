//! The revoked set: grants, families and single access tokens (by jti) revoked within an access
//! token's lifetime, kept current from the extension's revocation feed so the guard refuses a revoked grant's tokens within
//! moments, without a database round trip per proxied request. After a lost connection the set is
//! rebuilt from the backlog before notifications are trusted again, and a connection that stops
//! answering counts as lost: while the feed is not known to be live the guard refuses to judge.
//!
//! Grants and families are kept apart: a family revocation names its grant too (so a listener
//! knows whose family it was), but it ends that family only, as introspection sees it. A token
//! revoked by itself (one a client received by token exchange, RFC 8693) is named by its jti
//! alone: its grant and family belong to another client and stay live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use uuid::Uuid;

use crate::db::Revocation;
use crate::db::feed::{FeedError, RevocationFeed};

#[derive(Default)]
pub struct RevokedSet {
    grants: RwLock<HashMap<Uuid, Instant>>,
    families: RwLock<HashMap<Uuid, Instant>>,
    access_tokens: RwLock<HashMap<Uuid, Instant>>,
    synced: AtomicBool,
    /// When the feed's connection last proved alive (heartbeat, notification, resync).
    last_contact: Mutex<Option<Instant>>,
    pub counters: FeedCounters,
}

/// The feed's events, for the metrics.
#[derive(Clone, Default)]
pub struct FeedCounters {
    pub resyncs: Counter,
    /// Revocations heard, by kind (grant, family, access_token).
    pub heard: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The feed's state, for readiness and the metrics.
pub struct FeedState {
    pub synced: bool,
    /// Since the database was last heard from (`None`: never).
    pub since_contact: Option<Duration>,
    /// Entries in the revoked set.
    pub revoked: usize,
}

impl RevokedSet {
    /// False until the first resync and from a lost feed until the next: the guard answers 503
    /// rather than trust a set that may be missing revocations.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn state(&self) -> FeedState {
        let size =
            |ids: &RwLock<HashMap<Uuid, Instant>>| ids.read().expect("revoked set lock").len();
        FeedState {
            synced: self.is_synced(),
            since_contact: self
                .last_contact
                .lock()
                .expect("contact lock")
                .map(|at| at.elapsed()),
            revoked: size(&self.grants) + size(&self.families) + size(&self.access_tokens),
        }
    }

    fn heard_from_database(&self) {
        *self.last_contact.lock().expect("contact lock") = Some(Instant::now());
    }

    pub fn is_revoked(&self, grant: Option<Uuid>, family: Option<Uuid>, jti: Option<Uuid>) -> bool {
        let listed = |ids: &RwLock<HashMap<Uuid, Instant>>, id: Option<Uuid>| {
            id.is_some_and(|id| ids.read().expect("revoked set lock").contains_key(&id))
        };
        listed(&self.grants, grant)
            || listed(&self.families, family)
            || listed(&self.access_tokens, jti)
    }

    fn insert_all(ids: &RwLock<HashMap<Uuid, Instant>>, revoked: impl IntoIterator<Item = Uuid>) {
        let now = Instant::now();
        let mut set = ids.write().expect("revoked set lock");
        for id in revoked {
            set.insert(id, now);
        }
    }

    fn apply(&self, revocation: Revocation) {
        self.heard_from_database();
        let kind = match (revocation.jti, revocation.family_id) {
            (Some(_), _) => "access_token",
            (None, Some(_)) => "family",
            (None, None) => "grant",
        };
        self.counters.heard.get_or_create(&[("kind", kind)]).inc();
        match (revocation.jti, revocation.family_id, revocation.grant_id) {
            (Some(jti), _, _) => Self::insert_all(&self.access_tokens, [jti]),
            (None, Some(family), _) => Self::insert_all(&self.families, [family]),
            (None, None, grant) => Self::insert_all(&self.grants, grant),
        }
    }

    /// Forgets revocations older than any token that could still be presented.
    fn prune(&self, horizon: Duration) {
        let now = Instant::now();
        for ids in [&self.grants, &self.families, &self.access_tokens] {
            ids.write()
                .expect("revoked set lock")
                .retain(|_, at| now.duration_since(*at) < horizon);
        }
    }
}

/// How often the feed's connection must prove it is alive, and how long it may take to answer:
/// a connection a failover, an idle-session killer or a pooler dropped without closing it would
/// otherwise look live (and deliver nothing) until TCP gives up, minutes later.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts: every moment unsynced is a 503.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Follows the feed forever: connect, LISTEN, resync, apply notifications; reconnect on loss.
pub async fn follow(set: std::sync::Arc<RevokedSet>, database_url: String) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let outcome = session(&set, &database_url).await;
        // Revocations committed from now until the next resync would be missed.
        set.synced.store(false, Ordering::Release);
        match outcome {
            Ok(()) => {
                tracing::warn!("revocation feed connection lost; reconnecting");
                backoff = Duration::from_millis(200);
            }
            Err(error) => {
                tracing::warn!(%error, "revocation feed interrupted; reconnecting");
                backoff = (backoff * 2).min(MAX_BACKOFF);
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
    RevokedSet::insert_all(&set.grants, backlog.grants);
    RevokedSet::insert_all(&set.families, backlog.families);
    RevokedSet::insert_all(&set.access_tokens, backlog.access_tokens);
    set.synced.store(true, Ordering::Release);
    set.heard_from_database();
    set.counters.resyncs.inc();
    tracing::info!("revocation feed synchronised");
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            revocation = feed.next() => match revocation {
                Some(revocation) => set.apply(revocation),
                None => break,
            },
            _ = heartbeat.tick() => {
                tokio::time::timeout(HEARTBEAT_TIMEOUT, feed.heartbeat())
                    .await
                    .map_err(|_| "the feed's connection did not answer its heartbeat")??;
                set.heard_from_database();
            }
            _ = prune.tick() => set.prune(horizon + Duration::from_secs(120)),
        }
    }
    Ok(())
}
