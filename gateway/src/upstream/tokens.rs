//! The upstream provider's own tokens, kept for the guarded MCP servers (`store_tokens`): sealed
//! here with AES-256-GCM and stored by the extension as opaque bytes (`sql/upstream_tokens.sql`),
//! handed to routes with `upstream_token_header`, and refreshed at the provider when they expire.
//!
//! Refreshing is single-flight per token set: within a gateway a lock per set (the set read again
//! under it), across gateways a short claim in the database (`oauth.claim_upstream_refresh`; the
//! others wait for the new version), because a provider that rotates refresh tokens takes a second
//! presentation of one for reuse. The result is written with a compare-and-swap on the set's
//! version (`oauth.replace_upstream_tokens`): a gateway that lost a race reads the winner's tokens
//! instead of overwriting them with its own provider answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Failure, Provider};
use crate::db::{Db, SealedTokenSet};

/// A refresh happens this long before the access token's end, so a request forwarded now does
/// not reach the MCP server (and the provider's API behind it) with a token that just expired.
const EXPIRY_MARGIN: i64 = 30;
/// How long a request waits for another gateway's refresh of the same set, and how often it looks.
const WAIT_FOR_OTHER: std::time::Duration = std::time::Duration::from_secs(5);
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_millis(100);
/// Tokens larger than this are not kept (the column holds at most 32 KiB sealed).
const MAX_PLAINTEXT: usize = 24 * 1024;

/// AES-256-GCM under a key derived (HKDF-SHA256) from the configured one, so the same secret can
/// also seal signing keys (`keyring::Kek`) without one ciphertext ever passing for the other.
pub struct Sealer {
    key: LessSafeKey,
    /// Names the key in `sealed_with` (a digest, never the key).
    pub fingerprint: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl Sealer {
    pub fn derive(material: &[u8]) -> Self {
        let mut bytes = [0u8; 32];
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"oauth-gateway")
            .extract(material)
            .expand(&[b"upstream tokens v1"], Len32)
            .expect("32 bytes from HKDF-SHA256")
            .fill(&mut bytes)
            .expect("32 bytes from HKDF-SHA256");
        let fingerprint = {
            let mut digest = Sha256::new();
            digest.update(b"oauth-gateway upstream tokens key v1\0");
            digest.update(bytes);
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                &digest.finalize()[..12],
            )
        };
        Self {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("a 32-byte key")),
            fingerprint,
        }
    }

    /// The row a blob belongs to: its set, its user and its provider. A blob copied onto another
    /// row (another user's above all) does not open.
    fn aad(token_set_id: Uuid, user_id: &str, upstream: &str) -> Vec<u8> {
        format!("oauth-gateway upstream tokens v1\0{token_set_id}\0{user_id}\0{upstream}")
            .into_bytes()
    }

    /// nonce ‖ ciphertext ‖ tag.
    pub fn seal(
        &self,
        token_set_id: Uuid,
        user_id: &str,
        upstream: &str,
        tokens: &IssuedTokens,
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("the OS random number generator");
        let mut sealed = serde_json::to_vec(tokens).expect("serializable");
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(token_set_id, user_id, upstream)),
                &mut sealed,
            )
            .expect("AES-GCM sealing");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(
        &self,
        token_set_id: Uuid,
        user_id: &str,
        upstream: &str,
        sealed: &[u8],
    ) -> Option<IssuedTokens> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(Self::aad(token_set_id, user_id, upstream)),
                &mut buffer,
            )
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// What the provider issued (never logged: no `Debug` prints a token).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedTokens {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds since the epoch; `None`: the provider named no lifetime.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

impl IssuedTokens {
    /// From a token endpoint's answer (RFC 6749 §5.1); `kept_refresh`: the refresh token that
    /// stays valid when the answer brings none (§6).
    pub fn from_answer(answer: &Value, kept_refresh: Option<&str>) -> Result<Self, Failure> {
        let access_token = answer["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Refused("the provider issued no access token".into()))?;
        let tokens = Self {
            access_token: access_token.to_owned(),
            refresh_token: answer["refresh_token"]
                .as_str()
                .or(kept_refresh)
                .map(str::to_owned),
            expires_at: answer["expires_in"]
                .as_i64()
                .filter(|s| *s > 0)
                .map(|s| now().saturating_add(s)),
        };
        if tokens.access_token.len() + tokens.refresh_token.as_ref().map_or(0, String::len)
            > MAX_PLAINTEXT
        {
            return Err(Failure::Refused(
                "the provider's tokens are too large to keep".into(),
            ));
        }
        Ok(tokens)
    }

    /// Usable for a request forwarded now, with time to spare: otherwise it is refreshed first.
    pub fn fresh(&self) -> bool {
        self.expires_at.is_none_or(|at| at > now() + EXPIRY_MARGIN)
    }

    /// Not expired. What another refresh just wrote is taken as it is, even from a provider whose
    /// tokens live less than the margin (refreshing it again would only repeat that refresh).
    fn unexpired(&self) -> bool {
        self.expires_at.is_none_or(|at| at > now())
    }
}

/// Why no upstream access token could be handed on, never with the reason's details (they stay in
/// the log, without tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The authorization behind the tokens is over (refused, forgotten, unopenable): the request
    /// gets a 401 (RFC 6750 invalid_token), and the next authorization signs in again.
    Ended,
    /// The database or the provider could not be asked now: a 503; the tokens stay, and the same
    /// request may succeed later.
    Unavailable,
}

