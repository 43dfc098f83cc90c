//! One function per `oauth.*` call a request makes (docs/sql-api.md describes each), with the
//! answers as types: a key the extension renames fails here, in one place, not in an endpoint.
//! Expected failures (`{"error", "error_description"}` answers) come back as `Err(OAuthError)`.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_postgres::Row;
use uuid::Uuid;

use super::pool::{Db, error_answer};
use crate::error::OAuthError;
use crate::http::ClientCredentials;
use crate::keys::Alg;

/// `oauth.settings()`: the deployment's configuration, as every gateway serves it.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub issuer: String,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub registration_enabled: bool,
    /// The capability lists of RFC 8414 metadata, as the extension enforces them.
    pub grant_types_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub response_modes_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// What client assertions (private_key_jwt) may be signed with (RFC 8414 §2).
    #[serde(default)]
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub revocation_endpoint_auth_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub introspection_endpoint_auth_signing_alg_values_supported: Vec<String>,
    pub client_id_metadata_document_supported: bool,
    /// RFC 9126 §5: every authorization request must be pushed to /par first.
    #[serde(default)]
    pub require_pushed_authorization_requests: bool,
    /// RFC 9449: tokens are bound to the DPoP key of a request's proof.
    #[serde(default)]
    pub dpop_supported: bool,
    #[serde(default)]
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// JWT authorization grant profiles (draft-ietf-oauth-identity-assertion-authz-grant): the
    /// ID-JAG's while an id-jag issuer is trusted (sql/trusted_issuers.sql).
    #[serde(default)]
    pub authorization_grant_profiles_supported: Vec<String>,
    /// Seconds a revocation can matter: the longest an access token lives.
    pub revocation_horizon: u64,
}

/// What the extension issued at the token endpoint; the gateway mints the JWTs for it.
#[derive(Debug, Clone, Deserialize)]
pub struct Issued {
    pub grant_id: Uuid,
    pub family_id: Option<Uuid>,
    pub user_id: String,
    pub client_id: String,
    pub scope: String,
    pub resource: Option<String>,
    pub nonce: Option<String>,
    pub auth_time: Option<i64>,
    pub access_token_ttl: u64,
    pub refresh_token: Option<String>,
    /// The client's `id_token_signed_response_alg` (OIDC Registration §2), in the answers that
    /// can carry an ID token (code exchange, device poll).
    #[serde(default)]
    pub id_token_signed_response_alg: Option<Alg>,
}

/// One refresh token request (RFC 6749 §6), as `oauth.rotate_refresh_token` takes it.
#[derive(Debug, Clone)]
pub struct RefreshRequest {
    pub client_id: String,
    /// The secret or client assertion, as in `ClientCredentials`.
    pub secret: Option<String>,
    pub refresh_token: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// The thumbprint of the key whose DPoP proof came with the request (RFC 9449).
    pub dpop_jkt: Option<String>,
}

/// One authorization code redemption (RFC 6749 §4.1.3), as `oauth.exchange_code` takes it.
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    pub client_id: String,
    /// The secret or client assertion, as in `ClientCredentials`.
    pub secret: Option<String>,
    pub code: String,
    pub code_verifier: String,
    pub redirect_uri: Option<String>,
    pub resource: Option<String>,
    pub dpop_jkt: Option<String>,
}

/// `oauth.begin_authorization`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeganAuthorization {
    /// Valid: the user is asked next.
    Pending { request_id: String },
    /// A URL client_id whose document the database has no fresh copy of.
    FetchClientDocument { url: String },
    /// Refused; `location` is set when the extension says the error may go to the client's
    /// (validated) redirect URI.
    Refused {
        error: OAuthError,
        location: Option<String>,
    },
}

/// What the consent page shows (`oauth.get_authorization_request`).
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub redirect_uri: String,
    pub redirect_host: Option<String>,
    /// Every registered redirect URI is loopback: any local program could be this client.
    pub loopback_only: bool,
}

/// What `oauth.push_authorization_request` answered (RFC 9126 §2.2).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Pushed {
    /// The pushed request's handle.
    Stored {
        request_uri: String,
        expires_in: u64,
    },
    /// A URL client_id whose document the database has no fresh copy of.
    FetchClientDocument { fetch_client_document: String },
}

