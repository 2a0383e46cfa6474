//! The call path against a scripted upstream: no process, no socket, paused time.

use std::{path::Path, sync::Arc, time::Duration};

use futures::FutureExt as _;
use rmcp::model::{CallToolResult, ClientRequest, GetPromptRequestParams, ServerResult, Tool};
use serde_json::{Value, json};

use super::{Calls, Composites, UpstreamCalls};
use crate::{
    cache::ResultCache,
    catalog::{Catalog, Route},
    config::Config,
    context::CallContext,
    error::CallError,
    metrics::Metrics,
    policy::breaker::BreakerState,
    stats::ServerStats,
    upstream::{Offer, Upstream, scripted::Scripted},
};

/// One server `s` answered by `script`, offering the read-only tool `get`, with `policy` as its
/// `orchestrator.servers.s` section, and a composite `both` whose one critical step calls
/// `s.get`.
struct Fixture {
    calls: Calls,
    catalog: Catalog,
    link: Arc<Scripted>,
    upstream: Arc<Upstream>,
}

fn fixture(
    policy: Value,
    script: impl Fn(
        &ClientRequest,
    ) -> futures::future::BoxFuture<'static, Result<ServerResult, CallError>>
    + Send
    + Sync
    + 'static,
) -> Fixture {
    let text = json!({
        "mcpServers": { "s": { "command": "never-started" } },
        "orchestrator": {
            "servers": { "s": policy },
            "composites": {
                "both": {
                    "description": "one critical step",
                    "input": { "type": "object" },
                    "steps": { "only": { "call": "s.get", "args": {}, "critical": true } },
                    "output": { "only": "${only}" }
                }
            }
        }
    })
    .to_string();
    let config = Arc::new(Config::parse(&text, Path::new("."), &|_| None).expect("valid config"));
    let mut tool = Tool::new("get", "reads", Arc::new(serde_json::Map::new()));
    let mut annotations = rmcp::model::ToolAnnotations::new();
    annotations.read_only_hint = Some(true);
    tool.annotations = Some(annotations);
    let link = Arc::new(Scripted::new(Offer::of_tools(vec![tool]), script));
    let upstream = Arc::new(Upstream::new(
        config.servers[0].clone(),
        link.clone(),
        Arc::new(ServerStats::default()),
    ));
    let metrics = Arc::new(Metrics::new());
    let cache = Arc::new(ResultCache::new(config.cache.settings.clone()));
    let catalog = Catalog::build(&config, std::slice::from_ref(&upstream));
    let upstream_calls = Arc::new(UpstreamCalls::new(
        vec![upstream.clone()],
        config.clone(),
        cache,
        metrics.clone(),
    ));
    let composites = Composites::new(config, upstream_calls.clone(), metrics);
    Fixture {
        calls: Calls::new(upstream_calls, composites),
        catalog,
        link,
        upstream,
    }
}

fn never_answers(
    _: &ClientRequest,
) -> futures::future::BoxFuture<'static, Result<ServerResult, CallError>> {
    futures::future::pending().boxed()
}

fn connection_lost(
    _: &ClientRequest,
) -> futures::future::BoxFuture<'static, Result<ServerResult, CallError>> {
    async {
        Err(CallError::ConnectionLost {
            server: "s".into(),
            detail: "reset".into(),
        })
    }
    .boxed()
}

impl Fixture {
    async fn call(&self, name: &str) -> Result<CallToolResult, CallError> {
        let route = self.catalog.route(name).expect("a listed tool");
        self.calls
            .call_tool(&self.catalog, route, name, None, &CallContext::default())
            .await
            .0
    }
}

