//! Failures of a routed call, classified once and mapped to one MCP answer each.
//!
//! - client faults (unknown tool, unknown resource): the agent's mistake, a JSON-RPC error;
//! - upstream faults (not connected, connection lost, transport error): the server's, answered as
//!   an `unavailable` tool error naming the server, retryable;
//! - upstream protocol errors (the upstream answered with a JSON-RPC error): passed on unchanged.
//!
//! Wherever a failure is reported inside a tool result (a composite's failed step, its
//! `_meta.sources`), it takes one form, [`Fault`], built by one function, [`Fault::of`], from
//! the same outcome a pass-through call answers with: so a timeout, an open breaker or an
//! upstream's `unavailable` reads the same (kind, reason, retryable, retry hint, server) whether
//! the agent called the tool itself or a composite did.

use std::time::Duration;

use kit::{ErrorKind, ToolError};
use rmcp::{
    ErrorData,
    model::{CallToolResult, ErrorCode},
};

/// Refusal while open (or half-open with all probe slots taken): fail fast.
///
/// Never retried by the retry layer: retrying would only hammer the breaker.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("circuit open for server `{server}` ({why}); next probe in {} ms", retry_in.as_millis())]
pub struct BreakerOpen {
    /// The upstream's name, so the agent knows which server is down.
    pub server: String,
    /// Why it opened (`connection lost: ...`, `5 calls in a row found the server unreachable`):
    /// the cause reaches the agent, not only the refusal.
    pub why: std::sync::Arc<str>,
    /// When a probe will be let through: the rest of `open_for`, or zero while half-open (a probe
    /// slot may free at any moment).
    pub retry_in: Duration,
}

/// Refusal: the server has `max_concurrent` calls running and `max_queue` waiting.
///
/// Never retried by the retry layer: retrying a saturated server adds to the load that saturated it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bulkhead full for server `{server}`: {max_concurrent} running and {max_queue} queued")]
pub struct BulkheadFull {
    /// The upstream's name.
    pub server: String,
    /// Its concurrency limit.
    pub max_concurrent: usize,
    /// Its queue limit.
    pub max_queue: usize,
}

/// Which message of a call was over a size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// The request, before it left (or as the upstream refused it: HTTP 413).
    Request,
    /// The upstream's answer.
    Answer,
}

/// A message too large for the way between the orchestrator and an upstream: the caller asked
/// for (or sent) too much, so it is the caller's to fix, never retried and never held against
/// the server (no agent can open a breaker every agent shares by sending large requests).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TooLarge {
    /// The upstream's name.
    pub server: String,
    /// Which message.
    pub what: Oversize,
    /// Its size, when known (a request's; an answer is never read whole).
    pub bytes: Option<usize>,
    /// The limit it went over, when known (an HTTP 413 does not say).
    pub limit: Option<usize>,
    /// The setting that holds the limit, or what the server said.
    pub setting: String,
}

