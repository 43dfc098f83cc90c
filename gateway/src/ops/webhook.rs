//! The audit feed's webhook: `oauth.events` POSTed to the operator's URL, at least once, in the
//! extension's delivery order, by one gateway at a time.
//!
//! The extension decides who delivers (a lease on the consumer, `oauth.take_events`) and what comes
//! next; this loop only sends and acknowledges. A batch is acknowledged after a 2xx answer only, so
//! a crash between the two sends it again (the receiver dedupes by `event_id`); a failed send is
//! retried with backoff, and if this gateway stops renewing its lease another takes over where
//! the consumer stands.
//!
//! Each body is signed: `X-OAuth-Events-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" under the configured secret>`, so the receiver can check origin and freshness.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::header::{self, HeaderName};
use ring::hmac;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::app::App;
use crate::outbound::{self, Fetch};

pub const SIGNATURE_HEADER: &str = "x-oauth-events-signature";

/// `[audit_webhook]`: off unless `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where batches are POSTed (https; http only to a loopback host).
    pub url: Option<String>,
    /// The HMAC key of the signature header; required with `url`.
    pub secret: Option<String>,
    /// The consumer's name in `oauth.event_consumers`: gateways with the same name share one
    /// position and deliver one at a time.
    pub consumer: String,
    pub batch_size: i32,
    #[serde(with = "crate::config::seconds")]
    pub lease: Duration,
    #[serde(with = "crate::config::seconds")]
    pub poll_interval: Duration,
    #[serde(with = "crate::config::seconds")]
    pub timeout: Duration,
    /// Longest wait between failed sends.
    #[serde(with = "crate::config::seconds")]
    pub max_backoff: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            consumer: "webhook".into(),
            batch_size: 100,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl WebhookConfig {
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let parsed = Url::parse(url).map_err(|e| format!("audit_webhook.url: {e}"))?;
        if !outbound::url_allowed(&parsed, true) {
            return Err("audit_webhook.url must be https (http only to a loopback host)".into());
        }
        if self.secret.as_deref().is_none_or(|s| s.len() < 16) {
            return Err("audit_webhook.secret (at least 16 bytes) is required with a url".into());
        }
        if !(1..=1000).contains(&self.batch_size) {
            return Err("audit_webhook.batch_size must be 1 to 1000".into());
        }
        if self.lease < Duration::from_secs(2) || self.poll_interval.is_zero() {
            return Err(
                "audit_webhook.lease must be at least 2 s and poll_interval above 0".into(),
            );
        }
        Ok(())
    }
}

/// The signature header's value for `body` sent at `t` (unix seconds).
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let tag = hmac::sign(&key, &signed);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Starts delivering when `[audit_webhook]` names a URL.
pub fn schedule(app: Arc<App>) -> Option<tokio::task::JoinHandle<()>> {
    let config = app.config.audit_webhook.clone();
    let url = Url::parse(config.url.as_deref()?).ok()?;
    let fetch = match Fetch::new(None, true, config.timeout) {
        Ok(fetch) => fetch,
        Err(error) => {
            tracing::error!(%error, "audit webhook not started");
            return None;
        }
    };
    Some(tokio::spawn(deliver(app, config, url, fetch)))
}

async fn deliver(app: Arc<App>, config: WebhookConfig, url: Url, fetch: Fetch) {
    // Unique per process: a restarted gateway is a new holder and waits out its old lease.
    let holder = uuid::Uuid::new_v4().to_string();
    let secret = config.secret.clone().unwrap_or_default();
    let mut backoff = Duration::ZERO;
    loop {
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        let taken = app
            .db
            .take_events(&config.consumer, &holder, config.lease, config.batch_size)
            .await;
        let events = match taken {
            Ok(Some(events)) if !events.is_empty() => events,
            Ok(_) => {
                backoff = Duration::ZERO;
                tokio::time::sleep(config.poll_interval).await;
                continue;
            }
            Err(_) => {
                backoff = next_backoff(backoff, config.max_backoff);
                continue;
            }
        };
        let through = events
            .last()
            .and_then(|e| e.get("position"))
            .and_then(|p| p.as_str())
            .map(str::to_owned);
        let body = Bytes::from(json!({ "events": events }).to_string());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let headers = vec![
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                HeaderName::from_static(SIGNATURE_HEADER),
                signature(secret.as_bytes(), now, &body),
            ),
        ];
        let sent = fetch.post(&url, headers, body).await;
        match sent {
            Ok(answer) if answer.status.is_success() => {
                backoff = Duration::ZERO;
                if let Some(through) = through
                    && let Err(error) = app
                        .db
                        .acknowledge_events(&config.consumer, &holder, &through)
                        .await
                {
                    // Sent again by whoever delivers next: at least once.
                    tracing::warn!(?error, "audit webhook: acknowledgement failed");
                }
            }
            Ok(answer) => {
                tracing::warn!(status = %answer.status, "audit webhook refused a batch");
                backoff = next_backoff(backoff, config.max_backoff);
            }
            Err(error) => {
                tracing::warn!(%error, "audit webhook unreachable");
                backoff = next_backoff(backoff, config.max_backoff);
            }
        }
    }
}

fn next_backoff(current: Duration, max: Duration) -> Duration {
    (current * 2).clamp(Duration::from_millis(500), max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_time_and_body() {
        let a = signature(b"0123456789abcdef", 1_700_000_000, b"{}");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, signature(b"0123456789abcdef", 1_700_000_001, b"{}"));
        assert_ne!(a, signature(b"0123456789abcdef", 1_700_000_000, b"[]"));
        assert_ne!(a, signature(b"0123456789abcdeF", 1_700_000_000, b"{}"));
    }

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_the_cap() {
        let max = Duration::from_secs(60);
        let mut b = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..10 {
            b = next_backoff(b, max);
            seen.push(b.as_millis());
        }
        assert_eq!(&seen[..4], &[500, 1000, 2000, 4000]);
        assert_eq!(*seen.last().unwrap(), 60_000);
    }
}