/// A device's codes (`oauth.begin_device_authorization`, RFC 8628 §3.2).
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// What the device verification page shows (`oauth.get_device_authorization`).
#[derive(Debug, Clone)]
pub struct DeviceAuthorizationRequest {
    pub client_id: String,
    pub client_name: String,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    /// The user code in its canonical form: what the form and its CSRF token bind to.
    pub canonical_user_code: String,
}

/// `oauth.introspect`'s answer; the fields are set when `active`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Introspection {
    pub active: bool,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub iat: Option<i64>,
    pub exp: Option<i64>,
}

/// A live grant behind an access token (`oauth.userinfo`).
#[derive(Debug, Clone, Deserialize)]
pub struct LiveGrant {
    pub user_id: String,
    /// Claims the application stored with the grant; open-ended by design.
    #[serde(default)]
    pub props: Value,
}

/// A client registration (RFC 7591 §3.2.1), echoed to the client as the extension wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub client_id: String,
    /// RFC 7592 §3: where the client manages its registration; the gateway knows its own URLs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_client_uri: Option<String>,
    #[serde(flatten)]
    pub metadata: Map<String, Value>,
}

/// Revoked grants, families and single access tokens (`oauth.revocations`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Revocations {
    #[serde(default)]
    pub grants: Vec<Uuid>,
    #[serde(default)]
    pub families: Vec<Uuid>,
    /// The jtis of access tokens revoked by themselves (exchanged tokens, RFC 8693).
    #[serde(default)]
    pub access_tokens: Vec<Uuid>,
}

/// One `NOTIFY oauth_revocations` payload: a grant, a family (with its grant), or one access
/// token's jti.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Revocation {
    pub grant_id: Option<Uuid>,
    pub family_id: Option<Uuid>,
    #[serde(default)]
    pub jti: Option<Uuid>,
}

/// An answer whose shape is not what this gateway was built against: a deployment error
/// (gateway and extension versions differ), logged, never shown.
pub(super) fn decode<T: DeserializeOwned>(call: &str, value: Value) -> Result<T, OAuthError> {
    serde_json::from_value(value).map_err(|error| {
        tracing::error!(call, %error, "unexpected answer shape from the extension");
        OAuthError::server_error()
    })
}

fn text_column(call: &str, rows: &[Row]) -> Result<String, OAuthError> {
    rows.first()
        .and_then(|r| r.try_get::<_, String>(0).ok())
        .ok_or_else(|| {
            tracing::error!(call, "the extension answered no text");
            OAuthError::server_error()
        })
}

