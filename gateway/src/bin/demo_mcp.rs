//! `oauth-demo-mcp`: a small MCP server (Streamable HTTP, stateless JSON responses) meant to run
//! behind the gateway. Its `whoami` tool answers with the identity the gateway forwarded, so a
//! user can see the whole chain work: client → gateway (token checked) → upstream (no token).
//!
//!   oauth-demo-mcp --listen 127.0.0.1:9100

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

fn identity(req: &Request<Incoming>) -> Value {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    json!({
        "subject": header("x-oauth-subject"),
        "client_id": header("x-oauth-client-id"),
        "scope": header("x-oauth-scope"),
        "grant_id": header("x-oauth-grant-id"),
        "props": serde_json::from_str::<Value>(&header("x-oauth-props")).unwrap_or(Value::Null),
        "authorization_header_seen": req.headers().contains_key("authorization"),
    })
}

fn answer(id: &Value, method: &str, params: &Value, who: &Value) -> Value {
    let result = match method {
        "initialize" => json!({
            "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": "oauth-provider-demo", "version": env!("CARGO_PKG_VERSION") },
        }),
        "ping" => json!({}),
        "tools/list" => json!({ "tools": [{
            "name": "whoami",
            "title": "Who am I?",
            "description": "Shows the identity the authorization gateway verified and forwarded for this call.",
            "inputSchema": { "type": "object", "properties": {} },
        }]}),
        "tools/call" if params["name"] == "whoami" => json!({
            "content": [{ "type": "text", "text": format!(
                "You are {} using client {} with scopes \"{}\". Grant props: {}",
                who["subject"], who["client_id"], who["scope"].as_str().unwrap_or(""), who["props"]) }],
            "structuredContent": who,
            "isError": false,
        }),
        "tools/call" => {
            return json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32602, "message": "unknown tool" } });
        }
        _ => {
            return json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32601, "message": "method not found" } });
        }
    };
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn respond(status: StatusCode, body: Option<Value>) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(status);
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    builder
        .body(Full::new(
            body.map(|b| Bytes::from(b.to_string())).unwrap_or_default(),
        ))
        .expect("response")
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, None));
    }
    let who = identity(&req);
    let Ok(body) = Limited::new(req.into_body(), 1 << 20).collect().await else {
        return Ok(respond(StatusCode::PAYLOAD_TOO_LARGE, None));
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return Ok(respond(
            StatusCode::BAD_REQUEST,
            Some(
                json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32700, "message": "parse error" } }),
            ),
        ));
    };
    let method = message["method"].as_str().unwrap_or("");
    match message.get("id") {
        // Notifications and responses get 202 with no body (Streamable HTTP).
        None => Ok(respond(StatusCode::ACCEPTED, None)),
        Some(id) if !method.is_empty() => Ok(respond(
            StatusCode::OK,
            Some(answer(id, method, &message["params"], &who)),
        )),
        Some(_) => Ok(respond(StatusCode::ACCEPTED, None)),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut listen: SocketAddr = "127.0.0.1:9100".parse().expect("literal");
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--listen", Some(addr)) => listen = addr.parse().expect("--listen ADDR:PORT"),
            _ => {
                eprintln!("usage: oauth-demo-mcp [--listen 127.0.0.1:9100]");
                std::process::exit(2);
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!("oauth-demo-mcp listening on http://{listen}/mcp");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}
