//! The orchestrator in front of the real servers (and an in-test HTTP fixture): catalog,
//! routing, progress, cancellation, list changes, resource subscriptions, failed and dying
//! upstreams.

mod fixture;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        CallToolRequest, CallToolRequestParams, ClientRequest, ProgressNotificationParam,
        ReadResourceRequestParams, RequestMetaObject, SubscriptionFilter,
    },
    service::{NotificationContext, PeerRequestOptions, RunningService},
};
use serde_json::{Value, json};
use testkit::{TempDir, bin_path, call, call_ok, connect_stdio, error_kind, text_of};

/// Records what the orchestrator sends the agent unasked.
#[derive(Debug, Clone, Default)]
struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
    tools_changed: Arc<AtomicUsize>,
    updated: Arc<Mutex<Vec<String>>>,
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().expect("lock").push(params);
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.tools_changed.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        self.updated.lock().expect("lock").push(params.uri);
    }
}

type Agent = RunningService<RoleClient, Recorder>;

/// Writes a config with the three bundled servers (data under `dir`) plus `extra` entries.
fn write_config(
    dir: &TempDir,
    extra: Value,
    sql_args: &[&str],
) -> anyhow::Result<std::path::PathBuf> {
    write_config_with(dir, extra, sql_args, json!({}))
}

/// Like [`write_config`], with an `orchestrator` section.
fn write_config_with(
    dir: &TempDir,
    extra: Value,
    sql_args: &[&str],
    orchestrator: Value,
) -> anyhow::Result<std::path::PathBuf> {
    let mut sql = vec![
        "--data-dir".to_owned(),
        dir.path().join("sql").display().to_string(),
    ];
    sql.extend(sql_args.iter().map(|s| s.to_string()));
    let mut servers = json!({
        "sql": { "command": bin_path("sql-mcp-server")?, "args": sql },
        "cosmos": { "command": bin_path("cosmos-mcp-server")?, "args": ["--data-dir", ":memory:"] },
        "rest": { "command": bin_path("rest-mcp-server")?, "args": [] }
    });
    if let (Value::Object(s), Value::Object(e)) = (&mut servers, extra) {
        s.extend(e);
    }
    let path = dir.path().join("mcp.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(
            &json!({ "mcpServers": servers, "orchestrator": orchestrator }),
        )?,
    )?;
    Ok(path)
}

async fn start_orchestrator(config: &Path) -> anyhow::Result<(Agent, Recorder)> {
    let recorder = Recorder::default();
    let (agent, _) = testkit::serve_orchestrator(recorder.clone(), config).await?;
    Ok((agent, recorder))
}

/// Polls `f` every 50 ms until it holds, at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn status(agent: &Agent) -> anyhow::Result<Value> {
    testkit::read_status(agent).await
}

async fn tool_names(agent: &Agent) -> anyhow::Result<Vec<String>> {
    Ok(agent
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect())
}

async fn wait_for_tools(agent: &Agent, names: &[&str]) -> anyhow::Result<()> {
    let ok = eventually(Duration::from_secs(30), || async {
        let have = tool_names(agent).await.unwrap_or_default();
        names.iter().all(|n| have.iter().any(|h| h == n))
    })
    .await;
    anyhow::ensure!(
        ok,
        "tools {names:?} did not all appear: {:?}",
        tool_names(agent).await?
    );
    Ok(())
}

