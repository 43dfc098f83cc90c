//! The revocation feed: its own connection (pooled connections cannot LISTEN), the extension's
//! `NOTIFY oauth_revocations` payloads as they come, and the backlog from `oauth.revocations`.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::api::{Revocation, Revocations, Settings};

pub type FeedError = Box<dyn std::error::Error + Send + Sync>;

pub struct RevocationFeed {
    client: Client,
    payloads: tokio::sync::mpsc::UnboundedReceiver<String>,
    driver: tokio::task::JoinHandle<()>,
}

impl RevocationFeed {
    /// Connects and LISTENs. Read the backlog after this, so nothing committed in between is missed.
    pub async fn open(database_url: &str) -> Result<Self, FeedError> {
        let mut config: tokio_postgres::Config = database_url.parse()?;
        config.connect_timeout(Duration::from_secs(2));
        config.application_name("oauth-gateway revocation feed");
        let (client, mut connection) = config.connect(NoTls).await?;
        let (tx, payloads) = tokio::sync::mpsc::unbounded_channel();
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
        client.batch_execute("LISTEN oauth_revocations").await?;
        Ok(Self {
            client,
            payloads,
            driver,
        })
    }

    pub async fn settings(&self) -> Result<Settings, FeedError> {
        let value: serde_json::Value = self
            .client
            .query_one("SELECT oauth.settings()", &[])
            .await?
            .get(0);
        Ok(serde_json::from_value(value)?)
    }

    /// A round trip through the feed's own connection: a LISTEN connection that was dropped
    /// without being closed answers nothing here (and delivers no notifications either).
    pub async fn heartbeat(&self) -> Result<(), FeedError> {
        self.client.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Grants, families and single access tokens revoked within the last `horizon`.
    pub async fn backlog(&self, horizon: Duration) -> Result<Revocations, FeedError> {
        let value: serde_json::Value = self
            .client
            .query_one(
                "SELECT oauth.revocations(now() - make_interval(secs => $1))",
                &[&horizon.as_secs_f64()],
            )
            .await?
            .get(0);
        Ok(serde_json::from_value(value)?)
    }

    /// The next notification, or `None` once the connection is lost. Payloads that are not
    /// revocations are skipped.
    pub async fn next(&mut self) -> Option<Revocation> {
        loop {
            let payload = self.payloads.recv().await?;
            if let Ok(revocation) = serde_json::from_str(&payload) {
                return Some(revocation);
            }
        }
    }
}

impl Drop for RevocationFeed {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
