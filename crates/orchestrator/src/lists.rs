//! The front's list and read answers beside their items: the cache hints of 2026-07-28
//! (`ttlMs`, `cacheScope`), combined from the orchestrator's own part and the upstreams' parts,
//! and the refusal of a list no upstream offers.
//!
//! A list's hint is what is left of its shortest upstream TTL, private if any upstream's part is
//! private, and never longer than [`CATALOG_TTL`]: the catalog changes as upstreams come and go,
//! which list-change notifications tell agents that listen, and this bound tells the others.

use std::time::Duration;

use rmcp::{
    ErrorData,
    model::{
        ListPromptsRequestMethod, ListPromptsResult, ListResourceTemplatesResult,
        ListResourcesResult, ListToolsResult, ReadResourceResult, Resource,
    },
};
use tokio::time::Instant;

use crate::{
    catalog::Catalog,
    hints::{CacheHint, Stated, aggregated},
};

/// How long the orchestrator's own part of a list stays fresh: composites, the built-in tool and
/// the status resource are fixed while it runs, but the upstreams' items around them are not.
pub const CATALOG_TTL: Duration = Duration::from_secs(60);

/// How long a read of `orchestrator://status` stays fresh: not at all. Its figures move with
/// every call, and an agent that reads it wants them as they are now; rmcp's client keeps any
/// answer with a positive TTL and would serve a second read from its copy. Private: it is
/// operators' data, not to be shared across authorization contexts.
pub const STATUS_TTL: Duration = Duration::ZERO;

/// The hint of a list with the orchestrator's own part and the upstreams' `parts`, now.
fn list_hint(parts: Option<Stated>) -> CacheHint {
    aggregated(CacheHint::public(CATALOG_TTL), parts, Instant::now())
}

/// `tools/list`: every exposed tool.
pub fn tools(catalog: &Catalog) -> ListToolsResult {
    let hint = list_hint(catalog.hints().tools);
    ListToolsResult::with_all_items(catalog.tools().to_vec())
        .with_ttl_ms(hint.ttl_ms())
        .with_cache_scope(hint.scope)
}

/// `resources/list`: the orchestrator's `own` resources, then the upstreams'.
pub fn resources(catalog: &Catalog, own: Vec<Resource>) -> ListResourcesResult {
    let hint = list_hint(catalog.hints().resources);
    let mut resources = own;
    resources.extend(catalog.resources().iter().cloned());
    ListResourcesResult::with_all_items(resources)
        .with_ttl_ms(hint.ttl_ms())
        .with_cache_scope(hint.scope)
}

/// `resources/templates/list`.
pub fn templates(catalog: &Catalog) -> ListResourceTemplatesResult {
    let hint = list_hint(catalog.hints().templates);
    ListResourceTemplatesResult::with_all_items(catalog.templates().to_vec())
        .with_ttl_ms(hint.ttl_ms())
        .with_cache_scope(hint.scope)
}

/// `prompts/list`, or `-32601` when no upstream offers prompts (the front does not advertise
/// them then, see [`crate::capabilities`]).
pub fn prompts(catalog: &Catalog) -> Result<ListPromptsResult, ErrorData> {
    if !catalog.offered().prompts {
        return Err(ErrorData::method_not_found::<ListPromptsRequestMethod>());
    }
    let hint = list_hint(catalog.hints().prompts);
    Ok(
        ListPromptsResult::with_all_items(catalog.prompts().to_vec())
            .with_ttl_ms(hint.ttl_ms())
            .with_cache_scope(hint.scope),
    )
}