#[tokio::test]
async fn the_catalog_holds_every_server_and_calls_return_the_upstream_result_unchanged()
-> anyhow::Result<()> {
    let dir = TempDir::new("orch-catalog")?;
    let fixture = fixture::start().await?;
    let config = write_config(
        &dir,
        json!({ "fixture": { "type": "http", "url": fixture.url } }),
        &[],
    )?;
    let (agent, _) = start_orchestrator(&config).await?;
    wait_for_tools(
        &agent,
        &[
            "sql__get_customer",
            "cosmos__get_user_behavior",
            "rest__get_product",
            "fixture__slow_steps",
        ],
    )
    .await?;

    // Every tool of the SQL server is there under its prefix, described exactly as upstream.
    let direct = connect_stdio("sql-mcp-server", &["--data-dir".into(), ":memory:".into()]).await?;
    let upstream_tools = direct.list_all_tools().await?;
    let exposed = agent.list_all_tools().await?;
    for tool in &upstream_tools {
        let name = format!("sql__{}", tool.name);
        let mine = exposed
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} exposed"));
        assert_eq!(mine.description, tool.description);
        assert_eq!(mine.input_schema, tool.input_schema);
        assert_eq!(mine.output_schema, tool.output_schema);
        assert_eq!(mine.annotations, tool.annotations);
        assert_eq!(mine.title, tool.title);
    }
    let count = |p: &str| exposed.iter().filter(|t| t.name.starts_with(p)).count();
    assert_eq!(count("sql__"), upstream_tools.len());
    assert_eq!(count("cosmos__"), 8);
    assert_eq!(count("rest__"), 6);

    // Routed calls return what the upstream returns.
    let args = json!({ "orderId": "ORD-00123" });
    let via = call(
        &agent_as_client(&agent),
        "sql__get_order_details",
        args.clone(),
    )
    .await?;
    let straight = call(&direct, "get_order_details", args).await?;
    assert_eq!(via.structured_content, straight.structured_content);
    assert_eq!(via.content, straight.content);
    let failed = call(
        &agent_as_client(&agent),
        "sql__get_customer",
        json!({ "customerId": "CUST-4242" }),
    )
    .await?;
    assert_eq!(
        error_kind(&failed).as_deref(),
        Some("not_found"),
        "upstream tool errors pass through"
    );
    let unknown = call(&agent_as_client(&agent), "sql__no_such_tool", json!({})).await;
    assert!(
        format!("{unknown:?}").contains("unknown tool"),
        "{unknown:?}"
    );

    // Resources are aggregated with reversible URIs.
    let schema = agent
        .read_resource(ReadResourceRequestParams::new("sql+sql://schema"))
        .await?;
    assert!(format!("{:?}", schema.contents).contains("CREATE TABLE"));

    let report = status(&agent).await?;
    let servers = report["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 4);
    assert!(servers.iter().all(|s| s["connected"] == true), "{report}");
    let sql = servers.iter().find(|s| s["name"] == "sql").expect("sql");
    assert!(sql["calls"].as_u64() >= Some(2));
    assert!(sql["errors"].as_u64() >= Some(1));
    direct.cancel().await?;
    agent.cancel().await?;
    Ok(())
}

/// The agent's peer as the plain client type testkit's helpers take.
fn agent_as_client(agent: &Agent) -> testkit::PeerClient {
    testkit::PeerClient(agent.peer().clone())
}

