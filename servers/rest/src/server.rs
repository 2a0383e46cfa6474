//! The MCP face of the REST API: four read-only tools, each one `GET` under the base URL, and two
//! idempotent writes holding and releasing stock for an order, each one `POST`.

use kit::{ServerKit, ToolFailure};
use rmcp::{
    ErrorData, Json, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, tool::ToolCallContext, wrapper::Parameters},
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    tool, tool_handler, tool_router,
};

use crate::{
    client::ApiClient,
    model::{
        Inventory, InventoryArgs, LowStock, OrderIdArgs, Product, ProductIdArgs, ProductInventory,
        ReleaseOutcome, ReservationIdArgs, ReserveOutcome, ReserveStockArgs, Shipment,
    },
    path,
    propagation::CallScope,
};

/// One MCP session's handler; clones share the HTTP client (and its pool) and the kit.
#[derive(Debug, Clone)]
pub struct RestServer {
    api: ApiClient,
    kit: ServerKit,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl RestServer {
    /// A handler calling the API through `api`.
    pub fn new(api: ApiClient, kit: ServerKit) -> Self {
        Self {
            api,
            kit,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "Stock on hand per warehouse, with reorder levels, for one product (productId) or for every product (no arguments).",
        annotations(
            title = "Check inventory",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_inventory(
        &self,
        Parameters(args): Parameters<InventoryArgs>,
        scope: CallScope,
    ) -> Result<Json<Inventory>, ToolFailure> {
        match args.product_id.as_deref() {
            None => Ok(Json(
                self.api.get("/inventory", &["inventory"], &scope).await?,
            )),
            Some(id) => {
                let id = path::segment("productId", id)?;
                let item: ProductInventory = self
                    .api
                    .get("/inventory/{productId}", &["inventory", id], &scope)
                    .await?;
                Ok(Json(Inventory {
                    items: vec![item],
                    product_count: 1,
                }))
            }
        }
    }

    #[tool(
        description = "Products whose stock in some warehouse is below its reorder level, largest shortfall first.",
        annotations(
            title = "Check low stock",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn check_stock(&self, scope: CallScope) -> Result<Json<LowStock>, ToolFailure> {
        Ok(Json(
            self.api
                .get("/stock/low", &["stock", "low"], &scope)
                .await?,
        ))
    }

    #[tool(
        description = "Shipping status of one order: status, carrier, tracking number, shipped and delivered dates, estimated delivery. An order the shipping system has not received yet (one just placed with create_order) is not_found.",
        annotations(
            title = "Get shipping status",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_shipping_status(
        &self,
        Parameters(args): Parameters<OrderIdArgs>,
        scope: CallScope,
    ) -> Result<Json<Shipment>, ToolFailure> {
        let id = path::segment("orderId", &args.order_id)?;
        Ok(Json(
            self.api
                .get("/shipments/{orderId}", &["shipments", id], &scope)
                .await?,
        ))
    }

    #[tool(
        description = "One product of the catalogue: name, category and price.",
        annotations(title = "Get product", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_product(
        &self,
        Parameters(args): Parameters<ProductIdArgs>,
        scope: CallScope,
    ) -> Result<Json<Product>, ToolFailure> {
        let id = path::segment("productId", &args.product_id)?;
        Ok(Json(
            self.api
                .get("/products/{productId}", &["products", id], &scope)
                .await?,
        ))
    }

    #[tool(
        description = "Hold stock for an order: every line's units leave the available stock (check_inventory shows them gone), all lines or none. Idempotent by orderId: the same orderId and lines again answer with the first reservation (created: false) and take nothing twice, also after a lost answer; other lines for the same orderId are a conflict. A line short of stock is a conflict naming the product and the units available (_meta.details), and nothing is reserved. Undo with release_reservation.",
        annotations(
            title = "Reserve stock",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn reserve_stock(
        &self,
        Parameters(args): Parameters<ReserveStockArgs>,
        scope: CallScope,
    ) -> Result<Json<ReserveOutcome>, ToolFailure> {
        Ok(Json(
            self.api
                .post("/reservations", &["reservations"], &args, &scope)
                .await?,
        ))
    }

    #[tool(
        description = "Release a reservation made by reserve_stock: its units go back to the available stock exactly once. Releasing it again succeeds with alreadyReleased: true and changes nothing; an unknown reservationId is not_found.",
        annotations(
            title = "Release reservation",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn release_reservation(
        &self,
        Parameters(args): Parameters<ReservationIdArgs>,
        scope: CallScope,
    ) -> Result<Json<ReleaseOutcome>, ToolFailure> {
        let id = path::segment("reservationId", &args.reservation_id)?;
        Ok(Json(
            self.api
                .post(
                    "/reservations/{reservationId}/release",
                    &["reservations", id, "release"],
                    &serde_json::json!({}),
                    &scope,
                )
                .await?,
        ))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for RestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "rest-mcp-server",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Inventory, low stock, shipping status and products from the retail company's \
                 REST API, and stock reservations for orders (reserve_stock, release_reservation: \
                 idempotent, safe to repeat). Ids look like PROD-001, ORD-00001 (the same as the \
                 SQL server's) and RSV-000001. Errors say whether to retry \
                 (throttled/unavailable) or not (not_found/invalid/conflict).",
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
}
