//! Whether the agent behind a call can be asked a question: an agent that did not declare
//! elicitation (or the mode asked for), sampling (with tools, when the request has tools) or
//! roots is never asked, and the upstream gets the protocol's "missing required client
//! capability" error (`-32021`, the capability it needs in `data`), not a decline made up on the
//! user's behalf.

// Sampling and roots are deprecated from 2026-07-28 on (SEP-2577), but 2025-11-25 servers still
// use them: relaying them is the point here.
#![allow(deprecated)]

use rmcp::{
    ErrorData,
    model::{
        ClientCapabilities, ElicitRequestParams, ElicitationCapability, FormElicitationCapability,
        JsonObject, RootsCapabilities, SamplingCapability, ServerRequest, UrlElicitationCapability,
    },
};

/// What the orchestrator declares to every upstream: it can pass each kind of question on, to
/// whichever agent supports it.
pub fn declared_upstream() -> ClientCapabilities {
    let mut caps = ClientCapabilities::default();
    caps.elicitation = Some(
        ElicitationCapability::new()
            .with_form(FormElicitationCapability::default())
            .with_url(UrlElicitationCapability::new()),
    );
    let mut sampling = SamplingCapability::default();
    sampling.tools = Some(JsonObject::new());
    caps.sampling = Some(sampling);
    let mut roots = RootsCapabilities::default();
    roots.list_changed = Some(true);
    caps.roots = Some(roots);
    caps
}

/// The capability `request` needs that `declared` lacks, if any (`None` for requests any client
/// answers, such as `ping`).
pub fn missing(
    declared: Option<&ClientCapabilities>,
    request: &ServerRequest,
) -> Option<ClientCapabilities> {
    let empty = ClientCapabilities::default();
    let declared = declared.unwrap_or(&empty);
    let mut needed = ClientCapabilities::default();
    match request {
        ServerRequest::ElicitRequest(r) => {
            let have = declared.elicitation.as_ref();
            match &r.params {
                ElicitRequestParams::UrlElicitationParams { .. } => {
                    if have.is_some_and(|e| e.url.is_some()) {
                        return None;
                    }
                    needed.elicitation = Some(
                        ElicitationCapability::new().with_url(UrlElicitationCapability::new()),
                    );
                }
                _ => {
                    // An empty `elicitation: {}` (2025-06-18 clients) means form mode.
                    if have.is_some_and(|e| e.form.is_some() || e.url.is_none()) {
                        return None;
                    }
                    needed.elicitation = Some(
                        ElicitationCapability::new()
                            .with_form(FormElicitationCapability::default()),
                    );
                }
            }
        }
        ServerRequest::CreateMessageRequest(r) => {
            let wants_tools = r.params.tools.is_some() || r.params.tool_choice.is_some();
            match &declared.sampling {
                Some(s) if !wants_tools || s.tools.is_some() => return None,
                _ => {
                    let mut sampling = SamplingCapability::default();
                    if wants_tools {
                        sampling.tools = Some(JsonObject::new());
                    }
                    needed.sampling = Some(sampling);
                }
            }
        }
        ServerRequest::ListRootsRequest(_) => {
            if declared.roots.is_some() {
                return None;
            }
            needed.roots = Some(RootsCapabilities::default());
        }
        _ => return None,
    }
    Some(needed)
}

/// The error the upstream gets when the agent lacks `needed`.
pub fn refusal(needed: ClientCapabilities, method: &str) -> ErrorData {
    let mut e = ErrorData::missing_required_client_capability(needed);
    e.message = format!(
        "Missing required client capability: the agent whose call caused this {method} did not \
         declare it, so it cannot be asked"
    )
    .into();
    e
}

#[cfg(test)]
mod tests {
    use rmcp::model::{
        CreateMessageRequest, CreateMessageRequestParams, ElicitationSchema, ListRootsRequest,
        Request, SamplingMessage, Tool,
    };

    use super::*;

    fn form() -> ServerRequest {
        ServerRequest::ElicitRequest(Request::new(ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: "delete 3 files?".into(),
            requested_schema: ElicitationSchema::builder().build().expect("schema"),
        }))
    }

    fn url() -> ServerRequest {
        ServerRequest::ElicitRequest(Request::new(ElicitRequestParams::UrlElicitationParams {
            meta: None,
            message: "sign in".into(),
            url: "https://example.test/login".into(),
            elicitation_id: "e1".into(),
        }))
    }

    fn sampling(tools: bool) -> ServerRequest {
        let mut params =
            CreateMessageRequestParams::new(vec![SamplingMessage::user_text("hi")], 100);
        if tools {
            params.tools = Some(vec![Tool::new("t", "d", JsonObject::new())]);
        }
        ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params))
    }

    fn roots() -> ServerRequest {
        ServerRequest::ListRootsRequest(ListRootsRequest::default())
    }

    fn caps(v: serde_json::Value) -> ClientCapabilities {
        serde_json::from_value(v).expect("capabilities")
    }

    #[test]
    fn nothing_declared_needs_everything() {
        for r in [form(), url(), sampling(false), roots()] {
            assert!(missing(None, &r).is_some(), "{r:?}");
            assert!(missing(Some(&caps(serde_json::json!({}))), &r).is_some());
        }
    }

    #[test]
    fn an_empty_elicitation_capability_means_form_mode_only() {
        let c = caps(serde_json::json!({ "elicitation": {} }));
        assert_eq!(missing(Some(&c), &form()), None);
        let needed = missing(Some(&c), &url()).expect("url mode is not declared");
        assert!(needed.elicitation.expect("elicitation").url.is_some());
    }

    #[test]
    fn url_only_agents_are_not_asked_forms() {
        let c = caps(serde_json::json!({ "elicitation": { "url": {} } }));
        assert_eq!(missing(Some(&c), &url()), None);
        assert!(missing(Some(&c), &form()).is_some());
    }

    #[test]
    fn sampling_with_tools_needs_the_tools_capability() {
        let plain = caps(serde_json::json!({ "sampling": {} }));
        assert_eq!(missing(Some(&plain), &sampling(false)), None);
        let needed = missing(Some(&plain), &sampling(true)).expect("tools not declared");
        assert!(needed.sampling.expect("sampling").tools.is_some());
        let with_tools = caps(serde_json::json!({ "sampling": { "tools": {} } }));
        assert_eq!(missing(Some(&with_tools), &sampling(true)), None);
    }

    #[test]
    fn roots_need_roots() {
        let c = caps(serde_json::json!({ "roots": { "listChanged": true } }));
        assert_eq!(missing(Some(&c), &roots()), None);
    }

    #[test]
    fn the_refusal_is_the_protocols_code_with_the_capability_in_data() {
        let e = refusal(missing(None, &roots()).expect("needed"), "roots/list");
        assert_eq!(e.code.0, -32021);
        assert!(e.message.contains("did not declare"), "{}", e.message);
        assert!(e.data.expect("data")["requiredCapabilities"]["roots"].is_object());
    }
}
