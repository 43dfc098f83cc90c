//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2): the client signs
//! a short-lived JWT about itself with a key it published (`jwks` or `jwks_uri`), and presents it
//! as `client_assertion` instead of a secret.
//!
//! The extension decides (`oauth.verify_client_assertion`, and single use of the `jti` in SQL);
//! the gateway only reads the unverified `iss` to learn which client is asking, and fetches keys.
//! Both use this code, so they read an assertion the same way.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};
use url::Url;

/// RFC 7523 §2.2.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Asymmetric algorithms only: a MAC (HS*) would need a shared secret, which is what this method
/// exists to avoid, and `none` proves nothing. EdDSA and its fully specified name Ed25519 (RFC 9864)
/// both mean Ed25519 here.
pub const SIGNING_ALGS: [&str; 10] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "Ed25519",
];

/// Clock difference tolerated on `exp`, `nbf` and `iat`.
pub const SKEW_SECONDS: i64 = 60;

/// Longest lifetime an assertion may claim (`exp` after `iat`, or after now without `iat`). Single
/// use already makes a used assertion worthless; this bounds how long one that was intercepted
/// before use stays good, and how long its `jti` must be remembered. An hour is what widely used
/// authorization servers accept and what common client libraries produce by default.
pub const MAX_LIFETIME_SECONDS: i64 = 3600;

/// Longest assertion read: far above any real one (a few hundred bytes of claims and a signature).
pub const MAX_ASSERTION_BYTES: usize = 8192;

/// Keys a client may publish; a key set is searched per assertion.
pub const MAX_KEYS: usize = 20;

const MAX_JTI_BYTES: usize = 255;

/// RFC 7523bis §4 (`typ` of a client authentication JWT).
const EXPLICIT_TYPE: &str = "client-authentication+jwt";

/// What the server expects of an assertion.
pub struct Expected<'a> {
    pub client_id: &'a str,
    /// The issuer identifier, and the token endpoint URL: the audiences that name this server.
    pub issuer: &'a str,
    pub token_endpoint: &'a str,
    /// The client's registered `token_endpoint_auth_signing_alg` (RFC 7591 §2), if any.
    pub alg: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// A valid assertion: its `jti` must be refused again until `replay_until` (exp plus the skew).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub jti: String,
    pub replay_until: i64,
}

/// Why an assertion is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// None of the client's keys is the one the assertion names: a fresh copy of a `jwks_uri` may
    /// have it (the client rotated its keys).
    UnknownKey(String),
    Invalid(String),
}

impl Refusal {
    pub fn reason(&self) -> &str {
        match self {
            Refusal::UnknownKey(reason) | Refusal::Invalid(reason) => reason,
        }
    }
}

fn invalid(reason: impl Into<String>) -> Refusal {
    Refusal::Invalid(reason.into())
}

pub(crate) fn decode_json(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The three segments of a compact JWS, with the header and claims decoded (nothing verified).
pub(crate) struct Parts<'a> {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    pub(crate) signing_input: &'a str,
    pub(crate) signature: Vec<u8>,
}

