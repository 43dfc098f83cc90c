//! The pool, and one extension function call through it.
//!
//! Unavailability (pool timeout, connection refused, a connection lost mid-call) becomes
//! `temporarily_unavailable` (503); an error raised by `oauth._raise` becomes the OAuth error it
//! names in its HINT; anything else is a bug, logged here and answered as `server_error` without
//! the database's text.

use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, Timeouts,
};
use serde_json::Value;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::error::{ErrorCode, OAuthError};

#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// A pool of connections to `database_url` on which every statement is cancelled after
    /// `statement_timeout` (zero: never), so a slow statement cannot hold a connection for long.
    pub fn connect(
        database_url: &str,
        pool_size: usize,
        wait: Duration,
        statement_timeout: Duration,
    ) -> Result<Self, String> {
        let mut pg: tokio_postgres::Config = database_url
            .parse()
            .map_err(|e| format!("database_url: {e}"))?;
        // A startup option, so it holds for a plain connection string and from the first statement.
        let timeout = format!("-c statement_timeout={}", statement_timeout.as_millis());
        let options = match pg.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {timeout}"),
            _ => timeout,
        };
        pg.options(&options);
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
        Ok(Self { pool })
    }

    /// Calls `sql` (one statement returning one jsonb value) and returns that value as-is:
    /// expected failures are in it as `{"error", ...}`.
    pub(super) async fn call(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Value, OAuthError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached(sql).await.map_err(query_error)?;
        let row = client
            .query_one(&statement, params)
            .await
            .map_err(query_error)?;
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

    /// Rows of a set-returning call, for the few functions that are not jsonb-shaped.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, OAuthError> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached(sql).await.map_err(query_error)?;
        client.query(&statement, params).await.map_err(query_error)
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
