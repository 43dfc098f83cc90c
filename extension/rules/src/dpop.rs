//! DPoP proofs (RFC 9449 §4): a client proves, on each request, that it holds the private key an
//! access token (and a public client's refresh token) is bound to. The token endpoint and the guard
//! both check proofs with this code; which key a token is bound to (`cnf.jkt`, a family's
//! `dpop_jkt`) is the extension's and the token's record, not the proof's.
//!
//! What this does not decide: whether a proof's `jti` was seen before (a replay cache, per
//! process) and whether its `nonce` is one the server handed out (the gateway's own nonces).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use serde_json::{Map, Value};
use url::Url;

use crate::client_assertion::{PRIVATE_MEMBERS, decode_json, key_fits, signature_verifies};

/// RFC 9449 §4.2.
pub const PROOF_TYPE: &str = "dpop+jwt";

/// Asymmetric algorithms only (§4.3 step 5: never `none`, never a MAC). Advertised as
/// `dpop_signing_alg_values_supported`.
pub const SIGNING_ALGS: [&str; 9] = [
    "ES256", "ES384", "EdDSA", "Ed25519", "RS256", "RS384", "RS512", "PS256", "PS384",
];

/// How far `iat` may be from the server's clock, either way: the MCP DPoP profile (SEP-1932) has
/// servers accept proofs within five minutes, for clients whose clocks drift.
pub const IAT_WINDOW_SECONDS: i64 = 300;

/// Longest proof read: a proof carries one public key (an RSA-4096 JWK is under 1 kB).
pub const MAX_PROOF_BYTES: usize = 8192;

const MAX_JTI_BYTES: usize = 255;
const MAX_NONCE_BYTES: usize = 512;

/// The request a proof must be for.
pub struct Expected<'a> {
    /// The HTTP method, as received.
    pub method: &'a str,
    /// The request's URL as the client addressed it (query and fragment are ignored).
    pub url: &'a str,
    /// At a resource: the access token presented with the proof (`ath`, §4.3 step 12).
    pub access_token: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub now: i64,
}

/// A valid proof: the key's RFC 7638 thumbprint, and what replay checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    pub nonce: Option<String>,
}

impl Proof {
    /// Until when the proof's `jti` must be refused again: after that, `iat` is out of the window.
    pub fn replay_until(&self) -> i64 {
        self.iat.saturating_add(IAT_WINDOW_SECONDS)
    }
}

fn text<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    map.get(name).and_then(Value::as_str)
}

/// RFC 7638: the SHA-256 thumbprint of a public JWK (its required members, in lexicographic order,
/// without whitespace), base64url. `None` for a key type DPoP does not accept.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match text(jwk, "kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        let value = text(jwk, name)?;
        canonical.push_str(&Value::from(*name).to_string());
        canonical.push(':');
        canonical.push_str(&Value::from(value).to_string());
    }
    canonical.push('}');
    let hash = digest::digest(&digest::SHA256, canonical.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(hash.as_ref()))
}

/// `ath` (§4.2): base64url of the SHA-256 of the access token's ASCII.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, access_token.as_bytes()).as_ref())
}

