//! What both transports' tests check: every tool, listed and called, with its error paths.

use serde_json::{Value, json};
use testkit::{Client, call, call_ok, error_kind, text_of};

pub const TOOLS: [&str; 9] = [
    "get_customer",
    "get_customer_orders",
    "get_order_details",
    "get_top_customers",
    "calculate_metrics",
    "get_sales_by_region",
    "create_order",
    "cancel_order",
    "query",
];

/// Lists the tools and checks names, schemas and annotations.
pub async fn check_catalog(client: &Client) -> anyhow::Result<()> {
    let tools = client.list_all_tools().await?;
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    let mut expected = TOOLS.to_vec();
    expected.sort();
    assert_eq!(names, expected);
    for tool in &tools {
        assert!(
            tool.output_schema.is_some(),
            "{} has an output schema",
            tool.name
        );
        assert!(tool.description.is_some(), "{} is described", tool.name);
        let ann = tool.annotations.as_ref().expect("annotations");
        let read_only = ann.read_only_hint == Some(true);
        assert_eq!(
            read_only,
            !["create_order", "cancel_order"].contains(&tool.name.as_ref()),
            "{} read-only hint",
            tool.name
        );
    }
    let create = tools
        .iter()
        .find(|t| t.name == "create_order")
        .expect("create_order");
    let ann = create.annotations.as_ref().expect("annotations");
    assert_eq!(ann.idempotent_hint, Some(true));
    assert_eq!(ann.destructive_hint, Some(false));
    let props = &create.input_schema["properties"];
    assert!(
        props.get("idempotencyKey").is_some(),
        "camelCase arguments: {props}"
    );
    let cancel = tools
        .iter()
        .find(|t| t.name == "cancel_order")
        .expect("cancel_order");
    let ann = cancel.annotations.as_ref().expect("annotations");
    assert_eq!(ann.read_only_hint, Some(false));
    assert_eq!(ann.destructive_hint, Some(true));
    assert_eq!(ann.idempotent_hint, Some(true));
    let props = &cancel.input_schema["properties"];
    assert!(
        props.get("orderId").is_some() && props.get("reason").is_some(),
        "camelCase arguments: {props}"
    );
    Ok(())
}

/// Calls every tool once with good arguments and checks the answers hang together.
pub async fn call_every_tool(client: &Client, key: &str) -> anyhow::Result<Value> {
    let customer = call_ok(client, "get_customer", json!({ "customerId": "CUST-0001" })).await?;
    assert_eq!(customer["customerId"], "CUST-0001");
    assert!(customer["email"].as_str().is_some_and(|e| e.contains('@')));

    let orders = call_ok(
        client,
        "get_customer_orders",
        json!({ "customerId": "CUST-0001", "limit": 3 }),
    )
    .await?;
    assert!(
        orders["count"]
            .as_u64()
            .is_some_and(|n| (1..=3).contains(&n))
    );

    let order = call_ok(
        client,
        "get_order_details",
        json!({ "orderId": "ORD-00001" }),
    )
    .await?;
    assert_eq!(order["orderId"], "ORD-00001");
    let lines = order["lines"].as_array().expect("lines");
    assert!(!lines.is_empty());
    let line_sum: f64 = lines
        .iter()
        .map(|l| l["lineTotal"].as_f64().unwrap_or(0.0))
        .sum();
    assert!((line_sum - order["total"].as_f64().unwrap_or(-1.0)).abs() < 0.01);

    let top = call_ok(
        client,
        "get_top_customers",
        json!({ "limit": 5, "by": "orders" }),
    )
    .await?;
    let ranked = top["customers"].as_array().expect("customers");
    assert_eq!(ranked.len(), 5);
    assert!(
        ranked
            .windows(2)
            .all(|w| w[0]["orderCount"].as_i64() >= w[1]["orderCount"].as_i64())
    );

    let sales = call_ok(
        client,
        "calculate_metrics",
        json!({ "metricType": "sales", "period": "2026-Q1" }),
    )
    .await?;
    let count = call_ok(
        client,
        "calculate_metrics",
        json!({ "metricType": "orders", "period": "2026-Q1" }),
    )
    .await?;
    let basket = call_ok(
        client,
        "calculate_metrics",
        json!({ "metricType": "average_basket", "period": "2026-Q1" }),
    )
    .await?;
    let revenue = sales["value"].as_f64().expect("sales");
    let n = count["value"].as_f64().expect("orders");
    assert!(revenue > 0.0 && n > 0.0);
    assert!((basket["value"].as_f64().expect("basket") - revenue / n).abs() < 0.01);

    let regions = call_ok(
        client,
        "get_sales_by_region",
        json!({ "period": "2026-Q1" }),
    )
    .await?;
    assert!((regions["totalRevenue"].as_f64().expect("total") - revenue).abs() < 0.01);

    let created = call_ok(
        client,
        "create_order",
        json!({
            "customerId": "CUST-0002",
            "lines": [{ "productId": "PROD-003", "quantity": 2 }],
            "idempotencyKey": key
        }),
    )
    .await?;
    assert_eq!(created["order"]["customerId"], "CUST-0002");

    let rows = call_ok(
        client,
        "query",
        json!({ "sql": "SELECT id, status FROM orders WHERE id = ?1", "params": [created["order"]["orderId"]] }),
    )
    .await?;
    assert_eq!(rows["columns"], json!(["id", "status"]));
    assert_eq!(rows["rows"][0][1], "processing");
    Ok(created)
}

