//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: it can serve: the
//! database answers, the revocation feed is synchronised when routes are guarded, signing keys
//! are loaded).

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;

use crate::app::App;
use crate::http::{self, Resp};

/// How long one database check answers every readiness probe: probes (on the public listener
/// too) never cost more than one query per second.
const DATABASE_CHECK_FRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Probe {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Probe {
    async fn database(&self, app: &App) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < DATABASE_CHECK_FRESH
        {
            return ok;
        }
        let ok = app.db.settings().await.is_ok();
        *last = Some((Instant::now(), ok));
        ok
    }
}

/// Answers without touching the database.
pub fn healthz() -> Resp {
    http::json_no_store(StatusCode::OK, &json!({"status": "ok"}))
}

pub async fn readyz(app: &App) -> Resp {
    let database = app.probe.database(app).await;
    let feed = app.guard.feed_state().map(|state| state.synced);
    let keys = !app.keys.load().keys.is_empty();
    let ready = database && feed.unwrap_or(true) && keys;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "failing" };
    http::json_no_store(
        status,
        &json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": {
                "database": word(database),
                "revocation_feed": feed.map_or("not_used", word),
                "signing_keys": word(keys),
            }
        }),
    )
}
