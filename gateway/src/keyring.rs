//! Signing keys shared by every gateway through the database (`oauth.signing_keys`), so that all
//! gateways publish the same JWKS and sign with the same key, and an operator rotates them with
//! `oauth-gateway keys …` instead of redeploying files. Which key signs, and when a retired key
//! leaves the JWKS, is the extension's decision; the gateway seals and opens private keys (the
//! database holds none it could use), loads the set, and reloads it every few seconds.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::db::{Db, StoredSigningKey};
use crate::keys::{Alg, KeySet, Keys, SigningKey};

/// The key-encryption key every gateway of a deployment holds (configuration or environment,
/// never the database): AES-256-GCM over the private keys stored in `oauth.signing_keys`.
pub struct Kek {
    key: LessSafeKey,
    material: [u8; 32],
    /// Names this key in `sealed_with`, so a gateway given another key says so instead of failing
    /// to open every key. A digest, not the key.
    pub fingerprint: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// 32 bytes, base64 (URL-safe or standard, padded or not), as `oauth-gateway keys kek` prints.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(text))
            .map_err(|_| "the key-encryption key is not base64".to_owned())?;
        let material: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the key-encryption key must be 32 bytes (base64)".to_owned())?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &material).expect("a 32-byte AES-256 key"),
        );
        let mut digest = Sha256::new();
        digest.update(b"oauth-gateway key-encryption key v1\0");
        digest.update(material);
        let fingerprint = URL_SAFE_NO_PAD.encode(&digest.finalize()[..12]);
        Ok(Self {
            key,
            material,
            fingerprint,
        })
    }

    /// A new key-encryption key, from the OS RNG.
    pub fn generate() -> String {
        let mut material = [0u8; 32];
        SystemRandom::new()
            .fill(&mut material)
            .expect("the OS random number generator");
        URL_SAFE_NO_PAD.encode(material)
    }

    /// Bytes derived for another purpose (the consent forms' CSRF key) that reveal nothing of
    /// this key: HKDF's extract input, never used as a key itself.
    pub fn material(&self) -> &[u8] {
        &self.material
    }

    /// The key bound to its kid: a sealed key copied onto another row does not open.
    fn aad(kid: &str) -> Vec<u8> {
        [b"oauth-gateway signing key v1\0".as_slice(), kid.as_bytes()].concat()
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the OS random number generator");
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(kid)),
                &mut sealed,
            )
            .expect("AES-GCM sealing");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(format!("signing key {kid}: the sealed key is truncated"));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).expect("NONCE_LEN bytes");
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(kid)), &mut buffer)
            .map_err(|_| format!("signing key {kid}: the sealed key does not open"))?;
        Ok(plain.to_vec())
    }
}

/// A new key, sealed, ready for `oauth.add_signing_key`: its kid is the RFC 7638 thumbprint.
pub struct SealedKey {
    pub kid: String,
    pub alg: Alg,
    pub public_jwk: serde_json::Value,
    pub sealed_private_key: Vec<u8>,
    pub sealed_with: String,
}

/// Seals a private key (PEM: PKCS#8, or PKCS#1 for RSA) for the database.
pub fn seal_pem(kek: &Kek, pem_text: &[u8], alg: Alg) -> Result<SealedKey, String> {
    let key = SigningKey::from_pem(pem_text, alg, None)?;
    let parsed = pem::parse(pem_text).map_err(|e| format!("not a PEM file: {e}"))?;
    let pkcs8 = if parsed.tag() == "RSA PRIVATE KEY" {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        use rsa::pkcs8::EncodePrivateKey;
        rsa::RsaPrivateKey::from_pkcs1_der(parsed.contents())
            .map_err(|e| format!("not an RSA private key: {e}"))?
            .to_pkcs8_der()
            .map_err(|e| format!("RSA key to PKCS#8: {e}"))?
            .as_bytes()
            .to_vec()
    } else {
        parsed.contents().to_vec()
    };
    Ok(SealedKey {
        sealed_private_key: kek.seal(&key.kid, &pkcs8),
        sealed_with: kek.fingerprint.clone(),
        public_jwk: key.public_jwk().clone(),
        kid: key.kid,
        alg,
    })
}

