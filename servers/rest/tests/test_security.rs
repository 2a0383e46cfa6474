//! No SSRF: whatever a tool's arguments hold, `rest-mcp-server` sends requests only to its
//! configured base URL, under its base path, with each argument as exactly one path segment, and
//! never follows a redirect elsewhere.
//!
//! The URL building is unit-tested in `src/path.rs`; ids that cannot be a segment at all (`..`,
//! control characters) are refused before any request in `test_errors.rs`. This test watches the
//! wire: the base URL is a server of this test that records every request it gets, and a second
//! one, named in the hostile ids, must get none.

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use testkit::call;

use common::args;

/// One request as a recorder saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Path and query exactly as sent (still percent-encoded).
    target: String,
    /// The Host header.
    host: String,
}

/// An HTTP server that records every request, answers 404, and redirects `…/REDIRECT` to
/// `redirect_to`.
#[derive(Debug, Clone)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    redirect_to: Option<String>,
}

impl Recorder {
    /// Serves on a free loopback port; returns the recorder and its address.
    async fn start(redirect_to: Option<String>) -> anyhow::Result<(Self, SocketAddr)> {
        let recorder = Self {
            seen: Arc::default(),
            redirect_to,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(record).with_state(recorder.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((recorder, addr))
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn record(State(recorder): State<Recorder>, request: Request) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    recorder
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Seen {
            target: target.clone(),
            host,
        });
    match &recorder.redirect_to {
        Some(to) if target.ends_with("/REDIRECT") => {
            (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response()
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "not_found", "message": "recorded" })),
        )
            .into_response(),
    }
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> anyhow::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).context("truncated escape")?;
            out.push(u8::from_str_radix(hex, 16)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8(out)?)
}

#[tokio::test]
async fn hostile_ids_reach_only_the_base_url_as_one_encoded_segment() -> anyhow::Result<()> {
    let (evil, evil_addr) = Recorder::start(None).await?;
    let evil_url = format!("http://{evil_addr}/steal");
    let (api, api_addr) = Recorder::start(Some(evil_url.clone())).await?;
    let base = format!("http://{api_addr}/api/v1");
    let (client, _server) = common::connect("stdio", &args(&["--base-url", &base])).await?;

    let hostile = [
        "../../admin".to_owned(),
        "../../../../../etc/passwd".to_owned(),
        "a/../../b".to_owned(),
        "..%2F..%2Fadmin".to_owned(),
        "%2e%2e".to_owned(),
        "%2e%2e%2f%2e%2e%2fadmin".to_owned(),
        "..;/admin".to_owned(),
        "\\..\\..\\admin".to_owned(),
        "．．／admin".to_owned(),
        evil_url.clone(),
        format!("//{evil_addr}/x"),
        format!("@{evil_addr}"),
        format!("user@{evil_addr}/x"),
        format!("http:{evil_addr}"),
        "x?next=http://evil.example/".to_owned(),
        "x#http://evil.example/".to_owned(),
        "x y".to_owned(),
        "%00".to_owned(),
        "REDIRECT".to_owned(),
    ];
    let tools = [
        ("get_product", "productId", "products"),
        ("check_inventory", "productId", "inventory"),
        ("get_shipping_status", "orderId", "shipments"),
    ];
    for (tool, arg, _) in tools {
        for id in &hostile {
            let result = call(&client, tool, json!({ arg: id })).await?;
            assert_eq!(
                result.is_error,
                Some(true),
                "{tool} {id}: the recorder knows no such thing"
            );
        }
    }
    client.cancel().await?;

    assert!(
        evil.seen().is_empty(),
        "a request left for another server: {:?}",
        evil.seen()
    );
    let seen = api.seen();
    let api_host = api_addr.to_string();
    let mut calls = 0;
    for s in &seen {
        assert_eq!(s.host, api_host, "{s:?}");
        assert!(!s.target.contains('?'), "no query string: {s:?}");
        let rest = s
            .target
            .strip_prefix("/api/v1/")
            .with_context(|| format!("under the base path: {s:?}"))?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments[..] {
            [route, id] => {
                assert!(
                    tools.iter().any(|(_, _, r)| *r == route),
                    "a route of a tool: {s:?}"
                );
                let id = percent_decode(id)?;
                assert!(hostile.contains(&id), "the whole id, once decoded: {s:?}");
                calls += 1;
            }
            // A probe of the API itself (e.g. `/health`) carries no argument.
            [_] => {}
            _ => panic!("one segment per argument: {s:?}"),
        }
    }
    assert_eq!(
        calls,
        hostile.len() * tools.len(),
        "every hostile id was sent, each exactly once: {seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_base_url_is_a_flag_and_never_a_tool_argument() -> anyhow::Result<()> {
    let (evil, evil_addr) = Recorder::start(None).await?;
    let (api, api_addr) = Recorder::start(None).await?;
    let base = format!("http://{api_addr}");
    let (client, _server) = common::connect("stdio", &args(&["--base-url", &base])).await?;
    let tools = client.list_all_tools().await?;
    for tool in &tools {
        let properties: Vec<String> = tool
            .input_schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for name in &properties {
            let lower = name.to_ascii_lowercase();
            assert!(
                !["url", "host", "base", "endpoint", "path"]
                    .iter()
                    .any(|w| lower.contains(w)),
                "{}: argument `{name}` could steer the request",
                tool.name
            );
        }
        // Arguments a model might try to slip in: refused as unknown, or ignored; never used.
        let mut sneaky = serde_json::Map::new();
        for name in &properties {
            sneaky.insert(name.clone(), json!("PROD-001"));
        }
        for name in ["baseUrl", "url", "host", "endpoint"] {
            sneaky.insert(name.into(), json!(format!("http://{evil_addr}/")));
        }
        call(&client, &tool.name, serde_json::Value::Object(sneaky)).await?;
    }
    client.cancel().await?;
    assert!(evil.seen().is_empty(), "{:?}", evil.seen());
    assert!(
        api.seen().iter().all(|s| s.host == api_addr.to_string()),
        "{:?}",
        api.seen()
    );
    assert!(!tools.is_empty());
    Ok(())
}
