//! `private_key_jwt` (RFC 7523 §2.2): SQL faces of the rules in `oauth_rules::client_assertion`.
//! Single use of an assertion's `jti` is decided in SQL (`oauth._client_authentication`), where
//! one INSERT settles a race between two requests presenting the same assertion.

use oauth_rules::client_assertion::{self, Expected, Refusal};
use pgrx::JsonB;
use pgrx::prelude::*;
use serde_json::json;

/// Seconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_UNIX: i64 = 946_684_800;

fn unix_seconds(t: TimestampWithTimeZone) -> Option<i64> {
    t.is_finite()
        .then(|| t.into_inner().div_euclid(1_000_000) + POSTGRES_EPOCH_UNIX)
}

/// Verifies `assertion` as client `client_id`'s authentication against its key set `jwks`, with
/// `issuer` and `token_endpoint` as the audiences naming this server and `signing_alg` the
/// client's registered algorithm (NULL: any accepted one). Answers `{"jti", "replay_until"}` (epoch
/// seconds until which the jti must be refused again) or `{"problem", "unknown_key"}`, where
/// `unknown_key` says a fresh copy of the client's keys might have the key it names.
#[pg_extern(immutable, parallel_safe)]
fn verify_client_assertion(
    assertion: Option<&str>,
    jwks: Option<JsonB>,
    client_id: Option<&str>,
    issuer: Option<&str>,
    token_endpoint: Option<&str>,
    signing_alg: Option<&str>,
    now: Option<TimestampWithTimeZone>,
) -> JsonB {
    let refused = |problem: &str, unknown_key: bool| {
        JsonB(json!({ "problem": problem, "unknown_key": unknown_key }))
    };
    let (Some(assertion), Some(client_id), Some(issuer), Some(token_endpoint)) =
        (assertion, client_id, issuer, token_endpoint)
    else {
        return refused("no client assertion", false);
    };
    let Some(now) = now.and_then(unix_seconds) else {
        return refused("no time to judge the client assertion by", false);
    };
    let Some(JsonB(jwks)) = jwks else {
        return refused("the client has no keys", true);
    };
    let expected = Expected {
        client_id,
        issuer,
        token_endpoint,
        alg: signing_alg,
        now,
    };
    match client_assertion::verify(assertion, &jwks, &expected) {
        Ok(verified) => JsonB(json!({
            "jti": verified.jti,
            "replay_until": verified.replay_until,
        })),
        Err(refusal) => refused(refusal.reason(), matches!(refusal, Refusal::UnknownKey(_))),
    }
}

/// Why `jwks` cannot be a client's key set (a JWK Set of public keys, one of them usable for
/// client assertions), or NULL.
#[pg_extern(immutable, parallel_safe, strict)]
fn jwks_problem(jwks: JsonB) -> Option<String> {
    client_assertion::jwks_problem(&jwks.0)
}

/// Why `jwks_uri` cannot be fetched as a client's key set (the gateway's fetcher reads it with
/// the rules of metadata documents), or NULL.
#[pg_extern(immutable, parallel_safe, strict)]
fn jwks_uri_problem(jwks_uri: &str) -> Option<String> {
    client_assertion::jwks_uri_problem(jwks_uri).map(str::to_owned)
}

/// The algorithms a client assertion may be signed with (all asymmetric), for discovery metadata
/// and for a client's registered token_endpoint_auth_signing_alg.
#[pg_extern(immutable, parallel_safe)]
fn client_assertion_signing_algs() -> Vec<String> {
    client_assertion::SIGNING_ALGS
        .iter()
        .map(|alg| (*alg).to_owned())
        .collect()
}

/// The algorithms a DPoP proof may be signed with (RFC 9449 §5.1
/// `dpop_signing_alg_values_supported`): what the gateway's proof check accepts.
#[pg_extern(immutable, parallel_safe)]
fn dpop_signing_algs() -> Vec<String> {
    oauth_rules::dpop::SIGNING_ALGS
        .iter()
        .map(|alg| (*alg).to_owned())
        .collect()
}

/// The unverified `iss` of a JWT: which trusted issuer a JWT authorization grant claims to come
/// from, so the extension knows whose keys and rules to judge it by (and the gateway whose keys to
/// fetch). Nothing is verified here.
#[pg_extern(immutable, parallel_safe, strict)]
fn assertion_issuer(assertion: &str) -> Option<String> {
    client_assertion::unverified_issuer(assertion)
}

/// Verifies a JWT authorization grant (RFC 7523 §2.1, `oauth_rules::assertion_grant`) from
/// trusted issuer `issuer` with profile `profile` (`id-jag` or `workload`) against its key set
/// `jwks`, allowed `algorithms`, and `audience` (this server's issuer). Answers `{"claims",
/// "replay_until"}` or `{"problem", "unknown_key"}`.
#[pg_extern(immutable, parallel_safe)]
fn verify_authorization_grant(
    assertion: Option<&str>,
    jwks: Option<JsonB>,
    profile: Option<&str>,
    issuer: Option<&str>,
    audience: Option<&str>,
    algorithms: Option<Vec<String>>,
    now: Option<TimestampWithTimeZone>,
) -> JsonB {
    use oauth_rules::assertion_grant::{self, Profile};
    let refused = |problem: &str, unknown_key: bool| {
        JsonB(json!({ "problem": problem, "unknown_key": unknown_key }))
    };
    let (Some(assertion), Some(profile), Some(issuer), Some(audience), Some(algorithms)) = (
        assertion,
        profile.and_then(Profile::parse),
        issuer,
        audience,
        algorithms,
    ) else {
        return refused("no assertion", false);
    };
    let Some(now) = now.and_then(unix_seconds) else {
        return refused("no time to judge the assertion by", false);
    };
    let Some(JsonB(jwks)) = jwks else {
        return refused("the issuer's keys are not available", true);
    };
    let expected = assertion_grant::Expected {
        profile,
        issuer,
        audience,
        algorithms: &algorithms,
        now,
    };
    match assertion_grant::verify(assertion, &jwks, &expected) {
        Ok(verified) => JsonB(json!({
            "claims": verified.claims,
            "replay_until": verified.replay_until,
        })),
        Err(refusal) => refused(refusal.reason(), matches!(refusal, Refusal::UnknownKey(_))),
    }
}
