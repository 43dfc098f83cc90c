//! Concurrent refreshes coalesced into one database call (`db::batch`): under load they share
//! transactions, each request still gets its own answer, a bad element fails alone, and when the
//! batch call itself fails every element is answered by a call of its own.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hyper::StatusCode;
use oauth_gateway::db::RefreshBatching;

const CHAINS: usize = 48;
const ROUNDS: usize = 3;

/// One batch at a time: while it runs, the next accumulates.
async fn batching_gateway() -> Arc<Gateway> {
    let gw = Gateway::start_with(Options {
        adjust: Some(Box::new(|config| {
            config.refresh_batching = RefreshBatching {
                in_flight: 1,
                max_size: 64,
            };
        })),
        ..Options::default()
    })
    .await;
    Arc::new(gw)
}

async fn chains(gw: &Gateway, client_id: &str, n: usize) -> Vec<String> {
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let issued = gw.code_flow(&Authorization::new(client_id)).await.json();
        tokens.push(issued["refresh_token"].as_str().unwrap().to_owned());
    }
    tokens
}

/// Records the transaction of every rotation (a trigger on the families' generation), so a test
/// can count the transactions a number of refreshes took.
async fn note_rotation_transactions(gw: &Gateway) {
    gw.admin
        .batch_execute(
            "CREATE TABLE public.rotation_xacts (xid xid8 NOT NULL);
             CREATE FUNCTION public.note_rotation() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.rotation_xacts VALUES (pg_catalog.pg_current_xact_id());
                 RETURN NEW;
             END $$;
             CREATE TRIGGER note_rotation AFTER UPDATE OF generation ON oauth.refresh_families
                 FOR EACH ROW EXECUTE FUNCTION public.note_rotation();",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_share_transactions_and_each_gets_its_own_successor() {
    let gw = batching_gateway().await;
    note_rotation_transactions(&gw).await;
    let (second, second_base) = gw.second().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let mut tokens = chains(&gw, &client_id, CHAINS).await;

    for round in 0..ROUNDS {
        let responses = at_once(CHAINS, |i| {
            let (gw, token, client_id, base) = (
                gw.clone(),
                tokens[i].clone(),
                client_id.clone(),
                second_base.clone(),
            );
            async move {
                let body = TokenRequest::refresh(&client_id, &token).body();
                gw.http.post_raw(&format!("{base}/token"), FORM, body).await
            }
        })
        .await;
        let mut successors = BTreeSet::new();
        for (i, r) in responses.iter().enumerate() {
            assert_eq!(r.status, StatusCode::OK, "round {round}: {}", r.text());
            assert_eq!(r.header("cache-control"), Some("no-store"));
            let next = r.json()["refresh_token"].as_str().unwrap().to_owned();
            assert_ne!(next, tokens[i], "round {round}: rotated");
            successors.insert(next.clone());
            tokens[i] = next;
        }
        assert_eq!(
            successors.len(),
            CHAINS,
            "round {round}: one successor per chain"
        );
    }
    let live: i64 = gw
        .sql_value(
            "SELECT count(*) FROM oauth.refresh_families
              WHERE client_id = $1 AND revoked_at IS NULL AND generation = $2",
            &[&client_id, &(ROUNDS as i32)],
        )
        .await;
    assert_eq!(
        live, CHAINS as i64,
        "every family rotated once per round, none revoked"
    );
    // The last successors are the live tokens.
    for token in tokens.iter().take(3) {
        assert_eq!(gw.refresh(&client_id, token).await.status, StatusCode::OK);
    }

    let requests = (CHAINS * ROUNDS) as i64;
    let (rotations, transactions): (i64, i64) = {
        let row = gw
            .admin
            .query_one(
                "SELECT count(*), count(DISTINCT xid) FROM public.rotation_xacts",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    println!("{requests} concurrent refreshes took {transactions} transactions");
    assert!(
        rotations >= requests,
        "{rotations} rotations for {requests} requests"
    );
    assert!(
        transactions * 2 <= requests,
        "{requests} concurrent refreshes took {transactions} transactions"
    );
    second.shutdown(Duration::from_secs(2)).await;
    Gateway::stop_shared(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_element_fails_alone_inside_a_batch() {
    let gw = batching_gateway().await;
    let client_id = gw.public_client(&["mcp"]).await;
    let other = gw.public_client(&["mcp"]).await;
    let confidential = gw.confidential_client(&["mcp"]).await;
    let good = chains(&gw, &client_id, 24).await;
    let foreign = chains(&gw, &other, 1).await.remove(0);
    let authorization = Authorization::new(&confidential.id);
    let code = gw.code(&authorization).await;
    let confidential_token = gw
        .token(&TokenRequest {
            authorization: &confidential.basic(),
            ..TokenRequest::redeem(&authorization, &code)
        })
        .await
        .json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    // Request i: 0..24 good, 24..32 a forgery, 32..40 another client's token, 40..48 a wrong
    // client secret, all at once.
    let responses = at_once(48, |i| {
        let gw = gw.clone();
        let (client_id, good, foreign, confidential_id, confidential_token) = (
            client_id.clone(),
            good.get(i).cloned(),
            foreign.clone(),
            confidential.id.clone(),
            confidential_token.clone(),
        );
        async move {
            let wrong_secret = basic(&confidential_id, "not-the-secret");
            let request = match i {
                0..24 => TokenRequest::refresh(&client_id, good.as_deref().unwrap()),
                24..32 => TokenRequest::refresh(&client_id, "not-a-refresh-token"),
                32..40 => TokenRequest::refresh(&client_id, &foreign),
                _ => TokenRequest {
                    client_id: "",
                    authorization: &wrong_secret,
                    ..TokenRequest::refresh("", &confidential_token)
                },
            };
            gw.token(&request).await
        }
    })
    .await;
    for (i, r) in responses.iter().enumerate() {
        match i {
            0..24 => assert_eq!(r.status, StatusCode::OK, "{i}: {}", r.text()),
            24..40 => r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "a bad token"),
            _ => r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "a wrong secret"),
        }
    }
    // Nothing the failures touched changed: the other client's chain and the confidential one
    // still rotate for their owners.
    assert_eq!(gw.refresh(&other, &foreign).await.status, StatusCode::OK);
    let rotated = gw
        .token(&TokenRequest {
            client_id: "",
            authorization: &confidential.basic(),
            ..TokenRequest::refresh("", &confidential_token)
        })
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.text());
    Gateway::stop_shared(gw).await;
}

/// A batch call that fails as a whole (here: the batch function is not granted, as with an
/// extension older than the gateway) rotates nothing, and each request is answered by a call of
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_batch_call_fails_each_request_is_answered_by_its_own_call() {
    let gw = batching_gateway().await;
    gw.admin
        .batch_execute(
            "REVOKE EXECUTE ON FUNCTION oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz, text[]) FROM oauth_gateway",
        )
        .await
        .unwrap();
    let client_id = gw.public_client(&["mcp"]).await;
    let tokens = chains(&gw, &client_id, 32).await;
    let responses = at_once(32, |i| {
        let (gw, client_id, token) = (gw.clone(), client_id.clone(), tokens[i].clone());
        async move { gw.refresh(&client_id, &token).await }
    })
    .await;
    for r in &responses {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    let live: i64 = gw
        .sql_value(
            "SELECT count(*) FROM oauth.refresh_families
              WHERE client_id = $1 AND revoked_at IS NULL AND generation = 1",
            &[&client_id],
        )
        .await;
    assert_eq!(live, 32);
    Gateway::stop_shared(gw).await;
}

/// Code exchanges go through the same coalescing (`oauth.exchange_codes`): concurrent ones share
/// transactions, and each gets its own tokens or its own error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_code_exchanges_share_transactions_and_each_gets_its_own_answer() {
    const FLOWS: usize = 40;
    let gw = batching_gateway().await;
    gw.admin
        .batch_execute(
            "CREATE TABLE public.exchange_xacts (xid xid8 NOT NULL);
             CREATE FUNCTION public.note_exchange() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.exchange_xacts VALUES (pg_catalog.pg_current_xact_id());
                 RETURN NEW;
             END $$;
             CREATE TRIGGER note_exchange AFTER INSERT ON oauth.refresh_families
                 FOR EACH ROW EXECUTE FUNCTION public.note_exchange();",
        )
        .await
        .unwrap();
    let client_id = gw.public_client(&["mcp"]).await;
    let authorizations: Vec<Authorization> =
        (0..FLOWS).map(|_| Authorization::new(&client_id)).collect();
    let mut codes = Vec::new();
    for authorization in &authorizations {
        codes.push(gw.code(authorization).await);
    }
    let presented: Vec<(String, String)> = authorizations
        .iter()
        .zip(&codes)
        .enumerate()
        .map(|(i, (authorization, code))| {
            // Every fourth one presents a wrong verifier: refused alone.
            let verifier = if i % 4 == 3 {
                "x".repeat(43)
            } else {
                authorization.pkce.verifier.clone()
            };
            (code.clone(), verifier)
        })
        .collect();
    let responses = at_once(FLOWS, |i| {
        let (gw, client_id, (code, verifier)) =
            (gw.clone(), client_id.clone(), presented[i].clone());
        async move {
            gw.token(&TokenRequest {
                grant_type: "authorization_code",
                code: &code,
                code_verifier: &verifier,
                redirect_uri: CALLBACK,
                client_id: &client_id,
                ..TokenRequest::default()
            })
            .await
        }
    })
    .await;
    let mut refresh_tokens = BTreeSet::new();
    for (i, r) in responses.iter().enumerate() {
        if i % 4 == 3 {
            r.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "a wrong verifier");
        } else {
            assert_eq!(r.status, StatusCode::OK, "{i}: {}", r.text());
            refresh_tokens.insert(r.json()["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        refresh_tokens.len(),
        FLOWS - FLOWS / 4,
        "one family per code"
    );
    let (families, transactions): (i64, i64) = {
        let row = gw
            .admin
            .query_one(
                "SELECT count(*), count(DISTINCT xid) FROM public.exchange_xacts",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    println!("{FLOWS} concurrent code exchanges took {transactions} transactions");
    assert_eq!(families, (FLOWS - FLOWS / 4) as i64);
    assert!(
        transactions * 2 <= families,
        "{families} concurrent exchanges took {transactions} transactions"
    );
    Gateway::stop_shared(gw).await;
}
