//! The JWT bearer grant end to end (RFC 7523 §2.1): an enterprise IdP's Identity Assertion JWT
//! Authorization Grant (MCP Enterprise-Managed Authorization) and a Kubernetes workload's token,
//! presented at /token over HTTP. The IdP's key set is served over TLS by a loopback server with a
//! test CA and fetched by the gateway; the JWTs are signed by an independent JOSE implementation
//! (jsonwebtoken over RustCrypto). The issued tokens pass the guard and introspection.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth_gateway::config::{CimdConfig, RouteConfig};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

fn install_signing_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// A loopback HTTPS server (its own test CA) answering JSON at paths, counting hits.
struct DocumentServer {
    base: String,
    ca_file: std::path::PathBuf,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>,
}

impl DocumentServer {
    async fn start() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let ca_file = std::env::temp_dir().join(format!("pkj-ca-{}.pem", random_suffix()));
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
        let answers: Arc<Mutex<HashMap<String, Value>>> = Default::default();
        let hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>> = Default::default();
        let (answers2, hits2) = (answers.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let (answers, hits) = (answers2.clone(), hits2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let path = req.uri().path().to_owned();
                        let answer = answers.lock().unwrap().get(&path).cloned();
                        // Key sets with their registered media type (RFC 7517 §8.5.1), as
                        // ChatGPT's and most identity providers' are served.
                        let content_type = if path.ends_with("jwks.json") {
                            "application/jwk-set+json"
                        } else {
                            "application/json"
                        };
                        hits.lock()
                            .unwrap()
                            .entry(path)
                            .or_default()
                            .fetch_add(1, Ordering::SeqCst);
                        async move {
                            let resp = match answer {
                                Some(body) => HttpResponse::builder()
                                    .header("content-type", content_type)
                                    .header("cache-control", "max-age=600")
                                    .body(Full::new(Bytes::from(body.to_string()))),
                                None => HttpResponse::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::from_static(b"not found"))),
                            };
                            Ok::<_, std::convert::Infallible>(resp.unwrap())
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

    fn serve(&self, path: &str, body: Value) {
        self.answers.lock().unwrap().insert(path.to_owned(), body);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |h| h.load(Ordering::SeqCst))
    }

    fn cimd_config(&self) -> CimdConfig {
        CimdConfig {
            allow_loopback: true,
            extra_ca_file: Some(self.ca_file.clone()),
            fetch_timeout: Duration::from_secs(2),
            ..CimdConfig::default()
        }
    }
}

