//! The client side of one upstream connection: what the orchestrator does when an upstream
//! notifies it (progress, list changes, log messages) or asks it something (elicitation,
//! sampling, roots: passed to the agent whose call caused them, see [`crate::ask`]).

// Sampling and roots are deprecated from 2026-07-28 on (SEP-2577), but 2025-11-25 servers still
// use them: relaying them is the point here.
#![allow(deprecated)]

use std::{sync::Arc, time::Duration};

use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        ClientConfig, ClientResult, CreateMessageRequest, CreateMessageRequestParams,
        CreateMessageResult, ElicitRequest, ElicitRequestParams, ElicitResult, Implementation,
        ListRootsRequest, ListRootsResult, ProgressNotificationParam, ProtocolVersion,
        ServerRequest,
    },
    service::{InboundStreamOrigin, NotificationContext, RequestContext},
};
use tokio::sync::Notify;

use crate::relay::Relay;

/// What a list-change notification asks the supervisor to refresh.
#[derive(Debug, Default)]
pub struct RefreshRequests {
    /// Woken on `notifications/*/list_changed`.
    pub notify: Notify,
}

/// Handler of one upstream connection.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    /// The upstream's name, for routing and log tags.
    pub server: String,
    /// Progress and agents.
    pub relay: Arc<Relay>,
    /// The supervisor listens here for list changes.
    pub refresh: Arc<RefreshRequests>,
    /// The server's tool prefix: empty, and its resource URIs reach agents unchanged.
    pub prefix: String,
    /// How long a question may wait for the agent's answer.
    pub user_input_timeout: Duration,
    /// The server's figures, where its questions are counted.
    pub stats: Arc<crate::stats::ServerStats>,
}

impl UpstreamClient {
    /// Puts `request` to the agent whose call caused it, and returns the agent's answer.
    async fn ask(
        &self,
        method: &'static str,
        request: ServerRequest,
        context: &RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        let stream = context.extensions.get::<InboundStreamOrigin>();
        let origin = match self.relay.origins().find(&self.server, stream).await {
            Ok(origin) => origin,
            Err(why) => {
                tracing::warn!(server = %self.server, method, reason = %why, "upstream question refused");
                self.stats.question(method, "no_origin");
                return Err(ErrorData::invalid_request(
                    format!("{method} refused: {why}"),
                    None,
                ));
            }
        };
        let (answer, ending) = crate::ask::forward(
            &origin,
            method,
            request,
            &context.ct,
            self.user_input_timeout,
        )
        .await;
        tracing::info!(server = %self.server, method, outcome = ending.as_str(), "upstream question");
        self.stats.question(method, ending.as_str());
        answer
    }
}

/// The answer the agent should have given to a `method`, for a reply of another kind.
fn mismatched(method: &str, got: &ClientResult) -> ErrorData {
    ErrorData::internal_error(
        format!("the agent answered {method} with an unexpected result: {got:?}"),
        None,
    )
}

impl ClientHandler for UpstreamClient {
    /// The `initialize` request names 2025-11-25, the newest version that has that handshake:
    /// rmcp's default is its newest version, 2026-07-28, which has none, so a server that checks
    /// the requested version against those it knows (the conformance suite's `initialize`
    /// scenario does) finds one it cannot have been asked for.
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            crate::ask::capability::declared_upstream(),
            Implementation::new("mcp-orchestrator", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        const METHOD: &str = "elicitation/create";
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(request));
        match self.ask(METHOD, request, &context).await? {
            ClientResult::ElicitResult(answer) => Ok(answer),
            other => Err(mismatched(METHOD, &other)),
        }
    }

    async fn create_message(
        &self,
        request: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        const METHOD: &str = "sampling/createMessage";
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(request));
        match self.ask(METHOD, request, &context).await? {
            ClientResult::CreateMessageResult(answer) => Ok(*answer),
            other => Err(mismatched(METHOD, &other)),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        const METHOD: &str = "roots/list";
        let request = ServerRequest::ListRootsRequest(ListRootsRequest::default());
        match self.ask(METHOD, request, &context).await? {
            ClientResult::ListRootsResult(answer) => Ok(answer),
            other => Err(mismatched(METHOD, &other)),
        }
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.relay.forward_progress(&self.server, params).await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::info!(server = %self.server, "upstream tool list changed");
        self.refresh.notify.notify_one();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh.notify.notify_one();
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let exposed = crate::naming::expose_uri_of(&self.server, &self.prefix, &params.uri);
        self.relay.exposed_resource_updated(&exposed).await;
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.refresh.notify.notify_one();
    }

    // Upstreams on 2025-11-25 still log through notifications: their messages join our log and
    // reach the agents that asked for their level.
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let server = &self.server;
        let data = params.data.to_string();
        use rmcp::model::LoggingLevel;
        match params.level {
            LoggingLevel::Debug => tracing::debug!(server = %server, "{data}"),
            LoggingLevel::Info | LoggingLevel::Notice => tracing::info!(server = %server, "{data}"),
            LoggingLevel::Warning => tracing::warn!(server = %server, "{data}"),
            _ => tracing::error!(server = %server, "{data}"),
        }
        self.relay.log_message(server, params).await;
    }
}
