//! DPoP at this gateway (RFC 9449): the proof on a request is checked by `oauth_rules::dpop` (the
//! same code for the token endpoint, the guard and userinfo); this adds what only a server
//! process can: refusing a proof seen before (a bounded cache per process, §11.1) and the nonces
//! the server hands out (§8, §9), which every gateway sharing the CSRF key accepts.
//!
//! Which key a token is bound to is not decided here: the extension keeps a public client's
//! refresh-token binding, and access tokens carry `cnf.jkt`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::HeaderMap;
use oauth_rules::dpop::{self, Expected, Proof};
use ring::hmac;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, OAuthError};

/// How long a nonce is good for: it names the minute it was made in, and is taken for that minute
/// and the four before (a client retrying a refused request uses the nonce it was just given).
const NONCE_BUCKET_SECONDS: i64 = 60;
const NONCE_BUCKETS_ACCEPTED: i64 = 5;

/// Proofs remembered per process. A proof lives ten minutes at most (its `iat` five minutes either
/// side of the clock), so this holds the proofs of about 1,600 requests a second; beyond it new
/// proofs are turned away (503) rather than a proof forgotten early, which would let it replay.
const MAX_REMEMBERED_PROOFS: usize = 1_000_000;

pub struct Dpop {
    nonce_key: hmac::Key,
    require_nonce: bool,
    seen: Mutex<SeenProofs>,
}

#[derive(Default)]
struct SeenProofs {
    /// A proof (its key's thumbprint and jti, hashed) and the second its `iat` leaves the window.
    until: HashMap<u128, i64>,
    /// Expired entries are swept when the map reaches this size.
    sweep_at: usize,
}

impl SeenProofs {
    /// Records a proof; false when it was seen before (or cannot be remembered).
    fn first_use(&mut self, key: u128, until: i64, now: i64) -> Result<bool, ()> {
        if self.until.len() >= self.sweep_at {
            self.until.retain(|_, until| *until > now);
            self.sweep_at = (self.until.len() * 2).max(1024);
        }
        match self.until.get(&key) {
            Some(previous) if *previous > now => return Ok(false),
            _ => {}
        }
        if self.until.len() >= MAX_REMEMBERED_PROOFS {
            return Err(());
        }
        self.until.insert(key, until);
        Ok(true)
    }
}

fn invalid(reason: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidDpopProof, reason)
}

impl Dpop {
    /// `secret` is the deployment's CSRF key: nonces made by one gateway are good at every other.
    pub fn new(secret: &hmac::Key, require_nonce: bool) -> Self {
        let tag = hmac::sign(secret, b"dpop-nonce key");
        Self {
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()),
            require_nonce,
            seen: Mutex::default(),
        }
    }

    /// The nonce a client should put in its next proof, when this deployment requires nonces.
    pub fn nonce(&self) -> Option<String> {
        self.require_nonce.then(|| self.nonce_at(now()))
    }

    fn nonce_at(&self, now: i64) -> String {
        let bucket = now.div_euclid(NONCE_BUCKET_SECONDS);
        let tag = hmac::sign(&self.nonce_key, bucket.to_string().as_bytes());
        format!("{bucket}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn nonce_is_fresh(&self, nonce: &str, now: i64) -> bool {
        let Some((bucket, tag)) = nonce.split_once('.') else {
            return false;
        };
        let (Ok(bucket), Ok(tag)) = (bucket.parse::<i64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        let current = now.div_euclid(NONCE_BUCKET_SECONDS);
        (current - NONCE_BUCKETS_ACCEPTED < bucket && bucket <= current)
            && hmac::verify(&self.nonce_key, bucket.to_string().as_bytes(), &tag).is_ok()
    }

    /// The proof in the request's `DPoP` header for `method` at `url` (with `access_token` at a
    /// resource), checked; `None` when the request carries none. Refusals are RFC 9449 §5/§7
    /// errors: `invalid_dpop_proof`, or `use_dpop_nonce` with the nonce to use.
    pub fn check(
        &self,
        headers: &HeaderMap,
        method: &str,
        url: &str,
        access_token: Option<&str>,
    ) -> Result<Option<Proof>, OAuthError> {
        let mut values = headers.get_all("dpop").iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(invalid("a request carries one DPoP proof"));
        }
        let proof = value
            .to_str()
            .map_err(|_| invalid("the DPoP header is not a JWT"))?;
        let now = now();
        let expected = Expected {
            method,
            url,
            access_token,
            now,
        };
        let proof = dpop::verify(proof, &expected).map_err(invalid)?;
        if self.require_nonce
            && !proof
                .nonce
                .as_deref()
                .is_some_and(|n| self.nonce_is_fresh(n, now))
        {
            let mut error = OAuthError::new(
                ErrorCode::UseDpopNonce,
                "the DPoP proof must carry the nonce in the DPoP-Nonce header",
            );
            error.dpop_nonce = Some(self.nonce_at(now));
            return Err(error);
        }
        let digest = Sha256::new()
            .chain_update(proof.jkt.as_bytes())
            .chain_update([0])
            .chain_update(proof.jti.as_bytes())
            .finalize();
        let key = u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"));
        let first = self
            .seen
            .lock()
            .expect("never poisoned: no panics under the lock")
            .first_use(key, proof.replay_until(), now);
        match first {
            Ok(true) => Ok(Some(proof)),
            Ok(false) => Err(invalid("this DPoP proof was used before (jti)")),
            Err(()) => Err(OAuthError::unavailable()),
        }
    }
}

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dpop(require_nonce: bool) -> Dpop {
        Dpop::new(&hmac::Key::new(hmac::HMAC_SHA256, b"secret"), require_nonce)
    }

    #[test]
    fn nonces_are_good_for_five_minutes_and_at_every_gateway() {
        let (a, b) = (dpop(true), dpop(true));
        let now = 1_900_000_000;
        let nonce = a.nonce_at(now);
        assert!(b.nonce_is_fresh(&nonce, now));
        assert!(b.nonce_is_fresh(&nonce, now + 4 * 60));
        assert!(!b.nonce_is_fresh(&nonce, now + 6 * 60));
        assert!(
            !b.nonce_is_fresh(&a.nonce_at(now + 120), now),
            "from the future"
        );
        let other = Dpop::new(&hmac::Key::new(hmac::HMAC_SHA256, b"other"), true);
        assert!(!other.nonce_is_fresh(&nonce, now));
        for junk in ["", ".", "x.y", "1.", &format!("{}.AAAA", now / 60)] {
            assert!(!a.nonce_is_fresh(junk, now), "{junk}");
        }
    }

    #[test]
    fn a_proof_is_taken_once_until_it_expires() {
        let mut seen = SeenProofs::default();
        assert_eq!(seen.first_use(1, 100, 0), Ok(true));
        assert_eq!(seen.first_use(1, 100, 50), Ok(false));
        assert_eq!(seen.first_use(2, 100, 50), Ok(true));
        // Expired: its iat can no longer be accepted, so remembering it is no longer needed.
        assert_eq!(seen.first_use(1, 200, 100), Ok(true));
    }
}
