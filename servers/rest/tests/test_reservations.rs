//! Stock reservations end to end: `reserve_stock` and `release_reservation` over the real server
//! and the real HTTP API, read back through `check_inventory` and the API itself; idempotency per
//! order, all lines or none, a lost answer recovered by repeating, and no overselling under
//! concurrent reserves.

mod common;

use anyhow::Context;
use kit::ErrorKind;
use serde_json::{Value, json};
use testkit::{Client, PeerClient, ToolCaller, call, call_ok};

use common::{RetailApi, args, connect, tool_error};

/// Units of `product_id` available, through the `check_inventory` tool.
async fn available(client: &impl ToolCaller, product_id: &str) -> anyhow::Result<u64> {
    let inventory = call_ok(
        client,
        "check_inventory",
        json!({ "productId": product_id }),
    )
    .await?;
    inventory["items"][0]["totalQuantity"]
        .as_u64()
        .with_context(|| format!("totalQuantity of {product_id}: {inventory}"))
}

/// Units of `product_id` available, straight from the API.
async fn available_on(api: &RetailApi, product_id: &str) -> anyhow::Result<u64> {
    let (status, _, body) = api.get(&format!("/inventory/{product_id}")).await?;
    anyhow::ensure!(
        status == 200,
        "GET /inventory/{product_id} answered {status}"
    );
    body["totalQuantity"]
        .as_u64()
        .with_context(|| format!("totalQuantity of {product_id}: {body}"))
}

fn reserve_args(order_id: &str, lines: &[(&str, u64)]) -> Value {
    let lines: Vec<Value> = lines
        .iter()
        .map(|(p, q)| json!({ "productId": p, "quantity": q }))
        .collect();
    json!({ "orderId": order_id, "lines": lines })
}

async fn reserve(
    client: &impl ToolCaller,
    order_id: &str,
    lines: &[(&str, u64)],
) -> anyhow::Result<Value> {
    call_ok(client, "reserve_stock", reserve_args(order_id, lines)).await
}

