//! Failures of a routed call, classified once and mapped to one MCP answer each.
//!
//! - client faults (unknown tool, unknown resource): the agent's mistake, a JSON-RPC error;
//! - upstream faults (not connected, connection lost, transport error): the server's, answered as
//!   an `unavailable` tool error naming the server, retryable;
//! - upstream protocol errors (the upstream answered with a JSON-RPC error): passed on unchanged.

use kit::ToolError;
use rmcp::{ErrorData, model::CallToolResult};

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
}

impl CallError {
    /// Whether the failure is the upstream's (counted as an upstream error in status).
    pub fn is_upstream_fault(&self) -> bool {
        matches!(
            self,
            CallError::NotConnected { .. } | CallError::ConnectionLost { .. }
        )
    }

    /// The answer the agent gets for a failed `tools/call`.
    pub fn into_tool_answer(self) -> Result<CallToolResult, ErrorData> {
        match self {
            CallError::Unknown { what, name } => Err(ErrorData::invalid_params(
                format!("unknown {what} `{name}`"),
                None,
            )),
            e @ (CallError::NotConnected { .. } | CallError::ConnectionLost { .. }) => {
                let server = match &e {
                    CallError::NotConnected { server, .. }
                    | CallError::ConnectionLost { server, .. } => server.clone(),
                    _ => String::new(),
                };
                Ok(ToolError::unavailable(e.to_string())
                    .with_meta("server", server.into())
                    .to_call_tool_result())
            }
            CallError::Protocol { error, .. } => Err(error),
            CallError::Cancelled => Err(ErrorData::internal_error("request cancelled", None)),
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
