//! Races over separate connections: single use of codes, single successor of refresh tokens, one
//! live grant per user and client. Every task connects first, then all are released at once.

use std::sync::Arc;

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::tokio_postgres::{Client, Config};
use oauth_provider_tests::*;
use tokio::sync::Barrier;

const N: usize = 16;

/// Opens `n` connections, then runs `call` on each at the same instant; answers in task order.
async fn race<F, Fut>(config: &Config, n: usize, call: F) -> Vec<Value>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Value> + Send + 'static,
{
    race_with(config, n, false, call).await
}

/// [`race`]; with `early_clock`, each connection opens its transaction (fixing its `now()`) before
/// the release, as a request that began before a competitor committed.
async fn race_with<F, Fut>(config: &Config, n: usize, early_clock: bool, call: F) -> Vec<Value>
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Value> + Send + 'static,
{
    let mut clients = Vec::new();
    for _ in 0..n {
        let client = connect(config).await;
        if early_clock {
            client.batch_execute("BEGIN; SELECT now()").await.unwrap();
        }
        clients.push(client);
    }
    let barrier = Arc::new(Barrier::new(n));
    let call = Arc::new(call);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            call(client, i).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("racing task panicked"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_code_redeemed_by_16_connections_has_exactly_one_winner_whose_family_is_then_revoked() {
    let (admin, client) = admin_with_client().await;
    for round in 0..3 {
        let auth = authorize(&admin, &client, &unique("user")).await;
        let (c, a) = (client.clone(), auth.clone());
        let answers = race(&gateway_config(), N, move |db, _| {
            let (c, a) = (c.clone(), a.clone());
            async move { exchange(&db, &c, &a).await }
        })
        .await;
        let winners: Vec<&Value> = answers
            .iter()
            .filter(|a| a.get("error").is_none())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one redemption wins: {answers:?}"
        );
        for loser in answers.iter().filter(|a| a.get("error").is_some()) {
            assert_error(loser, "invalid_grant", "losing redemption");
        }
        // Every loser is a replay of a redeemed code: the family the winner got is revoked.
        let family_id = uuid_field(winners[0], "family_id");
        let family = family_row(&admin, family_id).await;
        assert!(
            family.revoked,
            "round {round}: replay revokes the winner's family"
        );
        assert_eq!(family.revoked_reason.as_deref(), Some("code_replayed"));
        let families: i64 = scalar(
            &admin,
            "SELECT count(*) FROM oauth.refresh_families WHERE grant_id = $1",
            &[&uuid_field(winners[0], "grant_id")],
        )
        .await;
        assert_eq!(families, 1, "round {round}: one code opens one family");
        assert_error(
            &rotate(&admin, &client, str_field(winners[0], "refresh_token")).await,
            "invalid_grant",
            "winner's refresh token after the replays",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_token_rotated_by_16_connections_never_yields_two_live_successors() {
    // The strict setting: without a grace window every loser is reuse.
    let db = TempDb::create().await;
    let admin = db.admin().await;
    configure(&admin, "refresh_reuse_grace => '0'").await;
    let client = confidential_client(&admin).await;
    // Rounds 3.. open every transaction before the release, so losers carry an earlier now() than
    // the winner's rotation: with the grace window off that must still count as reuse.
    for round in 0..6 {
        let early_clock = round >= 3;
        let first = tokens_for(&admin, &client, &unique("user")).await;
        let family_id = uuid_field(&first, "family_id");
        let grant_id = uuid_field(&first, "grant_id");
        let token = str_field(&first, "refresh_token").to_owned();
        let c = client.clone();
        let answers = race_with(&db.gateway_config(), N, early_clock, move |db, _| {
            let (c, token) = (c.clone(), token.clone());
            async move {
                let answer = rotate(&db, &c, &token).await;
                if early_clock {
                    db.batch_execute("COMMIT").await.unwrap();
                }
                answer
            }
        })
        .await;
        let successes: Vec<&Value> = answers
            .iter()
            .filter(|a| a.get("error").is_none())
            .collect();
        assert!(
            successes.len() <= 1,
            "round {round}: at most one rotation succeeds: {successes:?}"
        );
        for failure in answers.iter().filter(|a| a.get("error").is_some()) {
            assert_error(failure, "invalid_grant", "losing rotation");
        }
        let family = family_row(&admin, family_id).await;
        // Never two live successors: the family row holds the one live token (no row per token),
        // and if the family is still live its current token is the one success.
        assert_eq!(family.token_count, 0, "round {round}: {family:?}");
        assert!(family.generation <= 1, "round {round}: {family:?}");
        if successes.len() == 1 && answers.len() > 1 {
            // The losers presented a rotated token: reuse, so family and grant are revoked.
            assert!(
                family.revoked,
                "round {round}: reuse after the rotation revokes the family"
            );
            assert!(
                !grant_live(&admin, grant_id).await,
                "round {round}: and the grant"
            );
            assert_error(
                &rotate(&admin, &client, str_field(successes[0], "refresh_token")).await,
                "invalid_grant",
                "the one successor after reuse",
            );
        }
        if !family.revoked {
            assert_eq!(
                family.current_hash,
                successes
                    .first()
                    .map(|s| sha256(str_field(s, "refresh_token"))),
                "round {round}"
            );
        }
        let live_successors: i64 = row_count(&admin, "oauth.refresh_families f JOIN oauth.grants g USING (grant_id)
                  WHERE f.grant_id = $1 AND f.revoked_at IS NULL AND g.revoked_at IS NULL AND f.current_hash IS NOT NULL", &[&grant_id]).await;
        assert!(live_successors <= 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_presentations_of_one_token_all_succeed_with_one_live_successor() {
    // MCP clients refresh from parallel tool calls: one token presented by 16 connections at once,
    // with the default settings, all get the same successor; the grant stays.
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let client = confidential_client(&admin).await;
    for round in 0..3 {
        let first = tokens_for(&admin, &client, &unique("user")).await;
        let family_id = uuid_field(&first, "family_id");
        let grant_id = uuid_field(&first, "grant_id");
        let token = str_field(&first, "refresh_token").to_owned();
        let (c, t) = (client.clone(), token.clone());
        let answers = race(&db.gateway_config(), N, move |db, _| {
            let (c, t) = (c.clone(), t.clone());
            async move { rotate(&db, &c, &t).await }
        })
        .await;
        for answer in &answers {
            assert_ok(
                answer,
                &format!("round {round}: every presentation succeeds"),
            );
        }
        let successors: std::collections::BTreeSet<&str> = answers
            .iter()
            .map(|a| str_field(a, "refresh_token"))
            .collect();
        assert_eq!(
            successors.len(),
            1,
            "round {round}: one successor for all: {successors:?}"
        );
        let successor = successors.into_iter().next().unwrap().to_owned();
        let family = family_row(&admin, family_id).await;
        assert!(!family.revoked, "round {round}: {family:?}");
        assert_eq!(family.generation, 1, "round {round}: one rotation");
        assert_eq!(family.current_hash, Some(sha256(&successor)));
        assert!(grant_live(&admin, grant_id).await, "round {round}");
        assert!(is_active(
            &introspect_refresh(&admin, &client, &successor).await
        ));
        assert!(!is_active(
            &introspect_refresh(&admin, &client, &token).await
        ));
        // Past the window the retired token is reuse again: family and grant are revoked.
        assert_error(
            &rotate_after_grace(&admin, &client, &token).await,
            "invalid_grant",
            "the burst's token after the window",
        );
        assert!(family_row(&admin, family_id).await.revoked, "round {round}");
        assert!(!grant_live(&admin, grant_id).await, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_consents_for_one_user_and_client_converge_on_one_grant() {
    let (admin, client) = admin_with_client().await;
    let user = unique("user");
    let mut requests = Vec::new();
    for i in 0..N {
        let scope = if i % 2 == 0 { "mcp" } else { "email" };
        let begun = begin_authorization(
            &admin,
            &authorize_params(&client, &Pkce::new(), json!({"scope": scope})),
        )
        .await;
        requests.push(str_field(&begun, "request_id").to_owned());
    }
    let requests = Arc::new(requests);
    let u = user.clone();
    let answers = race(&gateway_config(), N, move |db, i| {
        let (requests, u) = (requests.clone(), u.clone());
        async move { json!(issue_code(&db, &requests[i], &u, None, &json!({})).await) }
    })
    .await;
    assert_eq!(answers.len(), N);
    let grants = admin
        .query("SELECT scopes FROM oauth.list_user_grants($1)", &[&user])
        .await
        .unwrap();
    assert_eq!(grants.len(), 1, "one live grant");
    assert_eq!(grants[0].get::<_, Vec<String>>(0), vec!["email", "mcp"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_authorization_request_completed_by_16_connections_yields_one_code() {
    let (admin, client) = admin_with_client().await;
    let begun =
        begin_authorization(&admin, &authorize_params(&client, &Pkce::new(), json!({}))).await;
    let request_id = str_field(&begun, "request_id").to_owned();
    let mut clients = Vec::new();
    for _ in 0..N {
        clients.push(connect(&gateway_config()).await);
    }
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for (i, db) in clients.into_iter().enumerate() {
        let (barrier, request_id) = (barrier.clone(), request_id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            db.query_one(
                "SELECT oauth.issue_code($1, $2)",
                &[&request_id, &format!("user{i}")],
            )
            .await
            .map(|r| r.get::<_, String>(0))
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(
                e.as_db_error().map(|d| d.code().code()),
                Some("OA411"),
                "{e:?}"
            ),
        }
    }
    assert_eq!(ok, 1, "a request completes once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_runs_while_traffic_flows() {
    let (admin, client) = admin_with_client().await;
    let traffic = {
        let client = client.clone();
        tokio::spawn(async move {
            let db = connect(&gateway_config()).await;
            for _ in 0..20 {
                let tokens = tokens_for(&db, &client, &unique("user")).await;
                let next = rotate(&db, &client, str_field(&tokens, "refresh_token")).await;
                assert_ok(&next, "rotation during cleanup");
            }
        })
    };
    let cleaner = tokio::spawn(async move {
        let db = admin;
        for _ in 0..20 {
            db.query_one("SELECT oauth.cleanup()", &[])
                .await
                .expect("cleanup during traffic");
        }
    });
    traffic.await.expect("traffic");
    cleaner.await.expect("cleanup");
}