pub(crate) fn split(assertion: &str) -> Result<Parts<'_>, Refusal> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(invalid(format!(
            "the client assertion is longer than {MAX_ASSERTION_BYTES} bytes"
        )));
    }
    let segments: Vec<&str> = assertion.split('.').collect();
    if segments.len() == 5 {
        return Err(invalid("encrypted client assertions are not supported"));
    }
    if segments.len() != 3 {
        return Err(invalid("the client assertion is not a signed JWT"));
    }
    let header = decode_json(segments[0])
        .ok_or_else(|| invalid("the client assertion's header is not base64url JSON"))?;
    let claims = decode_json(segments[1])
        .ok_or_else(|| invalid("the client assertion's claims are not base64url JSON"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(segments[2])
        .map_err(|_| invalid("the client assertion's signature is not base64url"))?;
    let signing_input = &assertion[..segments[0].len() + 1 + segments[1].len()];
    Ok(Parts {
        header,
        claims,
        signing_input,
        signature,
    })
}

/// The `iss` of an assertion, read without verifying anything: which client it claims to come
/// from, so the gateway knows whom to ask the extension about.
pub fn unverified_issuer(assertion: &str) -> Option<String> {
    let parts = split(assertion).ok()?;
    parts.claims.get("iss")?.as_str().map(str::to_owned)
}

/// The `kid` of an assertion's header, read without verifying anything.
pub fn unverified_kid(assertion: &str) -> Option<String> {
    let parts = split(assertion).ok()?;
    parts.header.get("kid")?.as_str().map(str::to_owned)
}

/// How a JWK must look to verify `alg`.
pub(crate) fn key_fits(jwk: &Map<String, Value>, alg: &str) -> bool {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let shape = match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => text("kty") == Some("RSA"),
        "ES256" => text("kty") == Some("EC") && text("crv") == Some("P-256"),
        "ES384" => text("kty") == Some("EC") && text("crv") == Some("P-384"),
        "EdDSA" | "Ed25519" => text("kty") == Some("OKP") && text("crv") == Some("Ed25519"),
        _ => false,
    };
    // A key published for another use or algorithm must not verify this one (RFC 7517 §4.2–4.4).
    let usable = text("use").is_none_or(|u| u == "sig")
        && jwk.get("key_ops").is_none_or(|ops| {
            ops.as_array()
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")))
        })
        && text("alg").is_none_or(|a| a == alg || (is_ed25519(a) && is_ed25519(alg)));
    shape && usable
}

fn is_ed25519(alg: &str) -> bool {
    alg == "EdDSA" || alg == "Ed25519"
}

fn member_bytes(jwk: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(jwk.get(name)?.as_str()?).ok()
}

/// Whether `signature` over `message` verifies with `jwk` under `alg` (the key fits `alg`).
pub(crate) fn signature_verifies(
    jwk: &Map<String, Value>,
    alg: &str,
    message: &[u8],
    sig: &[u8],
) -> bool {
    let rsa = |params: &'static signature::RsaParameters| match (
        member_bytes(jwk, "n"),
        member_bytes(jwk, "e"),
    ) {
        (Some(n), Some(e)) => signature::RsaPublicKeyComponents { n, e }
            .verify(params, message, sig)
            .is_ok(),
        _ => false,
    };
    let ec = |alg: &'static signature::EcdsaVerificationAlgorithm, size: usize| match (
        member_bytes(jwk, "x"),
        member_bytes(jwk, "y"),
    ) {
        (Some(x), Some(y)) if x.len() == size && y.len() == size => {
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            UnparsedPublicKey::new(alg, point)
                .verify(message, sig)
                .is_ok()
        }
        _ => false,
    };
    // ring refuses RSA moduli under 2048 bits in these parameter sets.
    match alg {
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => ec(&signature::ECDSA_P256_SHA256_FIXED, 32),
        "ES384" => ec(&signature::ECDSA_P384_SHA384_FIXED, 48),
        "EdDSA" | "Ed25519" => match member_bytes(jwk, "x") {
            Some(x) if x.len() == 32 => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, sig)
                .is_ok(),
            _ => false,
        },
        _ => false,
    }
}

/// The keys of a JWK Set (`{"keys": [...]}`), as objects; anything else is no key.
pub(crate) fn keys_of(jwks: &Value) -> Vec<&Map<String, Value>> {
    jwks.get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

/// A NumericDate claim (RFC 7519 §2) as whole seconds, or why it is unusable.
pub(crate) fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| {
                value
                    .as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or_else(|| {
                invalid(format!(
                    "the client assertion's {name} is not a NumericDate"
                ))
            }),
    }
}

fn is_allowed_typ(typ: &str) -> bool {
    let typ = typ.to_ascii_lowercase();
    let typ = typ.strip_prefix("application/").unwrap_or(&typ);
    typ == "jwt" || typ == EXPLICIT_TYPE
}