/// Whether `jkt` has the shape of a SHA-256 thumbprint (43 base64url characters).
pub fn is_thumbprint(jkt: &str) -> bool {
    jkt.len() == 43
        && jkt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Two URLs name the same resource for `htu` (§4.3 step 9): scheme, host, port and path after
/// RFC 3986 §6.2.2–6.2.3 normalisation (case, default port, dot-segments, percent-encoding of
/// unreserved characters, which the URL parser applies), query and fragment ignored.
fn same_target(htu: &str, url: &str) -> bool {
    let (Ok(a), Ok(b)) = (Url::parse(htu), Url::parse(url)) else {
        return false;
    };
    let path = |u: &Url| {
        let p = u.path();
        if p.is_empty() {
            "/".to_owned()
        } else {
            p.to_owned()
        }
    };
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && path(&a) == path(&b)
        && a.username().is_empty()
        && a.password().is_none()
}

/// Verifies a DPoP proof for the request `expected` describes (RFC 9449 §4.3 steps 2–9, 11, 12).
/// The error is the reason, for `error_description`.
pub fn verify(proof: &str, expected: &Expected) -> Result<Proof, String> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(format!(
            "the DPoP proof is longer than {MAX_PROOF_BYTES} bytes"
        ));
    }
    let segments: Vec<&str> = proof.split('.').collect();
    if segments.len() != 3 {
        return Err("the DPoP proof is not a signed JWT".into());
    }
    let header = decode_json(segments[0]).ok_or("the DPoP proof's header is not base64url JSON")?;
    let claims =
        decode_json(segments[1]).ok_or("the DPoP proof's claims are not base64url JSON")?;
    let signature = URL_SAFE_NO_PAD
        .decode(segments[2])
        .map_err(|_| "the DPoP proof's signature is not base64url")?;
    if text(&header, "typ") != Some(PROOF_TYPE) {
        return Err(format!("the DPoP proof's typ must be {PROOF_TYPE}"));
    }
    let alg = text(&header, "alg").ok_or("the DPoP proof's header names no alg")?;
    if !SIGNING_ALGS.contains(&alg) {
        return Err(format!(
            "alg {alg} is not accepted for DPoP proofs ({})",
            SIGNING_ALGS.join(", ")
        ));
    }
    if header.contains_key("crit") {
        return Err("the DPoP proof has a crit header".into());
    }
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or("the DPoP proof's header carries no jwk")?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("the DPoP proof's jwk holds private key material".into());
    }
    if !key_fits(jwk, alg) {
        return Err(format!(
            "the DPoP proof's jwk is not a public key for {alg}"
        ));
    }
    let signing_input = &proof[..segments[0].len() + 1 + segments[1].len()];
    if !signature_verifies(jwk, alg, signing_input.as_bytes(), &signature) {
        return Err("the DPoP proof's signature does not verify with its jwk".into());
    }
    let jkt = thumbprint(jwk).ok_or("the DPoP proof's jwk has no thumbprint")?;

    let jti = match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= MAX_JTI_BYTES => jti.clone(),
        _ => {
            return Err(format!(
                "the DPoP proof needs a jti of 1 to {MAX_JTI_BYTES} bytes"
            ));
        }
    };
    if text(&claims, "htm") != Some(expected.method) {
        return Err(format!(
            "the DPoP proof's htm must be the request's method, {}",
            expected.method
        ));
    }
    let htu = text(&claims, "htu").ok_or("the DPoP proof has no htu")?;
    if !same_target(htu, expected.url) {
        return Err(format!(
            "the DPoP proof's htu must be the request's URL, {}",
            strip_query(expected.url)
        ));
    }
    let iat = claims
        .get("iat")
        .and_then(|v| {
            v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
        })
        .ok_or("the DPoP proof has no iat (a NumericDate)")?;
    if (iat - expected.now).abs() > IAT_WINDOW_SECONDS {
        return Err(format!(
            "the DPoP proof's iat is more than {IAT_WINDOW_SECONDS} seconds from the server's time"
        ));
    }
    if let Some(access_token) = expected.access_token {
        if text(&claims, "ath") != Some(access_token_hash(access_token).as_str()) {
            return Err("the DPoP proof's ath is not the hash of the access token".into());
        }
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) if n.len() <= MAX_NONCE_BYTES => Some(n.clone()),
        Some(_) => return Err("the DPoP proof's nonce is not a string".into()),
    };
    Ok(Proof {
        jkt,
        jti,
        iat,
        nonce,
    })
}

fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair};
    use serde_json::json;

    const URL: &str = "https://as.example/token";
    const NOW: i64 = 1_900_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    struct Key(EcdsaKeyPair);

    impl Key {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            Key(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap())
        }
        fn jwk(&self) -> Value {
            let point = self.0.public_key().as_ref();
            json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
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
        fn proof(&self, claims: Value) -> String {
            self.sign(
                json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()}),
                claims,
            )
        }
    }

    fn expected(access_token: Option<&str>) -> Expected<'_> {
        Expected {
            method: "POST",
            url: URL,
            access_token,
            now: NOW,
        }
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({"kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn a_good_proof_gives_its_key_thumbprint() {
        let key = Key::new();
        let proof = key.proof(json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW}));
        let verified = verify(&proof, &expected(None)).unwrap();
        assert_eq!(
            Some(verified.jkt.clone()),
            thumbprint(key.jwk().as_object().unwrap())
        );
        assert!(is_thumbprint(&verified.jkt));
        assert_eq!(verified.replay_until(), NOW + IAT_WINDOW_SECONDS);
        // Normalised: case of scheme and host, default port, a query ignored.
        let proof = key.proof(json!({"jti": "b", "htm": "POST", "htu": "HTTPS://AS.example:443/token?x=1", "iat": NOW}));
        assert!(verify(&proof, &expected(None)).is_ok());
    }

    #[test]
    fn refusals() {
        let key = Key::new();
        let good = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW});
        let with = |name: &str, value: Value| {
            let mut c = good.clone();
            c[name] = value;
            key.proof(c)
        };
        let without = |name: &str| {
            let mut c = good.clone();
            c.as_object_mut().unwrap().remove(name);
            key.proof(c)
        };
        let cases = [
            (with("htm", json!("GET")), "htm"),
            (with("htu", json!("https://as.example/other")), "htu"),
            (with("htu", json!("http://as.example/token")), "htu"),
            (with("iat", json!(NOW - 301)), "iat"),
            (with("iat", json!(NOW + 301)), "iat"),
            (without("jti"), "jti"),
            (without("iat"), "iat"),
            (without("htu"), "htu"),
            (
                key.sign(
                    json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk()}),
                    good.clone(),
                ),
                "typ",
            ),
            (
                key.sign(
                    json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk()}),
                    good.clone(),
                ),
                "alg",
            ),
            (
                key.sign(
                    json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk()}),
                    good.clone(),
                ),
                "alg",
            ),
            (
                key.sign(json!({"typ": "dpop+jwt", "alg": "ES256"}), good.clone()),
                "jwk",
            ),
            (
                key.sign(
                    json!({"typ": "dpop+jwt", "alg": "ES384", "jwk": key.jwk()}),
                    good.clone(),
                ),
                "jwk",
            ),
            ("a.b".to_owned(), "signed JWT"),
        ];
        for (proof, reason) in cases {
            let error = verify(&proof, &expected(None)).unwrap_err();
            assert!(error.contains(reason), "{reason}: {error}");
        }
        // Another key's signature.
        let other = Key::new();
        let forged = {
            let real = key.proof(good.clone());
            let stolen = other.proof(good.clone());
            let mut parts: Vec<&str> = real.split('.').collect();
            parts[2] = stolen.split('.').nth(2).unwrap();
            parts.join(".")
        };
        assert!(
            verify(&forged, &expected(None))
                .unwrap_err()
                .contains("signature")
        );
        // Private key material in the header.
        let mut jwk = key.jwk();
        jwk["d"] = json!("AAAA");
        let leaked = key.sign(
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}),
            good.clone(),
        );
        assert!(
            verify(&leaked, &expected(None))
                .unwrap_err()
                .contains("private")
        );
    }

    #[test]
    fn at_a_resource_the_proof_names_the_access_token() {
        let key = Key::new();
        let token = "eyJ.access.token";
        let claims =
            |ath: &str| json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW, "ath": ath});
        assert!(
            verify(
                &key.proof(claims(&access_token_hash(token))),
                &expected(Some(token))
            )
            .is_ok()
        );
        let error = verify(
            &key.proof(claims(&access_token_hash("another"))),
            &expected(Some(token)),
        )
        .unwrap_err();
        assert!(error.contains("ath"), "{error}");
        let missing = key.proof(json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW}));
        assert!(verify(&missing, &expected(Some(token))).is_err());
    }
}