/// Bad input gets the right kind of error, naming what was wrong.
pub async fn check_errors(client: &Client) -> anyhow::Result<()> {
    let missing = call(client, "get_customer", json!({ "customerId": "CUST-9999" })).await?;
    assert_eq!(error_kind(&missing).as_deref(), Some("not_found"));
    assert!(text_of(&missing).contains("CUST-9999"));
    let meta = missing.meta.as_ref().expect("error _meta");
    assert_eq!(meta.get("retryable"), Some(&json!(false)));

    let missing_order = call(
        client,
        "get_order_details",
        json!({ "orderId": "ORD-99999" }),
    )
    .await?;
    assert_eq!(error_kind(&missing_order).as_deref(), Some("not_found"));
    assert!(text_of(&missing_order).contains("ORD-99999"));

    // An unknown customer is not a customer without orders: an empty list would hide a typo.
    let missing_orders = call(
        client,
        "get_customer_orders",
        json!({ "customerId": "CUST-9999" }),
    )
    .await?;
    assert_eq!(
        error_kind(&missing_orders).as_deref(),
        Some("not_found"),
        "{}",
        text_of(&missing_orders)
    );
    assert!(
        text_of(&missing_orders).contains("CUST-9999"),
        "{}",
        text_of(&missing_orders)
    );
    let meta = missing_orders.meta.as_ref().expect("error _meta");
    assert_eq!(meta.get("retryable"), Some(&json!(false)));

    // Schema violations are tool errors of kind `invalid` naming the argument (MCP 2025-11-25
    // reports input validation as tool errors so a model can correct its call).
    for (tool, args, field) in [
        ("get_customer", json!({}), "customerId"),
        ("get_customer", json!({ "customerId": 7 }), "customerId"),
        (
            "get_customer",
            json!({ "customerId": "CUST-0001", "extra": 1 }),
            "extra",
        ),
        (
            "calculate_metrics",
            json!({ "metricType": "sales", "period": "someday" }),
            "period",
        ),
        (
            "calculate_metrics",
            json!({ "metricType": "profit" }),
            "metricType",
        ),
        ("get_top_customers", json!({ "limit": 0 }), "limit"),
        (
            "get_top_customers",
            json!({ "since": "last tuesday" }),
            "since",
        ),
        ("query", json!({ "sql": "  " }), "sql"),
        ("query", json!({ "sql": "SELECT ?1" }), "params"),
        (
            "create_order",
            json!({ "customerId": "CUST-0001", "lines": [{ "productId": "PROD-001", "quantity": 0 }], "idempotencyKey": "q0" }),
            "lines[0].quantity",
        ),
    ] {
        let result = call(client, tool, args.clone()).await?;
        assert_eq!(
            error_kind(&result).as_deref(),
            Some("invalid"),
            "{tool} {args}: {}",
            text_of(&result)
        );
        assert!(
            text_of(&result).contains(field),
            "{tool} {args} names {field}: {}",
            text_of(&result)
        );
        let meta = result.meta.as_ref().expect("meta");
        assert_eq!(meta.get("retryable"), Some(&json!(false)));
    }

    for sql in [
        "INSERT INTO products (id, name, category, price_cents) VALUES ('P', 'x', 'x', 1)",
        "UPDATE orders SET status = 'cancelled'",
        "DELETE FROM customers",
        "DROP TABLE orders",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "PRAGMA writable_schema = 1",
    ] {
        let refused = call(client, "query", json!({ "sql": sql })).await?;
        assert_eq!(
            error_kind(&refused).as_deref(),
            Some("invalid"),
            "{sql}: {}",
            text_of(&refused)
        );
        assert!(text_of(&refused).contains("read-only"), "{sql}");
    }
    let broken = call(client, "query", json!({ "sql": "SELEKT 1" })).await?;
    assert_eq!(error_kind(&broken).as_deref(), Some("invalid"));
    assert!(
        text_of(&broken).contains("syntax error"),
        "{}",
        text_of(&broken)
    );

    let bad_line = call(
        client,
        "create_order",
        json!({ "customerId": "CUST-0001", "lines": [{ "productId": "PROD-404", "quantity": 1 }], "idempotencyKey": "bad-line" }),
    )
    .await?;
    assert_eq!(error_kind(&bad_line).as_deref(), Some("not_found"));
    assert!(text_of(&bad_line).contains("PROD-404"));
    Ok(())
}
