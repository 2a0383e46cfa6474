//! Failures of a routed call, classified once and mapped to one MCP answer each.
//!
//! - client faults (unknown tool, unknown resource): the agent's mistake, a JSON-RPC error;
//! - upstream faults (not connected, connection lost, transport error): the server's, answered as
//!   an `unavailable` tool error naming the server, retryable;
//! - upstream protocol errors (the upstream answered with a JSON-RPC error): passed on unchanged.

use std::time::Duration;

use kit::ToolError;
use rmcp::{ErrorData, model::CallToolResult};

use crate::policy::{breaker::BreakerOpen, bulkhead::BulkheadFull};

/// Why a routed call did not produce the upstream's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No tool (or prompt, or resource) of that name is in the catalog.
    #[error("unknown {what} `{name}`")]
    Unknown {
        /// `tool`, `prompt` or `resource`.
        what: &'static str,
        /// The name as the agent sent it.
        name: String,
    },
    /// The upstream is not connected now.
    #[error("server `{server}` is not connected{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotConnected {
        /// The upstream's name.
        server: String,
        /// Why it is not, if known.
        last_error: Option<String>,
    },
    /// The connection ended while the call was in flight.
    #[error("server `{server}` went away during the call ({detail})")]
    ConnectionLost {
        /// The upstream's name.
        server: String,
        /// What the transport said.
        detail: String,
    },
    /// The upstream answered with a JSON-RPC error.
    #[error("server `{server}` answered with an error: {error}")]
    Protocol {
        /// The upstream's name.
        server: String,
        /// Its error, passed on unchanged.
        error: ErrorData,
    },
    /// The agent cancelled the call.
    #[error("cancelled by the caller")]
    Cancelled,
    /// One attempt took longer than its timeout.
    #[error("server `{server}` did not answer `{tool}` within {} ms", after.as_millis())]
    Timeout {
        /// The upstream's name.
        server: String,
        /// The upstream's tool name.
        tool: String,
        /// The attempt timeout.
        after: Duration,
    },
    /// The whole call (attempts and delays) ran past its deadline.
    #[error("call of `{tool}` on server `{server}` ran past its {} ms deadline", after.as_millis())]
    Deadline {
        /// The upstream's name.
        server: String,
        /// The upstream's tool name.
        tool: String,
        /// The deadline.
        after: Duration,
    },
    /// The server's circuit breaker is open: refused without calling it.
    #[error(transparent)]
    CircuitOpen(#[from] BreakerOpen),
    /// The server's bulkhead is full: refused without calling it.
    #[error(transparent)]
    BulkheadFull(#[from] BulkheadFull),
}

impl CallError {
    /// A short name of the failure, for logs, reports and `_meta.reason`.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Unknown { .. } => "unknown",
            CallError::NotConnected { .. } => "not_connected",
            CallError::ConnectionLost { .. } => "connection_lost",
            CallError::Protocol { .. } => "protocol_error",
            CallError::Cancelled => "cancelled",
            CallError::Timeout { .. } => "timeout",
            CallError::Deadline { .. } => "deadline",
            CallError::CircuitOpen(_) => "circuit_open",
            CallError::BulkheadFull(_) => "bulkhead_full",
        }
    }

    /// The upstream the failure concerns, if any.
    pub fn server(&self) -> Option<&str> {
        match self {
            CallError::NotConnected { server, .. }
            | CallError::ConnectionLost { server, .. }
            | CallError::Protocol { server, .. }
            | CallError::Timeout { server, .. }
            | CallError::Deadline { server, .. } => Some(server),
            CallError::CircuitOpen(e) => Some(&e.server),
            CallError::BulkheadFull(e) => Some(&e.server),
            CallError::Unknown { .. } | CallError::Cancelled => None,
        }
    }

    /// The tool error an upstream fault or a policy refusal becomes for the agent.
    ///
    /// `retryable` tells the *agent* whether trying again later may work; the orchestrator's
    /// own retry decides from the variant (see `policy::classify`), never from this.
    pub fn to_tool_error(&self) -> Option<ToolError> {
        let e = match self {
            CallError::NotConnected { .. }
            | CallError::ConnectionLost { .. }
            | CallError::Timeout { .. }
            | CallError::Deadline { .. } => ToolError::unavailable(self.to_string()),
            CallError::CircuitOpen(open) => ToolError::unavailable(self.to_string())
                .with_retry_after_ms(open.retry_in.as_millis() as u64),
            CallError::BulkheadFull(_) => ToolError::throttled(self.to_string(), 100),
            CallError::Unknown { .. } | CallError::Protocol { .. } | CallError::Cancelled => {
                return None;
            }
        };
        let mut e = e.with_meta("reason", self.label().into());
        if let Some(server) = self.server() {
            e = e.with_meta("server", server.into());
        }
        Some(e)
    }

    /// The answer the agent gets for a failed `tools/call`.
    pub fn into_tool_answer(self) -> Result<CallToolResult, ErrorData> {
        match self {
            CallError::Unknown { what, name } => Err(ErrorData::invalid_params(
                format!("unknown {what} `{name}`"),
                None,
            )),
            CallError::Protocol { error, .. } => Err(error),
            CallError::Cancelled => Err(ErrorData::internal_error("request cancelled", None)),
            other => match other.to_tool_error() {
                Some(e) => Ok(e.to_call_tool_result()),
                None => Err(ErrorData::internal_error(other.to_string(), None)),
            },
        }
    }

    /// The answer for a failed non-tool request (resources, prompts, completion).
    pub fn into_error_data(self) -> ErrorData {
        match self {
            CallError::Unknown {
                what: "resource",
                name,
            } => ErrorData::resource_not_found(format!("unknown resource `{name}`"), None),
            CallError::Unknown { what, name } => {
                ErrorData::invalid_params(format!("unknown {what} `{name}`"), None)
            }
            CallError::Protocol { error, .. } => error,
            other => ErrorData::internal_error(other.to_string(), None),
        }
    }
}
