//! Stock reservations: units held for an order, taken out of the stock book and put back on release.
//!
//! A reservation is keyed by its order id, so reserving is idempotent: the same order with the
//! same lines answers with its first reservation (released or not) and takes nothing again; the
//! same order with other lines is a conflict. All lines are reserved or none. Releasing puts the
//! units back exactly once; releasing again says so and changes nothing.
//!
//! Every function here runs under the lock of [`super::StockStore`], which also guards the stock
//! book: a reservation's check-then-take and a release's put-back are each one step, so concurrent
//! requests can neither oversell nor put stock back twice.

use std::collections::{BTreeMap, HashMap};

use chrono::SecondsFormat;

use super::{
    routes::{ApiError, check_product_id, is_order_id},
    stock::StockBook,
};
use crate::model::{
    ReleaseOutcome, Reservation, ReservationLine, ReservationState, ReserveOutcome,
    ReserveStockArgs, ReservedLine,
};

/// `RSV-` and six digits.
pub fn is_reservation_id(id: &str) -> bool {
    id.strip_prefix("RSV-")
        .is_some_and(|n| n.len() == 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Every reservation made since the API started (they live as long as the process, as the stock
/// levels they change do).
#[derive(Debug, Default)]
pub struct Reservations {
    /// By reservation id; ordered so ids read in creation order.
    by_id: BTreeMap<String, Reservation>,
    /// Order id to reservation id: the idempotency key.
    by_order: HashMap<String, String>,
    /// The number of the last reservation made.
    last: u64,
}

impl Reservations {
    /// One reservation; `None` for an unknown id.
    pub fn get(&self, reservation_id: &str) -> Option<&Reservation> {
        self.by_id.get(reservation_id)
    }

    /// Reserves `request`'s lines in `stock` for its order, or answers the order's reservation
    /// if it has one with the same lines.
    pub fn reserve(
        &mut self,
        stock: &mut StockBook,
        request: &ReserveStockArgs,
    ) -> Result<ReserveOutcome, ApiError> {
        let lines = validate(request)?;
        if let Some(existing) = self
            .by_order
            .get(&request.order_id)
            .and_then(|id| self.by_id.get(id))
        {
            let held: Vec<ReservationLine> = existing
                .lines
                .iter()
                .map(|l| ReservationLine {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                })
                .collect();
            if held != lines {
                return Err(ApiError::OrderConflict {
                    order_id: request.order_id.clone(),
                    reservation_id: existing.reservation_id.clone(),
                    held: describe(&held),
                    asked: describe(&lines),
                });
            }
            return Ok(ReserveOutcome {
                created: false,
                reservation: existing.clone(),
            });
        }
        for line in &lines {
            let available =
                stock
                    .available(&line.product_id)
                    .ok_or_else(|| ApiError::NotFound {
                        what: "product",
                        id: line.product_id.clone(),
                    })?;
            if available < line.quantity {
                return Err(ApiError::InsufficientStock {
                    product_id: line.product_id.clone(),
                    requested: line.quantity,
                    available,
                });
            }
        }
        let reserved = lines
            .into_iter()
            .map(|line| ReservedLine {
                warehouses: stock.take(&line.product_id, line.quantity),
                product_id: line.product_id,
                quantity: line.quantity,
            })
            .collect();
        self.last += 1;
        let reservation = Reservation {
            reservation_id: format!("RSV-{:06}", self.last),
            order_id: request.order_id.clone(),
            state: ReservationState::Reserved,
            lines: reserved,
            reserved_at: now(),
            released_at: None,
        };
        self.by_order.insert(
            reservation.order_id.clone(),
            reservation.reservation_id.clone(),
        );
        self.by_id
            .insert(reservation.reservation_id.clone(), reservation.clone());
        Ok(ReserveOutcome {
            created: true,
            reservation,
        })
    }

    /// Puts a reservation's units back in `stock`, once; a released one is answered as is.
    pub fn release(
        &mut self,
        stock: &mut StockBook,
        reservation_id: &str,
    ) -> Result<ReleaseOutcome, ApiError> {
        check_reservation_id(reservation_id)?;
        let reservation = self
            .by_id
            .get_mut(reservation_id)
            .ok_or_else(|| ApiError::NotFound {
                what: "reservation",
                id: reservation_id.to_owned(),
            })?;
        let already_released = reservation.state == ReservationState::Released;
        if !already_released {
            for line in &reservation.lines {
                stock.put_back(&line.product_id, &line.warehouses);
            }
            reservation.state = ReservationState::Released;
            reservation.released_at = Some(now());
        }
        Ok(ReleaseOutcome {
            already_released,
            reservation: reservation.clone(),
        })
    }
}

/// 400 unless `id` has the shape of a reservation id.
pub fn check_reservation_id(id: &str) -> Result<(), ApiError> {
    if is_reservation_id(id) {
        Ok(())
    } else {
        Err(ApiError::InvalidId {
            what: "reservation",
            id: id.to_owned(),
            expected: "RSV-NNNNNN",
        })
    }
}

/// Checks a request's shape and answers its lines in product id order, so the same lines given
/// in another order are the same request.
fn validate(request: &ReserveStockArgs) -> Result<Vec<ReservationLine>, ApiError> {
    if !is_order_id(&request.order_id) {
        return Err(ApiError::InvalidId {
            what: "order",
            id: request.order_id.clone(),
            expected: "ORD-NNNNN",
        });
    }
    if request.lines.is_empty() {
        return Err(ApiError::Unprocessable(
            "`lines` is empty: a reservation holds at least one product".into(),
        ));
    }
    let mut lines = request.lines.clone();
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    for (i, line) in lines.iter().enumerate() {
        check_product_id(&line.product_id)?;
        if line.quantity == 0 {
            return Err(ApiError::Unprocessable(format!(
                "the line of `{}` asks for 0 units; every line holds at least 1",
                line.product_id
            )));
        }
        if i > 0 && lines[i - 1].product_id == line.product_id {
            return Err(ApiError::Unprocessable(format!(
                "`{}` is on more than one line; give each product once with its total quantity",
                line.product_id
            )));
        }
    }
    Ok(lines)
}

/// `PROD-001 x 2, PROD-007 x 1`, for conflict messages.
fn describe(lines: &[ReservationLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{} x {}", l.product_id, l.quantity))
        .collect::<Vec<_>>()
        .join(", ")
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> StockBook {
        StockBook::generate(&retail_seed::dataset().products)
    }

    fn request(order_id: &str, lines: &[(&str, u32)]) -> ReserveStockArgs {
        ReserveStockArgs {
            order_id: order_id.into(),
            lines: lines
                .iter()
                .map(|(p, q)| ReservationLine {
                    product_id: (*p).into(),
                    quantity: *q,
                })
                .collect(),
        }
    }

    #[test]
    fn reserve_is_idempotent_per_order_and_release_puts_back_once() {
        let mut stock = book();
        let before = stock.clone();
        let mut book = Reservations::default();
        let ask = request("ORD-02001", &[("PROD-007", 2), ("PROD-001", 50)]);
        let first = book.reserve(&mut stock, &ask).expect("reserved");
        assert!(first.created);
        assert_eq!(first.reservation.reservation_id, "RSV-000001");
        assert_eq!(stock.available("PROD-001"), Some(315 - 50));
        let again = book
            .reserve(
                &mut stock,
                &request("ORD-02001", &[("PROD-001", 50), ("PROD-007", 2)]),
            )
            .expect("same reservation");
        assert!(!again.created);
        assert_eq!(again.reservation, first.reservation);
        assert_eq!(stock.available("PROD-001"), Some(315 - 50));

        let conflict = book
            .reserve(&mut stock, &request("ORD-02001", &[("PROD-001", 51)]))
            .expect_err("other lines");
        assert_eq!(conflict.code(), "conflict");

        let released = book.release(&mut stock, "RSV-000001").expect("released");
        assert!(!released.already_released);
        assert_eq!(stock, before);
        let again = book.release(&mut stock, "RSV-000001").expect("released");
        assert!(again.already_released);
        assert_eq!(again.reservation.state, ReservationState::Released);
        assert_eq!(stock, before);
    }

    #[test]
    fn a_short_line_reserves_nothing() {
        let mut stock = book();
        let before = stock.clone();
        let mut book = Reservations::default();
        let e = book
            .reserve(
                &mut stock,
                &request("ORD-02002", &[("PROD-001", 1), ("PROD-002", 100_000)]),
            )
            .expect_err("short");
        assert_eq!(e.code(), "insufficient_stock");
        assert!(e.to_string().contains("PROD-002"), "{e}");
        assert_eq!(stock, before);
        assert!(book.get("RSV-000001").is_none());
    }

    #[test]
    fn malformed_requests_are_refused() {
        let mut stock = book();
        let mut book = Reservations::default();
        for (ask, code) in [
            (request("ORD-2", &[("PROD-001", 1)]), "invalid_id"),
            (request("ORD-02001", &[]), "invalid_request"),
            (request("ORD-02001", &[("PROD-001", 0)]), "invalid_request"),
            (
                request("ORD-02001", &[("PROD-001", 1), ("PROD-001", 2)]),
                "invalid_request",
            ),
            (request("ORD-02001", &[("PROD-1", 1)]), "invalid_id"),
            (request("ORD-02001", &[("PROD-999", 1)]), "not_found"),
        ] {
            let e = book.reserve(&mut stock, &ask).expect_err("refused");
            assert_eq!(e.code(), code, "{ask:?}: {e}");
        }
        assert_eq!(
            book.release(&mut stock, "RSV-123456")
                .expect_err("unknown")
                .code(),
            "not_found"
        );
        assert_eq!(
            book.release(&mut stock, "nope").expect_err("bad").code(),
            "invalid_id"
        );
    }
}
