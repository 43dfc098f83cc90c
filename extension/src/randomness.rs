//! Token material and its comparison.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest token we mint; anything above is a caller bug, not a policy.
const MAX_TOKEN_BYTES: i32 = 64;

/// `bytes` random bytes from the OS RNG, base64url without padding.
///
/// A backend is forked from the postmaster, so a user-space RNG seeded before the fork would hand
/// the same stream to every backend; `getrandom` asks the kernel on every call.
#[pg_extern(volatile, parallel_safe, strict)]
fn random_token(bytes: i32) -> String {
    if !(16..=MAX_TOKEN_BYTES).contains(&bytes) {
        error!("random_token: byte count {bytes} outside 16..={MAX_TOKEN_BYTES}");
    }
    let mut buf = vec![0u8; bytes as usize];
    if let Err(e) = getrandom::fill(&mut buf) {
        error!("random_token: the OS random number generator failed: {e}");
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// Compares two byte strings in time that depends only on their lengths.
#[pg_extern(immutable, parallel_safe)]
fn secure_equal(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.ct_eq(b).into(),
        _ => false,
    }
}

/// SHA-256 of a token's bytes: the only form in which tokens, codes and secrets are stored.
#[pg_extern(immutable, parallel_safe, strict)]
fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// RFC 8628 §6.1: consonants only (no vowels, so no words; no 0/O or 1/I to confuse), upper case.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
const USER_CODE_LENGTH: usize = 8;

/// A device-flow user code: 8 letters from a 20-letter alphabet (≈34.6 bits), as `XXXX-XXXX`.
#[pg_extern(volatile, parallel_safe)]
fn random_user_code() -> String {
    match draw_user_code() {
        Ok(code) => code,
        Err(e) => error!("random_user_code: the OS random number generator failed: {e}"),
    }
}

/// Rejection sampling from OS randomness, so every letter is equally likely.
fn draw_user_code() -> Result<String, getrandom::Error> {
    let mut letters = Vec::with_capacity(USER_CODE_LENGTH);
    let mut byte = [0u8; 1];
    while letters.len() < USER_CODE_LENGTH {
        getrandom::fill(&mut byte)?;
        // 240 is the largest multiple of 20 that fits in a byte: values above it would bias.
        if byte[0] < 240 {
            letters.push(USER_CODE_ALPHABET[usize::from(byte[0] % 20)]);
        }
    }
    let text = String::from_utf8(letters).expect("alphabet is ASCII");
    Ok(format!("{}-{}", &text[..4], &text[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_only_the_alphabet_in_two_groups_of_four() {
        for _ in 0..1000 {
            let code = draw_user_code().unwrap();
            let (left, right) = code.split_once('-').expect("dash");
            assert_eq!((left.len(), right.len()), (4, 4));
            assert!(
                left.bytes()
                    .chain(right.bytes())
                    .all(|b| USER_CODE_ALPHABET.contains(&b))
            );
        }
    }

    #[test]
    fn user_codes_cover_the_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            seen.extend(draw_user_code().unwrap().bytes().filter(|b| *b != b'-'));
        }
        assert_eq!(seen.len(), USER_CODE_ALPHABET.len());
    }
}