/// A read of `orchestrator://status` with its hint.
pub fn status_read(result: ReadResourceResult) -> ReadResourceResult {
    let hint = CacheHint::private(STATUS_TTL);
    let mut result = result;
    result.ttl_ms = Some(hint.ttl_ms());
    result.cache_scope = Some(hint.scope);
    result
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use futures::FutureExt as _;
    use rmcp::model::{CacheScope, Prompt, ServerCapabilities, Tool};

    use super::*;
    use crate::{
        config::Config,
        hints::ListHints,
        stats::ServerStats,
        upstream::{Offer, Upstream, scripted::Scripted},
    };

    /// A catalog over one upstream per offer, named `s0`, `s1`, ...
    fn catalog_of(offers: Vec<Offer>) -> Catalog {
        let servers: serde_json::Map<String, serde_json::Value> = (0..offers.len())
            .map(|i| {
                (
                    format!("s{i}"),
                    serde_json::json!({ "command": "never-started" }),
                )
            })
            .collect();
        let text = serde_json::json!({ "mcpServers": servers }).to_string();
        let config = Config::parse(&text, Path::new("."), &|_| None).expect("valid config");
        let upstreams: Vec<Arc<Upstream>> = offers
            .into_iter()
            .zip(&config.servers)
            .map(|(offer, spec)| {
                let link = Arc::new(Scripted::new(offer, |_| futures::future::pending().boxed()));
                Arc::new(Upstream::new(
                    spec.clone(),
                    link,
                    Arc::new(ServerStats::default()),
                ))
            })
            .collect();
        Catalog::build(&config, &upstreams)
    }

    fn tool(name: &str) -> Tool {
        Tool::new(name.to_owned(), "t", Arc::new(serde_json::Map::new()))
    }

    fn with_tools_hint(hint: CacheHint) -> Offer {
        let mut offer = Offer::of_tools(vec![tool("a")]);
        offer.hints = ListHints {
            tools: Some(Stated::now(hint)),
            ..ListHints::default()
        };
        offer
    }

    #[tokio::test(start_paused = true)]
    async fn a_list_carries_the_smallest_upstream_ttl_left_and_private_if_any_part_is() {
        let catalog = catalog_of(vec![
            with_tools_hint(CacheHint::public(Duration::from_secs(30))),
            with_tools_hint(CacheHint::public(Duration::from_secs(20))),
        ]);
        tokio::time::advance(Duration::from_secs(5)).await;
        let listed = tools(&catalog);
        assert_eq!(listed.ttl_ms, Some(15_000));
        assert_eq!(listed.cache_scope, Some(CacheScope::Public));

        let catalog = catalog_of(vec![
            with_tools_hint(CacheHint::public(Duration::from_secs(30))),
            with_tools_hint(CacheHint::private(Duration::from_secs(3600))),
        ]);
        let listed = tools(&catalog);
        assert_eq!(listed.ttl_ms, Some(30_000));
        assert_eq!(listed.cache_scope, Some(CacheScope::Private));
    }

    #[tokio::test(start_paused = true)]
    async fn the_orchestrators_own_part_bounds_every_list() {
        let catalog = catalog_of(vec![with_tools_hint(CacheHint::public(
            Duration::from_secs(3600),
        ))]);
        let listed = tools(&catalog);
        assert_eq!(listed.ttl_ms, Some(CATALOG_TTL.as_millis() as u64));
        assert_eq!(listed.cache_scope, Some(CacheScope::Public));
        // The upstream offers no resources: only the status resource, with the own hint.
        let own = Resource::new("orchestrator://status", "status");
        let listed = resources(&catalog, vec![own]);
        assert_eq!(listed.resources.len(), 1);
        assert_eq!(listed.ttl_ms, Some(60_000));
        assert_eq!(listed.cache_scope, Some(CacheScope::Public));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_makes_its_lists_stale_and_private() {
        let catalog = catalog_of(vec![
            with_tools_hint(CacheHint::public(Duration::from_secs(30))),
            with_tools_hint(CacheHint::from_wire(None, None)),
        ]);
        let listed = tools(&catalog);
        assert_eq!(listed.ttl_ms, Some(0));
        assert_eq!(listed.cache_scope, Some(CacheScope::Private));
    }

    #[tokio::test(start_paused = true)]
    async fn prompts_are_listed_only_when_an_upstream_offers_them() {
        let catalog = catalog_of(vec![Offer::of_tools(vec![tool("a")])]);
        let refused = prompts(&catalog).expect_err("no upstream offers prompts");
        assert_eq!(refused.code, rmcp::model::ErrorCode::METHOD_NOT_FOUND);

        let mut offer = Offer::of_tools(vec![tool("a")]);
        offer.capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .build();
        offer.prompts = vec![Prompt::new("report", Some("A report"), None)];
        offer.hints.prompts = Some(Stated::now(CacheHint::public(Duration::from_secs(10))));
        let catalog = catalog_of(vec![offer]);
        let listed = prompts(&catalog).expect("an upstream offers prompts");
        assert_eq!(listed.prompts.len(), 1);
        assert_eq!(listed.prompts[0].name, "s0__report");
        assert_eq!(listed.ttl_ms, Some(10_000));
    }

    #[test]
    fn a_status_read_is_stale_at_once_and_private() {
        let read = status_read(ReadResourceResult::new(vec![]));
        assert_eq!(read.ttl_ms, Some(0));
        assert_eq!(read.cache_scope, Some(CacheScope::Private));
    }
}
