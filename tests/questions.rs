//! Questions an upstream asks (elicitation in form and URL mode, sampling, roots) reach the agent
//! whose call caused them, and the agent's answer goes back unchanged: the real
//! `mcp-orchestrator` in front of `asking-mcp-server` (crates/testkit), with an rmcp agent that
//! declares chosen capabilities and answers as told.
//!
//! - accept, decline and cancel come back as the agent gave them, content included;
//! - an agent that did not declare a capability is never asked: the upstream gets `-32021`;
//! - over stdio and streamable HTTP, on both sides;
//! - the call's timeout stops while the user answers; a question nobody answers ends at
//!   `userInputTimeoutMs`, and the agent is told to drop it;
//! - a composite step's question reaches the agent too;
//! - a 2026-07-28 agent is asked through `input_required`: its call is held, and its retry with
//!   the answers and the signed `requestState` resumes it where it stopped.

#![allow(deprecated)] // Sampling and roots are deprecated from 2026-07-28 on; these agents speak 2025-11-25.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use rmcp::{
    ClientHandler, ErrorData, RoleClient,
    model::{
        CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig,
        CreateMessageRequestParams, CreateMessageResult, ElicitRequestParams, ElicitResult,
        ElicitationAction, Implementation, ListRootsResult, ProtocolVersion, Root, SamplingMessage,
    },
    service::{ClientLifecycleMode, ClientServiceExt, RequestContext, RunningService},
    transport::{
        ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use testkit::{HttpServer, TempDir, bin_path, call};

/// How the agent answers an elicitation.
#[derive(Debug, Clone)]
enum Reply {
    Accept(Value),
    Decline,
    Cancel,
    /// Accepts `Value` after waiting this long.
    Slowly(Duration, Value),
    /// Never answers; records whether the orchestrator withdrew the question.
    Never,
}

/// What the agent saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every question, as JSON.
    questions: Mutex<Vec<Value>>,
    /// Questions withdrawn (the request's cancellation token fired).
    withdrawn: Mutex<usize>,
    /// Log messages heard, as JSON.
    logs: Mutex<Vec<Value>>,
    /// Progress heard: the `progress` values, in order.
    progress: Mutex<Vec<f64>>,
}

#[derive(Debug, Clone)]
struct Agent {
    capabilities: ClientCapabilities,
    reply: Reply,
    seen: Arc<Seen>,
}

impl Agent {
    fn new(capabilities: Value, reply: Reply) -> Self {
        Self {
            capabilities: serde_json::from_value(capabilities).expect("capabilities"),
            reply,
            seen: Arc::default(),
        }
    }

    fn questions(&self) -> Vec<Value> {
        self.seen.questions.lock().expect("lock").clone()
    }
}

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            self.capabilities.clone(),
            Implementation::new("questions-test-agent", "1"),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.seen
            .questions
            .lock()
            .expect("lock")
            .push(json!({ "elicitation": request }));
        let accept = |content: &Value| {
            ElicitResult::new(ElicitationAction::Accept).with_content(content.clone())
        };
        match &self.reply {
            Reply::Accept(content) => Ok(accept(content)),
            Reply::Decline => Ok(ElicitResult::new(ElicitationAction::Decline)),
            Reply::Cancel => Ok(ElicitResult::new(ElicitationAction::Cancel)),
            Reply::Slowly(after, content) => {
                tokio::time::sleep(*after).await;
                Ok(accept(content))
            }
            Reply::Never => {
                context.ct.cancelled().await;
                *self.seen.withdrawn.lock().expect("lock") += 1;
                Err(ErrorData::internal_error("withdrawn", None))
            }
        }
    }

    async fn create_message(
        &self,
        request: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let tools = request.tools.as_ref().map_or(0, Vec::len);
        self.seen
            .questions
            .lock()
            .expect("lock")
            .push(json!({ "sampling": request }));
        Ok(CreateMessageResult::new(
            SamplingMessage::assistant_text(format!("a short summary (tools offered: {tools})")),
            "test-model-7".into(),
        )
        .with_stop_reason(CreateMessageResult::STOP_REASON_END_TURN))
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.seen
            .progress
            .lock()
            .expect("lock")
            .push(params.progress);
    }

    async fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.seen
            .logs
            .lock()
            .expect("lock")
            .push(serde_json::to_value(params).unwrap_or_default());
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        self.seen
            .questions
            .lock()
            .expect("lock")
            .push(json!({ "roots": true }));
        Ok(ListRootsResult::new(vec![
            Root::new("file:///work/project").with_name("project"),
        ]))
    }
}

