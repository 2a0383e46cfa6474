//! `create_order`: one transaction, exactly once per idempotency key.
//!
//! The writer mutex serialises writers inside this process and the `UNIQUE` index on
//! `idempotency_key` guarantees it in the file, so the same key from any number of concurrent calls
//! creates one order; every later call gets that order back with `created: false`. A key reused with
//! different contents is a `conflict`, not a silent replay of something else.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{
    model::{CreateOrderArgs, CreatedOrder},
    queries,
};
use kit::{ToolError, ToolFailure};

/// Longest accepted idempotency key.
const MAX_KEY_LEN: usize = 200;
/// Most lines in one order.
const MAX_LINES: usize = 100;

/// Validates and creates the order, or returns the one the key already created.
pub fn create_order(
    conn: &mut Connection,
    args: &CreateOrderArgs,
) -> Result<CreatedOrder, ToolFailure> {
    let key = args.idempotency_key.trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ToolFailure::invalid_params(
            "idempotencyKey",
            format!("must be 1-{MAX_KEY_LEN} characters"),
        ));
    }
    if args.lines.is_empty() || args.lines.len() > MAX_LINES {
        return Err(ToolFailure::invalid_params(
            "lines",
            format!("must hold 1-{MAX_LINES} lines"),
        ));
    }
    for (i, line) in args.lines.iter().enumerate() {
        if !(1..=1000).contains(&line.quantity) {
            return Err(ToolFailure::invalid_params(
                format!("lines[{i}].quantity"),
                format!("must be between 1 and 1000, got {}", line.quantity),
            ));
        }
    }
    let fingerprint =
        serde_json::json!({ "customerId": args.customer_id, "lines": args.lines }).to_string();

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_failure)?;
    let existing: Option<(String, Option<String>)> = tx
        .prepare_cached("SELECT id, idempotency_fingerprint FROM orders WHERE idempotency_key = ?1")
        .and_then(|mut s| {
            s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db_failure)?;
    if let Some((order_id, previous)) = existing {
        if previous.as_deref() != Some(fingerprint.as_str()) {
            return Err(ToolError::conflict(format!(
                "idempotency key `{key}` was already used for a different order ({order_id})"
            ))
            .into());
        }
        let order = queries::order(&tx, &order_id)
            .map_err(db_failure)?
            .ok_or_else(|| ToolError::internal(format!("order {order_id} vanished")))?;
        return Ok(CreatedOrder {
            order,
            created: false,
        });
    }

    let customer_known = tx
        .prepare_cached("SELECT 1 FROM customers WHERE id = ?1")
        .and_then(|mut s| s.exists([&args.customer_id]))
        .map_err(db_failure)?;
    if !customer_known {
        return Err(ToolError::not_found(format!(
            "customer `{}` does not exist",
            args.customer_id
        ))
        .into());
    }
    let mut priced = Vec::with_capacity(args.lines.len());
    for line in &args.lines {
        let price: Option<i64> = tx
            .prepare_cached("SELECT price_cents FROM products WHERE id = ?1")
            .and_then(|mut s| s.query_row([&line.product_id], |r| r.get(0)).optional())
            .map_err(db_failure)?;
        let Some(price) = price else {
            return Err(ToolError::not_found(format!(
                "product `{}` does not exist",
                line.product_id
            ))
            .into());
        };
        priced.push((line, price));
    }
    let total: i64 = priced.iter().map(|(l, p)| l.quantity * p).sum();
    let count: i64 = tx
        .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
        .map_err(db_failure)?;
    let order_id = format!("ORD-{:05}", count + 1);
    let now = retail_seed::timestamp(chrono::Utc::now());
    tx.execute(
        "INSERT INTO orders (id, customer_id, status, created_at, total_cents, idempotency_key, idempotency_fingerprint)
         VALUES (?1, ?2, 'processing', ?3, ?4, ?5, ?6)",
        params![order_id, args.customer_id, now, total, key, fingerprint],
    )
    .map_err(db_failure)?;
    for (i, (line, price)) in priced.iter().enumerate() {
        tx.execute(
            "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_cents)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                order_id,
                i as i64 + 1,
                line.product_id,
                line.quantity,
                price
            ],
        )
        .map_err(db_failure)?;
    }
    let order = queries::order(&tx, &order_id)
        .map_err(db_failure)?
        .ok_or_else(|| {
            ToolError::internal(format!("order {order_id} not readable after insert"))
        })?;
    tx.commit().map_err(db_failure)?;
    Ok(CreatedOrder {
        order,
        created: true,
    })
}

