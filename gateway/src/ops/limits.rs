//! Rate limits per client and per source address (GCRA, one theoretical arrival time per key),
//! counted by each gateway process for itself: N gateways behind a balancer allow up to N times a
//! limit in all. Memory is bounded: at most `max_tracked_keys` keys; keys whose budget is whole
//! again are forgotten first (forgetting them changes nothing), and beyond that new keys share one
//! budget per endpoint and kind, so a flood of invented client ids or addresses cannot grow it.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::{IpRange, Limited, RateLimits};
use crate::error::OAuthError;

const SHARDS: usize = 16;
const MINUTE_NANOS: u64 = 60_000_000_000;
/// The key every new key of one endpoint and kind shares once the table is full.
const OVERFLOW: u64 = u64::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KeyKind {
    Client,
    Address,
}

impl KeyKind {
    fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Address => "address",
        }
    }
}

/// Labels of `oauth_rate_limited_total`: endpoint and key kind, both from closed sets.
pub type RejectionLabels = [(&'static str, &'static str); 2];

/// One shard of the table: each key's theoretical arrival time, in nanoseconds since start.
type Shard = Mutex<HashMap<(Limited, KeyKind, u64), u64>>;

pub struct Limiter {
    config: RateLimits,
    /// Keys are hashed with a per-process random key: the table holds no client id or address,
    /// and nobody can aim collisions at a victim's key.
    hasher: RandomState,
    shards: Vec<Shard>,
    per_shard: usize,
    started: Instant,
    pub rejected: Family<RejectionLabels, Counter>,
}

impl Limiter {
    pub fn new(config: RateLimits) -> Self {
        let per_shard = config.max_tracked_keys.div_ceil(SHARDS).max(1);
        Self {
            config,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard,
            started: Instant::now(),
            rejected: Family::default(),
        }
    }

    /// Counts one request of `key` on `endpoint`; `Err` is the 429 to answer.
    pub fn check(&self, endpoint: Limited, kind: KeyKind, key: &[u8]) -> Result<(), OAuthError> {
        let (per_client, per_address) = self.config.resolve(endpoint);
        let per_minute = match kind {
            KeyKind::Client => per_client,
            KeyKind::Address => per_address,
        };
        if per_minute == 0 {
            return Ok(());
        }
        let now = self.started.elapsed().as_nanos() as u64;
        match self.admit(endpoint, kind, self.hasher.hash_one(key), per_minute, now) {
            Ok(()) => Ok(()),
            Err(wait) => {
                self.rejected
                    .get_or_create(&[("endpoint", endpoint.name()), ("key", kind.name())])
                    .inc();
                Err(OAuthError::too_many_requests(wait))
            }
        }
    }

    /// GCRA: one request every `60 s / per_minute`, with a burst of a whole minute's worth.
    fn admit(
        &self,
        endpoint: Limited,
        kind: KeyKind,
        hash: u64,
        per_minute: u32,
        now: u64,
    ) -> Result<(), Duration> {
        let interval = MINUTE_NANOS / u64::from(per_minute);
        let tolerance = MINUTE_NANOS - interval;
        let mut shard = self.shards[(hash as usize) % SHARDS]
            .lock()
            .expect("rate limit shard");
        let mut key = (endpoint, kind, hash);
        if !shard.contains_key(&key) && shard.len() >= self.per_shard {
            shard.retain(|_, tat| *tat > now);
            if shard.len() >= self.per_shard {
                key.2 = OVERFLOW;
            }
        }
        let tat = shard.get(&key).copied().unwrap_or(now).max(now);
        if tat - now > tolerance {
            return Err(Duration::from_nanos(tat - now - tolerance));
        }
        shard.insert(key, tat + interval);
        Ok(())
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// The address a request comes from: the socket's peer, or, when that peer is a trusted proxy,
/// the nearest address in `X-Forwarded-For` that is not one (read from the right: only what
/// trusted proxies appended can be believed; anything to its left the client wrote itself).
pub fn source_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    let mut source = peer.to_canonical();
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        if !is_trusted(source) {
            break;
        }
        match parse_hop(hop.trim()) {
            Some(ip) => source = ip.to_canonical(),
            None => break,
        }
    }
    source
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The key of an address: IPv4 as is, IPv6 by its /64 (one subscriber's, or one host's, block).
pub fn address_key(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets()[..8].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointLimits;

    fn limiter(per_client: u32, max_tracked_keys: usize) -> Limiter {
        Limiter::new(RateLimits {
            max_tracked_keys,
            token: EndpointLimits {
                per_client: Some(per_client),
                per_address: Some(0),
            },
            ..RateLimits::default()
        })
    }

    #[test]
    fn a_burst_of_a_minute_then_one_per_interval() {
        let l = limiter(60, 100);
        for i in 0..60 {
            assert!(
                l.admit(Limited::Token, KeyKind::Client, 1, 60, 0).is_ok(),
                "{i}"
            );
        }
        let wait = l
            .admit(Limited::Token, KeyKind::Client, 1, 60, 0)
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Another key has its own budget.
        assert!(l.admit(Limited::Token, KeyKind::Client, 2, 60, 0).is_ok());
        // One second later, one more.
        assert!(
            l.admit(Limited::Token, KeyKind::Client, 1, 60, 1_000_000_000)
                .is_ok()
        );
        assert!(
            l.admit(Limited::Token, KeyKind::Client, 1, 60, 1_000_000_000)
                .is_err()
        );
    }

    #[test]
    fn the_table_stays_bounded_and_new_keys_then_share_a_budget() {
        let l = limiter(2, 32);
        for key in 0..10_000u64 {
            let _ = l.admit(Limited::Token, KeyKind::Client, key, 2, 0);
        }
        assert!(l.tracked() <= 32 + SHARDS, "{}", l.tracked());
        // Budgets whole again are forgotten to make room: new keys get slots of their own, and
        // beyond them share the overflow budget (2 per minute per shard).
        let admitted = (20_000..20_100u64)
            .filter(|key| {
                l.admit(Limited::Token, KeyKind::Client, *key, 2, 120 * MINUTE_NANOS)
                    .is_ok()
            })
            .count();
        assert!(admitted >= 32, "{admitted}");
        assert!(admitted < 100, "{admitted}");
        assert!(l.tracked() <= 32 + SHARDS);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = vec![IpRange::parse("10.0.0.0/8").unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            source_address(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(source_address(stranger, &headers, &trusted), stranger);
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(source_address(proxy, &headers, &trusted), proxy);
    }
}
