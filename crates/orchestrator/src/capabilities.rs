//! What the front advertises: the union of what the upstreams offer (the `ServerCapabilities`
//! each sent in its handshake) and what the orchestrator serves itself. Nothing is advertised
//! that would answer `-32601`, and nothing that is not advertised is served: rmcp's own default
//! handlers refuse an unadvertised list with `-32601`, but the front overrides them all, so it
//! checks here instead (and rmcp narrows a 2026-07-28 `subscriptions/listen` filter to what is
//! advertised, so list-change subscriptions follow the same union).
//!
//! The orchestrator's own part, whatever the upstreams offer:
//! - `tools` (+ `listChanged`): `tools/list` always holds the built-in
//!   `orchestrator__invalidate_cache`, and the catalog changes as upstreams come and go;
//! - `resources` (+ `listChanged`): `orchestrator://status` is always listed and readable;
//! - `logging`: `logging/setLevel` is answered here, and upstream log messages are relayed.
//!
//! From the upstreams: `prompts` (+ `listChanged`, relayed as the catalog changes) when one
//! offers prompts, `completions` when one offers completions, `resources.subscribe` when one
//! offers subscriptions, the tasks extension when one offers it ([`crate::tasks`]). A server
//! keeps its part while it is away, as its tools stay listed.

use rmcp::model::{JsonObject, ServerCapabilities, TASKS_EXTENSION_ID};

/// What the upstreams offer between them, beyond what the orchestrator always serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    /// Some upstream offers prompts: `prompts/list` and `prompts/get` are served.
    pub prompts: bool,
    /// Some upstream offers completions: `completion/complete` is served.
    pub completions: bool,
    /// Some upstream offers resource subscriptions: `resources/subscribe` and `unsubscribe`
    /// are served.
    pub subscribe: bool,
    /// Some upstream offers the tasks extension: `tasks/get`, `tasks/update`, `tasks/cancel`
    /// are served.
    pub tasks: bool,
}

impl Offered {
    /// The union of what each upstream advertised.
    pub fn union<'a>(upstreams: impl IntoIterator<Item = &'a ServerCapabilities>) -> Self {
        upstreams
            .into_iter()
            .fold(Self::default(), |acc, caps| Self {
                prompts: acc.prompts || caps.prompts.is_some(),
                completions: acc.completions || caps.completions.is_some(),
                subscribe: acc.subscribe || subscribes(caps),
                tasks: acc.tasks || caps.supports_tasks(),
            })
    }

    /// The capabilities the front advertises: its own part and the upstreams' union.
    // Logging is deprecated from 2026-07-28 on; 2025-11-25 agents still use setLevel.
    #[allow(deprecated)]
    pub fn advertised(self) -> ServerCapabilities {
        let mut caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_logging()
            .enable_completions()
            .build();
        if !self.prompts {
            caps.prompts = None;
        }
        if !self.completions {
            caps.completions = None;
        }
        if !self.subscribe
            && let Some(resources) = &mut caps.resources
        {
            resources.subscribe = None;
        }
        if self.tasks {
            caps.extensions
                .get_or_insert_default()
                .insert(TASKS_EXTENSION_ID.to_owned(), JsonObject::new());
        }
        caps
    }
}

/// Whether a server advertised resource subscriptions.
pub fn subscribes(caps: &ServerCapabilities) -> bool {
    caps.resources
        .as_ref()
        .is_some_and(|r| r.subscribe == Some(true))
}

/// Whether a server advertised completions.
pub fn completes(caps: &ServerCapabilities) -> bool {
    caps.completions.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(caps: &ServerCapabilities) -> serde_json::Value {
        serde_json::to_value(caps).expect("capabilities serialize")
    }

    #[test]
    fn with_no_upstream_the_orchestrator_advertises_only_what_it_serves_itself() {
        let caps = Offered::union([]).advertised();
        assert_eq!(
            json(&caps),
            serde_json::json!({
                "logging": {},
                "resources": { "listChanged": true },
                "tools": { "listChanged": true }
            })
        );
    }

    #[test]
    fn tools_only_upstreams_add_nothing() {
        let tools = ServerCapabilities::builder().enable_tools().build();
        let with_resources = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_list_changed()
            .build();
        let offered = Offered::union([&tools, &with_resources]);
        assert_eq!(offered, Offered::default());
        assert_eq!(offered.advertised(), Offered::default().advertised());
    }

    #[test]
    fn each_upstream_capability_joins_the_union() {
        let prompts = ServerCapabilities::builder().enable_prompts().build();
        let completions = ServerCapabilities::builder().enable_completions().build();
        let subscribe = ServerCapabilities::builder()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        let offered = Offered::union([&prompts, &completions, &subscribe]);
        assert_eq!(
            offered,
            Offered {
                prompts: true,
                completions: true,
                subscribe: true,
                tasks: false
            }
        );
        assert_eq!(
            json(&offered.advertised()),
            serde_json::json!({
                "completions": {},
                "logging": {},
                // Relayed as the catalog changes, whether or not the upstream says it notifies.
                "prompts": { "listChanged": true },
                "resources": { "listChanged": true, "subscribe": true },
                "tools": { "listChanged": true }
            })
        );
        // One at a time: each brings its own part and nothing else.
        assert_eq!(
            Offered::union([&prompts]),
            Offered {
                prompts: true,
                ..Offered::default()
            }
        );
        assert_eq!(
            Offered::union([&completions]),
            Offered {
                completions: true,
                ..Offered::default()
            }
        );
        assert_eq!(
            Offered::union([&subscribe]),
            Offered {
                subscribe: true,
                ..Offered::default()
            }
        );
    }

    #[test]
    fn what_the_orchestrator_cannot_relay_is_not_advertised() {
        let mut exotic = ServerCapabilities::builder()
            .enable_tools()
            .enable_experimental()
            .build();
        exotic.extensions = Some(
            [("io.example/unknown".to_owned(), serde_json::Map::new())]
                .into_iter()
                .collect(),
        );
        let caps = Offered::union([&exotic]).advertised();
        assert!(caps.experimental.is_none());
        assert!(caps.extensions.is_none());
    }

    #[test]
    fn the_tasks_extension_is_advertised_when_an_upstream_offers_it() {
        let plain = ServerCapabilities::builder().enable_tools().build();
        let tasks = ServerCapabilities::builder()
            .enable_tools()
            .enable_tasks()
            .build();
        assert!(!Offered::union([&plain]).advertised().supports_tasks());
        let both = Offered::union([&plain, &tasks]);
        assert!(both.tasks);
        assert!(both.advertised().supports_tasks());
    }
}
