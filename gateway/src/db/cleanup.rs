//! Scheduled cleanup's own connection: a session holding the cleanup advisory lock is the one
//! gateway that runs `oauth.cleanup`; its connection ending (a stop, a crash, a failover) frees
//! the lock for another. A session lock needs a session: behind a pooler in transaction mode this
//! connects where the revocation feed does (`feed_database_url`).

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::feed::FeedError;

/// The advisory lock's key, one bigint for the whole database ("oauthcln").
pub const CLEANUP_LOCK: i64 = 0x6f61_7574_6863_6c6e;

pub struct CleanupSession {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    /// Whether this session holds the lock (taken once, kept until the session ends).
    leading: bool,
}

impl CleanupSession {
    pub async fn open(database_url: &str) -> Result<Self, FeedError> {
        let mut config: tokio_postgres::Config = database_url.parse()?;
        config.connect_timeout(Duration::from_secs(2));
        config.application_name("oauth-gateway cleanup");
        let (client, connection) = config.connect(NoTls).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        // A batch skips locked rows and is bounded, so a minute is far more than it needs.
        client
            .batch_execute("SET statement_timeout = '60s'")
            .await?;
        Ok(Self {
            client,
            driver,
            leading: false,
        })
    }

    /// Whether this session holds the cleanup lock: taken now if free (and kept until the
    /// session ends), or held by another session.
    pub async fn lead(&mut self) -> Result<bool, FeedError> {
        if !self.leading {
            self.leading = self
                .client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&CLEANUP_LOCK])
                .await?
                .get(0);
        }
        Ok(self.leading)
    }

    /// Whether the session still answers.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// One batch: rows removed (0 when nothing is left).
    pub async fn cleanup(&self, batch_size: i32) -> Result<i64, FeedError> {
        Ok(self
            .client
            .query_one("SELECT oauth.cleanup(now(), $1)", &[&batch_size])
            .await?
            .get(0))
    }
}

impl Drop for CleanupSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
