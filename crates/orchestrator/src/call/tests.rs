//! The call path against a scripted upstream: no process, no socket, paused time.

use std::{path::Path, sync::Arc, time::Duration};

use futures::FutureExt as _;
use rmcp::model::{CallToolResult, ClientRequest, GetPromptRequestParams, ServerResult, Tool};
use serde_json::{Value, json};

use super::{Calls, Composites, ReadFrom, UpstreamCalls};
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
    fixture_cached(policy, json!({}), script)
}

/// [`fixture`] with `cache` as the `orchestrator.cache` section.
fn fixture_cached(
    policy: Value,
    cache: Value,
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
            "cache": cache,
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
        .read_resource(0, "file:///a", ReadFrom::Upstream, &CallContext::default())
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

/// A script answering every read with `file:///a` and the hint `ttl_ms`, `scope`.
fn reads_with_hint(
    ttl_ms: Option<u64>,
    scope: Option<rmcp::model::CacheScope>,
) -> impl Fn(&ClientRequest) -> futures::future::BoxFuture<'static, Result<ServerResult, CallError>>
+ Send
+ Sync
+ 'static {
    move |_| {
        let mut read =
            rmcp::model::ReadResourceResult::new(vec![rmcp::model::ResourceContents::text(
                "contents",
                "file:///a",
            )]);
        read.ttl_ms = ttl_ms;
        read.cache_scope = scope;
        async move { Ok(ServerResult::ReadResourceResult(read)) }.boxed()
    }
}

/// Reads `file:///a` twice from `f`'s upstream, `from` where it may; returns the second answer.
async fn read_twice(f: &Fixture, from: ReadFrom) -> rmcp::model::ReadResourceResult {
    let cx = CallContext::default();
    let calls = f.calls.upstream();
    calls
        .read_resource(0, "file:///a", from, &cx)
        .await
        .expect("first read");
    calls
        .read_resource(0, "file:///a", from, &cx)
        .await
        .expect("second read")
}

#[tokio::test]
async fn a_read_the_upstream_marks_public_and_fresh_is_served_from_the_cache() {
    let public = Some(rmcp::model::CacheScope::Public);
    let f = fixture(json!({}), reads_with_hint(Some(60_000), public));
    let second = read_twice(&f, ReadFrom::CacheOrUpstream).await;
    assert_eq!(f.link.received(), ["resources/read"], "one read reached it");
    let cached = second.meta.as_ref().and_then(|m| m.get("cached"));
    assert_eq!(cached, Some(&Value::Bool(true)));
    let left = second.ttl_ms.expect("a hint");
    assert!(left > 0 && left <= 60_000, "{left} ms left");
    assert_eq!(second.cache_scope, public);
    // The operator's tool reaches stored reads as a server's `resources/read` entries.
    f.calls
        .upstream()
        .cache()
        .invalidate_server_tool("s", "resources/read")
        .await;
    read_twice(&f, ReadFrom::CacheOrUpstream).await;
    assert_eq!(
        f.link.received().len(),
        2,
        "read again after the invalidation"
    );
}

#[tokio::test]
async fn a_read_is_not_kept_when_the_upstream_says_no_or_an_agent_is_subscribed() {
    use rmcp::model::CacheScope::{Private, Public};
    for (hint, from) in [
        ((Some(0), Some(Public)), ReadFrom::CacheOrUpstream),
        ((Some(60_000), Some(Private)), ReadFrom::CacheOrUpstream),
        ((None, None), ReadFrom::CacheOrUpstream),
        ((Some(60_000), Some(Public)), ReadFrom::Upstream),
    ] {
        let f = fixture(json!({}), reads_with_hint(hint.0, hint.1));
        let second = read_twice(&f, from).await;
        assert_eq!(
            f.link.received(),
            ["resources/read", "resources/read"],
            "{hint:?} {from:?}: both reads reached it"
        );
        assert!(second.meta.is_none(), "not marked cached");
        // The upstream's own hint passes through untouched.
        assert_eq!((second.ttl_ms, second.cache_scope), hint);
    }
}

