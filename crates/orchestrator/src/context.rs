//! What one agent request carries down to every upstream request it causes.

use rmcp::{
    Peer, RoleServer,
    model::{ProgressToken, RequestMetaObject},
};
use tokio_util::sync::CancellationToken;

/// The per-call context an upstream request carries from the agent.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The agent's `_meta` to pass on (trace context and the like; per-hop keys removed).
    pub meta: Option<RequestMetaObject>,
    /// The agent and its progress token, when it asked for progress.
    pub progress: Option<(Peer<RoleServer>, ProgressToken)>,
    /// Cancelled when the agent cancels.
    pub ct: CancellationToken,
}
