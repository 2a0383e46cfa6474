//! Tool arguments and results, with the JSON Schemas agents see (camelCase on the wire).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---- arguments -------------------------------------------------------------------------------

/// One user's behaviour.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserIdArgs {
    /// The user, e.g. `CUST-0001` (the same id as the SQL server's customer).
    pub user_id: String,
}

/// One customer's behaviour analysis.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomerIdArgs {
    /// The customer, e.g. `CUST-0001`.
    pub customer_id: String,
}

/// One customer segment.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SegmentArgs {
    /// The segment as stored in profiles: `premium`, `standard` or `budget`.
    pub segment: String,
}

/// A reporting period.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeriodArgs {
    /// `all` (default), `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days` or `YYYY-MM-DD..YYYY-MM-DD`
    /// (end exclusive).
    pub period: Option<String>,
}

/// A point read.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadItemArgs {
    /// `userEvents`, `sessions`, `onlineSales` or `profiles`.
    #[schemars(extend("enum" = ["userEvents", "sessions", "onlineSales", "profiles"]))]
    pub container: String,
    /// The document id.
    pub id: String,
    /// The value of the container's partition key (`userId`, `userId`, `region`, `customerId`).
    pub partition_key: String,
}

/// Sort order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    /// Smallest first.
    #[default]
    Asc,
    /// Largest first.
    Desc,
}

/// How to sort query results.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderBy {
    /// A dotted field path (`timestamp`, `items.0.unitPrice`) or `_ts` / `id`.
    pub field: String,
    /// `asc` (default) or `desc`.
    #[serde(default)]
    pub direction: SortDirection,
}

/// A paged query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryItemsArgs {
    /// `userEvents`, `sessions`, `onlineSales` or `profiles`.
    #[schemars(extend("enum" = ["userEvents", "sessions", "onlineSales", "profiles"]))]
    pub container: String,
    /// Restrict the query to one logical partition (cheaper). Omit for a cross-partition query.
    pub partition_key: Option<String>,
    /// Field conditions, combined with AND: `{"type": "purchase"}` (equality) or
    /// `{"amount": {"$gte": 100}}` with `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$in`, `$exists`.
    /// Keys are dotted paths (`items.0.category`); `id`, `_ts`, `_etag` are the system fields.
    pub filter: Option<Map<String, Value>>,
    /// Sort by one field; ties are broken by partition key and id.
    pub order_by: Option<OrderBy>,
    /// Page size, 1-1000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<i64>,
    /// The token from the previous page, to get the next one; the other arguments must not change.
    pub continuation_token: Option<String>,
}

/// A write.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpsertItemArgs {
    /// `userEvents`, `sessions`, `onlineSales` or `profiles`.
    #[schemars(extend("enum" = ["userEvents", "sessions", "onlineSales", "profiles"]))]
    pub container: String,
    /// The document: must carry a string `id` and a string value for the container's partition
    /// key field. System properties (`_etag`, `_ts`, ...) are ignored.
    pub item: Map<String, Value>,
    /// Write only if the stored document still has this `_etag` (optimistic concurrency);
    /// otherwise the call fails with `conflict`.
    pub if_match: Option<String>,
    /// Makes the write safe to repeat (1-200 characters): the same key with the same write, within
    /// 24 hours, answers with the document the first write stored and writes nothing; the same
    /// key with a different write is a `conflict`.
    pub idempotency_key: Option<String>,
}

/// A user event to record.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordEventArgs {
    /// The user, e.g. `CUST-0001`: the partition key of `userEvents`.
    pub user_id: String,
    /// What happened (1-100 characters): `page_view`, `search`, `add_to_cart`, `purchase`, as the
    /// behaviour tools count them, or another type of the caller's.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's fields (`productId`, `category`, `orderId`, `amount`...), stored at the top
    /// level of the document as seeded events hold theirs; `id`, `userId`, `type`, `timestamp`,
    /// `idempotencyKey` and `_` fields are set by the server and refused here.
    #[serde(default)]
    pub payload: Map<String, Value>,
    /// A key unique to this event (1-200 characters): repeating the call with the same key and
    /// content answers with the stored document (`replayed: true`) and writes nothing; the same
    /// key with other content is a `conflict`.
    pub idempotency_key: String,
}

// ---- results ---------------------------------------------------------------------------------

/// A stored document: the caller's fields plus `_etag` and `_ts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Document(pub Map<String, Value>);

impl JsonSchema for Document {
    fn schema_name() -> Cow<'static, str> {
        "Document".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "description": "A stored document: the caller's fields plus the system properties `_etag` (changes on every write) and `_ts` (last write, Unix seconds).",
            "properties": {
                "id": { "type": "string" },
                "_etag": { "type": "string" },
                "_ts": { "type": "integer" }
            },
            "required": ["id", "_etag", "_ts"],
            "additionalProperties": true
        })
    }
}

/// The outcome of `record_event`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// The event document as stored, with `_etag` and `_ts`.
    pub event: Document,
    /// True when the idempotency key had already recorded this event: nothing was written.
    pub replayed: bool,
}

/// A page of query results.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryPage {
    /// The documents of this page.
    pub items: Vec<Document>,
    /// Documents on this page.
    pub count: usize,
    /// Pass back to get the next page; `null` on the last page.
    pub continuation_token: Option<String>,
    /// Whether the query fanned out over every partition (and was charged for it).
    pub cross_partition: bool,
}

