//! The audit feed: `oauth.list_events` for the application, `NOTIFY oauth_events`, and delivery to
//! a consumer (`oauth.take_events` / `oauth.acknowledge_events`): one holder at a time, in an order
//! no late commit can jump, nothing skipped.

use std::time::Duration;

use oauth_provider_tests::serde_json::{Value, json};
use oauth_provider_tests::*;

async fn take(
    db: &tokio_postgres::Client,
    consumer: &str,
    holder: &str,
    at: Option<&str>,
) -> Value {
    db.query_one(
        "SELECT oauth.take_events($1, $2, interval '30 seconds', 100, coalesce($3::text::timestamptz, now()))",
        &[&consumer, &holder, &at],
    )
    .await
    .unwrap()
    .get(0)
}

/// `take` until `count` events come: delivery waits for every older transaction in the cluster to
/// end, and the other tests of this file run beside this one (one holds a transaction open on
/// purpose), so events committed one after the other may become deliverable one at a time.
async fn take_some(
    db: &tokio_postgres::Client,
    consumer: &str,
    holder: &str,
    count: usize,
) -> Value {
    let started = std::time::Instant::now();
    loop {
        let taken = take(db, consumer, holder, None).await;
        if taken["events"].as_array().is_some_and(|e| e.len() >= count)
            || started.elapsed() > Duration::from_secs(15)
        {
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn acknowledge(
    db: &tokio_postgres::Client,
    consumer: &str,
    holder: &str,
    through: &str,
) -> bool {
    db.query_one(
        "SELECT oauth.acknowledge_events($1, $2, $3)",
        &[&consumer, &holder, &through],
    )
    .await
    .unwrap()
    .get(0)
}

fn kinds_and_clients(taken: &Value) -> Vec<(String, String)> {
    taken["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["client_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn new_client(db: &tokio_postgres::Client) -> String {
    create_client(db, ClientSpec::public_native()).await.id
}

#[tokio::test]
async fn events_are_listed_by_user_client_and_id_and_announced() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let (listener, mut notes) = connect_listening(&db.gateway_config()).await;
    listener.batch_execute("LISTEN oauth_events").await.unwrap();
    // Off by default: a notifying commit cannot share a WAL flush with others.
    create_client(&admin, ClientSpec::default()).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), notes.recv())
            .await
            .is_err(),
        "no announcement unless asked for"
    );
    configure(&admin, "announce_events => true").await;
    let client = create_client(&admin, ClientSpec::default()).await;
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv())
        .await
        .expect("NOTIFY oauth_events")
        .unwrap();
    let announced: i64 = note.payload().parse().unwrap();
    let user = unique("user");
    let issued = tokens_for(&admin, &client, &user).await;
    admin
        .execute(
            "SELECT oauth.revoke_grant($1, 'user_request')",
            &[&uuid_field(&issued, "grant_id")],
        )
        .await
        .unwrap();

    let by_user = admin
        .query(
            "SELECT event_id, kind FROM oauth.list_events(user_id => $1)",
            &[&user],
        )
        .await
        .unwrap();
    let kinds: Vec<String> = by_user.iter().map(|r| r.get(1)).collect();
    assert!(kinds.contains(&"consent_granted".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"grant_revoked".to_owned()), "{kinds:?}");
    let ids: Vec<i64> = by_user.iter().map(|r| r.get(0)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    assert!(ids[0] > announced, "the client's creation came first");

    let by_client = admin
        .query(
            "SELECT kind FROM oauth.list_events(client_id => $1, after_id => $2, max_rows => 1)",
            &[&client.id, &(announced - 1)],
        )
        .await
        .unwrap();
    assert_eq!(by_client.len(), 1);
    assert_eq!(by_client[0].get::<_, String>(0), "client_created");
    let none = admin
        .query(
            "SELECT 1 FROM oauth.list_events(since => now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn one_holder_delivers_at_a_time_and_acknowledged_events_are_not_handed_out_again() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let gw = db.gateway().await;
    // The first take places the consumer at the events committed from then on.
    assert_eq!(
        take(&gw, "webhook", "gw-a", None).await["events"],
        json!([])
    );
    let first = new_client(&admin).await;
    let second = new_client(&admin).await;

    let taken = take_some(&gw, "webhook", "gw-a", 2).await;
    assert_eq!(taken["held"], json!(true));
    assert_eq!(
        kinds_and_clients(&taken),
        vec![
            ("client_created".to_owned(), first.clone()),
            ("client_created".to_owned(), second.clone())
        ]
    );
    assert_eq!(
        take(&gw, "webhook", "gw-b", None).await,
        json!({"held": false}),
        "another holder waits while the lease runs"
    );
    assert!(
        !acknowledge(
            &gw,
            "webhook",
            "gw-b",
            taken["events"][0]["position"].as_str().unwrap()
        )
        .await,
        "only the holder acknowledges"
    );
    let through = taken["events"][0]["position"].as_str().unwrap();
    assert!(acknowledge(&gw, "webhook", "gw-a", through).await);
    assert!(
        !acknowledge(&gw, "webhook", "gw-a", through).await,
        "a position already passed does not move the consumer"
    );
    // Unacknowledged events come again (at least once), acknowledged ones do not.
    let again = take(&gw, "webhook", "gw-a", None).await;
    assert_eq!(
        kinds_and_clients(&again),
        vec![("client_created".to_owned(), second.clone())]
    );

    // Once the lease has run out, another holder takes over where the consumer stands.
    let later: String = gw
        .query_one("SELECT (now() + interval '31 seconds')::text", &[])
        .await
        .unwrap()
        .get(0);
    let taken_over = take(&gw, "webhook", "gw-b", Some(&later)).await;
    assert_eq!(taken_over["held"], json!(true));
    assert_eq!(
        kinds_and_clients(&taken_over),
        vec![("client_created".to_owned(), second)]
    );
    assert_eq!(
        sqlstate(
            gw.query_one(
                "SELECT oauth.acknowledge_events('webhook', 'gw-b', 'not-a-position')",
                &[]
            )
            .await
        ),
        "OA400"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_late_with_a_lower_id_is_still_delivered() {
    // T2 takes its transaction id first; T1 then writes an event (the lower id) and stays open
    // while T2 writes one (the higher id) and commits. A cursor on ids alone would hand out T2's,
    // move past T1's id, and never deliver T1's event once it commits.
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let gw = db.gateway().await;
    take(&gw, "webhook", "gw", None).await;
    let t1 = db.admin().await;
    let t2 = db.admin().await;
    t2.batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    t1.batch_execute("BEGIN; SELECT pg_current_xact_id();")
        .await
        .unwrap();
    let late = new_client(&t1).await;
    let early = new_client(&t2).await;
    t2.batch_execute("COMMIT").await.unwrap();
    let ids: Vec<i64> = admin
        .query("SELECT event_id FROM oauth.events ORDER BY event_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();

    // T2 is settled (no older transaction runs); T1 is not.
    let taken = take_some(&gw, "webhook", "gw", 1).await;
    assert_eq!(
        kinds_and_clients(&taken),
        vec![("client_created".to_owned(), early)],
        "{ids:?}"
    );
    let early_id = taken["events"][0]["event_id"].as_i64().unwrap();
    assert!(
        acknowledge(
            &gw,
            "webhook",
            "gw",
            taken["events"][0]["position"].as_str().unwrap()
        )
        .await
    );
    t1.batch_execute("COMMIT").await.unwrap();
    let taken = take_some(&gw, "webhook", "gw", 1).await;
    assert_eq!(
        kinds_and_clients(&taken),
        vec![("client_created".to_owned(), late)],
        "the late commit is delivered after all"
    );
    assert!(
        taken["events"][0]["event_id"].as_i64().unwrap() < early_id,
        "with the lower id: {taken}"
    );
    assert!(
        acknowledge(
            &gw,
            "webhook",
            "gw",
            taken["events"][0]["position"].as_str().unwrap()
        )
        .await
    );
    assert_eq!(take(&gw, "webhook", "gw", None).await["events"], json!([]));
}

#[tokio::test]
async fn every_token_response_is_an_event_with_its_grant_type_unless_turned_off() {
    // Settings are the database's: a database of its own.
    let db = TempDb::create().await;
    let (admin, gw) = (db.admin().await, db.gateway().await);
    let off: Value = scalar(&admin, "SELECT oauth.settings()", &[]).await;
    assert_eq!(off["record_token_events"], json!(false), "off by default");
    let _: Value = scalar(
        &admin,
        "SELECT oauth.configure(record_token_events => true, announce_events => true)",
        &[],
    )
    .await;
    let client = create_client(&admin, ClientSpec::default()).await;
    let (listener, mut notes) = connect_listening(&db.gateway_config()).await;
    listener.batch_execute("LISTEN oauth_events").await.unwrap();
    let user = unique("user");
    let issued = tokens_for(&gw, &client, &user).await;
    let refresh = str_field(&issued, "refresh_token").to_owned();
    let rotated = rotate(&gw, &client, &refresh).await;
    assert_ok(&rotated, "rotate");
    // Presented again within the grace window: the same successor, and again an access token.
    assert_ok(
        &rotate(&gw, &client, &refresh).await,
        "rotate in the grace window",
    );
    let machine = create_client(
        &admin,
        ClientSpec {
            grant_types: vec!["client_credentials".into()],
            ..ClientSpec::default()
        },
    )
    .await;
    let answer: Value = scalar(
        &gw,
        "SELECT oauth.client_credentials_grant($1, $2, 'mcp', NULL)",
        &[&machine.id, &machine.secret],
    )
    .await;
    assert_ok(&answer, "client_credentials");

    let issued_events = async || -> Vec<String> {
        column(
            &admin,
            "SELECT (detail->>'grant_type') || ':' || (detail->>'refresh_token') || ':' || client_id
               FROM oauth.events WHERE kind = 'tokens_issued' ORDER BY event_id",
            &[],
        )
        .await
    };
    assert_eq!(
        issued_events().await,
        [
            format!("authorization_code:true:{}", client.id),
            format!("refresh_token:true:{}", client.id),
            format!("refresh_token:true:{}", client.id),
            format!("client_credentials:false:{}", machine.id),
        ]
    );
    let tied: bool = scalar(
        &admin,
        "SELECT bool_and(user_id = $1 AND grant_id IS NOT NULL AND family_id IS NOT NULL)
           FROM oauth.events WHERE kind = 'tokens_issued' AND client_id = $2",
        &[&user, &client.id],
    )
    .await;
    assert!(tied, "each names its user, grant and family");
    let secrets: i64 = scalar(
        &admin,
        "SELECT count(*) FROM oauth.events WHERE detail::text LIKE '%' || $1 || '%'",
        &[&refresh],
    )
    .await;
    assert_eq!(secrets, 0, "no token in any event");
    // Announced: the other events (the consent among them); never a token response's alone.
    let mut announced = Vec::new();
    while let Ok(Some(note)) = tokio::time::timeout(Duration::from_millis(300), notes.recv()).await
    {
        announced.push(note.payload().parse::<i64>().unwrap());
    }
    let kinds: Vec<String> = column(
        &admin,
        "SELECT kind FROM oauth.events WHERE event_id = ANY($1) ORDER BY event_id",
        &[&announced],
    )
    .await;
    assert!(kinds.contains(&"consent_granted".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"tokens_issued".to_owned()), "{kinds:?}");

    let settings: Value = scalar(
        &admin,
        "SELECT oauth.configure(record_token_events => false)",
        &[],
    )
    .await;
    assert_eq!(settings["record_token_events"], json!(false));
    assert_ok(
        &rotate(&gw, &client, str_field(&rotated, "refresh_token")).await,
        "rotate",
    );
    assert_eq!(issued_events().await.len(), 4, "turned off, none is added");
}

#[tokio::test]
async fn cleanup_removes_events_past_retention_but_not_those_a_live_consumer_still_waits_for() {
    let db = TempDb::create().await;
    let admin = db.admin().await;
    let settings: Value = scalar(
        &admin,
        "SELECT oauth.configure(event_retention => '1 day')",
        &[],
    )
    .await;
    assert_eq!(settings["event_retention"], json!(86400));
    for day in [10, 5, 3] {
        admin
            .execute(
                "INSERT INTO oauth.events (occurred_at, kind) VALUES (now() - make_interval(days => $1), 'old')",
                &[&day],
            )
            .await
            .unwrap();
    }
    admin
        .execute(
            "INSERT INTO oauth.events (occurred_at, kind) VALUES (now(), 'recent')",
            &[],
        )
        .await
        .unwrap();
    // A webhook that last delivered an hour ago, up to the 5-day-old event: it still waits for
    // the newer ones, not for those up to its position.
    admin
        .execute(
            "INSERT INTO oauth.event_consumers (consumer, delivered_xid, delivered_event_id, delivered_at)
             SELECT 'hook', e.xid, e.event_id, now() - interval '1 hour'
               FROM oauth.events e WHERE e.kind = 'old' ORDER BY e.occurred_at OFFSET 1 LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let kinds = async || -> Vec<String> {
        column(
            &admin,
            "SELECT kind || ':' || extract(day FROM now() - occurred_at)::int FROM oauth.events
              WHERE kind IN ('old', 'recent') ORDER BY event_id",
            &[],
        )
        .await
    };
    let removed: i64 = scalar(&admin, "SELECT oauth.cleanup()", &[]).await;
    assert!(removed >= 1);
    assert_eq!(
        kinds().await,
        ["old:3", "recent:0"],
        "the 10- and 5-day-old events were delivered; the 3-day-old one waits for the webhook"
    );
    // A consumer that acknowledged nothing for a whole retention period holds nothing back.
    admin
        .execute(
            "UPDATE oauth.event_consumers SET delivered_at = now() - interval '2 days'",
            &[],
        )
        .await
        .unwrap();
    let _: i64 = scalar(&admin, "SELECT oauth.cleanup()", &[]).await;
    assert_eq!(kinds().await, ["recent:0"]);
}
