//! JWT authorization grants from trusted issuers (`sql/assertion_grants.sql`): the grant itself and
//! the key sets of issuers that publish them at a `jwks_uri`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::api::{Issued, decode};
use super::pool::Db;
use crate::error::OAuthError;
use crate::http::ClientCredentials;

/// A trusted issuer's key set the database lacks (`oauth.trusted_issuer_jwks_to_fetch`).
#[derive(Debug, Clone, Deserialize)]
pub struct IssuerKeysToFetch {
    pub issuer: String,
    pub jwks_uri: String,
}

impl Db {
    /// RFC 7523 §2.1: `assertion` as the grant, with the request's `scope` and `resource`.
    pub async fn jwt_bearer_grant(
        &self,
        client: &ClientCredentials,
        assertion: &str,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Issued, OAuthError> {
        let sql = "SELECT oauth.jwt_bearer_grant($1, $2, $3, $4, $5)";
        let value = self
            .call_ok(
                sql,
                &[
                    &client.client_id,
                    &client.secret,
                    &assertion,
                    &scope,
                    &resource,
                ],
            )
            .await?;
        decode(sql, value)
    }

    pub async fn trusted_issuer_jwks_to_fetch(
        &self,
        assertion: &str,
    ) -> Result<Option<IssuerKeysToFetch>, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.trusted_issuer_jwks_to_fetch($1)",
                &[&assertion],
            )
            .await?;
        let value: Option<Value> = rows.first().and_then(|r| r.get(0));
        Ok(value.and_then(|v| serde_json::from_value(v).ok()))
    }

    pub async fn store_trusted_issuer_jwks(
        &self,
        issuer: &str,
        jwks_uri: &str,
        jwks: &Value,
        fresh_for: Duration,
        retry_after: Duration,
    ) -> Result<(), OAuthError> {
        self.call_ok(
            "SELECT oauth.store_trusted_issuer_jwks($1, $2, $3, now() + make_interval(secs => $4), \
             now() + make_interval(secs => $5))",
            &[
                &issuer,
                &jwks_uri,
                jwks,
                &fresh_for.as_secs_f64(),
                &retry_after.as_secs_f64(),
            ],
        )
        .await
        .map(drop)
    }

    pub async fn record_trusted_issuer_jwks_failure(
        &self,
        issuer: &str,
        jwks_uri: &str,
        reason: &str,
        retry_after: Duration,
    ) -> Result<(), OAuthError> {
        self.query(
            "SELECT oauth.record_trusted_issuer_jwks_failure($1, $2, $3, now() + make_interval(secs => $4))",
            &[&issuer, &jwks_uri, &reason, &retry_after.as_secs_f64()],
        )
        .await
        .map(drop)
    }
}
