//! RFC 7591 dynamic client registration and the RFC 7592 client configuration endpoint
//! (`/register/{client_id}`, bearer = the registration access token); every field is checked by
//! the extension (`oauth.register_client`, `oauth.update_registration`).

use hyper::header::{self, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::app::App;
use crate::db::Registration;
use crate::error::{BearerChallenge, ChallengeNames, ErrorCode, OAuthError};
use crate::http::{self, Req, Resp};
use crate::keys::Alg;

pub async fn handle(app: &App, req: Req) -> Resp {
    http::json_or_error(StatusCode::CREATED, register(app, req).await)
}

async fn register(app: &App, req: Req) -> Result<Value, OAuthError> {
    http::require_post(&req, "registration")?;
    let metadata = read_metadata(app, req).await?;
    let registered = app.db.register_client(&metadata).await?;
    Ok(with_configuration_uri(app, registered))
}

async fn read_metadata(app: &App, req: Req) -> Result<Value, OAuthError> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(OAuthError::invalid_request(
            "the registration request must be application/json",
        ));
    }
    let body = http::read_body(req, app.config.body_limits()).await?;
    let metadata: Value = serde_json::from_slice(&body).map_err(|_| {
        OAuthError::new(
            ErrorCode::InvalidClientMetadata,
            "the request body is not valid JSON",
        )
    })?;
    if !http::jsonb_storable(&metadata) {
        return Err(OAuthError::new(
            ErrorCode::InvalidClientMetadata,
            "the client metadata must not contain NUL characters",
        ));
    }
    check_id_token_alg(app, &metadata)?;
    Ok(metadata)
}

/// An ID token algorithm this gateway holds no key for is refused here: a capability of this
/// deployment, not a protocol rule (whether the value is acceptable at all is the extension's).
fn check_id_token_alg(app: &App, metadata: &Value) -> Result<(), OAuthError> {
    let Some(name) = metadata
        .get("id_token_signed_response_alg")
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    match Alg::from_name(name) {
        Some(alg) if app.keys.load().for_alg(alg).is_none() => {
            let held: Vec<&str> = app.keys.load().algs().into_iter().map(Alg::name).collect();
            Err(OAuthError::new(
                ErrorCode::InvalidClientMetadata,
                format!(
                    "id_token_signed_response_alg {name} is not available on this server; it signs ID tokens with {}",
                    held.join(", ")
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// RFC 3986 unreserved characters stay as they are; everything else in a client id is encoded.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn with_configuration_uri(app: &App, mut registration: Registration) -> Value {
    let encoded = percent_encoding::utf8_percent_encode(&registration.client_id, PATH_SEGMENT);
    registration.registration_client_uri =
        Some(app.config.endpoint(&format!("/register/{encoded}")));
    serde_json::json!(registration)
}

/// RFC 7592 §2 / RFC 6750 §3.1: an unknown client and a wrong token look the same.
fn invalid_token() -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidToken,
        "the registration access token is invalid for this client",
    )
    .with_bearer_challenge(BearerChallenge {
        names: ChallengeNames::Code,
        ..BearerChallenge::default()
    })
}

/// RFC 7592 §2: read (GET), replace (PUT) or delete (DELETE) the registration of `client_id`.
pub async fn configure(app: &App, req: Req, encoded_client_id: &str) -> Resp {
    match manage(app, req, encoded_client_id).await {
        Ok(Some(registration)) => {
            http::json_no_store(StatusCode::OK, &with_configuration_uri(app, registration))
        }
        Ok(None) => {
            let mut resp = http::empty(StatusCode::NO_CONTENT);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(e) if e.code == ErrorCode::InvalidToken => http::error(&invalid_token()),
        Err(e) => http::error(&e),
    }
}

/// The registration after the request, or `None` once deleted.
async fn manage(
    app: &App,
    req: Req,
    encoded_client_id: &str,
) -> Result<Option<Registration>, OAuthError> {
    // No client id holds NUL (nor could PostgreSQL store one): such a path names no client.
    let client_id = percent_encoding::percent_decode_str(encoded_client_id)
        .decode_utf8()
        .ok()
        .filter(|id| !id.contains('\0'))
        .ok_or_else(invalid_token)?
        .into_owned();
    let token = http::bearer_token(req.headers())
        .ok_or_else(invalid_token)?
        .to_owned();
    match *req.method() {
        Method::GET => app.db.read_registration(&client_id, &token).await.map(Some),
        Method::PUT => {
            let metadata = read_metadata(app, req).await?;
            app.db
                .update_registration(&client_id, &token, &metadata)
                .await
                .map(Some)
        }
        Method::DELETE => app
            .db
            .delete_registration(&client_id, &token)
            .await
            .map(|()| None),
        _ => Err(OAuthError::new(
            ErrorCode::MethodNotAllowed,
            "use GET, PUT or DELETE",
        )),
    }
}
