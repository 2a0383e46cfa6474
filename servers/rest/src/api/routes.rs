//! The API's endpoints and its JSON error answers.
//!
//! Ids are checked for shape before lookup, so a caller learns the difference between a malformed
//! id (400, fix the request) and a well-formed one that does not exist (404). A request body the
//! API cannot use is 422; a reservation the stock or the order's earlier reservation does not
//! allow is 409.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::ApiState;
use crate::model::{
    ApiErrorBody, ApiErrorDetail, Health, Inventory, LowStock, Product, ProductInventory,
    ProductList, ReleaseOutcome, Reservation, ReserveOutcome, ReserveStockArgs, Shipment,
    WarehouseList,
};

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: the id does not have the shape of an id of its kind.
    #[error("`{id}` is not a valid {what} id (expected {expected})")]
    InvalidId {
        /// `product` or `order`.
        what: &'static str,
        /// The id as received.
        id: String,
        /// The expected shape.
        expected: &'static str,
    },
    /// 404: a well-formed id that does not exist.
    #[error("{what} `{id}` does not exist")]
    NotFound {
        /// `product`, `order` or `reservation`.
        what: &'static str,
        /// The id as received.
        id: String,
    },
    /// 404: a well-formed order id with no shipment. The shipping system learns of an order when
    /// it is handed over for shipping, so an order placed after the seeded history (with the SQL
    /// server's `create_order`) has none yet; the API cannot tell it from an id never used.
    #[error(
        "no shipment for order `{0}` yet: the shipping system knows an order once it is handed \
         over for shipping, and orders placed since the seeded history (create_order) have none"
    )]
    NoShipment(String),
    /// 422: a request body that is not JSON of the expected shape, or asks for nothing sensible.
    #[error("invalid request: {0}")]
    Unprocessable(String),
    /// 409: a line asks for more units than are on hand; nothing was reserved.
    #[error(
        "insufficient stock for `{product_id}`: {requested} requested, {available} available; \
         nothing was reserved"
    )]
    InsufficientStock {
        /// The first product short of stock, in product id order.
        product_id: String,
        /// Units asked for.
        requested: u32,
        /// Units on hand and not reserved.
        available: u32,
    },
    /// 409: the order already has a reservation, with other lines. The order id is the
    /// idempotency key, so a second, different reservation for it would be a second truth.
    #[error(
        "order `{order_id}` already has reservation `{reservation_id}` with other lines \
         ({held}; asked {asked}); release it and reserve under a new order, or repeat the same \
         lines"
    )]
    OrderConflict {
        /// The order.
        order_id: String,
        /// Its reservation.
        reservation_id: String,
        /// The lines it holds.
        held: String,
        /// The lines asked for now.
        asked: String,
    },
    /// 404: no such endpoint.
    #[error("no endpoint at `{0}`")]
    NoRoute(String),
    /// 405: the endpoint exists but not with this method.
    #[error(
        "method not allowed; this API reads with GET and writes only reservations \
         (POST /reservations, POST /reservations/{{reservationId}}/release)"
    )]
    MethodNotAllowed,
    /// 429 with `Retry-After`.
    #[error("too many requests: {reason}; retry after {retry_after_secs} s")]
    Throttled {
        /// Seconds the client is asked to wait.
        retry_after_secs: u64,
        /// Why.
        reason: String,
    },
    /// 503 with `Retry-After`, so clients back off for a known time instead of guessing.
    #[error("service unavailable: {reason}; retry after {retry_after_secs} s")]
    Unavailable {
        /// Seconds the client is asked to wait.
        retry_after_secs: u64,
        /// Why.
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidId { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::NoShipment(_) | ApiError::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InsufficientStock { .. } | ApiError::OrderConflict { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable code in the body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidId { .. } => "invalid_id",
            ApiError::NotFound { .. } | ApiError::NoShipment(_) => "not_found",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unprocessable(_) => "invalid_request",
            ApiError::InsufficientStock { .. } => "insufficient_stock",
            ApiError::OrderConflict { .. } => "conflict",
            ApiError::Throttled { .. } => "throttled",
            ApiError::Unavailable { .. } => "unavailable",
        }
    }

    /// Machine-readable facts for the body's `details`, when the error has some.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            ApiError::InsufficientStock {
                product_id,
                requested,
                available,
            } => Some(serde_json::json!({
                "productId": product_id,
                "requested": requested,
                "available": available,
            })),
            ApiError::OrderConflict {
                order_id,
                reservation_id,
                ..
            } => Some(serde_json::json!({
                "orderId": order_id,
                "reservationId": reservation_id,
            })),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ApiErrorBody {
            error: ApiErrorDetail {
                status: status.as_u16(),
                code: self.code().to_owned(),
                message: self.to_string(),
                details: self.details(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Throttled {
            retry_after_secs, ..
        }
        | ApiError::Unavailable {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

/// `PROD-` and three digits.
pub fn is_product_id(id: &str) -> bool {
    id.strip_prefix("PROD-")
        .is_some_and(|n| n.len() == 3 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `ORD-` and five digits.
pub fn is_order_id(id: &str) -> bool {
    id.strip_prefix("ORD-")
        .is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// 400 unless `id` has the shape of a product id.
pub(crate) fn check_product_id(id: &str) -> Result<(), ApiError> {
    if is_product_id(id) {
        Ok(())
    } else {
        Err(ApiError::InvalidId {
            what: "product",
            id: id.to_owned(),
            expected: "PROD-NNN",
        })
    }
}

/// The data endpoints (the debug endpoint is mounted by [`super::router`] when enabled).
pub(crate) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/health", get(health))
        .route("/products", get(products))
        .route("/products/{product_id}", get(product))
        .route("/warehouses", get(warehouses))
        .route("/inventory", get(inventory))
        .route("/inventory/{product_id}", get(product_inventory))
        .route("/stock/low", get(low_stock))
        .route("/shipments/{order_id}", get(shipment))
        .route("/reservations", post(reserve))
        .route("/reservations/{reservation_id}", get(reservation))
        .route("/reservations/{reservation_id}/release", post(release))
}

/// Answers unknown paths with the API's JSON error shape.
pub(crate) async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

/// Answers a wrong method with the API's JSON error shape.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        products: state.products.len(),
        warehouses: state.stock().book.warehouses().len(),
        orders: state.shipping.len(),
    })
}

async fn products(State(state): State<Arc<ApiState>>) -> Json<ProductList> {
    let items: Vec<Product> = state.products.values().cloned().collect();
    Json(ProductList {
        count: items.len(),
        items,
    })
}

async fn product(
    State(state): State<Arc<ApiState>>,
    Path(product_id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    check_product_id(&product_id)?;
    state
        .products
        .get(&product_id)
        .cloned()
        .map(Json)
        .ok_or(ApiError::NotFound {
            what: "product",
            id: product_id,
        })
}

async fn warehouses(State(state): State<Arc<ApiState>>) -> Json<WarehouseList> {
    Json(WarehouseList {
        items: state.stock().book.warehouses().to_vec(),
    })
}

async fn inventory(State(state): State<Arc<ApiState>>) -> Json<Inventory> {
    Json(state.stock().book.inventory())
}

async fn product_inventory(
    State(state): State<Arc<ApiState>>,
    Path(product_id): Path<String>,
) -> Result<Json<ProductInventory>, ApiError> {
    check_product_id(&product_id)?;
    state
        .stock()
        .book
        .product(&product_id)
        .cloned()
        .map(Json)
        .ok_or(ApiError::NotFound {
            what: "product",
            id: product_id,
        })
}

async fn low_stock(State(state): State<Arc<ApiState>>) -> Json<LowStock> {
    Json(state.stock().book.low_stock())
}

/// `201` with a new reservation, `200` with the order's existing one.
async fn reserve(
    State(state): State<Arc<ApiState>>,
    body: Result<Json<ReserveStockArgs>, JsonRejection>,
) -> Result<(StatusCode, Json<ReserveOutcome>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::Unprocessable(e.body_text()))?;
    let outcome = {
        let mut store = state.stock();
        let store = &mut *store;
        store.reservations.reserve(&mut store.book, &request)?
    };
    if outcome.created {
        tracing::info!(
            reservation_id = %outcome.reservation.reservation_id,
            order_id = %outcome.reservation.order_id,
            "stock reserved"
        );
    }
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)))
}

