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
