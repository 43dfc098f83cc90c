//! Browser sessions and the step after /authorize (`sql/sessions.sql`): what the sign-in pages
//! and the consent page ask the extension.

use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::api::decode;
use super::pool::{Db, error_answer};
use crate::error::OAuthError;

/// A live browser session (`oauth.get_session`).
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: String,
    pub auth_time: i64,
    #[serde(default)]
    pub upstream_issuer: Option<String>,
    #[serde(default)]
    pub upstream_subject: Option<String>,
}

/// Two columns for an instant: RFC 3339 in UTC (a `<time>`'s `datetime`) and as a person reads it.
fn utc(column: &str) -> String {
    format!(
        "to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
         to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"')"
    )
}

/// One live session on the sessions page (`oauth.list_user_sessions`); times in UTC as RFC 3339
/// and as read, like the connected apps'.
#[derive(Debug, Clone)]
pub struct UserSession {
    pub session_id: Uuid,
    pub upstream_issuer: Option<String>,
    /// How the provider authenticated the user (RFC 8176 values such as `pwd`, `mfa`).
    pub amr: Vec<String>,
    pub started_at: (String, String),
    pub expires_at: (String, String),
}

/// A session just started: the cookie's value and when it ends.
#[derive(Debug, Clone, Deserialize)]
pub struct StartedSession {
    pub session_id: Uuid,
    pub secret: String,
    pub expires_at: i64,
}

/// What a session names about its user at the start.
pub struct NewSession<'a> {
    pub user_id: &'a str,
    pub upstream_issuer: &'a str,
    pub upstream_subject: &'a str,
    /// Seconds since the epoch; `None`: now.
    pub auth_time: Option<i64>,
    pub amr: &'a [String],
    pub claims: &'a Value,
    pub lifetime_seconds: u64,
}

/// `oauth.continue_authorization`'s answer.
#[derive(Debug, Clone)]
pub enum NextStep {
    /// Sign the user in first; `force`: ask the upstream to authenticate again.
    Login {
        login_hint: Option<String>,
        max_age: Option<i64>,
        force: bool,
    },
    /// Show the consent page to `user_id`.
    Consent { user_id: String },
    /// To the client: a code, or an error it may receive.
    Redirect { location: String },
    /// An error its client may not receive: shown on a page.
    Refused(OAuthError),
}

impl Db {
    pub async fn start_session(&self, new: &NewSession<'_>) -> Result<StartedSession, OAuthError> {
        let lifetime = format!("{} seconds", new.lifetime_seconds);
        let value = self
            .call(
                "SELECT oauth.start_session($1, $2, $3, coalesce(to_timestamp($4::float8), now()), $5, $6, $7::text::interval)",
                &[
                    &new.user_id,
                    &new.upstream_issuer,
                    &new.upstream_subject,
                    &new.auth_time.map(|t| t as f64),
                    &new.amr,
                    new.claims,
                    &lifetime,
                ],
            )
            .await?;
        decode("start_session", value)
    }

    /// The live session of this cookie secret, if any.
    pub async fn get_session(&self, secret: &str) -> Result<Option<Session>, OAuthError> {
        let rows = self
            .query("SELECT oauth.get_session($1)", &[&secret])
            .await?;
        match rows.first().and_then(|r| r.get::<_, Option<Value>>(0)) {
            Some(value) => decode("get_session", value).map(Some),
            None => Ok(None),
        }
    }

    pub async fn end_session(&self, session_id: Uuid) -> Result<bool, OAuthError> {
        let rows = self
            .query("SELECT oauth.end_session($1)", &[&session_id])
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// Ends `session_id` only when it is a live session of `user_id` (a sessions-page button).
    pub async fn end_user_session(
        &self,
        user_id: &str,
        session_id: Uuid,
    ) -> Result<bool, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.end_user_session($1, $2)",
                &[&user_id, &session_id],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| r.get::<_, bool>(0)))
    }

    /// "Sign out everywhere": how many sessions were live.
    pub async fn end_user_sessions(&self, user_id: &str) -> Result<i32, OAuthError> {
        let rows = self
            .query("SELECT oauth.end_user_sessions($1)", &[&user_id])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i32>(0)))
    }

    /// The user's live sessions, newest first (`oauth.list_user_sessions`).
    pub async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<UserSession>, OAuthError> {
        let sql = format!(
            "SELECT session_id, upstream_issuer, amr, {}, {} FROM oauth.list_user_sessions($1)",
            utc("created_at"),
            utc("expires_at"),
        );
        let rows = self.query(&sql, &[&user_id]).await?;
        Ok(rows
            .iter()
            .map(|row| UserSession {
                session_id: row.get(0),
                upstream_issuer: row.get(1),
                amr: row.get(2),
                started_at: (row.get(3), row.get(4)),
                expires_at: (row.get(5), row.get(6)),
            })
            .collect())
    }

    /// Raises `not_found` for an unknown, expired or completed request.
    pub async fn continue_authorization(
        &self,
        request_id: &str,
        session_secret: Option<&str>,
        user_id: Option<&str>,
        consented: bool,
        remember_consent: bool,
    ) -> Result<NextStep, OAuthError> {
        #[derive(Deserialize)]
        struct Answer {
            action: Option<String>,
            login_hint: Option<String>,
            max_age: Option<i64>,
            #[serde(default)]
            force: bool,
            user_id: Option<String>,
            location: Option<String>,
            redirect: Option<bool>,
        }
        let value = self
            .call(
                "SELECT oauth.continue_authorization($1, $2, $3, $4, $5)",
                &[
                    &request_id,
                    &session_secret,
                    &user_id,
                    &consented,
                    &remember_consent,
                ],
            )
            .await?;
        let refused = error_answer(&value);
        let answer: Answer = decode("continue_authorization", value)?;
        Ok(match (refused, answer) {
            (
                Some(_),
                Answer {
                    redirect: Some(true),
                    location: Some(location),
                    ..
                },
            ) => NextStep::Redirect { location },
            (Some(error), _) => NextStep::Refused(error),
            (
                None,
                Answer {
                    action,
                    login_hint,
                    max_age,
                    force,
                    user_id,
                    location,
                    ..
                },
            ) => match (action.as_deref(), user_id, location) {
                (Some("login"), _, _) => NextStep::Login {
                    login_hint,
                    max_age,
                    force,
                },
                (Some("consent"), Some(user_id), _) => NextStep::Consent { user_id },
                (Some("redirect"), _, Some(location)) => NextStep::Redirect { location },
                _ => {
                    tracing::error!("continue_authorization answered no known step");
                    return Err(OAuthError::server_error());
                }
            },
        })
    }

    /// RP-Initiated Logout: where to send the browser, when the client registered the URI.
    pub async fn post_logout_redirect(
        &self,
        client_id: &str,
        redirect_uri: &str,
        state: Option<&str>,
    ) -> Result<Option<String>, OAuthError> {
        let rows = self
            .query(
                "SELECT oauth.post_logout_redirect($1, $2, $3)",
                &[&client_id, &redirect_uri, &state],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.get::<_, Option<String>>(0)))
    }
}
