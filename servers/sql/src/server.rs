//! The MCP face of the database: tools, the `sql://schema` resource, prompts, and server info.

use std::sync::Arc;

use kit::{ServerKit, ToolError, ToolFailure};
use retail_seed::period::{Period, parse_since};
use rmcp::{
    ErrorData, Json, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext, wrapper::Parameters},
    model::{
        CallToolRequestParams, CallToolResponse, GetPromptRequestParams, GetPromptResponse,
        Implementation, ListPromptsResult, ListResourcesResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
        ResourceContents, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use rusqlite::Connection;

use crate::{
    cancellation,
    db::{Database, SCHEMA_SQL},
    model::*,
    orders::{self, db_failure},
    prompts, queries,
    readonly::QueryError,
};

/// URI of the schema resource.
pub const SCHEMA_URI: &str = "sql://schema";

/// Limits of the agent-facing `query` tool.
pub type QueryLimits = crate::readonly::QueryBudget;

/// Flag of [`QueryLimits::max_bytes`], named in the refusal.
pub const MAX_RESULT_BYTES_FLAG: &str = "--query-max-result-bytes";
/// Flag of [`QueryLimits::time_limit`], named in the refusal.
pub const TIMEOUT_FLAG: &str = "--query-timeout-ms";

/// The tool error for a failed `query`. Refusals by a limit say which flag sets it, and none is
/// retryable: the same query hits the same limit again, so a caller that retries on its own
/// (the orchestrator retries read-only tools) would only repeat the cost.
fn query_failure(e: QueryError) -> ToolFailure {
    match e {
        QueryError::ParamCount { .. } => ToolFailure::invalid_params("params", e.to_string()),
        QueryError::TimedOut(ms) => ToolError::invalid(format!("{e} ({TIMEOUT_FLAG})"))
            .with_retryable(false)
            .with_meta("reason", "query_time_limit".into())
            .with_meta("limit", ms.into())
            .into(),
        QueryError::TooLarge { limit, .. } => {
            ToolError::invalid(format!("{e} ({MAX_RESULT_BYTES_FLAG})"))
                .with_retryable(false)
                .with_meta("reason", "query_result_bytes".into())
                .with_meta("limit", limit.into())
                .into()
        }
        QueryError::NotReadOnly(_) | QueryError::Sql(_) => ToolError::invalid(e.to_string())
            .with_retryable(false)
            .into(),
    }
}

/// One MCP session's handler; clones share the database and the kit.
#[derive(Debug, Clone)]
pub struct SqlServer {
    db: Arc<Database>,
    kit: ServerKit,
    limits: QueryLimits,
    tool_router: ToolRouter<Self>,
}

fn not_found(what: &str, id: &str) -> ToolFailure {
    ToolError::not_found(format!("{what} `{id}` does not exist")).into()
}

#[tool_router]
impl SqlServer {
    /// A handler over `db`.
    pub fn new(db: Arc<Database>, kit: ServerKit, limits: QueryLimits) -> Self {
        Self {
            db,
            kit,
            limits,
            tool_router: Self::tool_router(),
        }
    }

    /// Runs a read on a pooled read-only connection, off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, ToolFailure>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let reader = db.reader();
            f(reader.conn())
        })
        .await
        .map_err(|e| ToolFailure::from(ToolError::internal(format!("read task failed: {e}"))))?
        .map_err(db_failure)
    }

    #[tool(
        description = "A customer's profile (name, email, region, segment) with lifetime order count and spend.",
        annotations(title = "Get customer", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_customer(
        &self,
        Parameters(args): Parameters<CustomerIdArgs>,
    ) -> Result<Json<Customer>, ToolFailure> {
        let id = args.customer_id.clone();
        self.read(move |c| queries::customer(c, &id))
            .await?
            .map(Json)
            .ok_or_else(|| not_found("customer", &args.customer_id))
    }

    #[tool(
        description = "A customer's most recent orders, newest first, each with its lines (productId, quantity, price).",
        annotations(
            title = "Get customer orders",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_customer_orders(
        &self,
        Parameters(args): Parameters<CustomerOrdersArgs>,
    ) -> Result<Json<CustomerOrders>, ToolFailure> {
        let limit = args.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ToolFailure::invalid_params(
                "limit",
                format!("must be 1-500, got {limit}"),
            ));
        }
        let id = args.customer_id.clone();
        self.read(move |c| queries::customer_orders(c, &id, limit))
            .await?
            .map(Json)
            .ok_or_else(|| not_found("customer", &args.customer_id))
    }

    #[tool(
        description = "One order: customerId, status, dates, total and lines with productIds.",
        annotations(
            title = "Get order details",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_order_details(
        &self,
        Parameters(args): Parameters<OrderIdArgs>,
    ) -> Result<Json<Order>, ToolFailure> {
        let id = args.order_id.clone();
        self.read(move |c| queries::order(c, &id))
            .await?
            .map(Json)
            .ok_or_else(|| not_found("order", &args.order_id))
    }

    #[tool(
        description = "The best customers by total spend (default) or number of orders, optionally since a date.",
        annotations(
            title = "Get top customers",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_top_customers(
        &self,
        Parameters(args): Parameters<TopCustomersArgs>,
    ) -> Result<Json<TopCustomers>, ToolFailure> {
        if !(1..=200).contains(&args.limit) {
            return Err(ToolFailure::invalid_params(
                "limit",
                format!("must be 1-200, got {}", args.limit),
            ));
        }
        let since = args
            .since
            .as_deref()
            .map(parse_since)
            .transpose()
            .map_err(|m| ToolFailure::invalid_params("since", m))?;
        let (limit, by, window) = (args.limit, args.by, since.clone());
        let customers = self
            .read(move |c| queries::top_customers(c, limit, by, window.as_deref()))
            .await?;
        Ok(Json(queries::ranking(by, since, customers)))
    }

    #[tool(
        description = "Sales revenue, order count or average basket over a period (`all`, `YYYY`, `YYYY-MM`, `YYYY-Qn`, `last_N_days`, `YYYY-MM-DD..YYYY-MM-DD`). Cancelled orders are excluded.",
        annotations(
            title = "Calculate metrics",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn calculate_metrics(
        &self,
        Parameters(args): Parameters<MetricsArgs>,
    ) -> Result<Json<Metrics>, ToolFailure> {
        let period = Period::parse(args.period.as_deref())
            .map_err(|m| ToolFailure::invalid_params("period", m))?;
        let metric = args.metric_type;
        Ok(Json(
            self.read(move |c| queries::metrics(c, metric, &period))
                .await?,
        ))
    }

    #[tool(
        description = "Store sales (revenue and orders) per region over a period; every region is listed.",
        annotations(
            title = "Get sales by region",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_sales_by_region(
        &self,
        Parameters(args): Parameters<PeriodArgs>,
    ) -> Result<Json<SalesByRegion>, ToolFailure> {
        let period = Period::parse(args.period.as_deref())
            .map_err(|m| ToolFailure::invalid_params("period", m))?;
        Ok(Json(
            self.read(move |c| queries::sales_by_region(c, &period))
                .await?,
        ))
    }

    #[tool(
        description = "Create an order in one transaction. The idempotencyKey makes it safe to repeat: the same key returns the first order (created: false) and never inserts twice.",
        annotations(
            title = "Create order",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn create_order(
        &self,
        Parameters(args): Parameters<CreateOrderArgs>,
    ) -> Result<Json<CreatedOrder>, ToolFailure> {
        let db = self.db.clone();
        let created =
            tokio::task::spawn_blocking(move || orders::create_order(&mut db.writer(), &args))
                .await
                .map_err(|e| {
                    ToolFailure::from(ToolError::internal(format!("write task failed: {e}")))
                })??;
        if created.created {
            tracing::info!(order_id = %created.order.order_id, "order created");
        }
        Ok(Json(created))
    }

    #[tool(
        description = "Cancel a `processing` order, keeping the reason. Safe to repeat: cancelling an order that is already cancelled changes nothing and answers with the first cancellation (alreadyCancelled: true, its cancelledAt and reason). An unknown order is `not_found`; a shipped or delivered order is a `conflict` (neither is worth retrying).",
        annotations(
            title = "Cancel order",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_order(
        &self,
        Parameters(args): Parameters<CancelOrderArgs>,
    ) -> Result<Json<CancelledOrder>, ToolFailure> {
        let db = self.db.clone();
        let cancelled = tokio::task::spawn_blocking(move || {
            cancellation::cancel_order(&mut db.writer(), &args)
        })
        .await
        .map_err(|e| ToolFailure::from(ToolError::internal(format!("write task failed: {e}"))))??;
        if !cancelled.already_cancelled {
            tracing::info!(order_id = %cancelled.order.order_id, "order cancelled");
        }
        Ok(Json(cancelled))
    }

    #[tool(
        description = "Run one read-only SELECT (SQLite dialect) and get columns and rows. Writes, ATTACH and PRAGMA are refused by the engine; rows and result bytes are capped and long queries interrupted. The schema is the resource sql://schema.",
        annotations(
            title = "Read-only SQL query",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn query(
        &self,
        Parameters(args): Parameters<QueryArgs>,
    ) -> Result<Json<QueryResult>, ToolFailure> {
        if args.sql.trim().is_empty() {
            return Err(ToolFailure::invalid_params("sql", "must not be empty"));
        }
        let db = self.db.clone();
        let limits = self.limits;
        let out =
            tokio::task::spawn_blocking(move || db.reader().query(&args.sql, &args.params, limits))
                .await
                .map_err(|e| {
                    ToolFailure::from(ToolError::internal(format!("query task failed: {e}")))
                })?;
        match out {
            Ok(out) => Ok(Json(QueryResult {
                row_count: out.rows.len(),
                columns: out.columns,
                rows: out.rows,
                truncated: out.truncated,
            })),
            Err(e) => Err(query_failure(e)),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for SqlServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new(
            "sql-mcp-server",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(
            "The retail company's system of record: customers, products, orders. \
             Ids look like CUST-0001, PROD-001, ORD-00001. Read the schema at sql://schema \
             before writing queries.",
        )
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.kit
            .call_tool(self, request, context, |request, context| {
                self.tool_router
                    .call(ToolCallContext::new(self, request, context))
            })
            .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(SCHEMA_URI, "schema")
                .with_title("Database schema")
                .with_description("The DDL of every table (SQLite dialect)")
                .with_mime_type("application/sql"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri != SCHEMA_URI {
            return Err(ErrorData::resource_not_found(
                format!(
                    "no resource `{}`; this server has {SCHEMA_URI}",
                    request.uri
                ),
                None,
            ));
        }
        Ok(ReadResourceResult::new(vec![ResourceContents::text(SCHEMA_SQL, SCHEMA_URI)]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts::list()))
    }

    /// A prompt with its arguments checked against the database: a report on a customer who
    /// does not exist, or over a period that does not parse, is refused here rather than sent
    /// to a model that would make one up.
    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let argument = |name: &str| {
            request
                .arguments
                .as_ref()
                .and_then(|a| a.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let result = match request.name.as_str() {
            prompts::CUSTOMER_REPORT => {
                let id = argument("customerId").ok_or_else(|| {
                    ErrorData::invalid_params(
                        "customer_report needs the argument `customerId`",
                        None,
                    )
                })?;
                let db = self.db.clone();
                let lookup = id.clone();
                let customer = tokio::task::spawn_blocking(move || {
                    queries::customer(db.reader().conn(), &lookup)
                })
                .await
                .map_err(|e| ErrorData::internal_error(format!("read task failed: {e}"), None))?
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
                .ok_or_else(|| {
                    ErrorData::invalid_params(format!("customer `{id}` does not exist"), None)
                })?;
                prompts::customer_report(&customer)
            }
            prompts::SALES_REVIEW => {
                let period = Period::parse(argument("period").as_deref())
                    .map_err(|m| ErrorData::invalid_params(m, None))?;
                prompts::sales_review(&period)
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!(
                        "no prompt `{other}`; this server has {} and {}",
                        prompts::CUSTOMER_REPORT,
                        prompts::SALES_REVIEW
                    ),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}
