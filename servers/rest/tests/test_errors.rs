//! Each class of HTTP answer (and no answer at all) becomes the right tool error, with the right
//! retryability, over the real binaries: faults are driven through the bundled API's flags.

mod common;

use kit::ErrorKind;
use serde_json::json;
use testkit::{call, call_ok};

use common::{RetailApi, args, closed_base_url, connect, tool_error};

/// The HTTP status the API answered, from `_meta.httpStatus`.
fn http_status(e: &kit::ToolError) -> Option<u64> {
    e.extra_meta.get("httpStatus").and_then(|v| v.as_u64())
}

#[tokio::test]
async fn a_503_is_unavailable_and_retryable() -> anyhow::Result<()> {
    for transport in ["stdio", "http"] {
        let (client, _server) = connect(
            transport,
            &args(&["--api-failure-rate", "1", "--api-seed", "3"]),
        )
        .await?;
        let result = call(&client, "check_stock", json!({})).await?;
        let e = tool_error(&result)?;
        assert_eq!(e.kind, ErrorKind::Unavailable, "{transport}: {}", e.message);
        assert!(e.retryable, "{transport}");
        assert_eq!(http_status(&e), Some(503), "{transport}");
        assert!(e.message.contains("503"), "{}", e.message);
        // The API's injected 503s carry `Retry-After` (`--api-retry-after-secs`, default 1 s).
        assert_eq!(e.retry_after_ms, Some(1000), "{transport}");
        let meta = result.meta.as_ref().map(|m| &m.0);
        assert_eq!(meta.and_then(|m| m.get("retryAfterMs")), Some(&json!(1000)));
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_503_carries_the_configured_retry_after() -> anyhow::Result<()> {
    // The standalone API announces its wait on the wire, and the MCP server passes it on.
    let api = RetailApi::start(&["--fail-routes", "stock", "--retry-after-secs", "4"]).await?;
    let (status, retry_after, body) = api.get("/stock/low").await?;
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("4"));
    assert_eq!(body["error"]["code"], "unavailable");

    let (client, _server) = connect("stdio", &args(&["--base-url", &api.url])).await?;
    let result = call(&client, "check_stock", json!({})).await?;
    let e = tool_error(&result)?;
    assert_eq!(e.kind, ErrorKind::Unavailable, "{}", e.message);
    assert!(e.retryable);
    assert_eq!(e.retry_after_ms, Some(4000));
    assert_eq!(http_status(&e), Some(503));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_order_not_yet_shipped_is_not_found_and_says_so() -> anyhow::Result<()> {
    // ORD-02001 is the first id `create_order` hands out on the SQL server; the shipping system
    // has not received it.
    let (client, _server) = connect("stdio", &[]).await?;
    let e = tool_error(
        &call(
            &client,
            "get_shipping_status",
            json!({ "orderId": "ORD-02001" }),
        )
        .await?,
    )?;
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
    assert!(!e.retryable);
    assert_eq!(http_status(&e), Some(404));
    assert!(
        e.message.contains("no shipment for order `ORD-02001` yet"),
        "{}",
        e.message
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_429_is_throttled_with_the_retry_after_of_the_api() -> anyhow::Result<()> {
    for transport in ["stdio", "http"] {
        let (client, _server) = connect(
            transport,
            &args(&["--api-throttle-rate", "1", "--api-retry-after-secs", "2"]),
        )
        .await?;
        let result = call(&client, "get_product", json!({ "productId": "PROD-001" })).await?;
        let e = tool_error(&result)?;
        assert_eq!(e.kind, ErrorKind::Throttled, "{transport}: {}", e.message);
        assert!(e.retryable);
        assert_eq!(e.retry_after_ms, Some(2000));
        assert_eq!(http_status(&e), Some(429));
        // And on the wire, as the orchestrator reads it.
        let meta = result.meta.as_ref().map(|m| &m.0);
        assert_eq!(meta.and_then(|m| m.get("retryAfterMs")), Some(&json!(2000)));
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_rate_limit_throttles_the_request_over_it() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &args(&["--api-rate-limit-rps", "1"])).await?;
    call_ok(&client, "check_stock", json!({})).await?;
    let e = tool_error(&call(&client, "check_stock", json!({})).await?)?;
    assert_eq!(e.kind, ErrorKind::Throttled, "{}", e.message);
    assert!(e.retryable);
    assert_eq!(e.retry_after_ms, Some(1000));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_malformed_ids_invalid() -> anyhow::Result<()> {
    for transport in ["stdio", "http"] {
        let (client, _server) = connect(transport, &[]).await?;
        for (tool, args) in [
            ("get_product", json!({ "productId": "PROD-999" })),
            ("check_inventory", json!({ "productId": "PROD-000" })),
            ("get_shipping_status", json!({ "orderId": "ORD-99999" })),
        ] {
            let e = tool_error(&call(&client, tool, args).await?)?;
            assert_eq!(
                e.kind,
                ErrorKind::NotFound,
                "{transport} {tool}: {}",
                e.message
            );
            assert!(!e.retryable);
            assert_eq!(e.retry_after_ms, None);
            assert_eq!(http_status(&e), Some(404));
        }
        for (tool, args) in [
            ("get_product", json!({ "productId": "SKU-1" })),
            ("check_inventory", json!({ "productId": "PROD-7" })),
            ("get_shipping_status", json!({ "orderId": "order 12" })),
            // Neither escapes the product path: the API sees one odd id and answers 400. Had
            // `../health` reached /health, the answer would not decode as a product (internal).
            ("get_product", json!({ "productId": "../health" })),
            (
                "get_product",
                json!({ "productId": "../../inventory?x=1#y" }),
            ),
            (
                "get_product",
                json!({ "productId": "http://127.0.0.1:1/products/PROD-001" }),
            ),
        ] {
            let e = tool_error(&call(&client, tool, args.clone()).await?)?;
            assert_eq!(
                e.kind,
                ErrorKind::Invalid,
                "{transport} {tool} {args}: {}",
                e.message
            );
            assert!(!e.retryable);
            assert_eq!(http_status(&e), Some(400), "{args}");
        }
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn ids_that_cannot_be_a_path_segment_are_refused_before_any_request() -> anyhow::Result<()> {
    // Against a closed port: had a request been made, the error would be `unavailable`.
    let base = closed_base_url()?;
    let (client, _server) = connect("stdio", &args(&["--base-url", &base])).await?;
    for (tool, args, field) in [
        ("get_product", json!({ "productId": ".." }), "productId"),
        ("get_product", json!({ "productId": "" }), "productId"),
        ("check_inventory", json!({ "productId": "." }), "productId"),
        (
            "get_shipping_status",
            json!({ "orderId": "ORD\n1" }),
            "orderId",
        ),
    ] {
        let e = tool_error(&call(&client, tool, args.clone()).await?)?;
        assert_eq!(e.kind, ErrorKind::Invalid, "{args}: {}", e.message);
        assert!(!e.retryable);
        assert_eq!(e.extra_meta.get("field"), Some(&json!(field)), "{args}");
        assert_eq!(http_status(&e), None, "{args}: no request was made");
    }
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_api_that_is_down_is_unavailable_and_retryable() -> anyhow::Result<()> {
    for transport in ["stdio", "http"] {
        let base = closed_base_url()?;
        let (client, _server) = connect(transport, &args(&["--base-url", &base])).await?;
        for (tool, args) in [
            ("check_inventory", json!({})),
            ("check_stock", json!({})),
            ("get_product", json!({ "productId": "PROD-001" })),
            ("get_shipping_status", json!({ "orderId": "ORD-00001" })),
        ] {
            let e = tool_error(&call(&client, tool, args).await?)?;
            assert_eq!(
                e.kind,
                ErrorKind::Unavailable,
                "{transport} {tool}: {}",
                e.message
            );
            assert!(e.retryable);
            assert_eq!(http_status(&e), None, "no HTTP answer");
            assert!(e.message.contains("cannot connect"), "{}", e.message);
        }
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_slow_api_times_out_as_unavailable() -> anyhow::Result<()> {
    let (client, _server) = connect(
        "stdio",
        &args(&["--api-latency-ms", "5000", "--api-timeout-ms", "300"]),
    )
    .await?;
    // Without the client timeout the API would answer after 5 s and the call would succeed.
    let e = tool_error(&call(&client, "check_stock", json!({})).await?)?;
    assert_eq!(e.kind, ErrorKind::Unavailable, "{}", e.message);
    assert!(e.retryable);
    assert!(
        e.message.contains("did not answer in time"),
        "{}",
        e.message
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_failing_route_fails_only_its_tool() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &args(&["--api-fail-routes", "shipments"])).await?;
    let e = tool_error(
        &call(
            &client,
            "get_shipping_status",
            json!({ "orderId": "ORD-00001" }),
        )
        .await?,
    )?;
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert_eq!(http_status(&e), Some(503));
    call_ok(&client, "check_stock", json!({})).await?;
    call_ok(&client, "get_product", json!({ "productId": "PROD-001" })).await?;
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn mcp_level_faults_still_apply() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &args(&["--fail-tools", "check_stock"])).await?;
    let e = tool_error(&call(&client, "check_stock", json!({})).await?)?;
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert_eq!(e.extra_meta.get("injected"), Some(&json!(true)));
    call_ok(&client, "check_inventory", json!({})).await?;
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn bundled_api_faults_are_refused_with_a_base_url() -> anyhow::Result<()> {
    let output = tokio::process::Command::new(testkit::bin_path(common::SERVER)?)
        .args([
            "--base-url",
            "http://127.0.0.1:9",
            "--api-failure-rate",
            "0.5",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--api-"), "{stderr}");
    Ok(())
}
