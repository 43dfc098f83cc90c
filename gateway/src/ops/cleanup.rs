//! Scheduled cleanup: every `cleanup_interval`, the gateway holding the cleanup advisory lock
//! (`db::cleanup`) runs `oauth.cleanup` in batches until nothing is left; every other gateway
//! tries to take the lock and, while another holds it, skips. So one gateway at a time cleans,
//! once per interval, and another takes over within an interval when it stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::db::cleanup::CleanupSession;

/// Rows per `oauth.cleanup` call: each call is its own short transaction.
const BATCH: i32 = 1000;
/// Batches per run at most: a backlog is worked off over several intervals rather than holding
/// the database busy for long.
const MAX_BATCHES: usize = 100;

pub fn schedule(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let interval = app.config.cleanup_interval;
    (!interval.is_zero()).then(|| tokio::spawn(run(app, interval)))
}

async fn run(app: Arc<App>, interval: Duration) {
    let mut session: Option<CleanupSession> = None;
    loop {
        tokio::time::sleep(interval).await;
        let outcome = attempt(&app, &mut session).await;
        let label = match &outcome {
            Ok(Some(_)) => "ran",
            Ok(None) => "skipped",
            Err(error) => {
                tracing::warn!(%error, "scheduled cleanup failed");
                session = None;
                "failed"
            }
        };
        app.metrics
            .cleanup_runs
            .get_or_create(&[("outcome", label)])
            .inc();
    }
}

/// Rows removed when this gateway holds the lock, `None` when another does.
async fn attempt(
    app: &App,
    session: &mut Option<CleanupSession>,
) -> Result<Option<i64>, crate::db::feed::FeedError> {
    if session.as_ref().is_none_or(CleanupSession::is_closed) {
        *session = Some(CleanupSession::open(app.config.feed_database_url()).await?);
    }
    let session = session.as_mut().expect("opened above");
    if !session.lead().await? {
        return Ok(None);
    }
    let started = Instant::now();
    let mut removed = 0;
    for _ in 0..MAX_BATCHES {
        let n = session.cleanup(BATCH).await?;
        removed += n;
        if n == 0 {
            break;
        }
    }
    app.metrics
        .cleanup_duration
        .observe(started.elapsed().as_secs_f64());
    app.metrics.cleanup_rows.inc_by(removed as u64);
    tracing::info!(removed, "scheduled cleanup ran");
    Ok(Some(removed))
}
