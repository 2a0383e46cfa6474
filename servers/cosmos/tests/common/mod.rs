//! Helpers shared by the end-to-end tests: the binary's name, charges, invalid-params errors, and
//! a tour that calls every tool and checks its answer against the shared dataset.

#![allow(dead_code)]

use anyhow::{Context, bail, ensure};
use rmcp::{
    ServiceError,
    model::{CallToolRequestParams, CallToolResult},
};
use serde_json::{Value, json};
use testkit::{Client, call, error_kind};

/// The binary under test.
pub const BIN: &str = "cosmos-mcp-server";

/// The `_meta.requestCharge` of a result (success or tool error).
pub fn charge(result: &CallToolResult) -> anyhow::Result<f64> {
    result
        .meta
        .as_ref()
        .and_then(|m| m.0.get("requestCharge"))
        .and_then(Value::as_f64)
        .with_context(|| format!("no _meta.requestCharge in {result:?}"))
}

/// Calls a tool that must succeed; returns its structured content and charge.
pub async fn call_charged(
    client: &Client,
    tool: &str,
    args: Value,
) -> anyhow::Result<(Value, f64)> {
    let result = call(client, tool, args).await?;
    ensure!(
        result.is_error != Some(true),
        "{tool} failed: {}",
        testkit::text_of(&result)
    );
    let value = result
        .structured_content
        .clone()
        .with_context(|| format!("{tool} returned no structured content"))?;
    Ok((value, charge(&result)?))
}

/// An argument refused by the server, however the kit renders it: a JSON-RPC invalid-params
/// error (`data.field`) or an `invalid` tool error (`_meta.field`).
#[derive(Debug, Clone)]
pub struct ArgumentError {
    /// The argument named.
    pub field: Option<String>,
    /// The human message.
    pub message: String,
    /// The reported request charge.
    pub charge: Option<f64>,
}