/// Where the upstream runs.
#[derive(Debug, Clone, Copy)]
enum Side {
    Stdio,
    Http,
}

/// A running orchestrator in front of the asking server, and what keeps them alive.
struct Setup {
    _dir: TempDir,
    _upstream: Option<HttpServer>,
    front: Front,
}

enum Front {
    Stdio(PathBuf),
    Http(HttpServer),
}

/// Which era the orchestrator speaks to the asking server: 2025-11-25, where it asks with
/// requests of its own, or the newest (2026-07-28), where it asks through `input_required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Requests,
    InputRequired,
}

const ERAS: [Era; 2] = [Era::Requests, Era::InputRequired];

/// The orchestrator in front of the asking server spoken to in 2025-11-25.
async fn setup(upstream: Side, front: Side, orchestrator: Value) -> anyhow::Result<Setup> {
    setup_in(Era::Requests, upstream, front, orchestrator).await
}

async fn setup_in(
    era: Era,
    upstream: Side,
    front: Side,
    mut orchestrator: Value,
) -> anyhow::Result<Setup> {
    let protocol = match era {
        Era::Requests => "2025-11-25",
        Era::InputRequired => "auto",
    };
    orchestrator["servers"]["asking"]["protocol"] = json!(protocol);
    let dir = TempDir::new("questions")?;
    let (server, http_upstream) = match upstream {
        Side::Stdio => (json!({ "command": bin_path("asking-mcp-server")? }), None),
        Side::Http => {
            let s = HttpServer::start("asking-mcp-server", &[]).await?;
            (json!({ "type": "http", "url": s.url }), Some(s))
        }
    };
    let path = dir.path().join("mcp.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(
            &json!({ "mcpServers": { "asking": server }, "orchestrator": orchestrator }),
        )?,
    )?;
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
    /// Connects `agent` (2025-11-25) and waits until the asking server's tools are listed.
    async fn connect(&self, agent: Agent) -> anyhow::Result<RunningService<RoleClient, Agent>> {
        self.connect_as(agent, ClientLifecycleMode::Initialize)
            .await
    }

    /// Connects `agent` speaking 2026-07-28 (`server/discover`, no session).
    async fn connect_stateless(
        &self,
        agent: Agent,
    ) -> anyhow::Result<RunningService<RoleClient, Agent>> {
        let mode = ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        };
        self.connect_as(agent, mode).await
    }

    async fn connect_as(
        &self,
        agent: Agent,
        mode: ClientLifecycleMode,
    ) -> anyhow::Result<RunningService<RoleClient, Agent>> {
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
                agent.serve_with_lifecycle(transport, mode).await?
            }
            Front::Http(server) => {
                let transport = StreamableHttpClientTransport::from_config(
                    StreamableHttpClientTransportConfig::with_uri(server.url.clone()),
                );
                agent.serve_with_lifecycle(transport, mode).await?
            }
        };
        let started = Instant::now();
        loop {
            let tools = client.peer().list_all_tools().await?;
            if tools.iter().any(|t| t.name == "asking__confirm_delete") {
                return Ok(client);
            }
            ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the asking server's tools never appeared"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The tool's structured answer (the upstream's view of what the agent said).
async fn ask(
    client: &RunningService<RoleClient, Agent>,
    tool: &str,
    args: Value,
) -> anyhow::Result<(bool, Value)> {
    let result = call(client, tool, args).await?;
    let value = result
        .structured_content
        .clone()
        .with_context(|| format!("{tool} answered without structured content: {result:?}"))?;
    Ok((result.is_error == Some(true), value))
}

const FORM_AND_URL: &str = r#"{ "elicitation": { "form": {}, "url": {} } }"#;

fn caps(json: &str) -> Value {
    serde_json::from_str(json).expect("capabilities literal")
}

async fn accept_decline_cancel(upstream: Side, front: Side) -> anyhow::Result<()> {
    for era in ERAS {
        accept_decline_cancel_in(era, upstream, front)
            .await
            .with_context(|| format!("{era:?}"))?;
    }
    Ok(())
}

async fn accept_decline_cancel_in(era: Era, upstream: Side, front: Side) -> anyhow::Result<()> {
    let setup = setup_in(era, upstream, front, json!({})).await?;
    let content = json!({ "confirm": true });
    for (reply, action, expected_content) in [
        (Reply::Accept(content.clone()), "accept", content.clone()),
        (Reply::Decline, "decline", Value::Null),
        (Reply::Cancel, "cancel", Value::Null),
    ] {
        let agent = Agent::new(caps(FORM_AND_URL), reply);
        let client = setup.connect(agent.clone()).await?;
        let (failed, answer) =
            ask(&client, "asking__confirm_delete", json!({ "files": 3 })).await?;
        ensure!(!failed, "{action}: {answer}");
        ensure!(answer["action"] == action, "{action}: {answer}");
        ensure!(answer["content"] == expected_content, "{action}: {answer}");
        let questions = agent.questions();
        ensure!(questions.len() == 1, "{questions:?}");
        let asked = &questions[0]["elicitation"];
        ensure!(asked["message"] == "Delete 3 files?", "{asked}");
        ensure!(asked["mode"] == "form", "{asked}");
        let confirm = &asked["requestedSchema"]["properties"]["confirm"];
        ensure!(
            confirm["type"] == "boolean" && confirm["default"] == false,
            "{asked}"
        );
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_elicitation_reaches_the_agent_and_its_answer_returns_unchanged_stdio()
-> anyhow::Result<()> {
    accept_decline_cancel(Side::Stdio, Side::Stdio).await
}

#[tokio::test]
async fn an_elicitation_reaches_the_agent_and_its_answer_returns_unchanged_http()
-> anyhow::Result<()> {
    accept_decline_cancel(Side::Http, Side::Http).await
}

#[tokio::test]
async fn an_elicitation_crosses_mixed_transports() -> anyhow::Result<()> {
    accept_decline_cancel(Side::Http, Side::Stdio).await?;
    accept_decline_cancel(Side::Stdio, Side::Http).await
}

#[tokio::test]
async fn an_agent_is_never_asked_what_it_did_not_declare() -> anyhow::Result<()> {
    let setup = setup(Side::Stdio, Side::Stdio, json!({})).await?;
    let cases = [
        ("{}", "asking__confirm_delete", json!({}), "elicitation"),
        (
            r#"{ "elicitation": { "form": {} } }"#,
            "asking__open_link",
            json!({}),
            "elicitation",
        ),
        (
            r#"{ "elicitation": { "url": {} } }"#,
            "asking__confirm_delete",
            json!({}),
            "elicitation",
        ),
        (
            "{}",
            "asking__summarize",
            json!({ "text": "x" }),
            "sampling",
        ),
        (
            r#"{ "sampling": {} }"#,
            "asking__summarize",
            json!({ "text": "x", "withTools": true }),
            "sampling",
        ),
        (FORM_AND_URL, "asking__roots", json!({}), "roots"),
    ];
    for (declared, tool, args, capability) in cases {
        let agent = Agent::new(caps(declared), Reply::Accept(json!({ "confirm": true })));
        let client = setup.connect(agent.clone()).await?;
        let (failed, answer) = ask(&client, tool, args).await?;
        ensure!(failed, "{tool} with {declared}: {answer}");
        ensure!(
            answer["error"]["code"] == -32021,
            "{tool} with {declared}: {answer}"
        );
        ensure!(
            answer["error"]["data"]["requiredCapabilities"][capability].is_object(),
            "{tool} with {declared}: {answer}"
        );
        ensure!(
            agent.questions().is_empty(),
            "{tool} with {declared}: the agent was asked"
        );
        client.cancel().await?;
    }
    // A 2026-07-28 server asks through its result and cannot be told: the agent's call ends
    // with the same error.
    let setup = setup_in(Era::InputRequired, Side::Stdio, Side::Stdio, json!({})).await?;
    let agent = Agent::new(json!({}), Reply::Accept(json!({})));
    let client = setup.connect(agent.clone()).await?;
    let e = call(&client, "asking__confirm_delete", json!({}))
        .await
        .expect_err("not declared");
    ensure!(format!("{e:#}").contains("-32021"), "{e:#}");
    ensure!(agent.questions().is_empty(), "the agent was asked");
    Ok(())
}

#[tokio::test]
async fn url_elicitation_sampling_and_roots_pass_through() -> anyhow::Result<()> {
    for (era, upstream, front) in [
        (Era::Requests, Side::Stdio, Side::Stdio),
        (Era::Requests, Side::Http, Side::Http),
        (Era::InputRequired, Side::Stdio, Side::Stdio),
        (Era::InputRequired, Side::Http, Side::Http),
    ] {
        let setup = setup_in(era, upstream, front, json!({})).await?;
        let agent = Agent::new(
            json!({ "elicitation": { "form": {}, "url": {} }, "sampling": { "tools": {} }, "roots": {} }),
            Reply::Accept(json!({})),
        );
        let client = setup.connect(agent.clone()).await?;

        let (failed, answer) = ask(
            &client,
            "asking__open_link",
            json!({ "url": "https://shop.example/authorize?x=1" }),
        )
        .await?;
        ensure!(!failed && answer["action"] == "accept", "{answer}");
        let (failed, answer) = ask(
            &client,
            "asking__summarize",
            json!({ "text": "orders", "withTools": true }),
        )
        .await?;
        ensure!(!failed, "{answer}");
        ensure!(answer["model"] == "test-model-7", "{answer}");
        ensure!(answer["stopReason"] == "endTurn", "{answer}");
        ensure!(
            answer["text"]
                .to_string()
                .contains("a short summary (tools offered: 1)"),
            "{answer}"
        );
        let (failed, answer) = ask(&client, "asking__roots", json!({})).await?;
        ensure!(!failed, "{answer}");
        ensure!(
            answer["roots"] == json!([{ "uri": "file:///work/project", "name": "project" }]),
            "{answer}"
        );

        let questions = agent.questions();
        ensure!(questions.len() == 3, "{questions:?}");
        let url = &questions[0]["elicitation"];
        ensure!(url["mode"] == "url", "{url}");
        ensure!(url["url"] == "https://shop.example/authorize?x=1", "{url}");
        ensure!(url["elicitationId"] == "link-1", "{url}");
        let sampling = &questions[1]["sampling"];
        ensure!(sampling["maxTokens"] == 200, "{sampling}");
        ensure!(sampling["tools"][0]["name"] == "lookup", "{sampling}");
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_calls_timeout_waits_for_the_user() -> anyhow::Result<()> {
    // One attempt may take 1 s and the whole call 2 s; the user answers after 3 s.
    for era in ERAS {
        let setup = setup_in(
            era,
            Side::Stdio,
            Side::Stdio,
            json!({ "servers": { "asking": { "timeoutMs": 1000, "deadlineMs": 2000,
                                              "retry": { "maxAttempts": 1 } } } }),
        )
        .await?;
        let agent = Agent::new(
            caps(FORM_AND_URL),
            Reply::Slowly(Duration::from_secs(3), json!({ "confirm": true })),
        );
        let client = setup.connect(agent).await?;
        let (failed, answer) =
            ask(&client, "asking__confirm_delete", json!({ "files": 1 })).await?;
        ensure!(!failed && answer["action"] == "accept", "{era:?}: {answer}");
    }
    Ok(())
}

#[tokio::test]
async fn a_question_nobody_answers_ends_at_the_user_input_limit() -> anyhow::Result<()> {
    let setup = setup(
        Side::Stdio,
        Side::Stdio,
        json!({ "limits": { "userInputTimeoutMs": 1000 } }),
    )
    .await?;
    let agent = Agent::new(caps(FORM_AND_URL), Reply::Never);
    let client = setup.connect(agent.clone()).await?;
    let (failed, answer) = ask(&client, "asking__confirm_delete", json!({})).await?;
    ensure!(failed, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("orchestrator.limits.userInputTimeoutMs"),
        "{answer}"
    );
    // The agent was told to drop the question.
    let started = Instant::now();
    while *agent.seen.withdrawn.lock().expect("lock") == 0 {
        ensure!(
            started.elapsed() < Duration::from_secs(10),
            "the agent's question was never withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A 2026-07-28 server cannot be told: the call ends with the error, naming the limit.
    let setup = setup_in(
        Era::InputRequired,
        Side::Stdio,
        Side::Stdio,
        json!({ "limits": { "userInputTimeoutMs": 1000 } }),
    )
    .await?;
    let client = setup
        .connect(Agent::new(caps(FORM_AND_URL), Reply::Never))
        .await?;
    let e = call(&client, "asking__confirm_delete", json!({}))
        .await
        .expect_err("no answer");
    ensure!(
        format!("{e:#}").contains("orchestrator.limits.userInputTimeoutMs"),
        "{e:#}"
    );
    Ok(())
}

/// A composite that asks before deleting (one step's question), then lists the roots (the
/// next step's), reading the first step's answer.
fn cleanup_composite() -> Value {
    json!({ "composites": { "cleanup": {
            "description": "Asks before deleting, then lists the roots",
            "input": { "type": "object" },
            "steps": {
                "confirm": { "call": "asking.confirm_delete", "args": { "files": 2 }, "critical": true },
                "roots": { "call": "asking.roots", "args": { "after": "${confirm.action}" } }
            },
            "output": { "confirmed": "${confirm}", "roots": "${roots.roots}" }
        } } })
}

#[tokio::test]
async fn a_composite_steps_question_reaches_the_agent() -> anyhow::Result<()> {
    for era in ERAS {
        composite_question(era)
            .await
            .with_context(|| format!("{era:?}"))?;
    }
    Ok(())
}

async fn composite_question(era: Era) -> anyhow::Result<()> {
    let setup = setup_in(era, Side::Stdio, Side::Stdio, cleanup_composite()).await?;
    let agent = Agent::new(
        json!({ "elicitation": {}, "roots": {} }),
        Reply::Accept(json!({ "confirm": true })),
    );
    let client = setup.connect(agent.clone()).await?;
    let result = call(&client, "cleanup", json!({})).await?;
    ensure!(result.is_error != Some(true), "{result:?}");
    let output = result.structured_content.clone().context("output")?;
    ensure!(output["confirmed"]["action"] == "accept", "{output}");
    ensure!(
        output["confirmed"]["content"]["confirm"] == true,
        "{output}"
    );
    ensure!(
        output["roots"][0]["uri"] == "file:///work/project",
        "{output}"
    );
    ensure!(agent.questions().len() == 2, "{:?}", agent.questions());
    Ok(())
}

/// One round of a 2026-07-28 call: what the orchestrator answered.
async fn once(
    client: &RunningService<RoleClient, Agent>,
    params: CallToolRequestParams,
) -> anyhow::Result<CallToolResponse> {
    Ok(client.peer().call_tool_once(params).await?)
}

fn params(tool: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(args) = args else {
        unreachable!("literal arguments are objects")
    };
    CallToolRequestParams::new(tool.to_owned()).with_arguments(args)
}

async fn input_required_round_trip(front: Side) -> anyhow::Result<()> {
    for era in ERAS {
        input_required_round_trip_in(era, front)
            .await
            .with_context(|| format!("{era:?}"))?;
    }
    Ok(())
}

async fn input_required_round_trip_in(era: Era, front: Side) -> anyhow::Result<()> {
    let setup = setup_in(era, Side::Stdio, front, json!({})).await?;
    let agent = Agent::new(caps(FORM_AND_URL), Reply::Decline);
    let client = setup.connect_stateless(agent.clone()).await?;
    let ask = params("asking__confirm_delete", json!({ "files": 3 }));

    // The first round: the question, and a state to come back with.
    let CallToolResponse::InputRequired(asked) = once(&client, ask.clone()).await? else {
        anyhow::bail!("expected input_required");
    };
    let requests = serde_json::to_value(&asked.input_requests)?;
    let (key, question) = requests
        .as_object()
        .and_then(|m| m.iter().next())
        .context("one input request")?;
    ensure!(question["method"] == "elicitation/create", "{question}");
    ensure!(
        question["params"]["message"] == "Delete 3 files?",
        "{question}"
    );
    let state = asked.request_state.clone().context("requestState")?;

    // A state that was tampered with, or given for another tool, resumes nothing.
    let mut forged = state.clone();
    forged.pop();
    forged.push(if state.ends_with('A') { 'B' } else { 'A' });
    let answers: rmcp::model::InputResponses = [(
        key.clone(),
        json!({ "action": "accept", "content": { "confirm": true } }),
    )]
    .into();
    for (tool, state) in [
        ("asking__confirm_delete", &forged),
        ("asking__roots", &state),
    ] {
        let retry = params(tool, json!({}))
            .with_input_responses(answers.clone())
            .with_request_state(state.clone());
        let e = once(&client, retry).await.expect_err("refused");
        ensure!(e.to_string().contains("requestState"), "{tool}: {e}");
    }
    // An answer of the wrong shape names the key, and leaves the call held.
    let wrong: rmcp::model::InputResponses = [(key.clone(), json!({ "confirm": true }))].into();
    // (A held call checks it here; a 2026-07-28 upstream checks its own, and says so.)
    let refusal = match once(
        &client,
        ask.clone()
            .with_input_responses(wrong)
            .with_request_state(state.clone()),
    )
    .await
    {
        Err(e) => e.to_string(),
        Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => format!("{r:?}"),
        Ok(other) => anyhow::bail!("a wrong answer was taken: {other:?}"),
    };
    ensure!(
        refusal.contains(&format!("inputResponses.{key}")),
        "{refusal}"
    );

    // The retry with the answer finishes the same call.
    let retry = ask
        .with_input_responses(answers)
        .with_request_state(state.clone());
    let CallToolResponse::Complete(done) = once(&client, retry.clone()).await? else {
        anyhow::bail!("expected the call to finish");
    };
    let answer = done.structured_content.clone().context("structured")?;
    ensure!(
        answer["action"] == "accept" && answer["content"]["confirm"] == true,
        "{answer}"
    );
    // A held call's state is spent with it; an upstream's own is the upstream's to judge.
    if era == Era::Requests {
        let e = once(&client, retry).await.expect_err("spent");
        ensure!(e.to_string().contains("no longer held"), "{e}");
    }
    Ok(())
}

#[tokio::test]
async fn a_2026_agent_is_asked_through_input_required_stdio() -> anyhow::Result<()> {
    input_required_round_trip(Side::Stdio).await
}

#[tokio::test]
async fn a_2026_agent_is_asked_through_input_required_http() -> anyhow::Result<()> {
    input_required_round_trip(Side::Http).await
}

#[tokio::test]
async fn a_2026_agents_composite_resumes_where_it_stopped() -> anyhow::Result<()> {
    for era in ERAS {
        composite_resumes(era)
            .await
            .with_context(|| format!("{era:?}"))?;
    }
    Ok(())
}

async fn composite_resumes(era: Era) -> anyhow::Result<()> {
    let setup = setup_in(era, Side::Http, Side::Http, cleanup_composite()).await?;
    let agent = Agent::new(
        json!({ "elicitation": {}, "roots": {} }),
        Reply::Accept(json!({ "confirm": true })),
    );
    let client = setup.connect_stateless(agent.clone()).await?;
    // rmcp's client answers each input_required round with the agent's handler and retries.
    let result = client.call_tool(params("cleanup", json!({}))).await?;
    ensure!(result.is_error != Some(true), "{result:?}");
    let output = result.structured_content.clone().context("output")?;
    ensure!(output["confirmed"]["action"] == "accept", "{output}");
    ensure!(
        output["roots"][0]["uri"] == "file:///work/project",
        "{output}"
    );
    // Two questions, each asked once: the confirmation step did not run again after it.
    ensure!(agent.questions().len() == 2, "{:?}", agent.questions());
    Ok(())
}

#[tokio::test]
async fn a_2026_agent_without_the_capability_is_not_asked() -> anyhow::Result<()> {
    for era in ERAS {
        let setup = setup_in(era, Side::Stdio, Side::Stdio, json!({})).await?;
        let agent = Agent::new(json!({}), Reply::Accept(json!({})));
        let client = setup.connect_stateless(agent.clone()).await?;
        let outcome = once(&client, params("asking__confirm_delete", json!({}))).await;
        match (era, outcome) {
            // A 2025-11-25 server is told, and answers with the error.
            (Era::Requests, Ok(CallToolResponse::Complete(done))) => {
                let answer = done.structured_content.clone().context("structured")?;
                ensure!(answer["error"]["code"] == -32021, "{answer}");
            }
            // A 2026-07-28 server cannot be: the call ends with it.
            (Era::InputRequired, Err(e)) => ensure!(e.to_string().contains("-32021"), "{e}"),
            (era, other) => anyhow::bail!("{era:?}: unexpected {other:?}"),
        }
        ensure!(agent.questions().is_empty());
    }
    Ok(())
}

/// Over stdio each agent has an orchestrator of its own; over HTTP three share one.
#[tokio::test]
async fn upstream_log_messages_reach_the_agents_that_asked_at_their_level() -> anyhow::Result<()> {
    use rmcp::model::{LoggingLevel, SetLevelRequestParams};
    let heard = |agent: &Agent| agent.seen.logs.lock().expect("lock").clone();
    async fn log(client: &RunningService<RoleClient, Agent>) -> anyhow::Result<()> {
        for (level, message) in [("info", "stock counted"), ("error", "disk full")] {
            let (failed, answer) = ask(
                client,
                "asking__log",
                json!({ "level": level, "message": message }),
            )
            .await?;
            ensure!(!failed, "{answer}");
        }
        Ok(())
    }
    async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let started = Instant::now();
        while !done() {
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A moment for anything that should not come.
        tokio::time::sleep(Duration::from_millis(200)).await;
        true
    }

    let stdio = setup(Side::Stdio, Side::Stdio, json!({})).await?;
    let quiet = Agent::new(json!({}), Reply::Decline);
    let client = stdio.connect(quiet.clone()).await?;
    log(&client).await?;
    ensure!(
        !until(Duration::from_millis(300), || !heard(&quiet).is_empty()).await,
        "an agent that never set a level heard {:?}",
        heard(&quiet)
    );
    client
        .peer()
        .set_level(SetLevelRequestParams::new(LoggingLevel::Warning))
        .await?;
    log(&client).await?;
    ensure!(until(Duration::from_secs(10), || !heard(&quiet).is_empty()).await);
    let got = heard(&quiet);
    ensure!(got.len() == 1 && got[0]["data"] == "disk full", "{got:?}");
    ensure!(
        got[0]["level"] == "error" && got[0]["logger"] == "asking/asking",
        "{got:?}"
    );
    // The upstream was asked for that level.
    let (_, level) = ask(&client, "asking__level", json!({})).await?;
    ensure!(level["level"] == "warning", "{level}");

    let http = setup(Side::Stdio, Side::Http, json!({})).await?;
    let (quiet, chatty, deaf) = (
        Agent::new(json!({}), Reply::Decline),
        Agent::new(json!({}), Reply::Decline),
        Agent::new(json!({}), Reply::Decline),
    );
    let quiet_client = http.connect(quiet.clone()).await?;
    let chatty_client = http.connect(chatty.clone()).await?;
    let _deaf_client = http.connect(deaf.clone()).await?;
    quiet_client
        .peer()
        .set_level(SetLevelRequestParams::new(LoggingLevel::Warning))
        .await?;
    chatty_client
        .peer()
        .set_level(SetLevelRequestParams::new(LoggingLevel::Debug))
        .await?;
    log(&chatty_client).await?;
    ensure!(
        until(Duration::from_secs(10), || heard(&chatty).len() >= 2
            && !heard(&quiet).is_empty())
        .await,
        "chatty heard {:?}, quiet heard {:?}",
        heard(&chatty),
        heard(&quiet)
    );
    let got = heard(&chatty);
    ensure!(
        got.len() == 2 && got[0]["data"] == "stock counted",
        "{got:?}"
    );
    let got = heard(&quiet);
    ensure!(got.len() == 1 && got[0]["data"] == "disk full", "{got:?}");
    ensure!(
        heard(&deaf).is_empty(),
        "an agent that never set a level heard logs"
    );
    // The upstream is asked for the most verbose level any agent wants.
    let (_, level) = ask(&quiet_client, "asking__level", json!({})).await?;
    ensure!(level["level"] == "debug", "{level}");
    Ok(())
}

/// A 2026-07-28 upstream's own question needs nothing held: the state the agent gets wraps the
/// upstream's, so the retry may reach another instance with the same key (behind a load
/// balancer), and only those.
#[tokio::test]
async fn an_upstreams_own_question_resumes_on_any_instance_with_the_same_key() -> anyhow::Result<()>
{
    let dir = TempDir::new("questions-instances")?;
    let upstream = HttpServer::start("asking-mcp-server", &[]).await?;
    let path = dir.path().join("mcp.json");
    std::fs::write(
        &path,
        serde_json::to_string(&json!({
            "mcpServers": { "asking": { "type": "http", "url": upstream.url } }
        }))?,
    )?;
    // Three instances in front of one upstream: two share a key, the third has its own.
    let shared = "k".repeat(40);
    let mut clients = Vec::new();
    for key in [shared.clone(), shared, "x".repeat(40)] {
        let env = [("MCP_ORCHESTRATOR_STATE_KEY".to_owned(), key)].into();
        let instance = Setup {
            _dir: TempDir::new("questions-instance")?,
            _upstream: None,
            front: Front::Http(HttpServer::orchestrator(&path, &env).await?),
        };
        let agent = Agent::new(caps(FORM_AND_URL), Reply::Decline);
        clients.push((instance.connect_stateless(agent).await?, instance));
    }
    let clients: Vec<_> = clients.iter().map(|(client, _)| client).collect();
    let ask = params("asking__confirm_delete", json!({ "files": 4 }));
    let CallToolResponse::InputRequired(asked) = once(clients[0], ask.clone()).await? else {
        anyhow::bail!("expected input_required");
    };
    let requests = serde_json::to_value(&asked.input_requests)?;
    ensure!(
        requests["ask"]["params"]["message"] == "Delete 4 files?",
        "{requests}"
    );
    let state = asked.request_state.clone().context("requestState")?;
    ensure!(
        !state.contains("asked:"),
        "the upstream's state is wrapped, not shown: {state}"
    );
    let answers: rmcp::model::InputResponses = [(
        "ask".to_owned(),
        json!({ "action": "accept", "content": { "confirm": true } }),
    )]
    .into();
    let retry = ask.with_input_responses(answers).with_request_state(state);
    // Another instance with another key refuses it.
    let e = once(clients[2], retry.clone())
        .await
        .expect_err("another key");
    ensure!(e.to_string().contains("requestState"), "{e}");
    // Another instance with the same key finishes it.
    let CallToolResponse::Complete(done) = once(clients[1], retry).await? else {
        anyhow::bail!("expected the call to finish");
    };
    let answer = done.structured_content.clone().context("structured")?;
    ensure!(
        answer["action"] == "accept" && answer["content"]["confirm"] == true,
        "{answer}"
    );
    Ok(())
}

/// An agent that cancels its call while a question is pending has the question withdrawn too.
#[tokio::test]
async fn cancelling_the_call_withdraws_its_pending_question() -> anyhow::Result<()> {
    for front in [Side::Stdio, Side::Http] {
        let setup = setup(Side::Stdio, front, json!({})).await?;
        let agent = Agent::new(caps(FORM_AND_URL), Reply::Never);
        let client = setup.connect(agent.clone()).await?;
        let request = rmcp::model::ClientRequest::CallToolRequest(
            rmcp::model::CallToolRequest::new(params("asking__confirm_delete", json!({}))),
        );
        let handle = client
            .peer()
            .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
            .await?;
        let started = Instant::now();
        while agent.questions().is_empty() {
            ensure!(started.elapsed() < Duration::from_secs(10), "never asked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle.cancel(Some("changed my mind".into())).await?;
        while *agent.seen.withdrawn.lock().expect("lock") == 0 {
            ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{front:?}: the question outlived its call"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// The fixture's progress reaches the agent before the call's result, in both eras, over stdio
/// and HTTP.
#[tokio::test]
async fn progress_reaches_the_agent_before_the_result() -> anyhow::Result<()> {
    for era in ERAS {
        for front in [Side::Stdio, Side::Http] {
            let setup = setup_in(era, Side::Stdio, front, json!({})).await?;
            let agent = Agent::new(json!({}), Reply::Decline);
            let client = setup.connect(agent.clone()).await?;
            let (failed, answer) = ask(&client, "asking__progress", json!({ "steps": 5 })).await?;
            ensure!(
                !failed && answer["steps"] == 5,
                "{era:?} {front:?}: {answer}"
            );
            // Every step by the time the result came. (rmcp hands each notification to the
            // agent's handler in a task of its own, so the handler may see two of them in
            // either order; sorted, they are all there.)
            let mut heard = agent.seen.progress.lock().expect("lock").clone();
            heard.sort_by(f64::total_cmp);
            ensure!(
                heard == [1.0, 2.0, 3.0, 4.0, 5.0],
                "{era:?} {front:?}: heard {heard:?} by the time the result came"
            );
        }
    }
    Ok(())
}

/// Calls held for 2026-07-28 agents are capped: past `maxHeldCalls`, a call that asks ends at
/// once naming the limit, and the held ones are untouched.
#[tokio::test]
async fn held_calls_are_capped_by_max_held_calls() -> anyhow::Result<()> {
    // An HTTP upstream, so each question names its call (over stdio, two sessions with calls
    // in flight could not be told apart).
    let setup = setup(
        Side::Http,
        Side::Http,
        json!({ "limits": { "maxHeldCalls": 1 } }),
    )
    .await?;
    let first = setup
        .connect_stateless(Agent::new(caps(FORM_AND_URL), Reply::Decline))
        .await?;
    let second = setup
        .connect_stateless(Agent::new(caps(FORM_AND_URL), Reply::Decline))
        .await?;
    let ask = params("asking__confirm_delete", json!({ "files": 1 }));
    let CallToolResponse::InputRequired(held) = once(&first, ask.clone()).await? else {
        anyhow::bail!("expected the first call to be held");
    };
    let e = once(&second, ask.clone()).await.expect_err("over the cap");
    ensure!(
        e.to_string().contains("orchestrator.limits.maxHeldCalls"),
        "{e}"
    );
    // The held call is still there to be answered.
    let key = held
        .input_requests
        .as_ref()
        .and_then(|r| r.keys().next().cloned())
        .context("a question")?;
    let answers: rmcp::model::InputResponses = [(
        key,
        json!({ "action": "accept", "content": { "confirm": true } }),
    )]
    .into();
    let retry = ask
        .with_input_responses(answers)
        .with_request_state(held.request_state.clone().context("state")?);
    let CallToolResponse::Complete(done) = once(&first, retry).await? else {
        anyhow::bail!("expected the held call to finish");
    };
    ensure!(done.is_error != Some(true), "{done:?}");
    Ok(())
}
