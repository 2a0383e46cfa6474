//! `cancel_order`: an order is cancelled once; repeating the call changes nothing.
//!
//! The order id is the call's own idempotency key: the status check and the update run in one
//! `BEGIN IMMEDIATE` transaction on the writer, so two concurrent cancellations of one order make
//! one change, and every later call answers with that first cancellation (`alreadyCancelled:
//! true`, its time and reason), which is what a saga retrying its compensation after a lost
//! response needs.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::{
    model::{CancelOrderArgs, CancelledOrder},
    orders::db_failure,
    queries,
};
use kit::{ToolError, ToolFailure};

/// Longest accepted reason, in characters.
const MAX_REASON_CHARS: usize = 500;

/// The status of a cancelled order, as the seed and the read tools spell it.
const CANCELLED: &str = "cancelled";

/// The only status an order can be cancelled from: a shipped order is on its way and needs a
/// return, not a cancellation.
const CANCELLABLE: &str = "processing";

/// Cancels the order, or answers with its earlier cancellation.
pub fn cancel_order(
    conn: &mut Connection,
    args: &CancelOrderArgs,
) -> Result<CancelledOrder, ToolFailure> {
    let order_id = args.order_id.trim();
    if order_id.is_empty() {
        return Err(ToolFailure::invalid_params("orderId", "must not be empty"));
    }
    let reason = args.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ToolFailure::invalid_params(
            "reason",
            format!("must be 1-{MAX_REASON_CHARS} characters"),
        ));
    }

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_failure)?;
    let state: Option<(String, Option<String>, Option<String>)> = tx
        .prepare_cached("SELECT status, cancelled_at, cancel_reason FROM orders WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db_failure)?;
    let Some((status, cancelled_at, cancel_reason)) = state else {
        return Err(
            ToolError::not_found(format!("order `{order_id}` does not exist"))
                .with_retryable(false)
                .with_meta("orderId", order_id.into())
                .into(),
        );
    };
    let (already_cancelled, cancelled_at, reason) = if status == CANCELLED {
        (true, cancelled_at, cancel_reason)
    } else if status == CANCELLABLE {
        let now = retail_seed::timestamp(chrono::Utc::now());
        tx.execute(
            "UPDATE orders SET status = ?2, cancelled_at = ?3, cancel_reason = ?4
             WHERE id = ?1 AND status = ?5",
            params![order_id, CANCELLED, now, reason, CANCELLABLE],
        )
        .map_err(db_failure)?;
        (false, Some(now), Some(reason.to_owned()))
    } else {
        return Err(ToolError::conflict(format!(
            "order `{order_id}` is `{status}`; only `{CANCELLABLE}` orders can be cancelled"
        ))
        .with_retryable(false)
        .with_meta("orderId", order_id.into())
        .with_meta("status", status.into())
        .into());
    };
    let order = queries::order(&tx, order_id)
        .map_err(db_failure)?
        .ok_or_else(|| ToolError::internal(format!("order {order_id} vanished")))?;
    tx.commit().map_err(db_failure)?;
    Ok(CancelledOrder {
        order,
        already_cancelled,
        cancelled_at,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Database;
    use std::sync::Arc;

    fn args(order_id: &str, reason: &str) -> CancelOrderArgs {
        CancelOrderArgs {
            order_id: order_id.into(),
            reason: reason.into(),
        }
    }

    /// A processing order of the seed.
    fn processing_order(db: &Database) -> String {
        db.reader()
            .conn()
            .query_row(
                "SELECT id FROM orders WHERE status = 'processing' ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .expect("a processing order")
    }

    fn row(db: &Database, id: &str) -> (String, Option<String>, Option<String>) {
        db.reader()
            .conn()
            .query_row(
                "SELECT status, cancelled_at, cancel_reason FROM orders WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("row")
    }

    #[test]
    fn a_second_cancellation_answers_with_the_first_and_changes_nothing() {
        let db = Database::open(":memory:").expect("open");
        let id = processing_order(&db);
        let first = cancel_order(&mut db.writer(), &args(&id, "customer asked")).expect("first");
        assert!(!first.already_cancelled);
        assert_eq!(first.order.status, "cancelled");
        let stored = row(&db, &id);
        let again = cancel_order(&mut db.writer(), &args(&id, "another reason")).expect("again");
        assert!(again.already_cancelled);
        assert_eq!(again.cancelled_at, first.cancelled_at);
        assert_eq!(again.reason.as_deref(), Some("customer asked"));
        assert_eq!(row(&db, &id), stored, "the second call wrote nothing");
    }

    #[test]
    fn concurrent_cancellations_make_one_change() {
        let db = Arc::new(Database::open(":memory:").expect("open"));
        let id = processing_order(&db);
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (db, id) = (db.clone(), id.clone());
                std::thread::spawn(move || {
                    cancel_order(&mut db.writer(), &args(&id, &format!("caller {i}")))
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("call succeeds"))
            .collect();
        assert_eq!(results.iter().filter(|r| !r.already_cancelled).count(), 1);
        assert!(results.iter().all(|r| r.reason == results[0].reason));
    }

    #[test]
    fn unknown_and_shipped_orders_are_refused_and_named() {
        let db = Database::open(":memory:").expect("open");
        match cancel_order(&mut db.writer(), &args("ORD-99999", "x")) {
            Err(ToolFailure::Tool(e)) => {
                assert_eq!(e.kind, kit::ErrorKind::NotFound);
                assert!(!e.retryable);
                assert!(e.message.contains("ORD-99999"), "{}", e.message);
            }
            other => panic!("expected not found, got {other:?}"),
        }
        let shipped: String = db
            .reader()
            .conn()
            .query_row(
                "SELECT id FROM orders WHERE status = 'shipped' LIMIT 1",
                [],
                |r| r.get(0),
            )
            .expect("a shipped order");
        let before = row(&db, &shipped);
        match cancel_order(&mut db.writer(), &args(&shipped, "x")) {
            Err(ToolFailure::Tool(e)) => {
                assert_eq!(e.kind, kit::ErrorKind::Conflict);
                assert!(!e.retryable);
                assert!(e.message.contains(&shipped), "{}", e.message);
            }
            other => panic!("expected conflict, got {other:?}"),
        }
        assert_eq!(row(&db, &shipped), before);
        match cancel_order(&mut db.writer(), &args(&shipped, "  ")) {
            Err(ToolFailure::InvalidParams { field, .. }) => assert_eq!(field, "reason"),
            other => panic!("expected invalid reason, got {other:?}"),
        }
    }
}
