//! What one agent request carries down to every upstream request it causes.

use rmcp::{
    Peer, RoleServer,
    model::{ProgressToken, RequestMetaObject},
};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::ask::Origin;

/// The per-call context an upstream request carries from the agent.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The agent's `_meta` to pass on (trace context and the like; per-hop keys removed).
    pub meta: Option<RequestMetaObject>,
    /// The agent and its progress token, when it asked for progress.
    pub progress: Option<(Peer<RoleServer>, ProgressToken)>,
    /// Cancelled when the agent cancels.
    pub ct: CancellationToken,
    /// The agent request behind it, where an upstream's questions go (none for the
    /// orchestrator's own requests, such as unsubscribing for a session that left).
    pub origin: Option<Arc<Origin>>,
    /// A 2026-07-28 agent's pass-through `tools/call`: an upstream's `input_required` goes to
    /// the agent as it is (with a state any instance can resume from), not answered here.
    pub hands_on_input: bool,
    /// The answers and upstream state a resumed call carries to its first request.
    pub resume: Option<(rmcp::model::InputResponses, Option<String>)>,
    /// The front writes a tool result relayed raw itself ([`kit::raw_result`], the stdio
    /// front): a pass-through answer may stay raw. Everyone else gets typed results.
    pub raw_results: bool,
}
