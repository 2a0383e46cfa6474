//! The agent's side of the session with the orchestrator: it declares form elicitation, and it
//! answers every form elicitation as a user who accepts the form as shown, with each field's
//! default filled in (SEP-1034: a client shows the schema's defaults and sends them back).

use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
        ElicitationCapability, FormElicitationCapability, Implementation, ProtocolVersion,
    },
    service::RequestContext,
};
use serde_json::{Map, Value};

/// The agent's handler.
#[derive(Debug, Clone)]
pub struct Agent;

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation =
            Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()));
        // 2025-11-25: the era in which the orchestrator asks on the open session.
        ClientConfig::new(
            capabilities,
            Implementation::new("mcp-conformance-agent", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        match request {
            ElicitRequestParams::FormElicitationParams {
                message,
                requested_schema,
                ..
            } => {
                let schema = serde_json::to_value(&requested_schema)
                    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                let content = Value::Object(defaults_of(&schema));
                eprintln!("mcp-conformance-agent: elicitation {message:?}: accepting {content}");
                Ok(ElicitResult::new(ElicitationAction::Accept).with_content(content))
            }
            // The agent declared form elicitation only; a URL one is not its to follow.
            _ => Ok(ElicitResult::new(ElicitationAction::Decline)),
        }
    }
}

/// Each property of a form schema that has a `default`, with that default.
fn defaults_of(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, property)| Some((name.clone(), property.get("default")?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use rmcp::{
        ServerHandler, ServiceExt,
        model::{ClientResult, ElicitRequest, ServerRequest},
    };
    use serde_json::json;

    use super::*;

    /// A server that only asks.
    #[derive(Debug, Clone)]
    struct Asker;

    impl ServerHandler for Asker {}

    /// The suite's `elicitation-sep1034-client-defaults` request as its server sends it (no
    /// `mode`: a 2025-06-18 form), plus a field without a default, asked of the agent over a
    /// real session: the agent must have declared form elicitation, and must accept with every
    /// default, typed as the schema says, and nothing for the field without one.
    #[tokio::test]
    async fn the_agent_declares_form_elicitation_and_accepts_with_every_default() {
        let (server_io, agent_io) = tokio::io::duplex(64 * 1024);
        let (server, agent) = tokio::join!(Asker.serve(server_io), Agent.serve(agent_io));
        let (server, _agent) = (server.expect("server side"), agent.expect("agent side"));
        let declared = server
            .peer()
            .peer_info()
            .and_then(|info| info.capabilities.elicitation.clone())
            .and_then(|elicitation| elicitation.form);
        assert!(declared.is_some(), "form elicitation declared");

        let request: ElicitRequestParams = serde_json::from_value(json!({
            "message": "Test client default value handling - please accept with defaults",
            "requestedSchema": {
                "type": "object",
                "properties": {
                    "name": { "type": "string", "description": "User name", "default": "John Doe" },
                    "age": { "type": "integer", "description": "User age", "default": 30 },
                    "score": { "type": "number", "description": "User score", "default": 95.5 },
                    "status": {
                        "type": "string", "description": "User status",
                        "enum": ["active", "inactive", "pending"], "default": "active"
                    },
                    "verified": { "type": "boolean", "description": "Verified", "default": true },
                    "nickname": { "type": "string" }
                },
                "required": []
            }
        }))
        .expect("the suite's request is a valid elicitation");
        // `Peer::create_elicitation` needs rmcp's `elicitation` feature; the request is the same.
        let answer = server
            .peer()
            .send_request(ServerRequest::ElicitRequest(ElicitRequest::new(request)))
            .await
            .expect("answered");
        let ClientResult::ElicitResult(answer) = answer else {
            panic!("not an elicitation result: {answer:?}");
        };
        assert_eq!(answer.action, ElicitationAction::Accept);
        assert_eq!(
            answer.content,
            Some(json!({
                "name": "John Doe", "age": 30, "score": 95.5, "status": "active", "verified": true
            }))
        );
    }
}