async fn reservation(
    State(state): State<Arc<ApiState>>,
    Path(reservation_id): Path<String>,
) -> Result<Json<Reservation>, ApiError> {
    super::reservations::check_reservation_id(&reservation_id)?;
    state
        .stock()
        .reservations
        .get(&reservation_id)
        .cloned()
        .map(Json)
        .ok_or(ApiError::NotFound {
            what: "reservation",
            id: reservation_id,
        })
}

/// `200` both when this call put the stock back and when an earlier one did (`alreadyReleased`).
async fn release(
    State(state): State<Arc<ApiState>>,
    Path(reservation_id): Path<String>,
) -> Result<Json<ReleaseOutcome>, ApiError> {
    let outcome = {
        let mut store = state.stock();
        let store = &mut *store;
        store
            .reservations
            .release(&mut store.book, &reservation_id)?
    };
    if !outcome.already_released {
        tracing::info!(%reservation_id, "reservation released");
    }
    Ok(Json(outcome))
}

async fn shipment(
    State(state): State<Arc<ApiState>>,
    Path(order_id): Path<String>,
) -> Result<Json<Shipment>, ApiError> {
    if !is_order_id(&order_id) {
        return Err(ApiError::InvalidId {
            what: "order",
            id: order_id,
            expected: "ORD-NNNNN",
        });
    }
    state
        .shipping
        .get(&order_id)
        .cloned()
        .map(Json)
        .ok_or(ApiError::NoShipment(order_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_shapes() {
        assert!(is_product_id("PROD-001"));
        assert!(is_product_id("PROD-999"));
        assert!(!is_product_id("PROD-01"));
        assert!(!is_product_id("prod-001"));
        assert!(!is_product_id("PROD-00a"));
        assert!(!is_product_id("../health"));
        assert!(is_order_id("ORD-00042"));
        assert!(!is_order_id("ORD-42"));
        assert!(!is_order_id("ORD-0004２"));
    }

    #[test]
    fn errors_carry_their_status_and_retry_after() {
        let r = ApiError::Throttled {
            retry_after_secs: 7,
            reason: "test".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("7"))
        );
        let r = ApiError::InvalidId {
            what: "product",
            id: "x".into(),
            expected: "PROD-NNN",
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ApiError::NotFound {
                what: "order",
                id: "ORD-09999".into()
            }
            .status(),
            StatusCode::NOT_FOUND
        );
        let r = ApiError::Unavailable {
            retry_after_secs: 2,
            reason: "test".into(),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("2"))
        );
        let none = ApiError::NoShipment("ORD-02001".into());
        assert_eq!(none.status(), StatusCode::NOT_FOUND);
        assert_eq!(none.code(), "not_found");
        assert!(
            none.to_string()
                .starts_with("no shipment for order `ORD-02001` yet")
        );
    }
}
