//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): a JWT from a trusted
//! issuer as the grant, an Identity Assertion JWT Authorization Grant (MCP Enterprise-Managed
//! Authorization) or a workload's token. The extension decides (`oauth.jwt_bearer_grant`); this
//! fetches the issuer's key set first when the extension says it lacks it (as `client_keys` does
//! for clients), and mints the access token. No refresh token: the client presents a new grant.

use serde_json::{Value, json};
use url::Url;

use crate::app::App;
use crate::cimd::FetchError;
use crate::error::OAuthError;
use crate::http::{ClientCredentials, Params};

pub use oauth_rules::assertion_grant::GRANT_TYPE;

pub async fn grant(
    app: &App,
    client: &ClientCredentials,
    params: &Params,
) -> Result<Value, OAuthError> {
    let assertion = params.required("assertion")?;
    // Fail closed: fine-grained authorization (RFC 9396) is not carried into these tokens.
    if params.single("authorization_details")?.is_some() {
        return Err(OAuthError::invalid_request(
            "authorization_details is not supported with this grant",
        ));
    }
    let scope = params.single("scope")?;
    let resource = params.single("resource")?;
    fetch_issuer_keys(app, assertion).await?;
    let issued = app
        .db
        .jwt_bearer_grant(client, assertion, scope, resource)
        .await?;
    let now = jsonwebtoken::get_current_timestamp();
    let (access_token, expires_in) = super::access_token(app, &issued, now, None, None, None);
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": issued.scope,
    }))
}

/// Fetches the trusted issuer's key set when the extension says the database lacks it (no fresh
/// copy, or the copy lacks the assertion's key). A failed fetch is recorded and otherwise ignored:
/// the extension then decides with what it has and says why it refuses.
async fn fetch_issuer_keys(app: &App, assertion: &str) -> Result<(), OAuthError> {
    let Some(wanted) = app.db.trusted_issuer_jwks_to_fetch(assertion).await? else {
        return Ok(());
    };
    let config = &app.config.cimd;
    // The extension checked the URL when the administrator trusted the issuer.
    let Ok(url) = Url::parse(&wanted.jwks_uri) else {
        return Ok(());
    };
    let fetched = app.cimd.fetch(&url).await;
    app.cimd
        .count("issuer_jwks", crate::cimd::Fetcher::outcome(&fetched));
    match fetched {
        Ok(fetched) => {
            let stored = app
                .db
                .store_trusted_issuer_jwks(
                    &wanted.issuer,
                    &wanted.jwks_uri,
                    &fetched.document,
                    fetched.fresh_for,
                    config.negative_cache,
                )
                .await;
            match stored {
                Err(e) if e.is_unavailable_or_server_error() => Err(e),
                _ => Ok(()),
            }
        }
        Err(failure) => {
            let reason = match &failure {
                FetchError::NotFetched(reason) | FetchError::Unusable(reason) => reason.as_str(),
            };
            tracing::info!(issuer = %wanted.issuer, %reason, "trusted issuer jwks fetch failed");
            app.db
                .record_trusted_issuer_jwks_failure(
                    &wanted.issuer,
                    &wanted.jwks_uri,
                    reason,
                    config.negative_cache,
                )
                .await
        }
    }
}
