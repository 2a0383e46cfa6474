//! Every tool, over stdio and over HTTP, against the bundled in-process API: the answers agree
//! with the shared seed and with each other.

mod common;

use std::collections::HashMap;

use anyhow::Context;
use serde_json::{Value, json};
use testkit::{Client, call_ok};

use common::connect;

/// The tools that write: idempotent, never destructive.
const WRITES: [&str; 2] = ["release_reservation", "reserve_stock"];

async fn tools_are_listed_with_annotations_and_output_schemas(
    client: &Client,
) -> anyhow::Result<()> {
    let tools = client.list_all_tools().await?;
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "check_inventory",
            "check_stock",
            "get_product",
            "get_shipping_status",
            "release_reservation",
            "reserve_stock"
        ]
    );
    for tool in &tools {
        let annotations = tool.annotations.as_ref().context("annotations")?;
        if WRITES.contains(&tool.name.as_ref()) {
            assert_eq!(annotations.read_only_hint, Some(false), "{}", tool.name);
            assert_eq!(annotations.idempotent_hint, Some(true), "{}", tool.name);
            assert_eq!(annotations.destructive_hint, Some(false), "{}", tool.name);
        } else {
            assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name);
        }
        assert_eq!(annotations.open_world_hint, Some(false), "{}", tool.name);
        assert!(
            tool.output_schema.is_some(),
            "{} has an outputSchema",
            tool.name
        );
    }
    let product = tools
        .iter()
        .find(|t| t.name == "get_product")
        .context("get_product")?;
    let schema = serde_json::to_value(&product.input_schema)?;
    assert_eq!(schema["required"], json!(["productId"]));
    let reserve = tools
        .iter()
        .find(|t| t.name == "reserve_stock")
        .context("reserve_stock")?;
    let schema = serde_json::to_value(&reserve.input_schema)?;
    assert_eq!(schema["required"], json!(["orderId", "lines"]));
    Ok(())
}

async fn every_tool_answers_from_the_seed(client: &Client) -> anyhow::Result<()> {
    let seed = retail_seed::dataset();

    // check_inventory, all products.
    let all = call_ok(client, "check_inventory", json!({})).await?;
    let items = all["items"].as_array().context("items")?;
    assert_eq!(all["productCount"], retail_seed::PRODUCT_COUNT);
    assert_eq!(items.len(), retail_seed::PRODUCT_COUNT);
    for (item, product) in items.iter().zip(&seed.products) {
        assert_eq!(item["productId"], product.id.as_str());
        assert_eq!(item["name"], product.name.as_str());
        let warehouses = item["warehouses"].as_array().context("warehouses")?;
        assert_eq!(warehouses.len(), 3);
        let sum: u64 = warehouses
            .iter()
            .filter_map(|w| w["quantity"].as_u64())
            .sum();
        assert_eq!(item["totalQuantity"], sum);
    }

    // check_inventory, one product: the same numbers as in the full listing.
    let one = call_ok(
        client,
        "check_inventory",
        json!({ "productId": "PROD-007" }),
    )
    .await?;
    assert_eq!(one["productCount"], 1);
    assert_eq!(one["items"][0], items[6]);

    // check_stock: every pair it lists is below its level in the inventory, and vice versa.
    let low = call_ok(client, "check_stock", json!({})).await?;
    let low_items = low["items"].as_array().context("items")?;
    assert!(!low_items.is_empty(), "the seed has low stock");
    assert_eq!(low["count"], low_items.len());
    let mut below: HashMap<(String, String), &Value> = HashMap::new();
    for item in items {
        for w in item["warehouses"].as_array().context("warehouses")? {
            if w["belowReorderLevel"] == true {
                below.insert(
                    (
                        item["productId"].as_str().unwrap_or_default().to_owned(),
                        w["warehouseId"].as_str().unwrap_or_default().to_owned(),
                    ),
                    w,
                );
            }
        }
    }
    assert_eq!(below.len(), low_items.len());
    for item in low_items {
        let key = (
            item["productId"].as_str().unwrap_or_default().to_owned(),
            item["warehouseId"].as_str().unwrap_or_default().to_owned(),
        );
        let stock = below
            .get(&key)
            .with_context(|| format!("{key:?} is below"))?;
        assert_eq!(item["quantity"], stock["quantity"]);
        assert_eq!(item["reorderLevel"], stock["reorderLevel"]);
        assert!(item["quantity"].as_u64() < item["reorderLevel"].as_u64());
    }

    // get_product: the seed's name, category and price.
    for product in [&seed.products[0], &seed.products[49]] {
        let p = call_ok(client, "get_product", json!({ "productId": product.id })).await?;
        assert_eq!(p["productId"], product.id.as_str());
        assert_eq!(p["name"], product.name.as_str());
        assert_eq!(p["category"], product.category);
        assert_eq!(p["price"], product.price_cents as f64 / 100.0);
    }

    // get_shipping_status: one order of each status, consistent with the order.
    for status in retail_seed::ORDER_STATUSES {
        let order = seed
            .orders
            .iter()
            .find(|o| o.status == status)
            .with_context(|| format!("an order that is {status}"))?;
        let s = call_ok(
            client,
            "get_shipping_status",
            json!({ "orderId": order.id }),
        )
        .await?;
        assert_eq!(s["orderId"], order.id.as_str());
        assert_eq!(s["orderStatus"], status);
        let expected = match status {
            "processing" => "awaiting_shipment",
            "shipped" => "in_transit",
            "delivered" => "delivered",
            _ => "cancelled",
        };
        assert_eq!(s["status"], expected, "{}", order.id);
        if status == "cancelled" {
            assert_eq!(s["carrier"], Value::Null);
            assert_eq!(s["estimatedDelivery"], Value::Null);
        } else {
            assert!(s["carrier"].is_string() && s["estimatedDelivery"].is_string());
        }
        if matches!(status, "shipped" | "delivered") {
            assert!(s["trackingNumber"].is_string() && s["shippedAt"].is_string());
        }
    }
    Ok(())
}

#[tokio::test]
async fn stdio_serves_every_tool_from_the_bundled_api() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &[]).await?;
    tools_are_listed_with_annotations_and_output_schemas(&client).await?;
    every_tool_answers_from_the_seed(&client).await?;
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn http_serves_every_tool_from_the_bundled_api() -> anyhow::Result<()> {
    let (client, server) = connect("http", &[]).await?;
    tools_are_listed_with_annotations_and_output_schemas(&client).await?;
    every_tool_answers_from_the_seed(&client).await?;
    client.cancel().await?;
    if let Some(server) = server {
        server.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn stateless_http_serves_every_tool_from_the_bundled_api() -> anyhow::Result<()> {
    let (client, _server) = connect("http-stateless", &[]).await?;
    tools_are_listed_with_annotations_and_output_schemas(&client).await?;
    every_tool_answers_from_the_seed(&client).await?;
    Ok(())
}

#[tokio::test]
async fn answers_are_the_same_on_every_run() -> anyhow::Result<()> {
    let (a, _sa) = connect("stdio", &[]).await?;
    let (b, _sb) = connect("stdio", &[]).await?;
    for (tool, args) in [
        ("check_stock", json!({})),
        ("get_shipping_status", json!({ "orderId": "ORD-01234" })),
        ("check_inventory", json!({ "productId": "PROD-042" })),
    ] {
        assert_eq!(
            call_ok(&a, tool, args.clone()).await?,
            call_ok(&b, tool, args).await?,
            "{tool}"
        );
    }
    a.cancel().await?;
    b.cancel().await?;
    Ok(())
}