#[tokio::test]
async fn forgetting_a_resources_reads_sends_the_next_read_upstream() {
    let public = Some(rmcp::model::CacheScope::Public);
    let f = fixture(json!({}), reads_with_hint(Some(60_000), public));
    read_twice(&f, ReadFrom::CacheOrUpstream).await;
    f.calls.upstream().forget_reads(0, "file:///b").await;
    read_twice(&f, ReadFrom::CacheOrUpstream).await;
    assert_eq!(f.link.received().len(), 1, "another URI's reads stay");
    f.calls.upstream().forget_reads(0, "file:///a").await;
    read_twice(&f, ReadFrom::CacheOrUpstream).await;
    assert_eq!(f.link.received().len(), 2);
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

/// Callers that share one load made one request: the server's figures count it once, not once
/// per caller (they would tell an operator the server was asked ten times).
#[tokio::test]
async fn callers_sharing_a_cached_load_count_as_one_upstream_call() {
    let f = fixture_cached(json!({}), json!({ "tools": { "s.get": "short" } }), |_| {
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(ServerResult::CallToolResult(CallToolResult::structured(
                json!({ "n": 1 }),
            )))
        }
        .boxed()
    });
    let answers = futures::future::join_all((0..10).map(|_| f.call("s__get"))).await;
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
    assert_eq!(
        f.link.received(),
        ["tools/call"],
        "one load for ten callers"
    );
    assert_eq!(f.upstream.stats().snapshot().calls, 1, "counted once");
    f.call("s__get").await.expect("a hit");
    assert_eq!(
        f.upstream.stats().snapshot().calls,
        1,
        "a hit is not an upstream call"
    );
}

/// A script that answers after `latency`, failing (an `unavailable` tool error, as the bundled
/// servers' injected faults are) with probability `share`, from a fixed seed.
fn flaky(
    share: f64,
    latency: Duration,
) -> impl Fn(&ClientRequest) -> futures::future::BoxFuture<'static, Result<ServerResult, CallError>>
+ Send
+ Sync
+ 'static {
    use rand::{Rng as _, SeedableRng as _};
    let rng = std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(7));
    move |_| {
        let fail = rng.lock().expect("rng").random_bool(share);
        async move {
            tokio::time::sleep(latency).await;
            let result = if fail {
                kit::ToolError::unavailable("injected failure").to_call_tool_result()
            } else {
                CallToolResult::structured(json!({ "ok": true }))
            };
            Ok(ServerResult::CallToolResult(result))
        }
        .boxed()
    }
}

/// Makes `calls` calls of `s.get`, `in_flight` at a time; returns how many succeeded.
async fn load(f: &Fixture, calls: usize, in_flight: usize) -> usize {
    use futures::StreamExt as _;
    let cx = CallContext::default();
    futures::stream::iter(0..calls)
        .map(|_| f.calls.upstream().call_tool(0, "get", None, None, &cx))
        .buffer_unordered(in_flight)
        .filter(|call| {
            std::future::ready(
                call.outcome
                    .as_ref()
                    .is_ok_and(|r| r.is_error != Some(true)),
            )
        })
        .count()
        .await
}

#[tokio::test(start_paused = true)]
async fn a_fifth_of_calls_failing_at_random_at_64_in_flight_leaves_the_breaker_closed() {
    // The default breaker and retries; a budget that covers a 20% failure rate.
    let f = fixture(
        json!({ "retry": { "budgetRatio": 1.0 } }),
        flaky(0.2, Duration::from_millis(5)),
    );
    let succeeded = load(&f, 4_000, 64).await;
    let breaker = f.upstream.policy().breaker().snapshot();
    assert_eq!(breaker.opens, 0, "{breaker:?}");
    // Three attempts leave 0.2^3 = 0.8% failed.
    assert!(succeeded >= 3_940, "{succeeded} of 4000 succeeded");
}