/// Verifies a client assertion against the client's key set: RFC 7523 §3 (with the RFC 7523bis
/// audience rule for explicitly typed assertions) and RFC 7515 signature checks.
pub fn verify(assertion: &str, jwks: &Value, expected: &Expected) -> Result<Verified, Refusal> {
    let parts = split(assertion)?;
    let header = &parts.header;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the client assertion's header names no alg"))?;
    if !SIGNING_ALGS.contains(&alg) {
        return Err(invalid(format!(
            "alg {alg} is not accepted: a client assertion is signed with an asymmetric key ({})",
            SIGNING_ALGS.join(", ")
        )));
    }
    if let Some(required) = expected.alg
        && required != alg
    {
        return Err(invalid(format!(
            "this client registered token_endpoint_auth_signing_alg {required}; the assertion uses {alg}"
        )));
    }
    // RFC 7515 §4.1.11: extensions the recipient does not understand must be refused.
    if header.contains_key("crit") {
        return Err(invalid("the client assertion has a crit header"));
    }
    let typ = match header.get("typ") {
        None => None,
        Some(Value::String(typ)) if is_allowed_typ(typ) => Some(typ.to_ascii_lowercase()),
        Some(_) => {
            return Err(invalid(format!(
                "the client assertion's typ must be JWT or {EXPLICIT_TYPE}"
            )));
        }
    };
    let explicitly_typed = typ.is_some_and(|t| t.ends_with(EXPLICIT_TYPE));
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(invalid("the client assertion's kid is not a string")),
    };

    // The key: by kid, or the client's only key for this algorithm. Keys named in the header
    // (jwk, jku, x5u, x5c) are never used: the assertion cannot choose who verifies it.
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
                invalid(format!("the client's key {kid} is not usable for {alg}"))
            }
            Some(kid) => Refusal::UnknownKey(format!("the client has no key with kid {kid}")),
            None => Refusal::UnknownKey(format!("the client has no key for {alg}")),
        });
    }
    if kid.is_none() && fitting.len() > 1 {
        return Err(invalid(format!(
            "the client assertion names no kid and the client has several keys for {alg}"
        )));
    }
    let message = parts.signing_input.as_bytes();
    if !fitting
        .iter()
        .any(|k| signature_verifies(k, alg, message, &parts.signature))
    {
        return Err(invalid("the client assertion's signature does not verify"));
    }

    // Claims, now that the client is known to have made them.
    let claims = &parts.claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(expected.client_id) || text("sub") != Some(expected.client_id) {
        return Err(invalid(
            "the client assertion's iss and sub must both be the client_id",
        ));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).collect(),
        _ => return Err(invalid("the client assertion has no aud")),
    };
    if explicitly_typed {
        // RFC 7523bis: a client that says it follows the update uses the issuer as sole audience.
        if claims.get("aud").and_then(Value::as_str) != Some(expected.issuer) {
            return Err(invalid(format!(
                "a {EXPLICIT_TYPE} assertion's aud must be the issuer {} alone",
                expected.issuer
            )));
        }
    } else if !audiences
        .iter()
        .any(|a| *a == expected.issuer || *a == expected.token_endpoint)
    {
        return Err(invalid(format!(
            "the client assertion's aud must name this server: {} or {}",
            expected.issuer, expected.token_endpoint
        )));
    }
    let now = expected.now;
    let exp =
        numeric_date(claims, "exp")?.ok_or_else(|| invalid("the client assertion has no exp"))?;
    if exp.saturating_add(SKEW_SECONDS) <= now {
        return Err(invalid("the client assertion has expired"));
    }
    let nbf = numeric_date(claims, "nbf")?;
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(SKEW_SECONDS)) {
        return Err(invalid("the client assertion is not valid yet (nbf)"));
    }
    let iat = numeric_date(claims, "iat")?;
    if iat.is_some_and(|iat| iat > now.saturating_add(SKEW_SECONDS)) {
        return Err(invalid(
            "the client assertion was issued in the future (iat)",
        ));
    }
    let start = iat
        .or(nbf)
        .unwrap_or(now)
        .min(now.saturating_add(SKEW_SECONDS));
    if exp.saturating_sub(start) > MAX_LIFETIME_SECONDS {
        return Err(invalid(format!(
            "the client assertion may live at most {MAX_LIFETIME_SECONDS} seconds (exp - iat)"
        )));
    }
    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(format!(
                "the client assertion's jti must be 1 to {MAX_JTI_BYTES} bytes"
            )));
        }
        _ => {
            return Err(invalid(
                "the client assertion has no jti (needed to refuse it a second time)",
            ));
        }
    };
    Ok(Verified {
        jti,
        replay_until: exp.saturating_add(SKEW_SECONDS),
    })
}

