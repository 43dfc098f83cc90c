//! JWTs: access tokens (RFC 9068) and ID tokens (OIDC Core) are signed here with the parsed ring
//! keys; verification goes through jsonwebtoken (claims validation) with ring as its crypto
//! provider, so one crypto library backs both directions.

use std::sync::Once;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey, Validation};
use ring::signature::{self as ring_sig, UnparsedPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::keys::{KeySet, SigningKey};

/// Compact JWS of `claims` with header `typ` and the signing key's `kid`.
pub fn sign(key: &SigningKey, typ: &str, claims: &Value) -> String {
    let header = json!({ "alg": key.alg.name(), "kid": key.kid, "typ": typ });
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = if key.alg == crate::keys::Alg::RS256 {
        off_the_async_workers(|| key.sign(token.as_bytes()))
    } else {
        key.sign(token.as_bytes())
    };
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

/// Runs a slow computation (an RSA signature is about a millisecond of CPU, ECDSA a few dozen
/// microseconds) so that it cannot stall the other connections queued on this async worker:
/// `block_in_place` hands them to another worker first. On a single-threaded runtime (tests) it
/// just runs.
fn off_the_async_workers<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// OIDC Core §3.1.3.6 `at_hash`: the left half of the access token's hash, with the hash of the
/// signing algorithm: SHA-256 for RS256/ES256, SHA-512 for Ed25519 (as oidc-provider and
/// openid-client agree).
pub fn at_hash(alg: crate::keys::Alg, access_token: &str) -> String {
    let digest: Vec<u8> = match alg {
        crate::keys::Alg::EdDSA => {
            ring::digest::digest(&ring::digest::SHA512, access_token.as_bytes())
                .as_ref()
                .to_vec()
        }
        _ => Sha256::digest(access_token.as_bytes()).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), SignatureError> {
        let outcome = match (self.alg, self.key.kind()) {
            (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
                ring_sig::RsaPublicKeyComponents { n, e }.verify(
                    &ring_sig::RSA_PKCS1_2048_8192_SHA256,
                    msg,
                    signature,
                )
            }
            (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
                UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, signature)
            }
            (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(public)) => {
                UnparsedPublicKey::new(&ring_sig::ED25519, public).verify(msg, signature)
            }
            _ => return Err(SignatureError::new()),
        };
        outcome.map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

struct NoSigner;

impl Signer<Vec<u8>> for NoSigner {
    fn try_sign(&self, _: &[u8]) -> Result<Vec<u8>, SignatureError> {
        Err(SignatureError::new())
    }
}

impl JwtSigner for NoSigner {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RS256
    }
}

fn verifier_factory(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    // Asymmetric algorithms only: HS* with a public key as the secret is the classic confusion attack.
    match alg {
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => Ok(Box::new(RingVerifier {
            alg: *alg,
            key: key.clone(),
        })),
        _ => Err(JwtError::from(ErrorKind::InvalidAlgorithm)),
    }
}

fn signer_factory(
    _: &Algorithm,
    _: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    // Signing goes through `sign` with keys parsed once; jsonwebtoken never signs here.
    Ok(Box::new(NoSigner))
}

static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory,
    verifier_factory,
    jwk_utils: JwkUtils::new_unimplemented(),
};

pub(crate) fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = RING_PROVIDER.install_default();
    });
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("wrong token type")]
    WrongType,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The algorithms this gateway signs with, all asymmetric: what its own endpoints accept.
pub const ASYMMETRIC: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// What a resource server needs to accept an access token.
pub struct Expectations<'a> {
    pub issuer: &'a str,
    /// `None` skips the audience check (the authorization server's own endpoints).
    pub audience: Option<&'a str>,
    /// Asymmetric algorithms the caller accepts; anything else (`none`, HS*) is refused regardless.
    pub algorithms: &'a [Algorithm],
    pub validate_exp: bool,
}

/// Verifies an RFC 9068 access token against `keys`: `typ` at+jwt, a known `kid`, an allowed
/// asymmetric algorithm, signature, `iss`, `aud`, `exp`. Returns its claims.
pub fn verify_access_token(
    token: &str,
    keys: &KeySet,
    expect: &Expectations,
) -> Result<Value, VerifyError> {
    install_provider();
    if token.len() > 8192 || token.split('.').count() != 3 {
        return Err(VerifyError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
    if !matches!(
        header.alg,
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
    ) || !expect.algorithms.contains(&header.alg)
    {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt"))
    {
        return Err(VerifyError::WrongType);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.find(kid))
        .ok_or(VerifyError::UnknownKey)?;
    if key.alg.jsonwebtoken() != header.alg {
        return Err(VerifyError::AlgorithmNotAllowed);
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[expect.issuer]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.validate_exp = expect.validate_exp;
    validation.leeway = 30;
    match expect.audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    jsonwebtoken::decode::<Value>(token, &key.decoding_key(), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            other => VerifyError::Invalid(format!("{other:?}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Alg, generate_pem};

    fn keyset(alg: Alg) -> KeySet {
        KeySet::all_signing(vec![
            SigningKey::from_pem(generate_pem(alg).unwrap().as_bytes(), alg, None).unwrap(),
        ])
    }

    fn claims(exp_offset: i64) -> Value {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        json!({ "iss": "https://as.example", "sub": "alice", "aud": "https://rs.example/mcp", "exp": now + exp_offset, "iat": now })
    }

    #[test]
    fn signed_tokens_verify_for_every_algorithm() {
        for alg in [Alg::ES256, Alg::EdDSA, Alg::RS256] {
            let keys = keyset(alg);
            let token = sign(keys.signing(), "at+jwt", &claims(60));
            let expect = Expectations {
                issuer: "https://as.example",
                audience: Some("https://rs.example/mcp"),
                algorithms: &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
                validate_exp: true,
            };
            assert_eq!(
                verify_access_token(&token, &keys, &expect).unwrap()["sub"],
                "alice"
            );
            let wrong_aud = Expectations {
                audience: Some("https://other.example"),
                ..expect
            };
            assert!(verify_access_token(&token, &keys, &wrong_aud).is_err());
        }
    }

    #[test]
    fn expired_tampered_untyped_and_symmetric_tokens_are_refused() {
        let keys = keyset(Alg::ES256);
        let expect = Expectations {
            issuer: "https://as.example",
            audience: None,
            algorithms: &[Algorithm::ES256],
            validate_exp: true,
        };
        let expired = sign(keys.signing(), "at+jwt", &claims(-3600));
        assert_eq!(
            verify_access_token(&expired, &keys, &expect),
            Err(VerifyError::Expired)
        );
        let untyped = sign(keys.signing(), "JWT", &claims(60));
        assert_eq!(
            verify_access_token(&untyped, &keys, &expect),
            Err(VerifyError::WrongType)
        );
        let good = sign(keys.signing(), "at+jwt", &claims(60));
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD.encode(claims(600).to_string());
        parts[1] = &forged_claims;
        assert!(verify_access_token(&parts.join("."), &keys, &expect).is_err());
        let hs_header = URL_SAFE_NO_PAD.encode(
            json!({"alg": "HS256", "typ": "at+jwt", "kid": keys.signing().kid}).to_string(),
        );
        let none_header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "at+jwt"}).to_string());
        for header in [hs_header, none_header] {
            let token = format!(
                "{header}.{}.",
                URL_SAFE_NO_PAD.encode(claims(60).to_string())
            );
            assert!(verify_access_token(&token, &keys, &expect).is_err());
        }
    }
}