/// How much of a user's activity went to one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CategoryShare {
    /// Product category.
    pub category: String,
    /// Weighted activity: page view 1, search 0.5, cart addition 3, purchase 5.
    pub activity: f64,
    /// Share of all weighted activity (0-1).
    pub share: f64,
}

/// A user's online behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBehavior {
    /// The user.
    pub user_id: String,
    /// Segment from the profile (`null` without a profile).
    pub segment: Option<String>,
    /// Region from the profile.
    pub region: Option<String>,
    /// Product page views.
    pub page_views: u64,
    /// Searches.
    pub searches: u64,
    /// Cart additions.
    pub cart_adds: u64,
    /// Online purchases.
    pub purchases: u64,
    /// Browsing sessions.
    pub sessions: u64,
    /// Average session length in minutes.
    pub avg_session_minutes: f64,
    /// Last event or session end (RFC 3339), `null` if none.
    pub last_active: Option<String>,
    /// Up to three categories with the most weighted activity.
    pub favorite_categories: Vec<CategoryShare>,
    /// Sessions with a cart that ended without a purchase, over sessions with a cart (0-1).
    pub cart_abandonment_rate: f64,
    /// Sessions ending in a purchase, over all sessions (0-1).
    pub conversion_rate: f64,
    /// The device used for most sessions.
    pub main_device: Option<String>,
}

/// Churn risk class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChurnRisk {
    /// Active recently and engaged.
    Low,
    /// Cooling off.
    Medium,
    /// Gone quiet or barely engaged.
    High,
}

/// The measurements the engagement score is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngagementSignals {
    /// Days between the last activity and `asOf` (`null` when there is no activity).
    pub days_since_last_active: Option<i64>,
    /// Sessions started in the 90 days before `asOf`.
    pub sessions_last_90_days: u64,
    /// Product page views per session.
    pub avg_page_views_per_session: f64,
    /// Sessions ending in a purchase (0-1).
    pub conversion_rate: f64,
    /// Carts abandoned (0-1); `null` when the user never added to a cart.
    pub cart_abandonment_rate: Option<f64>,
    /// Share of sessions on mobile (0-1).
    pub mobile_share: f64,
}

/// Points per component; they add up to the engagement score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreBreakdown {
    /// Up to 30: activity within the last 90 days, more for more recent.
    pub recency: f64,
    /// Up to 25: sessions in the last 90 days (12 or more earns all).
    pub frequency: f64,
    /// Up to 15: page views per session (6 or more earns all).
    pub depth: f64,
    /// Up to 20: conversion rate (25% or more earns all).
    pub conversion: f64,
    /// Up to 10: carts that ended in a purchase (5 when the user never used a cart).
    pub cart_follow_through: f64,
}

/// One suggested action and the data behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// A short machine-friendly name (`win_back`, `cart_recovery`, ...).
    pub action: String,
    /// Why, with the numbers.
    pub reason: String,
}

/// A customer's behaviour analysis.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserAnalysis {
    /// The customer.
    pub customer_id: String,
    /// Segment from the profile.
    pub segment: Option<String>,
    /// Region from the profile.
    pub region: Option<String>,
    /// 0-100, the sum of `scoreBreakdown`.
    pub engagement_score: u8,
    /// `low`, `medium` or `high`.
    pub churn_risk: ChurnRisk,
    /// The instant recency is measured from: the end of the data window.
    pub as_of: String,
    /// The measurements.
    pub signals: EngagementSignals,
    /// The score's components.
    pub score_breakdown: ScoreBreakdown,
    /// Suggested actions, most urgent first.
    pub recommendations: Vec<Recommendation>,
}

/// How many users fall in each churn class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChurnDistribution {
    /// Users at low risk.
    pub low: u64,
    /// Users at medium risk.
    pub medium: u64,
    /// Users at high risk.
    pub high: u64,
}

/// A segment's behaviour.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentAnalysis {
    /// The segment.
    pub segment: String,
    /// Users with a profile in the segment.
    pub user_count: u64,
    /// Mean engagement score (0-100).
    pub avg_engagement_score: f64,
    /// Users per churn class.
    pub churn_distribution: ChurnDistribution,
    /// Up to five categories with the most weighted activity across the segment.
    pub top_categories: Vec<CategoryShare>,
    /// Mean cart abandonment rate over users who used a cart (0-1).
    pub avg_cart_abandonment_rate: f64,
    /// Mean sessions per user.
    pub avg_sessions_per_user: f64,
    /// Product page views across the segment.
    pub total_page_views: u64,
    /// Up to 20 high-risk users, least engaged first.
    pub high_risk_users: Vec<String>,
    /// The instant recency is measured from.
    pub as_of: String,
}

/// Online sales of one region.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionSales {
    /// Region name.
    pub region: String,
    /// Completed (not returned) online orders.
    pub order_count: i64,
    /// Their revenue.
    pub revenue: f64,
}

/// Online sales per region.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SalesByRegion {
    /// The period as asked.
    pub period: String,
    /// One entry per region, by region name (every region, even without sales).
    pub regions: Vec<RegionSales>,
    /// Sum of the regions' revenue.
    pub total_revenue: f64,
    /// Sum of the regions' orders.
    pub total_orders: i64,
}