/// Members that hold private or symmetric key material (RFC 7518 §6.2.2, §6.3.2, §6.4).
pub(crate) const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why `jwks` cannot be a client's key set for `private_key_jwt`, or `None`: a JWK Set of at most
/// [`MAX_KEYS`] public keys, at least one of which can verify an accepted algorithm. Keys of other
/// types or uses may be there (a client's set can serve other purposes) but are never used here.
pub fn jwks_problem(jwks: &Value) -> Option<String> {
    let Some(keys) = jwks.get("keys").and_then(Value::as_array) else {
        return Some("jwks must be a JWK Set: an object with a keys array".into());
    };
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Some(format!("jwks must hold 1 to {MAX_KEYS} keys"));
    }
    let mut usable = false;
    for key in keys {
        let Some(key) = key.as_object() else {
            return Some("every member of jwks.keys must be a JWK object".into());
        };
        if key.get("kty").and_then(Value::as_str).is_none() {
            return Some("every key in jwks needs a kty".into());
        }
        if key.get("kty").and_then(Value::as_str) == Some("oct") {
            return Some("jwks must not hold symmetric keys (kty oct)".into());
        }
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| key.contains_key(**m)) {
            return Some(format!(
                "jwks must hold public keys only (a key has the private member {member})"
            ));
        }
        if key.get("kid").is_some_and(|kid| !kid.is_string()) {
            return Some("a kid in jwks must be a string".into());
        }
        usable |= SIGNING_ALGS
            .iter()
            .any(|alg| key_fits(key, alg) && key_material_valid(key, alg));
    }
    if !usable {
        return Some(format!(
            "jwks holds no public key that can sign client assertions ({})",
            SIGNING_ALGS.join(", ")
        ));
    }
    None
}

/// Whether a fitting key's members decode to something of the right size.
fn key_material_valid(jwk: &Map<String, Value>, alg: &str) -> bool {
    let len = |name: &str| member_bytes(jwk, name).map(|b| b.len());
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            len("n").is_some_and(|n| n >= 256) && len("e").is_some_and(|e| (1..=8).contains(&e))
        }
        "ES256" => len("x") == Some(32) && len("y") == Some(32),
        "ES384" => len("x") == Some(48) && len("y") == Some(48),
        "EdDSA" | "Ed25519" => len("x") == Some(32),
        _ => false,
    }
}