impl TooLarge {
    fn describe(&self) -> String {
        use crate::limits::human_bytes;
        let size = self
            .bytes
            .map(|n| format!(" of {}", human_bytes(n)))
            .unwrap_or_default();
        let limit = self
            .limit
            .map(|n| format!("the {} limit", human_bytes(n)))
            .unwrap_or_else(|| "its limit".into());
        match self.what {
            Oversize::Request => format!(
                "request{size} to server `{}` is over {limit} ({}); send less",
                self.server, self.setting
            ),
            Oversize::Answer => format!(
                "server `{}` answered with a message over {limit} ({}); ask for less",
                self.server, self.setting
            ),
        }
    }
}

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
    /// The upstream answered `input_required`, and the agent (a 2026-07-28 agent's own call)
    /// takes it as it is: the front hands it on with a state to resume from.
    #[error("server `{server}` needs input from the agent")]
    NeedsInput {
        /// The upstream's name.
        server: String,
        /// Its questions and state.
        asked: Box<rmcp::model::InputRequiredResult>,
    },
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
    /// The server asked its callers to wait (`retryAfterMs`) longer than this call's deadline
    /// leaves: refused without calling it.
    #[error("server `{server}` asked callers to wait {} ms before calling again, past this call's deadline", retry_in.as_millis())]
    Held {
        /// The upstream's name.
        server: String,
        /// How long it asked to wait, from now.
        retry_in: Duration,
    },
    /// The server's bulkhead is full: refused without calling it.
    #[error(transparent)]
    BulkheadFull(#[from] BulkheadFull),
    /// The request or its answer was over a size limit on the way to or from the server.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
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
            CallError::NeedsInput { .. } => "input_required",
            CallError::Timeout { .. } => "timeout",
            CallError::Deadline { .. } => "deadline",
            CallError::CircuitOpen(_) => "circuit_open",
            CallError::BulkheadFull(_) => "bulkhead_full",
            CallError::Held { .. } => "retry_after",
            CallError::TooLarge(TooLarge {
                what: Oversize::Request,
                ..
            }) => "request_too_large",
            CallError::TooLarge(TooLarge {
                what: Oversize::Answer,
                ..
            }) => "answer_too_large",
        }
    }

    /// The upstream the failure concerns, if any.
    pub fn server(&self) -> Option<&str> {
        match self {
            CallError::NotConnected { server, .. }
            | CallError::ConnectionLost { server, .. }
            | CallError::Protocol { server, .. }
            | CallError::NeedsInput { server, .. }
            | CallError::Timeout { server, .. }
            | CallError::Deadline { server, .. }
            | CallError::Held { server, .. } => Some(server),
            CallError::CircuitOpen(e) => Some(&e.server),
            CallError::BulkheadFull(e) => Some(&e.server),
            CallError::TooLarge(e) => Some(&e.server),
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
            CallError::Held { retry_in, .. } => {
                ToolError::throttled(self.to_string(), retry_in.as_millis() as u64)
            }
            CallError::TooLarge(e) => {
                let mut error = ToolError::invalid(self.to_string()).with_retryable(false);
                if let Some(limit) = e.limit {
                    error = error.with_meta("limit", limit.into());
                }
                error.with_meta("setting", e.setting.clone().into())
            }
            CallError::Unknown { .. }
            | CallError::Protocol { .. }
            | CallError::Cancelled
            | CallError::NeedsInput { .. } => {
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

/// A failure in the one vocabulary of tool errors.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// What an agent acts on (`unavailable`, `throttled`, `invalid`, ...).
    pub kind: ErrorKind,
    /// The finer cause: the orchestrator's own label (`timeout`, `circuit_open`, ...) or the
    /// upstream tool error's kind. What `_meta.reason` and a source's `errorKind` say.
    pub reason: String,
    /// What went wrong, in words.
    pub message: String,
    /// Whether trying again later may work.
    pub retryable: bool,
    /// How long to wait before trying again, when known.
    pub retry_after_ms: Option<u64>,
    /// The upstream concerned, when there is one.
    pub server: Option<String>,
}

impl Fault {
    /// The fault of an outcome, or `None` when it succeeded. A tool error from the upstream keeps
    /// its own kind, message and hints; a [`CallError`] becomes the tool error a pass-through
    /// call answers with (and a protocol error or an unknown name, which a pass-through call
    /// answers as a JSON-RPC error, the nearest kind).
    pub fn of(outcome: &Result<CallToolResult, CallError>) -> Option<Self> {
        match outcome {
            Ok(result) => ToolError::from_call_tool_result(result).map(Self::from_tool_error),
            Err(e) => Some(Self::from_call_error(e)),
        }
    }

    /// A fault of the caller's making that never reached an upstream (arguments that could not
    /// be built, for one).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Invalid,
            reason: ErrorKind::Invalid.as_str().to_owned(),
            message: message.into(),
            retryable: false,
            retry_after_ms: None,
            server: None,
        }
    }

    /// A fault whose cause is gone with the process that saw it (a step cut off by a restart).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            reason: ErrorKind::Unavailable.as_str().to_owned(),
            message: message.into(),
            retryable: true,
            retry_after_ms: None,
            server: None,
        }
    }

    fn from_tool_error(e: ToolError) -> Self {
        let text = |key: &str| {
            e.extra_meta
                .get(key)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        Self {
            reason: text("reason").unwrap_or_else(|| e.kind.as_str().to_owned()),
            server: text("server"),
            kind: e.kind,
            message: e.message,
            retryable: e.retryable,
            retry_after_ms: e.retry_after_ms,
        }
    }

    fn from_call_error(e: &CallError) -> Self {
        if let Some(tool_error) = e.to_tool_error() {
            return Self::from_tool_error(tool_error);
        }
        let kind = match e {
            CallError::Protocol { error, .. } if error.code == ErrorCode::INTERNAL_ERROR => {
                ErrorKind::Internal
            }
            CallError::Cancelled => ErrorKind::Unavailable,
            _ => ErrorKind::Invalid,
        };
        Self {
            kind,
            reason: e.label().to_owned(),
            message: e.to_string(),
            retryable: false,
            retry_after_ms: None,
            server: e.server().map(str::to_owned),
        }
    }

    /// The tool error this fault is, with `message` in place of its own (a composite says which
    /// step failed, around the step's message). `_meta.reason` is there when the fault had a
    /// reason finer than its kind, as in the pass-through answer.
    pub fn to_tool_error_saying(&self, message: String) -> ToolError {
        let mut e = ToolError::new(self.kind, message).with_retryable(self.retryable);
        if self.reason != self.kind.as_str() {
            e = e.with_meta("reason", self.reason.clone().into());
        }
        if let Some(ms) = self.retry_after_ms {
            e = e.with_retry_after_ms(ms);
        }
        if let Some(server) = &self.server {
            e = e.with_meta("server", server.clone().into());
        }
        e
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
