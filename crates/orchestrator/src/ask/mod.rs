//! Questions an upstream asks its client (`elicitation/create`, `sampling/createMessage`,
//! `roots/list`) are for the user or the model behind the agent whose call caused them. The
//! orchestrator never answers them itself: it finds that agent ([`origins`]), checks the agent
//! declared the capability the question needs ([`capability`]), and passes the question and the
//! agent's answer through unchanged ([`forward`]), while the call's deadline waits for the user
//! ([`pause`]).

pub mod capability;
pub mod forward;
pub mod origins;
pub mod pause;
pub mod rounds;
pub mod suspend;

use rmcp::{
    Peer, RoleServer,
    model::{ClientCapabilities, ProtocolVersion, RequestId},
};
use tokio_util::sync::CancellationToken;

use crate::subscriptions::SessionId;

pub use self::{
    forward::forward,
    origins::{NoOrigin, Origins},
    pause::UserWait,
    suspend::{Question, QuestionSender, Suspensions},
};

/// The agent request an upstream request was made for: where that upstream's questions go.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The agent's session.
    pub agent: Peer<RoleServer>,
    /// The agent's request, so a question rides that request's stream (HTTP) and is cancelled
    /// with it.
    pub request: RequestId,
    /// Which session it is, to tell two agents' calls apart.
    pub session: SessionId,
    /// What the agent declared it can do (at `initialize`, or in the request's `_meta`).
    pub capabilities: Option<ClientCapabilities>,
    /// The protocol version the agent's request speaks.
    pub protocol: Option<ProtocolVersion>,
    /// Paused while the user answers, so the call's deadlines do not count that time.
    pub wait: UserWait,
    /// Cancelled when the agent cancels its request.
    pub ct: CancellationToken,
    /// For a request-scoped agent's `tools/call`: where questions go to be answered through
    /// `input_required` ([`suspend`]). Without it such an agent cannot be asked.
    pub questions: Option<QuestionSender>,
}

impl Origin {
    /// Whether the agent speaks an era that forbids server-to-client requests (2026-07-28 on).
    pub fn is_request_scoped(&self) -> bool {
        self.protocol
            .as_ref()
            .is_some_and(|v| *v >= ProtocolVersion::V_2026_07_28)
    }
}
