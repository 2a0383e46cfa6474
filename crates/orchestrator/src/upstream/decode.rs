//! Reading a stdio upstream's lines as rmcp messages, with a tool call's answer read straight
//! into its result type.
//!
//! rmcp's message type is an untagged enum of untagged enums: a line is first buffered whole,
//! then tried as a request, a response of each of ServerResult's twenty kinds in turn (a tool
//! call's answer is the sixteenth), and so on, every miss building an error. For a 10 KB answer
//! that was three quarters of the orchestrator's work on a pass-through call (callgrind: about
//! 760,000 of 1,370,000 instructions). The transport knows which of its requests are tool calls,
//! so their answers are read once, by serde, as `CallToolResult` — rmcp's own type and its own
//! `Deserialize`, not a codec of ours. Anything else, and any answer that does not read as a
//! complete tool result (an error, `input_required`, a task), takes rmcp's path unchanged.

use std::{collections::HashSet, sync::Mutex};

use rmcp::{
    RoleClient,
    model::{
        CallToolResult, ClientNotification, ClientRequest, JsonRpcMessage, JsonRpcResponse,
        JsonRpcVersion2_0, RequestId, ServerResult,
    },
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
};
use serde::{Deserialize, de::IgnoredAny};

/// Past this many unanswered tool calls on one connection the record starts over: its only
/// use is speed, so forgetting costs a slower read of those answers, never a wrong one.
const MAX_TRACKED: usize = 65_536;

/// The ids of this connection's tool calls that await their answer, and whether their results
/// are relayed raw ([`kit::raw_result`]).
#[derive(Debug, Default)]
pub struct ToolCallsInFlight {
    ids: Mutex<HashSet<RequestId>>,
    raw: bool,
}

impl ToolCallsInFlight {
    /// Tool results read raw when `raw` (`orchestrator.servers.<name>.toolResults`).
    pub fn new(raw: bool) -> Self {
        Self {
            ids: Mutex::default(),
            raw,
        }
    }

    /// Notes a message about to be written to the upstream: a tool call starts awaiting its
    /// answer; a cancellation ends the wait of the call it names.
    pub fn sent(&self, message: &TxJsonRpcMessage<RoleClient>) {
        match message {
            JsonRpcMessage::Request(r)
                if matches!(r.request, ClientRequest::CallToolRequest(_)) =>
            {
                let mut ids = self.lock();
                if ids.len() >= MAX_TRACKED {
                    ids.clear();
                }
                ids.insert(r.id.clone());
            }
            JsonRpcMessage::Notification(n) => {
                if let ClientNotification::CancelledNotification(c) = &n.notification
                    && let Some(id) = &c.params.request_id
                {
                    self.lock().remove(id);
                }
            }
            _ => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<RequestId>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one line from the upstream: a tool call's complete answer as its result type,
    /// anything else as rmcp reads it.
    pub fn decode(&self, line: &[u8]) -> serde_json::Result<RxJsonRpcMessage<RoleClient>> {
        if self.raw
            && !self.lock().is_empty()
            && let Ok(answer) = serde_json::from_slice::<RawToolAnswer>(line)
            && answer.method.is_none()
            && answer.error.is_none()
            && let Some(carrier) = kit::raw_result::relay(answer.result.get())
            && self.lock().remove(&answer.id)
        {
            return Ok(JsonRpcMessage::Response(JsonRpcResponse {
                jsonrpc: answer.jsonrpc,
                id: answer.id,
                result: ServerResult::CallToolResult(carrier),
            }));
        }
        if !self.lock().is_empty()
            && let Ok(answer) = serde_json::from_slice::<ToolAnswer>(line)
            && answer.method.is_none()
            && answer.error.is_none()
            && self.lock().remove(&answer.id)
        {
            return Ok(JsonRpcMessage::Response(JsonRpcResponse {
                jsonrpc: answer.jsonrpc,
                id: answer.id,
                result: ServerResult::CallToolResult(answer.result),
            }));
        }
        let message = serde_json::from_slice::<RxJsonRpcMessage<RoleClient>>(line)?;
        self.received(&message);
        Ok(message)
    }

    /// Notes a message read from the upstream however it was read: whatever answers a tool
    /// call (an error, `input_required`, a task, the refusal of an answer over the line cap)
    /// ends its wait.
    pub fn received(&self, message: &RxJsonRpcMessage<RoleClient>) {
        let id = match message {
            JsonRpcMessage::Response(r) => &r.id,
            JsonRpcMessage::Error(e) => match &e.id {
                Some(id) => id,
                None => return,
            },
            _ => return,
        };
        self.lock().remove(id);
    }
}

/// A response whose result reads as a complete tool result. `method` and `error` are read only
/// to refuse a line that has them: rmcp would take such a line as something else.
#[derive(Deserialize)]
struct ToolAnswer {
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    result: CallToolResult,
    method: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

/// A response whose result is kept as its text, for [`kit::raw_result::relay`].
#[derive(Deserialize)]
struct RawToolAnswer<'a> {
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[serde(borrow)]
    result: &'a serde_json::value::RawValue,
    method: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use rmcp::model::{
        CallToolRequest, CallToolRequestParams, CancelledNotification, CancelledNotificationParam,
        ClientJsonRpcMessage, NumberOrString,
    };
    use serde_json::json;

    use super::*;

    fn call(id: i64) -> TxJsonRpcMessage<RoleClient> {
        ClientJsonRpcMessage::request(
            ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new("t"))),
            NumberOrString::Number(id),
        )
    }

