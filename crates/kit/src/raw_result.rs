//! A tool result relayed as the upstream wrote it: the raw pass-through path.
//!
//! A pass-through call's answer used to be parsed into rmcp's `CallToolResult` (every content
//! block, `structuredContent` into a map) and written out again: for a 10 KB answer about three
//! quarters of the orchestrator's work per call. Here the upstream's result object is kept as
//! text, split only into its members: `_meta` and `resultType`, which the orchestrator edits
//! (correlation id, `cached`, the protocol era's result type), are parsed; every other member is
//! carried verbatim, so fields a newer protocol adds reach the agent even where rmcp's types
//! have no place for them.
//!
//! The carrier is an ordinary `CallToolResult` with no content and the verbatim members in one
//! `_meta` entry ([`RAW_KEY`]), so the whole call path (policy stack, cache, metrics, tasks)
//! handles it unchanged. Two places treat it specially: the stdio front's writer splices the
//! members back in ([`write_result`]), and everything else that reads a result's content first
//! turns it into the typed result the upstream's text parses to ([`materialize`]).
//!
//! Only results the typed path would relay the same way take this path: a complete result
//! (`resultType` absent or `complete`), not a tool error (`isError: true` is classified from its
//! content), with at least one of `content`, `structuredContent`, `isError` (as rmcp requires),
//! and `structuredContent`, if present, an object (rmcp rewrites any other value for agents on
//! eras before 2026-07-28). Anything else is read typed, as before.

use rmcp::model::{CallToolResult, JsonObject, MetaObject, ResultType};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::{Value, value::RawValue};

/// The `_meta` entry that carries a relayed result's verbatim members (a JSON object's members,
/// without braces). No agent ever sees it: the stdio writer splices it, everything else
/// materializes first.
pub const RAW_KEY: &str = "io.github.mcp-orchestrator/rawMembers";

/// A result object's members, each kept as its text: read in the same pass as the message
/// around it (a JSON-RPC response's `result`), so a relayed answer is scanned once.
#[derive(Debug)]
pub struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Each<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Each<'a> {
            type Value = Members<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tool result object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Each(std::marker::PhantomData))
    }
}

/// The carrier of a tool result object, read as its [`Members`], for the raw path; `None` when
/// it must be read typed (see the module's rules).
pub fn relay(Members(members): Members<'_>) -> Option<CallToolResult> {
    let size = members
        .iter()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum();
    let mut verbatim = String::with_capacity(size);
    let mut meta: Option<JsonObject> = None;
    let mut result_type = None;
    let mut known = false;
    let mut has_content = false;
    for (key, value) in members {
        match key.as_str() {
            "_meta" => {
                let parsed: JsonObject = serde_json::from_str(value.get()).ok()?;
                if parsed.contains_key(RAW_KEY) {
                    return None;
                }
                meta = Some(parsed);
                continue;
            }
            "resultType" => {
                let parsed: ResultType = serde_json::from_str(value.get()).ok()?;
                if !parsed.is_complete() {
                    return None;
                }
                result_type = Some(parsed);
                continue;
            }
            "isError" => {
                if serde_json::from_str::<bool>(value.get()).ok()? {
                    return None;
                }
                known = true;
            }
            "structuredContent" => {
                if !value.get().starts_with('{') {
                    return None;
                }
                known = true;
            }
            "content" => {
                if !value.get().starts_with('[') {
                    return None;
                }
                known = true;
                has_content = true;
            }
            _ => {}
        }
        if !verbatim.is_empty() {
            verbatim.push(',');
        }
        verbatim.push_str(&serde_json::to_string(&key).ok()?);
        verbatim.push(':');
        verbatim.push_str(value.get());
    }
    if !known {
        return None;
    }
    // `content` is required by every era's schema; rmcp reads its absence as empty.
    if !has_content {
        if !verbatim.is_empty() {
            verbatim.push(',');
        }
        verbatim.push_str("\"content\":[]");
    }
    let mut meta = meta.unwrap_or_default();
    meta.insert(RAW_KEY.to_owned(), Value::String(verbatim));
    let mut carrier = CallToolResult::default();
    carrier.result_type = result_type;
    carrier.meta = Some(MetaObject(meta));
    Some(carrier)
}

/// The verbatim members `result` carries, if it is a raw carrier.
pub fn members(result: &CallToolResult) -> Option<&str> {
    result.meta.as_ref()?.get(RAW_KEY)?.as_str()
}

/// The typed result a carrier stands for: what reading the upstream's text typed, with the
/// carrier's `_meta` and result type (edited on the way) in place of the upstream's. Any other
/// result is returned as it is.
pub fn materialize(mut result: CallToolResult) -> Result<CallToolResult, serde_json::Error> {
    let Some(Value::String(verbatim)) = result.meta.as_mut().and_then(|m| m.remove(RAW_KEY)) else {
        return Ok(result);
    };
    let mut typed: CallToolResult = serde_json::from_str(&format!("{{{verbatim}}}"))?;
    typed.result_type = result.result_type;
    typed.meta = result.meta.filter(|m| !m.is_empty());
    Ok(typed)
}

/// The size in bytes of what [`write_result`] writes for a carrier, without writing it.
pub fn written_len(result: &CallToolResult) -> Option<usize> {
    let verbatim = members(result)?;
    let mut extra = Vec::new();
    write_edited(&mut extra, result, verbatim.is_empty()).ok()?;
    Some(verbatim.len() + extra.len() + 2)
}

