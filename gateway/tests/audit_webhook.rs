//! The audit feed's webhook: signed batches, retried until the receiver accepts them, delivered by
//! one gateway at a time, and resumed by a restarted gateway where the consumer stood.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use oauth_gateway::ServerHandle;
use ring::hmac;
use serde_json::Value;

const SECRET: &str = "a-webhook-secret-of-some-length";

struct Received {
    signature: String,
    body: Bytes,
}

/// An HTTP receiver that refuses its first `failures` requests with 500, then accepts.
struct Receiver {
    url: String,
    accepted: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(failures: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let accepted: Arc<Mutex<Vec<Received>>> = Default::default();
        let attempts = Arc::new(AtomicUsize::new(0));
        let (log, count) = (accepted.clone(), attempts.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, count) = (log.clone(), count.clone());
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (log, count) = (log.clone(), count.clone());
                        async move {
                            let signature = req
                                .headers()
                                .get("x-oauth-events-signature")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let status = if count.fetch_add(1, Ordering::SeqCst) < failures {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                log.lock().unwrap().push(Received { signature, body });
                                StatusCode::NO_CONTENT
                            };
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = status;
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self {
            url,
            accepted,
            attempts,
        }
    }

    /// Every event of every accepted batch, in the order received.
    fn events(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["events"].as_array().unwrap().clone()
            })
            .collect()
    }

    async fn wait_for(&self, kind: &str, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let events: Vec<Value> = self
                .events()
                .into_iter()
                .filter(|e| e["kind"] == kind)
                .collect();
            if events.len() >= count {
                return events;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{} of {count} {kind} events delivered: {:?}",
                events.len(),
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Another gateway on `gw`'s database delivering the audit feed to `url`.
async fn deliverer(gw: &Gateway, url: &str) -> ServerHandle {
    let mut config = gw.config.clone();
    config.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.audit_webhook.url = Some(url.to_owned());
    config.audit_webhook.secret = Some(SECRET.into());
    config.audit_webhook.lease = Duration::from_secs(2);
    config.audit_webhook.poll_interval = Duration::from_millis(100);
    config.audit_webhook.max_backoff = Duration::from_millis(500);
    let app = oauth_gateway::build(config).await.expect("build deliverer");
    oauth_gateway::serve(app).await.expect("serve deliverer")
}

fn verify(received: &Received) {
    let (t, v1) = received
        .signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .expect("t=…,v1=…");
    let tag: Vec<u8> = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
        .collect();
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&received.body);
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()),
        &signed,
        &tag,
    )
    .expect("the signature verifies under the shared secret");
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .abs_diff(t.parse().unwrap());
    assert!(age < 60, "signed now");
}

async fn consumer_exists(gw: &Gateway) {
    let started = Instant::now();
    while gw
        .sql_value::<i64>("SELECT count(*) FROM oauth.event_consumers", &[])
        .await
        == 0
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no consumer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn new_clients(gw: &Gateway, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(gw.public_client(&["mcp"]).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_reach_the_webhook_signed_once_each_in_order_through_failures_and_restarts() {
    let gw = Gateway::start().await;
    let receiver = Receiver::start(2).await;
    let first = deliverer(&gw, &receiver.url).await;
    let second = deliverer(&gw, &receiver.url).await;
    consumer_exists(&gw).await;

    let created = new_clients(&gw, 3).await;
    let delivered = receiver.wait_for("client_created", 3).await;
    let ids: Vec<&str> = delivered
        .iter()
        .map(|e| e["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        created.iter().map(String::as_str).collect::<Vec<_>>(),
        "in order"
    );
    assert!(
        receiver.attempts.load(Ordering::SeqCst) >= 3,
        "the refused batches were sent again"
    );
    for received in receiver.accepted.lock().unwrap().iter() {
        verify(received);
    }

    // Every delivering gateway stops; events keep happening; a new one resumes where the consumer
    // stood once the old lease has run out.
    first.shutdown(Duration::from_secs(1)).await;
    second.shutdown(Duration::from_secs(1)).await;
    let later = new_clients(&gw, 2).await;
    let restarted = deliverer(&gw, &receiver.url).await;
    let all = receiver.wait_for("client_created", 5).await;
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e["client_id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = created.iter().chain(&later).map(String::as_str).collect();
    assert_eq!(ids, expected, "resumed in order, nothing sent twice");
    let unique: BTreeSet<i64> = receiver
        .events()
        .iter()
        .map(|e| e["event_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        unique.len(),
        receiver.events().len(),
        "no event accepted twice while one gateway delivers at a time"
    );
    for received in receiver.accepted.lock().unwrap().iter() {
        verify(received);
    }
    restarted.shutdown(Duration::from_secs(1)).await;
    gw.stop().await;
}

#[tokio::test]
async fn a_webhook_without_a_secret_or_over_plain_http_elsewhere_is_refused_at_start() {
    let gw = Gateway::start().await;
    for (url, secret) in [
        ("http://example.com/events", Some(SECRET)),
        ("https://example.com/events", None),
        ("https://example.com/events", Some("short")),
    ] {
        let mut config = gw.config.clone();
        config.audit_webhook.url = Some(url.into());
        config.audit_webhook.secret = secret.map(str::to_owned);
        let refused = oauth_gateway::build(config).await;
        assert!(refused.is_err(), "{url} {secret:?}");
    }
    gw.stop().await;
}
