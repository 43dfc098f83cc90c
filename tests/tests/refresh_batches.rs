//! `oauth.rotate_refresh_tokens`: the gateway's coalesced refreshes. Each element is decided as a
//! call of its own would be; answers keep the order of the arguments; one element's failure is its
//! own; batches on different connections lock families in one order, so they never deadlock.

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

struct Element<'a> {
    client: &'a TestClient,
    token: String,
    scope: Option<&'a str>,
    resource: Option<&'a str>,
}

impl<'a> Element<'a> {
    fn of(client: &'a TestClient, token: &str) -> Self {
        Element {
            client,
            token: token.to_owned(),
            scope: None,
            resource: None,
        }
    }
}

async fn rotate_batch(db: &tokio_postgres::Client, batch: &[Element<'_>]) -> Vec<Value> {
    let ids: Vec<&str> = batch.iter().map(|e| e.client.id.as_str()).collect();
    let secrets: Vec<Option<&str>> = batch.iter().map(|e| e.client.secret()).collect();
    let tokens: Vec<&str> = batch.iter().map(|e| e.token.as_str()).collect();
    let scopes: Vec<Option<&str>> = batch.iter().map(|e| e.scope).collect();
    let resources: Vec<Option<&str>> = batch.iter().map(|e| e.resource).collect();
    let answer: Value = db
        .query_one(
            "SELECT oauth.rotate_refresh_tokens($1, $2, $3, $4, $5)",
            &[&ids, &secrets, &tokens, &scopes, &resources],
        )
        .await
        .expect("rotate_refresh_tokens")
        .get(0);
    let answers = answer.as_array().expect("a jsonb array").clone();
    assert_eq!(answers.len(), batch.len(), "one answer per element");
    answers
}

#[tokio::test]
async fn each_element_gets_its_own_answer_in_the_order_given() {
    let (admin, client) = admin_with_client().await;
    let other = confidential_client(&admin).await;
    let gw = gateway().await;
    let mut families = Vec::new();
    for _ in 0..5 {
        let issued = tokens_for(&admin, &client, &unique("user")).await;
        families.push((
            uuid_field(&issued, "family_id"),
            str_field(&issued, "refresh_token").to_owned(),
        ));
    }
    let foreign = str_field(
        &tokens_for(&admin, &other, &unique("user")).await,
        "refresh_token",
    )
    .to_owned();

    // A forgery, another client's token, a scope beyond the grant: each fails alone.
    let mut widened = Element::of(&client, &families[4].1);
    widened.scope = Some("mcp admin");
    let batch = vec![
        Element::of(&client, &families[0].1),
        Element::of(&client, &families[1].1),
        Element::of(&client, "not-a-refresh-token"),
        Element::of(&client, &families[2].1),
        Element::of(&client, &foreign),
        Element::of(&client, &families[3].1),
        widened,
    ];
    let answers = rotate_batch(&gw, &batch).await;
    assert_error(&answers[2], "invalid_grant", "a forgery");
    assert_error(&answers[4], "invalid_grant", "another client's token");
    assert_error(&answers[6], "invalid_scope", "a wider scope");
    let rotated: Vec<&Value> = [0, 1, 3, 5].iter().map(|&i| &answers[i]).collect();
    for (answer, (family_id, token)) in rotated.iter().zip(&families) {
        assert_ok(answer, "a good element");
        assert_eq!(
            answer["family_id"],
            json!(family_id.to_string()),
            "order kept"
        );
        let successor = str_field(answer, "refresh_token");
        assert_ne!(successor, token);
        assert_eq!(
            family_row(&admin, *family_id).await.current_hash,
            Some(sha256(successor)),
            "the answered successor is the family's live token"
        );
        assert_ok(
            &rotate(&gw, &client, successor).await,
            "the successor rotates",
        );
    }
    // The element refused for its scope rotated nothing: its token is still live.
    assert_ok(
        &rotate(&gw, &client, &families[4].1).await,
        "the refused element's token",
    );
    let foreign_still_live = rotate(&gw, &other, &foreign).await;
    assert_ok(
        &foreign_still_live,
        "another client's token, presented by it",
    );
}

#[tokio::test]
async fn one_token_twice_in_a_batch_gets_one_successor_for_both() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let issued = tokens_for(&admin, &client, &unique("user")).await;
    let family_id = uuid_field(&issued, "family_id");
    let grant_id = uuid_field(&issued, "grant_id");
    let token = str_field(&issued, "refresh_token").to_owned();
    let answers = rotate_batch(
        &gw,
        &[
            Element::of(&client, &token),
            Element::of(&client, &token),
            Element::of(&client, &token),
        ],
    )
    .await;
    for answer in &answers {
        assert_ok(answer, "a parallel presentation inside the window");
    }
    let successor = str_field(&answers[0], "refresh_token");
    assert!(
        answers
            .iter()
            .all(|a| a["refresh_token"] == json!(successor))
    );
    let family = family_row(&admin, family_id).await;
    assert_eq!(family.generation, 1, "rotated once");
    assert_eq!(family.current_hash, Some(sha256(successor)));
    assert!(grant_live(&admin, grant_id).await);
}

