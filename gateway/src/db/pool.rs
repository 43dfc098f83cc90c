//! The pool, and one extension function call through it.
//!
//! Unavailability (pool timeout, connection refused, a connection lost mid-call) becomes
//! `temporarily_unavailable` (503); an error raised by `oauth._raise` becomes the OAuth error it
//! names in its HINT; anything else is a bug, logged here and answered as `server_error` without
//! the database's text.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_postgres::Row;
use tokio_postgres::types::{ToSql, Type};

use crate::error::{ErrorCode, OAuthError};

/// Beyond `statement_timeout`, how long a call waits for the server's cancellation to arrive.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// Without a statement cache (behind a pooler in transaction mode): each SQL text's parameter
    /// types, learned once, so every call is a single unnamed statement.
    unnamed: Option<Arc<ParamTypes>>,
    /// How long a call may go without an answer before its connection is given up (see `query`).
    answer_within: Option<Duration>,
    /// How long calls waited for a connection (the metrics hold a clone).
    wait: prometheus_client::metrics::histogram::Histogram,
}

/// Parameter types by SQL text.
#[derive(Default)]
struct ParamTypes(RwLock<HashMap<String, Vec<Type>>>);

impl ParamTypes {
    async fn of(
        &self,
        client: &tokio_postgres::Client,
        sql: &str,
    ) -> Result<Vec<Type>, OAuthError> {
        if let Some(types) = self.0.read().expect("param types lock").get(sql) {
            return Ok(types.clone());
        }
        // A named statement exists in one server session, and a pooler in transaction mode keeps
        // a client on one only within a transaction: prepare, read, close, all inside one. The
        // dropped statement's Close is queued before the COMMIT, so nothing is left behind.
        client.batch_execute("BEGIN").await.map_err(query_error)?;
        let described = client
            .prepare(sql)
            .await
            .map(|statement| statement.params().to_vec());
        let end = if described.is_ok() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let ended = client.batch_execute(end).await;
        let types = described.map_err(query_error)?;
        ended.map_err(query_error)?;
        self.0
            .write()
            .expect("param types lock")
            .insert(sql.to_owned(), types.clone());
        Ok(types)
    }
}

impl Db {
    /// A pool of connections to `database_url` on which every statement is cancelled after
    /// `statement_timeout` (zero: whatever the role says), so a slow statement cannot hold a
    /// connection for long; with `statement_cache` off, no statement is named (see `unnamed`).
    pub fn connect(
        database_url: &str,
        pool_size: usize,
        wait: Duration,
        statement_timeout: Duration,
        statement_cache: bool,
    ) -> Result<Self, String> {
        let mut pg: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| format!("database_url: {e}"))?;
        // A startup option, so it holds for a plain connection string and from the first statement.
        // None at zero: a pooler refuses startup options, and the role's setting then applies.
        if !statement_timeout.is_zero() {
            let timeout = format!("-c statement_timeout={}", statement_timeout.as_millis());
            let options = match pg.get_options() {
                Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
                _ => timeout,
            };
            pg.options(&options);
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(2));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("oauth-gateway");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(wait),
                create: Some(Duration::from_secs(2)),
                recycle: Some(wait),
            })
            .build()
            .map_err(|e| format!("database pool: {e}"))?;
        Ok(Self {
            pool,
            unnamed: (!statement_cache).then(Default::default),
            answer_within: (!statement_timeout.is_zero())
                .then(|| statement_timeout + ANSWER_MARGIN),
            wait: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 4.0, 10),
            ),
        })
    }

    /// Calls `sql` (one statement returning one jsonb value) and returns that value as-is:
    /// expected failures are in it as `{"error", ...}`.
    pub(super) async fn call(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Value, OAuthError> {
        let rows = self.query(sql, params).await?;
        let [row] = rows.as_slice() else {
            tracing::error!(
                rows = rows.len(),
                "a jsonb call answered other than one row"
            );
            return Err(OAuthError::server_error());
        };
        row.try_get::<_, Value>(0).map_err(query_error)
    }

    /// Like `call`, but an `{"error"}` result becomes `Err`.
    pub(super) async fn call_ok(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Value, OAuthError> {
        let value = self.call(sql, params).await?;
        match error_answer(&value) {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }

    /// The pool's size, idle connections and limit now.
    pub fn pool_status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// The histogram of waits for a connection.
    pub fn wait_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.wait.clone()
    }

    /// Rows of a set-returning call, for the few functions that are not jsonb-shaped.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, OAuthError> {
        let waiting = std::time::Instant::now();
        let client = self.pool.get().await;
        self.wait.observe(waiting.elapsed().as_secs_f64());
        let client = client.map_err(pool_error)?;
        let answer = self.statement(&client, sql, params);
        let Some(limit) = self.answer_within else {
            return answer.await;
        };
        match tokio::time::timeout(limit, answer).await {
            Ok(answer) => answer,
            Err(_) => {
                // Not even the server's statement_timeout came back: the connection went silent
                // (its host vanished, a partition, a failover that closed nothing) and would
                // stay in the pool, taking every later call with it until TCP gives up.
                tracing::warn!("a database connection stopped answering; dropped");
                drop(deadpool_postgres::Object::take(client));
                Err(OAuthError::unavailable())
            }
        }
    }

    async fn statement(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, OAuthError> {
        let Some(param_types) = &self.unnamed else {
            let statement = client.prepare_cached(sql).await.map_err(query_error)?;
            return client.query(&statement, params).await.map_err(query_error);
        };
        let types = param_types.of(client, sql).await?;
        let typed: Vec<(&(dyn ToSql + Sync), Type)> = params.iter().copied().zip(types).collect();
        client.query_typed(sql, &typed).await.map_err(query_error)
    }
}

/// The extension's expected-failure answer `{"error", "error_description"}`, if `value` is one.
pub(super) fn error_answer(value: &Value) -> Option<OAuthError> {
    let code = value.get("error")?.as_str()?;
    let description = value
        .get("error_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(OAuthError::new(
        ErrorCode::from_extension(code),
        description,
    ))
}

fn pool_error(error: PoolError) -> OAuthError {
    tracing::warn!(%error, "database unavailable");
    OAuthError::unavailable()
}

fn query_error(error: tokio_postgres::Error) -> OAuthError {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        // `oauth._raise` raises class OA with the error's name in HINT.
        if code.starts_with("OA") {
            let name = db.hint().unwrap_or_default();
            return OAuthError::new(ErrorCode::from_extension(name), db.message());
        }
        // Class 08 (connection), 53 (resources), 57P (shutdown), 57014 (cancelled, as by
        // statement_timeout): the database, not the request.
        if code.starts_with("08")
            || code.starts_with("53")
            || code.starts_with("57P")
            || code == "57014"
        {
            tracing::warn!(sqlstate = code, "database unavailable");
            return OAuthError::unavailable();
        }
        tracing::error!(
            sqlstate = code,
            message = db.message(),
            "unexpected database error"
        );
        return OAuthError::server_error();
    }
    if error.is_closed() || error.to_string().contains("connection") {
        tracing::warn!(%error, "database connection lost");
        return OAuthError::unavailable();
    }
    tracing::error!(%error, "unexpected database client error");
    OAuthError::server_error()
}
