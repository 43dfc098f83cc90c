//! Signing keys: loaded from PKCS#8 PEM files or from the database (`keyring`), held parsed
//! (signing must not re-parse a key per token), published as a JWKS. Several keys may be loaded;
//! the signing ones sign, all verify (rotation).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    self, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[value(rename_all = "verbatim")]
pub enum Alg {
    RS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The algorithm a JOSE `alg` value names, if this gateway can sign with it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Alg::RS256, Alg::ES256, Alg::EdDSA]
            .into_iter()
            .find(|alg| alg.name() == name)
    }

    pub fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::RS256 => jsonwebtoken::Algorithm::RS256,
            Alg::ES256 => jsonwebtoken::Algorithm::ES256,
            Alg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    pair: Pair,
    /// Public JWK without `kid`/`alg`/`use` (the RFC 7638 thumbprint input and the JWKS entry base).
    public_jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Parses a PKCS#8 private key (PEM `PRIVATE KEY`, or PKCS#1 `RSA PRIVATE KEY`) of the given
    /// algorithm. `kid` defaults to the RFC 7638 thumbprint.
    pub fn from_pem(pem_text: &[u8], alg: Alg, kid: Option<String>) -> Result<Self, String> {
        let parsed = pem::parse(pem_text).map_err(|e| format!("not a PEM file: {e}"))?;
        Self::from_der(
            parsed.contents(),
            parsed.tag() == "RSA PRIVATE KEY",
            alg,
            kid,
        )
    }

    /// A PKCS#8 DER private key (as the database keeps them, sealed).
    pub fn from_pkcs8(der: &[u8], alg: Alg, kid: Option<String>) -> Result<Self, String> {
        Self::from_der(der, false, alg, kid)
    }

    fn from_der(der: &[u8], pkcs1: bool, alg: Alg, kid: Option<String>) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let (pair, public_jwk) = match alg {
            Alg::RS256 => {
                let pair = if pkcs1 {
                    RsaKeyPair::from_der(der)
                } else {
                    RsaKeyPair::from_pkcs8(der)
                }
                .map_err(|e| format!("not an RSA private key: {e}"))?;
                if pair.public().modulus_len() < 256 {
                    return Err("RSA keys must have at least 2048 bits".into());
                }
                let components = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                let jwk = json!({ "e": b64(&components.e), "kty": "RSA", "n": b64(&components.n) });
                (Pair::Rsa(pair), jwk)
            }
            Alg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
                    .map_err(|e| format!("not a P-256 PKCS#8 private key: {e}"))?;
                let point = pair.public_key().as_ref();
                let jwk = json!({ "crv": "P-256", "kty": "EC", "x": b64(&point[1..33]), "y": b64(&point[33..65]) });
                (Pair::Ec(pair), jwk)
            }
            Alg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}"))?;
                let jwk =
                    json!({ "crv": "Ed25519", "kty": "OKP", "x": b64(pair.public_key().as_ref()) });
                (Pair::Ed(pair), jwk)
            }
        };
        // serde_json's map is ordered, so this is RFC 7638's lexicographic member order.
        let kid = kid.unwrap_or_else(|| b64(&Sha256::digest(public_jwk.to_string().as_bytes())));
        Ok(Self {
            kid,
            alg,
            pair,
            public_jwk,
        })
    }

    pub fn from_file(path: &Path, alg: Alg, kid: Option<String>) -> Result<Self, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_pem(&text, alg, kid).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .expect("RSA signing with a validated key");
                sig
            }
            Pair::Ec(pair) => pair
                .sign(&rng, message)
                .expect("ECDSA signing with a validated key")
                .as_ref()
                .to_vec(),
            Pair::Ed(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }

    /// The public JWK without `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> &Value {
        &self.public_jwk
    }

    pub fn jwk(&self) -> Value {
        let mut jwk = self.public_jwk.clone();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.alg.name());
        jwk["use"] = json!("sig");
        jwk
    }

    /// The public key in the form jsonwebtoken verifies with.
    pub fn decoding_key(&self) -> jsonwebtoken::DecodingKey {
        let s = |k: &str| self.public_jwk[k].as_str().unwrap_or_default().to_owned();
        match self.alg {
            Alg::RS256 => jsonwebtoken::DecodingKey::from_rsa_components(&s("n"), &s("e")),
            Alg::ES256 => jsonwebtoken::DecodingKey::from_ec_components(&s("x"), &s("y")),
            Alg::EdDSA => jsonwebtoken::DecodingKey::from_ed_components(&s("x")),
        }
        .expect("components of a key we parsed")
    }
}

/// The keys in use. The first `signers` of `keys` may sign: `keys[0]` signs access tokens, an ID
/// token is signed by the first signing key of its client's algorithm. All are published and
/// accepted (a key about to sign, and a retired one whose tokens are still alive).
pub struct KeySet {
    pub keys: Vec<SigningKey>,
    pub signers: usize,
}

impl KeySet {
    /// Keys that all sign (configured files: the first signs access tokens).
    pub fn all_signing(keys: Vec<SigningKey>) -> Self {
        let signers = keys.len();
        Self { keys, signers }
    }

    pub fn signing(&self) -> &SigningKey {
        &self.keys[0]
    }

    fn signing_keys(&self) -> &[SigningKey] {
        &self.keys[..self.signers]
    }

    /// The first signing key of `alg`, if any.
    pub fn for_alg(&self, alg: Alg) -> Option<&SigningKey> {
        self.signing_keys().iter().find(|k| k.alg == alg)
    }