/// An upstream is greeted with 2025-11-25, the newest version that still has an `initialize`
/// handshake, not rmcp's newest (2026-07-28 has no handshake); the conformance suite's
/// `initialize` client scenario checks the same.
#[tokio::test]
async fn an_upstream_is_greeted_with_the_newest_version_that_has_a_handshake() -> anyhow::Result<()>
{
    // Pinned to 2025-11-25 (or a server without `server/discover`): `initialize` names
    // 2025-11-25; by default a server that knows `server/discover` is spoken to in 2026-07-28.
    for (protocol, greeted, spoken) in [
        ("2025-11-25", &["2025-11-25"][..], "2025-11-25"),
        ("auto", &[][..], "2026-07-28"),
    ] {
        let fixture = fixture::start().await?;
        let config = json!({
            "mcpServers": { "fixture": { "type": "http", "url": fixture.url } },
            "orchestrator": { "servers": { "fixture": { "protocol": protocol } } }
        });
        let config =
            orchestrator::config::Config::parse(&config.to_string(), Path::new("."), &|_| None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let gateway = orchestrator::gateway::Gateway::start(config);
        let ready = gateway.wait_ready(Duration::from_secs(30)).await;
        let report = orchestrator::status::StatusReport::of(&gateway);
        gateway.shutdown().await;
        anyhow::ensure!(ready, "the fixture connected");
        assert_eq!(*fixture.seen.greeted_with.lock().expect("lock"), greeted);
        assert_eq!(
            report.servers[0].protocol.as_deref(),
            Some(spoken),
            "{protocol}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn progress_trace_context_and_cancellation_pass_through() -> anyhow::Result<()> {
    let dir = TempDir::new("orch-progress")?;
    let fixture = fixture::start().await?;
    let config = write_config(
        &dir,
        json!({ "fixture": { "type": "http", "url": fixture.url } }),
        &[],
    )?;
    let (agent, recorder) = start_orchestrator(&config).await?;
    wait_for_tools(&agent, &["fixture__slow_steps"]).await?;

    // Progress: the upstream's notifications reach the agent under the agent's own token.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut meta = RequestMetaObject::new();
    meta.set_traceparent(traceparent);
    let params = CallToolRequestParams::new("fixture__slow_steps").with_arguments(
        json!({ "steps": 4 })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let handle = agent
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options().with_meta(meta),
        )
        .await?;
    let token = handle.progress_token.clone();
    handle.await_response().await?;
    let progress = recorder.progress.lock().expect("lock").clone();
    let mine: Vec<_> = progress
        .iter()
        .filter(|p| p.progress_token == token)
        .collect();
    assert_eq!(mine.len(), 4, "every step's progress arrived: {progress:?}");
    assert_eq!(mine.last().map(|p| p.progress), Some(4.0));
    assert_eq!(mine.last().and_then(|p| p.total), Some(4.0));
    let seen_meta = fixture
        .seen
        .last_meta
        .lock()
        .expect("lock")
        .clone()
        .unwrap_or_default();
    assert_eq!(
        seen_meta["traceparent"], traceparent,
        "the agent's _meta travels on: {seen_meta}"
    );

    // Cancellation: the agent cancels, the upstream's handler is cancelled too.
    let params = CallToolRequestParams::new("fixture__slow_steps").with_arguments(
        json!({ "steps": 100 })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let handle = agent
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(params)),
            PeerRequestOptions::no_options(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    handle.cancel(Some("test cancels".into())).await?;
    let cancelled = eventually(Duration::from_secs(5), || async {
        fixture.seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(cancelled, "the upstream call was cancelled");
    assert_eq!(
        fixture.seen.finished.load(Ordering::SeqCst),
        1,
        "only the first call finished"
    );
    agent.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_upstream_list_change_reaches_the_agent() -> anyhow::Result<()> {
    let dir = TempDir::new("orch-list-changed")?;
    let fixture = fixture::start().await?;
    let config = write_config(
        &dir,
        json!({ "fixture": { "type": "http", "url": fixture.url } }),
        &[],
    )?;
    let (agent, recorder) = start_orchestrator(&config).await?;
    wait_for_tools(
        &agent,
        &[
            "fixture__add_tool",
            "sql__get_customer",
            "cosmos__read_item",
            "rest__get_product",
        ],
    )
    .await?;
    let before = recorder.tools_changed.load(Ordering::SeqCst);
    call_ok_text(&agent, "fixture__add_tool", json!({ "name": "zeta" })).await?;
    // Other servers may still be connecting (each connection changes the list too), so wait for
    // a notification that comes with the new tool in the list.
    let notified = eventually(Duration::from_secs(10), || async {
        recorder.tools_changed.load(Ordering::SeqCst) > before
            && tool_names(&agent)
                .await
                .unwrap_or_default()
                .contains(&"fixture__zeta".to_owned())
    })
    .await;
    assert!(
        notified,
        "the agent heard tools/list_changed and sees the new tool"
    );
    agent.cancel().await?;
    Ok(())
}

/// 2026-07-28 agents have no session to be notified in: they open `subscriptions/listen`.
#[tokio::test]
async fn a_stateless_agent_hears_list_changes_through_listen() -> anyhow::Result<()> {
    let dir = TempDir::new("orch-listen")?;
    let fixture = fixture::start().await?;
    let config = write_config(
        &dir,
        json!({ "fixture": { "type": "http", "url": fixture.url } }),
        &[],
    )?;
    let agent = testkit::connect_stdio_with(
        "mcp-orchestrator",
        &[
            "serve".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
        ],
        testkit::Lifecycle::Stateless,
    )
    .await?;
    let mut subscription = agent
        .peer()
        .listen(
            SubscriptionFilter::builder()
                .tools_list_changed()
                .resource_subscriptions(vec!["orchestrator://status".to_owned()])
                .build(),
        )
        .await?;
    // Tool list changes are accepted; resource subscriptions stay with resources/subscribe.
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    assert_eq!(subscription.acknowledged().resource_subscriptions, None);
    let added = call(
        &testkit::PeerClient(agent.peer().clone()),
        "fixture__add_tool",
        json!({ "name": "zeta" }),
    )
    .await?;
    anyhow::ensure!(added.is_error != Some(true), "{}", text_of(&added));
    let heard = testkit::hears_tool_listed(
        &mut subscription,
        agent.peer(),
        "fixture__zeta",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        heard,
        "the listen stream carried tools/list_changed with the new tool listed"
    );
    agent.cancel().await?;
    Ok(())
}

async fn call_ok_text(agent: &Agent, tool: &str, args: Value) -> anyhow::Result<String> {
    let r = call(&agent_as_client(agent), tool, args).await?;
    anyhow::ensure!(r.is_error != Some(true), "{tool} failed: {}", text_of(&r));
    Ok(text_of(&r))
}

#[tokio::test]
async fn a_server_that_cannot_start_does_not_stop_the_others() -> anyhow::Result<()> {
    let dir = TempDir::new("orch-ghost")?;
    let config = write_config(
        &dir,
        json!({ "ghost": { "command": "/nonexistent/ghost-mcp-server" } }),
        &[],
    )?;
    let (agent, _) = start_orchestrator(&config).await?;
    wait_for_tools(
        &agent,
        &[
            "sql__get_customer",
            "cosmos__read_item",
            "rest__check_stock",
        ],
    )
    .await?;
    let customer = call_ok(
        &agent_as_client(&agent),
        "sql__get_customer",
        json!({ "customerId": "CUST-0005" }),
    )
    .await?;
    assert_eq!(customer["customerId"], "CUST-0005");
    let report = status(&agent).await?;
    let ghost = report["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "ghost"))
        .cloned()
        .expect("ghost in status");
    assert_eq!(ghost["connected"], false);
    assert!(
        ghost["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("cannot start")),
        "{ghost}"
    );
    assert!(ghost["lastErrorAt"].is_string());
    agent.cancel().await?;
    Ok(())
}

/// Pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            // Zombies have an empty command line and are not running.
            if String::from_utf8_lossy(&cmdline).contains(marker) {
                pids.push(pid);
            }
        }
    }
    pids
}

#[tokio::test]
async fn a_killed_child_fails_its_calls_clearly_comes_back_and_leaves_no_orphan()
-> anyhow::Result<()> {
    let dir = TempDir::new("orch-kill")?;
    let marker = dir.path().join("sql").display().to_string();
    // No retry here: this test shows what the agent sees when the call in flight is lost
    // (tests/resilience.rs shows retries rescuing such calls).
    let config = write_config_with(
        &dir,
        json!({}),
        &["--latency-ms", "1500"],
        json!({ "servers": { "sql": { "retry": { "maxAttempts": 1 } } } }),
    )?;
    let (agent, _) = start_orchestrator(&config).await?;
    wait_for_tools(&agent, &["sql__get_customer"]).await?;
    let client = agent_as_client(&agent);

    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            call(
                &client,
                "sql__get_customer",
                json!({ "customerId": "CUST-0001" }),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pids = processes_with(&marker);
    assert_eq!(pids.len(), 1, "one sql child: {pids:?}");
    std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()?;

    let failed = in_flight.await??;
    assert_eq!(
        error_kind(&failed).as_deref(),
        Some("unavailable"),
        "{}",
        text_of(&failed)
    );
    assert!(
        text_of(&failed).contains("`sql`"),
        "names the server: {}",
        text_of(&failed)
    );
    assert_eq!(
        failed.meta.as_ref().and_then(|m| m.get("retryable")),
        Some(&json!(true))
    );
    // While it restarts its tools stay listed, and a call says the server is unavailable
    // (retryable) rather than that the tool does not exist.
    assert!(
        tool_names(&agent)
            .await?
            .contains(&"sql__get_customer".to_owned())
    );
    let meanwhile = call(
        &client,
        "sql__get_customer",
        json!({ "customerId": "CUST-0001" }),
    )
    .await?;
    if meanwhile.is_error == Some(true) {
        assert_eq!(
            error_kind(&meanwhile).as_deref(),
            Some("unavailable"),
            "{}",
            text_of(&meanwhile)
        );
    }

    let back = eventually(Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            call(
                &client,
                "sql__get_customer",
                json!({ "customerId": "CUST-0001" }),
            )
            .await
            .is_ok_and(|r| r.is_error != Some(true))
        }
    })
    .await;
    assert!(back, "calls succeed again after the restart");
    let restarted = processes_with(&marker);
    assert_eq!(restarted.len(), 1);
    assert_ne!(restarted[0], pids[0], "a new child");

    agent.cancel().await?;
    let gone = eventually(Duration::from_secs(10), || async {
        processes_with(&marker).is_empty()
    })
    .await;
    assert!(gone, "no orphan sql process: {:?}", processes_with(&marker));
    Ok(())
}

#[tokio::test]
async fn a_composite_reports_progress_and_cancelling_it_cancels_every_running_step()
-> anyhow::Result<()> {
    let dir = TempDir::new("orch-composite-cancel")?;
    let fixture = fixture::start().await?;
    let config = write_config_with(
        &dir,
        json!({ "fixture": { "type": "http", "url": fixture.url } }),
        &[],
        json!({ "composites": { "two_slow": {
            "description": "Two slow steps side by side, then a customer",
            "input": { "type": "object", "properties": { "steps": { "type": "integer" } } },
            "steps": {
                "left": { "call": "fixture.slow_steps", "args": { "steps": "${input.steps}" } },
                "right": { "call": "fixture.slow_steps", "args": { "steps": "${input.steps}" } },
                "customer": { "call": "sql.get_customer", "args": { "customerId": "CUST-0001" } }
            },
            "output": { "left": "${left}", "right": "${right}", "customer": "${customer.customerId}" }
        } } }),
    )?;
    let (agent, recorder) = start_orchestrator(&config).await?;
    wait_for_tools(
        &agent,
        &["two_slow", "fixture__slow_steps", "sql__get_customer"],
    )
    .await?;

    // Progress: steps completed out of the total, under the agent's token.
    let handle = agent
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new("two_slow").with_arguments(
                    json!({ "steps": 2 })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            )),
            PeerRequestOptions::no_options(),
        )
        .await?;
    let token = handle.progress_token.clone();
    handle.await_response().await?;
    let done: Vec<(f64, Option<f64>)> = recorder
        .progress
        .lock()
        .expect("lock")
        .iter()
        .filter(|p| p.progress_token == token)
        .map(|p| (p.progress, p.total))
        .collect();
    assert_eq!(
        done.last(),
        Some(&(3.0, Some(3.0))),
        "3 of 3 steps: {done:?}"
    );
    assert!(
        done.windows(2).all(|w| w[0].0 < w[1].0),
        "progress only grows: {done:?}"
    );

    // Cancellation: both running upstream steps are cancelled.
    let handle = agent
        .peer()
        .send_cancellable_request(
            ClientRequest::CallToolRequest(CallToolRequest::new(
                CallToolRequestParams::new("two_slow").with_arguments(
                    json!({ "steps": 100 })
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            )),
            PeerRequestOptions::no_options(),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    handle.cancel(Some("agent gave up".into())).await?;
    let both = eventually(Duration::from_secs(5), || async {
        fixture.seen.cancelled.load(Ordering::SeqCst) == 2
    })
    .await;
    assert!(
        both,
        "both running steps cancelled: {}",
        fixture.seen.cancelled.load(Ordering::SeqCst)
    );
    agent.cancel().await?;
    Ok(())
}

/// The exposed URI of a fixture resource.
fn exposed(uri: &str) -> String {
    format!("fixture+{uri}")
}

/// Touches `uri` on the fixture, then the end marker (so an agent knows when it has heard all
/// of the change).
async fn change(agent: &Agent, uri: &str) -> anyhow::Result<()> {
    for touched in [uri, fixture::RESOURCES[1]] {
        call_ok_text(agent, "fixture__touch", json!({ "uri": touched })).await?;
    }
    Ok(())
}

/// The updates `recorder` heard up to the end marker (and forgets them).
async fn heard(recorder: &Recorder) -> anyhow::Result<Vec<String>> {
    let end = exposed(fixture::RESOURCES[1]);
    let arrived = eventually(Duration::from_secs(10), || async {
        recorder.updated.lock().expect("lock").contains(&end)
    })
    .await;
    anyhow::ensure!(arrived, "the end marker's update arrived");
    let mut updated = std::mem::take(&mut *recorder.updated.lock().expect("lock"));
    updated.retain(|u| *u != end);
    Ok(updated)
}

// resources/subscribe is legacy-only from 2026-07-28 on; 2025-11-25 agents subscribe this way.
#[allow(deprecated)]
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_are_per_agent_session_idempotent_and_capped() -> anyhow::Result<()> {
    subscriptions_with("2025-11-25").await
}

/// The same with the upstream on 2026-07-28, which has no `resources/subscribe`: its listen
/// stream's filter carries the subscriptions, and the agents hear the same.
#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_reach_a_2026_upstream_through_its_listen_stream() -> anyhow::Result<()> {
    subscriptions_with("2026-07-28").await
}

#[allow(deprecated)]
async fn subscriptions_with(protocol: &str) -> anyhow::Result<()> {
    use rmcp::model::{SubscribeRequestParams, UnsubscribeRequestParams};
    let legacy = protocol == "2025-11-25";
    let dir = TempDir::new("orch-subscriptions")?;
    let fixture = fixture::start().await?;
    let config = dir.path().join("mcp.json");
    std::fs::write(
        &config,
        serde_json::to_string(&json!({
            "mcpServers": { "fixture": { "type": "http", "url": fixture.url } },
            "orchestrator": { "limits": { "maxSubscriptionsPerClient": 2 },
                              "servers": { "fixture": { "protocol": protocol } } }
        }))?,
    )?;
    let front = testkit::HttpServer::spawn(
        "mcp-orchestrator",
        &[
            "serve".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--http".to_owned(),
            "127.0.0.1:0".to_owned(),
        ],
        &Default::default(),
    )
    .await?;
    // Two agents that present themselves alike (the same clientInfo): two sessions all the same.
    let connect = || async {
        let recorder = Recorder::default();
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(front.url.clone());
        let agent = recorder.clone().serve(transport).await?;
        anyhow::Ok((agent, recorder))
    };
    let (a, heard_a) = connect().await?;
    let (b, heard_b) = connect().await?;
    assert_eq!(a.peer().peer_info(), b.peer().peer_info());
    wait_for_tools(&a, &["fixture__touch"]).await?;
    let (doc, end) = (
        exposed(fixture::RESOURCES[0]),
        exposed(fixture::RESOURCES[1]),
    );
    let subscribe = |agent: &Agent, uri: &str| {
        let peer = agent.peer().clone();
        let params = SubscribeRequestParams::new(uri.to_owned());
        async move { peer.subscribe(params).await }
    };

    // Agent A subscribes to the document 50 times, agent B once: each hears a change once, and
    // the upstream was asked once per session.
    for _ in 0..50 {
        subscribe(&a, &doc).await?;
    }
    subscribe(&b, &doc).await?;
    subscribe(&a, &end).await?;
    subscribe(&b, &end).await?;
    change(&a, fixture::RESOURCES[0]).await?;
    assert_eq!(heard(&heard_a).await?, vec![doc.clone()]);
    assert_eq!(heard(&heard_b).await?, vec![doc.clone()]);
    let upstream_subscribes = |uri: &str| {
        let seen = fixture.seen.subscribes.lock().expect("lock");
        seen.iter().filter(|u| *u == uri).count()
    };
    if legacy {
        assert_eq!(upstream_subscribes(fixture::RESOURCES[0]), 2);
    }

    // A unsubscribes: B still hears the document, A does not, and the upstream keeps it.
    a.peer()
        .unsubscribe(UnsubscribeRequestParams::new(doc.clone()))
        .await?;
    change(&a, fixture::RESOURCES[0]).await?;
    assert_eq!(heard(&heard_a).await?, Vec::<String>::new());
    assert_eq!(heard(&heard_b).await?, vec![doc.clone()]);
    if legacy {
        assert!(fixture.seen.unsubscribes.lock().expect("lock").is_empty());
    }
    // B, the last subscriber, unsubscribes: now the upstream is unsubscribed.
    b.peer()
        .unsubscribe(UnsubscribeRequestParams::new(doc.clone()))
        .await?;
    if legacy {
        assert_eq!(
            *fixture.seen.unsubscribes.lock().expect("lock"),
            [fixture::RESOURCES[0]]
        );
    }

    // maxSubscriptionsPerClient is 2: A holds `end`, may take `doc` again, not a third.
    subscribe(&a, &doc).await?;
    let refused = subscribe(&a, &exposed(fixture::RESOURCES[2]))
        .await
        .expect_err("a third subscription");
    let message = refused.to_string();
    assert!(
        message.contains("maxSubscriptionsPerClient") && message.contains('2'),
        "{message}"
    );
    // B's own count is its own.
    subscribe(&b, &exposed(fixture::RESOURCES[2])).await?;
    let status = status(&a).await?;
    assert_eq!(status["limits"]["maxSubscriptionsPerClient"], 2);
    assert_eq!(status["limits"]["enforced"]["subscriptions"], 1);
    a.cancel().await?;
    b.cancel().await?;
    front.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_an_empty_prefix_keeps_its_resource_uris() -> anyhow::Result<()> {
    use rmcp::model::{ReadResourceRequestParams, ResourceContents};
    let dir = TempDir::new("orch-unprefixed-uris")?;
    let config = write_config_with(
        &dir,
        json!({}),
        &[],
        json!({ "servers": { "sql": { "prefix": "" } } }),
    )?;
    let (agent, _) = start_orchestrator(&config).await?;
    // Unprefixed, the SQL server's tools keep their names, and so do its resources' URIs.
    wait_for_tools(&agent, &["get_customer", "cosmos__get_user_behavior"]).await?;
    let uris: Vec<String> = agent
        .list_all_resources()
        .await?
        .into_iter()
        .map(|r| r.uri.clone())
        .collect();
    anyhow::ensure!(uris.iter().any(|u| u == "sql://schema"), "{uris:?}");
    anyhow::ensure!(!uris.iter().any(|u| u.starts_with("sql+")), "{uris:?}");
    let read = agent
        .read_resource(ReadResourceRequestParams::new("sql://schema"))
        .await?;
    let uri = match read.contents.first() {
        Some(ResourceContents::TextResourceContents { uri, text, .. }) => {
            anyhow::ensure!(text.contains("customers"), "{text}");
            uri.clone()
        }
        other => anyhow::bail!("not text: {other:?}"),
    };
    anyhow::ensure!(uri == "sql://schema", "the contents name {uri}");
    agent.cancel().await?;
    Ok(())
}