/// The guard's side: the current access token of a grant, refreshed when it has expired.
pub struct UpstreamTokens {
    providers: HashMap<String, Arc<Provider>>,
    db: Db,
    /// One refresh at a time per token set, within this gateway.
    flights: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl UpstreamTokens {
    pub fn new(providers: &[Arc<Provider>], db: Db) -> Self {
        Self {
            providers: providers
                .iter()
                .filter(|p| p.sealer.is_some())
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            db,
            flights: Mutex::default(),
        }
    }

    /// Keeps the tokens of a sign-in for its session (`oauth.store_upstream_tokens`).
    pub async fn store(
        db: &Db,
        provider: &Provider,
        session_id: Uuid,
        user_id: &str,
        tokens: &IssuedTokens,
    ) -> Result<(), crate::error::OAuthError> {
        let Some(sealer) = &provider.sealer else {
            return Ok(());
        };
        let token_set_id = Uuid::new_v4();
        let sealed = sealer.seal(token_set_id, user_id, &provider.name, tokens);
        db.store_upstream_tokens(
            token_set_id,
            session_id,
            &provider.name,
            &sealed,
            &sealer.fingerprint,
        )
        .await
    }

    fn open(&self, set: &SealedTokenSet) -> Result<(Arc<Provider>, IssuedTokens), Unusable> {
        let Some(provider) = self.providers.get(&set.upstream) else {
            tracing::warn!(token_set = %set.token_set_id, upstream = %set.upstream,
                "upstream tokens of a provider this gateway does not keep tokens for");
            return Err(Unusable::Ended);
        };
        let sealer = provider.sealer.as_ref().expect("providers with a sealer");
        match sealer.open(set.token_set_id, &set.user_id, &set.upstream, &set.sealed) {
            Some(tokens) => Ok((provider.clone(), tokens)),
            None => {
                tracing::error!(token_set = %set.token_set_id, sealed_with = %set.sealed_with,
                    key = %sealer.fingerprint, "sealed upstream tokens do not open (another key, or moved)");
                Err(Unusable::Ended)
            }
        }
    }

    async fn read(&self, grant: Uuid) -> Result<Option<SealedTokenSet>, Unusable> {
        self.db.upstream_tokens_for_grant(grant).await.map_err(|e| {
            tracing::warn!(error = %e.description, "upstream tokens could not be read");
            Unusable::Unavailable
        })
    }

    /// The grant's current upstream access token; `None` when the grant holds none (its user's
    /// sign-in kept no tokens).
    pub async fn access_token(&self, grant: Uuid) -> Result<Option<String>, Unusable> {
        let Some(set) = self.read(grant).await? else {
            return Ok(None);
        };
        let (_, tokens) = self.open(&set)?;
        if tokens.fresh() {
            return Ok(Some(tokens.access_token));
        }
        let flight = {
            let mut flights = self.flights.lock().expect("flights lock");
            flights.entry(set.token_set_id).or_default().clone()
        };
        let result = {
            let _turn = flight.lock().await;
            self.refresh(grant, set.version).await
        };
        {
            let mut flights = self.flights.lock().expect("flights lock");
            // The map's and this call's: no one else waits on this set's lock.
            if Arc::strong_count(&flight) == 2 {
                flights.remove(&set.token_set_id);
            }
        }
        result.map(Some)
    }

    /// Under the set's lock: read again (a refresh may have just finished since `seen` was
    /// read: then its result is used), refresh at the provider, write with a compare-and-swap.
    async fn refresh(&self, grant: Uuid, seen: i64) -> Result<String, Unusable> {
        let Some(set) = self.read(grant).await? else {
            return Err(Unusable::Ended);
        };
        let (provider, tokens) = self.open(&set)?;
        if tokens.fresh() || (set.version != seen && tokens.unexpired()) {
            return Ok(tokens.access_token);
        }
        let sealer = provider.sealer.as_ref().expect("providers with a sealer");
        match self
            .db
            .claim_upstream_refresh(set.token_set_id, set.version)
            .await
        {
            Ok(true) => {}
            Ok(false) => return self.wait_for_other(grant, set.version).await,
            Err(e) => {
                tracing::warn!(error = %e.description, "could not claim the upstream refresh");
                return Err(Unusable::Unavailable);
            }
        }
        match provider.refresh(&tokens).await {
            Ok(renewed) => {
                let sealed = sealer.seal(set.token_set_id, &set.user_id, &set.upstream, &renewed);
                let replaced = self
                    .db
                    .replace_upstream_tokens(
                        set.token_set_id,
                        set.version,
                        &sealed,
                        &sealer.fingerprint,
                    )
                    .await;
                match replaced {
                    Ok(Some(_)) => {
                        tracing::info!(token_set = %set.token_set_id, "upstream tokens refreshed");
                        Ok(renewed.access_token)
                    }
                    // Another gateway wrote its refresh first: theirs is the set's truth.
                    Ok(None) => self.winner(grant, set.version).await,
                    Err(e) => {
                        tracing::warn!(error = %e.description, "refreshed upstream tokens could not be stored");
                        Err(Unusable::Unavailable)
                    }
                }
            }
            Err(failure) => {
                // A refresh token that another gateway just used may be refused as reused:
                // the winner's tokens are then in the database.
                if let Ok(token) = self.winner(grant, set.version).await {
                    return Ok(token);
                }
                let outcome = match failure {
                    Failure::Unavailable(_) => Unusable::Unavailable,
                    _ => Unusable::Ended,
                };
                match failure {
                    Failure::Refused(code) if code == "invalid_grant" => {
                        tracing::info!(token_set = %set.token_set_id,
                            "the provider refused the upstream refresh token; forgetting the set");
                        if let Err(e) = self
                            .db
                            .forget_upstream_tokens(set.token_set_id, set.version)
                            .await
                        {
                            tracing::warn!(error = %e.description, "upstream tokens could not be forgotten");
                        }
                    }
                    Failure::Refused(code) => {
                        tracing::info!(token_set = %set.token_set_id, error = %code,
                            "the provider refused to refresh upstream tokens")
                    }
                    Failure::Unavailable(why) => {
                        tracing::warn!(token_set = %set.token_set_id, %why,
                            "upstream tokens could not be refreshed")
                    }
                    Failure::NotAllowed(_) => {}
                }
                // The set is as it was: the next request may try again at once.
                let _ = self
                    .db
                    .release_upstream_refresh(set.token_set_id, set.version)
                    .await;
                Err(outcome)
            }
        }
    }

    /// Another gateway claimed the refresh: its result, once written.
    async fn wait_for_other(&self, grant: Uuid, version: i64) -> Result<String, Unusable> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(LOOK_AGAIN).await;
            let Some(set) = self.read(grant).await? else {
                return Err(Unusable::Ended);
            };
            if set.version != version {
                return self.winner(grant, version).await;
            }
        }
        Err(Unusable::Ended)
    }

    /// The set as another refresh left it, if it moved past `version` and is fresh.
    async fn winner(&self, grant: Uuid, version: i64) -> Result<String, Unusable> {
        let set = self.read(grant).await?.ok_or(Unusable::Ended)?;
        if set.version == version {
            return Err(Unusable::Ended);
        }
        let (_, tokens) = self.open(&set)?;
        tokens
            .unexpired()
            .then_some(tokens.access_token)
            .ok_or(Unusable::Ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_set_opens_only_on_its_own_row() {
        let sealer = Sealer::derive(&[7u8; 32]);
        let tokens = IssuedTokens {
            access_token: "at".into(),
            refresh_token: Some("rt".into()),
            expires_at: Some(1),
        };
        let set = Uuid::new_v4();
        let sealed = sealer.seal(set, "alice", "default", &tokens);
        assert_eq!(sealer.open(set, "alice", "default", &sealed), Some(tokens));
        assert!(sealer.open(set, "bob", "default", &sealed).is_none());
        assert!(
            sealer
                .open(Uuid::new_v4(), "alice", "default", &sealed)
                .is_none()
        );
        assert!(sealer.open(set, "alice", "other", &sealed).is_none());
        assert!(
            Sealer::derive(&[8u8; 32])
                .open(set, "alice", "default", &sealed)
                .is_none()
        );
        assert!(
            sealer
                .open(set, "alice", "default", &sealed[..20])
                .is_none()
        );
    }

    #[test]
    fn tokens_never_reach_debug_output() {
        let tokens = IssuedTokens {
            access_token: "secret-access".into(),
            refresh_token: Some("secret-refresh".into()),
            expires_at: None,
        };
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
