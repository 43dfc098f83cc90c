//! What the guard keeps between requests so a proxied call costs no signature check and no
//! database round trip: verified tokens and grants' props.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::tokens::AccessClaims;

/// Tokens whose signature and claims were verified for a route, by SHA-256 of the token: MCP
/// clients present one token for many calls, and a signature check costs more than the rest of a
/// proxied request. Expiry and revocation are still checked on every use; an entry holds only
/// under the key-set generation it was verified with (`Keys::generation`).
#[derive(Default)]
pub struct VerifiedTokens {
    entries: RwLock<HashMap<VerifiedKey, (AccessClaims, u64)>>,
}

/// The token's SHA-256 and the index of the route it was verified for.
pub type VerifiedKey = ([u8; 32], usize);

const VERIFIED_CAPACITY: usize = 100_000;

impl VerifiedTokens {
    pub fn get(&self, key: &VerifiedKey, keys_generation: u64) -> Option<AccessClaims> {
        let (claims, generation) = self
            .entries
            .read()
            .expect("verified lock")
            .get(key)
            .cloned()?;
        (generation == keys_generation && claims.exp > jsonwebtoken::get_current_timestamp())
            .then_some(claims)
    }

    pub fn insert(&self, key: VerifiedKey, claims: AccessClaims, keys_generation: u64) {
        let mut entries = self.entries.write().expect("verified lock");
        if entries.len() >= VERIFIED_CAPACITY {
            entries.clear();
        }
        entries.insert(key, (claims, keys_generation));
    }
}

/// The grant's `props`, looked up once per grant and kept briefly (the revoked set, not this
/// cache, decides liveness).
#[derive(Default)]
pub struct PropsCache {
    entries: RwLock<HashMap<Uuid, (Value, Instant)>>,
}

const PROPS_TTL: Duration = Duration::from_secs(60);

impl PropsCache {
    pub fn get(&self, grant: Uuid) -> Option<Value> {
        let entries = self.entries.read().expect("props lock");
        let (props, at) = entries.get(&grant)?;
        (at.elapsed() < PROPS_TTL).then(|| props.clone())
    }

    pub fn insert(&self, grant: Uuid, props: Value) {
        self.entries
            .write()
            .expect("props lock")
            .insert(grant, (props, Instant::now()));
    }
}
