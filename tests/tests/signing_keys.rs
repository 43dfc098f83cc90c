//! Signing keys shared through the database and their rotation: a key is published before it may
//! sign (its lead), promotion retires its predecessor at that moment, a retired key stays published
//! until every token it signed has expired and may only then be dropped (or at once, forced), and
//! the gateway role reads the sealed keys but changes none. Each test has a database of its own:
//! which key is current is the whole database's state. Time is the functions' `now` argument.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

struct Deployment {
    admin: Client,
    gateway: Client,
    _db: TempDb,
}

impl Deployment {
    async fn new() -> Self {
        let db = TempDb::create().await;
        Self {
            admin: db.admin().await,
            gateway: db.gateway().await,
            _db: db,
        }
    }

    async fn add(&self, kid: &str, alg: &str, lead: &str, at: &str) -> Value {
        scalar(
            &self.admin,
            "SELECT oauth.add_signing_key($1, $2, $3, '\\x0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d'::bytea,
                                          'kek-1', $4::text::interval, $5::text::timestamptz)",
            &[&kid, &alg, &json!({"kty": "EC", "crv": "P-256", "x": kid, "y": kid}), &lead, &at],
        )
        .await
    }

    async fn promote(&self, kid: &str, at: &str) -> Value {
        scalar(
            &self.admin,
            "SELECT oauth.promote_signing_key($1, $2::text::timestamptz)",
            &[&kid, &at],
        )
        .await
    }

    /// (kid, state) of what the gateway loads at `at`, in its order.
    async fn loaded(&self, at: &str) -> Vec<(String, String)> {
        self.gateway
            .query(
                "SELECT kid, state FROM oauth.signing_keys($1::text::timestamptz)",
                &[&at],
            )
            .await
            .expect("gateway reads the signing keys")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    async fn state_of(&self, kid: &str, at: &str) -> Option<String> {
        self.admin
            .query_opt(
                "SELECT state FROM oauth.list_signing_keys($2::text::timestamptz) WHERE kid = $1",
                &[&kid, &at],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect()
}

#[tokio::test]
async fn a_key_signs_only_after_its_lead_and_its_predecessor_stays_published_until_its_tokens_expire()
 {
    let d = Deployment::new().await;
    let t0 = "2030-01-01 00:00:00+00";
    // The first key of a deployment: no lead, promoted at once.
    d.add("k1", "ES256", "0", t0).await;
    assert_eq!(d.loaded(t0).await, pairs(&[("k1", "next")]));
    let promoted = d.promote("k1", t0).await;
    assert_eq!(promoted["kid"], json!("k1"));
    assert_eq!(d.loaded(t0).await, pairs(&[("k1", "current")]));

    // The next key: published a day later with a one-hour lead, promoted at once.
    let added = d
        .add("k2", "ES256", "1 hour", "2030-01-02 00:00:00+00")
        .await;
    let lead_ends: bool = scalar(
        &d.admin,
        "SELECT ($1::jsonb->>'signs_not_before')::timestamptz = '2030-01-02 01:00:00+00'",
        &[&added],
    )
    .await;
    assert!(lead_ends, "{added}");
    let promoted = d.promote("k2", "2030-01-02 00:10:00+00").await;
    let at_lead_end: bool = scalar(
        &d.admin,
        "SELECT ($1::jsonb->>'signs_from')::timestamptz = '2030-01-02 01:00:00+00'",
        &[&promoted],
    )
    .await;
    assert!(
        at_lead_end,
        "promoted before its lead ran out, it signs from the lead's end: {promoted}"
    );
    // Within the lead the old key signs on and the new one is published beside it.
    assert_eq!(
        d.loaded("2030-01-02 00:59:59+00").await,
        pairs(&[("k1", "current"), ("k2", "next")])
    );
    // From then on the new key signs; the old one is still published for its tokens.
    assert_eq!(
        d.loaded("2030-01-02 01:00:00+00").await,
        pairs(&[("k2", "current"), ("k1", "retired")])
    );
    let until: bool = scalar(
        &d.admin,
        "SELECT published_until = '2030-01-03 01:05:00+00' AND retired_at = '2030-01-02 01:00:00+00'
           FROM oauth.list_signing_keys('2030-01-02 02:00:00+00') WHERE kid = 'k1'",
        &[],
    )
    .await;
    assert!(
        until,
        "published for a day (the longest token life) and five minutes after it retired"
    );
    // Dropping it while its tokens may be in use is refused; once they cannot be, it goes.
    assert_sqlstate(
        d.admin
            .query(
                "SELECT oauth.drop_signing_key('k1', false, '2030-01-03 01:04:59+00')",
                &[],
            )
            .await,
        "OA400",
        "drop while its tokens may live",
    );
    assert_eq!(
        d.loaded("2030-01-03 01:05:00+00").await,
        pairs(&[("k2", "current")]),
        "after its afterlife it is no longer published"
    );
    let dropped: bool = scalar(
        &d.admin,
        "SELECT oauth.drop_signing_key('k1', false, '2030-01-03 01:05:00+00')",
        &[],
    )
    .await;
    assert!(dropped);
    assert_eq!(
        d.state_of("k1", "2030-01-03 01:05:00+00").await,
        None,
        "gone"
    );
    // A current key cannot be dropped without force.
    assert_sqlstate(
        d.admin
            .query(
                "SELECT oauth.drop_signing_key('k2', false, '2030-01-04 00:00:00+00')",
                &[],
            )
            .await,
        "OA400",
        "drop the current key",
    );

    let kinds: Vec<String> = column(
        &d.admin,
        "SELECT kind || ':' || (detail->>'kid') FROM oauth.events
          WHERE kind LIKE 'signing_key_%' ORDER BY event_id",
        &[],
    )
    .await;
    assert_eq!(
        kinds,
        [
            "signing_key_added:k1",
            "signing_key_promoted:k1",
            "signing_key_added:k2",
            "signing_key_promoted:k2",
            "signing_key_dropped:k1"
        ]
    );
    let leaked: i64 = scalar(
        &d.admin,
        "SELECT count(*) FROM oauth.events WHERE kind LIKE 'signing_key_%' AND detail::text LIKE '%kek-1%'",
        &[],
    )
    .await;
    assert_eq!(leaked, 0, "events name keys, not their sealing");
}

#[tokio::test]
async fn each_algorithm_has_its_own_current_key_and_the_latest_promoted_leads() {
    let d = Deployment::new().await;
    let t0 = "2030-01-01 00:00:00+00";
    d.add("es", "ES256", "0", t0).await;
    d.add("rs", "RS256", "0", t0).await;
    d.promote("es", t0).await;
    d.promote("rs", "2030-01-01 00:01:00+00").await;
    // Both current (an ID token of either algorithm has a key); the latest promoted first: it
    // signs access tokens.
    assert_eq!(
        d.loaded("2030-01-01 00:02:00+00").await,
        pairs(&[("rs", "current"), ("es", "current")])
    );
    // Promoting two keys of one algorithm for the same instant: the second waits its turn, so
    // exactly one is current at any time.
    d.add("es2", "ES256", "0", t0).await;
    d.add("es3", "ES256", "0", t0).await;
    d.promote("es2", "2030-01-01 00:03:00+00").await;
    let second = d.promote("es3", "2030-01-01 00:03:00+00").await;
    let later: bool = scalar(
        &d.admin,
        "SELECT ($1::jsonb->>'signs_from')::timestamptz > '2030-01-01 00:03:00+00'",
        &[&second],
    )
    .await;
    assert!(later, "{second}");
    let current: Vec<(String, String)> = d
        .loaded("2030-01-01 00:04:00+00")
        .await
        .into_iter()
        .filter(|(_, s)| s == "current")
        .collect();
    assert_eq!(current, pairs(&[("es3", "current"), ("rs", "current")]));
}

#[tokio::test]
async fn bad_keys_and_bad_steps_are_refused_and_a_leaked_key_can_be_dropped_at_once() {
    let d = Deployment::new().await;
    let t0 = "2030-01-01 00:00:00+00";
    d.add("k1", "ES256", "0", t0).await;
    assert_sqlstate(
        d.admin
            .query(
                "SELECT oauth.add_signing_key('k1', 'ES256', '{}', decode(repeat('ab', 40), 'hex'), 'kek', '0')",
                &[],
            )
            .await,
        "OA400",
        "the same kid again",
    );
    assert_sqlstate(
        d.admin
            .query(
                "SELECT oauth.add_signing_key('k9', 'ES256', '{}', decode(repeat('ab', 40), 'hex'), 'kek', '-1 second')",
                &[],
            )
            .await,
        "OA400",
        "a negative lead",
    );
    assert_sqlstate(
        d.admin
            .query(
                "SELECT oauth.add_signing_key('k9', 'ES256', '{\"d\": \"secret\"}', decode(repeat('ab', 40), 'hex'), 'kek', '0')",
                &[],
            )
            .await,
        "OA400",
        "a private member in the public key",
    );
    assert_sqlstate(
        d.admin
            .query(
                "SELECT oauth.add_signing_key('k9', 'HS256', '{}', decode(repeat('ab', 40), 'hex'), 'kek', '0')",
                &[],
            )
            .await,
        "23514",
        "a symmetric algorithm",
    );
    assert_sqlstate(
        d.admin
            .query("SELECT oauth.promote_signing_key('nope')", &[])
            .await,
        "OA411",
        "an unknown key",
    );
    d.promote("k1", t0).await;
    assert_sqlstate(
        d.admin
            .query("SELECT oauth.promote_signing_key('k1')", &[])
            .await,
        "OA400",
        "promoted twice",
    );
    // After a compromise: forced, the current key leaves the JWKS now.
    let dropped: bool = scalar(
        &d.admin,
        "SELECT oauth.drop_signing_key('k1', true, $1::text::timestamptz)",
        &[&t0],
    )
    .await;
    assert!(dropped);
    assert!(d.loaded(t0).await.is_empty());
    let unknown: bool = scalar(&d.admin, "SELECT oauth.drop_signing_key('k1')", &[]).await;
    assert!(!unknown);

    // The gateway role reads the sealed keys and changes none.
    for call in [
        "SELECT oauth.add_signing_key('k5', 'ES256', '{}', decode(repeat('ab', 40), 'hex'), 'kek', '0')",
        "SELECT oauth.promote_signing_key('k5')",
        "SELECT oauth.drop_signing_key('k5', true)",
        "SELECT * FROM oauth.list_signing_keys()",
        "SELECT * FROM oauth.signing_keys AS t",
        "DELETE FROM oauth.signing_keys",
    ] {
        assert_sqlstate(d.gateway.query(call, &[]).await, "42501", call);
    }
}
