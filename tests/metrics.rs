//! `GET /metrics` on the orchestrator's HTTP front after a run with injected failures: exact call,
//! error-by-kind, retry, latency-count and cache figures per server, a composite's latency and step
//! outcomes, and the bearer token guarding the endpoint.

use std::{collections::HashMap, time::Duration};

use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path, call, error_kind};

const TOKEN: &str = "t-metrics";

/// The SQL server with `get_customer` always failing (an injected, retryable `unavailable`),
/// one retry per call, a breaker that never opens, `get_order_details` cached, and a composite
/// whose first step is `get_customer` (with a fallback) and second `get_customer_orders`.
fn config(dir: &TempDir) -> anyhow::Result<String> {
    let cfg = json!({
        "mcpServers": { "sql": {
            "command": bin_path("sql-mcp-server")?,
            "args": ["--data-dir", dir.path().join("sql"), "--fail-tools", "get_customer"]
        } },
        "orchestrator": {
            "servers": { "sql": {
                "retry": {
                    "maxAttempts": 2, "baseDelayMs": 1, "maxDelayMs": 5,
                    "budgetRatio": 1.0, "budgetMinPerSecond": 100
                },
                "circuitBreaker": { "consecutiveFailures": 0, "failureRate": 1.0 }
            } },
            "cache": { "tools": { "sql.get_order_details": "short" } },
            "composites": { "customer_card": {
                "title": "Customer card",
                "description": "A customer and their orders.",
                "input": {
                    "type": "object",
                    "properties": { "customerId": { "type": "string" } },
                    "required": ["customerId"]
                },
                "steps": {
                    "customer": {
                        "call": "sql.get_customer",
                        "args": { "customerId": "${input.customerId}" },
                        "fallback": { "name": "unknown" }
                    },
                    "orders": {
                        "call": "sql.get_customer_orders",
                        "args": { "customerId": "${input.customerId}", "limit": 3 },
                        "critical": true
                    }
                },
                "output": { "customer": "${customer}", "orders": "${orders.totalOrders}" }
            } }
        }
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg)?)?;
    Ok(path.display().to_string())
}

/// `GET url` with an optional bearer token: status, content type and body.
async fn get(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String, String)> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, content_type, response.text().await?))
}