/// A database error during a write: busy/locked is transient, anything else is ours.
pub fn db_failure(e: rusqlite::Error) -> ToolFailure {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            ToolError::unavailable(format!("database busy: {e}")).into()
        }
        _ => ToolError::internal(format!("database error: {e}")).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{db::Database, model::NewOrderLine};
    use std::sync::Arc;

    fn args(key: &str) -> CreateOrderArgs {
        CreateOrderArgs {
            customer_id: "CUST-0007".into(),
            lines: vec![
                NewOrderLine {
                    product_id: "PROD-001".into(),
                    quantity: 2,
                },
                NewOrderLine {
                    product_id: "PROD-010".into(),
                    quantity: 1,
                },
            ],
            idempotency_key: key.into(),
        }
    }

    fn order_count(db: &Database) -> i64 {
        db.reader()
            .conn()
            .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
            .expect("count")
    }

    #[test]
    fn the_same_key_returns_the_same_order_and_inserts_once() {
        let db = Database::open(":memory:").expect("open");
        let before = order_count(&db);
        let first = create_order(&mut db.writer(), &args("k-1")).expect("first");
        let again = create_order(&mut db.writer(), &args("k-1")).expect("again");
        assert!(first.created);
        assert!(!again.created);
        assert_eq!(first.order.order_id, again.order.order_id);
        assert_eq!(order_count(&db), before + 1);
        let other = create_order(&mut db.writer(), &args("k-2")).expect("other key");
        assert_ne!(other.order.order_id, first.order.order_id);
        assert_eq!(order_count(&db), before + 2);
    }

    #[test]
    fn twenty_concurrent_calls_with_one_key_make_exactly_one_order() {
        let db = Arc::new(Database::open(":memory:").expect("open"));
        let before = order_count(&db);
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || create_order(&mut db.writer(), &args("same-key")))
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("call succeeds"))
            .collect();
        assert_eq!(results.iter().filter(|r| r.created).count(), 1);
        assert!(
            results
                .iter()
                .all(|r| r.order.order_id == results[0].order.order_id)
        );
        assert_eq!(order_count(&db), before + 1);
    }

    #[test]
    fn a_reused_key_with_other_contents_is_a_conflict() {
        let db = Database::open(":memory:").expect("open");
        create_order(&mut db.writer(), &args("k")).expect("first");
        let mut changed = args("k");
        changed.lines[0].quantity = 3;
        match create_order(&mut db.writer(), &changed) {
            Err(ToolFailure::Tool(e)) => assert_eq!(e.kind, kit::ErrorKind::Conflict),
            other => panic!("expected conflict, got {other:?}"),
        }
    }

    #[test]
    fn unknown_ids_and_bad_quantities_are_named_and_write_nothing() {
        let db = Database::open(":memory:").expect("open");
        let before = order_count(&db);
        let mut a = args("x1");
        a.customer_id = "CUST-9999".into();
        match create_order(&mut db.writer(), &a) {
            Err(ToolFailure::Tool(e)) => {
                assert_eq!(e.kind, kit::ErrorKind::NotFound);
                assert!(e.message.contains("CUST-9999"));
            }
            other => panic!("{other:?}"),
        }
        let mut b = args("x2");
        b.lines[1].product_id = "PROD-999".into();
        match create_order(&mut db.writer(), &b) {
            Err(ToolFailure::Tool(e)) => assert!(e.message.contains("PROD-999")),
            other => panic!("{other:?}"),
        }
        let mut c = args("x3");
        c.lines[1].quantity = 0;
        match create_order(&mut db.writer(), &c) {
            Err(ToolFailure::InvalidParams { field, .. }) => assert_eq!(field, "lines[1].quantity"),
            other => panic!("{other:?}"),
        }
        assert_eq!(order_count(&db), before);
    }
}
