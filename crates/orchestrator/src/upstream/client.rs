//! The client side of one upstream connection: what the orchestrator does when an upstream
//! notifies it (progress, list changes, log messages).

use std::sync::Arc;

use rmcp::{
    ClientHandler, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam,
        ProtocolVersion,
    },
    service::NotificationContext,
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
}

impl ClientHandler for UpstreamClient {
    /// The `initialize` request names 2025-11-25, the newest version that has that handshake:
    /// rmcp's default is its newest version, 2026-07-28, which has none, so a server that checks
    /// the requested version against those it knows (the conformance suite's `initialize`
    /// scenario does) finds one it cannot have been asked for.
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("mcp-orchestrator", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
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

    // Upstreams on 2025-11-25 still log through notifications; their messages join our log.
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
    }
}
