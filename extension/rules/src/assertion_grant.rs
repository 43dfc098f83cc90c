//! JWT authorization grants (RFC 7523 §2.1 and §3, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`)
//! from trusted issuers, in two profiles:
//!
//! - `id-jag`: the Identity Assertion JWT Authorization Grant
//!   (draft-ietf-oauth-identity-assertion-authz-grant; MCP Enterprise-Managed Authorization): an
//!   enterprise IdP's short-lived JWT, typed `oauth-id-jag+jwt`, about one user, for one client
//!   (`client_id`), for this authorization server (`aud`) and one resource.
//! - `workload`: a workload's own JWT (a Kubernetes service-account token, a SPIFFE JWT-SVID) from a
//!   trusted issuer, for this authorization server.
//!
//! This module checks what the JWT itself says (signature with an allowed algorithm and one of the
//! issuer's keys, `typ`, `iss`, `aud`, `sub`, times, `jti`, and the claims this server cannot honour);
//! the extension (`sql/assertion_grants.sql`) decides the rest against its tables: which client may
//! present it, the resource, the scopes, the subject rules and single use of the `jti`.

use serde_json::{Map, Value};

use crate::client_assertion::{
    Refusal, SIGNING_ALGS, SKEW_SECONDS, key_fits, keys_of, numeric_date, signature_verifies, split,
};

/// RFC 7523 §2.1.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The `typ` header of an ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3.1 / §9).
pub const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";

/// The grant profile identifier servers advertise in `authorization_grant_profiles_supported`.
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

/// Longest lifetime (`exp` - `iat`) accepted of an ID-JAG: it is a short-lived grant (IdPs issue
/// them for minutes), and its `jti` is remembered that long.
pub const ID_JAG_MAX_LIFETIME_SECONDS: i64 = 3600;

/// Longest lifetime accepted of a workload's JWT: projected Kubernetes service-account tokens
/// live an hour by default and up to a day when configured so.
pub const WORKLOAD_MAX_LIFETIME_SECONDS: i64 = 86_400;

const MAX_TEXT_BYTES: usize = 255;

/// Which profile an issuer is trusted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    IdJag,
    Workload,
}

impl Profile {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "id-jag" => Some(Profile::IdJag),
            "workload" => Some(Profile::Workload),
            _ => None,
        }
    }
}

/// What the server expects of an assertion from one trusted issuer.
pub struct Expected<'a> {
    pub profile: Profile,
    /// The trusted issuer (`iss`).
    pub issuer: &'a str,
    /// This server's issuer identifier: the one audience an assertion may name.
    pub audience: &'a str,
    /// The algorithms allowed for this issuer (a subset of the asymmetric [`SIGNING_ALGS`]).
    pub algorithms: &'a [String],
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// A verified assertion: its claims, and until when its `jti` (when it has one) must be refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub claims: Map<String, Value>,
    pub replay_until: i64,
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal::Invalid(reason.into())
}

fn typ_is(typ: &str, expected: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == expected
}

/// A string claim of 1 to 255 bytes, or why it is unusable.
fn text_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &str,
    required: bool,
) -> Result<Option<&'c str>, Refusal> {
    match claims.get(name) {
        None if !required => Ok(None),
        Some(Value::String(v)) if !v.is_empty() && v.len() <= MAX_TEXT_BYTES => Ok(Some(v)),
        None => Err(invalid(format!("the assertion has no {name}"))),
        Some(_) => Err(invalid(format!(
            "the assertion's {name} must be a string of 1 to {MAX_TEXT_BYTES} bytes"
        ))),
    }
}

