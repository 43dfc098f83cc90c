//! Refresh tokens as a chain: each family's tokens are derived one from the next with the family's
//! secret key, so the family row alone recognises its live token, hands the same successor to
//! every concurrent presentation of one token, and proves an earlier token genuine — with no row
//! per token.
//!
//! A token is base64url(family id ‖ generation ‖ 32 bytes). Generation 0's bytes are random; each
//! successor's are HMAC-SHA256(family key, presented token). The database stores only the key and
//! SHA-256 of the live token: a dump gives neither a usable token nor a way to derive one (that
//! needs a token). The family id and generation in the token are only a lookup hint; the hash or
//! the chain decides whether a token is genuine.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const FAMILY_BYTES: usize = 16;
const GENERATION_BYTES: usize = 4;
const SECRET_BYTES: usize = 32;
const TOKEN_BYTES: usize = FAMILY_BYTES + GENERATION_BYTES + SECRET_BYTES;

/// How far back a token is followed to the live one. A family rotating every five minutes for a
/// year stays within it; an older token is refused as unknown rather than proven reuse, and a
/// forged one costs at most this many HMACs.
pub const MAX_CHAIN_STEPS: i32 = 100_000;

fn encode(family: &[u8; FAMILY_BYTES], generation: i32, secret: &[u8]) -> String {
    let mut raw = Vec::with_capacity(TOKEN_BYTES);
    raw.extend_from_slice(family);
    raw.extend_from_slice(&generation.to_be_bytes());
    raw.extend_from_slice(secret);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Family id and generation a token names, or None for anything not shaped like one (a token
/// from before 0.3.0 is 32 random bytes and found through `oauth.refresh_tokens` instead).
fn decode(token: &str) -> Option<([u8; FAMILY_BYTES], i32)> {
    if token.len() != (TOKEN_BYTES * 4).div_ceil(3) {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() != TOKEN_BYTES {
        return None;
    }
    let family: [u8; FAMILY_BYTES] = raw[..FAMILY_BYTES].try_into().ok()?;
    let generation = i32::from_be_bytes(
        raw[FAMILY_BYTES..FAMILY_BYTES + GENERATION_BYTES]
            .try_into()
            .ok()?,
    );
    (generation >= 0).then_some((family, generation))
}

fn successor(key: &[u8], family: &[u8; FAMILY_BYTES], generation: i32, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(token.as_bytes());
    encode(family, generation, &mac.finalize().into_bytes())
}

/// Whether `steps` successors of `token` (the first of generation `generation + 1`) end at the
/// token whose SHA-256 is `target`.
fn reaches(
    key: &[u8],
    family: &[u8; FAMILY_BYTES],
    generation: i32,
    token: &str,
    steps: i32,
    target: &[u8],
) -> bool {
    if !(0..=MAX_CHAIN_STEPS).contains(&steps) || generation.checked_add(steps).is_none() {
        return false;
    }
    let mut current = token.to_owned();
    for step in 1..=steps {
        current = successor(key, family, generation + step, &current);
    }
    Sha256::digest(current.as_bytes())
        .as_slice()
        .ct_eq(target)
        .into()
}

/// The first token of a new family: generation 0, 32 bytes from the OS RNG.
#[pg_extern(volatile, parallel_safe, strict)]
fn refresh_token_first(family_id: pgrx::Uuid) -> String {
    let mut secret = [0u8; SECRET_BYTES];
    if let Err(e) = getrandom::fill(&mut secret) {
        error!("refresh_token_first: the OS random number generator failed: {e}");
    }
    encode(family_id.as_bytes(), 0, &secret)
}

/// A family's chain key, from the OS RNG.
#[pg_extern(volatile, parallel_safe)]
fn refresh_chain_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    if let Err(e) = getrandom::fill(&mut key) {
        error!("refresh_chain_key: the OS random number generator failed: {e}");
    }
    key
}

/// The token that follows `token` in its family: generation `generation`, derived with the key.
#[pg_extern(immutable, parallel_safe, strict)]
fn refresh_token_successor(
    chain_key: &[u8],
    family_id: pgrx::Uuid,
    generation: i32,
    token: &str,
) -> String {
    successor(chain_key, family_id.as_bytes(), generation, token)
}

/// The family a token names (unverified: a lookup hint), or NULL when it is not shaped like one.
#[pg_extern(immutable, parallel_safe, strict)]
fn refresh_token_family(token: &str) -> Option<pgrx::Uuid> {
    decode(token).map(|(family, _)| pgrx::Uuid::from_bytes(family))
}

/// The generation a token names (unverified), or NULL when it is not shaped like one.
#[pg_extern(immutable, parallel_safe, strict)]
fn refresh_token_generation(token: &str) -> Option<i32> {
    decode(token).map(|(_, generation)| generation)
}

/// Whether `token`, of generation `generation` in family `family_id`, leads in exactly `steps`
/// successors to the live token whose SHA-256 is `live_hash`: proof that it was issued.
#[pg_extern(immutable, parallel_safe, strict)]
fn refresh_chain_reaches(
    chain_key: &[u8],
    family_id: pgrx::Uuid,
    generation: i32,
    token: &str,
    steps: i32,
    live_hash: &[u8],
) -> bool {
    reaches(
        chain_key,
        family_id.as_bytes(),
        generation,
        token,
        steps,
        live_hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILY: [u8; 16] = *b"0123456789abcdef";

    fn chain(key: &[u8], first: &str, length: i32) -> Vec<String> {
        let mut tokens = vec![first.to_owned()];
        for generation in 1..length {
            let next = successor(key, &FAMILY, generation, tokens.last().unwrap());
            tokens.push(next);
        }
        tokens
    }

    #[test]
    fn tokens_name_their_family_and_generation() {
        let first = encode(&FAMILY, 0, &[7u8; 32]);
        assert_eq!(decode(&first), Some((FAMILY, 0)));
        let next = successor(b"key", &FAMILY, 1, &first);
        assert_eq!(decode(&next), Some((FAMILY, 1)));
        assert_ne!(next, successor(b"other key", &FAMILY, 1, &first));
        assert_eq!(
            next,
            successor(b"key", &FAMILY, 1, &first),
            "one successor per token"
        );
    }

    #[test]
    fn pre_chain_tokens_and_garbage_name_no_family() {
        let pre_chain = URL_SAFE_NO_PAD.encode([1u8; 32]);
        for token in ["", "x", &pre_chain, &"%".repeat(70)] {
            assert_eq!(decode(token), None, "{token}");
        }
        let negative = encode(&FAMILY, -1, &[0u8; 32]);
        assert_eq!(decode(&negative), None);
    }

    #[test]
    fn only_genuine_earlier_tokens_reach_the_live_one() {
        let key = b"family key";
        let tokens = chain(key, &encode(&FAMILY, 0, &[9u8; 32]), 6);
        let live = Sha256::digest(tokens[5].as_bytes());
        for (generation, token) in tokens.iter().enumerate() {
            let generation = generation as i32;
            assert!(reaches(
                key,
                &FAMILY,
                generation,
                token,
                5 - generation,
                &live
            ));
            assert!(!reaches(
                key,
                &FAMILY,
                generation,
                token,
                4 - generation,
                &live
            ));
        }
        let forged = encode(&FAMILY, 2, &[9u8; 32]);
        assert!(!reaches(key, &FAMILY, 2, &forged, 3, &live));
        assert!(!reaches(b"another key", &FAMILY, 0, &tokens[0], 5, &live));
        assert!(!reaches(
            key,
            &FAMILY,
            0,
            &tokens[0],
            MAX_CHAIN_STEPS + 1,
            &live
        ));
        assert!(!reaches(key, &FAMILY, i32::MAX, &tokens[0], 1, &live));
    }
}
