//! An upstream on 2026-07-28 asks through its result: `input_required`, with the questions and
//! an opaque state. Each question goes to the agent behind the call the way that agent can be
//! asked ([`super::forward`]: a request to a 2025-11-25 agent, `input_required` of its own to a
//! 2026-07-28 one), and the upstream gets the same request again with the answers and its state.

// Sampling and roots are deprecated from 2026-07-28 on (SEP-2577), but still relayed.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::{
    ErrorData,
    model::{InputRequest, InputRequiredResult, InputResponses, ServerRequest},
};

use super::Origin;
use crate::context::CallContext;

/// How many times one call may come back asking before it is given up (the SDKs' default).
pub const MAX_ROUNDS: usize = rmcp::model::DEFAULT_MRTR_MAX_ROUNDS;

/// The question `request` as the request it is, and its method.
fn as_request(request: InputRequest) -> Option<(&'static str, ServerRequest)> {
    match request {
        InputRequest::Elicitation(r) => {
            Some(("elicitation/create", ServerRequest::ElicitRequest(r)))
        }
        InputRequest::CreateMessage(r) => Some((
            "sampling/createMessage",
            ServerRequest::CreateMessageRequest(r),
        )),
        InputRequest::ListRoots(r) => Some(("roots/list", ServerRequest::ListRootsRequest(r))),
        _ => None,
    }
}

/// The agent's answers to every question of `asked`, keyed as the upstream keyed them; the
/// first question that cannot be answered ends the call with its error.
pub async fn answer(
    asked: InputRequiredResult,
    cx: &CallContext,
    limit: Duration,
) -> Result<InputResponses, ErrorData> {
    let origin: &Origin = cx.origin.as_deref().ok_or_else(|| {
        ErrorData::internal_error(
            "the server needs input, and this request has no agent behind it to ask",
            None,
        )
    })?;
    let mut answers = InputResponses::new();
    for (key, request) in asked.input_requests.unwrap_or_default() {
        let (method, request) = as_request(request).ok_or_else(|| {
            ErrorData::invalid_request(
                format!("input request `{key}` is not an elicitation, sampling or roots request"),
                None,
            )
        })?;
        let (answer, _ending) = super::forward(origin, method, request, &cx.ct, limit).await;
        let value = serde_json::to_value(answer?)
            .map_err(|e| ErrorData::internal_error(format!("answer to `{key}`: {e}"), None))?;
        answers.insert(key, value);
    }
    Ok(answers)
}
