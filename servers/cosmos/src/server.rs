//! The MCP face of the document store: tools, request charges, throttling, and server info.
//!
//! Every call passes one gate and one meter, both in [`CosmosServer::call_tool`]: the RU budget
//! admits or throttles it before any tool runs, a fresh [`Meter`] rides in the request extensions
//! for the tool to charge, and the total is written into `_meta.requestCharge` of whatever comes
//! back (success, tool error, or invalid-params error `data`) and taken from the budget. Tools stay
//! plain `Result<Json<T>, ToolFailure>` functions, so their output schemas come from their types.

use std::{collections::BTreeMap, sync::Arc};

use kit::{ServerKit, ToolError, ToolFailure};
use retail_seed::period::Period;
use rmcp::{
    ErrorData, Json, RoleServer, ServerHandler,
    handler::server::{
        router::tool::ToolRouter,
        tool::{Extension, ToolCallContext},
        wrapper::Parameters,
    },
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, MetaObject, ServerCapabilities,
        ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::{
    behavior::{self, Summary},
    containers::{self, PROFILES, SESSIONS, USER_EVENTS},
    events,
    filter::{Filter, SortKey},
    item::{self, PreconditionFailed},
    model::*,
    ru::{self, Meter, RuBudget, Scope},
    store::{self, QuerySpec, Store, StoredDoc, UpsertOutcome, total_bytes},
    token,
};

/// `_meta` key carrying a call's request-unit charge.
pub const META_REQUEST_CHARGE: &str = "requestCharge";

/// Default page size of `query_items`.
const DEFAULT_PAGE: i64 = 100;
/// Largest page size of `query_items`.
const MAX_PAGE: i64 = 1000;

/// One MCP session's handler; clones share the store, the kit and the RU budget.
#[derive(Debug, Clone)]
pub struct CosmosServer {
    store: Arc<Store>,
    kit: ServerKit,
    /// Shared by every session: the provisioned throughput belongs to the store, not to a client.
    budget: Arc<RuBudget>,
    tool_router: ToolRouter<Self>,
}

/// Maps a SQLite failure to a tool error: busy/locked is transient, anything else is a bug.
fn db_failure(e: rusqlite::Error) -> ToolFailure {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            ToolError::unavailable(format!("document store busy: {e}")).into()
        }
        _ => ToolError::internal(format!("document store error: {e}")).into(),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ToolFailure {
    ToolError::internal(format!("{what}: {e}")).into()
}

/// Parses stored bodies; they were valid JSON when written (the table checks it).
fn bodies(docs: &[StoredDoc]) -> Result<Vec<Value>, ToolFailure> {
    docs.iter()
        .map(|d| {
            serde_json::from_str(&d.body).map_err(|e| internal("stored document is not JSON", e))
        })
        .collect()
}

fn document(doc: &StoredDoc) -> Result<Document, ToolFailure> {
    match doc.to_value() {
        Ok(Value::Object(map)) => Ok(Document(map)),
        Ok(_) => Err(internal("stored document", "not an object")),
        Err(e) => Err(internal("stored document is not JSON", e)),
    }
}

/// A user's documents: profile partition, events, sessions.
struct UserDocs {
    profiles: Vec<StoredDoc>,
    events: Vec<StoredDoc>,
    sessions: Vec<StoredDoc>,
}

impl UserDocs {
    /// Three single-partition queries.
    fn charge(&self, meter: &Meter) {
        for docs in [&self.profiles, &self.events, &self.sessions] {
            meter.add(ru::query(
                Scope::SinglePartition,
                docs.len(),
                total_bytes(docs),
            ));
        }
    }

    /// The profile whose id is the user id, else the partition's first document.
    fn profile(&self, user: &str) -> Result<Option<Value>, ToolFailure> {
        let doc = self
            .profiles
            .iter()
            .find(|d| d.id == user)
            .or_else(|| self.profiles.first());
        doc.map(|d| serde_json::from_str(&d.body))
            .transpose()
            .map_err(|e| internal("stored profile is not JSON", e))
    }

    fn summary(&self) -> Result<Summary, ToolFailure> {
        Ok(Summary::from_documents(
            &bodies(&self.events)?,
            &bodies(&self.sessions)?,
            behavior::as_of(),
        ))
    }
}

#[tool_router]
impl CosmosServer {
    /// A handler over `store`, throttled by `budget`.
    pub fn new(store: Arc<Store>, kit: ServerKit, budget: Arc<RuBudget>) -> Self {
        Self {
            store,
            kit,
            budget,
            tool_router: Self::tool_router(),
        }
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, ToolFailure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store.reader()))
            .await
            .map_err(|e| internal("read task failed", e))?
            .map_err(db_failure)
    }

    /// Loads one user's profile, events and sessions (three single-partition queries).
    async fn user_docs(&self, user: &str, meter: &Meter) -> Result<UserDocs, ToolFailure> {
        let user = user.to_owned();
        let docs = self
            .read(move |c| {
                Ok(UserDocs {
                    profiles: store::partition(c, PROFILES.name, &user)?,
                    events: store::partition(c, USER_EVENTS.name, &user)?,
                    sessions: store::partition(c, SESSIONS.name, &user)?,
                })
            })
            .await?;
        docs.charge(meter);
        Ok(docs)
    }

    #[tool(
        description = "A user's online behaviour computed from their documents: page views, searches, cart additions, purchases, sessions, average session length, last activity, favourite categories (weighted: view 1, search 0.5, cart 3, purchase 5), cart abandonment and conversion rates, main device, plus segment and region from the profile. User ids are the SQL server's customer ids (CUST-0001). The charge is reported in _meta.requestCharge.",
        annotations(
            title = "Get user behaviour",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_user_behavior(
        &self,
        Parameters(args): Parameters<UserIdArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<UserBehavior>, ToolFailure> {
        item::check_partition_key("userId", &args.user_id)?;
        let docs = self.user_docs(&args.user_id, &meter).await?;
        let profile = docs.profile(&args.user_id)?;
        let summary = docs.summary()?;
        if profile.is_none() && summary.is_empty() {
            return Err(ToolError::not_found(format!(
                "user `{}` has no profile and no activity",
                args.user_id
            ))
            .into());
        }
        Ok(Json(behavior::user_behavior(
            &args.user_id,
            profile.as_ref(),
            &summary,
        )))
    }

    #[tool(
        description = "Analyse one customer's behaviour: engagement score 0-100 (recency 30, frequency 25, depth 15, conversion 20, cart follow-through 10 points, broken down in scoreBreakdown), churn risk (high: >60 days inactive or score <25; medium: >21 days or score <50; else low), the signals behind them, and recommended actions derived from the data. Recency is measured at asOf, the end of the data window.",
        annotations(
            title = "Analyse user behaviour",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn analyze_user_behavior(
        &self,
        Parameters(args): Parameters<CustomerIdArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<UserAnalysis>, ToolFailure> {
        item::check_partition_key("customerId", &args.customer_id)?;
        let docs = self.user_docs(&args.customer_id, &meter).await?;
        let profile = docs.profile(&args.customer_id)?;
        let summary = docs.summary()?;
        if profile.is_none() && summary.is_empty() {
            return Err(ToolError::not_found(format!(
                "customer `{}` has no profile and no activity",
                args.customer_id
            ))
            .into());
        }
        Ok(Json(behavior::user_analysis(
            &args.customer_id,
            profile.as_ref(),
            &summary,
            behavior::as_of(),
        )))
    }

    #[tool(
        description = "Aggregate behaviour over a customer segment (premium, standard, budget): user count, average engagement score, churn-risk distribution, top categories, average cart abandonment, sessions per user, total page views and the least engaged high-risk users. Cross-partition: expensive in RU.",
        annotations(
            title = "Analyse a segment",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn analyze_users(
        &self,
        Parameters(args): Parameters<SegmentArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<SegmentAnalysis>, ToolFailure> {
        let segment = args.segment.trim().to_owned();
        if segment.is_empty() {
            return Err(ToolFailure::invalid_params("segment", "must not be empty"));
        }
        let mut by_segment = Map::new();
        by_segment.insert("segment".into(), Value::from(segment.clone()));
        let filter =
            Filter::parse(&by_segment).map_err(|m| ToolFailure::invalid_params("segment", m))?;
        let (profiles, events, sessions) = self
            .read(move |c| {
                let profiles = store::query(
                    c,
                    &QuerySpec {
                        container: PROFILES.name,
                        partition: None,
                        filter: &filter,
                        sort: None,
                        offset: 0,
                        limit: u64::from(u32::MAX),
                    },
                )?;
                let pks: Vec<String> = profiles.iter().map(|p| p.pk.clone()).collect();
                let events = store::partitions(c, USER_EVENTS.name, &pks)?;
                let sessions = store::partitions(c, SESSIONS.name, &pks)?;
                Ok((profiles, events, sessions))
            })
            .await?;
        meter.add(ru::query(
            Scope::CrossPartition,
            profiles.len(),
            total_bytes(&profiles),
        ));
        if profiles.is_empty() {
            let known = self.read(known_segments).await?;
            meter.add(ru::query(Scope::CrossPartition, 0, 0));
            return Err(ToolFailure::invalid_params(
                "segment",
                format!(
                    "no profiles in segment `{segment}`; segments with profiles: {}",
                    known.join(", ")
                ),
            ));
        }
        for docs in [&events, &sessions] {
            meter.add(ru::query(
                Scope::CrossPartition,
                docs.len(),
                total_bytes(docs),
            ));
        }
        let mut grouped: BTreeMap<&str, (Vec<Value>, Vec<Value>)> = profiles
            .iter()
            .map(|p| (p.pk.as_str(), (Vec::new(), Vec::new())))
            .collect();
        for (docs, events_side) in [(&events, true), (&sessions, false)] {
            for (doc, body) in docs.iter().zip(bodies(docs)?) {
                if let Some(entry) = grouped.get_mut(doc.pk.as_str()) {
                    if events_side {
                        entry.0.push(body);
                    } else {
                        entry.1.push(body);
                    }
                }
            }
        }
        let as_of = behavior::as_of();
        let members: Vec<(String, Summary)> = grouped
            .into_iter()
            .map(|(pk, (e, s))| (pk.to_owned(), Summary::from_documents(&e, &s, as_of)))
            .collect();
        Ok(Json(behavior::segment_analysis(&segment, &members, as_of)))
    }

    #[tool(
        description = "Online (web and app) sales per region over a period: `all` (default), `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days`, or `YYYY-MM-DD..YYYY-MM-DD` (end exclusive). Every region is listed with orderCount and revenue; returned orders are excluded. Same shape and period forms as the SQL server's store sales by region, so the two can be added up.",
        annotations(
            title = "Get online sales by region",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_online_sales_by_region(
        &self,
        Parameters(args): Parameters<PeriodArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<SalesByRegion>, ToolFailure> {
        let period = Period::parse(args.period.as_deref())
            .map_err(|m| ToolFailure::invalid_params("period", m))?;
        let (from, to) = (period.from.clone(), period.to.clone());
        let found = self
            .read(move |c| store::online_sales_by_region(c, &from, &to))
            .await?;
        meter.add(ru::query(
            Scope::CrossPartition,
            found.iter().map(|r| r.docs).sum(),
            found.iter().map(|r| r.bytes).sum(),
        ));
        let mut regions: BTreeMap<String, (i64, f64)> = retail_seed::REGIONS
            .iter()
            .map(|r| ((*r).to_owned(), (0, 0.0)))
            .collect();
        for r in found {
            regions.insert(r.region, (r.orders, r.revenue));
        }
        let cents = |x: f64| (x * 100.0).round() / 100.0;
        let regions: Vec<RegionSales> = regions
            .into_iter()
            .map(|(region, (order_count, revenue))| RegionSales {
                region,
                order_count,
                revenue: cents(revenue),
            })
            .collect();
        Ok(Json(SalesByRegion {
            period: period.label,
            total_revenue: cents(regions.iter().map(|r| r.revenue).sum()),
            total_orders: regions.iter().map(|r| r.order_count).sum(),
            regions,
        }))
    }

    #[tool(
        description = "Point read of one document by container, id and partition key value: the cheapest read (1 RU per KB). Returns the document with _etag (pass it as ifMatch to upsert_item) and _ts. Containers and partition keys: userEvents /userId, sessions /userId, onlineSales /region, profiles /customerId.",
        annotations(title = "Read item", read_only_hint = true, open_world_hint = false)
    )]
    async fn read_item(
        &self,
        Parameters(args): Parameters<ReadItemArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<Document>, ToolFailure> {
        let container = containers::lookup(&args.container)?;
        item::check_id("id", &args.id)?;
        item::check_partition_key("partitionKey", &args.partition_key)?;
        let (id, pk) = (args.id.clone(), args.partition_key.clone());
        let found = self
            .read(move |c| store::read_item(c, container.name, &pk, &id))
            .await?;
        match found {
            Some(doc) => {
                meter.add(ru::point_read(doc.bytes()));
                Ok(Json(document(&doc)?))
            }
            None => {
                meter.add(ru::MISS_RU);
                Err(ToolError::not_found(format!(
                    "item `{}` does not exist in partition `{}` of container `{}`",
                    args.id, args.partition_key, container.name
                ))
                .into())
            }
        }
    }

    #[tool(
        description = "Query documents of a container, paged. Give partitionKey (or an equality on the partition key field in the filter) for a single-partition query; without it the query fans out over every partition and costs more RU. filter: an object of field conditions combined with AND, keys are dotted paths (`items.0.category`) or the system fields `id`, `_ts`, `_etag`; a value is either a scalar (equality) or an object of operators `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte` (string or number), `$in` (array), `$exists` (boolean). Comparisons are type-strict (5 does not match \"5\"). Example: {\"type\": \"purchase\", \"amount\": {\"$gte\": 100}}. orderBy: {\"field\": \"timestamp\", \"direction\": \"desc\"}. limit 1-1000 (default 100). Pass continuationToken from a page to get the next; it is refused if the other arguments change.",
        annotations(title = "Query items", read_only_hint = true, open_world_hint = false)
    )]
    async fn query_items(
        &self,
        Parameters(args): Parameters<QueryItemsArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<QueryPage>, ToolFailure> {
        let container = containers::lookup(&args.container)?;
        let limit = args.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ToolFailure::invalid_params(
                "limit",
                format!("must be 1-{MAX_PAGE}, got {limit}"),
            ));
        }
        let limit = limit.unsigned_abs();
        if let Some(pk) = &args.partition_key {
            item::check_partition_key("partitionKey", pk)?;
        }
        let filter = args
            .filter
            .as_ref()
            .map(Filter::parse)
            .transpose()
            .map_err(|m| ToolFailure::invalid_params("filter", m))?
            .unwrap_or_default();
        let sort = args
            .order_by
            .as_ref()
            .map(|o| SortKey::parse(&o.field, o.direction == SortDirection::Desc))
            .transpose()
            .map_err(|m| ToolFailure::invalid_params("orderBy.field", m))?;
        let fingerprint = token::fingerprint(&format!(
            "{}|{:?}|{}|{:?}",
            container.name,
            args.partition_key,
            filter.canonical(),
            sort
        ));
        let offset = match &args.continuation_token {
            Some(t) => token::decode(t, fingerprint)
                .map_err(|e| ToolFailure::invalid_params("continuationToken", e.to_string()))?,
            None => 0,
        };
        let partition = args.partition_key.clone().or_else(|| {
            filter
                .pinned_partition(container.partition_key_field())
                .map(str::to_owned)
        });
        let scope = if partition.is_some() {
            Scope::SinglePartition
        } else {
            Scope::CrossPartition
        };
        let mut docs = self
            .read(move |c| {
                store::query(
                    c,
                    &QuerySpec {
                        container: container.name,
                        partition: partition.as_deref(),
                        filter: &filter,
                        sort: sort.as_ref(),
                        offset,
                        limit,
                    },
                )
            })
            .await?;
        let more = docs.len() as u64 > limit;
        docs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        meter.add(ru::query(scope, docs.len(), total_bytes(&docs)));
        let items = docs.iter().map(document).collect::<Result<Vec<_>, _>>()?;
        Ok(Json(QueryPage {
            count: items.len(),
            items,
            continuation_token: more
                .then(|| token::encode(offset.saturating_add(limit), fingerprint)),
            cross_partition: scope == Scope::CrossPartition,
        }))
    }

    #[tool(
        description = "Create or replace a document (about 5 RU per KB). The item must carry a string `id` and a string value for the container's partition key field (userEvents/sessions: userId, onlineSales: region, profiles: customerId). With ifMatch set to the _etag you read, the write happens only if nobody changed the document since (otherwise `conflict`, like HTTP 412); re-read and retry. With an idempotencyKey the call is safe to repeat: the same key and write within 24 hours returns the first write's document and writes nothing again. Returns the stored document with its new _etag and _ts.",
        annotations(
            title = "Upsert item",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn upsert_item(
        &self,
        Parameters(args): Parameters<UpsertItemArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<Document>, ToolFailure> {
        let container = containers::lookup(&args.container)?;
        if args.if_match.as_deref().is_some_and(str::is_empty) {
            return Err(ToolFailure::invalid_params("ifMatch", "must not be empty"));
        }
        let key = match args.idempotency_key.as_deref().map(str::trim) {
            Some(k) if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN => {
                return Err(ToolFailure::invalid_params(
                    "idempotencyKey",
                    format!("must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters"),
                ));
            }
            k => k.map(str::to_owned),
        };
        let new_item = item::prepare(&container, args.item)?;
        let (id, pk) = (new_item.id.clone(), new_item.partition_key.clone());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let store = self.store.clone();
        let if_match = args.if_match;
        let outcome = tokio::task::spawn_blocking(move || {
            store::upsert(
                &mut store.writer(),
                container.name,
                &new_item,
                if_match.as_deref(),
                key.as_deref(),
                now,
            )
        })
        .await
        .map_err(|e| internal("write task failed", e))?
        .map_err(db_failure)?;
        match outcome {
            UpsertOutcome::Written { doc, created } => {
                meter.add(ru::write(doc.bytes()));
                tracing::info!(container = container.name, pk = %pk, id = %id, created, "item written");
                Ok(Json(document(&doc)?))
            }
            UpsertOutcome::Replayed { doc, created } => {
                // Looked up, not written: charged as a point read of what it returns.
                meter.add(ru::point_read(doc.bytes()));
                tracing::info!(container = container.name, pk = %pk, id = %id, created, "item write replayed for its idempotency key");
                Ok(Json(document(&doc)?))
            }
            UpsertOutcome::KeyReused { first_id } => {
                meter.add(ru::MISS_RU);
                Err(ToolError::conflict(format!(
                    "idempotencyKey was already used for a different write (of `{first_id}`); use a new key for a new write"
                ))
                .into())
            }
            UpsertOutcome::Refused(reason) => {
                meter.add(ru::MISS_RU);
                let mut err = ToolError::conflict(format!(
                    "upsert of `{id}` (partition `{pk}`) in `{}` refused: {reason}; read the item again and retry with its current _etag",
                    container.name
                ));
                if let PreconditionFailed::Stale { current } = reason {
                    err = err.with_meta("currentEtag", Value::from(current));
                }
                Err(err.into())
            }
        }
    }

    #[tool(
        description = "Record one user event in userEvents (partition /userId), exactly once per idempotencyKey (about 5 RU per KB). type: what happened (page_view, search, add_to_cart, purchase are what the behaviour tools count; other types are kept too). payload: the event's fields (productId, category, orderId, amount...), stored at the top level of the document next to id, userId, type and timestamp, which the server sets. Repeating the call with the same key and content answers with the stored document (replayed: true, charged as a read) and writes nothing; the same key with other content is a `conflict`.",
        annotations(
            title = "Record event",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn record_event(
        &self,
        Parameters(args): Parameters<RecordEventArgs>,
        Extension(meter): Extension<Meter>,
    ) -> Result<Json<RecordedEvent>, ToolFailure> {
        let now = chrono::Utc::now();
        let write = events::prepare(&args, &retail_seed::timestamp(now))?;
        let store = self.store.clone();
        let (pk, id) = (write.item.partition_key.clone(), write.item.id.clone());
        let outcome = tokio::task::spawn_blocking(move || {
            store::upsert_keyed(
                &mut store.writer(),
                USER_EVENTS.name,
                &write.item,
                None,
                Some(write.idempotency_key()),
                now.timestamp(),
            )
        })
        .await
        .map_err(|e| internal("write task failed", e))?
        .map_err(db_failure)?;
        match outcome {
            UpsertOutcome::Written { doc, .. } => {
                meter.add(ru::write(doc.bytes()));
                tracing::info!(pk = %pk, id = %id, "event recorded");
                Ok(Json(RecordedEvent {
                    event: document(&doc)?,
                    replayed: false,
                }))
            }
            UpsertOutcome::Replayed { doc, .. } => {
                // Looked up, not written: charged as a point read of what it returns.
                meter.add(ru::point_read(doc.bytes()));
                tracing::info!(pk = %pk, id = %id, "event replayed for its idempotency key");
                Ok(Json(RecordedEvent {
                    event: document(&doc)?,
                    replayed: true,
                }))
            }
            UpsertOutcome::KeyReused { first_id } => {
                meter.add(ru::MISS_RU);
                Err(ToolError::conflict(format!(
                    "idempotencyKey was already used for a different write (of `{first_id}`); use a new key for a new event"
                ))
                .with_retryable(false)
                .into())
            }
            UpsertOutcome::Refused(reason) => {
                Err(internal("an unconditional event write was refused", reason))
            }
        }
    }
}

/// Longest accepted `idempotencyKey` of `upsert_item`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// Distinct segments in profiles, for the error that names the valid ones.
fn known_segments(c: &Connection) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT DISTINCT json_extract(body, '$.segment') FROM docs
         WHERE container = ?1 AND json_type(body, '$.segment') = 'text' ORDER BY 1",
    )?
    .query_map([PROFILES.name], |r| r.get(0))?
    .collect()
}

/// Writes the charge into a call's outcome: `_meta` of a result, `data` of a JSON-RPC error.
///
/// A charge already present is kept, so the outer pass that gives fault-injected results (which
/// never reached a tool) their zero charge cannot overwrite a tool's real one.
fn with_charge(
    outcome: Result<CallToolResponse, ErrorData>,
    charge: f64,
) -> Result<CallToolResponse, ErrorData> {
    match outcome {
        Ok(CallToolResponse::Complete(mut result)) => {
            result
                .meta
                .get_or_insert_with(MetaObject::new)
                .0
                .entry(META_REQUEST_CHARGE)
                .or_insert(Value::from(charge));
            Ok(result.into())
        }
        Err(mut e) => {
            match &mut e.data {
                Some(Value::Object(data)) => {
                    data.entry(META_REQUEST_CHARGE)
                        .or_insert(Value::from(charge));
                }
                None => e.data = Some(json!({ META_REQUEST_CHARGE: charge })),
                Some(_) => {}
            }
            Err(e)
        }
        other => other,
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CosmosServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "cosmos-mcp-server",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "A Cosmos-DB-like document store of the retail company's online behaviour. \
                 Containers (partition key): userEvents (/userId), sessions (/userId), \
                 onlineSales (/region), profiles (/customerId). User and customer ids are the SQL \
                 server's (CUST-0001). Every result reports its cost in _meta.requestCharge (RU); \
                 past the provisioned RU/s calls fail with `throttled` and _meta.retryAfterMs.",
            )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let outcome = self
            .kit
            .call_tool(self, request, context, |request, mut context| async move {
                if self.tool_router.has_route(&request.name)
                    && let Err(wait) = self.budget.admit()
                {
                    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(tool = %request.name, retry_after_ms = ms, "throttled");
                    return Ok(ToolError::throttled(
                        format!(
                            "request rate is large: the {} RU/s budget is spent; retry after {ms} ms",
                            self.budget.per_second()
                        ),
                        ms,
                    )
                    .with_meta(META_REQUEST_CHARGE, Value::from(0.0))
                    .to_call_tool_result()
                    .into());
                }
                let meter = Meter::default();
                context.extensions.insert(meter.clone());
                let outcome = self
                    .tool_router
                    .call(ToolCallContext::new(self, request, context))
                    .await;
                let charge = meter.total();
                self.budget.consume(charge);
                with_charge(outcome, charge)
            })
            .await;
        // Results that never reached a tool (injected faults) still report a charge: zero.
        with_charge(outcome, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::ToolError;
    use rmcp::model::CallToolResult;

    #[test]
    fn charge_lands_in_meta_or_error_data() {
        let ok =
            with_charge(Ok(CallToolResult::structured(json!({"a": 1})).into()), 2.5).expect("ok");
        let CallToolResponse::Complete(result) = ok else {
            panic!("complete");
        };
        assert_eq!(
            result.meta.expect("meta").0[META_REQUEST_CHARGE],
            json!(2.5)
        );

        let tool_err = ToolError::not_found("x").to_call_tool_result();
        let Ok(CallToolResponse::Complete(result)) = with_charge(Ok(tool_err.into()), 1.0) else {
            panic!("complete");
        };
        let back = ToolError::from_call_tool_result(&result).expect("error");
        assert_eq!(back.kind, kit::ErrorKind::NotFound);
        assert_eq!(back.extra_meta[META_REQUEST_CHARGE], json!(1.0));

        let invalid = ErrorData::invalid_params("bad", Some(json!({"field": "container"})));
        let err = with_charge(Err(invalid), 0.0).expect_err("error");
        assert_eq!(
            err.data.expect("data"),
            json!({"field": "container", "requestCharge": 0.0})
        );

        // The outer zero never replaces a charge already reported.
        let charged = with_charge(Ok(CallToolResult::structured(json!({})).into()), 4.0);
        let Ok(CallToolResponse::Complete(result)) = with_charge(charged, 0.0) else {
            panic!("complete");
        };
        assert_eq!(
            result.meta.expect("meta").0[META_REQUEST_CHARGE],
            json!(4.0)
        );
    }
}