impl Db {
    /// Calls `sql` and decodes its answer (an `{"error"}` answer is the `Err`).
    async fn answer<T: DeserializeOwned>(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<T, OAuthError> {
        let value = self.call_ok(sql, params).await?;
        decode(sql, value)
    }

    pub async fn settings(&self) -> Result<Settings, OAuthError> {
        let value = self.call("SELECT oauth.settings()", &[]).await?;
        decode("settings", value)
    }

    /// Lists the resources this gateway guards, so the extension issues tokens for them (and,
    /// once any is listed, for nothing unlisted).
    pub async fn declare_resources(&self, resources: &[String]) -> Result<(), OAuthError> {
        self.query("SELECT oauth.declare_resources($1)", &[&resources])
            .await
            .map(drop)
    }

    /// `params` is the request's parameters as JSON (a repeated one as an array).
    pub async fn begin_authorization(
        &self,
        params: &Value,
    ) -> Result<BeganAuthorization, OAuthError> {
        #[derive(Deserialize)]
        struct Answer {
            request_id: Option<String>,
            fetch_client_document: Option<String>,
            redirect: Option<bool>,
            location: Option<String>,
        }
        let value = self
            .call("SELECT oauth.begin_authorization($1)", &[params])
            .await?;
        let refused = error_answer(&value);
        let answer: Answer = decode("begin_authorization", value)?;
        Ok(match (refused, answer) {
            (Some(error), answer) => BeganAuthorization::Refused {
                error,
                location: answer.location.filter(|_| answer.redirect == Some(true)),
            },
            (
                None,
                Answer {
                    fetch_client_document: Some(url),
                    ..
                },
            ) => BeganAuthorization::FetchClientDocument { url },
            (
                None,
                Answer {
                    request_id: Some(request_id),
                    ..
                },
            ) => BeganAuthorization::Pending { request_id },
            (None, _) => {
                tracing::error!("begin_authorization answered neither a request nor an error");
                return Err(OAuthError::server_error());
            }
        })
    }

    /// Raises `not_found` for an unknown or expired request.
    pub async fn get_authorization_request(
        &self,
        request_id: &str,
    ) -> Result<Option<AuthorizationRequest>, OAuthError> {
        let rows = self
            .query(
                "SELECT client_name, client_id, redirect_host, redirect_uri, scopes, resource, loopback_only \
                 FROM oauth.get_authorization_request($1)",
                &[&request_id],
            )
            .await?;
        Ok(rows.first().map(|row| AuthorizationRequest {
            client_name: row.get(0),
            client_id: row.get(1),
            redirect_host: row.get(2),
            redirect_uri: row.get(3),
            scopes: row.get(4),
            resource: row.get(5),
            loopback_only: row.get(6),
        }))
    }

    /// The user approved: the client's redirect with a code.
    pub async fn issue_code(&self, request_id: &str, user: &str) -> Result<String, OAuthError> {
        let rows = self
            .query("SELECT oauth.issue_code($1, $2)", &[&request_id, &user])
            .await?;
        text_column("issue_code", &rows)
    }

    /// The user refused: the client's redirect with `access_denied`.
    pub async fn deny_authorization(&self, request_id: &str) -> Result<String, OAuthError> {
        let rows = self
            .query("SELECT oauth.deny_authorization($1)", &[&request_id])
            .await?;
        text_column("deny_authorization", &rows)
    }

    pub async fn exchange_code(&self, request: &ExchangeRequest) -> Result<Issued, OAuthError> {
        self.answer(
            "SELECT oauth.exchange_code($1, $2, $3, $4, $5, $6, dpop_jkt => $7)",
            &[
                &request.client_id,
                &request.secret,
                &request.code,
                &request.code_verifier,
                &request.redirect_uri,
                &request.resource,
                &request.dpop_jkt,
            ],
        )
        .await
    }

    /// Several code exchanges in one call (`db::batch`), like `rotate_refresh_tokens`.
    pub(super) async fn exchange_codes(
        &self,
        requests: &[&ExchangeRequest],
    ) -> Result<Vec<Result<Issued, OAuthError>>, OAuthError> {
        let texts = |f: fn(&ExchangeRequest) -> Option<&str>| -> Vec<Option<&str>> {
            requests.iter().map(|r| f(r)).collect()
        };
        const SQL: &str = "SELECT oauth.exchange_codes($1, $2, $3, $4, $5, $6, dpop_jkts => $7)";
        let value = self
            .call(
                SQL,
                &[
                    &texts(|r| Some(&r.client_id)),
                    &texts(|r| r.secret.as_deref()),
                    &texts(|r| Some(&r.code)),
                    &texts(|r| Some(&r.code_verifier)),
                    &texts(|r| r.redirect_uri.as_deref()),
                    &texts(|r| r.resource.as_deref()),
                    &texts(|r| r.dpop_jkt.as_deref()),
                ],
            )
            .await?;
        batch_answers(SQL, value)
    }

    pub async fn rotate_refresh_token(
        &self,
        request: &RefreshRequest,
    ) -> Result<Issued, OAuthError> {
        self.answer(
            "SELECT oauth.rotate_refresh_token($1, $2, $3, $4, $5, dpop_jkt => $6)",
            &[
                &request.client_id,
                &request.secret,
                &request.refresh_token,
                &request.scope,
                &request.resource,
                &request.dpop_jkt,
            ],
        )
        .await
    }

    /// The audit feed's next events for `consumer` when `holder` holds its lease (`None` while
    /// another holder's runs), each with the `position` to acknowledge.
    pub async fn take_events(
        &self,
        consumer: &str,
        holder: &str,
        lease: Duration,
        max_rows: i32,
    ) -> Result<Option<Vec<Value>>, OAuthError> {
        let lease = format!("{} milliseconds", lease.as_millis());
        let value = self
            .call(
                "SELECT oauth.take_events($1, $2, $3::text::interval, $4)",
                &[&consumer, &holder, &lease, &max_rows],
            )
            .await?;
        if value.get("held") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        match value.get("events") {
            Some(Value::Array(events)) => Ok(Some(events.clone())),
            _ => Err(OAuthError::server_error()),
        }
    }

    /// `holder` delivered everything through `position`; false when its lease is gone.
    pub async fn acknowledge_events(
        &self,
        consumer: &str,
        holder: &str,
        position: &str,
    ) -> Result<bool, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.acknowledge_events($1, $2, $3)",
                &[&consumer, &holder, &position],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or(false))
    }

    /// Several refreshes in one call (`db::batch`): each element's own answer, in order, or the
    /// call's failure (nothing was rotated then).
    pub(super) async fn rotate_refresh_tokens(
        &self,
        requests: &[&RefreshRequest],
    ) -> Result<Vec<Result<Issued, OAuthError>>, OAuthError> {
        let client_ids: Vec<&str> = requests.iter().map(|r| r.client_id.as_str()).collect();
        let secrets: Vec<Option<&str>> = requests.iter().map(|r| r.secret.as_deref()).collect();
        let tokens: Vec<&str> = requests.iter().map(|r| r.refresh_token.as_str()).collect();
        let scopes: Vec<Option<&str>> = requests.iter().map(|r| r.scope.as_deref()).collect();
        let resources: Vec<Option<&str>> = requests.iter().map(|r| r.resource.as_deref()).collect();
        let keys: Vec<Option<&str>> = requests.iter().map(|r| r.dpop_jkt.as_deref()).collect();
        const SQL: &str = "SELECT oauth.rotate_refresh_tokens($1, $2, $3, $4, $5, dpop_jkts => $6)";
        let value = self
            .call(
                SQL,
                &[&client_ids, &secrets, &tokens, &scopes, &resources, &keys],
            )
            .await?;
        batch_answers(SQL, value)
    }

    pub async fn client_credentials_grant(
        &self,
        client: &ClientCredentials,
        scope: Option<&str>,
        resource: Option<&str>,
        dpop_jkt: Option<&str>,
    ) -> Result<Issued, OAuthError> {
        self.answer(
            "SELECT oauth.client_credentials_grant($1, $2, $3, $4, dpop_jkt => $5)",
            &[
                &client.client_id,
                &client.secret,
                &scope,
                &resource,
                &dpop_jkt,
            ],
        )
        .await
    }

    pub async fn poll_device_authorization(
        &self,
        client: &ClientCredentials,
        device_code: &str,
        dpop_jkt: Option<&str>,
    ) -> Result<Issued, OAuthError> {
        self.answer(
            "SELECT oauth.poll_device_authorization($1, $2, $3, dpop_jkt => $4)",
            &[&client.client_id, &client.secret, &device_code, &dpop_jkt],
        )
        .await
    }

    /// RFC 8693: the subject token's grant, family, audience and scope (verified by the gateway)
    /// and the target the client asks for.
    pub async fn exchange_token(
        &self,
        client: &ClientCredentials,
        subject: &SubjectToken<'_>,
        audience: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Issued, OAuthError> {
        self.answer(
            "SELECT oauth.exchange_token($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &client.client_id,
                &client.secret,
                &subject.grant_id,
                &subject.family_id,
                &subject.audience,
                &subject.scope,
                &audience,
                &scope,
                &subject.jti,
            ],
        )
        .await
    }

    /// RFC 9126 §2: the pushed request's `request_uri` and `expires_in`, or why it was refused.
    pub async fn push_authorization_request(
        &self,
        client: &ClientCredentials,
        params: &Value,
    ) -> Result<Pushed, OAuthError> {
        self.answer(
            "SELECT oauth.push_authorization_request($1, $2, $3)",
            &[&client.client_id, &client.secret, params],
        )
        .await
    }

    pub async fn begin_device_authorization(
        &self,
        client: &ClientCredentials,
        scope: Option<&str>,
        resource: Option<&str>,
    ) -> Result<DeviceAuthorization, OAuthError> {
        self.answer(
            "SELECT oauth.begin_device_authorization($1, $2, $3, $4)",
            &[&client.client_id, &client.secret, &scope, &resource],
        )
        .await
    }

    /// Raises `not_found` for an unknown, expired or decided code; `user_code` as typed.
    pub async fn get_device_authorization(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceAuthorizationRequest>, OAuthError> {
        let rows = self
            .query(
                "SELECT client_id, client_name, scopes, resource, canonical_user_code \
                   FROM oauth.get_device_authorization($1)",
                &[&user_code],
            )
            .await?;
        Ok(rows.first().map(|row| DeviceAuthorizationRequest {
            client_id: row.get(0),
            client_name: row.get(1),
            scopes: row.get(2),
            resource: row.get(3),
            canonical_user_code: row.get(4),
        }))
    }

    pub async fn approve_device_authorization(
        &self,
        user_code: &str,
        user: &str,
    ) -> Result<(), OAuthError> {
        self.query(
            "SELECT oauth.approve_device_authorization($1, $2)",
            &[&user_code, &user],
        )
        .await
        .map(drop)
    }

    pub async fn deny_device_authorization(&self, user_code: &str) -> Result<(), OAuthError> {
        self.query("SELECT oauth.deny_device_authorization($1)", &[&user_code])
            .await
            .map(drop)
    }

    /// RFC 7009: either a refresh token, or the claims of an access token of ours.
    pub async fn revoke_token(
        &self,
        client: &ClientCredentials,
        refresh_token: Option<&str>,
        access_token: Option<&RevokedAccessToken<'_>>,
    ) -> Result<(), OAuthError> {
        self.call_ok(
            "SELECT oauth.revoke_token($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &client.client_id,
                &client.secret,
                &refresh_token,
                &access_token.map(|t| t.grant_id),
                &access_token.and_then(|t| t.family_id),
                &access_token.and_then(|t| t.jti),
                &access_token.map(|t| t.client_id),
                &access_token.map(|t| t.expires_at),
            ],
        )
        .await
        .map(drop)
    }

    /// RFC 7662: a refresh token, or the grant, family and jti of an access token of ours; with
    /// neither, it only authenticates the caller.
    pub async fn introspect(
        &self,
        client: &ClientCredentials,
        refresh_token: Option<&str>,
        grant_id: Option<Uuid>,
        family_id: Option<Uuid>,
        jti: Option<Uuid>,
    ) -> Result<Introspection, OAuthError> {
        self.answer(
            "SELECT oauth.introspect($1, $2, $3, $4, $5, $6)",
            &[
                &client.client_id,
                &client.secret,
                &refresh_token,
                &grant_id,
                &family_id,
                &jti,
            ],
        )
        .await
    }

    /// The grant behind an access token while it (its family, its jti) is live.
    pub async fn userinfo(
        &self,
        grant_id: Option<Uuid>,
        family_id: Option<Uuid>,
        jti: Option<Uuid>,
    ) -> Result<Option<LiveGrant>, OAuthError> {
        let value = self
            .call(
                "SELECT oauth.userinfo($1, $2, $3)",
                &[&grant_id, &family_id, &jti],
            )
            .await?;
        if value.get("active") != Some(&Value::Bool(true)) {
            return Ok(None);
        }
        decode("userinfo", value).map(Some)
    }

    pub async fn register_client(&self, metadata: &Value) -> Result<Registration, OAuthError> {
        let value = self
            .call_ok("SELECT oauth.register_client($1)", &[metadata])
            .await?;
        decode("register_client", value)
    }

    pub async fn read_registration(
        &self,
        client_id: &str,
        registration_access_token: &str,
    ) -> Result<Registration, OAuthError> {
        self.answer(
            "SELECT oauth.read_registration($1, $2)",
            &[&client_id, &registration_access_token],
        )
        .await
    }

    pub async fn update_registration(
        &self,
        client_id: &str,
        registration_access_token: &str,
        metadata: &Value,
    ) -> Result<Registration, OAuthError> {
        self.answer(
            "SELECT oauth.update_registration($1, $2, $3)",
            &[&client_id, &registration_access_token, metadata],
        )
        .await
    }

    pub async fn delete_registration(
        &self,
        client_id: &str,
        registration_access_token: &str,
    ) -> Result<(), OAuthError> {
        self.call_ok(
            "SELECT oauth.delete_registration($1, $2)",
            &[&client_id, &registration_access_token],
        )
        .await
        .map(drop)
    }

    /// Stores a fetched Client ID Metadata Document (validated by the extension), fresh for
    /// `fresh_for`; a later failure is not retried before `retry_after`.
    pub async fn store_client_document(
        &self,
        client_id: &str,
        document: &Value,
        fresh_for: Duration,
        retry_after: Duration,
    ) -> Result<(), OAuthError> {
        self.call_ok(
            "SELECT oauth.store_client_document($1, $2, now() + make_interval(secs => $3), \
             now() + make_interval(secs => $4))",
            &[
                &client_id,
                document,
                &fresh_for.as_secs_f64(),
                &retry_after.as_secs_f64(),
            ],
        )
        .await
        .map(drop)
    }

    /// Records why a document could not be fetched; authorizations are refused with `reason`
    /// until `retry_after` has passed.
    /// `shown`: the browser may be told `reason` (an answer that is no document), as opposed to
    /// why no answer came, which only the operator sees.
    pub async fn record_client_document_failure(
        &self,
        client_id: &str,
        reason: &str,
        shown: bool,
        retry_after: Duration,
    ) -> Result<(), OAuthError> {
        self.query(
            "SELECT oauth.record_client_document_failure($1, $2, now() + make_interval(secs => $3), shown => $4)",
            &[&client_id, &reason, &retry_after.as_secs_f64(), &shown],
        )
        .await
        .map(drop)
    }
}

