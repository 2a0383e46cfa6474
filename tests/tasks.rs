//! Tasks pass through: the real `mcp-orchestrator` in front of `asking-mcp-server`
//! (crates/testkit), whose `count_slowly` and `confirm_in_task` become tasks (SEP-2663) for a
//! client that declares the extension, driven by an rmcp agent over stdio and streamable HTTP,
//! in both protocol eras (2025-11-25 with `initialize`, 2026-07-28 stateless).
//!
//! - a task is created, polled to its result, cancelled, failed, and asks for input through
//!   `tasks/update`, its id naming the owning server and never the upstream's own;
//! - a changed, made-up or malformed task id gets `-32602` naming the id;
//! - an agent that did not declare the extension gets inline results and `-32021` for
//!   `tasks/*`; composite steps never become tasks;
//! - with no task-capable upstream the front does not advertise the extension (`-32601`).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, ensure};
use rmcp::{
    ClientHandler, ClientLifecycleMode, RoleClient, ServiceError,
    model::{
        CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientRequest, CustomRequest,
        ErrorCode, GetTaskParams, ProtocolVersion, TaskPayload, TaskStatus, UpdateTaskParams,
    },
    service::RunningService,
    transport::{
        ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use testkit::{
    HttpServer, Lifecycle, TempDir, bin_path,
    tasks::{Declaring, finish, is, poll_until, start},
};

/// Long enough for any task here on a loaded machine.
const WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
enum Side {
    Stdio,
    Http,
}

/// A running orchestrator (over stdio: its config, started per agent) and what keeps it alive.
struct Setup {
    _dir: TempDir,
    _upstream: Option<HttpServer>,
    front: Front,
}

enum Front {
    Stdio(PathBuf),
    Http(HttpServer),
}

/// The orchestrator in front of `servers`, or of the asking server over `upstream`, spoken to
/// in protocol `era` (`auto`, `2025-11-25` or `2026-07-28`).
async fn setup(
    upstream: Side,
    era: &str,
    front: Side,
    servers: Option<Value>,
) -> anyhow::Result<Setup> {
    let dir = TempDir::new("tasks")?;
    // The composite and the era are the asking server's, so they are there only with it.
    let orchestrator = if servers.is_none() {
        json!({
            "composites": { "count_in_a_step": {
                "description": "count_slowly as a composite step",
                "input": { "type": "object" },
                "steps": { "count": { "call": "asking.count_slowly",
                                      "args": { "to": 2, "delayMs": 10 }, "critical": true } },
                "output": { "count": "${count}" }
            } },
            "servers": { "asking": { "protocol": era } }
        })
    } else {
        json!({})
    };
    let (servers, http_upstream) = match (servers, upstream) {
        (Some(servers), _) => (servers, None),
        (None, Side::Stdio) => (
            json!({ "asking": { "command": bin_path("asking-mcp-server")? } }),
            None,
        ),
        (None, Side::Http) => {
            let s = HttpServer::start("asking-mcp-server", &[]).await?;
            (
                json!({ "asking": { "type": "http", "url": s.url } }),
                Some(s),
            )
        }
    };
    let config = json!({
        "mcpServers": servers,
        "orchestrator": orchestrator
    });
    let path = dir.path().join("mcp.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)?;
    let front = match front {
        Side::Stdio => Front::Stdio(path),
        Side::Http => Front::Http(HttpServer::orchestrator(&path, &Default::default()).await?),
    };
    Ok(Setup {
        _dir: dir,
        _upstream: http_upstream,
        front,
    })
}

impl Setup {
    /// Connects `agent` with `lifecycle` and waits until `tool` is listed.
    async fn connect<A: ClientHandler>(
        &self,
        agent: A,
        lifecycle: Lifecycle,
        tool: &str,
    ) -> anyhow::Result<RunningService<RoleClient, A>> {
        use rmcp::ClientServiceExt as _;
        let client = match &self.front {
            Front::Stdio(config) => {
                let transport = TokioChildProcess::new(
                    tokio::process::Command::new(bin_path("mcp-orchestrator")?).configure(|c| {
                        c.arg("serve")
                            .arg("--config")
                            .arg(config)
                            .env("RUST_LOG", "warn");
                    }),
                )?;
                agent
                    .serve_with_lifecycle(transport, mode(lifecycle))
                    .await?
            }
            Front::Http(server) => {
                let transport = StreamableHttpClientTransport::from_config(
                    StreamableHttpClientTransportConfig::with_uri(server.url.clone()),
                );
                agent
                    .serve_with_lifecycle(transport, mode(lifecycle))
                    .await?
            }
        };
        let started = std::time::Instant::now();
        loop {
            let tools = client.peer().list_all_tools().await?;
            if tools.iter().any(|t| t.name == tool) {
                return Ok(client);
            }
            ensure!(started.elapsed() < WITHIN, "{tool} never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn mode(lifecycle: Lifecycle) -> ClientLifecycleMode {
    match lifecycle {
        Lifecycle::Initialize => ClientLifecycleMode::Initialize,
        Lifecycle::Stateless => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    }
}

/// The JSON-RPC error of a failed request.
fn mcp_error(e: ServiceError) -> anyhow::Result<rmcp::ErrorData> {
    match e {
        ServiceError::McpError(e) => Ok(e),
        other => anyhow::bail!("not a JSON-RPC error: {other}"),
    }
}

/// The completed task's result, as JSON.
fn result_of(task: &rmcp::model::GetTaskResult) -> anyhow::Result<Value> {
    match &task.task.payload {
        TaskPayload::Completed { result } => Ok(Value::Object(result.clone())),
        other => anyhow::bail!("not completed: {other:?}"),
    }
}

/// Create, poll to the result, fail, cancel, answer input: the whole life of tasks through one
/// front.
async fn a_tasks_life(
    upstream: Side,
    era: &str,
    front: Side,
    lifecycle: Lifecycle,
) -> anyhow::Result<()> {
    let setup = setup(upstream, era, front, None).await?;
    let client = setup
        .connect(Declaring::tasks(), lifecycle, "asking__count_slowly")
        .await?;
    let peer = client.peer();
    let advertised = peer.peer_info().context("server info")?;
    ensure!(
        advertised.capabilities.supports_tasks(),
        "{:?}",
        advertised.capabilities
    );

    // Created, polled (its status message moving), completed with the upstream's result.
    let created = start(
        peer,
        "asking__count_slowly",
        json!({ "to": 4, "delayMs": 60 }),
    )
    .await?;
    let id = created.task.task_id.clone();
    ensure!(id.starts_with("asking."), "{id}");
    ensure!(created.task.status == TaskStatus::Working, "{created:?}");
    ensure!(created.task.poll_interval_ms == Some(50), "{created:?}");
    let counting = poll_until(peer, &id, WITHIN, |t| {
        t.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("counted"))
    })
    .await?;
    ensure!(counting.task.task.task_id == id, "{counting:?}");
    let done = finish(peer, &id, WITHIN).await?;
    ensure!(done.task.status() == TaskStatus::Completed, "{done:?}");
    ensure!(done.task.task.task_id == id, "{done:?}");
    let result = result_of(&done)?;
    ensure!(result["structuredContent"]["counted"] == 4, "{result}");

    // Failed: the upstream's error, as it gave it.
    let failing = start(
        peer,
        "asking__count_slowly",
        json!({ "to": 2, "delayMs": 10, "fail": true }),
    )
    .await?;
    let failed = finish(peer, &failing.task.task_id, WITHIN).await?;
    match &failed.task.payload {
        TaskPayload::Failed { error } => ensure!(
            error["message"] == "counting failed at 2, as asked"
                && error["code"] == ErrorCode::INTERNAL_ERROR.0,
            "{error:?}"
        ),
        other => anyhow::bail!("not failed: {other:?}"),
    }

    // Cancelled: the upstream stops the work.
    let long = start(
        peer,
        "asking__count_slowly",
        json!({ "to": 10000, "delayMs": 50 }),
    )
    .await?;
    peer.cancel_task(CancelTaskParams::new(long.task.task_id.clone()))
        .await?;
    let cancelled = finish(peer, &long.task.task_id, WITHIN).await?;
    ensure!(
        cancelled.task.status() == TaskStatus::Cancelled,
        "{cancelled:?}"
    );

    // Input inside a task: asked through tasks/get, answered through tasks/update.
    let asking = start(peer, "asking__confirm_in_task", json!({})).await?;
    let asking_id = asking.task.task_id;
    let waiting = poll_until(peer, &asking_id, WITHIN, is(TaskStatus::InputRequired)).await?;
    let TaskPayload::InputRequired { input_requests } = &waiting.task.payload else {
        anyhow::bail!("no input requests: {waiting:?}")
    };
    let question = serde_json::to_value(input_requests.get("confirm").context("`confirm`")?)?;
    ensure!(question["method"] == "elicitation/create", "{question}");
    ensure!(question["params"]["message"] == "Go ahead?", "{question}");
    let answer = json!({ "action": "accept", "content": { "confirm": true } });
    peer.update_task(UpdateTaskParams::new(
        asking_id.clone(),
        [("confirm".to_owned(), answer.clone())].into(),
    ))
    .await?;
    let answered = finish(peer, &asking_id, WITHIN).await?;
    let result = result_of(&answered)?;
    ensure!(result["structuredContent"]["answer"] == answer, "{result}");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_task_lives_through_stdio_on_2025_11_25_at_both_ends() -> anyhow::Result<()> {
    a_tasks_life(
        Side::Stdio,
        "2025-11-25",
        Side::Stdio,
        Lifecycle::Initialize,
    )
    .await
}

#[tokio::test]
async fn a_task_lives_through_http_on_2026_07_28_at_both_ends() -> anyhow::Result<()> {
    a_tasks_life(Side::Http, "2026-07-28", Side::Http, Lifecycle::Stateless).await
}

#[tokio::test]
async fn a_task_lives_through_an_http_front_on_2025_11_25_to_a_2026_07_28_upstream()
-> anyhow::Result<()> {
    a_tasks_life(Side::Stdio, "2026-07-28", Side::Http, Lifecycle::Initialize).await
}

#[tokio::test]
async fn a_task_lives_through_a_stdio_front_on_2026_07_28_to_a_2025_11_25_upstream()
-> anyhow::Result<()> {
    a_tasks_life(Side::Http, "2025-11-25", Side::Stdio, Lifecycle::Stateless).await
}

#[tokio::test]
async fn a_changed_made_up_or_malformed_task_id_is_refused_naming_it() -> anyhow::Result<()> {
    for (front, lifecycle) in [
        (Side::Stdio, Lifecycle::Initialize),
        (Side::Http, Lifecycle::Stateless),
    ] {
        let setup = setup(Side::Stdio, "auto", front, None).await?;
        let client = setup
            .connect(Declaring::tasks(), lifecycle, "asking__count_slowly")
            .await?;
        let peer = client.peer();
        let created = start(peer, "asking__count_slowly", json!({ "to": 1 })).await?;
        let id = created.task.task_id;
        let sealed = id.strip_prefix("asking.").context("server prefix")?;
        // The upstream's own id, read out of the seal, is no id to the agent.
        let cases = [
            (format!("{id}x"), "not a task id this orchestrator issued"),
            (
                format!("asking.{}", sealed.replacen('.', "", 1)),
                "not a task id",
            ),
            (
                "asking.1".to_owned(),
                "not a task id this orchestrator issued",
            ),
            (format!("nosuch.{sealed}"), "there is no server `nosuch`"),
            (
                "no-server-part".to_owned(),
                "task ids read `<server>.<sealed id>`",
            ),
        ];
        for (bad, why) in cases {
            let e = mcp_error(
                peer.get_task(GetTaskParams::new(bad.clone()))
                    .await
                    .expect_err("refused"),
            )?;
            ensure!(e.code == ErrorCode::INVALID_PARAMS, "{bad}: {e:?}");
            ensure!(e.message.contains(&format!("`{bad}`")), "{bad}: {e:?}");
            ensure!(e.message.contains(why), "{bad}: {e:?}");
            let e = mcp_error(
                peer.cancel_task(CancelTaskParams::new(bad.clone()))
                    .await
                    .expect_err("refused"),
            )?;
            ensure!(e.code == ErrorCode::INVALID_PARAMS, "{bad}: {e:?}");
        }
        // A task id that is not a string: the params, named.
        let untyped = peer
            .send_request(ClientRequest::CustomRequest(CustomRequest::new(
                "tasks/get",
                Some(json!({ "taskId": 42 })),
            )))
            .await;
        let e = mcp_error(untyped.expect_err("refused"))?;
        ensure!(e.code == ErrorCode::INVALID_PARAMS, "{e:?}");
        ensure!(e.message.contains("tasks/get"), "{e:?}");
        // The real one still works.
        let done = finish(peer, &id, WITHIN).await?;
        ensure!(done.task.status() == TaskStatus::Completed, "{done:?}");
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_agent_that_did_not_declare_tasks_gets_results_inline_and_minus_32021()
-> anyhow::Result<()> {
    let setup = setup(Side::Stdio, "auto", Side::Http, None).await?;
    for lifecycle in [Lifecycle::Initialize, Lifecycle::Stateless] {
        let client = setup
            .connect(Declaring::default(), lifecycle, "asking__count_slowly")
            .await?;
        let peer = client.peer();
        let mut params = CallToolRequestParams::new("asking__count_slowly");
        params = params.with_arguments(
            json!({ "to": 2, "delayMs": 10 })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        match peer.call_tool_once(params).await? {
            CallToolResponse::Complete(r) => ensure!(
                r.structured_content == Some(json!({ "counted": 2 })),
                "{r:?}"
            ),
            other => anyhow::bail!("{other:?}"),
        }
        let e = mcp_error(
            peer.get_task(GetTaskParams::new("asking.x"))
                .await
                .expect_err("refused"),
        )?;
        ensure!(
            e.code == ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
            "{e:?}"
        );
        client.cancel().await?;
    }
    // An agent that declared tasks: a composite's step still answers in full.
    let client = setup
        .connect(Declaring::tasks(), Lifecycle::Stateless, "count_in_a_step")
        .await?;
    let output = testkit::call_ok(&client, "count_in_a_step", json!({})).await?;
    ensure!(output["count"]["counted"] == 2, "{output}");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn without_a_task_capable_upstream_the_extension_is_not_advertised() -> anyhow::Result<()> {
    let servers = json!({ "sql": { "command": bin_path("sql-mcp-server")?,
                                   "args": ["--data-dir", ":memory:"] } });
    let setup = setup(Side::Stdio, "auto", Side::Stdio, Some(servers)).await?;
    let client = setup
        .connect(
            Declaring::tasks(),
            Lifecycle::Initialize,
            "sql__get_customer_orders",
        )
        .await?;
    let peer = client.peer();
    let info = peer.peer_info().context("server info")?;
    ensure!(
        !info.capabilities.supports_tasks(),
        "{:?}",
        info.capabilities
    );
    let e = mcp_error(
        peer.get_task(GetTaskParams::new("sql.x"))
            .await
            .expect_err("refused"),
    )?;
    ensure!(e.code == ErrorCode::METHOD_NOT_FOUND, "{e:?}");
    client.cancel().await?;
    Ok(())
}