/// Opens the keys the extension publishes now into a key set: signing keys first, in its order.
/// Every key must open and match its published public key; otherwise nothing is loaded (a
/// partial set could sign with a key relying parties were never shown, or publish one it cannot
/// account for).
pub fn open_keys(kek: &Kek, stored: Vec<StoredSigningKey>) -> Result<KeySet, String> {
    let mut keys = Vec::with_capacity(stored.len());
    let mut signers = 0;
    for row in stored {
        if row.sealed_with != kek.fingerprint {
            return Err(format!(
                "signing key {} was sealed with key-encryption key {}, this gateway holds {}",
                row.kid, row.sealed_with, kek.fingerprint
            ));
        }
        let alg = Alg::from_name(&row.alg)
            .ok_or_else(|| format!("signing key {}: unknown algorithm {}", row.kid, row.alg))?;
        let der = kek.open(&row.kid, &row.sealed_private_key)?;
        let key = SigningKey::from_pkcs8(&der, alg, Some(row.kid.clone()))
            .map_err(|e| format!("signing key {}: {e}", row.kid))?;
        if *key.public_jwk() != row.public_jwk {
            return Err(format!(
                "signing key {}: the private key does not match the published public key",
                row.kid
            ));
        }
        if row.state == "current" {
            // The extension lists current keys first; a current key after another state would
            // mean a contract change, and signing with the wrong key must not follow from it.
            if signers != keys.len() {
                return Err("oauth.signing_keys() did not list the current keys first".into());
            }
            signers += 1;
        }
        keys.push(key);
    }
    if signers == 0 {
        return Err("no signing key is current: add one and promote it \
             (oauth-gateway keys add --lead 0 --promote)"
            .into());
    }
    Ok(KeySet { keys, signers })
}

pub async fn load(db: &Db, kek: &Kek) -> Result<KeySet, String> {
    let stored = db
        .signing_keys()
        .await
        .map_err(|e| format!("reading the signing keys: {}", e.description))?;
    open_keys(kek, stored)
}

/// Reloads the shared keys every `every`: a key added is published, a promoted one signs, a
/// retired one stops signing and, later, leaves the JWKS, on every gateway within one interval.
/// A failed reload keeps the set in use (and says why).
pub async fn reload(db: Db, kek: Arc<Kek>, keys: Arc<Keys>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match load(&db, &kek).await {
            Ok(set) => {
                let before = keys.load();
                let changed = before.signers != set.signers
                    || before.keys.len() != set.keys.len()
                    || before
                        .keys
                        .iter()
                        .zip(&set.keys)
                        .any(|(a, b)| a.kid != b.kid);
                if changed {
                    tracing::info!(
                        signing = %set.signing().kid,
                        published = set.keys.len(),
                        "signing keys changed"
                    );
                    keys.replace(set);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "signing keys not reloaded; keeping the ones in use")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_pem;

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_under_its_kid() {
        let kek = Kek::parse(&Kek::generate()).unwrap();
        let other = Kek::parse(&Kek::generate()).unwrap();
        assert_ne!(kek.fingerprint, other.fingerprint);
        let sealed = kek.seal("kid-1", b"private");
        assert_eq!(kek.open("kid-1", &sealed).unwrap(), b"private");
        assert!(kek.open("kid-2", &sealed).is_err(), "bound to its kid");
        assert!(other.open("kid-1", &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(kek.open("kid-1", &flipped).is_err());
        assert!(kek.open("kid-1", &sealed[..20]).is_err());
        assert!(Kek::parse("c2hvcnQ").is_err(), "too short");
        assert!(format!("{kek:?}").contains(&kek.fingerprint));
    }

    #[test]
    fn sealed_keys_of_every_algorithm_open_into_a_key_set_with_current_keys_signing() {
        let kek = Kek::parse(&Kek::generate()).unwrap();
        let stored = |alg: Alg, state: &str| {
            let sealed = seal_pem(&kek, generate_pem(alg).unwrap().as_bytes(), alg).unwrap();
            StoredSigningKey {
                kid: sealed.kid,
                alg: alg.name().into(),
                state: state.into(),
                public_jwk: sealed.public_jwk,
                sealed_private_key: sealed.sealed_private_key,
                sealed_with: sealed.sealed_with,
            }
        };
        let rows = vec![
            stored(Alg::ES256, "current"),
            stored(Alg::RS256, "current"),
            stored(Alg::EdDSA, "next"),
            stored(Alg::ES256, "retired"),
        ];
        let first = rows[0].kid.clone();
        let set = open_keys(&kek, rows).unwrap();
        assert_eq!((set.keys.len(), set.signers), (4, 2));
        assert_eq!(set.signing().kid, first);
        assert_eq!(set.algs(), [Alg::RS256, Alg::ES256]);

        let mut swapped = vec![stored(Alg::ES256, "current"), stored(Alg::ES256, "next")];
        let other_public = swapped[1].public_jwk.clone();
        swapped[0].public_jwk = other_public;
        assert!(
            open_keys(&kek, swapped)
                .err()
                .unwrap()
                .contains("does not match")
        );
        let other = Kek::parse(&Kek::generate()).unwrap();
        assert!(
            open_keys(&other, vec![stored(Alg::ES256, "current")])
                .err()
                .unwrap()
                .contains("sealed with")
        );
        assert!(
            open_keys(&kek, vec![stored(Alg::ES256, "next")])
                .err()
                .unwrap()
                .contains("no signing key is current")
        );
    }
}