#[tokio::test(start_paused = true)]
async fn a_resource_read_that_never_answers_ends_at_the_attempt_timeout_and_counts_towards_the_breaker()
 {
    let f = fixture(
        json!({
            "timeoutMs": 200,
            "retry": { "maxAttempts": 1 },
            "circuitBreaker": { "consecutiveFailures": 1, "openMs": 60000 }
        }),
        never_answers,
    );
    let outcome = f
        .calls
        .upstream()
        .read_resource(0, "file:///a", &CallContext::default())
        .await;
    match outcome {
        Err(CallError::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("expected the attempt timeout, got {other:?}"),
    }
    assert_eq!(f.link.received(), ["resources/read"]);
    assert_eq!(
        f.upstream.policy().breaker().state(),
        BreakerState::Open,
        "the timeout counted as the server's failure"
    );
    let stats = f.upstream.stats().snapshot();
    assert_eq!((stats.calls, stats.errors), (1, 1), "counted in status");
    assert_eq!(f.upstream.policy().snapshot().timeouts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_prompt_get_to_a_server_whose_breaker_is_open_fails_fast_without_reaching_it() {
    let f = fixture(
        json!({
            "retry": { "maxAttempts": 1 },
            "circuitBreaker": { "consecutiveFailures": 1, "openMs": 60000 }
        }),
        connection_lost,
    );
    let cx = CallContext::default();
    let get = || {
        f.calls
            .upstream()
            .get_prompt(0, GetPromptRequestParams::new("greet"), "greet", &cx)
    };
    assert!(matches!(get().await, Err(CallError::ConnectionLost { .. })));
    let started = tokio::time::Instant::now();
    let refused = get().await;
    assert!(
        matches!(refused, Err(CallError::CircuitOpen(_))),
        "{refused:?}"
    );
    assert_eq!(started.elapsed(), Duration::ZERO, "no wait, no attempt");
    assert_eq!(f.link.received(), ["prompts/get"], "the second never left");
}

/// The tool error an outcome is for the agent, read back.
fn agent_error(outcome: Result<CallToolResult, CallError>) -> kit::ToolError {
    let result = match outcome {
        Ok(result) => result,
        Err(e) => e
            .into_tool_answer()
            .expect("a tool error, not a JSON-RPC error"),
    };
    kit::ToolError::from_call_tool_result(&result).expect("an error result")
}

async fn same_answer_both_ways(
    policy: Value,
    script: fn(
        &ClientRequest,
    ) -> futures::future::BoxFuture<'static, Result<ServerResult, CallError>>,
) {
    let direct = agent_error(fixture(policy.clone(), script).call("s__get").await);
    let composite = agent_error(fixture(policy, script).call("both").await);
    assert_eq!(composite.kind, direct.kind);
    assert_eq!(composite.retryable, direct.retryable);
    assert_eq!(composite.retry_after_ms, direct.retry_after_ms);
    for key in ["reason", "server"] {
        assert_eq!(
            composite.extra_meta.get(key),
            direct.extra_meta.get(key),
            "_meta.{key}"
        );
    }
    assert!(
        composite.message.contains(&direct.message),
        "the composite's message names the step's: {:?} in {:?}",
        direct.message,
        composite.message
    );
    assert_eq!(composite.extra_meta.get("failedStep"), Some(&json!("only")));
}

#[tokio::test(start_paused = true)]
async fn an_upstream_timeout_reads_the_same_through_a_pass_through_call_and_a_composite_step() {
    same_answer_both_ways(
        json!({ "timeoutMs": 100, "retry": { "maxAttempts": 1 } }),
        never_answers,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_upstream_tool_error_reads_the_same_through_a_pass_through_call_and_a_composite_step() {
    same_answer_both_ways(json!({ "retry": { "maxAttempts": 1 } }), |_| {
        async {
            Ok(ServerResult::CallToolResult(
                kit::ToolError::throttled("over the RU budget", 750).to_call_tool_result(),
            ))
        }
        .boxed()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_reads_the_same_through_a_pass_through_call_and_a_composite_step() {
    // `consecutiveFailures: 1`: the first attempt's loss opens it, the call ends refused. No
    // jitter, so both calls wait the same 1 ms and get the same retry hint.
    same_answer_both_ways(
        json!({
            "retry": { "maxAttempts": 2, "baseDelayMs": 1, "jitter": "none" },
            "circuitBreaker": { "consecutiveFailures": 1, "openMs": 60000 }
        }),
        connection_lost,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_tool_call_routes_to_the_upstream_and_a_composite_calls_down_through_the_same_path() {
    let f = fixture(json!({}), |_| {
        async {
            Ok(ServerResult::CallToolResult(CallToolResult::structured(
                json!({ "n": 1 }),
            )))
        }
        .boxed()
    });
    assert!(matches!(f.catalog.route("s__get"), Ok(Route::Upstream(_))));
    assert!(matches!(f.catalog.route("both"), Ok(Route::Composite(0))));
    let direct = f.call("s__get").await.expect("an answer");
    assert_eq!(direct.structured_content, Some(json!({ "n": 1 })));
    let composite = f.call("both").await.expect("an answer");
    assert_eq!(
        composite.structured_content,
        Some(json!({ "only": { "n": 1 } }))
    );
    assert_eq!(f.link.received(), ["tools/call", "tools/call"]);
    assert_eq!(f.upstream.stats().snapshot().calls, 2, "both counted");
    assert!(matches!(
        f.catalog.route("nope"),
        Err(CallError::Unknown { .. })
    ));
}
