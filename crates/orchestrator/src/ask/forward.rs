//! Puts an upstream's question to the agent and brings its answer back, unchanged.

use std::time::Duration;

use rmcp::{
    ErrorData,
    model::{CancelledNotificationParam, ClientResult, GetExtensions as _, ServerRequest},
    service::{OriginatingRequestId, PeerRequestOptions, ServiceError},
};
use tokio_util::sync::CancellationToken;

use super::{Origin, capability};

/// The config path named when a question outlives its limit.
pub const TIMEOUT_SETTING: &str = "orchestrator.limits.userInputTimeoutMs";

/// How a question ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The agent answered (whatever it answered: accept, decline, cancel, or an error).
    Answered,
    /// The agent had not declared the capability; it was not asked.
    NotDeclared,
    /// The agent's era has no server-to-client requests.
    WrongEra,
    /// The upstream withdrew it, or the agent cancelled its call.
    Cancelled,
    /// Nobody answered within the limit.
    TimedOut,
    /// The agent's connection failed.
    Failed,
}

impl Ending {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::NotDeclared => "not_declared",
            Self::WrongEra => "wrong_era",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
        }
    }
}

/// Asks `origin`'s agent `request` on the stream of the agent's own request, waiting at most
/// `limit` (the call's deadlines stop meanwhile). `upstream_ct` is cancelled when the upstream
/// withdraws the question. An error the agent answers with goes back to the upstream as it is.
pub async fn forward(
    origin: &Origin,
    method: &'static str,
    mut request: ServerRequest,
    upstream_ct: &CancellationToken,
    limit: Duration,
) -> (Result<ClientResult, ErrorData>, Ending) {
    if let Some(needed) = capability::missing(origin.capabilities.as_ref(), &request) {
        return (
            Err(capability::refusal(needed, method)),
            Ending::NotDeclared,
        );
    }
    if origin.is_request_scoped() {
        if let Some(questions) = &origin.questions {
            return through_the_result(origin, questions, request, upstream_ct, limit).await;
        }
        return (
            Err(ErrorData::new(
                rmcp::model::ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
                format!(
                    "the agent whose call caused this {method} speaks MCP 2026-07-28, which has \
                     no server-to-client requests; it cannot be asked"
                ),
                None,
            )),
            Ending::WrongEra,
        );
    }
    // rmcp's HTTP front sends a request marked so on the originating request's SSE stream.
    request
        .extensions_mut()
        .insert(OriginatingRequestId(origin.request.clone()));
    let _waiting = origin.wait.begin();
    let handle = match origin
        .agent
        .send_request_with_option(request, PeerRequestOptions::no_options())
        .await
    {
        Ok(handle) => handle,
        Err(e) => return (Err(agent_failed(method, &e)), Ending::Failed),
    };
    let id = handle.id.clone();
    let why = tokio::select! {
        answer = handle.await_response() => {
            return match answer {
                Ok(result) => (Ok(result), Ending::Answered),
                Err(ServiceError::McpError(e)) => (Err(e), Ending::Answered),
                Err(e) => (Err(agent_failed(method, &e)), Ending::Failed),
            };
        }
        () = upstream_ct.cancelled() => (Ending::Cancelled, "the server withdrew it".to_owned()),
        () = origin.ct.cancelled() => (Ending::Cancelled, "the agent cancelled its call".to_owned()),
        () = tokio::time::sleep(limit) => (
            Ending::TimedOut,
            format!("no answer within {} ms ({TIMEOUT_SETTING})", limit.as_millis()),
        ),
    };
    let (ending, reason) = why;
    let _ = origin
        .agent
        .notify_cancelled(CancelledNotificationParam::new(
            Some(id),
            Some(reason.clone()),
        ))
        .await;
    let error = match ending {
        Ending::TimedOut => ErrorData::internal_error(
            format!("{method} timed out: {reason}"),
            Some(serde_json::json!({ "limit": TIMEOUT_SETTING, "ms": limit.as_millis() as u64 })),
        ),
        _ => ErrorData::internal_error(format!("{method} cancelled: {reason}"), None),
    };
    (Err(error), ending)
}

/// Puts `request` to a request-scoped agent as `input_required` on its call ([`super::suspend`])
/// and waits for the answer its retry brings.
async fn through_the_result(
    origin: &Origin,
    questions: &super::QuestionSender,
    request: ServerRequest,
    upstream_ct: &CancellationToken,
    limit: Duration,
) -> (Result<ClientResult, ErrorData>, Ending) {
    let (answer, answered) = tokio::sync::oneshot::channel();
    if questions.send(super::Question { request, answer }).is_err() {
        return (
            Err(ErrorData::internal_error(
                "the agent's call ended before the question could be put to it",
                None,
            )),
            Ending::Failed,
        );
    }
    let _waiting = origin.wait.begin();
    tokio::select! {
        answer = answered => match answer {
            Ok(Ok(result)) => (Ok(result), Ending::Answered),
            Ok(Err(e)) => (Err(e), Ending::Answered),
            Err(_) => (
                Err(ErrorData::internal_error(
                    "the agent's call ended before it answered",
                    None,
                )),
                Ending::Cancelled,
            ),
        },
        () = upstream_ct.cancelled() => (
            Err(ErrorData::internal_error("cancelled: the server withdrew it", None)),
            Ending::Cancelled,
        ),
        () = origin.ct.cancelled() => (
            Err(ErrorData::internal_error("cancelled: the agent cancelled its call", None)),
            Ending::Cancelled,
        ),
        () = tokio::time::sleep(limit) => (
            Err(ErrorData::internal_error(
                format!("no answer within {} ms ({TIMEOUT_SETTING})", limit.as_millis()),
                Some(serde_json::json!({ "limit": TIMEOUT_SETTING, "ms": limit.as_millis() as u64 })),
            )),
            Ending::TimedOut,
        ),
    }
}

fn agent_failed(method: &str, e: &ServiceError) -> ErrorData {
    ErrorData::internal_error(
        format!("{method} could not reach the agent whose call caused it: {e}"),
        None,
    )
}
