//! A separately started `retail-api`: its own HTTP contract, `rest-mcp-server --base-url` in
//! front of it over stdio and HTTP, and the caller's trace context and correlation id arriving at
//! the API.

mod common;

use serde_json::{Value, json};
use testkit::call_ok;

use common::{RetailApi, args, call_traced, connect};

#[tokio::test]
async fn the_api_answers_json_with_proper_status_codes() -> anyhow::Result<()> {
    let api = RetailApi::start(&[]).await?;

    let (status, _, health) = api.get("/health").await?;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["products"], retail_seed::PRODUCT_COUNT);
    assert_eq!(health["orders"], retail_seed::ORDER_COUNT);

    let (status, _, product) = api.get("/products/PROD-003").await?;
    assert_eq!(status, 200);
    assert_eq!(
        product["name"],
        retail_seed::dataset().products[2].name.as_str()
    );
    let (status, _, list) = api.get("/products").await?;
    assert_eq!((status, list["count"].clone()), (200, json!(50)));
    let (status, _, warehouses) = api.get("/warehouses").await?;
    assert_eq!(status, 200);
    assert_eq!(warehouses["items"].as_array().map(Vec::len), Some(3));

    for (path, code, status) in [
        ("/products/PROD-999", "not_found", 404),
        ("/inventory/PROD-999", "not_found", 404),
        ("/shipments/ORD-09999", "not_found", 404),
        ("/products/nope", "invalid_id", 400),
        ("/inventory/PROD-1", "invalid_id", 400),
        ("/shipments/ORD-1", "invalid_id", 400),
        ("/products/..%2Fhealth", "invalid_id", 400),
        ("/no/such/thing", "no_route", 404),
    ] {
        let (got, _, body) = api.get(path).await?;
        assert_eq!(got, status, "{path}");
        assert_eq!(body["error"]["code"], code, "{path}");
        assert_eq!(body["error"]["status"], status, "{path}");
        assert!(body["error"]["message"].is_string());
    }

    // The debug endpoint exists only when asked for.
    let (status, _, _) = api.get("/debug/last-traceparent").await?;
    assert_eq!(status, 404);

    // Read-only: other methods get a JSON 405.
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!("{}/inventory", api.url))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    Ok(())
}

