//! The SQL functions under test as request structs: every argument named, every default in one
//! place. A test states only what its request changes, e.g.
//! `Exchange { code: None, ..auth.exchange() }.run(&db).await`.

use serde_json::{Value, json};
use tokio_postgres::Client;
use tokio_postgres::types::{FromSqlOwned, ToSql};

use crate::{
    Authorized, ClientSpec, Pkce, TestClient, assert_ok, issue_code, parse_redirect, str_field,
};

/// The one value a statement returns; panics with the statement when it fails.
pub async fn scalar<T: FromSqlOwned>(db: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> T {
    db.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// Runs `sql`, binding `id` to `$1` when the statement has that parameter.
pub async fn try_execute_with(
    db: &Client,
    sql: &str,
    id: &str,
) -> Result<u64, tokio_postgres::Error> {
    if sql.contains("$1") {
        db.execute(sql, &[&id]).await
    } else {
        db.execute(sql, &[]).await
    }
}

/// The one row a statement returns; panics with the statement when it fails.
pub async fn one_row(
    db: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> tokio_postgres::Row {
    db.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// How many rows of `relation` (a table, possibly with a `WHERE` clause) there are.
pub async fn row_count(db: &Client, relation: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    scalar(db, &format!("SELECT count(*) FROM {relation}"), params).await
}

/// The first column of every row a statement returns; panics with the statement when it fails.
pub async fn column<T: FromSqlOwned>(
    db: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<T> {
    db.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Runs a statement for its effect; panics with the statement when it fails.
pub async fn execute(db: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) {
    db.execute(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// `oauth.create_client` of the default confidential web client with `change` made to it.
pub async fn create_client_with(db: &Client, change: impl FnOnce(&mut ClientSpec)) -> TestClient {
    let mut spec = ClientSpec::default();
    change(&mut spec);
    crate::create_client(db, spec).await
}

/// The administrator's connection and a confidential web client it created: how most tests start.
pub async fn admin_with_client() -> (Client, TestClient) {
    let admin = crate::admin().await;
    let client = crate::confidential_client(&admin).await;
    (admin, client)
}

/// How many audit events of `kind` name `id` in their column `about` (`grant_id`, `family_id`,
/// `client_id`).
pub async fn event_count(db: &Client, kind: &str, about: &str, id: &(dyn ToSql + Sync)) -> i64 {
    let sql = format!("SELECT count(*) FROM oauth.events WHERE kind = $1 AND {about} = $2");
    scalar(db, &sql, &[&kind, id]).await
}

/// `oauth.revoke_grant`: whether the grant was live.
pub async fn revoke_grant(db: &Client, grant_id: uuid::Uuid) -> bool {
    scalar(db, "SELECT oauth.revoke_grant($1)", &[&grant_id]).await
}

/// `oauth.delete_client`: whether the client existed.
pub async fn delete_client(db: &Client, client_id: &str) -> bool {
    scalar(db, "SELECT oauth.delete_client($1)", &[&client_id]).await
}

/// The grants `oauth.list_user_grants` shows for `user`.
pub async fn user_grant_ids(db: &Client, user: &str) -> Vec<uuid::Uuid> {
    column(
        db,
        "SELECT grant_id FROM oauth.list_user_grants($1)",
        &[&user],
    )
    .await
}

/// The issuer the server names itself with (`iss`).
pub async fn issuer(db: &Client) -> String {
    scalar(db, "SELECT oauth.settings()->>'issuer'", &[]).await
}

/// `oauth.configure` with the named arguments `settings` (e.g. `registered_client_ttl => '1 hour'`).
pub async fn configure(db: &Client, settings: &str) {
    execute(db, &format!("SELECT oauth.configure({settings})"), &[]).await
}

/// A fixed clock for tests that pass time as `now`: `seconds` after 2030-01-01T00:00:00Z (within
/// January), as a timestamptz literal.
pub fn at(seconds: i64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    format!(
        "2030-01-{:02} {:02}:{:02}:{:02}+00",
        days + 1,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `oauth.cleanup` as it would run `interval` from now: how many rows it removed.
pub async fn cleanup_in(db: &Client, interval: &str) -> i64 {
    scalar(
        db,
        "SELECT oauth.cleanup(now() + $1::text::interval)",
        &[&interval],
    )
    .await
}

/// The database clock plus `interval`, as a timestamptz literal for a `now` argument.
pub async fn db_time_in(db: &Client, interval: &str) -> String {
    scalar(
        db,
        "SELECT (now() + $1::text::interval)::text",
        &[&interval],
    )
    .await
}

/// `base` with `changes` applied: a `null` member removes it, anything else sets it. Changes that
/// are no JSON object replace `base` whole (to send something that is not an object at all).
pub fn changed(base: &Value, changes: Value) -> Value {
    let Value::Object(changes) = changes else {
        return changes;
    };
    let mut merged = base.clone();
    let map = merged.as_object_mut().expect("base must be an object");
    for (k, v) in changes {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
    merged
}

/// An authorization request by `client`: `params` changes the valid defaults of
/// [`crate::authorize_params`] (a `null` removes one); `props` go with the user's consent.
#[derive(Clone, Debug)]
pub struct Authorize<'a> {
    pub client: &'a TestClient,
    pub pkce: Pkce,
    pub params: Value,
    pub props: Value,
}

impl<'a> Authorize<'a> {
    pub fn new(client: &'a TestClient) -> Self {
        Authorize {
            client,
            pkce: Pkce::new(),
            params: json!({}),
            props: json!({}),
        }
    }

    /// The parameters sent to `oauth.begin_authorization`.
    pub fn request(&self) -> Value {
        crate::authorize_params(self.client, &self.pkce, self.params.clone())
    }

    /// `oauth.begin_authorization` of the request.
    pub async fn begin(&self, db: &Client) -> Value {
        crate::begin_authorization(db, &self.request()).await
    }

    /// Begins the request and completes `user`'s consent to every requested scope, returning the
    /// code taken from the redirect URL.
    pub async fn run(&self, db: &Client, user: &str) -> Authorized {
        let params = self.request();
        let begun = crate::begin_authorization(db, &params).await;
        assert_ok(&begun, "begin_authorization");
        let request_id = str_field(&begun, "request_id");
        let location = issue_code(db, request_id, user, None, &self.props).await;
        if let Some(state) = params.get("state").and_then(Value::as_str) {
            assert_eq!(
                parse_redirect(&location).param("state"),
                state,
                "state is echoed"
            );
        }
        self.redirected(location)
    }

    /// What the client holds once the authorization server redirected it to `location`.
    pub fn redirected(&self, location: String) -> Authorized {
        let redirect_uri = self
            .params
            .get("redirect_uri")
            .and_then(Value::as_str)
            .unwrap_or(&self.client.redirect_uri)
            .to_owned();
        Authorized {
            code: parse_redirect(&location).param("code").to_owned(),
            pkce: self.pkce.clone(),
            redirect_uri,
            location,
            client_id: self.client.id.clone(),
            client_secret: self.client.secret.clone(),
        }
    }
}

/// `oauth.exchange_code`; `now` (a timestamptz literal) `None` means the database clock.
#[derive(Clone, Copy, Debug)]
pub struct Exchange<'a> {
    pub client_id: &'a str,
    pub client_secret: Option<&'a str>,
    pub code: Option<&'a str>,
    pub verifier: Option<&'a str>,
    pub redirect_uri: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub now: Option<&'a str>,
}

impl<'a> Exchange<'a> {
    /// A request by `client` that presents nothing yet.
    pub fn of(client: &'a TestClient) -> Self {
        Exchange {
            client_id: &client.id,
            client_secret: client.secret(),
            code: None,
            verifier: None,
            redirect_uri: None,
            resource: None,
            now: None,
        }
    }

    /// The same request presented by `client`.
    pub fn by(self, client: &'a TestClient) -> Self {
        Exchange {
            client_id: &client.id,
            client_secret: client.secret(),
            ..self
        }
    }

    pub async fn run(&self, db: &Client) -> Value {
        db.query_one(
            "SELECT oauth.exchange_code($1, $2, $3, $4, $5, $6, coalesce($7::text::timestamptz, now()))",
            &[
                &self.client_id,
                &self.client_secret,
                &self.code,
                &self.verifier,
                &self.redirect_uri,
                &self.resource,
                &self.now,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("exchange_code raised: {e:?}"))
        .get(0)
    }
}

impl Authorized {
    /// The exchange a well-behaved client makes with this code.
    pub fn exchange(&self) -> Exchange<'_> {
        Exchange {
            client_id: &self.client_id,
            client_secret: self.client_secret.as_deref(),
            code: Some(&self.code),
            verifier: Some(&self.pkce.verifier),
            redirect_uri: Some(&self.redirect_uri),
            resource: None,
            now: None,
        }
    }
}

/// `oauth.rotate_refresh_token`; `now` (a timestamptz literal) `None` means the database clock.
#[derive(Clone, Copy, Debug)]
pub struct Rotate<'a> {
    pub client_id: &'a str,
    pub client_secret: Option<&'a str>,
    pub refresh_token: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub now: Option<&'a str>,
}

impl<'a> Rotate<'a> {
    /// `client` presenting `refresh_token`, asking for nothing else.
    pub fn of(client: &'a TestClient, refresh_token: &'a str) -> Self {
        Rotate {
            client_id: &client.id,
            client_secret: client.secret(),
            refresh_token: Some(refresh_token),
            scope: None,
            resource: None,
            now: None,
        }
    }

    /// The same request at `now`.
    pub fn at(self, now: &'a str) -> Self {
        Rotate {
            now: Some(now),
            ..self
        }
    }

    pub async fn run(&self, db: &Client) -> Value {
        db.query_one(
            "SELECT oauth.rotate_refresh_token($1, $2, $3, $4, $5, coalesce($6::text::timestamptz, now()))",
            &[
                &self.client_id,
                &self.client_secret,
                &self.refresh_token,
                &self.scope,
                &self.resource,
                &self.now,
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("rotate_refresh_token raised: {e:?}"))
        .get(0)
    }
}

/// `oauth.register_client` (RFC 7591).
pub async fn register(db: &Client, metadata: &Value) -> Value {
    scalar(db, "SELECT oauth.register_client($1)", &[metadata]).await
}

impl TestClient {
    /// The client an RFC 7591 registration answer describes, redirecting to `redirect_uri`.
    pub fn registered(answer: &Value, redirect_uri: &str) -> TestClient {
        TestClient {
            id: str_field(answer, "client_id").to_owned(),
            secret: answer["client_secret"].as_str().map(str::to_owned),
            redirect_uri: redirect_uri.to_owned(),
            spec: crate::ClientSpec::default(),
        }
    }

    /// The same client presenting another secret.
    pub fn with_secret(&self, secret: Option<&str>) -> TestClient {
        TestClient {
            secret: secret.map(str::to_owned),
            ..self.clone()
        }
    }
}
