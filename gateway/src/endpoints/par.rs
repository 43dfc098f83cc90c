//! The pushed authorization request endpoint (RFC 9126): the client authenticates as at /token
//! and posts its authorization request's parameters; the extension validates and stores them
//! (`oauth.push_authorization_request`) and answers the single-use `request_uri` the browser then
//! carries to /authorize. Errors are JSON, as at /token: nothing here is ever redirected.

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::app::App;
use crate::db::Pushed;
use crate::error::{ErrorCode, OAuthError};
use crate::http::{self, ClientCredentials, Req, Resp};

/// Client authentication's parameters: they say who pushes, they are not the request.
const CLIENT_AUTHENTICATION: [&str; 3] =
    ["client_secret", "client_assertion", "client_assertion_type"];

pub async fn handle(app: &App, req: Req) -> Resp {
    http::json_or_error(StatusCode::CREATED, push(app, req).await)
}

async fn push(app: &App, req: Req) -> Result<Value, OAuthError> {
    http::require_post(&req, "pushed authorization request")?;
    let (client, params) = http::read_client_form(req, app.config.body_limits()).await?;
    let mut request = params.to_json();
    if let Some(fields) = request.as_object_mut() {
        for name in CLIENT_AUTHENTICATION {
            fields.remove(name);
        }
    }
    let answer = match stored(app, &client, &request).await? {
        // A metadata-document client pushing before any /authorize: fetch its document, then
        // push again (its keys, for private_key_jwt, come from the document).
        Pushed::FetchClientDocument {
            fetch_client_document: url,
        } => {
            app.cimd.refresh(&url).await.map_err(|e| {
                if e.is_unavailable_or_server_error() {
                    e
                } else {
                    client.challenged(unusable_document())
                }
            })?;
            stored(app, &client, &request).await?
        }
        stored => stored,
    };
    match answer {
        Pushed::Stored {
            request_uri,
            expires_in,
        } => Ok(json!({"request_uri": request_uri, "expires_in": expires_in})),
        Pushed::FetchClientDocument { .. } => Err(client.challenged(unusable_document())),
    }
}

async fn stored(
    app: &App,
    client: &ClientCredentials,
    request: &Value,
) -> Result<Pushed, OAuthError> {
    crate::client_keys::ensure(app, client).await?;
    app.db
        .push_authorization_request(client, request)
        .await
        .map_err(|e| client.challenged(e))
}

fn unusable_document() -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidClient,
        "the client's metadata document could not be used",
    )
}