/// An issuer's RSA key (RS256, what IdPs and Kubernetes sign with by default).
struct IssuerKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl IssuerKey {
    fn new(kid: &str) -> Self {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let b64 = |b: Vec<u8>| URL_SAFE_NO_PAD.encode(b);
        Self {
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes()),
            jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                        "n": b64(private.n().to_bytes_be()), "e": b64(private.e().to_bytes_be())}),
        }
    }

    fn sign(&self, typ: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn metadata_of(http: &Http, base: &str) -> Value {
    http.get(
        &format!("{base}/.well-known/oauth-authorization-server"),
        &[],
    )
    .await
    .ok_json()
}

fn advertises_jwt_bearer(metadata: &Value) -> bool {
    metadata["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!(JWT_BEARER))
}

#[tokio::test]
async fn an_id_jag_and_a_workload_token_become_access_tokens_the_guard_accepts() {
    install_signing_provider();
    let docs = DocumentServer::start().await;
    let idp = docs.url("/idp");
    let idp_keys = docs.url("/idp/oauth2/v1/keys");
    let key = IssuerKey::new("idp-2026");
    docs.serve("/idp/oauth2/v1/keys", json!({"keys": [key.jwk]}));
    let upstream = RecordingUpstream::start().await;
    let gw = Gateway::start_with(Options {
        cimd: docs.cimd_config(),
        routes: vec![RouteConfig {
            prefix: "/mcp".into(),
            upstream: upstream.url.clone(),
            scopes: vec!["mcp".into()],
            ..RouteConfig::default()
        }],
        ..Options::default()
    })
    .await;
    let mcp = gw.mcp_url();

    // Off by default: not advertised, and refused like any grant this server does not know of.
    let before = metadata_of(&gw.http, &gw.base).await;
    assert!(!advertises_jwt_bearer(&before), "{before}");
    assert!(
        before
            .get("authorization_grant_profiles_supported")
            .is_none()
    );

    // The MCP client (confidential) whose IdP issues it ID-JAGs; the administrator trusts the IdP.
    let client = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    gw.admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'id-jag', ARRAY[$2], '{mcp,profile}', jwks_uri => $3,
                                             algorithms => '{RS256}')",
            &[&idp, &client.id, &idp_keys],
        )
        .await
        .unwrap();
    // A gateway reading the settings now advertises the grant and the profile.
    let (second, second_base) = gw.second().await;
    let after = metadata_of(&gw.http, &second_base).await;
    assert!(advertises_jwt_bearer(&after), "{after}");
    assert_eq!(
        after["authorization_grant_profiles_supported"],
        json!([ID_JAG_PROFILE])
    );
    second.shutdown(Duration::from_secs(1)).await;

    let id_jag_claims = |jti: &str| {
        let now = now();
        json!({"iss": idp, "sub": "00u-alice", "aud": gw.issuer, "client_id": client.id, "jti": jti,
               "iat": now, "exp": now + 300, "resource": mcp, "scope": "mcp"})
    };
    let id_jag = key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-1"));
    let request = |assertion: String| {
        vec![
            ("grant_type".to_owned(), JWT_BEARER.to_owned()),
            ("assertion".to_owned(), assertion),
        ]
    };
    let post = |pairs: Vec<(String, String)>, auth: Option<String>| {
        let http = &gw.http;
        let url = gw.url("/token");
        async move {
            let pairs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("authorization", a)])
                .unwrap_or_default();
            http.post_form(&url, &pairs, &headers).await
        }
    };
    let tokens = post(request(id_jag.clone()), Some(client.basic())).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let tokens = tokens.json();
    assert_eq!(tokens["token_type"], json!("Bearer"));
    assert_eq!(tokens["scope"], json!("mcp"));
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let claims = gw
        .verify(&access_token, Some(&mcp))
        .expect("bound to the ID-JAG's resource");
    assert_eq!(claims["sub"], json!("00u-alice"));
    assert_eq!(claims["client_id"], json!(client.id));
    assert_eq!(
        docs.hits("/idp/oauth2/v1/keys"),
        1,
        "the IdP's keys were fetched once"
    );

    // The guard lets it through to the MCP server; introspection says it is active.
    let through = gw
        .http
        .get(&mcp, &[("authorization", &bearer(&access_token))])
        .await;
    assert_eq!(through.status, StatusCode::OK, "{}", through.text());
    assert_eq!(upstream.count(), 1);
    let introspected = gw.introspect(&access_token, &client.basic()).await;
    assert_eq!(introspected["active"], json!(true), "{introspected}");
    assert_eq!(introspected["sub"], json!("00u-alice"));

    // Refusals, RFC 6749 §5.2-shaped and never cached.
    let replay = post(request(id_jag.clone()), Some(client.basic())).await;
    replay.assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "replayed ID-JAG");
    assert_eq!(replay.header("cache-control"), Some("no-store"));
    assert!(replay.text().contains("already used"), "{}", replay.text());
    let untyped = key.sign(None, &id_jag_claims("jag-2"));
    post(request(untyped), Some(client.basic()))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant", "no typ");
    let foreign =
        IssuerKey::new("idp-2026").sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-3"));
    post(request(foreign), Some(client.basic()))
        .await
        .assert_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "signed by another key",
        );
    let mut with_details = request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-4")));
    with_details.push(("authorization_details".into(), r#"[{"type":"x"}]"#.into()));
    post(with_details, Some(client.basic())).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "authorization_details",
    );
    post(
        vec![("grant_type".into(), JWT_BEARER.into())],
        Some(client.basic()),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request", "no assertion");
    let other = gw
        .create_client(&NewClient::machine(
            "client_secret_basic",
            &["client_credentials"],
        ))
        .await;
    post(
        request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-5"))),
        Some(other.basic()),
    )
    .await
    .assert_error(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        "an unlisted client",
    );
    post(
        request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-6"))),
        Some(basic(&client.id, "wrong")),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_client", "wrong secret");

    // The client revokes its token (RFC 7009): that token alone, the user's grant stays.
    let revoked = gw.revoke(&access_token, &client.basic()).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert_eq!(
        gw.introspect(&access_token, &client.basic()).await["active"],
        json!(false)
    );
    let second_token = post(
        request(key.sign(Some("oauth-id-jag+jwt"), &id_jag_claims("jag-7"))),
        Some(client.basic()),
    )
    .await
    .ok_json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        gw.introspect(&second_token, &client.basic()).await["active"],
        json!(true)
    );

    // Workload identity: a public client made for the workload presents its service-account token.
    let cluster = docs.url("/cluster");
    let cluster_key = IssuerKey::new("sa-key");
    let workload = gw.public_client(&["mcp"]).await;
    gw.admin
        .execute(
            "SELECT oauth.add_trusted_issuer($1, 'workload', ARRAY[$2], '{mcp}', jwks => $3,
                                             algorithms => '{RS256}',
                                             subjects => '{system:serviceaccount:payments:*}')",
            &[&cluster, &workload, &json!({"keys": [cluster_key.jwk]})],
        )
        .await
        .unwrap();
    let sa_claims = |sub: &str| {
        let now = now();
        json!({"iss": cluster, "sub": sub, "aud": [gw.issuer], "iat": now, "nbf": now, "exp": now + 3600})
    };
    let mut pairs =
        request(cluster_key.sign(None, &sa_claims("system:serviceaccount:payments:api")));
    pairs.push(("client_id".into(), workload.clone()));
    let tokens = post(pairs, None).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.text());
    let tokens = tokens.json();
    assert!(tokens.get("refresh_token").is_none());
    let workload_token = tokens["access_token"].as_str().unwrap().to_owned();
    let claims = gw.verify(&workload_token, Some(&mcp)).unwrap();
    assert_eq!(claims["sub"], json!("system:serviceaccount:payments:api"));
    assert_eq!(claims["client_id"], json!(workload));
    let through = gw
        .http
        .get(&mcp, &[("authorization", &bearer(&workload_token))])
        .await;
    assert_eq!(through.status, StatusCode::OK, "{}", through.text());
    let mut pairs =
        request(cluster_key.sign(None, &sa_claims("system:serviceaccount:default:api")));
    pairs.push(("client_id".into(), workload.clone()));
    post(pairs, None).await.assert_error(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        "a subject outside the rules",
    );
    gw.stop().await;
}
