//! The three servers describe the same company: ids line up across them, so composite tools can
//! join their answers.

use serde_json::json;
use testkit::{call_ok, connect_stdio};

/// Orders seeded on every server (`retail_seed::ORDER_COUNT`): ORD-00001 .. ORD-02000.
const SEEDED_ORDERS: usize = 2000;

fn memory() -> Vec<String> {
    vec!["--data-dir".into(), ":memory:".into()]
}

#[tokio::test]
async fn top_customers_have_behaviour_and_orders_have_shipping_and_stock() -> anyhow::Result<()> {
    let args = memory();
    let (sql, cosmos, rest) = tokio::try_join!(
        connect_stdio("sql-mcp-server", &args),
        connect_stdio("cosmos-mcp-server", &args),
        connect_stdio("rest-mcp-server", &[]),
    )?;

    let top = call_ok(&sql, "get_top_customers", json!({ "limit": 10 })).await?;
    let customers = top["customers"].as_array().expect("customers");
    assert_eq!(customers.len(), 10);
    for c in customers {
        let id = c["customerId"].as_str().expect("id");
        let behavior = call_ok(&cosmos, "get_user_behavior", json!({ "userId": id })).await?;
        assert_eq!(behavior["userId"], id, "cosmos knows {id}");
        // Real activity, not a profile with zero counts: the best store customers browse online.
        let count = |field: &str| behavior[field].as_u64().unwrap_or(0);
        assert!(count("pageViews") > 0, "{id} viewed pages: {behavior}");
        assert!(count("sessions") > 0, "{id} had sessions: {behavior}");
        assert!(
            behavior["lastActive"].is_string(),
            "{id} was active: {behavior}"
        );
        assert!(
            behavior["favoriteCategories"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "{id} has favourite categories: {behavior}"
        );
        assert_eq!(behavior["region"], c["region"], "{id}: same region");
        let analysis = call_ok(
            &cosmos,
            "analyze_user_behavior",
            json!({ "customerId": id }),
        )
        .await?;
        assert_eq!(
            analysis["segment"], c["segment"],
            "{id}: same segment in SQL and Cosmos"
        );
    }

    // Fifty orders spread evenly over the seeded id range, first and last included.
    let order_ids: Vec<String> = (0..50)
        .map(|i| format!("ORD-{:05}", 1 + i * (SEEDED_ORDERS - 1) / 49))
        .collect();
    assert_eq!(
        (order_ids[0].as_str(), order_ids[49].as_str()),
        ("ORD-00001", "ORD-02000")
    );
    let mut products_checked = std::collections::HashSet::new();
    for order_id in &order_ids {
        let order = call_ok(&sql, "get_order_details", json!({ "orderId": order_id })).await?;
        let shipping =
            call_ok(&rest, "get_shipping_status", json!({ "orderId": order_id })).await?;
        assert_eq!(shipping["orderId"], order_id.as_str());
        assert_eq!(
            shipping["orderStatus"], order["status"],
            "{order_id}: REST ships what SQL says"
        );
        for line in order["lines"].as_array().expect("lines") {
            let product_id = line["productId"].as_str().expect("productId");
            if !products_checked.insert(product_id.to_owned()) {
                continue;
            }
            let stock =
                call_ok(&rest, "check_inventory", json!({ "productId": product_id })).await?;
            assert_eq!(
                stock["items"][0]["productId"], product_id,
                "REST stocks {product_id}"
            );
            let product = call_ok(&rest, "get_product", json!({ "productId": product_id })).await?;
            assert_eq!(
                product["name"], line["productName"],
                "{product_id}: same name in SQL and REST"
            );
        }
    }

    let store = call_ok(&sql, "get_sales_by_region", json!({ "period": "2026" })).await?;
    let online = call_ok(
        &cosmos,
        "get_online_sales_by_region",
        json!({ "period": "2026" }),
    )
    .await?;
    let names = |v: &serde_json::Value| {
        let mut n: Vec<String> = v["regions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["region"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    assert_eq!(
        names(&store),
        names(&online),
        "both report the same regions"
    );

    sql.cancel().await?;
    cosmos.cancel().await?;
    rest.cancel().await?;
    Ok(())
}
