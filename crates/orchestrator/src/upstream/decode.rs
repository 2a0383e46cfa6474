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

use std::{collections::HashMap, sync::Mutex};

use rmcp::{
    RoleClient,
    model::{
        CallToolResult, ClientNotification, ClientRequest, GetMeta, JsonRpcMessage,
        JsonRpcResponse, JsonRpcVersion2_0, RequestId, ServerResult,
    },
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
};
use serde::{Deserialize, de::IgnoredAny};

/// Past this many unanswered tool calls on one connection the record starts over: its only
/// use is speed, so forgetting costs a slower read of those answers, never a wrong one.
const MAX_TRACKED: usize = 65_536;

/// The `_meta` key a tool call is sent down with when its caller takes the result raw
/// ([`kit::raw_result`]: a pass-through call of the stdio front). The transport takes it off
/// before the request is written, so the server never sees it.
pub const WANTS_RAW: &str = "io.github.mcp-orchestrator/wantsRawResult";

/// Marks `request` (a `tools/call`) as taking its result raw.
pub fn want_raw(request: &mut ClientRequest) {
    request
        .get_meta_mut()
        .0
        .insert(WANTS_RAW.to_owned(), serde_json::Value::Bool(true));
}

/// The ids of this connection's tool calls that await their answer, each with whether its
/// caller takes the result raw.
#[derive(Debug, Default)]
pub struct ToolCallsInFlight(Mutex<Awaited>);

/// The calls awaited, and how many of them take their result raw (so a connection without any
/// reads its lines as before, with one parse).
#[derive(Debug, Default)]
struct Awaited {
    ids: HashMap<RequestId, bool>,
    raw: usize,
}

impl Awaited {
    fn insert(&mut self, id: RequestId, raw: bool) {
        if self.ids.len() >= MAX_TRACKED {
            self.ids.clear();
            self.raw = 0;
        }
        if let Some(was_raw) = self.ids.insert(id, raw) {
            self.raw -= usize::from(was_raw);
        }
        self.raw += usize::from(raw);
    }

    /// Ends the wait for `id`; whether it was awaited.
    fn remove(&mut self, id: &RequestId) -> bool {
        match self.ids.remove(id) {
            Some(raw) => {
                self.raw -= usize::from(raw);
                true
            }
            None => false,
        }
    }
}

impl ToolCallsInFlight {
    /// Notes a message about to be written to the upstream: a tool call starts awaiting its
    /// answer (raw when its `_meta` says [`WANTS_RAW`], which is taken off here); a
    /// cancellation ends the wait of the call it names.
    pub fn sent(&self, message: &mut TxJsonRpcMessage<RoleClient>) {
        match message {
            JsonRpcMessage::Request(r)
                if matches!(r.request, ClientRequest::CallToolRequest(_)) =>
            {
                let raw = r.request.get_meta_mut().0.remove(WANTS_RAW).is_some();
                self.lock().insert(r.id.clone(), raw);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Awaited> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one line from the upstream: a tool call's complete answer as its result type,
    /// anything else as rmcp reads it.
    pub fn decode(&self, line: &[u8]) -> serde_json::Result<RxJsonRpcMessage<RoleClient>> {
        if self.lock().raw > 0
            && let Ok(answer) = serde_json::from_slice::<RawToolAnswer>(line)
            && answer.method.is_none()
            && answer.error.is_none()
            && self.lock().ids.get(&answer.id) == Some(&true)
            && let Some(carrier) = kit::raw_result::relay(answer.result)
            && self.lock().remove(&answer.id)
        {
            return Ok(JsonRpcMessage::Response(JsonRpcResponse {
                jsonrpc: answer.jsonrpc,
                id: answer.id,
                result: ServerResult::CallToolResult(carrier),
            }));
        }
        if !self.lock().ids.is_empty()
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

/// A response whose result is kept as its members' text, for [`kit::raw_result`], in one pass
/// over the line.
#[derive(Deserialize)]
struct RawToolAnswer<'a> {
    jsonrpc: JsonRpcVersion2_0,
    id: RequestId,
    #[serde(borrow)]
    result: kit::raw_result::Members<'a>,
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
        calls.sent(&mut call(7));
        let answer = json!({"jsonrpc": "2.0", "id": 7, "result": {
            "content": [{"type": "text", "text": "hi", "annotations": {"priority": 0.5}}],
            "structuredContent": {"a": [1, 2.5, null, "x"]},
            "isError": false,
            "_meta": {"k": "v"}
        }});
        same_as_rmcp(&calls, answer);
        assert!(calls.lock().ids.is_empty());
    }

    /// A call sent wanting its result raw: its complete answer is carried as written, and once
    /// read typed it is what rmcp reads; anything the typed path must read (an error result,
    /// any call sent without the marker) still goes the way rmcp reads it.
    #[test]
    fn a_call_sent_wanting_raw_gets_its_result_as_written_and_the_rest_as_rmcp_reads_it() {
        let calls = ToolCallsInFlight::default();
        let mut asked = call(7);
        if let JsonRpcMessage::Request(r) = &mut asked {
            want_raw(&mut r.request);
        }
        calls.sent(&mut asked);
        let JsonRpcMessage::Request(r) = &mut asked else {
            panic!("a request");
        };
        assert!(
            !r.request.get_meta_mut().0.contains_key(WANTS_RAW),
            "the server never sees the marker"
        );
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
        assert!(calls.lock().ids.is_empty());

        calls.sent(&mut call(8));
        same_as_rmcp(
            &calls,
            json!({"jsonrpc": "2.0", "id": 8, "result": {
                "content": [{"type": "text", "text": "boom"}], "isError": true }}),
        );
        assert!(calls.lock().ids.is_empty());
    }

    #[test]
    fn answers_that_are_no_complete_tool_result_take_rmcps_path() {
        let calls = ToolCallsInFlight::default();
        for id in 1..=4 {
            calls.sent(&mut call(id));
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
        assert!(calls.lock().ids.is_empty(), "every answer ended its wait");
    }

    #[test]
    fn answers_to_other_requests_and_notifications_are_untouched() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&mut call(1));
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
        assert!(calls.lock().ids.contains_key(&NumberOrString::Number(1)));
    }

    #[test]
    fn a_cancelled_call_stops_being_awaited() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&mut call(5));
        let mut cancel = ClientJsonRpcMessage::notification(
            ClientNotification::CancelledNotification(CancelledNotification::new(
                CancelledNotificationParam::new(Some(NumberOrString::Number(5)), None),
            )),
        );
        calls.sent(&mut cancel);
        assert!(calls.lock().ids.is_empty());
    }

    #[test]
    fn lines_that_are_no_message_are_refused_as_rmcp_refuses_them() {
        let calls = ToolCallsInFlight::default();
        calls.sent(&mut call(1));
        assert!(calls.decode(b"{not json").is_err());
        assert!(calls.decode(b"[1,2]").is_err());
    }
}
