//! What an attempt's outcome means for the breaker and for retry: decided here, and only here.

use std::time::Duration;

use kit::{ErrorKind, ToolError};
use rmcp::model::{CallToolResponse, CallToolResult, ErrorCode, ServerResult};

use crate::error::CallError;

/// What the stack needs to know of a successful answer: whether it is a tool error in disguise
/// (`isError: true`, which is how a tool reports its own failures), and the request charge an
/// upstream reported. Only a `tools/call` result can be either; every other answer is a success.
pub trait Answer {
    /// The tool error this answer carries, if it is one.
    fn tool_error(&self) -> Option<ToolError>;
    /// The upstream's `_meta.requestCharge`, for the attempt's span.
    fn request_charge(&self) -> Option<f64>;
}

impl Answer for CallToolResult {
    fn tool_error(&self) -> Option<ToolError> {
        ToolError::from_call_tool_result(self)
    }

    fn request_charge(&self) -> Option<f64> {
        self.meta
            .as_ref()
            .and_then(|m| m.get("requestCharge"))
            .and_then(serde_json::Value::as_f64)
    }
}

/// A task the upstream created is an answer like any other; its outcome comes later.
impl Answer for CallToolResponse {
    fn tool_error(&self) -> Option<ToolError> {
        match self {
            CallToolResponse::Complete(r) => r.tool_error(),
            _ => None,
        }
    }

    fn request_charge(&self) -> Option<f64> {
        match self {
            CallToolResponse::Complete(r) => r.request_charge(),
            _ => None,
        }
    }
}

impl Answer for ServerResult {
    fn tool_error(&self) -> Option<ToolError> {
        match self {
            ServerResult::CallToolResult(r) => r.tool_error(),
            _ => None,
        }
    }

    fn request_charge(&self) -> Option<f64> {
        match self {
            ServerResult::CallToolResult(r) => r.request_charge(),
            _ => None,
        }
    }
}

/// The verdict on one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// How the breaker should count it.
    pub health: Health,
    /// Whether the same call may succeed if repeated (safety is decided separately).
    pub retryable: bool,
    /// Whether the request never reached the upstream, so repeating cannot duplicate anything.
    pub not_sent: bool,
    /// The upstream's wait hint.
    pub retry_after: Option<Duration>,
}

/// How an outcome reflects on the upstream's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The server answered as a healthy server does (including "not found", "invalid").
    Healthy,
    /// The server answered with a failure of its own (5xx-class tool errors, internal errors).
    Failing,
    /// The server could not be reached or did not answer in time (connection lost or refused,
    /// not connected, attempt timeout): what the breaker's unreachable rule counts.
    Unreachable,
    /// Says nothing about the server (cancelled by the caller, refused by our own policy).
    Neutral,
}

const FINAL_HEALTHY: Verdict = Verdict {
    health: Health::Healthy,
    retryable: false,
    not_sent: false,
    retry_after: None,
};

/// Classifies one attempt's outcome.
pub fn classify<T: Answer>(outcome: &Result<T, CallError>) -> Verdict {
    match outcome {
        Ok(result) => match result.tool_error() {
            None => FINAL_HEALTHY,
            Some(e) => match e.kind {
                // The server did its job; the call itself was wrong or conflicting.
                ErrorKind::Invalid | ErrorKind::NotFound | ErrorKind::Conflict => FINAL_HEALTHY,
                ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Internal => Verdict {
                    health: Health::Failing,
                    retryable: e.retryable,
                    not_sent: false,
                    retry_after: e.retry_after_ms.map(Duration::from_millis),
                },
            },
        },
        Err(e) => match e {
            CallError::NotConnected { .. } => Verdict {
                health: Health::Unreachable,
                retryable: true,
                not_sent: true,
                retry_after: None,
            },
            CallError::ConnectionLost { .. } | CallError::Timeout { .. } => Verdict {
                health: Health::Unreachable,
                retryable: true,
                not_sent: false,
                retry_after: None,
            },
            CallError::Protocol { error, .. } => {
                // A JSON-RPC error: the request was malformed for this server (its fault is
                // ours) unless it is an internal error.
                if error.code == ErrorCode::INTERNAL_ERROR {
                    Verdict {
                        health: Health::Failing,
                        retryable: false,
                        not_sent: false,
                        retry_after: None,
                    }
                } else {
                    FINAL_HEALTHY
                }
            }
            // Too much asked or sent: the caller's to fix. Repeating cannot help, and it says
            // nothing of the server, so one agent cannot open a breaker the others share.
            CallError::TooLarge(_) => Verdict {
                health: Health::Neutral,
                retryable: false,
                not_sent: false,
                retry_after: None,
            },
            CallError::Unknown { .. }
            | CallError::Cancelled
            | CallError::NeedsInput { .. }
            | CallError::CircuitOpen(_)
            | CallError::BulkheadFull(_)
            | CallError::Held { .. }
            | CallError::Deadline { .. } => Verdict {
                health: Health::Neutral,
                retryable: false,
                not_sent: true,
                retry_after: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool_error(e: ToolError) -> Result<CallToolResult, CallError> {
        Ok(e.to_call_tool_result())
    }

    #[test]
    fn client_faults_are_final_and_healthy() {
        for e in [
            ToolError::invalid("x"),
            ToolError::not_found("x"),
            ToolError::conflict("x"),
        ] {
            let v = classify(&tool_error(e));
            assert_eq!(v.health, Health::Healthy);
            assert!(!v.retryable);
        }
    }

    #[test]
    fn upstream_faults_are_retryable_and_failing() {
        let v = classify(&tool_error(ToolError::throttled("slow down", 250)));
        assert_eq!(v.health, Health::Failing);
        assert!(v.retryable);
        assert_eq!(v.retry_after, Some(Duration::from_millis(250)));
        let v = classify::<CallToolResult>(&Err(CallError::NotConnected {
            server: "s".into(),
            last_error: None,
        }));
        assert!(v.retryable && v.not_sent);
        assert_eq!(v.health, Health::Unreachable);
        let v = classify::<CallToolResult>(&Err(CallError::Timeout {
            server: "s".into(),
            tool: "t".into(),
            after: Duration::from_millis(5),
        }));
        assert!(v.retryable && !v.not_sent);
        assert!(!classify(&tool_error(ToolError::internal("bug"))).retryable);
    }

    #[test]
    fn messages_over_a_size_limit_are_the_callers_fault() {
        for what in [
            crate::error::Oversize::Request,
            crate::error::Oversize::Answer,
        ] {
            let e = CallError::TooLarge(crate::error::TooLarge {
                server: "s".into(),
                what,
                bytes: Some(5 << 20),
                limit: Some(4 << 20),
                setting: "orchestrator.limits.upstreamMaxRequestBytes".into(),
            });
            let v = classify::<CallToolResult>(&Err(e.clone()));
            assert!(!v.retryable);
            assert_eq!(v.health, Health::Neutral);
            let answer = e.to_tool_error().expect("a tool error");
            assert_eq!(answer.kind, ErrorKind::Invalid);
            assert!(!answer.retryable);
            assert!(
                answer.message.contains("upstreamMaxRequestBytes"),
                "{}",
                answer.message
            );
        }
    }

    #[test]
    fn policy_refusals_are_never_retried_and_neutral() {
        let open = CallError::CircuitOpen(crate::policy::breaker::BreakerOpen {
            server: "s".into(),
            why: "connection lost".into(),
            retry_in: Duration::from_secs(1),
        });
        let v = classify::<CallToolResult>(&Err(open));
        assert!(!v.retryable);
        assert_eq!(v.health, Health::Neutral);
    }
}