    fn line(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("serializes")
    }

    fn kind(m: &RxJsonRpcMessage<RoleClient>) -> String {
        match m {
            JsonRpcMessage::Response(r) => {
                let debug = format!("{:?}", r.result);
                debug.split('(').next().unwrap_or_default().to_owned()
            }
            other => format!("{other:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// Every line reads as rmcp itself reads it, whichever path it took.
    fn same_as_rmcp(calls: &ToolCallsInFlight, v: serde_json::Value) {
        let bytes = line(v);
        let ours = calls.decode(&bytes).expect("decodes");
        let theirs: RxJsonRpcMessage<RoleClient> =
            serde_json::from_slice(&bytes).expect("rmcp reads it");
        // As rmcp writes them (its result types do not compare), and of the same kind.
        assert_eq!(
            serde_json::to_value(&ours).expect("serializes"),
            serde_json::to_value(&theirs).expect("serializes")
        );
        assert_eq!(kind(&ours), kind(&theirs));
    }

    #[test]
    fn a_tool_calls_answer_reads_as_rmcp_reads_it_and_ends_the_wait() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&call(7));
        let answer = json!({"jsonrpc": "2.0", "id": 7, "result": {
            "content": [{"type": "text", "text": "hi", "annotations": {"priority": 0.5}}],
            "structuredContent": {"a": [1, 2.5, null, "x"]},
            "isError": false,
            "_meta": {"k": "v"}
        }});
        same_as_rmcp(&calls, answer);
        assert!(calls.lock().is_empty());
    }

    /// Raw: a tool call's complete answer is carried as written; once read typed it is what
    /// rmcp reads; anything the typed path must read still goes the way rmcp reads it.
    #[test]
    fn a_raw_connection_carries_a_tool_result_as_written_and_the_rest_as_rmcp_reads_it() {
        let calls = ToolCallsInFlight::new(true);
        calls.sent(&call(7));
        let result = json!({
            "content": [{"type": "text", "text": "hi", "newField": 1}],
            "structuredContent": {"a": [1, 2.5, null, "x"]},
            "_meta": {"k": "v"}
        });
        let answer = calls
            .decode(&line(json!({"jsonrpc": "2.0", "id": 7, "result": result})))
            .expect("decodes");
        let JsonRpcMessage::Response(JsonRpcResponse {
            result: ServerResult::CallToolResult(carried),
            id,
            ..
        }) = answer
        else {
            panic!("a tool result: {answer:?}");
        };
        assert_eq!(id, NumberOrString::Number(7));
        assert!(kit::raw_result::members(&carried).is_some_and(|m| m.contains("newField")));
        let typed = kit::raw_result::materialize(carried).expect("parses");
        let rmcp: CallToolResult = serde_json::from_value(result).expect("rmcp reads it");
        assert_eq!(typed, rmcp);
        assert!(calls.lock().is_empty());

        calls.sent(&call(8));
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 8, "result": {
                "content": [{"type": "text", "text": "boom"}], "isError": true }}),
        );
        assert!(calls.lock().is_empty());
    }

    #[test]
    fn answers_that_are_no_complete_tool_result_take_rmcps_path() {
        let calls = ToolCallsInFlight::default();
        for id in 1..=4 {
            calls.sent(&call(id));
        }
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "bad"}}),
        );
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 2, "result": {"resultType": "input_required",
                "inputRequests": {}}}),
        );
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 3, "result": {"task": {"taskId": "t1",
                "status": "working", "createdAt": "2026-01-01T00:00:00Z", "ttl": null}}}),
        );
        // A result with no tool result field at all.
        same_as_rmcp(&calls, json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
        assert!(calls.lock().is_empty(), "every answer ended its wait");
    }

    #[test]
    fn answers_to_other_requests_and_notifications_are_untouched() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&call(1));
        // Looks like a tool result, but answers a request that was no tool call.
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 9, "result": {"content": []}}),
        );
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": 1, "progress": 0.5}}),
        );
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 3, "method": "roots/list"}),
        );
        assert!(calls.lock().contains(&NumberOrString::Number(1)));
    }

    #[test]
    fn a_cancelled_call_stops_being_awaited() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&call(5));
        let cancel = ClientJsonRpcMessage::notification(ClientNotification::CancelledNotification(
            CancelledNotification::new(CancelledNotificationParam::new(
                Some(NumberOrString::Number(5)),
                None,
            )),
        ));
        calls.sent(&cancel);
        assert!(calls.lock().is_empty());
    }

    #[test]
    fn lines_that_are_no_message_are_refused_as_rmcp_refuses_them() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&call(1));
        assert!(calls.decode(b"{not json").is_err());
        assert!(calls.decode(b"[1,2]").is_err());
    }
}
