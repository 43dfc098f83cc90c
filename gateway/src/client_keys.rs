//! The keys of `private_key_jwt` clients that publish them at a `jwks_uri` (RFC 7591 §2): before
//! a request authenticated by a client assertion is decided, the extension says whether the
//! client's key set must be fetched (`oauth.client_jwks_to_fetch`: no fresh copy, or the copy
//! lacks the assertion's key and was fetched over a minute ago); this fetches it with the guarded
//! fetcher of metadata documents (SSRF checks, TLS, size cap, deadline, host policy) and stores
//! it in the database for every gateway. Whether the assertion is good is the extension's call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::app::App;
use crate::budget::Budget;
use crate::cimd::{FetchError, check_client_id};
use crate::error::{ErrorCode, OAuthError};
use crate::http::ClientCredentials;

/// One fetch of one client's key set, awaited by every request that needs it.
type Flight = OnceCell<Result<(), OAuthError>>;

pub struct ClientKeys {
    /// Fetches a minute per jwks_uri host, per process: a client that registered a jwks_uri
    /// anywhere (registration is open) makes us fetch from there, so each host gets a budget.
    per_host: Budget,
    in_flight: Mutex<HashMap<String, Arc<Flight>>>,
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self {
            per_host: Budget::new(Duration::from_secs(60)),
            in_flight: Mutex::default(),
        }
    }
}

fn refused(reason: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidClient,
        format!("client authentication failed: {reason}"),
    )
}

/// Fetches the key set `client`'s assertion needs when the extension says the database lacks it.
/// Nothing for clients that did not present an assertion. A fetch that fails is recorded and
/// otherwise ignored: the extension then decides with the keys it has (a last good copy serves a
/// while), and says why it refuses.
pub async fn ensure(app: &App, client: &ClientCredentials) -> Result<(), OAuthError> {
    let Some(assertion) = client.assertion() else {
        return Ok(());
    };
    let Some(jwks_uri) = app
        .db
        .client_jwks_to_fetch(&client.client_id, assertion)
        .await?
    else {
        return Ok(());
    };
    match app
        .client_keys
        .refresh(app, &client.client_id, &jwks_uri)
        .await
    {
        Err(e) if e.is_unavailable_or_server_error() => Err(e),
        Err(e) => {
            tracing::info!(client_id = %client.client_id, reason = %e.description, "client keys not refreshed");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

impl ClientKeys {
    async fn refresh(&self, app: &App, client_id: &str, jwks_uri: &str) -> Result<(), OAuthError> {
        let flight = self
            .in_flight
            .lock()
            .expect("in-flight lock")
            .entry(client_id.to_owned())
            .or_default()
            .clone();
        let outcome = flight
            .get_or_init(|| self.fetch_and_store(app, client_id, jwks_uri))
            .await
            .clone();
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        if in_flight
            .get(client_id)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            in_flight.remove(client_id);
        }
        outcome
    }

    async fn fetch_and_store(
        &self,
        app: &App,
        client_id: &str,
        jwks_uri: &str,
    ) -> Result<(), OAuthError> {
        let config = &app.config.cimd;
        // The host policy and URL rules of metadata documents: the same fetcher, the same risks.
        let url = check_client_id(jwks_uri, config)
            .map_err(|_| refused("the client's jwks_uri is not fetched from this host"))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self
            .per_host
            .spend(&host, config.per_host_fetches_per_minute)
        {
            // Not recorded: the budget is this process's, and the host may be fine for the others.
            app.cimd.count("jwks", "budget_exhausted");
            return Err(refused(
                "too many key set fetches from this host; try again in a minute",
            ));
        }
        let fetched = app.cimd.fetch(&url).await;
        app.cimd
            .count("jwks", crate::cimd::Fetcher::outcome(&fetched));
        match fetched {
            Ok(fetched) => {
                tracing::info!(%host, "client jwks fetched");
                app.db
                    .store_client_jwks(
                        client_id,
                        jwks_uri,
                        &fetched.document,
                        fetched.fresh_for,
                        config.negative_cache,
                    )
                    .await
            }
            Err(failure) => {
                let reason = failure.reason();
                tracing::info!(%host, %reason, "client jwks fetch failed");
                app.db
                    .record_client_jwks_failure(client_id, jwks_uri, reason, config.negative_cache)
                    .await?;
                Err(refused(&match failure {
                    FetchError::NotFetched(_) => {
                        "the client's jwks_uri could not be fetched".into()
                    }
                    FetchError::Unusable(reason) => {
                        format!("the client's jwks_uri is unusable: {reason}")
                    }
                }))
            }
        }
    }
}
