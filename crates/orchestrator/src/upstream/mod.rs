//! One upstream MCP server: its configuration, its call figures, its policy stack, and the
//! [`Link`] its requests travel on.
//!
//! The link is a trait so the call path above it can be tested against a scripted fake (see
//! [`scripted`]) as well as run against the real thing ([`supervisor::Supervised`]: a child
//! process or an HTTP endpoint, connected, listed, and reconnected with backoff).

pub mod child;
pub mod client;
pub mod connect;
mod decode;
pub mod http;
pub mod listen;
#[cfg(test)]
pub mod scripted;
pub mod supervisor;

pub(crate) use decode::want_raw;

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rmcp::model::{
    ClientRequest, Prompt, Resource, ResourceTemplate, ServerCapabilities, ServerResult, Tool,
};
use tokio::sync::watch;

pub use crate::context::CallContext;
use crate::{
    config::ServerSpec, error::CallError, hints::ListHints, policy::PolicyStack, relay::Relay,
    stats::ServerStats,
};

/// What an upstream offered when last listed.
#[derive(Debug, Clone, Default)]
pub struct Offer {
    /// Its tools, as it described them.
    pub tools: Vec<Tool>,
    /// Its resources.
    pub resources: Vec<Resource>,
    /// Its resource templates.
    pub templates: Vec<ResourceTemplate>,
    /// Its prompts.
    pub prompts: Vec<Prompt>,
    /// Each tool's input schema, compiled once per listing: arguments are checked against it
    /// before a call leaves the orchestrator. A tool whose schema does not compile has none.
    pub validators: HashMap<String, Arc<jsonschema::Validator>>,
    /// What it advertised in its handshake: the front advertises the union
    /// ([`crate::capabilities`]), and requests it did not advertise are never sent to it.
    pub capabilities: ServerCapabilities,
    /// How long each of its lists stays fresh, as it said when listed ([`crate::hints`]).
    pub hints: ListHints,
}

impl Offer {
    /// An offer of `tools` (and the tools capability), with their input schemas compiled.
    pub fn of_tools(tools: Vec<Tool>) -> Self {
        let validators = compile_validators(&tools);
        Self {
            tools,
            validators,
            capabilities: ServerCapabilities::builder().enable_tools().build(),
            ..Self::default()
        }
    }
}

/// Each tool's input schema compiled; a schema that does not compile is logged and skipped.
pub fn compile_validators(tools: &[Tool]) -> HashMap<String, Arc<jsonschema::Validator>> {
    tools
        .iter()
        .filter_map(|tool| {
            let schema = serde_json::Value::Object((*tool.input_schema).clone());
            match jsonschema::validator_for(&schema) {
                Ok(v) => Some((tool.name.to_string(), Arc::new(v))),
                Err(e) => {
                    tracing::warn!(tool = %tool.name, error = %e, "input schema does not compile; arguments pass unchecked");
                    None
                }
            }
        })
        .collect()
}

/// What the call path needs of a connection: what the server offers, whether it is up, and one
/// request on the wire (one attempt, no policy: the caller's policy stack wraps it).
pub trait Link: Send + Sync + std::fmt::Debug {
    /// The live listing, or while disconnected the last one (empty if it never connected).
    fn offer(&self) -> Arc<Offer>;
    /// Whether it is connected, and since when.
    fn connected_since(&self) -> Option<DateTime<Utc>>;
    /// The protocol version the connection speaks, while connected.
    fn protocol(&self) -> Option<String> {
        None
    }
    /// Sends `request` with the context's `_meta`, progress relay and cancellation.
    fn send<'a>(
        &'a self,
        request: ClientRequest,
        cx: &'a CallContext,
    ) -> BoxFuture<'a, Result<ServerResult, CallError>>;
}

/// One upstream server.
#[derive(Debug)]
pub struct Upstream {
    spec: ServerSpec,
    stats: Arc<ServerStats>,
    policy: PolicyStack,
    link: Arc<dyn Link>,
}

impl Upstream {
    /// An upstream reached over `link`, with `stats` shared with the link (a link records why
    /// it could not connect).
    pub fn new(spec: ServerSpec, link: Arc<dyn Link>, stats: Arc<ServerStats>) -> Self {
        Self {
            policy: PolicyStack::new(&spec.name, spec.policy.clone()),
            spec,
            stats,
            link,
        }
    }

    /// An upstream over a real connection, and its supervisor (to run until shutdown). Its
    /// errors are kept and logged with `secrets` masked. The supervisor tells the server's
    /// breaker when the connection is lost (it opens at once) and when it is back (a probe may go
    /// at once).
    pub fn supervised(
        spec: ServerSpec,
        relay: Arc<Relay>,
        changed: watch::Sender<u64>,
        secrets: Vec<String>,
    ) -> (Self, Arc<supervisor::Supervised>) {
        let stats = Arc::new(ServerStats::default());
        let policy = PolicyStack::new(&spec.name, spec.policy.clone());
        let link = Arc::new(supervisor::Supervised::new(
            spec.clone(),
            stats.clone(),
            policy.breaker().clone(),
            relay,
            changed,
            secrets,
        ));
        let upstream = Self {
            spec,
            stats,
            policy,
            link: link.clone(),
        };
        (upstream, link)
    }

    /// Whether its tool results can be relayed raw: a stdio server (its lines are read by
    /// [`decode`]) whose `toolResults` is `raw`.
    pub fn relays_raw(&self) -> bool {
        let spec = self.spec();
        spec.tool_results == crate::config::ToolResults::Raw
            && matches!(spec.transport, crate::config::Transport::Stdio { .. })
    }

    /// Its configuration.
    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// Its call figures.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Timeouts, retry, breaker and bulkhead: every request to it goes through this.
    pub fn policy(&self) -> &PolicyStack {
        &self.policy
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What it offers: the live listing, or while disconnected the last one.
    pub fn offer(&self) -> Arc<Offer> {
        self.link.offer()
    }

    /// Whether it is connected, and since when.
    pub fn connected_since(&self) -> Option<DateTime<Utc>> {
        self.link.connected_since()
    }

    /// The protocol version its connection speaks, while connected.
    pub fn protocol(&self) -> Option<String> {
        self.link.protocol()
    }

    /// One request on the wire: one attempt, no policy. Only the call path sends, inside the
    /// server's policy stack.
    pub(crate) fn send<'a>(
        &'a self,
        request: ClientRequest,
        cx: &'a CallContext,
    ) -> BoxFuture<'a, Result<ServerResult, CallError>> {
        self.link.send(request, cx)
    }
}