#[tokio::test]
async fn a_token_rotated_long_ago_in_a_batch_is_reuse_and_revokes_only_its_own_grant() {
    let (admin, client) = admin_with_client().await;
    let gw = gateway().await;
    let stolen = tokens_for(&admin, &client, &unique("user")).await;
    let innocent = tokens_for(&admin, &client, &unique("user")).await;
    let r0 = str_field(&stolen, "refresh_token").to_owned();
    let r1 = str_field(&rotate(&gw, &client, &r0).await, "refresh_token").to_owned();
    let later: String = gw
        .query_one("SELECT (now() + interval '61 seconds')::text", &[])
        .await
        .unwrap()
        .get(0);
    let ids = vec![client.id.as_str(); 2];
    let secrets = vec![client.secret(); 2];
    let tokens = vec![r0.as_str(), str_field(&innocent, "refresh_token")];
    let none: Vec<Option<&str>> = vec![None, None];
    let answer: Value = gw
        .query_one(
            "SELECT oauth.rotate_refresh_tokens($1, $2, $3, $4, $5, $6::text::timestamptz)",
            &[&ids, &secrets, &tokens, &none, &none, &later],
        )
        .await
        .unwrap()
        .get(0);
    assert_error(&answer[0], "invalid_grant", "reuse");
    assert_ok(&answer[1], "the other element");
    assert!(!grant_live(&admin, uuid_field(&stolen, "grant_id")).await);
    assert!(grant_live(&admin, uuid_field(&innocent, "grant_id")).await);
    assert_error(
        &rotate(&gw, &client, &r1).await,
        "invalid_grant",
        "the stolen family's live token after reuse",
    );
}

#[tokio::test]
async fn arrays_of_different_lengths_are_refused() {
    let gw = gateway().await;
    let result = gw
        .query_one(
            "SELECT oauth.rotate_refresh_tokens('{a,b}', '{NULL}', '{x,y}', '{NULL,NULL}', '{NULL,NULL}')",
            &[],
        )
        .await;
    assert_eq!(sqlstate(result), "OA400", "invalid_request, raised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_over_the_same_families_in_opposite_orders_never_deadlock() {
    // Two connections each rotate the same 40 families in one transaction, one listing them in
    // ascending order, the other in descending; both hold their locks until commit. Without one
    // lock order across batches this deadlocks (40P01) in most rounds.
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let client = create_client(&admin, ClientSpec::public_native()).await;
    for round in 0..5 {
        let mut tokens = Vec::new();
        for _ in 0..40 {
            let issued = tokens_for(&admin, &client, &unique("user")).await;
            tokens.push(str_field(&issued, "refresh_token").to_owned());
        }
        let mut reversed = tokens.clone();
        reversed.reverse();
        let mut handles = Vec::new();
        for order in [tokens.clone(), reversed] {
            let config = db.gateway_config();
            let client = client.clone();
            handles.push(tokio::spawn(async move {
                let gw = connect(&config).await;
                gw.batch_execute("BEGIN").await.unwrap();
                let batch: Vec<Element> = order.iter().map(|t| Element::of(&client, t)).collect();
                let answers = rotate_batch(&gw, &batch).await;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                gw.batch_execute("COMMIT").await.unwrap();
                answers
            }));
        }
        for handle in handles {
            let answers = handle.await.expect("a batch failed (a deadlock?)");
            for answer in answers {
                // The later batch presents tokens the earlier one just rotated: inside the window.
                assert_ok(&answer, &format!("round {round}"));
            }
        }
    }
}
