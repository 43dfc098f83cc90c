//! Throughput of the extension's hot calls over real connections, printed as a table.
//!
//!   cargo run --release -p oauth_provider_tests --bin sql_bench -- [--seconds 10] [--connections 1,16]
//!
//! The last rows repeat the rotation at the largest connection count with `oauth.cleanup` running
//! back to back beside it over a backlog of expired events: what scheduled cleanup costs.
//!
//! Measures `oauth.rotate_refresh_token` (each connection rotates its own chain, like a client
//! refreshing) and `oauth.exchange_code` (each call redeems a code minted beforehand), calling the
//! functions as the gateway does: one statement per call, autocommit, synchronous commit.
//! Connects with `OAUTH_BENCH_DATABASE_URL` (default: the project-local cluster's `oauth_bench`).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};

const VERIFIER: &str = "bench-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
const RESOURCE: &str = "http://127.0.0.1:8080/mcp";
const REDIRECT: &str = "http://127.0.0.1:9/cb";

struct Args {
    seconds: u64,
    connections: Vec<usize>,
    url: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        seconds: 10,
        connections: vec![1, 16],
        url: std::env::var("OAUTH_BENCH_DATABASE_URL").unwrap_or_else(|_| {
            "host=127.0.0.1 port=54315 user=postgres dbname=oauth_bench".into()
        }),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse().expect("--seconds N"),
            "--connections" => {
                args.connections = value
                    .split(',')
                    .map(|c| c.parse().expect("--connections 1,16"))
                    .collect()
            }
            "--url" => args.url = value,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Mints one authorization code for `client_id` through the same calls an authorization runs.
async fn mint_code(db: &Client, client_id: &str, user: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let params = serde_json::json!({
        "client_id": client_id, "response_type": "code", "redirect_uri": REDIRECT,
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "mcp", "resource": RESOURCE,
    });
    let begun: serde_json::Value = db
        .query_one("SELECT oauth.begin_authorization($1)", &[&params])
        .await
        .expect("begin_authorization")
        .get(0);
    let request_id = begun["request_id"].as_str().expect("request_id").to_owned();
    let url: String = db
        .query_one("SELECT oauth.issue_code($1, $2)", &[&request_id, &user])
        .await
        .expect("issue_code")
        .get(0);
    url.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .expect("code in redirect")
        .to_owned()
}

async fn exchange(db: &Client, client_id: &str, code: &str) -> serde_json::Value {
    db.query_one(
        "SELECT oauth.exchange_code($1, NULL, $2, $3, $4, $5)",
        &[&client_id, &code, &VERIFIER, &REDIRECT, &RESOURCE],
    )
    .await
    .expect("exchange_code")
    .get(0)
}

struct Outcome {
    calls: usize,
    failures: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run_workers<F, Fut>(n: usize, seconds: u64, worker: F) -> Outcome
where
    F: Fn(usize, Instant) -> Fut,
    Fut: std::future::Future<Output = (usize, Vec<Duration>)> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(worker(i, deadline))).collect();
    let mut outcome = Outcome {
        calls: 0,
        failures: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for handle in handles {
        let (failures, latencies) = handle.await.expect("worker");
        outcome.failures += failures;
        outcome.calls += latencies.len();
        outcome.latencies.extend(latencies);
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort();
    outcome
}

async fn bench_rotation(url: &str, client_id: &str, n: usize, seconds: u64) -> Outcome {
    let mut chains = Vec::new();
    let setup = connect(url).await;
    for i in 0..n {
        let code = mint_code(&setup, client_id, &format!("rotation-user-{n}-{i}")).await;
        let issued = exchange(&setup, client_id, &code).await;
        chains.push(
            issued["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        );
    }
    let url = url.to_owned();
    let client_id = client_id.to_owned();
    run_workers(n, seconds, move |i, deadline| {
        let url = url.clone();
        let client_id = client_id.clone();
        let mut token = chains[i].clone();
        async move {
            let db = connect(&url).await;
            let statement = db
                .prepare("SELECT oauth.rotate_refresh_token($1, NULL, $2, NULL, $3)")
                .await
                .expect("prepare");
            let (mut failures, mut latencies) = (0, Vec::new());
            while Instant::now() < deadline {
                let t = Instant::now();
                let row = db
                    .query_one(&statement, &[&client_id, &token, &RESOURCE])
                    .await
                    .expect("rotate");
                let answer: serde_json::Value = row.get(0);
                match answer["refresh_token"].as_str() {
                    Some(next) => {
                        token = next.to_owned();
                        latencies.push(t.elapsed());
                    }
                    None => {
                        failures += 1;
                        break;
                    }
                }
            }
            (failures, latencies)
        }
    })
    .await
}

async fn bench_exchange(url: &str, client_id: &str, n: usize, seconds: u64) -> Outcome {
    // Codes are minted ahead of time so that only the redemption is measured; a code lives one
    // minute by default, which bounds how long the run may be.
    let setup = connect(url).await;
    let rate_guess = 3000 * seconds as usize;
    let mut codes = Vec::with_capacity(rate_guess);
    let mint_started = Instant::now();
    for i in 0..rate_guess {
        codes.push(mint_code(&setup, client_id, &format!("exchange-user-{}", i % 64)).await);
        if mint_started.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    let per_worker: Vec<Vec<String>> = {
        let mut buckets = vec![Vec::new(); n];
        for (i, code) in codes.into_iter().enumerate() {
            buckets[i % n].push(code);
        }
        buckets
    };
    let url = url.to_owned();
    let client_id = client_id.to_owned();
    run_workers(n, seconds, move |i, deadline| {
        let url = url.clone();
        let client_id = client_id.clone();
        let mine = per_worker[i].clone();
        async move {
            let db = connect(&url).await;
            let statement = db
                .prepare("SELECT oauth.exchange_code($1, NULL, $2, $3, $4, $5)")
                .await
                .expect("prepare");
            let (mut failures, mut latencies) = (0, Vec::new());
            for code in mine {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let row = db
                    .query_one(
                        &statement,
                        &[&client_id, &code, &VERIFIER, &REDIRECT, &RESOURCE],
                    )
                    .await
                    .expect("exchange");
                let answer: serde_json::Value = row.get(0);
                if answer.get("error").is_some() {
                    failures += 1;
                } else {
                    latencies.push(t.elapsed());
                }
            }
            (failures, latencies)
        }
    })
    .await
}

/// What `oauth.cleanup` did while rotations ran beside it.
struct CleanupRun {
    removed: i64,
    calls: usize,
    busy: Duration,
}

/// Rotations at `n` connections while another connection runs `oauth.cleanup` back to back over
/// a backlog of `backlog` events past their retention (as a gateway's scheduled cleanup does after
/// a long pause): what cleanup costs the hot path, and how fast it clears.
async fn bench_rotation_under_cleanup(
    url: &str,
    client_id: &str,
    n: usize,
    seconds: u64,
    backlog: i64,
) -> (Outcome, CleanupRun) {
    let setup = connect(url).await;
    setup
        .execute(
            "INSERT INTO oauth.events (occurred_at, kind)
             SELECT now() - interval '400 days', 'sql_bench_backlog' FROM generate_series(1, $1::int8)",
            &[&backlog],
        )
        .await
        .expect("backlog");
    let cleaner_url = url.to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let cleaner = tokio::spawn(async move {
        let db = connect(&cleaner_url).await;
        let mut run = CleanupRun {
            removed: 0,
            calls: 0,
            busy: Duration::ZERO,
        };
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            let removed: i64 = db
                .query_one("SELECT oauth.cleanup(now(), 1000)", &[])
                .await
                .expect("cleanup")
                .get(0);
            run.busy += t.elapsed();
            run.calls += 1;
            run.removed += removed;
            if removed == 0 {
                // Cleared: as the gateway's schedule would, wait for the next interval.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        run
    });
    let outcome = bench_rotation(url, client_id, n, seconds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let run = cleaner.await.expect("cleaner");
    (outcome, run)
}

fn row(name: &str, n: usize, o: &Outcome) {
    let rate = o.calls as f64 / o.elapsed.as_secs_f64();
    println!(
        "| {name:<24} | {n:>5} | {:>9} | {rate:>9.0} | {:>8.2} | {:>8.2} | {:>8} |",
        o.calls,
        percentile(&o.latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&o.latencies, 0.99).as_secs_f64() * 1e3,
        o.failures
    );
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let admin = connect(&args.url).await;
    let client_id: String = admin
        .query_one(
            "SELECT client_id FROM oauth.create_client('sql_bench', ARRAY[$1], '{mcp}', 'none', application_type => 'native')",
            &[&REDIRECT],
        )
        .await
        .expect("create_client (is the extension installed in the bench database?)")
        .get(0);
    println!(
        "oauth_provider SQL calls, {} s per row, synchronous_commit = {}",
        args.seconds,
        {
            let r = admin
                .query_one("SHOW synchronous_commit", &[])
                .await
                .expect("show");
            r.get::<_, String>(0)
        }
    );
    println!(
        "| call                     | conns |     calls |   calls/s | p50 (ms) | p99 (ms) | failures |"
    );
    println!(
        "|--------------------------|------:|----------:|----------:|---------:|---------:|---------:|"
    );
    for &n in &args.connections {
        let o = bench_rotation(&args.url, &client_id, n, args.seconds).await;
        row("rotate_refresh_token", n, &o);
    }
    for &n in &args.connections {
        let o = bench_exchange(&args.url, &client_id, n, args.seconds.min(20)).await;
        row("exchange_code", n, &o);
    }
    let n = args.connections.iter().copied().max().unwrap_or(16);
    let backlog = 200_000;
    let (o, cleanup) =
        bench_rotation_under_cleanup(&args.url, &client_id, n, args.seconds, backlog).await;
    row("rotate, cleanup beside", n, &o);
    println!();
    println!(
        "oauth.cleanup(now(), 1000) back to back beside it, over {backlog} events past retention:"
    );
    println!("| cleanup calls | rows removed | time in cleanup (s) | rows/s in cleanup |");
    println!("|--------------:|-------------:|--------------------:|------------------:|");
    println!(
        "| {:>13} | {:>12} | {:>19.2} | {:>17.0} |",
        cleanup.calls,
        cleanup.removed,
        cleanup.busy.as_secs_f64(),
        cleanup.removed as f64 / cleanup.busy.as_secs_f64().max(1e-9)
    );
    admin
        .execute("SELECT oauth.delete_client($1)", &[&client_id])
        .await
        .expect("delete_client");
}
