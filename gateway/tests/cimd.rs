//! Client ID Metadata Documents over real TLS: a document server on loopback with a test CA the
//! gateway is told to trust, the whole flow for a URL client, and every refusal (no redirect to
//! the client, the failure negatively cached in the database).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use oauth_gateway::config::CimdConfig;
use serde_json::{Value, json};

/// What the document server answers on a path.
#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Answer {
    fn json(body: Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            headers: vec![("cache-control", "max-age=600".into())],
            body: body.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }
}

struct DocumentServer {
    base: String,
    ca_file: std::path::PathBuf,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>,
}

impl DocumentServer {
    async fn start() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "oauth_provider test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let ca_file = std::env::temp_dir().join(format!("cimd-ca-{}.pem", random_suffix()));
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Default::default();
        let hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>> = Default::default();
        let (answers2, hits2) = (answers.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (answers, hits) = (answers2.clone(), hits2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_owned();
                        let answer = answers.lock().unwrap().get(&path).cloned();
                        hits.lock()
                            .unwrap()
                            .entry(path)
                            .or_default()
                            .fetch_add(1, Ordering::SeqCst);
                        async move {
                            let answer = answer.unwrap_or(Answer {
                                status: 404,
                                content_type: "text/plain",
                                headers: vec![],
                                body: b"not found".to_vec(),
                                delay: Duration::ZERO,
                            });
                            tokio::time::sleep(answer.delay).await;
                            let mut resp = HttpResponse::builder()
                                .status(answer.status)
                                .header("content-type", answer.content_type);
                            for (k, v) in &answer.headers {
                                resp = resp.header(*k, v);
                            }
                            Ok::<_, std::convert::Infallible>(
                                resp.body(Full::new(Bytes::from(answer.body))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            base,
            ca_file,
            answers,
            hits,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn serve(&self, path: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(path.to_owned(), answer);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |h| h.load(Ordering::SeqCst))
    }

    fn valid_document(&self, path: &str) -> Value {
        json!({
            "client_id": self.url(path),
            "client_name": "Test CLI",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "client_uri": "https://cli.example.com",
        })
    }

    /// The valid document of `path`, cacheable for ten minutes.
    fn valid(&self, path: &str) -> Answer {
        Answer::json(self.valid_document(path))
    }

    fn cimd_config(&self) -> CimdConfig {
        CimdConfig {
            allow_loopback: true,
            extra_ca_file: Some(self.ca_file.clone()),
            fetch_timeout: Duration::from_secs(1),
            ..CimdConfig::default()
        }
    }
}

async fn gateway_with(cimd: CimdConfig) -> Gateway {
    Gateway::start_with(Options {
        cimd,
        ..Options::default()
    })
    .await
}

async fn authorize(gw: &Gateway, client_id: &str) -> common::Response {
    gw.authorize(&Authorization::new(client_id)).await
}

fn assert_refused_here(resp: &common::Response, what: &str) {
    assert_eq!(
        resp.status,
        StatusCode::BAD_REQUEST,
        "{what}: {}",
        resp.text()
    );
    assert!(
        resp.header("location").is_none(),
        "{what}: never redirected"
    );
}

/// Refused here because this gateway fetched enough for the minute.
fn assert_over_budget(resp: &common::Response, what: &str) {
    assert_refused_here(resp, what);
    assert!(
        resp.text().contains("too many fetches"),
        "{what}: {}",
        resp.text()
    );
}

#[tokio::test]
async fn a_client_identified_by_its_metadata_document_completes_the_code_flow_from_one_fetch() {
    let docs = DocumentServer::start().await;
    docs.serve("/client.json", docs.valid("/client.json"));
    let gw = gateway_with(docs.cimd_config()).await;
    let client_id = docs.url("/client.json");

    // The consent page introduces the client by its host and warns: its redirects are all loopback.
    let first = authorize(&gw, &client_id).await;
    assert_eq!(first.status, StatusCode::FOUND, "{}", first.text());
    let consent = gw.http.get(&first.location(), &[]).await.text();
    assert!(
        consent.contains("published by <strong class=\"host\">127.0.0.1"),
        "{consent}"
    );
    assert!(consent.contains("Caution"));
    assert!(consent.contains("Test CLI"));

    // Public client, PKCE, any loopback port: the whole flow, from the one fetch above.
    let tokens = gw
        .code_flow(&Authorization::new(&client_id))
        .await
        .ok_json();
    let claims = gw
        .verify(tokens["access_token"].as_str().unwrap(), Some(RESOURCE))
        .unwrap();
    assert_eq!(claims["client_id"], json!(client_id));
    let refreshed = gw
        .refresh(&client_id, tokens["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(
        docs.hits("/client.json"),
        1,
        "served from the database's copy"
    );

    let row = gw
        .admin
        .query_one(
            "SELECT c.token_endpoint_auth_method, c.metadata->>'client_uri', d.failure IS NULL, d.fresh_until > now() + interval '9 minutes'
               FROM oauth.clients c JOIN oauth.client_documents d USING (client_id) WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "none");
    assert_eq!(row.get::<_, String>(1), "https://cli.example.com");
    assert!(row.get::<_, bool>(2));
    assert!(row.get::<_, bool>(3), "max-age=600 honoured");

    // When the copy goes stale the next authorization fetches again, and a changed document applies.
    let mut changed = docs.valid_document("/client.json");
    changed["redirect_uris"] = json!(["http://127.0.0.1/other"]);
    docs.serve("/client.json", Answer::json(changed));
    make_stale(&gw, &client_id).await;
    let stale = authorize(&gw, &client_id).await;
    assert_refused_here(&stale, "redirect URI no longer in the document");
    assert_eq!(docs.hits("/client.json"), 2);
    gw.stop().await;
}

#[tokio::test]
async fn unusable_documents_are_refused_without_redirecting_and_negatively_cached() {
    let docs = DocumentServer::start().await;
    // The valid document of `path` with `field` set to `value`.
    let altered = |path: &str, field: &str, value: Value| {
        let mut doc = docs.valid_document(path);
        doc[field] = value;
        Answer::json(doc)
    };
    #[rustfmt::skip]
    let cases = [
        ("/big.json", altered("/big.json", "padding", json!("x".repeat(20 * 1024))), "larger than"),
        ("/mismatch.json", altered("/mismatch.json", "client_id", json!(docs.url("/other.json"))), "differs from its URL"),
        ("/secret.json", altered("/secret.json", "client_secret", json!("s3cret")), "must not carry a secret"),
        (
            "/confidential.json",
            altered("/confidential.json", "token_endpoint_auth_method", json!("client_secret_basic")),
            "token_endpoint_auth_method",
        ),
        ("/noredirects.json", altered("/noredirects.json", "redirect_uris", json!([])), "redirect"),
        (
            "/redirect.json",
            Answer { status: 302, headers: vec![("location", docs.url("/client.json"))], ..Answer::json(json!({})) },
            "redirects are not followed",
        ),
        (
            "/text.json",
            Answer { content_type: "text/html", ..docs.valid("/text.json") },
            "application/json",
        ),
        ("/notjson.json", Answer { body: b"{not json".to_vec(), ..Answer::json(json!({})) }, "not valid JSON"),
    ];
    for (path, answer, _) in &cases {
        docs.serve(path, answer.clone());
    }
    let gw = gateway_with(docs.cimd_config()).await;

    // The page says why, except when no answer came (here a 404): then only that the document
    // could not be fetched, the precise reason being recorded for the operator.
    let reasons = cases
        .iter()
        .map(|(path, _, reason)| (*path, *reason, *reason))
        .chain([("/missing.json", "could not be fetched", "404")]);
    for (path, page_says, reason) in reasons {
        let client_id = docs.url(path);
        let resp = authorize(&gw, &client_id).await;
        assert_refused_here(&resp, path);
        assert!(resp.text().contains(page_says), "{path}: {}", resp.text());
        assert_eq!(docs.hits(path), 1, "{path}");
        let recorded: Option<String> = gw
            .sql_value(
                "SELECT failure FROM oauth.client_documents WHERE client_id = $1",
                &[&client_id],
            )
            .await;
        assert!(
            recorded.is_some_and(|f| f.contains(reason)),
            "{path}: failure recorded"
        );
        // Negatively cached: refused again without another fetch.
        let again = authorize(&gw, &client_id).await;
        assert_refused_here(&again, path);
        assert!(
            again.text().contains(page_says),
            "{path} cached: {}",
            again.text()
        );
        assert_eq!(
            docs.hits(path),
            1,
            "{path}: no refetch within the negative TTL"
        );
        assert_eq!(
            gw.rows_of_client("clients", &client_id).await,
            0,
            "{path}: no client was made"
        );
    }

    // A document may not take over a client the administrator made with the same id.
    let taken = docs.url("/taken.json");
    docs.serve("/taken.json", docs.valid("/taken.json"));
    gw.admin
        .execute(
            "INSERT INTO oauth.clients (client_id, client_name, redirect_uris, allowed_scopes, token_endpoint_auth_method, created_at, updated_at)
             VALUES ($1, 'Admin app', '{https://admin.example/cb}', '{mcp}', 'none', now(), now())",
            &[&taken],
        )
        .await
        .unwrap();
    let resp = authorize(&gw, &taken).await;
    assert_refused_here(&resp, "taken id");
    let name: String = gw
        .sql_value(
            "SELECT client_name FROM oauth.clients WHERE client_id = $1",
            &[&taken],
        )
        .await;
    assert_eq!(name, "Admin app");

    // http:// is not a metadata document URL, just an unknown client.
    let plain = authorize(&gw, &docs.url("/client.json").replace("https", "http")).await;
    assert_refused_here(&plain, "http client id");
    assert!(plain.text().contains("unknown client"));
    gw.stop().await;
}

#[tokio::test]
async fn private_addresses_and_denied_hosts_are_refused_before_any_connection() {
    let docs = DocumentServer::start().await;
    docs.serve("/client.json", docs.valid("/client.json"));
    let client_id = docs.url("/client.json");
    #[rustfmt::skip]
    let cases = [
        (
            "loopback",
            CimdConfig { allow_loopback: false, ..docs.cimd_config() },
            Some("private or special-purpose address"),
        ),
        (
            "denied host",
            CimdConfig { denied_hosts: vec!["127.0.0.1".into()], ..docs.cimd_config() },
            Some("not accepted"),
        ),
        (
            "not on the allow-list",
            CimdConfig { allowed_hosts: vec!["*.example.com".into()], ..docs.cimd_config() },
            None,
        ),
        ("disabled", CimdConfig { enabled: false, ..docs.cimd_config() }, None),
    ];
    for (what, cimd, page_says) in cases {
        let gw = gateway_with(cimd).await;
        let resp = authorize(&gw, &client_id).await;
        assert_refused_here(&resp, what);
        if let Some(reason) = page_says {
            assert!(resp.text().contains(reason), "{what}: {}", resp.text());
        }
        gw.stop().await;
    }
    assert_eq!(docs.hits("/client.json"), 0, "nothing was fetched");
}

#[tokio::test]
async fn a_document_server_that_never_answers_fails_within_the_deadline_and_the_host_budget_holds()
{
    let docs = DocumentServer::start().await;
    docs.serve(
        "/slow.json",
        Answer {
            delay: Duration::from_secs(30),
            ..docs.valid("/slow.json")
        },
    );
    let gw = gateway_with(CimdConfig {
        per_host_fetches_per_minute: 2,
        negative_cache: Duration::from_secs(0),
        ..docs.cimd_config()
    })
    .await;
    let started = Instant::now();
    let resp = authorize(&gw, &docs.url("/slow.json")).await;
    assert_refused_here(&resp, "slow");
    assert!(resp.text().contains("no complete answer within"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Without a negative cache, the per-host budget (2 a minute here) stops the third fetch.
    docs.serve(
        "/client.json",
        Answer {
            status: 500,
            ..Answer::json(json!({}))
        },
    );
    let _ = authorize(&gw, &docs.url("/client.json")).await;
    let limited = authorize(&gw, &docs.url("/client.json")).await;
    assert_over_budget(&limited, "budget");
    assert_eq!(docs.hits("/client.json"), 1);
    gw.stop().await;
}

#[tokio::test]
async fn authorizations_of_one_new_client_arriving_together_share_one_fetch() {
    let docs = DocumentServer::start().await;
    docs.serve(
        "/together.json",
        Answer {
            delay: Duration::from_millis(300),
            ..docs.valid("/together.json")
        },
    );
    let gw = Arc::new(gateway_with(docs.cimd_config()).await);
    let client_id = docs.url("/together.json");
    let authorizations = at_once(20, |_| {
        let (gw, client_id) = (gw.clone(), client_id.clone());
        async move { authorize(&gw, &client_id).await }
    })
    .await;
    for resp in authorizations {
        assert_eq!(resp.status, StatusCode::FOUND, "{}", resp.text());
    }
    assert_eq!(docs.hits("/together.json"), 1, "one fetch for all twenty");
}

/// Makes the database's copy of `client_id`'s document stale, as time would.
async fn make_stale(gw: &Gateway, client_id: &str) {
    gw.admin
        .execute(
            "UPDATE oauth.client_documents SET fresh_until = now() WHERE client_id = $1",
            &[&client_id],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn junk_urls_on_a_host_do_not_spend_the_budget_a_known_stale_document_needs() {
    let docs = DocumentServer::start().await;
    docs.serve("/known.json", docs.valid("/known.json"));
    let gw = gateway_with(CimdConfig {
        per_host_fetches_per_minute: 2,
        ..docs.cimd_config()
    })
    .await;
    let known = docs.url("/known.json");
    let first = authorize(&gw, &known).await;
    assert_eq!(first.status, StatusCode::FOUND, "{}", first.text());

    // Strangers' URLs on the same host spend what is left of the host's budget, and more.
    for junk in ["/junk-1.json", "/junk-2.json", "/junk-3.json"] {
        let _ = authorize(&gw, &docs.url(junk)).await;
    }
    let limited = authorize(&gw, &docs.url("/junk-4.json")).await;
    assert_over_budget(&limited, "junk");

    // The known client's copy goes stale: it is fetched again all the same.
    make_stale(&gw, &known).await;
    let stale = authorize(&gw, &known).await;
    assert_eq!(stale.status, StatusCode::FOUND, "{}", stale.text());
    assert_eq!(docs.hits("/known.json"), 2);
    gw.stop().await;
}

#[tokio::test]
async fn fetches_are_capped_across_hosts_so_fresh_names_do_not_bring_fresh_budgets() {
    let docs = DocumentServer::start().await;
    docs.serve("/client.json", docs.valid("/client.json"));
    let gw = gateway_with(docs.cimd_config()).await;
    // Every 127.0.0.0/8 address is a distinct host to the budget (as every name under a wildcard
    // DNS record would be); nothing listens on them at this port, so each fetch fails at once.
    let port = docs.base.rsplit(':').next().unwrap();
    for host in 2..2 + oauth_gateway::cimd::GLOBAL_FETCHES_PER_MINUTE {
        let resp = authorize(&gw, &format!("https://127.0.0.{host}:{port}/client.json")).await;
        assert_refused_here(&resp, "nothing listens there");
    }
    let limited = authorize(&gw, &docs.url("/client.json")).await;
    assert_over_budget(&limited, "global budget");
    assert_eq!(docs.hits("/client.json"), 0, "not fetched");
    gw.stop().await;
}

#[tokio::test]
async fn a_closed_port_a_failed_tls_handshake_and_a_404_give_the_browser_the_same_page() {
    let docs = DocumentServer::start().await;
    // A server whose certificate the gateway does not trust (its CA is another test CA).
    let untrusted = DocumentServer::start().await;
    untrusted.serve("/client.json", untrusted.valid("/client.json"));
    let gw = gateway_with(docs.cimd_config()).await;
    let closed_port = free_port();
    let failing = [
        (
            "closed port",
            format!("https://127.0.0.1:{closed_port}/client.json"),
        ),
        ("TLS failed", untrusted.url("/client.json")),
        ("404", docs.url("/missing.json")),
    ];
    let mut pages = Vec::new();
    for (what, client_id) in &failing {
        let resp = authorize(&gw, client_id).await;
        assert_refused_here(&resp, what);
        pages.push((what, resp.body.clone()));
        // The precise reason is kept for the operator.
        let recorded: Option<String> = gw
            .sql_value(
                "SELECT failure FROM oauth.client_documents WHERE client_id = $1",
                &[client_id],
            )
            .await;
        assert!(recorded.is_some(), "{what}: failure recorded");
    }
    // Asked again, each is answered from the database's negative cache: it must not tell them
    // apart either.
    for (what, client_id) in &failing {
        let resp = authorize(&gw, client_id).await;
        assert_refused_here(&resp, what);
        pages.push((what, resp.body.clone()));
    }
    for (what, page) in &pages[1..] {
        assert_eq!(
            String::from_utf8_lossy(page),
            String::from_utf8_lossy(&pages[0].1),
            "{what} and {} look alike",
            pages[0].0
        );
    }
    assert!(
        String::from_utf8_lossy(&pages[0].1).contains("could not be fetched"),
        "{}",
        String::from_utf8_lossy(&pages[0].1)
    );
    gw.stop().await;
}

#[tokio::test]
async fn metadata_advertises_metadata_documents_only_while_the_fetcher_is_on() {
    let docs = DocumentServer::start().await;
    for enabled in [true, false] {
        let gw = gateway_with(CimdConfig {
            enabled,
            ..docs.cimd_config()
        })
        .await;
        let metadata = gw
            .get("/.well-known/oauth-authorization-server")
            .await
            .json();
        assert_eq!(
            metadata["client_id_metadata_document_supported"],
            json!(enabled),
            "fetcher on: {enabled}"
        );
        gw.stop().await;
    }
}
