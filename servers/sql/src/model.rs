//! Tool arguments and results, with the JSON Schemas agents see (camelCase on the wire).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Converts stored cents into the currency amount tools report.
pub fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

// ---- arguments -------------------------------------------------------------------------------

/// One customer.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerIdArgs {
    /// Customer id, e.g. `CUST-0001`.
    pub customer_id: String,
}

/// A customer's orders.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerOrdersArgs {
    /// Customer id, e.g. `CUST-0001`.
    pub customer_id: String,
    /// Most recent orders to return (1-500, default 50).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<i64>,
}

/// One order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderIdArgs {
    /// Order id, e.g. `ORD-00042`.
    pub order_id: String,
}

/// What "top" means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RankBy {
    /// Total spent (cancelled orders excluded).
    #[default]
    Spend,
    /// Number of orders (cancelled orders excluded).
    Orders,
}

fn default_top_limit() -> i64 {
    10
}

/// The best customers.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopCustomersArgs {
    /// How many customers (1-200, default 10).
    #[serde(default = "default_top_limit")]
    #[schemars(range(min = 1, max = 200))]
    pub limit: i64,
    /// Rank by `spend` (default) or `orders`.
    #[serde(default)]
    pub by: RankBy,
    /// Only count orders on or after this date (`YYYY-MM-DD`).
    pub since: Option<String>,
}

/// Which figure to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    /// Revenue of non-cancelled orders.
    Sales,
    /// Count of non-cancelled orders.
    Orders,
    /// Revenue divided by order count.
    AverageBasket,
}

/// A metric over a period.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsArgs {
    /// `sales`, `orders` or `average_basket`.
    pub metric_type: MetricType,
    /// `all` (default), `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days` or `YYYY-MM-DD..YYYY-MM-DD`.
    pub period: Option<String>,
}

/// A period.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeriodArgs {
    /// `all` (default), `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days` or `YYYY-MM-DD..YYYY-MM-DD`.
    pub period: Option<String>,
}

/// One line of a new order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrderLine {
    /// Product id, e.g. `PROD-007`.
    pub product_id: String,
    /// Units (1-1000).
    #[schemars(range(min = 1, max = 1000))]
    pub quantity: i64,
}

/// A new order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderArgs {
    /// The buyer, e.g. `CUST-0001`.
    pub customer_id: String,
    /// At least one line.
    pub lines: Vec<NewOrderLine>,
    /// A key unique to this purchase (1-200 characters): repeating a call with the same key
    /// returns the first order instead of creating another.
    pub idempotency_key: String,
}

/// An order to cancel.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelOrderArgs {
    /// Order id, e.g. `ORD-02001`.
    pub order_id: String,
    /// Why the order is cancelled (1-500 characters), kept with the order.
    pub reason: String,
}

/// A read-only SQL statement.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryArgs {
    /// One SELECT statement (SQLite dialect); `?1`, `?2`... are bound from `params`.
    pub sql: String,
    /// Positional parameters for the statement's placeholders.
    #[serde(default)]
    pub params: Vec<Value>,
}

// ---- results ---------------------------------------------------------------------------------

/// A customer with lifetime figures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    /// Customer id.
    pub customer_id: String,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Sales region.
    pub region: String,
    /// Segment (`premium`, `standard`, `budget`).
    pub segment: String,
    /// Account opened (RFC 3339).
    pub created_at: String,
    /// Non-cancelled orders.
    pub order_count: i64,
    /// Total spent on non-cancelled orders.
    pub total_spent: f64,
}

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// Product id.
    pub product_id: String,
    /// Product name.
    pub product_name: String,
    /// Product category.
    pub category: String,
    /// Units.
    pub quantity: i64,
    /// Price per unit when ordered.
    pub unit_price: f64,
    /// Quantity × unit price.
    pub line_total: f64,
}

/// An order with its lines.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order id.
    pub order_id: String,
    /// The buyer.
    pub customer_id: String,
    /// `processing`, `shipped`, `delivered` or `cancelled`.
    pub status: String,
    /// Placed at (RFC 3339).
    pub created_at: String,
    /// Order total.
    pub total: f64,
    /// The lines.
    pub lines: Vec<OrderLine>,
}

/// A customer's most recent orders.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomerOrders {
    /// The customer.
    pub customer_id: String,
    /// All orders the customer ever placed (any status).
    pub total_orders: i64,
    /// Orders returned (at most `limit`).
    pub count: usize,
    /// Newest first.
    pub orders: Vec<Order>,
}

/// A ranked customer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopCustomer {
    /// 1 for the best.
    pub rank: i64,
    /// Customer id.
    pub customer_id: String,
    /// Full name.
    pub name: String,
    /// Sales region.
    pub region: String,
    /// Segment.
    pub segment: String,
    /// Non-cancelled orders in the window.
    pub order_count: i64,
    /// Spent on them.
    pub total_spent: f64,
}

/// The ranking.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopCustomers {
    /// What the ranking is by.
    pub by: RankBy,
    /// Window start, if any.
    pub since: Option<String>,
    /// Best first.
    pub customers: Vec<TopCustomer>,
}

/// A metric over a period.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// The metric asked for.
    pub metric_type: MetricType,
    /// The period as asked.
    pub period: String,
    /// The metric's value.
    pub value: f64,
    /// Non-cancelled orders in the period.
    pub order_count: i64,
    /// Their revenue.
    pub revenue: f64,
    /// Revenue / order count (0 when there are no orders).
    pub average_basket: f64,
}

/// Store sales of one region.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionSales {
    /// Region name.
    pub region: String,
    /// Non-cancelled orders.
    pub order_count: i64,
    /// Their revenue.
    pub revenue: f64,
}

/// Store sales per region.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesByRegion {
    /// The period as asked.
    pub period: String,
    /// One entry per region, by region name.
    pub regions: Vec<RegionSales>,
    /// Sum of the regions' revenue.
    pub total_revenue: f64,
    /// Sum of the regions' orders.
    pub total_orders: i64,
}

/// The outcome of `create_order`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedOrder {
    /// The order (the first one, when the key was used before).
    pub order: Order,
    /// False when the idempotency key had already created this order.
    pub created: bool,
}

/// The outcome of `cancel_order`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelledOrder {
    /// The order, now `cancelled`.
    pub order: Order,
    /// True when the order was cancelled before this call, which then changed nothing.
    pub already_cancelled: bool,
    /// When the order was cancelled (RFC 3339); `null` for orders cancelled before
    /// `cancel_order` recorded it.
    pub cancelled_at: Option<String>,
    /// The reason given by the call that cancelled it (not this call's, if it was already
    /// cancelled); `null` when none was recorded.
    pub reason: Option<String>,
}

/// Rows of a read-only query.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    /// Column names.
    pub columns: Vec<String>,
    /// One array per row, values in column order.
    pub rows: Vec<Vec<Value>>,
    /// Rows returned.
    pub row_count: usize,
    /// True when the row limit cut the result.
    pub truncated: bool,
}
