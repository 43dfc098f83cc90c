//! The upstream provider's sealed tokens (`sql/upstream_tokens.sql`): the database stores and
//! hands back opaque bytes; sealing and opening is `upstream::Sealer`'s.

use uuid::Uuid;

use super::pool::Db;
use crate::error::OAuthError;

/// A row of `oauth.upstream_tokens_for_grant`: what the seal binds (set, user, upstream), the
/// blob, and the version a replacement must name.
#[derive(Debug, Clone)]
pub struct SealedTokenSet {
    pub token_set_id: Uuid,
    pub user_id: String,
    pub upstream: String,
    pub sealed: Vec<u8>,
    pub sealed_with: String,
    pub version: i64,
}

impl Db {
    pub async fn store_upstream_tokens(
        &self,
        token_set_id: Uuid,
        session_id: Uuid,
        upstream: &str,
        sealed: &[u8],
        sealed_with: &str,
    ) -> Result<(), OAuthError> {
        self.call_ok(
            "SELECT oauth.store_upstream_tokens($1, $2, $3, $4, $5)",
            &[&token_set_id, &session_id, &upstream, &sealed, &sealed_with],
        )
        .await
        .map(|_| ())
    }

    pub async fn upstream_tokens_for_grant(
        &self,
        grant_id: Uuid,
    ) -> Result<Option<SealedTokenSet>, OAuthError> {
        let rows = self
            .query(
                "SELECT token_set_id, user_id, upstream, sealed, sealed_with, version
                   FROM oauth.upstream_tokens_for_grant($1)",
                &[&grant_id],
            )
            .await?;
        rows.first()
            .map(|row| {
                Ok(SealedTokenSet {
                    token_set_id: row.try_get(0)?,
                    user_id: row.try_get(1)?,
                    upstream: row.try_get(2)?,
                    sealed: row.try_get(3)?,
                    sealed_with: row.try_get(4)?,
                    version: row.try_get(5)?,
                })
            })
            .transpose()
            .map_err(|e: tokio_postgres::Error| {
                tracing::error!(error = %e, "oauth.upstream_tokens_for_grant answered in another shape");
                OAuthError::server_error()
            })
    }

    /// Whether this gateway may refresh the set now (no other gateway is, and it is still at
    /// `expected_version`).
    pub async fn claim_upstream_refresh(
        &self,
        token_set_id: Uuid,
        expected_version: i64,
    ) -> Result<bool, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.claim_upstream_refresh($1, $2)",
                &[&token_set_id, &expected_version],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    pub async fn release_upstream_refresh(
        &self,
        token_set_id: Uuid,
        expected_version: i64,
    ) -> Result<bool, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.release_upstream_refresh($1, $2)",
                &[&token_set_id, &expected_version],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// The new version, or `None` when the set moved past `expected_version` (or is gone).
    pub async fn replace_upstream_tokens(
        &self,
        token_set_id: Uuid,
        expected_version: i64,
        sealed: &[u8],
        sealed_with: &str,
    ) -> Result<Option<i64>, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.replace_upstream_tokens($1, $2, $3, $4)",
                &[&token_set_id, &expected_version, &sealed, &sealed_with],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<i64>>(0)))
    }

    pub async fn forget_upstream_tokens(
        &self,
        token_set_id: Uuid,
        expected_version: i64,
    ) -> Result<bool, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.forget_upstream_tokens($1, $2)",
                &[&token_set_id, &expected_version],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }
}