    /// The algorithms of the loaded keys, each once, RS256 first when loaded: OpenID Connect
    /// Discovery §3 requires it in `id_token_signing_alg_values_supported`, and it is what a
    /// client that names no `id_token_signed_response_alg` gets.
    pub fn algs(&self) -> Vec<Alg> {
        let mut algs: Vec<Alg> = Vec::new();
        for key in self.signing_keys() {
            if !algs.contains(&key.alg) {
                algs.push(key.alg);
            }
        }
        algs.sort_by_key(|alg| *alg != Alg::RS256);
        algs
    }

    /// The key that signs an ID token for a client registered with `alg`. A client may name an
    /// algorithm this gateway holds no key for (a metadata document is not checked against the
    /// keys, and keys change after registration): it gets the first key's signature rather than
    /// no ID token, and the warning at start-up says which algorithm is missing.
    pub fn id_token_signing(&self, alg: Alg) -> &SigningKey {
        self.for_alg(alg).unwrap_or_else(|| self.signing())
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>() })
    }
}

/// The key set in use now, replaced whole when the shared keys change (`keyring`): a request
/// takes the set once and signs and verifies with that one. Each replacement is a new generation,
/// so what was verified under an earlier set (the guard's cache) is verified again: a key dropped
/// after a compromise must stop admitting its tokens at once.
pub struct Keys {
    set: RwLock<Arc<KeySet>>,
    generation: AtomicU64,
}

impl Keys {
    pub fn new(set: KeySet) -> Self {
        Self {
            set: RwLock::new(Arc::new(set)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn load(&self) -> Arc<KeySet> {
        self.set.read().expect("keys lock").clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn replace(&self, set: KeySet) {
        *self.set.write().expect("keys lock") = Arc::new(set);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A new private key as PKCS#8 PEM.
pub fn generate_pem(alg: Alg) -> Result<String, String> {
    let rng = SystemRandom::new();
    let der = match alg {
        Alg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| e.to_string())?
            .as_ref()
            .to_vec(),
        Alg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|e| e.to_string())?
            .as_ref()
            .to_vec(),
        Alg::RS256 => {
            // ring cannot generate RSA keys; the RustCrypto `rsa` crate can, from the OS RNG.
            use rsa::pkcs8::EncodePrivateKey;
            let key =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
            key.to_pkcs8_der()
                .map_err(|e| e.to_string())?
                .as_bytes()
                .to_vec()
        }
    };
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(alg: Alg) -> SigningKey {
        SigningKey::from_pem(generate_pem(alg).unwrap().as_bytes(), alg, None).unwrap()
    }

    #[test]
    fn rs256_leads_the_algorithms_and_each_alg_has_its_first_key() {
        let set = KeySet::all_signing(vec![
            key(Alg::ES256),
            key(Alg::EdDSA),
            key(Alg::ES256),
            key(Alg::RS256),
        ]);
        assert_eq!(set.algs(), [Alg::RS256, Alg::ES256, Alg::EdDSA]);
        assert_eq!(set.signing().kid, set.keys[0].kid);
        assert_eq!(set.id_token_signing(Alg::ES256).kid, set.keys[0].kid);
        assert_eq!(set.id_token_signing(Alg::RS256).kid, set.keys[3].kid);
        let without_rsa = KeySet::all_signing(vec![key(Alg::EdDSA), key(Alg::ES256)]);
        assert_eq!(without_rsa.algs(), [Alg::EdDSA, Alg::ES256]);
        assert!(without_rsa.for_alg(Alg::RS256).is_none());
        assert_eq!(
            without_rsa.id_token_signing(Alg::RS256).kid,
            without_rsa.keys[0].kid,
            "no RS256 key: the first key signs"
        );
        assert_eq!(Alg::from_name("EdDSA"), Some(Alg::EdDSA));
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("rs256"), None);
    }

    #[test]
    fn keys_that_do_not_sign_yet_or_any_more_are_published_and_verify_but_never_sign() {
        let (current, next) = (key(Alg::ES256), key(Alg::RS256));
        let (current_kid, next_kid) = (current.kid.clone(), next.kid.clone());
        let set = KeySet {
            keys: vec![current, next],
            signers: 1,
        };
        assert_eq!(set.signing().kid, current_kid);
        assert_eq!(
            set.algs(),
            [Alg::ES256],
            "discovery names signing algorithms only"
        );
        assert!(set.for_alg(Alg::RS256).is_none());
        assert_eq!(set.id_token_signing(Alg::RS256).kid, current_kid);
        assert!(set.find(&next_kid).is_some(), "a published key verifies");
        assert_eq!(set.jwks()["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn generated_keys_load_sign_and_publish() {
        for alg in [Alg::ES256, Alg::EdDSA, Alg::RS256] {
            let pem = generate_pem(alg).unwrap();
            let key = SigningKey::from_pem(pem.as_bytes(), alg, None).unwrap();
            assert_eq!(key.kid.len(), 43, "thumbprint kid");
            assert!(!key.sign(b"message").is_empty());
            assert_eq!(key.jwk()["alg"], alg.name());
            assert!(
                SigningKey::from_pem(
                    pem.as_bytes(),
                    if alg == Alg::ES256 {
                        Alg::EdDSA
                    } else {
                        Alg::ES256
                    },
                    None
                )
                .is_err()
            );
        }
    }
}
