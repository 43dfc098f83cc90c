//! The administrator's calls of the CLI (`oauth-gateway migrate`, `client …`), over a connection
//! of a role that may call them (a member of `oauth_admin`, or the extension's owner).

use tokio_postgres::{Client, NoTls};

/// The database's message, without the driver's wrapping: what an operator needs to read.
fn message(e: tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

pub async fn connect(url: &str) -> Result<Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Creates or upgrades the extension and sets its issuer.
pub async fn install(db: &Client, issuer: &str) -> Result<(), String> {
    db.batch_execute(
        "CREATE EXTENSION IF NOT EXISTS oauth_provider; ALTER EXTENSION oauth_provider UPDATE;",
    )
    .await
    .map_err(message)?;
    db.execute("SELECT oauth.configure(issuer => $1)", &[&issuer])
        .await
        .map_err(message)?;
    Ok(())
}

pub struct NewClient<'a> {
    pub name: &'a str,
    pub redirect_uris: &'a [String],
    pub scopes: &'a [String],
    pub token_endpoint_auth_method: &'a str,
    pub application_type: &'a str,
}

/// The new client's id and, for a confidential client, its secret (shown once).
pub async fn create_client(
    db: &Client,
    new: &NewClient<'_>,
) -> Result<(String, Option<String>), String> {
    let row = db
        .query_one(
            "SELECT client_id, client_secret FROM oauth.create_client($1, $2, $3, $4, application_type => $5)",
            &[
                &new.name,
                &new.redirect_uris,
                &new.scopes,
                &new.token_endpoint_auth_method,
                &new.application_type,
            ],
        )
        .await
        .map_err(message)?;
    Ok((row.get(0), row.get(1)))
}

pub struct ClientSummary {
    pub client_id: String,
    pub client_name: String,
    pub token_endpoint_auth_method: String,
}

pub async fn list_clients(db: &Client) -> Result<Vec<ClientSummary>, String> {
    let rows = db
        .query(
            "SELECT client_id, client_name, token_endpoint_auth_method FROM oauth.list_clients()",
            &[],
        )
        .await
        .map_err(message)?;
    Ok(rows
        .iter()
        .map(|row| ClientSummary {
            client_id: row.get(0),
            client_name: row.get(1),
            token_endpoint_auth_method: row.get(2),
        })
        .collect())
}

/// Whether there was such a client.
pub async fn delete_client(db: &Client, client_id: &str) -> Result<bool, String> {
    Ok(db
        .query_one("SELECT oauth.delete_client($1)", &[&client_id])
        .await
        .map_err(message)?
        .get(0))
}

/// Publishes a sealed key (`oauth.add_signing_key`); returns when it may sign at the earliest.
pub async fn add_signing_key(
    db: &Client,
    key: &crate::keyring::SealedKey,
    publish_lead: std::time::Duration,
) -> Result<String, String> {
    let lead = format!("{} seconds", publish_lead.as_secs());
    Ok(db
        .query_one(
            "SELECT (oauth.add_signing_key($1, $2, $3, $4, $5, $6::text::interval))->>'signs_not_before'",
            &[
                &key.kid,
                &key.alg.name(),
                &key.public_jwk,
                &key.sealed_private_key,
                &key.sealed_with,
                &lead,
            ],
        )
        .await
        .map_err(message)?
        .get(0))
}

/// Promotes a published key (`oauth.promote_signing_key`); returns when it signs from.
pub async fn promote_signing_key(db: &Client, kid: &str) -> Result<String, String> {
    Ok(db
        .query_one(
            "SELECT (oauth.promote_signing_key($1))->>'signs_from'",
            &[&kid],
        )
        .await
        .map_err(message)?
        .get(0))
}

/// Whether there was such a key.
pub async fn drop_signing_key(db: &Client, kid: &str, force: bool) -> Result<bool, String> {
    Ok(db
        .query_one("SELECT oauth.drop_signing_key($1, $2)", &[&kid, &force])
        .await
        .map_err(message)?
        .get(0))
}

/// Every key and its state (`oauth.list_signing_keys`), as the operator reads them: kid, alg,
/// state, published at, signs not before, signs from, retired at, published until.
pub async fn list_signing_keys(db: &Client) -> Result<Vec<[String; 8]>, String> {
    let rows = db
        .query(
            "SELECT kid, alg, state, published_at::text, signs_not_before::text,
                    coalesce(signs_from::text, '-'), coalesce(retired_at::text, '-'),
                    coalesce(published_until::text, '-')
               FROM oauth.list_signing_keys()",
            &[],
        )
        .await
        .map_err(message)?;
    Ok(rows
        .iter()
        .map(|row| std::array::from_fn(|i| row.get(i)))
        .collect())
}