/// The verified subject token of a token exchange, as the extension checks it.
pub struct SubjectToken<'a> {
    pub grant_id: Option<Uuid>,
    pub family_id: Option<Uuid>,
    pub audience: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub jti: Option<Uuid>,
}

/// The verified (possibly expired) access token a client asks to revoke, as the extension
/// judges it: whose it is (`client_id`) and until when it could be presented.
pub struct RevokedAccessToken<'a> {
    pub grant_id: Uuid,
    pub family_id: Option<Uuid>,
    pub jti: Option<Uuid>,
    pub client_id: &'a str,
    pub expires_at: std::time::SystemTime,
}

/// private_key_jwt clients' key sets at a jwks_uri (`crate::client_keys`).
impl Db {
    /// The jwks_uri to fetch before `client_id`'s `assertion` can be judged, if any.
    pub async fn client_jwks_to_fetch(
        &self,
        client_id: &str,
        assertion: &str,
    ) -> Result<Option<String>, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.client_jwks_to_fetch($1, $2)",
                &[&client_id, &assertion],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    /// Stores the key set fetched from `jwks_uri` (validated by the extension), fresh for
    /// `fresh_for`; an unusable one is refused and not asked for again before `retry_after`.
    pub async fn store_client_jwks(
        &self,
        client_id: &str,
        jwks_uri: &str,
        jwks: &Value,
        fresh_for: Duration,
        retry_after: Duration,
    ) -> Result<(), OAuthError> {
        self.call_ok(
            "SELECT oauth.store_client_jwks($1, $2, $3, now() + make_interval(secs => $4), \
             now() + make_interval(secs => $5))",
            &[
                &client_id,
                &jwks_uri,
                jwks,
                &fresh_for.as_secs_f64(),
                &retry_after.as_secs_f64(),
            ],
        )
        .await
        .map(drop)
    }

