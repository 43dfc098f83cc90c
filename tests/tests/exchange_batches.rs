//! `oauth.exchange_codes`: the gateway's coalesced code exchanges. Each element is decided as a
//! call of `oauth.exchange_code` of its own would be, answers keep the order of the arguments, one
//! element's failure is its own, and batches presenting the same codes in opposite orders on two
//! connections lock them in one order (they never deadlock).

use oauth_provider_tests::serde_json::Value;
use oauth_provider_tests::*;

async fn exchange_batch(
    db: &tokio_postgres::Client,
    batch: &[(&Authorized, Option<&str>)],
) -> Value {
    let ids: Vec<&str> = batch.iter().map(|(a, _)| a.client_id.as_str()).collect();
    let secrets: Vec<Option<&str>> = batch
        .iter()
        .map(|(a, _)| a.client_secret.as_deref())
        .collect();
    let codes: Vec<&str> = batch.iter().map(|(a, _)| a.code.as_str()).collect();
    let verifiers: Vec<&str> = batch
        .iter()
        .map(|(a, wrong)| wrong.unwrap_or(a.pkce.verifier.as_str()))
        .collect();
    let redirects: Vec<&str> = batch.iter().map(|(a, _)| a.redirect_uri.as_str()).collect();
    let resources: Vec<Option<&str>> = vec![None; batch.len()];
    scalar(
        db,
        "SELECT oauth.exchange_codes($1, $2, $3, $4, $5, $6)",
        &[&ids, &secrets, &codes, &verifiers, &redirects, &resources],
    )
    .await
}

#[tokio::test]
async fn each_code_gets_its_own_answer_in_order_and_a_bad_one_fails_alone() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let mut auths = Vec::new();
    let mut users = Vec::new();
    for _ in 0..4 {
        let user = unique("user");
        auths.push(authorize(&admin, &client, &user).await);
        users.push(user);
    }
    let wrong = "w".repeat(43);
    let answers = exchange_batch(
        &gw,
        &[
            (&auths[0], None),
            (&auths[1], Some(&wrong)),
            (&auths[2], None),
            (&auths[3], None),
            // The first code again in the same batch: a replay, exactly as two calls would be.
            (&auths[0], None),
        ],
    )
    .await;
    let answers = answers.as_array().expect("an array");
    assert_eq!(answers.len(), 5);
    for i in [0, 2, 3] {
        assert_ok(&answers[i], "a good code");
        assert_eq!(
            answers[i]["user_id"],
            users[i].as_str(),
            "answer {i} is its own"
        );
    }
    assert_error(&answers[1], "invalid_grant", "a wrong verifier");
    assert_error(&answers[4], "invalid_grant", "the same code twice");
    // The replay revoked what the first redemption issued (RFC 6749 §4.1.2), as two calls would.
    let family = uuid_field(&answers[0], "family_id");
    assert!(family_row(&admin, family).await.revoked);
    assert!(
        !family_row(&admin, uuid_field(&answers[2], "family_id"))
            .await
            .revoked
    );

    let uneven = gw
        .query_one(
            "SELECT oauth.exchange_codes('{a,b}', '{NULL}', '{x,y}', '{v,w}', '{NULL,NULL}', '{NULL,NULL}')",
            &[],
        )
        .await;
    assert_eq!(sqlstate(uneven), "OA400");
}

#[tokio::test]
async fn batches_with_the_same_codes_in_opposite_orders_do_not_deadlock() {
    let (admin, client) = admin_with_client().await;
    for _round in 0..5 {
        let mut auths = Vec::new();
        for _ in 0..8 {
            auths.push(authorize(&admin, &client, &unique("user")).await);
        }
        let forward: Vec<(&Authorized, Option<&str>)> = auths.iter().map(|a| (a, None)).collect();
        let backward: Vec<(&Authorized, Option<&str>)> = forward.iter().rev().copied().collect();
        let (one, two) = (gateway().await, gateway().await);
        let (a, b) = tokio::join!(
            exchange_batch(&one, &forward),
            exchange_batch(&two, &backward)
        );
        // Every code redeemed once in all: one batch won each, the other saw a replay.
        let ok = a
            .as_array()
            .unwrap()
            .iter()
            .chain(b.as_array().unwrap())
            .filter(|answer| answer.get("error").is_none())
            .count();
        assert_eq!(ok, 8);
    }
}
