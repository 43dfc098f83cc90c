//! Concurrent token requests coalesced into one database call: refreshes
//! (`oauth.rotate_refresh_tokens`) and code exchanges (`oauth.exchange_codes`).
//!
//! A refresh or a code exchange is one short transaction whose cost is mostly the transaction
//! itself: the round trip, the snapshot, the commit's WAL flush. Under load, requests that arrive
//! while earlier batches are in flight wait in a queue and leave together, one transaction for all
//! of them; with at most `in_flight` batches running, a quiet gateway sends each request at once
//! (no added latency) and a busy one sends fewer, larger transactions. The decisions stay in the
//! extension: the batch function applies the single-request function to each element, and each
//! request gets its own answer or its own error.
//!
//! If the batch call itself fails (an error raised by one element aborts the whole transaction,
//! and so decides nothing), every element is retried as a call of its own, so one bad element
//! cannot fail the others. Unavailability (503) is answered to all: retrying would meet it again.

use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::api::{ExchangeRequest, Issued, RefreshRequest};
use super::pool::Db;
use crate::error::{ErrorCode, OAuthError};

/// How refreshes and code exchanges are coalesced (`[refresh_batching]`, named for the first).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshBatching {
    /// Batches running at once (default: the machine's cores, as many as the database can run
    /// side by side on a machine it shares); 0 sends every refresh as its own call.
    pub in_flight: usize,
    /// Requests in one batch at most.
    pub max_size: usize,
}

impl Default for RefreshBatching {
    fn default() -> Self {
        Self {
            in_flight: std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
            max_size: 64,
        }
    }
}

type Answer = Result<Issued, OAuthError>;

/// A kind of request the database can decide one at a time or many in one call.
pub trait Coalesced: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    fn one(db: &Db, request: &Self::Request) -> impl Future<Output = Answer> + Send;
    /// Each element's own answer, in order, or the call's failure (nothing was decided then).
    fn many(
        db: &Db,
        requests: &[&Self::Request],
    ) -> impl Future<Output = Result<Vec<Answer>, OAuthError>> + Send;
}

/// Refresh token requests (`oauth.rotate_refresh_token(s)`).
pub struct Refreshes;

impl Coalesced for Refreshes {
    type Request = RefreshRequest;
    async fn one(db: &Db, request: &RefreshRequest) -> Answer {
        db.rotate_refresh_token(request).await
    }
    async fn many(db: &Db, requests: &[&RefreshRequest]) -> Result<Vec<Answer>, OAuthError> {
        db.rotate_refresh_tokens(requests).await
    }
}

/// Authorization code redemptions (`oauth.exchange_code(s)`).
pub struct CodeExchanges;

impl Coalesced for CodeExchanges {
    type Request = ExchangeRequest;
    async fn one(db: &Db, request: &ExchangeRequest) -> Answer {
        db.exchange_code(request).await
    }
    async fn many(db: &Db, requests: &[&ExchangeRequest]) -> Result<Vec<Answer>, OAuthError> {
        db.exchange_codes(requests).await
    }
}

struct Pending<R> {
    request: R,
    reply: oneshot::Sender<Answer>,
}

/// The queue in front of a batch function, drained by one task.
pub struct Batcher<Op: Coalesced> {
    db: Db,
    queue: Option<mpsc::Sender<Pending<Op::Request>>>,
}

pub type RefreshBatcher = Batcher<Refreshes>;
pub type ExchangeBatcher = Batcher<CodeExchanges>;

impl<Op: Coalesced> Batcher<Op> {
    /// Starts the task that drains the queue; must be called inside the runtime.
    pub fn start(db: Db, batching: RefreshBatching) -> Self {
        if batching.in_flight == 0 || batching.max_size <= 1 {
            return Self { db, queue: None };
        }
        // Bounded: a full queue makes requests wait for room (backpressure), never drops them.
        let (queue, pending) = mpsc::channel(batching.max_size * batching.in_flight * 4);
        tokio::spawn(drain::<Op>(db.clone(), batching, pending));
        Self {
            db,
            queue: Some(queue),
        }
    }

    pub async fn decide(&self, request: Op::Request) -> Answer {
        let Some(queue) = &self.queue else {
            return Op::one(&self.db, &request).await;
        };
        let (reply, answer) = oneshot::channel();
        if queue.send(Pending { request, reply }).await.is_err() {
            return Err(OAuthError::unavailable());
        }
        // The batch task answers every element it took; a dropped sender means it panicked.
        answer
            .await
            .unwrap_or_else(|_| Err(OAuthError::server_error()))
    }
}

async fn drain<Op: Coalesced>(
    db: Db,
    batching: RefreshBatching,
    mut pending: mpsc::Receiver<Pending<Op::Request>>,
) {
    let slots = Arc::new(Semaphore::new(batching.in_flight));
    while let Some(first) = pending.recv().await {
        // Waiting for a slot is what lets the next batch accumulate behind the running ones.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < batching.max_size {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let db = db.clone();
        tokio::spawn(async move {
            run::<Op>(&db, batch).await;
            drop(slot);
        });
    }
}

async fn run<Op: Coalesced>(db: &Db, batch: Vec<Pending<Op::Request>>) {
    if let [_] = batch.as_slice() {
        let Pending { request, reply } = batch.into_iter().next().expect("one element");
        let _ = reply.send(Op::one(db, &request).await);
        return;
    }
    let requests: Vec<&Op::Request> = batch.iter().map(|p| &p.request).collect();
    match Op::many(db, &requests).await {
        Ok(answers) if answers.len() == batch.len() => {
            for (pending, answer) in batch.into_iter().zip(answers) {
                let _ = pending.reply.send(answer);
            }
        }
        Ok(answers) => {
            tracing::error!(
                sent = batch.len(),
                answered = answers.len(),
                "the batch answered another number of elements"
            );
            for pending in batch {
                let _ = pending.reply.send(Err(OAuthError::server_error()));
            }
        }
        Err(error) if error.code == ErrorCode::TemporarilyUnavailable => {
            for pending in batch {
                let _ = pending.reply.send(Err(error.clone()));
            }
        }
        Err(_) => {
            let retried = batch.into_iter().map(|pending| async move {
                let answer = Op::one(db, &pending.request).await;
                let _ = pending.reply.send(answer);
            });
            futures_util::future::join_all(retried).await;
        }
    }
}