/// Calls a tool that must refuse an argument; returns the refusal.
pub async fn invalid_params(
    client: &Client,
    tool: &str,
    args: Value,
) -> anyhow::Result<ArgumentError> {
    let mut params = CallToolRequestParams::new(tool.to_owned());
    if let Value::Object(map) = args {
        params = params.with_arguments(map);
    }
    let extras = |m: Option<&serde_json::Map<String, Value>>| {
        (
            m.and_then(|m| m.get("field"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            m.and_then(|m| m.get("requestCharge"))
                .and_then(Value::as_f64),
        )
    };
    match client.call_tool(params).await {
        Err(ServiceError::McpError(e)) => {
            ensure!(
                e.code == rmcp::model::ErrorCode::INVALID_PARAMS,
                "{tool}: expected invalid params, got {e:?}"
            );
            let (field, charge) = extras(e.data.as_ref().and_then(Value::as_object));
            Ok(ArgumentError {
                field,
                message: e.message.to_string(),
                charge,
            })
        }
        Ok(result) => {
            let err = kit::ToolError::from_call_tool_result(&result)
                .with_context(|| format!("{tool}: expected an argument error, got {result:?}"))?;
            ensure!(
                err.kind == kit::ErrorKind::Invalid && !err.retryable,
                "{tool}: expected a non-retryable invalid error, got {err:?}"
            );
            let (field, charge) = extras(Some(&err.extra_meta));
            Ok(ArgumentError {
                field,
                message: err.message,
                charge,
            })
        }
        Err(e) => bail!("{tool}: expected invalid params, got {e}"),
    }
}

/// The `field` an argument error names.
pub fn field_of(e: &ArgumentError) -> Option<&str> {
    e.field.as_deref()
}

fn customer(id: &str) -> anyhow::Result<&'static retail_seed::Customer> {
    retail_seed::dataset()
        .customers
        .iter()
        .find(|c| c.id == id)
        .with_context(|| format!("{id} not in the dataset"))
}

/// Calls every tool once (and its main failure modes) and checks the answers.
pub async fn tour(client: &Client) -> anyhow::Result<()> {
    // tools/list: eight tools, each with an output schema and the right annotations.
    let tools = client.list_all_tools().await?;
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "analyze_user_behavior",
            "analyze_users",
            "get_online_sales_by_region",
            "get_user_behavior",
            "query_items",
            "read_item",
            "record_event",
            "upsert_item"
        ]
    );
    for t in &tools {
        assert!(t.output_schema.is_some(), "{} has an outputSchema", t.name);
        let a = t.annotations.as_ref().context("annotations")?;
        if t.name == "upsert_item" {
            assert_eq!(a.read_only_hint, Some(false));
            assert_eq!(a.idempotent_hint, Some(false));
        } else if t.name == "record_event" {
            assert_eq!(a.read_only_hint, Some(false));
            assert_eq!(a.destructive_hint, Some(false));
            assert_eq!(a.idempotent_hint, Some(true));
        } else {
            assert_eq!(a.read_only_hint, Some(true), "{} is read-only", t.name);
        }
    }

    // get_user_behavior: joined with the SQL customer through the shared id.
    let cust = customer("CUST-0001")?;
    let (b, c) = call_charged(client, "get_user_behavior", json!({"userId": "CUST-0001"})).await?;
    assert!(c > 0.0);
    assert_eq!(b["userId"], "CUST-0001");
    assert_eq!(b["segment"], cust.segment);
    assert_eq!(b["region"], cust.region);
    assert!(b["pageViews"].as_u64().context("pageViews")? > 0);
    assert!(b["sessions"].as_u64().context("sessions")? > 0);
    assert!(b["lastActive"].is_string());
    let favourites = b["favoriteCategories"].as_array().context("favourites")?;
    assert!(!favourites.is_empty() && favourites.len() <= 3);
    for f in favourites {
        assert!(retail_seed::CATEGORIES.contains(&f["category"].as_str().context("category")?));
    }
    let rate = b["cartAbandonmentRate"].as_f64().context("rate")?;
    assert!((0.0..=1.0).contains(&rate));
    let no_arg = invalid_params(client, "get_user_behavior", json!({})).await?;
    assert!(no_arg.message.contains("userId"), "{}", no_arg.message);
    let missing = call(client, "get_user_behavior", json!({"userId": "CUST-9999"})).await?;
    assert_eq!(error_kind(&missing).as_deref(), Some("not_found"));
    assert!(testkit::text_of(&missing).contains("CUST-9999"));

    // analyze_user_behavior: the score is the sum of its parts, the class follows the rules.
    let (a, _) = call_charged(
        client,
        "analyze_user_behavior",
        json!({"customerId": "CUST-0002"}),
    )
    .await?;
    let score = a["engagementScore"].as_f64().context("score")?;
    assert!((0.0..=100.0).contains(&score));
    let parts: f64 = a["scoreBreakdown"]
        .as_object()
        .context("breakdown")?
        .values()
        .filter_map(Value::as_f64)
        .sum();
    assert!((parts - score).abs() <= 0.51, "{parts} vs {score}");
    assert!(["low", "medium", "high"].contains(&a["churnRisk"].as_str().context("churn")?));
    assert_eq!(a["segment"], customer("CUST-0002")?.segment);
    assert!(a["recommendations"].is_array());

    // analyze_users: every premium customer of the dataset, classified once each.
    let premium = retail_seed::dataset()
        .customers
        .iter()
        .filter(|c| c.segment == "premium")
        .count() as u64;
    let (s, segment_charge) =
        call_charged(client, "analyze_users", json!({"segment": "premium"})).await?;
    assert_eq!(s["userCount"].as_u64(), Some(premium));
    let churn = &s["churnDistribution"];
    let classified: u64 = ["low", "medium", "high"]
        .iter()
        .filter_map(|k| churn[k].as_u64())
        .sum();
    assert_eq!(classified, premium);
    assert!(!s["topCategories"].as_array().context("top")?.is_empty());
    assert!(segment_charge > c, "a segment costs more than one user");
    let bad_segment = invalid_params(client, "analyze_users", json!({"segment": "vip"})).await?;
    assert_eq!(field_of(&bad_segment), Some("segment"));
    assert!(bad_segment.message.contains("premium"));

    // get_online_sales_by_region: every region, totals add up, periods nest.
    let (all, _) = call_charged(client, "get_online_sales_by_region", json!({})).await?;
    let (q1, _) = call_charged(
        client,
        "get_online_sales_by_region",
        json!({"period": "2026-Q1"}),
    )
    .await?;
    for report in [&all, &q1] {
        let regions = report["regions"].as_array().context("regions")?;
        let names: Vec<&str> = regions
            .iter()
            .filter_map(|r| r["region"].as_str())
            .collect();
        let mut expected = retail_seed::REGIONS.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected);
        let orders: i64 = regions
            .iter()
            .filter_map(|r| r["orderCount"].as_i64())
            .sum();
        assert_eq!(Some(orders), report["totalOrders"].as_i64());
        let revenue: f64 = regions.iter().filter_map(|r| r["revenue"].as_f64()).sum();
        assert!((revenue - report["totalRevenue"].as_f64().context("total")?).abs() < 0.05);
    }
    let (all_orders, q1_orders) = (
        all["totalOrders"].as_i64().context("all")?,
        q1["totalOrders"].as_i64().context("q1")?,
    );
    assert!(q1_orders > 0 && q1_orders < all_orders);
    assert_eq!(q1["period"], "2026-Q1");
    let bad_period = invalid_params(
        client,
        "get_online_sales_by_region",
        json!({"period": "soon"}),
    )
    .await?;
    assert_eq!(field_of(&bad_period), Some("period"));

    // read_item: the profile document with its system properties.
    let (p, read_charge) = call_charged(
        client,
        "read_item",
        json!({"container": "profiles", "id": "CUST-0001", "partitionKey": "CUST-0001"}),
    )
    .await?;
    assert_eq!(p["customerId"], "CUST-0001");
    assert_eq!(p["email"], cust.email.as_str());
    assert!(p["_etag"].is_string() && p["_ts"].is_i64());
    assert_eq!(read_charge, 1.0, "a small point read costs 1 RU");
    let nope = call(
        client,
        "read_item",
        json!({"container": "profiles", "id": "CUST-0001", "partitionKey": "CUST-0002"}),
    )
    .await?;
    assert_eq!(error_kind(&nope).as_deref(), Some("not_found"));
    assert_eq!(charge(&nope)?, 1.0);
    let unknown = invalid_params(
        client,
        "read_item",
        json!({"container": "orders", "id": "x", "partitionKey": "y"}),
    )
    .await?;
    assert_eq!(field_of(&unknown), Some("container"));
    for name in ["userEvents", "sessions", "onlineSales", "profiles"] {
        assert!(unknown.message.contains(name), "{}", unknown.message);
    }

    // query_items: a filtered, sorted page and the next one.
    let page_args = json!({
        "container": "userEvents", "partitionKey": "CUST-0001",
        "filter": {"type": "page_view"}, "orderBy": {"field": "timestamp", "direction": "desc"},
        "limit": 5
    });
    let (page1, _) = call_charged(client, "query_items", page_args.clone()).await?;
    assert_eq!(page1["count"], 5);
    assert_eq!(page1["crossPartition"], false);
    let token = page1["continuationToken"].as_str().context("more pages")?;
    let mut next_args = page_args.clone();
    next_args["continuationToken"] = json!(token);
    let (page2, _) = call_charged(client, "query_items", next_args).await?;
    let stamps: Vec<&str> = page1["items"]
        .as_array()
        .context("items")?
        .iter()
        .chain(page2["items"].as_array().context("items")?)
        .map(|d| {
            assert_eq!(d["type"], "page_view");
            assert_eq!(d["userId"], "CUST-0001");
            d["timestamp"].as_str().unwrap_or("")
        })
        .collect();
    assert_eq!(stamps.len(), 10);
    assert!(
        stamps.windows(2).all(|w| w[0] >= w[1]),
        "newest first across pages"
    );
    let mut other_query = page_args.clone();
    other_query["filter"] = json!({"type": "search"});
    other_query["continuationToken"] = json!(token);
    let wrong = invalid_params(client, "query_items", other_query).await?;
    assert_eq!(field_of(&wrong), Some("continuationToken"));
    let bad_filter = invalid_params(
        client,
        "query_items",
        json!({"container": "userEvents", "filter": {"type": {"$regex": ".*"}}}),
    )
    .await?;
    assert_eq!(field_of(&bad_filter), Some("filter"));
    assert!(bad_filter.message.contains("$regex"));

    // upsert_item: a new document comes back with system properties; keys are required.
    let (doc, write_charge) = call_charged(
        client,
        "upsert_item",
        json!({"container": "onlineSales", "item": {"id": "WEB-TOUR-1", "region": "north", "total": 12.5}}),
    )
    .await?;
    assert_eq!(doc["id"], "WEB-TOUR-1");
    assert!(doc["_etag"].is_string() && doc["_ts"].is_i64());
    assert_eq!(write_charge, 5.0);
    let no_pk = invalid_params(
        client,
        "upsert_item",
        json!({"container": "onlineSales", "item": {"id": "x", "total": 1}}),
    )
    .await?;
    assert_eq!(field_of(&no_pk), Some("item.region"));
    assert_eq!(
        no_pk.charge,
        Some(0.0),
        "a refused call reports its (zero) charge"
    );
    Ok(())
}
