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