/// Writes a carrier as the result object the agent receives: the verbatim members, then the
/// result type and `_meta` as the call path left them. `None` when `result` is no carrier.
pub fn write_result(out: &mut Vec<u8>, result: &CallToolResult) -> Option<serde_json::Result<()>> {
    let verbatim = members(result)?;
    out.push(b'{');
    out.extend_from_slice(verbatim.as_bytes());
    let written = write_edited(out, result, verbatim.is_empty());
    out.push(b'}');
    Some(written)
}

/// `,"resultType":…` and `,"_meta":{…}` (without the carrier's own entry), each when present.
fn write_edited(out: &mut Vec<u8>, result: &CallToolResult, first: bool) -> serde_json::Result<()> {
    let mut first = first;
    let mut separate = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    if let Some(result_type) = &result.result_type {
        separate(out);
        out.extend_from_slice(b"\"resultType\":");
        serde_json::to_writer(&mut *out, result_type)?;
    }
    if let Some(meta) = result.meta.as_ref().map(|m| &m.0)
        && meta.keys().any(|k| k != RAW_KEY)
    {
        separate(out);
        out.extend_from_slice(b"\"_meta\":");
        serde_json::to_writer(&mut *out, &WithoutMembers(meta))?;
    }
    Ok(())
}

/// A carrier's `_meta` as the agent sees it: without the verbatim members.
struct WithoutMembers<'a>(&'a JsonObject);

impl serde::Serialize for WithoutMembers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(k, _)| *k != RAW_KEY))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The carrier of a tool result object's text; `None` also when it is not an object.
    fn relay_text(result: &str) -> Option<CallToolResult> {
        relay(serde_json::from_str(result).ok()?)
    }

    /// What the typed path gives an agent for `result`, as JSON.
    fn typed(result: &Value) -> Value {
        let parsed: CallToolResult = serde_json::from_value(result.clone()).expect("typed");
        serde_json::to_value(parsed).expect("serializes")
    }

    fn raw(result: &Value) -> Value {
        let carrier = relay_text(&result.to_string()).expect("relayed raw");
        let mut out = Vec::new();
        write_result(&mut out, &carrier)
            .expect("a carrier")
            .expect("writes");
        assert_eq!(written_len(&carrier), Some(out.len()));
        let written: Value = serde_json::from_slice(&out).expect("valid JSON");
        let materialized =
            serde_json::to_value(materialize(carrier).expect("parses")).expect("serializes");
        assert_eq!(materialized, typed(result), "materialized as typed");
        written
    }

    #[test]
    fn a_relayed_result_reaches_the_agent_as_the_typed_path_writes_it() {
        let results = [
            json!({ "content": [{ "type": "text", "text": "plain \"quoted\" \\ é 😀 \u{1}" }] }),
            json!({ "content": [], "structuredContent": { "a": [1, 2.5, null, true], "b": { "c": "d" } } }),
            json!({ "content": [{ "type": "text", "text": "x" }], "isError": false, "_meta": { "requestCharge": 2.5, "x": [1] } }),
            json!({ "resultType": "complete", "content": [{ "type": "image", "data": "aGk=", "mimeType": "image/png" }] }),
            json!({ "content": [{ "type": "resource", "resource": { "uri": "a://b", "text": "t" } }, { "type": "resource_link", "uri": "a://c", "name": "c" }] }),
            json!({ "content": [{ "type": "text", "text": "t", "annotations": { "audience": ["user"], "priority": 0.5 } }] }),
            json!({ "structuredContent": {} }),
            json!({ "isError": false }),
        ];
        for result in results {
            assert_eq!(raw(&result), typed(&result), "{result}");
        }
    }

    #[test]
    fn fields_the_typed_structs_drop_are_kept() {
        let result = json!({ "content": [{ "type": "text", "text": "t", "newField": 1 }], "futureMember": { "x": 1 } });
        let written = raw(&result);
        assert_eq!(written["futureMember"], json!({ "x": 1 }));
        assert_eq!(written["content"][0]["newField"], 1);
        assert!(typed(&result).get("futureMember").is_none());
    }

    #[test]
    fn edits_to_meta_and_result_type_are_written() {
        let mut carrier =
            relay_text(r#"{"content":[],"_meta":{"up":1},"resultType":"complete"}"#).expect("raw");
        let meta = carrier.meta.as_mut().expect("meta");
        meta.insert("cached".into(), Value::Bool(true));
        carrier.result_type = None;
        let mut out = Vec::new();
        write_result(&mut out, &carrier)
            .expect("carrier")
            .expect("writes");
        let written: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            written,
            json!({ "content": [], "_meta": { "up": 1, "cached": true } })
        );
    }

    #[test]
    fn results_the_typed_path_must_read_are_not_relayed_raw() {
        for result in [
            r#"{"content":[{"type":"text","text":"boom"}],"isError":true}"#,
            r#"{"resultType":"input_required","inputRequests":{}}"#,
            r#"{"structuredContent":["not","an","object"]}"#,
            r#"{"_meta":{"only":"meta"}}"#,
            r#"{"content":"not a list"}"#,
            r#"{"content":[],"_meta":{"io.github.mcp-orchestrator/rawMembers":"x"}}"#,
            r#"[1]"#,
            r#"{"content":[]"#,
        ] {
            assert!(relay_text(result).is_none(), "{result}");
        }
    }

    #[test]
    fn any_other_result_is_materialized_as_it_is() {
        let result = CallToolResult::success(vec![rmcp::model::ContentBlock::text("t")]);
        assert_eq!(materialize(result.clone()).expect("as is"), result);
        assert!(members(&result).is_none());
        let mut out = Vec::new();
        assert!(write_result(&mut out, &result).is_none());
    }
}