#[tokio::test]
async fn reserving_lowers_stock_once_per_order_and_other_lines_conflict() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &[]).await?;
    let (a0, b0) = (
        available(&client, "PROD-003").await?,
        available(&client, "PROD-004").await?,
    );

    let first = reserve(&client, "ORD-02001", &[("PROD-004", 2), ("PROD-003", 5)]).await?;
    assert_eq!(first["created"], true);
    let reservation = &first["reservation"];
    assert_eq!(reservation["orderId"], "ORD-02001");
    assert_eq!(reservation["state"], "reserved");
    let id = reservation["reservationId"]
        .as_str()
        .context("reservationId")?
        .to_owned();
    assert!(id.starts_with("RSV-"), "{id}");
    // Lines in product id order, with where the units came from.
    assert_eq!(reservation["lines"][0]["productId"], "PROD-003");
    assert_eq!(reservation["lines"][0]["quantity"], 5);
    assert_eq!(reservation["lines"][1]["productId"], "PROD-004");
    assert_eq!(available(&client, "PROD-003").await?, a0 - 5);
    assert_eq!(available(&client, "PROD-004").await?, b0 - 2);

    // The same order and lines (in another order): the same reservation, nothing taken again.
    let again = reserve(&client, "ORD-02001", &[("PROD-003", 5), ("PROD-004", 2)]).await?;
    assert_eq!(again["created"], false);
    assert_eq!(again["reservation"], first["reservation"]);
    assert_eq!(available(&client, "PROD-003").await?, a0 - 5);
    assert_eq!(available(&client, "PROD-004").await?, b0 - 2);

    // The same order with other lines: a conflict naming the reservation, nothing changes.
    let e = tool_error(
        &call(
            &client,
            "reserve_stock",
            reserve_args("ORD-02001", &[("PROD-003", 6)]),
        )
        .await?,
    )?;
    assert_eq!(e.kind, ErrorKind::Conflict, "{}", e.message);
    assert!(!e.retryable);
    assert_eq!(e.extra_meta["httpStatus"], 409);
    assert_eq!(e.extra_meta["apiCode"], "conflict");
    assert!(e.message.contains(&id), "{}", e.message);
    assert!(e.message.contains("ORD-02001"), "{}", e.message);
    assert_eq!(available(&client, "PROD-003").await?, a0 - 5);
    assert_eq!(available(&client, "PROD-004").await?, b0 - 2);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_line_short_of_stock_reserves_nothing_and_names_the_product() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &[]).await?;
    let (ok0, short0) = (
        available(&client, "PROD-003").await?,
        available(&client, "PROD-005").await?,
    );
    let result = call(
        &client,
        "reserve_stock",
        reserve_args("ORD-02002", &[("PROD-003", 1), ("PROD-005", short0 + 1)]),
    )
    .await?;
    let e = tool_error(&result)?;
    assert_eq!(e.kind, ErrorKind::Conflict, "{}", e.message);
    assert!(!e.retryable);
    assert_eq!(e.extra_meta["apiCode"], "insufficient_stock");
    assert_eq!(
        e.extra_meta["details"],
        json!({ "productId": "PROD-005", "requested": short0 + 1, "available": short0 })
    );
    assert!(e.message.contains("PROD-005"), "{}", e.message);
    assert!(
        e.message.contains(&format!("{short0} available")),
        "{}",
        e.message
    );
    // All or none: the line that had stock was not reserved either.
    assert_eq!(available(&client, "PROD-003").await?, ok0);
    assert_eq!(available(&client, "PROD-005").await?, short0);
    // Nothing was recorded for the order: it can still reserve what there is.
    let fits = reserve(&client, "ORD-02002", &[("PROD-005", short0)]).await?;
    assert_eq!(fits["created"], true);
    assert_eq!(available(&client, "PROD-005").await?, 0);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn release_puts_stock_back_once_and_unknown_ids_are_not_found() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &[]).await?;
    let before = available(&client, "PROD-010").await?;
    let reserved = reserve(&client, "ORD-02003", &[("PROD-010", 7)]).await?;
    let id = reserved["reservation"]["reservationId"]
        .as_str()
        .context("reservationId")?
        .to_owned();
    assert_eq!(available(&client, "PROD-010").await?, before - 7);

    let released = call_ok(
        &client,
        "release_reservation",
        json!({ "reservationId": id }),
    )
    .await?;
    assert_eq!(released["alreadyReleased"], false);
    assert_eq!(released["reservation"]["state"], "released");
    assert!(released["reservation"]["releasedAt"].is_string());
    assert_eq!(available(&client, "PROD-010").await?, before);

    let again = call_ok(
        &client,
        "release_reservation",
        json!({ "reservationId": id }),
    )
    .await?;
    assert_eq!(again["alreadyReleased"], true);
    assert_eq!(again["reservation"], released["reservation"]);
    assert_eq!(available(&client, "PROD-010").await?, before);

    // The order keeps its (released) reservation: repeating it takes nothing.
    let replay = reserve(&client, "ORD-02003", &[("PROD-010", 7)]).await?;
    assert_eq!(replay["created"], false);
    assert_eq!(replay["reservation"]["state"], "released");
    assert_eq!(available(&client, "PROD-010").await?, before);

    let e = tool_error(
        &call(
            &client,
            "release_reservation",
            json!({ "reservationId": "RSV-999999" }),
        )
        .await?,
    )?;
    assert_eq!(e.kind, ErrorKind::NotFound, "{}", e.message);
    assert!(!e.retryable);
    assert!(
        e.message
            .contains("reservation `RSV-999999` does not exist"),
        "{}",
        e.message
    );
    let e = tool_error(
        &call(
            &client,
            "release_reservation",
            json!({ "reservationId": "RSV-1" }),
        )
        .await?,
    )?;
    assert_eq!(e.kind, ErrorKind::Invalid, "{}", e.message);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_lost_answer_is_recovered_by_repeating_the_same_order() -> anyhow::Result<()> {
    // Two MCP servers in front of one API: one loses every answer after the call ran
    // (`--failure-after-rate 1.0`), the other is healthy, so the test can look behind the loss.
    let api = RetailApi::start(&[]).await?;
    let before = available_on(&api, "PROD-020").await?;
    let (lossy, _s1) = connect(
        "stdio",
        &args(&["--base-url", &api.url, "--failure-after-rate", "1.0"]),
    )
    .await?;
    let (healthy, _s2) = connect("stdio", &args(&["--base-url", &api.url])).await?;

    for attempt in 0..2 {
        let e = tool_error(
            &call(
                &lossy,
                "reserve_stock",
                reserve_args("ORD-02004", &[("PROD-020", 3)]),
            )
            .await?,
        )?;
        assert_eq!(e.kind, ErrorKind::Unavailable, "{attempt}: {}", e.message);
        assert!(e.retryable, "{attempt}");
        // The write happened (once), though its answer was lost (twice).
        assert_eq!(
            available_on(&api, "PROD-020").await?,
            before - 3,
            "{attempt}"
        );
    }

    let recovered = reserve(&healthy, "ORD-02004", &[("PROD-020", 3)]).await?;
    assert_eq!(recovered["created"], false);
    assert_eq!(recovered["reservation"]["state"], "reserved");
    let id = recovered["reservation"]["reservationId"]
        .as_str()
        .context("reservationId")?;
    assert_eq!(
        id, "RSV-000001",
        "one reservation was made, not one per attempt"
    );
    assert_eq!(available_on(&api, "PROD-020").await?, before - 3);
    assert_eq!(available(&healthy, "PROD-020").await?, before - 3);

    // Releasing through the lossy server loses the answer too; the stock still comes back once.
    let e = tool_error(
        &call(
            &lossy,
            "release_reservation",
            json!({ "reservationId": id }),
        )
        .await?,
    )?;
    assert!(e.retryable, "{}", e.message);
    let released = call_ok(
        &healthy,
        "release_reservation",
        json!({ "reservationId": id }),
    )
    .await?;
    assert_eq!(released["alreadyReleased"], true);
    assert_eq!(available_on(&api, "PROD-020").await?, before);
    lossy.cancel().await?;
    healthy.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_reserves_never_oversell() -> anyhow::Result<()> {
    let (client, _server) = connect("stdio", &[]).await?;
    let total = available(&client, "PROD-001").await?;
    // Leave exactly 20 units available.
    let hold = reserve(&client, "ORD-03000", &[("PROD-001", total - 20)]).await?;
    assert_eq!(available(&client, "PROD-001").await?, 20);

    let peer = PeerClient(client.peer().clone());
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=50 {
        let peer = peer.clone();
        tasks.spawn(async move {
            call(
                &peer,
                "reserve_stock",
                reserve_args(&format!("ORD-030{n:02}"), &[("PROD-001", 1)]),
            )
            .await
        });
    }
    let mut reserved = vec![
        hold["reservation"]["reservationId"]
            .as_str()
            .context("reservationId")?
            .to_owned(),
    ];
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.context("task")??;
        if result.is_error == Some(true) {
            let e = tool_error(&result)?;
            assert_eq!(e.kind, ErrorKind::Conflict, "{}", e.message);
            assert!(!e.retryable);
            assert_eq!(e.extra_meta["apiCode"], "insufficient_stock");
            refused += 1;
        } else {
            let content = result.structured_content.context("structured content")?;
            assert_eq!(content["created"], true);
            reserved.push(
                content["reservation"]["reservationId"]
                    .as_str()
                    .context("reservationId")?
                    .to_owned(),
            );
        }
    }
    assert_eq!((reserved.len() - 1, refused), (20, 30));
    assert_eq!(available(&client, "PROD-001").await?, 0);

    // Released concurrently, twice each: every unit comes back exactly once.
    let mut tasks = tokio::task::JoinSet::new();
    for id in reserved.iter().chain(reserved.iter()) {
        let (peer, id) = (peer.clone(), id.clone());
        tasks.spawn(async move {
            call_ok(&peer, "release_reservation", json!({ "reservationId": id })).await
        });
    }
    let mut first_releases = 0;
    while let Some(joined) = tasks.join_next().await {
        let released = joined.context("task")??;
        if released["alreadyReleased"] == false {
            first_releases += 1;
        }
    }
    assert_eq!(first_releases, reserved.len());
    assert_eq!(available(&client, "PROD-001").await?, total);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn the_api_answers_reservations_with_its_status_codes() -> anyhow::Result<()> {
    let api = RetailApi::start(&[]).await?;
    let body =
        json!({ "orderId": "ORD-00042", "lines": [{ "productId": "PROD-002", "quantity": 4 }] });
    let (status, created) = api.post("/reservations", &body).await?;
    assert_eq!(status, 201, "{created}");
    let id = created["reservation"]["reservationId"]
        .as_str()
        .context("reservationId")?;
    let (status, replay) = api.post("/reservations", &body).await?;
    assert_eq!(
        (status, &replay["reservation"]),
        (200, &created["reservation"])
    );

    let (status, _, shown) = api.get(&format!("/reservations/{id}")).await?;
    assert_eq!((status, &shown), (200, &created["reservation"]));
    assert_eq!(shown["state"], "reserved");

    let (status, released) = api
        .post(&format!("/reservations/{id}/release"), &json!({}))
        .await?;
    assert_eq!((status, &released["alreadyReleased"]), (200, &json!(false)));
    let (_, _, shown) = api.get(&format!("/reservations/{id}")).await?;
    assert_eq!(shown["state"], "released");
    let (status, again) = api
        .post(&format!("/reservations/{id}/release"), &json!({}))
        .await?;
    assert_eq!((status, &again["alreadyReleased"]), (200, &json!(true)));

    for (path, code) in [
        ("/reservations/RSV-999999", 404),
        ("/reservations/nope", 400),
    ] {
        let (status, _, body) = api.get(path).await?;
        assert_eq!(status, code, "{path}: {body}");
        assert_eq!(body["error"]["status"], code);
    }
    let (status, body) = api
        .post("/reservations/RSV-999999/release", &json!({}))
        .await?;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));

    let conflict =
        json!({ "orderId": "ORD-00042", "lines": [{ "productId": "PROD-002", "quantity": 5 }] });
    let (status, body) = api.post("/reservations", &conflict).await?;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("conflict")));
    assert_eq!(body["error"]["details"]["reservationId"], id);

    let short = json!({ "orderId": "ORD-00043", "lines": [{ "productId": "PROD-002", "quantity": 1_000_000 }] });
    let (status, body) = api.post("/reservations", &short).await?;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("insufficient_stock"))
    );
    assert_eq!(body["error"]["details"]["productId"], "PROD-002");

    for bad in [
        json!({ "orderId": "ORD-00044", "lines": [] }),
        json!({ "orderId": "ORD-00044", "lines": [{ "productId": "PROD-002", "quantity": 0 }] }),
        json!({ "orderId": "ORD-00044", "lines": [{ "productId": "PROD-002", "quantity": -1 }] }),
        json!({ "orderId": "ORD-00044" }),
    ] {
        let (status, body) = api.post("/reservations", &bad).await?;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}");
    }
    Ok(())
}

#[tokio::test]
async fn injected_api_outages_on_reservations_are_retryable() -> anyhow::Result<()> {
    let (client, _server): (Client, _) =
        connect("stdio", &args(&["--api-fail-routes", "reservations"])).await?;
    let before = available(&client, "PROD-030").await?;
    let e = tool_error(
        &call(
            &client,
            "reserve_stock",
            reserve_args("ORD-02005", &[("PROD-030", 1)]),
        )
        .await?,
    )?;
    assert_eq!(e.kind, ErrorKind::Unavailable, "{}", e.message);
    assert!(e.retryable);
    assert_eq!(e.extra_meta["httpStatus"], 503);
    assert_eq!(available(&client, "PROD-030").await?, before);
    client.cancel().await?;
    Ok(())
}