/// The value of the sample `name{labels}` (labels in any order), if exposed.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut found: Vec<String> = rest
                .strip_suffix('}')?
                .split(",")
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            found.sort();
            (metric == name && found == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// Waits until the orchestrator lists the SQL server's tools (listing touches no metric).
async fn wait_for_sql(client: &testkit::Client) -> anyhow::Result<()> {
    for _ in 0..300 {
        let tools = client.list_all_tools().await?;
        if tools.iter().any(|t| t.name == "sql__get_order_details") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the sql server never connected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_calls_errors_retries_cache_and_composites_after_injected_failures()
-> anyhow::Result<()> {
    let dir = TempDir::new("metrics")?;
    let cfg = config(&dir)?;
    let args: Vec<String> = [
        "serve",
        "--config",
        &cfg,
        "--http",
        "127.0.0.1:0",
        "--token",
        TOKEN,
    ]
    .map(str::to_owned)
    .to_vec();
    let server = HttpServer::spawn("mcp-orchestrator", &args, &HashMap::new()).await?;
    let url = format!(
        "{}/metrics",
        server
            .url
            .strip_suffix("/mcp")
            .ok_or_else(|| anyhow::anyhow!("unexpected url {}", server.url))?
    );

    // The endpoint sits behind the same bearer token as /mcp.
    assert_eq!(get(&url, None).await?.0, 401);
    assert_eq!(get(&url, Some("wrong")).await?.0, 401);

    let client = server.connect(Some(TOKEN)).await?;
    wait_for_sql(&client).await?;
    let (status, content_type, before) = get(&url, Some(TOKEN)).await?;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let sql = [("server", "sql")];
    assert_eq!(
        sample(&before, "mcp_orchestrator_breaker_state", &sql),
        Some(0.0),
        "{before}"
    );
    assert!(
        !before.contains("mcp_orchestrator_upstream_calls_total{"),
        "no call yet: {before}"
    );

    // 4 calls that fail (2 attempts each), 3 identical cached reads, 2 reads of a missing order.
    for _ in 0..4 {
        let r = call(
            &client,
            "sql__get_customer",
            json!({ "customerId": "CUST-0001" }),
        )
        .await?;
        assert_eq!(error_kind(&r).as_deref(), Some("unavailable"));
    }
    for _ in 0..3 {
        let r = call(
            &client,
            "sql__get_order_details",
            json!({ "orderId": "ORD-00007" }),
        )
        .await?;
        assert_ne!(r.is_error, Some(true));
    }
    for _ in 0..2 {
        let r = call(
            &client,
            "sql__get_order_details",
            json!({ "orderId": "ORD-99999" }),
        )
        .await?;
        assert_eq!(error_kind(&r).as_deref(), Some("not_found"));
    }
    // The composite: `customer` fails (2 attempts) and takes its fallback, `orders` answers.
    let r = call(
        &client,
        "customer_card",
        json!({ "customerId": "CUST-0002" }),
    )
    .await?;
    assert_ne!(r.is_error, Some(true), "{r:?}");
    let outcomes: Vec<(String, String)> = r
        .meta
        .as_ref()
        .and_then(|m| m.get("sources"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["step"].as_str().unwrap_or_default().to_owned(),
                        s["outcome"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        outcomes.contains(&("customer".into(), "fallback".into()))
            && outcomes.contains(&("orders".into(), "ok".into())),
        "{outcomes:?}"
    );

    let (status, _, text) = get(&url, Some(TOKEN)).await?;
    assert_eq!(status, 200);
    let calls = "mcp_orchestrator_upstream_calls_total";
    let expected_calls = [
        ("get_customer", "error", 5.0),
        ("get_order_details", "ok", 1.0),
        ("get_order_details", "error", 2.0),
        ("get_customer_orders", "ok", 1.0),
    ];
    for (tool, outcome, n) in expected_calls {
        let labels = [("server", "sql"), ("tool", tool), ("outcome", outcome)];
        assert_eq!(
            sample(&text, calls, &labels),
            Some(n),
            "{tool} {outcome}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            calls,
            &[
                ("server", "sql"),
                ("tool", "get_customer"),
                ("outcome", "ok")
            ]
        ),
        None
    );
    let errors = "mcp_orchestrator_upstream_errors_total";
    for (kind, n) in [("unavailable", 5.0), ("not_found", 2.0)] {
        let labels = [("server", "sql"), ("kind", kind)];
        assert_eq!(sample(&text, errors, &labels), Some(n), "{kind}: {text}");
    }
    let latency = "mcp_orchestrator_upstream_duration_seconds";
    assert_eq!(
        sample(&text, &format!("{latency}_count"), &sql),
        Some(9.0),
        "{text}"
    );
    let inf = [("server", "sql"), ("le", "+Inf")];
    assert_eq!(sample(&text, &format!("{latency}_bucket"), &inf), Some(9.0));
    let retries = "mcp_orchestrator_upstream_retries_total";
    assert_eq!(sample(&text, retries, &sql), Some(5.0), "{text}");

    let lookups = "mcp_orchestrator_cache_lookups_total";
    let tool = ("tool", "sql.get_order_details");
    assert_eq!(
        sample(&text, lookups, &[tool, ("result", "hit")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, lookups, &[tool, ("result", "miss")]),
        Some(3.0),
        "{text}"
    );

    let steps = "mcp_orchestrator_composite_steps_total";
    for (step, outcome) in [("customer", "fallback"), ("orders", "ok")] {
        let labels = [
            ("composite", "customer_card"),
            ("step", step),
            ("outcome", outcome),
        ];
        assert_eq!(sample(&text, steps, &labels), Some(1.0), "{step}: {text}");
    }
    let composite = [("composite", "customer_card"), ("outcome", "ok")];
    assert_eq!(
        sample(
            &text,
            "mcp_orchestrator_composite_duration_seconds_count",
            &composite
        ),
        Some(1.0),
        "{text}"
    );

    assert_eq!(
        sample(&text, "mcp_orchestrator_breaker_state", &sql),
        Some(0.0)
    );
    let to_open = [("server", "sql"), ("to", "open")];
    assert_eq!(
        sample(
            &text,
            "mcp_orchestrator_breaker_transitions_total",
            &to_open
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "mcp_orchestrator_bulkhead_in_flight", &sql),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "mcp_orchestrator_bulkhead_rejected_total", &sql),
        Some(0.0)
    );
    assert!(
        text.contains("# TYPE mcp_orchestrator_upstream_calls_total counter\n")
            && text.contains("# TYPE mcp_orchestrator_upstream_duration_seconds histogram\n"),
        "{text}"
    );

    client.cancel().await?;
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_over_otlp_when_an_endpoint_is_set() -> anyhow::Result<()> {
    // A collector inside the test: every body posted to /v1/metrics lands in `received`.
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let collector = axum::Router::new()
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(body.to_vec());
                    axum::http::StatusCode::OK
                }
            }),
        )
        .route(
            "/v1/traces",
            axum::routing::post(|| async { axum::http::StatusCode::OK }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let dir = TempDir::new("metrics-otlp")?;
    let cfg = config(&dir)?;
    let args = ["serve", "--config", &cfg, "--http", "127.0.0.1:0"].map(str::to_owned);
    let env = HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "200".to_owned()),
    ]);
    let server = HttpServer::spawn("mcp-orchestrator", &args, &env).await?;
    let client = server.connect(None).await?;
    wait_for_sql(&client).await?;
    let r = call(
        &client,
        "sql__get_order_details",
        json!({ "orderId": "ORD-00007" }),
    )
    .await?;
    assert_ne!(r.is_error, Some(true));

    // OTLP/protobuf carries names as plain UTF-8, so the instrument's name is in the bytes.
    let needle = b"mcp.orchestrator.upstream.calls";
    let pushed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(body) = received.recv().await {
            if body.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(pushed, "an export carried the upstream call counter");
    client.cancel().await?;
    server.stop().await
}
