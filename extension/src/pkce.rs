//! PKCE (RFC 7636), S256 only: `plain` would let a stolen code be redeemed with the challenge itself.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pgrx::prelude::*;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `code-verifier = 43*128unreserved` (RFC 7636 §4.1).
fn verifier_syntax_ok(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// An S256 challenge is the unpadded base64url of a SHA-256 digest: exactly 43 characters that decode to 32 bytes.
#[pg_extern(immutable, parallel_safe, strict)]
fn pkce_challenge_valid(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|digest| digest.len() == 32)
}

#[pg_extern(immutable, parallel_safe)]
fn pkce_s256_matches(verifier: Option<&str>, challenge: Option<&str>) -> bool {
    let (Some(verifier), Some(challenge)) = (verifier, challenge) else {
        return false;
    };
    if !verifier_syntax_ok(verifier) {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    computed.as_bytes().ct_eq(challenge.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example_matches() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_s256_matches(Some(verifier), Some(challenge)));
        assert!(!pkce_s256_matches(
            Some(&verifier.replace('d', "e")),
            Some(challenge)
        ));
        assert!(pkce_challenge_valid(challenge));
    }
}