    /// Records why `jwks_uri` gave no key set; it is not asked for again before `retry_after`.
    pub async fn record_client_jwks_failure(
        &self,
        client_id: &str,
        jwks_uri: &str,
        reason: &str,
        retry_after: Duration,
    ) -> Result<(), OAuthError> {
        self.query(
            "SELECT oauth.record_client_jwks_failure($1, $2, $3, now() + make_interval(secs => $4))",
            &[&client_id, &jwks_uri, &reason, &retry_after.as_secs_f64()],
        )
        .await
        .map(drop)
    }
}

/// One live grant on the connected-apps page (`oauth.list_connected_apps`); times in UTC as
/// RFC 3339 and as read.
#[derive(Debug, Clone)]
pub struct ConnectedApp {
    pub grant_id: Uuid,
    pub client_id: String,
    pub client_name: String,
    pub redirect_hosts: Vec<String>,
    pub logo_uri: Option<String>,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub granted_at: (String, String),
    /// The last time tokens were issued under the grant; none yet: `None`.
    pub last_used_at: Option<(String, String)>,
}

/// The pages: a vetted client's logo and the signed-in user's connected apps.
impl Db {
    /// The https logo of a client an administrator registered; `None` for any other client.
    pub async fn client_logo_uri(&self, client_id: &str) -> Result<Option<String>, OAuthError> {
        let rows = self
            .query("SELECT oauth.client_logo_uri($1)", &[&client_id])
            .await?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    pub async fn list_connected_apps(&self, user: &str) -> Result<Vec<ConnectedApp>, OAuthError> {
        let rows = self
            .query(
                "SELECT grant_id, client_id, client_name, redirect_hosts, logo_uri, scopes, resource, \
                        to_char(granted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                        to_char(granted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"'), \
                        to_char(last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                        to_char(last_used_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"') \
                   FROM oauth.list_connected_apps($1)",
                &[&user],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| ConnectedApp {
                grant_id: row.get(0),
                client_id: row.get(1),
                client_name: row.get(2),
                redirect_hosts: row.get(3),
                logo_uri: row.get(4),
                scopes: row.get(5),
                resource: row.get(6),
                granted_at: (row.get(7), row.get(8)),
                last_used_at: row
                    .get::<_, Option<String>>(9)
                    .zip(row.get::<_, Option<String>>(10)),
            })
            .collect())
    }

    /// Revokes the grant if it is a live grant of `user` (`oauth.revoke_grant`); false otherwise.
    pub async fn revoke_connected_app(
        &self,
        user: &str,
        grant_id: Uuid,
    ) -> Result<bool, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.revoke_connected_app($1, $2)",
                &[&user, &grant_id],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// The published signing keys, sealed, current ones first (`oauth.signing_keys`).
    pub async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, OAuthError> {
        let rows = self
            .query(
                "SELECT kid, alg, state, public_jwk, sealed_private_key, sealed_with
                   FROM oauth.signing_keys()",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredSigningKey {
                    kid: row.try_get(0)?,
                    alg: row.try_get(1)?,
                    state: row.try_get(2)?,
                    public_jwk: row.try_get(3)?,
                    sealed_private_key: row.try_get(4)?,
                    sealed_with: row.try_get(5)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| {
                tracing::error!(error = %e, "oauth.signing_keys() answered in another shape");
                OAuthError::server_error()
            })
    }
}

/// A row of `oauth.signing_keys()`: a published key, its private half sealed by the gateways'
/// key-encryption key (`keyring`).
#[derive(Debug, Clone)]
pub struct StoredSigningKey {
    pub kid: String,
    pub alg: String,
    /// `next`, `current` or `retired`.
    pub state: String,
    pub public_jwk: Value,
    pub sealed_private_key: Vec<u8>,
    pub sealed_with: String,
}

/// A batch function's answers, one per element in order: each its own success or error.
fn batch_answers(
    sql: &'static str,
    value: Value,
) -> Result<Vec<Result<Issued, OAuthError>>, OAuthError> {
    let Value::Array(answers) = value else {
        tracing::error!(sql, "the batch function answered no array");
        return Err(OAuthError::server_error());
    };
    Ok(answers
        .into_iter()
        .map(|answer| match error_answer(&answer) {
            Some(error) => Err(error),
            None => decode(sql, answer),
        })
        .collect())
}
