//! A loopback HTTPS server with its own test CA, serving JSON documents (client metadata, key
//! sets) for the gateway's guarded fetcher, and the signing provider the JOSE-signing tests need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response as HttpResponse;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use oauth_gateway::config::CimdConfig;

use super::random_suffix;

/// The gateway in this test binary verifies with whatever jsonwebtoken provider is installed
/// first; signing needs RustCrypto's, so it is installed before any gateway starts.
pub fn install_signing_provider() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// A loopback HTTPS server (its own test CA) answering JSON at paths, counting hits.
pub struct DocumentServer {
    base: String,
    ca_file: std::path::PathBuf,
    answers: Arc<Mutex<HashMap<String, Value>>>,
    hits: Arc<Mutex<HashMap<String, Arc<AtomicUsize>>>>,
}

impl DocumentServer {
    pub async fn start() -> Self {
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

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn serve(&self, path: &str, body: Value) {
        self.answers.lock().unwrap().insert(path.to_owned(), body);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |h| h.load(Ordering::SeqCst))
    }

    pub fn cimd_config(&self) -> CimdConfig {
        CimdConfig {
            allow_loopback: true,
            extra_ca_file: Some(self.ca_file.clone()),
            fetch_timeout: Duration::from_secs(2),
            ..CimdConfig::default()
        }
    }
}
