//! The retail API's resources and the tools' arguments, with the JSON Schemas agents see.
//!
//! One set of types serves three readers: the bundled API serializes them, the HTTP client
//! deserializes them from whichever deployment `--base-url` names, and the tools return them as
//! structured content (camelCase on the wire, as every server in this workspace).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ---- tool arguments ----------------------------------------------------------------------------

/// Stock of one product, or of all of them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryArgs {
    /// Product id, e.g. `PROD-007`; omit it to list every product.
    pub product_id: Option<String>,
}

/// One product.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductIdArgs {
    /// Product id, e.g. `PROD-007`.
    pub product_id: String,
}

/// One order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderIdArgs {
    /// Order id, e.g. `ORD-00042`.
    pub order_id: String,
}

/// Stock to hold for one order; also the body of `POST /reservations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveStockArgs {
    /// The order the stock is held for, e.g. `ORD-02001`; also the idempotency key: the same
    /// order id again answers with its first reservation and takes no stock twice.
    pub order_id: String,
    /// What to hold: one line per product, each product at most once. All lines are reserved
    /// or none.
    pub lines: Vec<ReservationLine>,
}

/// One product and how many units of it to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationLine {
    /// Product id, e.g. `PROD-007`.
    pub product_id: String,
    /// Units to hold, at least 1.
    pub quantity: u32,
}

/// One reservation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReservationIdArgs {
    /// Reservation id as `reserve_stock` answered it, e.g. `RSV-000001`.
    pub reservation_id: String,
}

// ---- resources ---------------------------------------------------------------------------------

/// A product of the catalogue, the same ids and prices as the SQL server's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// `PROD-001` .. `PROD-050`.
    pub product_id: String,
    /// Display name.
    pub name: String,
    /// Category, e.g. `electronics`.
    pub category: String,
    /// Unit price.
    pub price: f64,
    /// ISO 4217 currency of `price`.
    pub currency: String,
}

/// Every product of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductList {
    /// Products in id order.
    pub items: Vec<Product>,
    /// Number of items.
    pub count: usize,
}

/// A warehouse that holds stock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Warehouse {
    /// e.g. `WH-EAST`.
    pub warehouse_id: String,
    /// Display name.
    pub name: String,
    /// The sales region it serves (the regions of the SQL and document servers).
    pub region: String,
}

/// Every warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseList {
    /// Warehouses in id order.
    pub items: Vec<Warehouse>,
}

/// Stock of one product in one warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseStock {
    /// The warehouse.
    pub warehouse_id: String,
    /// Units on hand.
    pub quantity: u32,
    /// Below this many units the product should be reordered for this warehouse.
    pub reorder_level: u32,
    /// `quantity < reorderLevel`.
    pub below_reorder_level: bool,
}

/// Stock of one product across warehouses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductInventory {
    /// The product.
    pub product_id: String,
    /// Its display name, so a reader needs no second call.
    pub name: String,
    /// Units on hand over all warehouses.
    pub total_quantity: u32,
    /// Whether any warehouse is below its reorder level for this product.
    pub below_reorder_level: bool,
    /// Stock per warehouse, in warehouse id order.
    pub warehouses: Vec<WarehouseStock>,
}

/// Stock of several products.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// One entry per product, in product id order.
    pub items: Vec<ProductInventory>,
    /// Number of items.
    pub product_count: usize,
}

/// One product in one warehouse below its reorder level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LowStockItem {
    /// The product.
    pub product_id: String,
    /// Its display name.
    pub name: String,
    /// Where stock is low.
    pub warehouse_id: String,
    /// Units on hand.
    pub quantity: u32,
    /// The warehouse's reorder level for the product.
    pub reorder_level: u32,
    /// `reorderLevel - quantity`: units missing to reach the level.
    pub shortfall: u32,
}

/// Every product-and-warehouse pair below its reorder level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LowStock {
    /// Largest shortfall first; ties in product, then warehouse, id order.
    pub items: Vec<LowStockItem>,
    /// Number of items.
    pub count: usize,
    /// Number of distinct products among the items.
    pub product_count: usize,
}

/// Where a parcel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// The order is being prepared; a carrier is planned but nothing has left.
    AwaitingShipment,
    /// Handed to the carrier.
    InTransit,
    /// Received by the customer.
    Delivered,
    /// The order was cancelled; nothing ships.
    Cancelled,
}

/// The shipping status of one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shipment {
    /// The order, e.g. `ORD-00042`.
    pub order_id: String,
    /// The order's own status (`processing`, `shipped`, `delivered`, `cancelled`), as in SQL.
    pub order_status: String,
    /// Where the parcel is.
    pub status: ShipmentStatus,
    /// The carrier; planned while awaiting shipment, absent when cancelled.
    pub carrier: Option<String>,
    /// The carrier's tracking number, once the parcel has been handed over.
    pub tracking_number: Option<String>,
    /// When the carrier took the parcel (RFC 3339, UTC).
    pub shipped_at: Option<String>,
    /// When the customer received it (RFC 3339, UTC).
    pub delivered_at: Option<String>,
    /// The promised delivery day (`YYYY-MM-DD`); absent when cancelled.
    pub estimated_delivery: Option<String>,
}

/// Whether a reservation still holds its stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    /// The stock is held: it is not in the inventory's quantities.
    Reserved,
    /// The stock went back to the inventory; a released reservation stays released.
    Released,
}

/// Units of one product held in one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarehouseAllocation {
    /// The warehouse the units were taken from.
    pub warehouse_id: String,
    /// Units taken from it.
    pub quantity: u32,
}

/// One line of a reservation, with where its units were taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservedLine {
    /// The product.
    pub product_id: String,
    /// Units held.
    pub quantity: u32,
    /// Where they were taken from, in warehouse id order; a release puts each back where it
    /// came from, so warehouse quantities return exactly.
    pub warehouses: Vec<WarehouseAllocation>,
}

/// Stock held for one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// e.g. `RSV-000001`.
    pub reservation_id: String,
    /// The order it holds stock for (one reservation per order).
    pub order_id: String,
    /// Reserved or released.
    pub state: ReservationState,
    /// The lines in product id order.
    pub lines: Vec<ReservedLine>,
    /// When it was made (RFC 3339, UTC).
    pub reserved_at: String,
    /// When it was released (RFC 3339, UTC), once it is.
    pub released_at: Option<String>,
}

/// The answer of `POST /reservations` and of `reserve_stock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReserveOutcome {
    /// `false` when the order already had this reservation: nothing was taken this time.
    pub created: bool,
    /// The order's reservation.
    pub reservation: Reservation,
}

/// The answer of `POST /reservations/{reservationId}/release` and of `release_reservation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseOutcome {
    /// `true` when it was released before: nothing was put back this time.
    pub already_released: bool,
    /// The reservation, now released.
    pub reservation: Reservation,
}

/// The API's liveness answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Always `ok` when the API answers at all.
    pub status: String,
    /// Products served.
    pub products: usize,
    /// Warehouses served.
    pub warehouses: usize,
    /// Orders with a shipping status.
    pub orders: usize,
}

/// The body of every API error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorBody {
    /// What went wrong.
    pub error: ApiErrorDetail,
}

/// The detail of an API error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorDetail {
    /// The HTTP status, repeated so a logged body stands alone.
    pub status: u16,
    /// A stable machine-readable code: `invalid_id`, `not_found`, `throttled`, `unavailable`, ...
    pub code: String,
    /// For a human; names the offending id.
    pub message: String,
    /// Machine-readable facts of the error, when it has some (for `insufficient_stock`: the
    /// product, the units requested and the units available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}