#[tokio::test(start_paused = true)]
async fn a_server_answering_every_call_with_an_error_opens_the_breaker_by_min_calls() {
    let f = fixture(
        json!({ "retry": { "maxAttempts": 1 } }),
        flaky(1.0, Duration::from_millis(5)),
    );
    // Default `minCalls` 20 and `failureRate` 0.5: the 20th failed call opens it.
    for n in 1..=20 {
        assert_eq!(
            f.upstream.policy().breaker().state(),
            BreakerState::Closed,
            "call {n}"
        );
        let _ = f.call("s__get").await;
    }
    assert_eq!(f.upstream.policy().breaker().state(), BreakerState::Open);
    assert!(matches!(
        f.call("s__get").await,
        Err(CallError::CircuitOpen(_))
    ));
    assert_eq!(f.link.received().len(), 20);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_server_opens_the_breaker_after_consecutive_failures_calls() {
    let f = fixture(
        json!({ "retry": { "maxAttempts": 3, "baseDelayMs": 1 } }),
        connection_lost,
    );
    // Default `consecutiveFailures` 5, each call counted once however many attempts it made.
    for _ in 0..5 {
        let _ = f.call("s__get").await;
    }
    assert_eq!(f.upstream.policy().breaker().state(), BreakerState::Open);
    assert_eq!(f.link.received().len(), 15, "three attempts per call");
}

#[tokio::test(start_paused = true)]
async fn a_killed_connection_opens_the_breaker_and_calls_fail_fast_without_reaching_it() {
    // A server that would hang every call: without the supervisor's word each call would wait out
    // its 5 s attempt timeout.
    let f = fixture(json!({}), never_answers);
    f.link.watched_by(f.upstream.policy().breaker().clone());
    f.link.lose_connection();
    assert_eq!(f.upstream.policy().breaker().state(), BreakerState::Open);
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        let refused = f.call("s__get").await;
        assert!(
            matches!(refused, Err(CallError::CircuitOpen(_))),
            "{refused:?}"
        );
    }
    assert_eq!(started.elapsed(), Duration::ZERO, "no call waited");
    assert!(f.link.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_half_opens_the_breaker_at_once_and_the_first_success_closes_it() {
    let f = fixture(
        json!({ "circuitBreaker": { "openMs": 60000, "minOpenMs": 60000 } }),
        flaky(0.0, Duration::from_millis(1)),
    );
    let breaker = f.upstream.policy().breaker().clone();
    f.link.watched_by(breaker.clone());
    f.link.lose_connection();
    assert!(matches!(
        f.call("s__get").await,
        Err(CallError::CircuitOpen(_))
    ));
    let started = tokio::time::Instant::now();
    f.link.restore_connection();
    assert_eq!(
        breaker.state(),
        BreakerState::HalfOpen,
        "not after 60 s: now"
    );
    let probe = f.call("s__get").await.expect("the probe's answer");
    assert_eq!(probe.is_error, Some(false));
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(started.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_hint_holds_every_caller_and_refuses_one_whose_deadline_ends_first() {
    // The first request is throttled with a 500 ms hint; later ones succeed. Each request notes
    // when it reached the server.
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let f = fixture(
        json!({ "retry": { "maxAttempts": 1 }, "deadlineMs": 2000 }),
        move |_| {
            let mut seen = seen.lock().expect("lock");
            seen.push(tokio::time::Instant::now());
            let first = seen.len() == 1;
            async move {
                let result = if first {
                    kit::ToolError::throttled("over the RU budget", 500).to_call_tool_result()
                } else {
                    CallToolResult::structured(json!({ "ok": true }))
                };
                Ok(ServerResult::CallToolResult(result))
            }
            .boxed()
        },
    );
    let started = tokio::time::Instant::now();
    let throttled = f.call("s__get").await.expect("an answer");
    assert_eq!(
        kit::ToolError::from_call_tool_result(&throttled).map(|e| e.kind),
        Some(kit::ErrorKind::Throttled)
    );
    // Another caller, which never saw the hint, waits it out before reaching the server.
    let other = f.call("s__get").await.expect("an answer");
    assert_eq!(other.is_error, Some(false));
    let arrivals = arrivals.lock().expect("lock").clone();
    assert_eq!(arrivals.len(), 2);
    assert!(arrivals[1] - started >= Duration::from_millis(500));

    // A hint longer than what is left of a call's deadline refuses it at once.
    let g = fixture(
        json!({ "retry": { "maxAttempts": 1 }, "deadlineMs": 100 }),
        |_| {
            async {
                Ok(ServerResult::CallToolResult(
                    kit::ToolError::throttled("slow down", 5_000).to_call_tool_result(),
                ))
            }
            .boxed()
        },
    );
    let _ = g.call("s__get").await;
    let started = tokio::time::Instant::now();
    let held = g.call("s__get").await;
    assert!(matches!(held, Err(CallError::Held { .. })), "{held:?}");
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(g.link.received().len(), 1, "the held call never left");
    let answer = agent_error(held);
    assert_eq!(answer.kind, kit::ErrorKind::Throttled);
    assert!(answer.retry_after_ms.is_some_and(|ms| ms > 4_000));
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_probe_found_the_server_still_gone_probes_again_on_its_retry() {
    let f = Arc::new(fixture(
        json!({
            "retry": { "maxAttempts": 2, "baseDelayMs": 50, "jitter": "none" },
            "circuitBreaker": { "minOpenMs": 250 }
        }),
        flaky(0.0, Duration::from_millis(1)),
    ));
    f.link.watched_by(f.upstream.policy().breaker().clone());
    f.link.lose_connection();
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The call's first attempt is the probe and finds no connection; the server is back 25 ms
    // later, before the retry.
    let link = f.link.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(25)).await;
        link.restore_connection();
    });
    let answer = f.call("s__get").await.expect("an answer");
    assert_eq!(answer.is_error, Some(false), "{answer:?}");
    assert_eq!(f.upstream.policy().breaker().state(), BreakerState::Closed);
}