/// Verifies `assertion` against the trusted issuer's key set `jwks`.
pub fn verify(assertion: &str, jwks: &Value, expected: &Expected) -> Result<Verified, Refusal> {
    let parts = split(assertion)
        .map_err(|r| invalid(r.reason().replace("the client assertion", "the assertion")))?;
    let header = &parts.header;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the assertion's header names no alg"))?;
    // Never `none`, never a MAC: only the asymmetric algorithms, and of those the issuer's.
    if !SIGNING_ALGS.contains(&alg) || !expected.algorithms.iter().any(|a| a == alg) {
        return Err(invalid(format!(
            "alg {alg} is not accepted for this issuer (allowed: {})",
            expected.algorithms.join(", ")
        )));
    }
    if header.contains_key("crit") {
        return Err(invalid("the assertion has a crit header"));
    }
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(typ)) => Some(typ.as_str()),
        Some(_) => return Err(invalid("the assertion's typ is not a string")),
    };
    match expected.profile {
        // Explicit typing (draft §3.1, RFC 8725 §3.11): an ID token or access token from the same
        // IdP must not pass for an ID-JAG.
        Profile::IdJag if !typ.is_some_and(|t| typ_is(t, ID_JAG_TYPE)) => {
            return Err(invalid(format!("an ID-JAG's typ must be {ID_JAG_TYPE}")));
        }
        Profile::Workload if typ.is_some_and(|t| !typ_is(t, "jwt")) => {
            return Err(invalid("a workload assertion's typ must be JWT or absent"));
        }
        _ => {}
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(invalid("the assertion's kid is not a string")),
    };

    // The issuer's key named by kid, or its only key for the algorithm. Keys the header carries
    // (jwk, jku, x5u, x5c) are never used.
    let keys = keys_of(jwks);
    let fitting: Vec<&Map<String, Value>> = keys
        .iter()
        .copied()
        .filter(|k| key_fits(k, alg))
        .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .collect();
    if fitting.is_empty() {
        return Err(match kid {
            Some(kid)
                if keys
                    .iter()
                    .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid)) =>
            {
                invalid(format!("the issuer's key {kid} is not usable for {alg}"))
            }
            Some(kid) => Refusal::UnknownKey(format!("the issuer has no key with kid {kid}")),
            None => Refusal::UnknownKey(format!("the issuer has no key for {alg}")),
        });
    }
    if kid.is_none() && fitting.len() > 1 {
        return Err(invalid(format!(
            "the assertion names no kid and the issuer has several keys for {alg}"
        )));
    }
    if !fitting
        .iter()
        .any(|k| signature_verifies(k, alg, parts.signing_input.as_bytes(), &parts.signature))
    {
        return Err(invalid("the assertion's signature does not verify"));
    }

    let claims = parts.claims;
    if claims.get("iss").and_then(Value::as_str) != Some(expected.issuer) {
        return Err(invalid("the assertion's iss is not the trusted issuer"));
    }
    // One audience, this server (draft §3.1: the issuer identifier of this authorization
    // server). Several audiences would make the grant good at other servers too: refused.
    match claims.get("aud") {
        Some(Value::String(aud)) if aud == expected.audience => {}
        Some(Value::Array(auds))
            if auds.len() == 1 && auds[0].as_str() == Some(expected.audience) => {}
        Some(Value::Array(auds)) if auds.len() > 1 => {
            return Err(invalid(
                "the assertion names several audiences; it must name this server alone",
            ));
        }
        _ => {
            return Err(invalid(format!(
                "the assertion's aud must be this server's issuer {}",
                expected.audience
            )));
        }
    }
    text_claim(&claims, "sub", true)?;
    let now = expected.now;
    let exp = numeric_date(&claims, "exp")?.ok_or_else(|| invalid("the assertion has no exp"))?;
    if exp.saturating_add(SKEW_SECONDS) <= now {
        return Err(invalid("the assertion has expired"));
    }
    if numeric_date(&claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(SKEW_SECONDS)) {
        return Err(invalid("the assertion is not valid yet (nbf)"));
    }
    let iat = numeric_date(&claims, "iat")?;
    if iat.is_some_and(|iat| iat > now.saturating_add(SKEW_SECONDS)) {
        return Err(invalid("the assertion was issued in the future (iat)"));
    }
    let max_lifetime = match expected.profile {
        Profile::IdJag => ID_JAG_MAX_LIFETIME_SECONDS,
        Profile::Workload => WORKLOAD_MAX_LIFETIME_SECONDS,
    };
    let start = iat.unwrap_or(now).min(now.saturating_add(SKEW_SECONDS));
    if exp.saturating_sub(start) > max_lifetime {
        return Err(invalid(format!(
            "the assertion may live at most {max_lifetime} seconds (exp - iat)"
        )));
    }
    if expected.profile == Profile::IdJag {
        // Draft §3.1: iat, jti and client_id are required of an ID-JAG.
        if iat.is_none() {
            return Err(invalid("the assertion has no iat"));
        }
        text_claim(&claims, "client_id", true)?;
        text_claim(&claims, "jti", true)?;
    } else {
        text_claim(&claims, "client_id", false)?;
        text_claim(&claims, "jti", false)?;
    }
    // Fail closed on what this server cannot honour: a key binding it would not enforce
    // (RFC 7800 cnf) and fine-grained authorization (RFC 9396) it would not carry into the token.
    if claims.contains_key("cnf") {
        return Err(invalid(
            "the assertion is bound to a key (cnf), which this server cannot honour",
        ));
    }
    if claims.contains_key("authorization_details") {
        return Err(invalid(
            "the assertion carries authorization_details, which this server cannot honour",
        ));
    }
    match claims.get("scope") {
        None | Some(Value::String(_)) => {}
        Some(_) => return Err(invalid("the assertion's scope must be a string")),
    }
    match claims.get("resource") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(r)) if r.len() == 1 && r[0].is_string() => {}
        Some(_) => {
            return Err(invalid("the assertion's resource must name one resource"));
        }
    }
    Ok(Verified {
        claims,
        replay_until: exp.saturating_add(SKEW_SECONDS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    const IDP: &str = "https://idp.example";
    const AS: &str = "https://as.example";
    const NOW: i64 = 1_900_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Ec(EcdsaKeyPair);

    impl Ec {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }
        fn jwks(&self) -> Value {
            let p = self.0.public_key().as_ref();
            json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                             "x": b64(&p[1..33]), "y": b64(&p[33..65])}]})
        }
        fn sign(&self, header: Value, claims: Value) -> String {
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    fn claims() -> Value {
        json!({"iss": IDP, "sub": "u1", "aud": AS, "client_id": "c1", "jti": "j1",
               "iat": NOW, "exp": NOW + 300, "resource": "https://mcp.example/", "scope": "a b"})
    }

    fn expected(profile: Profile, algs: &[String]) -> Expected<'_> {
        Expected {
            profile,
            issuer: IDP,
            audience: AS,
            algorithms: algs,
            now: NOW,
        }
    }

    #[test]
    fn id_jag_rules() {
        let key = Ec::new();
        let algs = vec!["ES256".to_owned()];
        let header = json!({"alg": "ES256", "typ": ID_JAG_TYPE, "kid": "k1"});
        let ok = verify(
            &key.sign(header.clone(), claims()),
            &key.jwks(),
            &expected(Profile::IdJag, &algs),
        )
        .unwrap();
        assert_eq!(ok.claims["sub"], "u1");
        let with = |changes: Value| {
            let mut c = claims();
            for (k, v) in changes.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(k);
                } else {
                    c[k] = v.clone();
                }
            }
            c
        };
        #[rustfmt::skip]
        let cases = [
            (key.sign(json!({"alg": "ES256", "kid": "k1"}), claims()), "typ"),
            (key.sign(json!({"alg": "ES256", "typ": "JWT"}), claims()), "typ"),
            (key.sign(header.clone(), with(json!({"aud": [AS, "https://other.example"]}))), "several audiences"),
            (key.sign(header.clone(), with(json!({"aud": "https://other.example"}))), "aud"),
            (key.sign(header.clone(), with(json!({"iss": "https://evil.example"}))), "iss"),
            (key.sign(header.clone(), with(json!({"client_id": null}))), "client_id"),
            (key.sign(header.clone(), with(json!({"jti": null}))), "jti"),
            (key.sign(header.clone(), with(json!({"iat": null}))), "iat"),
            (key.sign(header.clone(), with(json!({"cnf": {"jkt": "x"}}))), "cnf"),
            (key.sign(header.clone(), with(json!({"authorization_details": []}))), "authorization_details"),
            (key.sign(header.clone(), with(json!({"exp": NOW - 100, "iat": NOW - 200}))), "expired"),
            (key.sign(header.clone(), with(json!({"iat": NOW + 200, "exp": NOW + 300}))), "future"),
            (Ec::new().sign(header.clone(), claims()), "signature"),
            (format!("{}.{}.", b64(br#"{"alg":"none","typ":"oauth-id-jag+jwt"}"#), b64(claims().to_string().as_bytes())), "not accepted"),
        ];
        for (assertion, why) in cases {
            let refused =
                verify(&assertion, &key.jwks(), &expected(Profile::IdJag, &algs)).unwrap_err();
            assert!(refused.reason().contains(why), "{why}: {refused:?}");
        }
        // An allowed algorithm of the crate that the issuer does not use is refused.
        let rs_only = vec!["RS256".to_owned()];
        let refused = verify(
            &key.sign(header, claims()),
            &key.jwks(),
            &expected(Profile::IdJag, &rs_only),
        )
        .unwrap_err();
        assert!(refused.reason().contains("not accepted"), "{refused:?}");
    }

    #[test]
    fn workload_tokens_need_no_client_id_or_jti() {
        let key = Ec::new();
        let algs = vec!["ES256".to_owned()];
        let token = key.sign(
            json!({"alg": "ES256", "kid": "k1"}),
            json!({"iss": IDP, "sub": "system:serviceaccount:ns:app", "aud": [AS],
                   "iat": NOW, "exp": NOW + 3600}),
        );
        assert!(verify(&token, &key.jwks(), &expected(Profile::Workload, &algs)).is_ok());
        let id_jag = key.sign(json!({"alg": "ES256", "typ": ID_JAG_TYPE}), claims());
        assert!(verify(&id_jag, &key.jwks(), &expected(Profile::Workload, &algs)).is_err());
    }
}