#[tokio::test]
async fn the_apis_fault_flags_answer_429_and_503_but_never_on_health() -> anyhow::Result<()> {
    let throttling = RetailApi::start(&["--throttle-rate", "1", "--retry-after-secs", "4"]).await?;
    let (status, retry_after, body) = throttling.get("/inventory").await?;
    assert_eq!(status, 429);
    assert_eq!(retry_after.as_deref(), Some("4"));
    assert_eq!(body["error"]["code"], "throttled");
    let (status, _, _) = throttling.get("/health").await?;
    assert_eq!(status, 200);

    let failing = RetailApi::start(&["--failure-rate", "1"]).await?;
    let (status, retry_after, body) = failing.get("/stock/low").await?;
    assert_eq!(status, 503);
    // 503s announce a wait too: `--retry-after-secs`, 1 s by default.
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, _, _) = failing.get("/health").await?;
    assert_eq!(status, 200);

    // Half the requests fail with a seed; the same seed fails the same requests.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let api = RetailApi::start(&["--failure-rate", "0.5", "--seed", "11"]).await?;
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(api.get("/warehouses").await?.0);
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(
        runs[0].contains(&200) && runs[0].contains(&503),
        "{:?}",
        runs[0]
    );
    Ok(())
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn every_tool_works_through_a_base_url_and_carries_the_callers_trace() -> anyhow::Result<()> {
    let api = RetailApi::start(&["--debug-endpoints"]).await?;
    let before = api.last_trace().await?;
    assert_eq!(before["traceparent"], Value::Null, "nothing seen yet");

    for (n, transport) in ["stdio", "http", "http-stateless"].into_iter().enumerate() {
        let (client, _server) = connect(transport, &args(&["--base-url", &api.url])).await?;
        for (i, (tool, call_args)) in [
            ("check_inventory", json!({})),
            ("check_inventory", json!({ "productId": "PROD-010" })),
            ("check_stock", json!({})),
            ("get_product", json!({ "productId": "PROD-010" })),
            ("get_shipping_status", json!({ "orderId": "ORD-00010" })),
            // The writes carry the trace too; repeating them per transport is what they allow
            // (the same order's reservation, then `alreadyReleased`).
            (
                "reserve_stock",
                json!({ "orderId": "ORD-00010", "lines": [{ "productId": "PROD-010", "quantity": 1 }] }),
            ),
            ("release_reservation", json!({ "reservationId": "RSV-000001" })),
        ]
        .into_iter()
        .enumerate()
        {
            // A distinct parent span per call, so each check sees its own call's header.
            let traceparent = format!("00-{TRACE_ID}-{:016x}-01", 0x1000 * (n + 1) + i + 1);
            let tracestate = format!("mcp=test{i}");
            let result = call_traced(
                &client,
                tool,
                call_args.clone(),
                &traceparent,
                Some(&tracestate),
            )
            .await?;
            assert_ne!(
                result.is_error,
                Some(true),
                "{transport} {tool}: {:?}",
                result.content
            );
            assert!(result.structured_content.is_some());
            let seen = api.last_trace().await?;
            // With OpenTelemetry export off (as here) the header is the caller's, verbatim; with
            // export on it would name this server's client span in the same trace.
            assert_eq!(
                seen["traceparent"],
                traceparent.as_str(),
                "{transport} {tool}"
            );
            assert_eq!(
                seen["tracestate"],
                tracestate.as_str(),
                "{transport} {tool}"
            );
        }
        // Without `_meta`, no trace context is invented and the last one stays.
        let last = api.last_trace().await?;
        call_ok(&client, "check_stock", json!({})).await?;
        assert_eq!(api.last_trace().await?, last);
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn base_url_and_bundled_api_give_the_same_answers() -> anyhow::Result<()> {
    let api = RetailApi::start(&[]).await?;
    let (fronting, _a) = connect("stdio", &args(&["--base-url", &api.url])).await?;
    let (bundled, _b) = connect("stdio", &[]).await?;
    for (tool, call_args) in [
        ("check_inventory", json!({})),
        ("check_stock", json!({})),
        ("get_product", json!({ "productId": "PROD-025" })),
        ("get_shipping_status", json!({ "orderId": "ORD-01999" })),
    ] {
        assert_eq!(
            call_ok(&fronting, tool, call_args.clone()).await?,
            call_ok(&bundled, tool, call_args).await?,
            "{tool}"
        );
    }
    fronting.cancel().await?;
    bundled.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn with_span_export_on_the_api_sees_this_servers_span_in_the_callers_trace()
-> anyhow::Result<()> {
    let api = RetailApi::start(&["--debug-endpoints"]).await?;
    // A collector address where nothing listens: export fails quietly, spans still get ids.
    let collector = common::closed_base_url()?;
    let env = std::collections::HashMap::from([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), collector),
        (
            "OTEL_TRACES_SAMPLER".to_owned(),
            "parentbased_always_on".to_owned(),
        ),
    ]);
    let server =
        testkit::HttpServer::start_with_env(common::SERVER, &args(&["--base-url", &api.url]), &env)
            .await?;
    let client = server.connect(None).await?;
    let caller = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let result = call_traced(&client, "check_stock", json!({}), &caller, None).await?;
    assert_ne!(result.is_error, Some(true), "{:?}", result.content);
    let seen = api.last_trace().await?;
    let seen = seen["traceparent"].as_str().unwrap_or_default().to_owned();
    assert!(
        seen.starts_with(&format!("00-{TRACE_ID}-")),
        "same trace: {seen}"
    );
    assert_ne!(
        seen, caller,
        "the parent is this server's client span, not the caller's"
    );
    assert!(seen.ends_with("-01"), "still sampled: {seen}");
    client.cancel().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_apis_log_lines_name_the_tool_calls_correlation_id() -> anyhow::Result<()> {
    use rmcp::model::{CallToolRequestParams, RequestMetaObject, RequestParamsMeta};
    // Every /stock request gets an injected 503, which the API logs while serving it.
    let api = RetailApi::start(&["--log-format", "json", "--fail-routes", "stock"]).await?;
    let (client, _server) = connect("stdio", &args(&["--base-url", &api.url])).await?;
    let mut meta = RequestMetaObject::new();
    meta.insert("correlationId".into(), json!("corr-api-42"));
    let mut params = CallToolRequestParams::new("check_stock");
    params.set_meta(meta);
    let result = client.call_tool(params).await?;
    let error = common::tool_error(&result)?;
    assert_eq!(error.kind, kit::ErrorKind::Unavailable, "{}", error.message);

    let injected = |lines: &[String]| {
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "injected 503")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        if let Some(line) = injected(&api.log_lines()) {
            break line;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no injected 503 logged: {:?}",
            api.log_lines()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(line["correlation_id"], "corr-api-42", "{line}");
    client.cancel().await?;

    // Called directly, the API echoes an id it is given and makes one up otherwise.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let echoed = http
        .get(format!("{}/warehouses", api.url))
        .header("X-Correlation-ID", "direct-1")
        .send()
        .await?;
    assert_eq!(
        echoed
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("direct-1")
    );
    let made = http.get(format!("{}/warehouses", api.url)).send().await?;
    let made = made
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        made.len() == 32 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );
    Ok(())
}