/// Why `uri` cannot be a client's `jwks_uri`, or `None`: the same shape the gateway's fetcher
/// accepts for metadata documents (an https URL in normalized form, without userinfo, query or
/// fragment), since the same guarded fetcher reads it.
pub fn jwks_uri_problem(uri: &str) -> Option<&'static str> {
    if !uri.starts_with("https://") {
        return Some("jwks_uri must be an https URL");
    }
    let Ok(url) = Url::parse(uri) else {
        return Some("jwks_uri is not a URL");
    };
    if url.as_str() != uri {
        return Some("jwks_uri is not in normalized form");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("jwks_uri must not carry userinfo");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Some("jwks_uri must not have a query or fragment");
    }
    if url.host_str().is_none() || url.path().is_empty() || url.path() == "/" {
        return Some("jwks_uri must name a host and a path");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    const CLIENT: &str = "https://client.example/client.json";
    const ISSUER: &str = "https://as.example";
    const TOKEN: &str = "https://as.example/token";
    const NOW: i64 = 1_900_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Ec {
        pair: EcdsaKeyPair,
        kid: &'static str,
    }

    impl Ec {
        fn new(kid: &'static str) -> Self {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Self {
                pair: EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(),
                kid,
            }
        }
        fn jwk(&self) -> Value {
            let point = self.pair.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "kid": self.kid,
                   "x": b64(&point[1..33]), "y": b64(&point[33..65])})
        }
        fn sign(&self, header: Value, claims: Value) -> String {
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            let sig = self
                .pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap();
            format!("{input}.{}", b64(sig.as_ref()))
        }
    }

    fn claims() -> Value {
        json!({"iss": CLIENT, "sub": CLIENT, "aud": TOKEN, "iat": NOW, "exp": NOW + 300, "jti": "j1"})
    }

    fn expected() -> Expected<'static> {
        Expected {
            client_id: CLIENT,
            issuer: ISSUER,
            token_endpoint: TOKEN,
            alg: None,
            now: NOW,
        }
    }

    fn with(base: Value, changes: Value) -> Value {
        let mut merged = base;
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                merged.as_object_mut().unwrap().remove(k);
            } else {
                merged[k] = v.clone();
            }
        }
        merged
    }

    #[test]
    fn a_good_assertion_verifies_and_names_its_jti() {
        let key = Ec::new("k1");
        let jwks = json!({"keys": [key.jwk()]});
        let header = json!({"alg": "ES256", "kid": "k1", "typ": "JWT"});
        let verified = verify(&key.sign(header, claims()), &jwks, &expected()).unwrap();
        assert_eq!(verified.jti, "j1");
        assert_eq!(verified.replay_until, NOW + 300 + SKEW_SECONDS);
        assert_eq!(
            unverified_issuer(&key.sign(json!({"alg": "ES256"}), claims())).as_deref(),
            Some(CLIENT)
        );
    }

    #[test]
    fn every_rule_refuses_what_breaks_it() {
        let key = Ec::new("k1");
        let other = Ec::new("k2");
        let jwks = json!({"keys": [key.jwk()]});
        let header = json!({"alg": "ES256", "kid": "k1"});
        #[rustfmt::skip]
        let cases: Vec<(&str, String, &str)> = vec![
            ("expired", key.sign(header.clone(), with(claims(), json!({"iat": NOW - 400, "exp": NOW - 61}))), "expired"),
            ("not yet valid", key.sign(header.clone(), with(claims(), json!({"nbf": NOW + 120}))), "nbf"),
            ("issued in the future", key.sign(header.clone(), with(claims(), json!({"iat": NOW + 120, "exp": NOW + 200}))), "iat"),
            ("too long", key.sign(header.clone(), with(claims(), json!({"exp": NOW + 3601}))), "at most"),
            ("too long without iat", key.sign(header.clone(), with(claims(), json!({"iat": null, "exp": NOW + 7200}))), "at most"),
            ("no exp", key.sign(header.clone(), with(claims(), json!({"exp": null}))), "no exp"),
            ("no jti", key.sign(header.clone(), with(claims(), json!({"jti": null}))), "no jti"),
            ("wrong aud", key.sign(header.clone(), with(claims(), json!({"aud": "https://other.example/token"}))), "aud"),
            ("iss is not sub", key.sign(header.clone(), with(claims(), json!({"sub": "someone"}))), "iss and sub"),
            ("another client", key.sign(header.clone(), with(claims(), json!({"iss": "x", "sub": "x"}))), "iss and sub"),
            ("signed by another key", other.sign(header.clone(), claims()), "signature"),
            ("alg none", format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims().to_string().as_bytes())), "not accepted"),
            ("HS256", key.sign(json!({"alg": "HS256", "kid": "k1"}), claims()), "not accepted"),
            ("crit", key.sign(json!({"alg": "ES256", "kid": "k1", "crit": ["b64"]}), claims()), "crit"),
            ("other typ", key.sign(json!({"alg": "ES256", "kid": "k1", "typ": "dpop+jwt"}), claims()), "typ"),
            ("typed with the token endpoint", key.sign(json!({"alg": "ES256", "kid": "k1", "typ": "client-authentication+jwt"}), claims()), "issuer"),
            ("garbage", "a.b.c".to_owned(), "base64url JSON"),
            ("JWE", "a.b.c.d.e".to_owned(), "encrypted"),
        ];
        for (what, assertion, why) in cases {
            let refused = verify(&assertion, &jwks, &expected()).unwrap_err();
            assert!(refused.reason().contains(why), "{what}: {refused:?}");
            assert!(matches!(refused, Refusal::Invalid(_)), "{what}");
        }
        // Within the skew an assertion that just expired is still good.
        let late = key.sign(
            header.clone(),
            with(claims(), json!({"exp": NOW - 30, "iat": NOW - 90})),
        );
        assert!(verify(&late, &jwks, &expected()).is_ok());
        // The issuer as audience, alone or in an array; typed, as its sole value.
        for aud in [json!(ISSUER), json!(["https://x.example", ISSUER])] {
            let a = key.sign(header.clone(), with(claims(), json!({"aud": aud})));
            assert!(verify(&a, &jwks, &expected()).is_ok());
        }
        let typed = key.sign(
            json!({"alg": "ES256", "kid": "k1", "typ": "client-authentication+jwt"}),
            with(claims(), json!({"aud": ISSUER})),
        );
        assert!(verify(&typed, &jwks, &expected()).is_ok());
        // A registered signing algorithm binds.
        let only_rs = Expected {
            alg: Some("RS256"),
            ..expected()
        };
        assert!(verify(&key.sign(header, claims()), &jwks, &only_rs).is_err());
    }

    #[test]
    fn an_unknown_kid_is_told_apart_so_the_keys_can_be_fetched_again() {
        let key = Ec::new("rotated");
        let jwks = json!({"keys": [Ec::new("k1").jwk()]});
        let refused = verify(
            &key.sign(json!({"alg": "ES256", "kid": "rotated"}), claims()),
            &jwks,
            &expected(),
        )
        .unwrap_err();
        assert!(matches!(refused, Refusal::UnknownKey(_)), "{refused:?}");
        // Without a kid the only key for the algorithm is used; with two, the assertion must say.
        let jwks = json!({"keys": [key.jwk()]});
        assert!(
            verify(
                &key.sign(json!({"alg": "ES256"}), claims()),
                &jwks,
                &expected()
            )
            .is_ok()
        );
        let two = json!({"keys": [key.jwk(), Ec::new("k3").jwk()]});
        assert!(
            verify(
                &key.sign(json!({"alg": "ES256"}), claims()),
                &two,
                &expected()
            )
            .is_err()
        );
        // A key marked for encryption never verifies.
        let mut enc = key.jwk();
        enc["use"] = json!("enc");
        let refused = verify(
            &key.sign(json!({"alg": "ES256", "kid": "rotated"}), claims()),
            &json!({"keys": [enc]}),
            &expected(),
        )
        .unwrap_err();
        assert!(matches!(refused, Refusal::Invalid(_)), "{refused:?}");
    }

    #[test]
    fn ed25519_assertions_verify() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64(pair.public_key().as_ref())}]});
        assert_eq!(jwks_problem(&jwks), None);
        for alg in ["EdDSA", "Ed25519"] {
            let input = format!(
                "{}.{}",
                b64(json!({"alg": alg}).to_string().as_bytes()),
                b64(claims().to_string().as_bytes())
            );
            let sig = pair.sign(input.as_bytes());
            let assertion = format!("{input}.{}", b64(sig.as_ref()));
            assert!(verify(&assertion, &jwks, &expected()).is_ok(), "{alg}");
        }
    }

    #[test]
    fn key_sets_must_be_public_and_usable() {
        let good = json!({"keys": [Ec::new("k").jwk()]});
        assert_eq!(jwks_problem(&good), None);
        let mut private = Ec::new("k").jwk();
        private["d"] = json!("AAAA");
        for (bad, why) in [
            (json!([]), "JWK Set"),
            (json!({"keys": []}), "1 to"),
            (json!({"keys": [private]}), "private member d"),
            (
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
                "symmetric",
            ),
            (
                json!({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
                "no public key",
            ),
            (json!({"keys": [{"n": "x"}]}), "kty"),
        ] {
            let problem = jwks_problem(&bad);
            assert!(
                problem.as_deref().is_some_and(|p| p.contains(why)),
                "{bad}: {problem:?}"
            );
        }
    }

    #[test]
    fn jwks_uris_are_normalized_https_urls() {
        assert_eq!(
            jwks_uri_problem("https://chatgpt.com/oauth/jwks.json"),
            None
        );
        for bad in [
            "http://chatgpt.com/oauth/jwks.json",
            "https://chatgpt.com",
            "https://CHATGPT.com/jwks.json",
            "https://u@chatgpt.com/jwks.json",
            "https://chatgpt.com/jwks.json?x=1",
            "https://chatgpt.com/jwks.json#k",
        ] {
            assert!(jwks_uri_problem(bad).is_some(), "{bad}");
        }
    }
}
